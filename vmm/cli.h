// The command line: `vmm run ...`, `vmm --help`, `vmm --version`.
// Parsing is separate from main() so that every bad input can be tested.
//
// Exit statuses (also in `vmm --help`):
//   0   the guest powered off (ACPI S5), or reset under --no-reboot
//   odd the guest wrote v to the debug-exit port: (v << 1) | 1, low 8 bits
//   2   bad command line
//   4   the VM could not be set up (kernel, initrd, memory, vCPUs, /dev/kvm)
//   6   the guest could not run (KVM internal error, failed VM entry)
//   8   stopped by the host (signal, control socket, Ctrl-A x)
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/control_client.h"
#include "vmm/disk_config.h"

namespace vmm {

inline constexpr int kExitUsage = 2;
inline constexpr int kExitSetup = 4;

enum class SerialKind { stdio, null, file };

struct RunOptions {
  std::string kernel;
  std::optional<std::string> initrd;
  std::string cmdline;
  unsigned cpus = 1;
  std::uint64_t memory = 256ull << 20;
  SerialKind serial = SerialKind::stdio;
  std::string serial_path;
  bool reboot = true;
  bool hpet = true;
  bool debug_exit = false;
  // Who models the local APICs: KVM (split: in-kernel LAPICs, user-space
  // IOAPIC and PIC) or this VMM (userspace: KVM has no irqchip at all).
  bool userspace_irqchip = false;
  std::string log_level = "warn";
  std::optional<std::string> control;  // control socket path
  std::string kvm_device = "/dev/kvm";
  std::vector<DiskConfig> disks;  // --disk, in order
  // Per-thread syscall filters (vmm/syscall_filter.h); off only to debug.
  bool seccomp = true;
};

struct Command {
  enum class Kind { run, ctl, help, version } kind = Kind::run;
  RunOptions run;
  CtlOptions ctl;    // `vmm ctl PATH COMMAND [--force]` (vmm/control_client.h)
  std::string text;  // for help and version: what to print
};

// A bad command line: what() is one line naming the problem. Control
// characters in `message` (it quotes the user's arguments) are shown as
// \xNN, so the line stays one line and cannot drive the terminal.
class UsageError : public std::runtime_error {
 public:
  explicit UsageError(std::string_view message);
};

// Throws UsageError.
Command parse_command_line(const std::vector<std::string>& args);

// One --disk value: "PATH[,readonly][,serial=ID]". Throws UsageError naming
// the value. A path with a comma in it cannot be given.
DiskConfig parse_disk(std::string_view text);

// "256M", "1G", "512MiB", "65536K", a bare number (MiB, as QEMU's -m).
// Throws UsageError naming the value.
std::uint64_t parse_memory_size(std::string_view text);

}  // namespace vmm
