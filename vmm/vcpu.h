// One thread per vCPU running KVM_RUN, and the state machine that lets
// another thread pause, resume and stop it at any moment.
//
// States (VcpuState):
//
//   created --start()--> running <--pause()/resume()--> paused
//      ^                    |                              |
//      |                    +-- stop(), or a guest event --+--> exited
//      +---------------- start() again (after a reset) ---------'
//
// Guest events that end a run (triple fault, reset/poweroff requests, fatal
// KVM exits) are reported through VcpuEvents on the vCPU thread; the thread
// then leaves its loop and the state becomes `exited`. The owner decides
// what happens next (stop the other vCPUs, reset, start() again).
//
// The kick. To get a vCPU out of KVM_RUN, the controller takes the state
// lock, records its request, sets kvm_run->immediate_exit = 1 and sends the
// vCPU thread the kick signal (a real-time signal with a no-op handler,
// installed without SA_RESTART). Every thread in the process keeps the kick
// signal blocked; only KVM_RUN unblocks it, through KVM_SET_SIGNAL_MASK. So:
//   - a vCPU inside KVM_RUN is interrupted and returns -EINTR;
//   - a vCPU about to enter KVM_RUN returns at once, because immediate_exit
//     is already set (and the signal stays pending until KVM_RUN unblocks it);
//   - a vCPU busy in device code is not disturbed: the signal waits, blocked,
//     and no system call of a device or library ever sees EINTR from it.
// The vCPU thread acknowledges a kick under the same state lock (it clears
// immediate_exit and drains the pending signal), so a kick is either seen as
// a request before the vCPU enters KVM_RUN or makes KVM_RUN return: it
// cannot be lost. timers::RacePoint::vcpu_exit_before_kick_ack marks the
// window between KVM_RUN's return and that acknowledgement.
//
// Before it parks (pause) or leaves (stop), a vCPU whose last exit was port
// I/O or MMIO re-enters KVM_RUN once with immediate_exit set: KVM completes
// that instruction (IN data, RIP) and runs nothing else, so registers read
// or saved while a vCPU is paused or stopped are consistent.
//
// Threads that exist before the first VcpuThread is constructed do not block
// the kick signal; a process-directed instance could then run the (empty)
// handler on them and interrupt one system call. Construct a KvmSignals
// guard (or any VcpuThread) in main() before other threads to avoid even that.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>

#include "devices/bus.h"
#include "vmm/kvm.h"

namespace vmm {

// Reports from a vCPU thread to the VM's owner. Called on the vCPU thread
// itself, at most once per run, after which the thread stops running the
// guest. Implementations must not block on other vCPUs (two vCPUs stopping
// each other would deadlock): record the request and let a control thread
// act on it. Calling stop()/pause() on the reporting vCPU itself is allowed
// (it does not wait).
class VcpuEvents {
 public:
  virtual ~VcpuEvents() = default;
  // Triple fault (KVM_EXIT_SHUTDOWN) or KVM_SYSTEM_EVENT_RESET.
  virtual void reset_requested(unsigned vcpu, std::string_view reason) noexcept = 0;
  // KVM_SYSTEM_EVENT_SHUTDOWN.
  virtual void poweroff_requested(unsigned vcpu, std::string_view reason) noexcept = 0;
  // Internal errors, failed entries, unexpected exits, KVM_RUN failures,
  // guest crash reports. The message says what happened; registers are
  // logged at debug level.
  virtual void fatal_error(unsigned vcpu, std::string_view message) noexcept = 0;
};

// The vCPU side of an interrupt controller KVM does not have
// (--irqchip=userspace; vmm/vcpu_lapic.h implements it over devices/lapic).
// Every method runs on the vCPU's own thread.
class VcpuInterrupts {
 public:
  virtual ~VcpuInterrupts() = default;
  enum class Next : std::uint8_t {
    run,        // enter the guest
    wait_sipi,  // an application processor waiting for its start-up IPI
    reset,      // the boot processor received INIT: the machine resets
  };
  // Right before each KVM_RUN, with no lock held: INIT/SIPI/NMI, CR8 and
  // interrupt injection (or an interrupt-window request).
  virtual Next before_run(KvmVcpu& vcpu) noexcept = 0;
  // Right after each KVM_RUN (the guest's CR8 is in the run page).
  virtual void after_run(KvmVcpu& vcpu) noexcept = 0;
  // An MMIO exit: true when the address is this vCPU's own (its APIC page)
  // and the access was handled.
  virtual bool mmio(std::uint64_t address, std::span<std::uint8_t> data, bool is_write) noexcept = 0;
  // RDMSR/WRMSR exits sent to user space; false: the guest gets #GP.
  virtual bool read_msr(std::uint32_t index, std::uint64_t& value) noexcept = 0;
  virtual bool write_msr(std::uint32_t index, std::uint64_t value) noexcept = 0;
  enum class Wait : std::uint8_t { halted, halted_interrupts_off, sipi };
  // Whether a vCPU waiting in `wait` has something to do. Called with the
  // VcpuThread's lock held: must not block or call into the VcpuThread.
  // Whoever makes it true calls VcpuThread::notify() afterwards.
  virtual bool should_wake(Wait wait) const noexcept = 0;
};

// What a vCPU dispatches its exits to. The buses and the callback must
// outlive every VcpuThread that uses them.
struct VcpuIo {
  const devices::Bus* pio = nullptr;
  const devices::Bus* mmio = nullptr;
  // KVM_EXIT_IOAPIC_EOI: the guest EOI'd a level-triggered vector that a
  // user-space IOAPIC route names (see irq_routing.h). Runs on the vCPU thread.
  std::function<void(unsigned vcpu, std::uint8_t vector)> ioapic_eoi;
  // Runs on the vCPU thread right before every KVM_RUN, with no lock held.
  // vCPU 0 uses it to inject the user-space PIC's ExtINT (KVM_INTERRUPT or
  // request_interrupt_window) and to keep the legacy timers on its CPU.
  std::function<void(KvmVcpu& vcpu)> before_run{};
  // --irqchip=userspace: this vCPU's local APIC side. Null with the split
  // irqchip. Must outlive the VcpuThread.
  VcpuInterrupts* interrupts = nullptr;
};

enum class VcpuState : std::uint8_t { created, running, paused, exited };
// Why the last run ended (meaningful in state `exited`).
enum class VcpuExit : std::uint8_t { none, stopped, reset, poweroff, fatal };

const char* to_string(VcpuState state) noexcept;
const char* to_string(VcpuExit exit) noexcept;

struct VcpuStats {
  std::uint64_t runs = 0;         // KVM_RUN calls
  std::uint64_t io_exits = 0;
  std::uint64_t mmio_exits = 0;
  std::uint64_t eoi_exits = 0;
  std::uint64_t hlt_exits = 0;
  std::uint64_t msr_exits = 0;    // RDMSR/WRMSR sent to user space (user-space irqchip)
  std::uint64_t intr_exits = 0;   // KVM_RUN returned -EINTR
  std::uint64_t unhandled_io = 0; // port or MMIO accesses no device claimed
  std::uint64_t rekicks = 0;      // kicks repeated because a wait timed out (expected: 0)
};

// Installs the kick signal's handler (once per process) and blocks the
// signal in the calling thread, so threads it creates afterwards inherit the
// block. Throws vmm::Error if another component already handles that signal.
class KvmSignals {
 public:
  KvmSignals();
  static int kick_signal() noexcept;
};

class VcpuThread {
 public:
  // Takes ownership of the vCPU. `events` must outlive this object.
  VcpuThread(KvmVcpu vcpu, VcpuIo io, VcpuEvents& events);
  // Stops (and joins) the thread. Must not run on the vCPU's own thread.
  ~VcpuThread();
  VcpuThread(const VcpuThread&) = delete;
  VcpuThread& operator=(const VcpuThread&) = delete;

  // Starts the thread ("vcpu-N") from state created or exited. Throws
  // vmm::Error if the thread cannot be created or the vCPU is running.
  void start();

  // Returns once the vCPU is out of KVM_RUN and parked (true), or at once if
  // it is not running (created/exited: false). From the vCPU's own thread it
  // only records the request and returns false.
  bool pause();

  // Lets a paused vCPU run again. No effect in other states.
  void resume();

  // Makes a running vCPU leave KVM_RUN once and go round its loop (so
  // before_run sees, say, a newly pending PIC interrupt), without pausing
  // it. Cheap when it is not in KVM_RUN; never waits. Any thread.
  void notify() noexcept;

  // Stops the vCPU and joins its thread; afterwards the state is exited (or
  // still created if it never started). Idempotent; callable from any
  // thread, at any moment, concurrently with anything. From the vCPU's own
  // thread it records the request and returns without joining.
  void stop();

  VcpuState state() const;
  VcpuExit last_exit() const;
  unsigned index() const noexcept { return index_; }
  VcpuStats stats() const noexcept;

  // The vCPU itself, for register access while it is not running (created,
  // paused or exited states) and for thread-safe ioctls at any time.
  KvmVcpu& vcpu() noexcept { return vcpu_; }
  const KvmVcpu& vcpu() const noexcept { return vcpu_; }

 private:
  enum class Request : std::uint8_t { run, pause, stop };
  enum class Outcome : std::uint8_t { resume, park_halted, wait_sipi, exit_reset, exit_poweroff, exit_fatal };

  void thread_main() noexcept;
  bool on_own_thread() const noexcept;
  // Between the thread's start and its final state change (mu_ held).
  bool alive_locked() const noexcept { return state_ == VcpuState::running || state_ == VcpuState::paused; }
  // Under mu_: record the request and get the vCPU out of KVM_RUN.
  void kick_locked() noexcept;
  // Under mu_ (held by `lock`): kicks, then waits until `done()`, kicking
  // again whenever the vCPU stays in KVM_RUN for kRekickInterval.
  template <typename Done>
  void kick_until_locked(std::unique_lock<std::mutex>& lock, const char* why, Done done);
  // Under mu_: consume a kick (clear immediate_exit, drain the signal).
  void acknowledge_kick_locked() noexcept;
  // KVM_RUN with immediate_exit set: finishes an I/O instruction, runs
  // nothing else.
  void complete_pending_io() noexcept;
  Outcome handle_exit() noexcept;
  Outcome handle_io() noexcept;
  Outcome handle_mmio() noexcept;
  Outcome handle_system_event() noexcept;
  Outcome handle_msr() noexcept;
  // Until the owner pauses or stops the vCPU, or (user-space irqchip) its
  // APIC has something for it. mu_ held by `lock`.
  void wait_while_idle(std::unique_lock<std::mutex>& lock, Outcome why) noexcept;
  Outcome report_fatal(std::string message) noexcept;
  void finish(Outcome outcome) noexcept;

  KvmVcpu vcpu_;
  VcpuIo io_;
  VcpuEvents& events_;
  const unsigned index_;

  // Serialises controllers (start/pause/stop) with each other; never taken
  // by the vCPU thread, so a controller may wait while holding it.
  std::mutex control_mu_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  VcpuState state_ = VcpuState::created;
  Request request_ = Request::run;
  VcpuExit last_exit_ = VcpuExit::none;
  // The thread waits in wait_while_idle for its APIC (out of KVM_RUN).
  bool idle_ = false;
  std::thread::id thread_id_;
  pthread_t native_ = {};
  std::thread thread_;

  std::string pending_message_;  // fatal/reset reason built on the vCPU thread

  struct Counters {
    std::atomic<std::uint64_t> runs{0}, io_exits{0}, mmio_exits{0}, eoi_exits{0}, hlt_exits{0}, msr_exits{0},
        intr_exits{0}, unhandled_io{0}, rekicks{0};
  } counters_;
};

}  // namespace vmm
