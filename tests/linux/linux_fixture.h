// The Linux suite's plumbing: where the guest is, how to boot it under the
// real vmm binary, and the "VMMCHECK <what> key=value ..." lines its /init
// and vmmcheck print (guest-images/linux/init).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/lab_events.h"
#include "tests/common/skip.h"
#include "tests/common/subprocess.h"
#include "vmm/kvm.h"

namespace vmm::testing {

enum class KernelFormat { bzimage, pvh };

inline const char* to_string(KernelFormat format) { return format == KernelFormat::bzimage ? "bzImage" : "pvh"; }

// $VMM_LINUX_GUEST_DIR (sanitizer builds use the release build's), else this
// build's guest-images/linux/make-guest output.
inline std::string linux_guest_dir() {
  if (const char* env = std::getenv("VMM_LINUX_GUEST_DIR"); env && *env) return env;
  return VMM_LINUX_GUEST_DEFAULT;
}

inline std::string linux_kernel(KernelFormat format) {
  return linux_guest_dir() + (format == KernelFormat::bzimage ? "/kernel/vmlinuz" : "/kernel/vmlinux");
}
inline std::string linux_initrd() { return linux_guest_dir() + "/initramfs.cpio.gz"; }
// An ext4 image of the initramfs's userland (with the same /init), for
// root=/dev/vda. Tests boot copies: the guest writes to its root.
inline std::string linux_root_disk() { return linux_guest_dir() + "/rootfs.ext4"; }

// What a guest has written so far to a `--serial file:PATH` console.
inline std::string read_serial(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Polls that console until `needle` appears; false if it did not in time.
inline bool wait_for_serial(const std::string& path, const std::string& needle, std::chrono::milliseconds timeout) {
  for (auto end = std::chrono::steady_clock::now() + timeout; std::chrono::steady_clock::now() < end;) {
    if (read_serial(path).find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return read_serial(path).find(needle) != std::string::npos;
}

// One "VMMCHECK <what> key=value ..." line. Values may be quoted ("...").
struct Check {
  std::string what;
  std::map<std::string, std::string> fields;

  std::string get(const std::string& key) const {
    const auto it = fields.find(key);
    return it == fields.end() ? std::string() : it->second;
  }
  double number(const std::string& key) const {
    const std::string text = get(key);
    return text.empty() ? -1 : std::strtod(text.c_str(), nullptr);
  }
};

inline std::vector<Check> parse_checks(const std::string& output) {
  std::vector<Check> checks;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("VMMCHECK ", 0) != 0) continue;
    Check check;
    std::istringstream words(line.substr(9));
    words >> check.what;
    std::string rest;
    std::getline(words, rest);
    std::size_t at = 0;
    while (at < rest.size()) {
      while (at < rest.size() && rest[at] == ' ') ++at;
      const std::size_t eq = rest.find('=', at);
      if (eq == std::string::npos) break;
      const std::string key = rest.substr(at, eq - at);
      std::string value;
      at = eq + 1;
      if (at < rest.size() && rest[at] == '"') {
        const std::size_t close = rest.find('"', at + 1);
        value = rest.substr(at + 1, close == std::string::npos ? std::string::npos : close - at - 1);
        at = close == std::string::npos ? rest.size() : close + 1;
      } else {
        const std::size_t space = rest.find(' ', at);
        value = rest.substr(at, space == std::string::npos ? std::string::npos : space - at);
        at = space == std::string::npos ? rest.size() : space;
      }
      check.fields[key] = value;
    }
    checks.push_back(std::move(check));
  }
  return checks;
}

struct LinuxRun {
  ProcessResult process;
  std::vector<Check> checks;

  std::vector<Check> all(const std::string& what) const {
    std::vector<Check> out;
    for (const Check& c : checks) {
      if (c.what == what) out.push_back(c);
    }
    return out;
  }
  std::optional<Check> first(const std::string& what, const std::string& key = {},
                             const std::string& value = {}) const {
    for (const Check& c : checks) {
      if (c.what == what && (key.empty() || c.get(key) == value)) return c;
    }
    return std::nullopt;
  }
  std::size_t count(const std::string& needle) const { return count_occurrences(process.out, needle); }
  // What to print when an expectation fails. The VMM's log comes first and,
  // when the guest booted more than once, the console lines just before each
  // later boot (a panic, a reset's cause): a CI log keeps a failure's first
  // lines and its last, not the middle of a long console.
  std::string transcript() const {
    std::string out = "--- vmm:\n" + process.err;
    const std::string boot_line = "vmm-initramfs: Linux ";
    const std::size_t first_boot = process.out.find(boot_line);
    if (first_boot == std::string::npos) return out + "--- console:\n" + process.out;
    for (std::size_t at = process.out.find(boot_line, first_boot + 1); at != std::string::npos;
         at = process.out.find(boot_line, at + 1)) {
      std::size_t from = at;
      for (int lines = 0; lines <= kLinesBeforeABoot && from != 0; ++lines) {
        from = process.out.rfind('\n', from - 1);
        if (from == std::string::npos) {
          from = 0;
          break;
        }
      }
      out += "--- console before a later boot:\n" + process.out.substr(from, at - from) + "\n";
    }
    return out + "--- console:\n" + process.out;
  }
  static constexpr int kLinesBeforeABoot = 15;
};

// The part of every guest command line that is not the test's: the console
// on COM1, little boot chatter (each byte is an exit, and exits are slow
// under emulation), and a panic that ends the VM (pvpanic) at once.
inline constexpr const char* kLinuxBaseCmdline = "console=ttyS0 quiet panic=-1";

// `started` is told the vmm's pid as soon as it exists (to signal it).
// A boot the lab cut short (cut_short_by_the_lab) is run once more when
// nothing outlives it (no disk, no serial file, no one holding its pid)
// and the injected events were KVM's (not with our own LAPICs, whose
// delivery a retry would then hide); a second one stands.
inline LinuxRun boot_linux(KernelFormat format, unsigned cpus, const std::string& cmdline,
                           std::vector<std::string> extra = {},
                           std::chrono::milliseconds timeout = std::chrono::seconds(240),
                           const std::function<void(pid_t)>& started = {}) {
  std::vector<std::string> argv = {VMM_BINARY,
                                   "run",
                                   "--kernel",
                                   linux_kernel(format),
                                   "--initrd",
                                   linux_initrd(),
                                   "--cpus",
                                   std::to_string(cpus),
                                   "--memory",
                                   "256M",
                                   "--cmdline",
                                   std::string(kLinuxBaseCmdline) + " " + cmdline};
  // A control socket, so that a guest that runs out of time can be asked
  // where its vCPUs are (and, with our own LAPICs, what each holds).
  static std::atomic<unsigned> runs{0};
  const std::string socket = "/tmp/vmm-linux-test-" + std::to_string(::getpid()) + "-" + std::to_string(runs++) + ".sock";
  argv.insert(argv.end(), {"--control", socket});
  // Info names each reset's cause and how far into its boot it came: a
  // guest that boots twice where once was expected is then explained.
  argv.insert(argv.end(), {"--log-level", "info"});
  argv.insert(argv.end(), extra.begin(), extra.end());
  const auto sample_vcpus = [&socket](pid_t) {
    std::string samples;
    for (int i = 0; i < 3; ++i) {
      if (i != 0) std::this_thread::sleep_for(std::chrono::milliseconds(150));
      const ProcessResult r = run_process({VMM_BINARY, "ctl", socket, "vcpus"}, std::chrono::seconds(5));
      samples += r.out + r.err;
    }
    return samples;
  };
  // In the lab, a VMM with our own local APICs runs on one lab CPU. It
  // kicks a vCPU thread for every interrupt it injects, and a kick of a
  // thread running a guest on the other lab CPU is a reschedule IPI there,
  // which the lab's emulated SVM now and then takes right after VMRUN, on
  // the guest's %gs: the lab kernel's stack overflows (README, "What still
  // kills the lab"). On one CPU a kick finds its thread not running and
  // sends no IPI. The VMM's threads keep to the mask it starts with.
  const bool userspace_apics = std::any_of(extra.begin(), extra.end(), [](const std::string& arg) {
    return arg == "--irqchip=userspace";
  });
  if (userspace_apics && in_nested_lab()) argv.insert(argv.begin(), {"/usr/bin/taskset", "--cpu-list", "0"});
  const bool repeatable = !started && may_run_again(extra);
  LinuxRun run;
  std::string first_attempt;  // the lab's resets that made this a second boot
  for (int attempt = 1;; ++attempt) {
    run.process = run_process(argv, timeout, {}, started, sample_vcpus);
    ::unlink(socket.c_str());  // left behind only when the VMM was killed
    const std::string resets = repeatable ? lab_cut_short_first_attempt(run.process, cmdline, attempt) : "";
    if (resets.empty()) break;
    first_attempt = resets;
  }
  // Should the second boot fail too, its transcript says what ended the first.
  if (!first_attempt.empty()) run.process.err = "(a first boot, run again: " + first_attempt + ")\n" + run.process.err;
  run.checks = parse_checks(run.process.out);
  return run;
}

// As kvm_unusable_reason(), and besides, empty only when /dev/kvm rests on
// vmx or svm: a software-only one (PVM) runs the test guest but not
// Debian's Linux, which dies on KVM's emulation of its `lock cmpxchg16b`
// (vmm's own check, which tools/kvm-lab applies too when it picks the host
// or a lab).
inline std::string linux_kvm_unusable_reason() {
  std::string why = kvm_unusable_reason();
  if (!why.empty()) return why;
  if (!KvmSystem::host_offers_virtualization()) {
    return "this host's /dev/kvm is software-only (no vmx or svm: PVM), which cannot boot Debian's Linux";
  }
  return {};
}

// The guest must exist: a missing one is a failure (the linux.guest fixture
// builds it), and /dev/kvm must be usable for Linux (or the test skips, loudly).
#define VMM_REQUIRE_LINUX_GUEST()                                                                          \
  do {                                                                                                     \
    const std::string vmm_linux_kvm_why_ = ::vmm::testing::linux_kvm_unusable_reason();                    \
    VMM_SKIP_UNLESS(vmm_linux_kvm_why_.empty(), vmm_linux_kvm_why_);                                       \
    if (::access(::vmm::testing::linux_initrd().c_str(), R_OK) != 0 ||                                     \
        ::access(::vmm::testing::linux_kernel(::vmm::testing::KernelFormat::pvh).c_str(), R_OK) != 0) {    \
      GTEST_FAIL() << "no Linux guest in " << ::vmm::testing::linux_guest_dir()                            \
                   << ": run guest-images/linux/make-guest there (ctest's linux.guest fixture does)";      \
    }                                                                                                      \
  } while (0)

}  // namespace vmm::testing
