// vmm: the command-line front end. Everything it does is in the library;
// this file parses, wires the process (signals, console, logging) and turns
// the outcome into an exit status (see vmm/cli.h).
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>

#include "devices/error.h"
#include "vmm/cli.h"
#include "vmm/console.h"
#include "vmm/control.h"
#include "vmm/host_signals.h"
#include "vmm/kvm.h"
#include "vmm/syscall_filter.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

namespace {

// As early as the process can take it: boot milestones are timed from here.
const vmm::timers::Nanos g_process_start = vmm::timers::MonotonicClock::instance().now();

void setup_logging(const std::string& level) {
  // Synchronous and to stderr: COM1 owns stdout, and an async logger would
  // preallocate its queue (memory a small VM does not need).
  auto logger = spdlog::stderr_logger_st("vmm");
  logger->set_pattern("vmm: %l: %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(std::move(logger));
}

std::unique_ptr<vmm::devices::SerialOutput> make_serial_output(const vmm::RunOptions& o) {
  switch (o.serial) {
    case vmm::SerialKind::stdio: return vmm::devices::FdOutput::borrow(STDOUT_FILENO);
    case vmm::SerialKind::file: return vmm::devices::FdOutput::open_file(o.serial_path);
    case vmm::SerialKind::null: break;
  }
  return std::make_unique<vmm::devices::NullOutput>();
}

int run_vm(const vmm::RunOptions& o) {
  vmm::VmConfig config;
  config.boot.kernel = o.kernel;
  if (o.initrd) config.boot.initrd = *o.initrd;
  config.boot.cmdline = o.cmdline;
  config.boot.cpus = o.cpus;
  config.boot.hpet = o.hpet;
  config.userspace_irqchip = o.userspace_irqchip;
  config.memory = o.memory;
  config.reboot = o.reboot;
  config.debug_exit = o.debug_exit;
  config.process_start = g_process_start;
  config.disks = o.disks;
  // Every input is checked before /dev/kvm is opened: a wrong path or a bad
  // image is named as such on any host, with or without KVM.
  vmm::PreparedGuest guest = vmm::prepare_guest(config);
  auto serial_output = make_serial_output(o);
  config.serial_output = serial_output.get();

  // Before the first thread: each confines itself once its set-up is done.
  if (o.seccomp) {
    vmm::syscall_filter::enable();
  } else {
    spdlog::warn("--seccomp=off: no thread has a syscall filter; use this for debugging only");
  }
  vmm::KvmSystem kvm(o.kvm_device);
  vmm::timers::LoopOptions loops;
  loops.thread_prologue = []() noexcept { vmm::syscall_filter::confine_or_exit(vmm::ThreadKind::timer_loop); };
  vmm::timers::CyclicSystem timers(vmm::timers::MonotonicClock::instance(), loops);
  vmm::Vm vm(config, std::move(guest), kvm, timers);

  vmm::HostSignals signals([&vm] { vm.stop(); }, [&vm] { vm.force_stop(); });
  std::optional<vmm::TerminalRawMode> raw;
  std::optional<vmm::ConsoleInput> console;
  if (o.serial == vmm::SerialKind::stdio) {
    raw.emplace(STDIN_FILENO);
    console.emplace(STDIN_FILENO, vm.serial(), [&vm] { vm.force_stop(); });
  }
  // Last, so that it goes first: the socket disappears as soon as the VM
  // has ended, and on every way out of this function.
  std::optional<vmm::ControlServer> control;
  if (o.control) control.emplace(*o.control, vm);

  // Set-up is over: from here this thread runs the VM's lifecycle only.
  vmm::syscall_filter::confine(vmm::ThreadKind::main);
  const vmm::VmOutcome outcome = vm.run();
  control.reset();
  console.reset();
  raw.reset();
  if (outcome.end == vmm::VmEnd::guest_error || outcome.end == vmm::VmEnd::guest_panic) {
    spdlog::error("{}", outcome.message);
  }
  if (outcome.end == vmm::VmEnd::guest_error && !kvm.hardware_virtualization()) {
    spdlog::error("{}", vmm::KvmSystem::software_only_hint());
  }
  return outcome.exit_status;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread: every thread inherits these masks, so the kick
  // signal reaches only KVM_RUN and SIGTERM/SIGINT only the watcher.
  vmm::HostSignals::block_in_this_thread();
  std::optional<vmm::KvmSignals> kick;
  try {
    kick.emplace();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm: %s\n", e.what());
    return vmm::kExitSetup;
  }

  vmm::Command command;
  try {
    command = vmm::parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const vmm::UsageError& e) {
    std::fprintf(stderr, "vmm: %s (see vmm --help)\n", e.what());
    return vmm::kExitUsage;
  }
  if (command.kind == vmm::Command::Kind::ctl) return vmm::run_ctl(command.ctl);
  if (command.kind != vmm::Command::Kind::run) {
    std::fputs(command.text.c_str(), stdout);
    return 0;
  }

  setup_logging(command.run.log_level);
  try {
    return run_vm(command.run);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm: %s\n", e.what());
    return vmm::kExitSetup;
  }
}
