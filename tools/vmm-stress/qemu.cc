// qemu-start-kill: the start / stop loop run side by side against QEMU with
// the same guest. Each cycle starts the process, waits for the guest's first
// serial line, stops it (SIGTERM, or --kill-signal kill), and waits until it
// is gone. Cycles alternate between the two peers, so the noise of this
// shared host falls on both alike; each peer's rate is its cycles over the
// time its own cycles took.
#include <signal.h>
#include <sys/wait.h>

#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "tools/vmm-stress/child.h"
#include "tools/vmm-stress/stress.h"
#include "vmm/cli.h"

namespace vmm::stress {

namespace {

struct PeerStats {
  std::string name;
  std::vector<std::string> argv;
  std::uint64_t cycles = 0;
  std::uint64_t failures = 0;
  std::uint64_t hangs = 0;
  double busy_s = 0;
  std::vector<double> first_line_ms, stop_ms, cycle_ms;
  long max_rss_kib = 0;
  std::string first_failure;
};

std::vector<std::string> qemu_argv(const Options& o, const std::string& cmdline) {
  std::vector<std::string> argv = {o.qemu};
  if (o.machine == "pc") {
    argv.insert(argv.end(), {"-M", "pc,accel=kvm,kernel-irqchip=split"});
  } else {
    argv.insert(argv.end(), {"-M", "microvm,accel=kvm,kernel-irqchip=split,pit=off,pic=off,rtc=off,isa-serial=on",
                             "-nodefaults"});
  }
  const std::string memory_mib = std::to_string(parse_memory_size(o.memory) >> 20);
  argv.insert(argv.end(), {"-no-user-config", "-display", "none", "-serial", "stdio", "-device",
                           "isa-debug-exit,iobase=0xf4,iosize=4", "-m", memory_mib, "-cpu", "qemu64,+tsc-deadline",
                           "-kernel", o.kernel, "-append", cmdline});
  return argv;
}

void one_cycle(const Options& o, PeerStats& peer, bool is_vmm, int kill_signal) {
  const auto t0 = Clock::now();
  std::string why;
  try {
    Child child(SpawnSpec{peer.argv, true, "", is_vmm});
    std::string out;
    const auto deadline = t0 + o.hang_timeout;
    while (out.find('\n') == std::string::npos && !child.exited() && Clock::now() < deadline) {
      child.wait_for(std::chrono::milliseconds(50), &out);
    }
    const auto t1 = Clock::now();
    if (out.find('\n') == std::string::npos) {
      if (child.exited()) {
        why = "exited (" + child.describe_status() + ") before its first serial line";
      } else {
        ++peer.hangs;
        why = "no serial line within " + std::to_string(o.hang_timeout.count()) + " ms";
      }
    }
    // Stop it. The VMM's force stop by signal is SIGTERM then SIGINT (a
    // second stop request); QEMU quits at once on SIGTERM.
    child.signal(kill_signal);
    if (is_vmm && kill_signal == SIGTERM) child.signal(SIGINT);
    if (!child.wait_for(o.hang_timeout)) {
      ++peer.hangs;
      why = "still running " + std::to_string(o.hang_timeout.count()) + " ms after the stop";
    }
    const auto t2 = Clock::now();
    peer.max_rss_kib = std::max(peer.max_rss_kib, child.max_rss_kib());
    const int status = child.wait_status();
    // Acceptable ends: stopped by us (vmm: 8; QEMU: 0 on SIGTERM; either
    // killed by the signal we sent), or the guest finished first (1).
    const bool ok_end = (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 1 ||
                                                (is_vmm && WEXITSTATUS(status) == 8))) ||
                        (WIFSIGNALED(status) && WTERMSIG(status) == kill_signal);
    if (why.empty() && !ok_end) why = "ended with " + child.describe_status();
    if (why.empty()) {
      peer.first_line_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      peer.stop_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    }
  } catch (const std::exception& e) {
    why = e.what();
  }
  const double cycle_s = std::chrono::duration<double>(Clock::now() - t0).count();
  peer.busy_s += cycle_s;
  peer.cycle_ms.push_back(cycle_s * 1000);
  ++peer.cycles;
  if (!why.empty()) {
    ++peer.failures;
    if (peer.first_failure.empty()) peer.first_failure = why;
  }
}

}  // namespace

int run_qemu_start_kill(const Options& o) {
  const std::string cmdline = o.cmdline.empty() ? "test=boot" : o.cmdline;
  const int kill_signal = o.kill_signal == "kill" ? SIGKILL : SIGTERM;
  PeerStats vmm;
  vmm.name = "vmm";
  vmm.argv = {default_vmm_binary(o), "run", "--kernel", o.kernel, "--memory", o.memory, "--cmdline", cmdline,
              "--serial", "stdio", "--debug-exit"};
  PeerStats qemu;
  qemu.name = "qemu";
  qemu.argv = qemu_argv(o, cmdline);
  const bool run_vmm = o.peers != "qemu";
  const bool run_qemu = o.peers != "vmm";
  const bool tty = o.progress && !o.json && ::isatty(STDOUT_FILENO);

  for (std::uint64_t i = 0; i < o.cycles; ++i) {
    // Alternate which one goes first, too.
    const bool vmm_first = i % 2 == 0;
    for (int k = 0; k < 2; ++k) {
      const bool is_vmm = (k == 0) == vmm_first;
      if (is_vmm && run_vmm) one_cycle(o, vmm, true, kill_signal);
      if (!is_vmm && run_qemu) one_cycle(o, qemu, false, kill_signal);
    }
    if (tty) {
      std::printf("\rqemu-start-kill %" PRIu64 "/%" PRIu64 "\033[K", i + 1, o.cycles);
      std::fflush(stdout);
    }
  }
  if (tty) std::printf("\r\033[K");

  nlohmann::json report = nlohmann::json::object();
  int status = 0;
  for (PeerStats* peer : {&vmm, &qemu}) {
    if (peer->cycles == 0) continue;
    // Completed cycles only: a peer that cannot even start must not look fast.
    const double rate =
        peer->busy_s > 0 ? static_cast<double>(peer->cycles - peer->failures) / peer->busy_s : 0;
    if (peer->failures != 0 || peer->hangs != 0) status = 1;
    if (!peer->first_failure.empty()) {
      std::fprintf(stderr, "vmm-stress: %s: first failure: %s\n", peer->name.c_str(), peer->first_failure.c_str());
    }
    if (o.json) {
      report[peer->name] = {{"cycles", peer->cycles},
                            {"failures", peer->failures},
                            {"hangs", peer->hangs},
                            {"rate_per_s", std::round(rate * 10) / 10},
                            {"first_line_ms_p50", percentile(peer->first_line_ms, 50)},
                            {"first_line_ms_p99", percentile(peer->first_line_ms, 99)},
                            {"stop_ms_p50", percentile(peer->stop_ms, 50)},
                            {"stop_ms_p99", percentile(peer->stop_ms, 99)},
                            {"cycle_ms_p50", percentile(peer->cycle_ms, 50)},
                            {"max_rss_kib", peer->max_rss_kib},
                            {"command", peer->argv}};
    } else {
      std::printf("peer=%-4s cycles=%" PRIu64 " failures=%" PRIu64 " hangs=%" PRIu64
                  " rate_per_s=%.1f first_line_ms_p50=%.2f first_line_ms_p99=%.2f stop_ms_p50=%.2f"
                  " cycle_ms_p50=%.2f max_rss_kib=%ld\n",
                  peer->name.c_str(), peer->cycles, peer->failures, peer->hangs, rate,
                  percentile(peer->first_line_ms, 50), percentile(peer->first_line_ms, 99),
                  percentile(peer->stop_ms, 50), percentile(peer->cycle_ms, 50), peer->max_rss_kib);
    }
  }
  if (o.json) {
    report["cmdline"] = cmdline;
    report["machine"] = o.machine;
    report["kill_signal"] = o.kill_signal;
    std::printf("%s\n", report.dump().c_str());
  }
  return status;
}

}  // namespace vmm::stress
