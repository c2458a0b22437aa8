#include "vmm/cli.h"

#include <CLI/CLI.hpp>

#include <cctype>
#include <charconv>
#include <limits>
#include <optional>

#ifndef VMM_VERSION
#define VMM_VERSION "0.0.0"
#endif

namespace vmm {

namespace {

constexpr const char* kExitStatusHelp =
    "Exit status:\n"
    "  0    the guest powered off (ACPI S5), or reset under --no-reboot\n"
    "  odd  with --debug-exit: the guest wrote v to port 0xf4: (v << 1) | 1 (as QEMU's isa-debug-exit)\n"
    "  2    bad command line\n"
    "  4    the VM could not be set up (kernel, initrd, memory, vCPUs, /dev/kvm)\n"
    "  6    the guest could not run (KVM internal error, failed VM entry)\n"
    "  8    stopped by the host (SIGTERM/SIGINT, control socket, Ctrl-A x on the console)\n"
    "  10   the guest kernel panicked (it said so through pvpanic, port 0x505)\n"
    "  12   a VMM thread made a system call its seccomp filter forbids (named on stderr)\n";

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// All of `digits` as a decimal number from `lo` to `hi`.
std::optional<unsigned> whole_number(std::string_view digits, unsigned lo, unsigned hi) {
  unsigned value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || error != std::errc{} || end != digits.data() + digits.size() || value < lo || value > hi) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

std::uint64_t parse_memory_size(std::string_view text) {
  const auto bad = [&](const char* why) {
    return UsageError("--memory '" + std::string(text) + "': " + why);
  };
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0) throw bad("expected a size such as 256M or 2G");
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < digits; ++i) {
    const std::uint64_t digit = static_cast<std::uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) throw bad("too large");
    value = value * 10 + digit;
  }
  const std::string unit = lower(text.substr(digits));
  unsigned shift;
  if (unit.empty() || unit == "m" || unit == "mib" || unit == "mb") {
    shift = 20;
  } else if (unit == "k" || unit == "kib" || unit == "kb") {
    shift = 10;
  } else if (unit == "g" || unit == "gib" || unit == "gb") {
    shift = 30;
  } else if (unit == "t" || unit == "tib" || unit == "tb") {
    shift = 40;
  } else {
    throw bad("unknown unit (use K, M, G or T)");
  }
  if (value > (std::numeric_limits<std::uint64_t>::max() >> shift)) throw bad("too large");
  const std::uint64_t bytes = value << shift;
  if (bytes == 0) throw bad("guest memory must be more than 0");
  if (bytes % 4096 != 0) throw bad("must be a multiple of 4 KiB");
  return bytes;
}

DiskConfig parse_disk(std::string_view text) {
  const auto bad = [&](const std::string& why) { return UsageError("--disk '" + std::string(text) + "': " + why); };
  DiskConfig disk;
  std::size_t start = 0;
  bool first = true;
  for (;;) {
    const std::size_t comma = text.find(',', start);
    const std::string_view part = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (first) {
      if (part.empty()) throw bad("expected PATH[,readonly][,serial=ID][,queues=N][,coalesce-us=N|auto]");
      disk.path = std::string(part);
      first = false;
    } else if (part == "readonly") {
      disk.read_only = true;
    } else if (part.rfind("serial=", 0) == 0) {
      disk.serial = std::string(part.substr(7));
      if (disk.serial.empty()) throw bad("serial= needs a value");
      if (disk.serial.size() > kMaxDiskSerial) {
        throw bad("the serial is longer than " + std::to_string(kMaxDiskSerial) + " bytes");
      }
      for (char c : disk.serial) {
        if (c < 0x21 || c > 0x7E) throw bad("the serial must be printable ASCII without spaces");
      }
    } else if (part.rfind("queues=", 0) == 0) {
      const std::optional<unsigned> queues = whole_number(part.substr(7), 1, kMaxDiskQueues);
      if (!queues) throw bad("queues= takes a number from 1 to " + std::to_string(kMaxDiskQueues));
      disk.queues = *queues;
    } else if (part == "coalesce-us=auto") {
      disk.coalesce_us = kAutoDiskCoalesceCeilingUs;
      disk.coalesce_follows_completions = true;
    } else if (part.rfind("coalesce-us=", 0) == 0) {
      const std::optional<unsigned> us = whole_number(part.substr(12), 0, kMaxDiskCoalesceUs);
      if (!us) {
        throw bad("coalesce-us= takes auto or a number of microseconds from 0 to " + std::to_string(kMaxDiskCoalesceUs));
      }
      disk.coalesce_us = *us;
      disk.coalesce_follows_completions = false;
    } else {
      throw bad("unknown option '" + std::string(part) + "' (expected readonly, serial=ID, queues=N or coalesce-us=N|auto)");
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return disk;
}

namespace {

std::string escape_control_characters(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

UsageError::UsageError(std::string_view message) : std::runtime_error(escape_control_characters(message)) {}

Command parse_command_line(const std::vector<std::string>& args) {
  CLI::App app{"vmm: a KVM virtual machine monitor (PIT, RTC, HPET, IOAPIC, PIC and optionally the LAPICs in user space)"};
  app.name("vmm");
  app.footer(kExitStatusHelp);
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("vmm ") + VMM_VERSION);

  Command command;
  RunOptions& o = command.run;
  std::string memory = "256M";
  std::vector<std::string> disks;
  std::string serial = "stdio";
  bool no_reboot = false;
  bool no_hpet = false;
  std::string irqchip = "split";
  std::string seccomp = "on";

  CLI::App* run = app.add_subcommand("run", "Boot a guest kernel (bzImage, or an ELF with a PVH entry note)");
  // Checked after parsing, so that an unknown option is named first.
  run->add_option("--kernel", o.kernel, "Kernel image (bzImage or PVH ELF); required");
  run->add_option("--initrd", o.initrd, "Initial ramdisk");
  run->add_option("--cmdline", o.cmdline, "Kernel command line");
  run->add_option("--cpus", o.cpus, "Number of vCPUs (default 1)");
  run->add_option("--memory", memory, "Guest RAM, e.g. 256M, 2G (default 256M; a bare number is MiB)");
  run->add_option("--serial", serial, "COM1 goes to: stdio (default), null, or file:PATH");
  run->add_flag("--no-reboot", no_reboot, "Exit (status 0) when the guest resets instead of rebooting it");
  run->add_flag("--no-hpet", no_hpet, "Leave the HPET (and its ACPI table) out");
  run->add_flag("--debug-exit", o.debug_exit,
                "Let the guest end the run through port 0xf4 with status (v << 1) | 1 (for test guests)");
  run->add_option("--disk", disks,
                  "A virtio-blk disk: PATH[,readonly][,serial=ID (up to 20 bytes)][,queues=N (1-64; default one per vCPU)]"
                  "[,coalesce-us=N|auto (an interrupt waits N us, 0-10000, for more completions to share it; "
                  "0: off; default auto: twice the recent gap between completions, at most 200 us)]; "
                  "repeat for more (up to 8)")
      ->allow_extra_args(false);
  run->add_option("--irqchip", irqchip,
                  "Local APICs: split (default; KVM's, with the IOAPIC and PIC here) or userspace (all here)")
      ->check(CLI::IsMember({"split", "userspace"}));
  run->add_option("--log-level", o.log_level, "trace, debug, info, warn (default), error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  run->add_option("--control", o.control, "Serve the control protocol on this Unix socket path");
  run->add_option("--kvm-device", o.kvm_device, "The KVM device (default /dev/kvm)");
  run->add_option("--seccomp", seccomp,
                  "on (default): each thread runs under its seccomp allow-list; off: no filter, for debugging only")
      ->check(CLI::IsMember({"on", "off"}));

  CtlOptions& c = command.ctl;
  long ctl_timeout_ms = 5000;
  CLI::App* ctl = app.add_subcommand("ctl", "Send one request to a running VMM's control socket (see --control)");
  ctl->add_option("path", c.path, "The control socket (vmm run --control PATH)")->required();
  ctl->add_option("command", c.command, "status, vcpus, pause, resume, reset or stop")
      ->required()
      ->check(CLI::IsMember({"status", "vcpus", "pause", "resume", "reset", "stop"}));
  ctl->add_flag("--force", c.force, "With stop: at once, without asking the guest to power off");
  ctl->add_option("--timeout-ms", ctl_timeout_ms, "How long to wait for the reply (default 5000)")
      ->check(CLI::Range(1l, 3600000l));
  ctl->footer(
      "Prints the VMM's JSON reply and exits 0 when it accepted the request; 1 when it refused\n"
      "(the reason on stderr); 3 when there was no usable answer (no socket, no reply).");

  std::vector<const char*> argv;
  argv.push_back("vmm");
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp&) {
    command.kind = Command::Kind::help;
    command.text = app.help();
    if (run->parsed()) command.text = run->help();
    if (ctl->parsed()) command.text = ctl->help();
    return command;
  } catch (const CLI::CallForAllHelp&) {
    command.kind = Command::Kind::help;
    command.text = app.help("", CLI::AppFormatMode::All);
    return command;
  } catch (const CLI::CallForVersion&) {
    command.kind = Command::Kind::version;
    command.text = std::string("vmm ") + VMM_VERSION + "\n";
    return command;
  } catch (const CLI::ParseError& e) {
    // CLI11's messages name the option ("--cpus: Value 'x' could not be ...").
    std::string message = e.what();
    if (message.empty()) message = "bad command line";
    throw UsageError(message);
  }

  if (ctl->parsed()) {
    if (c.force && c.command != "stop") throw UsageError("--force applies only to stop");
    c.timeout = std::chrono::milliseconds(ctl_timeout_ms);
    command.kind = Command::Kind::ctl;
    return command;
  }
  if (o.kernel.empty()) throw UsageError("run: --kernel is required");
  o.memory = parse_memory_size(memory);
  if (o.cpus == 0) throw UsageError("--cpus must be at least 1");
  o.reboot = !no_reboot;
  if (disks.size() > kMaxDisks) {
    throw UsageError("--disk: at most " + std::to_string(kMaxDisks) + " disks (" + std::to_string(disks.size()) +
                     " given)");
  }
  for (const std::string& disk : disks) o.disks.push_back(parse_disk(disk));
  o.hpet = !no_hpet;
  o.userspace_irqchip = irqchip == "userspace";
  o.seccomp = seccomp == "on";
  if (serial == "stdio") {
    o.serial = SerialKind::stdio;
  } else if (serial == "null") {
    o.serial = SerialKind::null;
  } else if (serial.rfind("file:", 0) == 0 && serial.size() > 5) {
    o.serial = SerialKind::file;
    o.serial_path = serial.substr(5);
  } else {
    throw UsageError("--serial '" + serial + "': expected stdio, null or file:PATH");
  }
  command.kind = Command::Kind::run;
  return command;
}

}  // namespace vmm
