// vmm-stress: reboot and start / force-stop loops against this project's
// VMM, in the spirit of running `vmadm start` / `vmadm stop -F` in a tight
// loop (the way both seed races were found), plus the same start / stop loop
// against QEMU for comparison.
//
//   vmm-stress reboot --kernel testguest.elf --cycles N [--process] [--vms K]
//   vmm-stress stop-force --kernel testguest.elf --cycles N [--process]
//              [--jitter-ms A-B] [--vms K]
//   vmm-stress qemu-start-kill --kernel testguest.elf --cycles N
//
// With --guest linux the loops boot Linux with the project's initramfs
// (--kernel vmlinuz --initrd initramfs.cpio.gz, guest-images/linux): it
// reboots as soon as it reaches /init, with its tick on the HPET, each
// reboot method in turn, and every boot must print the readiness line.
//
// Every loop ends with one line
//   cycles=N failures=F hangs=H fd_leak=D rss_growth_kib=R rate_per_s=X
// (or one JSON object with --json) and exits 0 only when there were no
// failures, hangs or leaks. Exit status 3: a hang (after printing every
// thread's state); 2: bad command line.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>

#include "devices/error.h"
#include "tools/vmm-stress/child.h"
#include "tools/vmm-stress/fault_report.h"
#include "tools/vmm-stress/stress.h"
#include "vmm/cli.h"
#include "vmm/vcpu.h"

namespace {

using vmm::stress::Options;

constexpr const char* kFooter =
    "Fault injection (builds with -DVMM_FAULT_INJECTION=ON): --fault-inject or the environment variable\n"
    "VMM_FAULT_INJECT take point:probability:max_us[,...]; point is a race point name or 'all'.\n"
    "The kernel defaults to $VMM_TESTGUEST_ELF.\n";

bool parse_jitter(const std::string& text, Options& o) {
  const std::size_t dash = text.find('-');
  try {
    std::size_t used = 0;
    if (dash == std::string::npos) {
      o.jitter_min_ms = o.jitter_max_ms = static_cast<unsigned>(std::stoul(text, &used));
      return used == text.size();
    }
    const std::string a = text.substr(0, dash), b = text.substr(dash + 1);
    o.jitter_min_ms = static_cast<unsigned>(std::stoul(a, &used));
    if (used != a.size()) return false;
    o.jitter_max_ms = static_cast<unsigned>(std::stoul(b, &used));
    return used == b.size() && o.jitter_min_ms <= o.jitter_max_ms;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread: the vCPU kick signal must be blocked everywhere but
  // in KVM_RUN (see vmm/vcpu.h), and a control socket closing under us must
  // not kill us with SIGPIPE.
  try {
    vmm::KvmSignals kick;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm-stress: %s\n", e.what());
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  // A fixed mmap threshold: glibc would otherwise raise it when the first
  // VM's kernel and initrd copies are freed, and serve the next VM's from
  // the heap, which then looks like a leak of their size.
  ::mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  // Ctrl-C or a kill ends this program; its `vmm` children go with it.
  vmm::stress::kill_children_on_termination();

  CLI::App app{"vmm-stress: reboot and start / force-stop loops against the VMM (and QEMU)"};
  app.require_subcommand(1);
  app.footer(kFooter);
  Options o;
  if (const char* env = std::getenv("VMM_TESTGUEST_ELF"); env && *env) o.kernel = env;
  std::string jitter;  // default per guest
  std::string guest = "test";
  long hang_timeout_ms = 20000;
  bool no_progress = false;
  std::string log_level = "warn";

  auto common = [&](CLI::App* sub) {
    sub->add_option("--kernel", o.kernel, "The guest kernel (default $VMM_TESTGUEST_ELF)");
    sub->add_option("--guest", guest, "test (default: the project's test guest) or linux (its initramfs)")
        ->check(CLI::IsMember({"test", "linux"}));
    sub->add_option("--initrd", o.initrd, "The initramfs (--guest linux: guest-images/linux's)");
    sub->add_option("--cpus", o.cpus, "vCPUs per VM (default 1)")->check(CLI::Range(1u, 64u));
    sub->add_option("--ready", o.ready,
                    "The line the guest prints once per boot when it is up (default: the guest's own)");
    sub->add_option("--cycles", o.cycles, "Cycles to run (default 100)")->check(CLI::Range(1ull, 100000000ull));
    sub->add_flag("--json", o.json, "Print one JSON object instead of the summary lines");
    sub->add_option("--hang-timeout-ms", hang_timeout_ms, "No progress for this long within a cycle is a hang (default 20000)")
        ->check(CLI::Range(100l, 3600000l));
    sub->add_option("--memory", o.memory, "Guest RAM (default 64M)");
    sub->add_option("--cmdline", o.cmdline, "Guest command line (default depends on the loop)");
    sub->add_option("--vmm", o.vmm_binary, "The vmm binary for process mode (default: the one built with this tool)");
    sub->add_flag("--no-progress", no_progress, "No progress bar (there is none when stdout is not a terminal)");
    sub->add_option("--log-level", log_level, "The in-process VMs' log level (default warn)")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  };
  auto loop = [&](CLI::App* sub) {
    common(sub);
    sub->add_flag("--process", o.process, "Drive separate `vmm run --control` processes instead of the in-process Vm API");
    sub->add_option("--vms", o.vms, "VMs at once (default 1)")->check(CLI::Range(1u, 64u));
    sub->add_option("--warmup", o.warmup, "Cycles before the fd/RSS baseline (default: 10%, 1..200)");
    sub->add_option("--seed", o.seed, "Random seed (default: random; printed with --json)");
    sub->add_option("--fault-inject", o.fault_inject, "Race point delays: point:probability:max_us[,...]");
    sub->add_option("--rss-limit-kib", o.rss_limit_kib, "RSS growth above this is a leak (default 16384)");
    sub->add_option("--max-stop-ms", o.max_stop_ms, "A forced stop slower than this is a failure (default: no limit)");
  };

  CLI::App* reboot = app.add_subcommand("reboot", "Guest-driven reboots (test=reboot) with every timer running");
  loop(reboot);
  reboot->add_option("--reboots-per-vm", o.reboots_per_vm, "Reboots before a VM ends and a new one starts (default 500)")
      ->check(CLI::Range(1ull, 65534ull));

  CLI::App* stop_force = app.add_subcommand("stop-force", "Start a VM, wait a random time, stop it by force");
  loop(stop_force);
  stop_force->add_option("--jitter-ms", jitter,
                         "Wait A-B ms (uniform) before each stop (default 0-50; Linux: 0-4000, its boot)");

  CLI::App* qemu = app.add_subcommand("qemu-start-kill",
                                      "Start, wait for the first serial line, stop: vmm and QEMU side by side");
  common(qemu);
  qemu->add_option("--qemu", o.qemu, "QEMU binary (default qemu-system-x86_64)");
  qemu->add_option("--machine", o.machine, "QEMU machine: microvm (default) or pc")->check(CLI::IsMember({"microvm", "pc"}));
  qemu->add_option("--kill-signal", o.kill_signal, "term (default: QEMU SIGTERM, vmm SIGTERM+SIGINT) or kill")
      ->check(CLI::IsMember({"term", "kill"}));
  qemu->add_option("--peers", o.peers, "both (default), vmm or qemu")->check(CLI::IsMember({"both", "vmm", "qemu"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.hang_timeout = std::chrono::milliseconds(hang_timeout_ms);
  // The in-process VMs log through spdlog: to stderr, keeping stdout for the
  // summary (and the JSON object).
  auto logger = spdlog::stderr_logger_mt("vmm");
  logger->set_pattern("vmm: %l: %v");
  logger->set_level(spdlog::level::from_str(log_level));
  spdlog::set_default_logger(std::move(logger));
  o.progress = !no_progress;
  o.guest = guest == "linux" ? vmm::stress::GuestKind::linux_initramfs : vmm::stress::GuestKind::test;
  if (jitter.empty()) jitter = o.guest == vmm::stress::GuestKind::linux_initramfs ? "0-4000" : "0-50";
  if (o.guest == vmm::stress::GuestKind::linux_initramfs && o.initrd.empty()) {
    std::fprintf(stderr, "vmm-stress: --guest linux needs --initrd (guest-images/linux/make-guest builds one)\n");
    return 2;
  }
  if (qemu->parsed() && (o.guest != vmm::stress::GuestKind::test || !o.initrd.empty())) {
    std::fprintf(stderr, "vmm-stress: qemu-start-kill runs the test guest only\n");
    return 2;
  }
  if (!o.initrd.empty() && ::access(o.initrd.c_str(), R_OK) != 0) {
    std::fprintf(stderr, "vmm-stress: --initrd %s: %s\n", o.initrd.c_str(), std::strerror(errno));
    return 2;
  }
  if (stop_force->parsed() && !parse_jitter(jitter, o)) {
    std::fprintf(stderr, "vmm-stress: --jitter-ms '%s': expected A-B (milliseconds, A <= B) or A\n", jitter.c_str());
    return 2;
  }
  if (o.kernel.empty()) {
    std::fprintf(stderr, "vmm-stress: --kernel is required (or set VMM_TESTGUEST_ELF)\n");
    return 2;
  }
  if (::access(o.kernel.c_str(), R_OK) != 0) {
    std::fprintf(stderr, "vmm-stress: --kernel %s: %s\n", o.kernel.c_str(), std::strerror(errno));
    return 2;
  }
  try {
    (void)vmm::parse_memory_size(o.memory);
    vmm::stress::prepare_fault_injection(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm-stress: %s\n", e.what());
    return 2;
  }
  if (o.seed == 0) o.seed = std::random_device{}() | 1;

  try {
    if (reboot->parsed()) {
      return o.process ? vmm::stress::run_reboot_process(o) : vmm::stress::run_reboot_in_process(o);
    }
    if (stop_force->parsed()) {
      return o.process ? vmm::stress::run_stop_force_process(o) : vmm::stress::run_stop_force_in_process(o);
    }
    return vmm::stress::run_qemu_start_kill(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm-stress: %s\n", e.what());
    return 4;
  }
}
