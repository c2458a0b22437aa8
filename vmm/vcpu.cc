#include "vmm/vcpu.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <span>
#include <system_error>
#include <utility>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "devices/rate_limit.h"
#include "timers/race_points.h"
#include "vmm/syscall_filter.h"

namespace vmm {

namespace {

// Offset from SIGRTMIN. glibc keeps the signals below SIGRTMIN for itself;
// the first few above it are popular with other libraries, so keep clear.
constexpr int kKickSignalOffset = 3;

// While a controller waits for a vCPU to leave KVM_RUN it repeats the kick
// this often. By design one kick is enough; a repeat is counted (rekicks) so
// tests can prove that it never happened.
constexpr auto kRekickInterval = std::chrono::milliseconds(250);

// Where an x86 CPU starts after reset or INIT (with CS base 0xFFFF0000).
constexpr std::uint64_t kResetVectorRip = 0xfff0;

void kick_handler(int) {}

std::once_flag g_install_once;

void install_kick_handler() {
  const int sig = KvmSignals::kick_signal();
  struct sigaction old{};
  if (::sigaction(sig, nullptr, &old) < 0) throw_errno("cannot query the vCPU kick signal");
  const bool ours = (old.sa_flags & SA_SIGINFO) == 0 && old.sa_handler == &kick_handler;
  if (!ours && (old.sa_flags & SA_SIGINFO) != 0) {
    throw Error("signal SIGRTMIN+" + std::to_string(kKickSignalOffset) +
                " is already handled by another component; the vCPU kick needs it");
  }
  if (!ours && old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
    throw Error("signal SIGRTMIN+" + std::to_string(kKickSignalOffset) +
                " is already handled by another component; the vCPU kick needs it");
  }
  struct sigaction action{};
  action.sa_handler = &kick_handler;
  sigfillset(&action.sa_mask);
  // No SA_RESTART: an interrupted KVM_RUN must come back with EINTR (it
  // would anyway, KVM never restarts it), and no other call should be
  // silently restarted on our behalf either.
  action.sa_flags = 0;
  if (::sigaction(sig, &action, nullptr) < 0) throw_errno("cannot install the vCPU kick signal handler");
}

void block_kick_signal(sigset_t* old) noexcept {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, KvmSignals::kick_signal());
  pthread_sigmask(SIG_BLOCK, &set, old);
}

// Consumes every pending instance of the kick signal on this thread (and any
// process-directed one), so that the next KVM_RUN does not return at once.
void drain_kick_signal() noexcept {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, KvmSignals::kick_signal());
  const timespec zero{0, 0};
  while (::sigtimedwait(&set, nullptr, &zero) > 0) {
  }
}

std::atomic_ref<std::uint8_t> immediate_exit(kvm_run* run) noexcept {
  return std::atomic_ref<std::uint8_t>(run->immediate_exit);
}

RateLimit g_unclaimed_pio_log;
RateLimit g_unclaimed_mmio_log;
RateLimit g_guest_reset_log;

const char* internal_error_name(std::uint32_t suberror) noexcept {
  switch (suberror) {
    case KVM_INTERNAL_ERROR_EMULATION: return "instruction emulation failed";
    case KVM_INTERNAL_ERROR_SIMUL_EX: return "exception while delivering an exception";
    case KVM_INTERNAL_ERROR_DELIVERY_EV: return "exit while delivering an event";
    case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: return "unexpected hardware exit reason";
    default: return "unknown suberror";
  }
}

std::string hex(unsigned long long value) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", value);
  return buf;
}

template <typename T>
std::string hex_list(const T* data, std::uint32_t count, std::uint32_t max) {
  std::string out;
  for (std::uint32_t i = 0; i < count && i < max; ++i) {
    if (!out.empty()) out += ' ';
    out += hex(data[i]);
  }
  return out;
}

}  // namespace

const char* to_string(VcpuState state) noexcept {
  switch (state) {
    case VcpuState::created: return "created";
    case VcpuState::running: return "running";
    case VcpuState::paused: return "paused";
    case VcpuState::exited: return "exited";
  }
  return "?";
}

const char* to_string(VcpuExit exit) noexcept {
  switch (exit) {
    case VcpuExit::none: return "none";
    case VcpuExit::stopped: return "stopped";
    case VcpuExit::reset: return "reset";
    case VcpuExit::poweroff: return "poweroff";
    case VcpuExit::fatal: return "fatal";
  }
  return "?";
}

// --------------------------------------------------------------- KvmSignals

KvmSignals::KvmSignals() {
  std::call_once(g_install_once, install_kick_handler);
  block_kick_signal(nullptr);
}

int KvmSignals::kick_signal() noexcept { return SIGRTMIN + kKickSignalOffset; }

// --------------------------------------------------------------- VcpuThread

VcpuThread::VcpuThread(KvmVcpu vcpu, VcpuIo io, VcpuEvents& events)
    : vcpu_(std::move(vcpu)), io_(std::move(io)), events_(events), index_(vcpu_.index()) {
  KvmSignals install;
}

VcpuThread::~VcpuThread() { stop(); }

bool VcpuThread::on_own_thread() const noexcept {
  std::lock_guard lock(mu_);
  return alive_locked() && thread_id_ == std::this_thread::get_id();
}

void VcpuThread::start() {
  std::lock_guard control(control_mu_);
  std::unique_lock lock(mu_);
  if (alive_locked()) {
    throw Error("vcpu " + std::to_string(index_) + " is already running");
  }
  if (thread_.joinable()) {
    // The previous run ended on its own (guest event); its thread is on its
    // way out or gone. It never takes control_mu_, so this cannot deadlock.
    lock.unlock();
    thread_.join();
    lock.lock();
  }
  // No thread runs on this vCPU now, so nothing can race this store; a kick
  // left over from the previous run must not end the new one.
  immediate_exit(vcpu_.run_page()).store(0);
  request_ = Request::run;
  last_exit_ = VcpuExit::none;
  state_ = VcpuState::running;

  // The new thread must begin life with the kick blocked: it inherits the
  // creator's mask, and the creator may be any thread.
  sigset_t old;
  block_kick_signal(&old);
  try {
    thread_ = std::thread([this] { thread_main(); });
  } catch (const std::system_error& e) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    state_ = VcpuState::exited;
    last_exit_ = VcpuExit::fatal;
    throw Error("cannot create the thread for vcpu " + std::to_string(index_) + ": " + e.what());
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  thread_id_ = thread_.get_id();
  native_ = thread_.native_handle();
}

void VcpuThread::kick_locked() noexcept {
  immediate_exit(vcpu_.run_page()).store(1);
  if (alive_locked()) pthread_kill(native_, KvmSignals::kick_signal());
  cv_.notify_all();
}

void VcpuThread::acknowledge_kick_locked() noexcept {
  auto flag = immediate_exit(vcpu_.run_page());
  if (flag.load() == 0) return;
  flag.store(0);
  drain_kick_signal();
}

template <typename Done>
void VcpuThread::kick_until_locked(std::unique_lock<std::mutex>& lock, const char* why, Done done) {
  kick_locked();
  while (!done()) {
    if (cv_.wait_for(lock, kRekickInterval) == std::cv_status::timeout && !done()) {
      counters_.rekicks.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("vcpu {}: still in KVM_RUN {} ms after a {} kick; kicking again", index_, kRekickInterval.count(),
                   why);
      kick_locked();
    }
  }
}

void VcpuThread::notify() noexcept {
  {
    std::lock_guard lock(mu_);
    // On its own thread the vCPU is between exits: before_run, which acts on
    // whatever the notice was about, runs before its next KVM_RUN anyway.
    if (thread_id_ == std::this_thread::get_id()) return;
    if (state_ != VcpuState::running || request_ != Request::run) return;
    if (!idle_) {
      kick_locked();
      return;
    }
  }
  // A halted vCPU is the common case for a timer's interrupt, and there
  // only the wait needs ending: no signal to send and drain again, and no
  // immediate_exit to clear. Notified after unlocking, so that the woken
  // thread does not block at once on mu_; no wake-up is lost, since the
  // caller changed what should_wake() reads before taking mu_ above.
  cv_.notify_all();
}

bool VcpuThread::pause() {
  if (on_own_thread()) {
    std::lock_guard lock(mu_);
    if (request_ == Request::run) request_ = Request::pause;
    return false;
  }
  std::lock_guard control(control_mu_);
  std::unique_lock lock(mu_);
  if (!alive_locked()) return false;
  if (request_ == Request::stop) return false;
  request_ = Request::pause;
  if (state_ == VcpuState::paused) return true;
  kick_until_locked(lock, "pause", [this] { return state_ == VcpuState::paused || state_ == VcpuState::exited; });
  return state_ == VcpuState::paused;
}

void VcpuThread::resume() {
  const bool own = on_own_thread();
  std::unique_lock<std::mutex> control;
  if (!own) control = std::unique_lock(control_mu_);
  std::lock_guard lock(mu_);
  if (request_ == Request::pause) {
    request_ = Request::run;
    cv_.notify_all();
  }
}

void VcpuThread::stop() {
  if (on_own_thread()) {
    std::lock_guard lock(mu_);
    request_ = Request::stop;
    return;
  }
  std::lock_guard control(control_mu_);
  {
    std::unique_lock lock(mu_);
    if (alive_locked()) {
      request_ = Request::stop;
      kick_until_locked(lock, "stop", [this] { return !alive_locked(); });
    }
  }
  if (thread_.joinable()) thread_.join();
}

VcpuState VcpuThread::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

VcpuExit VcpuThread::last_exit() const {
  std::lock_guard lock(mu_);
  return last_exit_;
}

VcpuStats VcpuThread::stats() const noexcept {
  VcpuStats s;
  s.runs = counters_.runs.load(std::memory_order_relaxed);
  s.io_exits = counters_.io_exits.load(std::memory_order_relaxed);
  s.mmio_exits = counters_.mmio_exits.load(std::memory_order_relaxed);
  s.eoi_exits = counters_.eoi_exits.load(std::memory_order_relaxed);
  s.hlt_exits = counters_.hlt_exits.load(std::memory_order_relaxed);
  s.msr_exits = counters_.msr_exits.load(std::memory_order_relaxed);
  s.intr_exits = counters_.intr_exits.load(std::memory_order_relaxed);
  s.unhandled_io = counters_.unhandled_io.load(std::memory_order_relaxed);
  s.rekicks = counters_.rekicks.load(std::memory_order_relaxed);
  return s;
}

void VcpuThread::thread_main() noexcept {
  const std::string name = "vcpu-" + std::to_string(index_);
  pthread_setname_np(pthread_self(), name.c_str());

  Outcome outcome = Outcome::resume;
  try {
    // Inside KVM_RUN the kick must be deliverable; everywhere else it stays
    // blocked (see the header).
    sigset_t run_mask;
    pthread_sigmask(SIG_BLOCK, nullptr, &run_mask);
    sigdelset(&run_mask, KvmSignals::kick_signal());
    vcpu_.set_signal_mask(run_mask);
    syscall_filter::confine(ThreadKind::vcpu);
  } catch (const Error& e) {
    finish(report_fatal(e.what()));
    return;
  }

  // An I/O or MMIO exit leaves the instruction half done: KVM finishes it
  // (stores IN data, advances RIP) on the next KVM_RUN.
  bool io_pending = false;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (outcome == Outcome::park_halted || outcome == Outcome::wait_sipi) wait_while_idle(lock, outcome);
      if (io_pending && request_ != Request::run) {
        // Before parking or leaving, let KVM finish that instruction so the
        // registers the owner reads (or saves) are consistent; with
        // immediate_exit set it runs no further guest instruction.
        lock.unlock();
        complete_pending_io();
        io_pending = false;
        lock.lock();
      }
      acknowledge_kick_locked();
      while (request_ == Request::pause) {
        if (state_ != VcpuState::paused) {
          state_ = VcpuState::paused;
          cv_.notify_all();
        }
        cv_.wait(lock);
        acknowledge_kick_locked();
      }
      if (request_ == Request::stop) {
        outcome = Outcome::resume;
        break;
      }
      if (state_ != VcpuState::running) {
        state_ = VcpuState::running;
        cv_.notify_all();
      }
    }

    if (io_.interrupts != nullptr) {
      const VcpuInterrupts::Next next = io_.interrupts->before_run(vcpu_);
      if (next == VcpuInterrupts::Next::wait_sipi) {
        outcome = Outcome::wait_sipi;
        continue;
      }
      if (next == VcpuInterrupts::Next::reset) {
        pending_message_ = "INIT to the bootstrap processor";
        outcome = Outcome::exit_reset;
        break;
      }
    }
    if (io_.before_run) io_.before_run(vcpu_);
    counters_.runs.fetch_add(1, std::memory_order_relaxed);
    const int r = vcpu_.run();
    timers::race_point(timers::RacePoint::vcpu_exit_before_kick_ack);
    // KVM fills the run page's CR8 on every return, -EINTR included.
    if (io_.interrupts != nullptr) io_.interrupts->after_run(vcpu_);
    if (r == -EINTR) {
      counters_.intr_exits.fetch_add(1, std::memory_order_relaxed);
      drain_kick_signal();
      outcome = Outcome::resume;
      continue;
    }
    if (r == -EAGAIN) {
      outcome = Outcome::resume;
      continue;
    }
    if (r < 0) {
      outcome = report_fatal(std::string("KVM_RUN failed: ") + std::strerror(-r));
      break;
    }
    const std::uint32_t reason = vcpu_.run_page()->exit_reason;
    outcome = handle_exit();
    io_pending = reason == KVM_EXIT_IO || reason == KVM_EXIT_MMIO || reason == KVM_EXIT_X86_RDMSR ||
                 reason == KVM_EXIT_X86_WRMSR;
    if (outcome != Outcome::resume && outcome != Outcome::park_halted) break;
  }
  finish(outcome);
}

void VcpuThread::wait_while_idle(std::unique_lock<std::mutex>& lock, Outcome why) noexcept {
  if (io_.interrupts == nullptr) {
    // HLT reached user space and nothing in the kernel will wake this vCPU
    // (no in-kernel LAPIC, no user-space one): only the owner can.
    cv_.wait(lock, [this] { return request_ != Request::run; });
    return;
  }
  // The interrupt flag as the HLT left it: with interrupts off only an NMI,
  // INIT or SIPI ends the halt, so a pending interrupt must not wake (and
  // spin) a `cli; hlt`.
  VcpuInterrupts::Wait wait = VcpuInterrupts::Wait::sipi;
  if (why == Outcome::park_halted) {
    wait = vcpu_.run_page()->if_flag ? VcpuInterrupts::Wait::halted : VcpuInterrupts::Wait::halted_interrupts_off;
  }
  // No lost wake-up: whoever makes should_wake() true then calls notify(),
  // which needs mu_, held here until the wait has begun.
  idle_ = true;
  cv_.wait(lock, [&] { return request_ != Request::run || io_.interrupts->should_wake(wait); });
  idle_ = false;
}

void VcpuThread::complete_pending_io() noexcept {
  immediate_exit(vcpu_.run_page()).store(1);
  counters_.runs.fetch_add(1, std::memory_order_relaxed);
  const int r = vcpu_.run();
  if (r != -EINTR) spdlog::debug("vcpu {}: completing an I/O exit returned {}", index_, r);
  drain_kick_signal();
}

void VcpuThread::finish(Outcome outcome) noexcept {
  // Report first, then publish `exited`: whoever waits for the state change
  // also sees the event delivered.
  switch (outcome) {
    case Outcome::exit_reset:
      if (g_guest_reset_log.allow()) {
        spdlog::info("vcpu {}: reset requested: {} ({} similar suppressed)", index_, pending_message_,
                     g_guest_reset_log.take_suppressed());
      }
      events_.reset_requested(index_, pending_message_);
      break;
    case Outcome::exit_poweroff:
      events_.poweroff_requested(index_, pending_message_);
      break;
    case Outcome::exit_fatal:
      // The VM ends with this message as its outcome, and whoever runs the
      // VM reports that (vmm's main logs it once, at error).
      spdlog::debug("vcpu {}: {}", index_, pending_message_);
      events_.fatal_error(index_, pending_message_);
      break;
    case Outcome::resume:
    case Outcome::park_halted:
    case Outcome::wait_sipi:
      break;
  }
  std::lock_guard lock(mu_);
  switch (outcome) {
    case Outcome::exit_reset: last_exit_ = VcpuExit::reset; break;
    case Outcome::exit_poweroff: last_exit_ = VcpuExit::poweroff; break;
    case Outcome::exit_fatal: last_exit_ = VcpuExit::fatal; break;
    default: last_exit_ = VcpuExit::stopped; break;
  }
  state_ = VcpuState::exited;
  cv_.notify_all();
}

VcpuThread::Outcome VcpuThread::report_fatal(std::string message) noexcept {
  pending_message_ = std::move(message);
  vcpu_.dump_registers_debug();
  return Outcome::exit_fatal;
}

VcpuThread::Outcome VcpuThread::handle_exit() noexcept {
  kvm_run* run = vcpu_.run_page();
  switch (run->exit_reason) {
    case KVM_EXIT_IO:
      return handle_io();
    case KVM_EXIT_MMIO:
      return handle_mmio();
    case KVM_EXIT_IOAPIC_EOI:
      counters_.eoi_exits.fetch_add(1, std::memory_order_relaxed);
      if (io_.ioapic_eoi) io_.ioapic_eoi(index_, run->eoi.vector);
      return Outcome::resume;
    case KVM_EXIT_HLT:
      counters_.hlt_exits.fetch_add(1, std::memory_order_relaxed);
      return Outcome::park_halted;
    case KVM_EXIT_INTR:
      counters_.intr_exits.fetch_add(1, std::memory_order_relaxed);
      drain_kick_signal();
      return Outcome::resume;
    case KVM_EXIT_IRQ_WINDOW_OPEN:
      // Requested by whoever injects through KVM_INTERRUPT (the user-space
      // PIC or LAPIC); the injection happens before the next KVM_RUN.
      return Outcome::resume;
    case KVM_EXIT_X86_RDMSR:
    case KVM_EXIT_X86_WRMSR:
      return handle_msr();
    case KVM_EXIT_SHUTDOWN: {
      pending_message_ = "triple fault (KVM_EXIT_SHUTDOWN)";
      try {
        // On AMD, KVM has put the vCPU through INIT before this exit: its
        // registers are the reset vector's, not the faulting code's.
        const std::uint64_t rip = vcpu_.regs().rip;
        pending_message_ += " at rip " + hex(rip);
        if (rip == kResetVectorRip) pending_message_ += " (the reset vector: registers already reset by KVM, as on AMD)";
      } catch (const Error&) {
      }
      vcpu_.dump_registers_debug();
      // KVM has already put this vCPU through INIT; on AMD that lost its
      // TSC offset (see KvmVcpu::reload_tsc_offset()).
      try {
        vcpu_.reload_tsc_offset();
      } catch (const Error& e) {
        spdlog::warn("vcpu {}: the TSC offset could not be restored after the triple fault: {}", vcpu_.index(), e.what());
      }
      return Outcome::exit_reset;
    }
    case KVM_EXIT_SYSTEM_EVENT:
      return handle_system_event();
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string message = std::string("KVM internal error: ") + internal_error_name(run->internal.suberror) +
                            " (suberror " + std::to_string(run->internal.suberror) + ")";
      if (run->internal.ndata > 0) message += ", data: " + hex_list(run->internal.data, run->internal.ndata, 16);
      try {
        message += ", rip " + hex(vcpu_.regs().rip);
      } catch (const Error&) {
      }
      return report_fatal(std::move(message));
    }
    case KVM_EXIT_FAIL_ENTRY: {
      return report_fatal("VM entry failed: hardware reason " + hex(run->fail_entry.hardware_entry_failure_reason) +
                          " on host CPU " +
                          std::to_string(run->fail_entry.cpu));
    }
    default:
      return report_fatal("unexpected KVM exit " + std::to_string(run->exit_reason) + " (" +
                          exit_reason_name(run->exit_reason) + ")");
  }
}

VcpuThread::Outcome VcpuThread::handle_io() noexcept {
  counters_.io_exits.fetch_add(1, std::memory_order_relaxed);
  kvm_run* run = vcpu_.run_page();
  const auto& io = run->io;
  const std::size_t size = io.size;
  const std::size_t count = io.count;
  const std::size_t offset = io.data_offset;
  const std::size_t room = vcpu_.run_size();
  // The kernel lays string I/O out as `count` consecutive items; check the
  // whole span fits the mapping before trusting it.
  if ((size != 1 && size != 2 && size != 4) || count == 0 || offset > room || count > (room - offset) / size) {
    return report_fatal("malformed I/O exit: port " + std::to_string(io.port) + ", size " + std::to_string(size) +
                        ", count " + std::to_string(count) + ", offset " + std::to_string(offset));
  }
  std::uint8_t* data = reinterpret_cast<std::uint8_t*>(run) + offset;
  const bool in = io.direction == KVM_EXIT_IO_IN;
  bool claimed = true;
  for (std::size_t i = 0; i < count; ++i) {
    std::span<std::uint8_t> item(data + i * size, size);
    bool ok = false;
    if (io_.pio != nullptr) {
      ok = in ? io_.pio->read(io.port, item) : io_.pio->write(io.port, item);
    } else if (in) {
      std::fill(item.begin(), item.end(), std::uint8_t{0xff});
    }
    claimed = claimed && ok;
  }
  if (!claimed) {
    counters_.unhandled_io.fetch_add(1, std::memory_order_relaxed);
    // Debug, not a warning: guests probe for hardware that is not there
    // (Linux reads the PCI, COM2-4 and VGA ports at every boot).
    if (g_unclaimed_pio_log.allow()) {
      spdlog::debug("vcpu {}: {} of unclaimed port {:#x} ({} byte{}{}), {} ({} similar suppressed)", index_,
                   in ? "read" : "write", io.port, size, size == 1 ? "" : "s",
                   count > 1 ? ", x" + std::to_string(count) : std::string(),
                   in ? "reads as all ones" : "dropped", g_unclaimed_pio_log.take_suppressed());
    }
  }
  return Outcome::resume;
}

VcpuThread::Outcome VcpuThread::handle_mmio() noexcept {
  counters_.mmio_exits.fetch_add(1, std::memory_order_relaxed);
  auto& mmio = vcpu_.run_page()->mmio;
  const std::size_t len = mmio.len;
  if (len == 0 || len > sizeof mmio.data) {
    return report_fatal("malformed MMIO exit: address " + hex(mmio.phys_addr) + ", length " +
                        std::to_string(len));
  }
  std::span<std::uint8_t> data(mmio.data, len);
  // The APIC page is per vCPU: the same address is a different device on
  // each one, so it is looked at before the shared bus.
  if (io_.interrupts != nullptr && io_.interrupts->mmio(mmio.phys_addr, data, mmio.is_write != 0)) {
    return Outcome::resume;
  }
  bool ok = false;
  if (io_.mmio != nullptr) {
    ok = mmio.is_write ? io_.mmio->write(mmio.phys_addr, data) : io_.mmio->read(mmio.phys_addr, data);
  } else if (!mmio.is_write) {
    std::fill(data.begin(), data.end(), std::uint8_t{0xff});
  }
  if (!ok) {
    counters_.unhandled_io.fetch_add(1, std::memory_order_relaxed);
    if (g_unclaimed_mmio_log.allow()) {
      spdlog::warn("vcpu {}: {} of unclaimed MMIO address {:#x} ({} bytes), {} ({} similar suppressed)", index_,
                   mmio.is_write ? "write" : "read", mmio.phys_addr, len,
                   mmio.is_write ? "dropped" : "reads as all ones", g_unclaimed_mmio_log.take_suppressed());
    }
  }
  return Outcome::resume;
}

VcpuThread::Outcome VcpuThread::handle_msr() noexcept {
  counters_.msr_exits.fetch_add(1, std::memory_order_relaxed);
  kvm_run* run = vcpu_.run_page();
  // KVM completes the instruction on the next KVM_RUN: data for RDMSR,
  // and error != 0 makes it raise #GP instead.
  if (run->exit_reason == KVM_EXIT_X86_RDMSR) {
    std::uint64_t value = 0;
    const bool ok = io_.interrupts != nullptr && io_.interrupts->read_msr(run->msr.index, value);
    run->msr.data = ok ? value : 0;
    run->msr.error = ok ? 0 : 1;
  } else {
    const bool ok = io_.interrupts != nullptr && io_.interrupts->write_msr(run->msr.index, run->msr.data);
    run->msr.error = ok ? 0 : 1;
  }
  return Outcome::resume;
}

VcpuThread::Outcome VcpuThread::handle_system_event() noexcept {
  const auto& event = vcpu_.run_page()->system_event;
  std::string detail;
  if (event.ndata > 0) detail = ", data: " + hex_list(event.data, event.ndata, 16);
  switch (event.type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN:
      pending_message_ = "guest powered off (KVM_SYSTEM_EVENT_SHUTDOWN" + detail + ")";
      return Outcome::exit_poweroff;
    case KVM_SYSTEM_EVENT_RESET:
      pending_message_ = "guest requested a reset (KVM_SYSTEM_EVENT_RESET" + detail + ")";
      return Outcome::exit_reset;
    case KVM_SYSTEM_EVENT_CRASH:
      return report_fatal("guest reported a crash (KVM_SYSTEM_EVENT_CRASH" + detail + ")");
    default:
      return report_fatal("unexpected KVM system event " + std::to_string(event.type) + detail);
  }
}

}  // namespace vmm
