// The local APIC of one vCPU, in user space (Intel SDM vol. 3A, "Advanced
// Programmable Interrupt Controller"): the --irqchip=userspace mode, where
// KVM has no interrupt controller and the VMM injects with KVM_INTERRUPT.
// It never touches /dev/kvm; vmm/ feeds it MMIO and MSR exits and asks it
// what to inject. Its timer is devices/lapic_timer, on the callouts.
//
// ---- What the guest sees ----------------------------------------------------
// * xAPIC: MMIO at IA32_APIC_BASE (0xFEE00000; relocation is refused with
//   #GP, as bhyve does). Registers are 32 bits at 16-byte aligned offsets.
//   Reads of 1-8 bytes at any offset return the register's bytes where the
//   access overlaps bytes 0-3 of its slot and 0 elsewhere; reserved offsets
//   read 0. Writes take effect only as aligned 32-bit stores at a register
//   (as KVM: other widths and offsets are dropped), writes to read-only or
//   reserved registers are dropped; both are logged at a rate limit.
// * x2APIC (when Config::x2apic, advertised by CPUID.1:ECX[21]): MSRs
//   0x800-0x8FF, index = 0x800 + offset / 16, plus the 64-bit ICR (0x830,
//   destination in bits 63:32) and SELF IPI (0x83F). read_msr()/write_msr()
//   report a #GP for: any x2APIC MSR outside x2APIC mode, registers that do
//   not exist in x2APIC mode (APR, RRD, DFR, CMCI, ICR2, reserved), reads of
//   write-only ones (EOI, SELF IPI), writes of read-only ones, a non-zero
//   write to EOI or ESR, bits 63:32 set in any but the ICR, reserved ICR
//   bits (13, 16-17, 20-31). In x2APIC mode the MMIO window reads as all
//   ones and ignores writes.
// * IA32_APIC_BASE (0x1B): EN (bit 11), EXTD (bit 10), BSP (bit 8). Valid
//   transitions only (SDM "x2APIC State Transitions"): #GP for EXTD without
//   x2APIC support, EN=0 with EXTD=1, x2APIC -> xAPIC, disabled -> x2APIC,
//   reserved bits, a new base address. Disabling resets every register but
//   the ID (the state is not preserved across it); a disabled APIC accepts
//   nothing, and its LINT0/LINT1 pins act as the CPU's INTR and NMI.
// * IA32_TSC_DEADLINE (0x6E0): when Config::tsc_deadline (CPUID.1:ECX[24]),
//   else #GP; writes outside TSC-deadline mode are ignored.
// * ID: the vCPU index, read-only (bhyve keeps it fixed too: the MADT and
//   CPUID say the same). Version 0x00050014: 6 LVT entries (timer, thermal,
//   performance, LINT0, LINT1, error), no directed EOI (bit 24 = 0), so the
//   SVR's EOI-broadcast-suppression bit is reserved; every EOI of a
//   level-triggered vector is broadcast.
// * TPR, PPR, APR by the SDM's rules: PPR = TPR when TPR[7:4] >= ISRV[7:4],
//   else ISRV[7:4]:0; a vector is deliverable when its class (bits 7:4) is
//   above PPR's. APR (0x90) is computed as the SDM defines it and is what
//   lowest-priority arbitration compares.
// * IRR/ISR/TMR: 256-bit sets. An interrupt already in the IRR coalesces.
//   EOI clears the highest ISR bit and, when that vector's TMR bit is set,
//   broadcasts the EOI (to the IOAPIC). An EOI with nothing in service does
//   nothing.
// * ESR: errors accumulate internally; a write (any value in xAPIC mode,
//   only 0 in x2APIC mode) moves them into the readable register. Logged:
//   send illegal vector (bit 5: an ICR or SELF IPI fixed or lowest-priority
//   vector 0-15, which is then not sent) and receive illegal vector (bit 6:
//   any fixed interrupt with vector 0-15 that reaches this APIC, never set in
//   the IRR). Bit 7 (illegal register address) is not reported, as in KVM,
//   so a guest probing reserved offsets gets no error interrupts. Each
//   error raises the LVT error interrupt when it is unmasked (an error with
//   an illegal vector there is logged, not raised again).
// * SVR: vector (7:0), software enable (8), focus checking (9, stored). A
//   software-disabled APIC sets every LVT mask bit and keeps it set on LVT
//   writes, drops fixed and lowest-priority interrupts (bhyve and KVM do),
//   keeps what is in the IRR and ISR, still takes NMI, INIT and SIPI, and
//   can still send IPIs.
// * LVT: timer (devices/lapic_timer: one-shot, periodic, TSC-deadline), LINT0
//   and LINT1 (fixed edge or level with Remote IRR, NMI, SMI, INIT, ExtINT),
//   error (fixed), thermal and performance (stored; nothing raises them).
// * ICR: fixed, lowest priority, SMI, NMI, INIT (the level de-assert form is
//   ignored, as on every processor since the Pentium 4), start-up; physical
//   or logical destinations; shorthands self, all, all-but-self. Delivery is
//   immediate, so delivery status always reads 0. Routing is ApicBus's.
//
// ---- What the vCPU side does with it (vmm/) ---------------------------------
// On its own thread, before each KVM_RUN:
//   1. events = take_events(): INIT (this APIC has already reset itself; the
//      vCPU resets its registers and, unless it is the BSP, waits for a
//      SIPI), a SIPI vector (honoured only by a vCPU waiting for one: start
//      at vector << 12), NMI (KVM_NMI), SMI (no SMM here: ignore).
//   2. run->cr8 = cr8();
//   3. If extint_pending() or next_interrupt(): when
//      run->ready_for_interrupt_injection, inject ExtINT first (vector from
//      Pic::acknowledge(), then extint_accepted()), else the vector v from
//      next_interrupt() with KVM_INTERRUPT and, when that succeeds,
//      accept(v); otherwise run->request_interrupt_window = 1.
//   4. bind_timers(loop of this CPU) when the thread moved CPU.
// After each KVM_RUN: set_cr8(run->cr8) (KVM_EXIT_SET_TPR is such an exit).
// MMIO exits in [kMmioBase, kMmioBase + kMmioSize) go to this vCPU's own
// read()/write(); RDMSR/WRMSR exits for is_apic_msr() indices (through
// KVM_X86_SET_MSR_FILTER) go to read_msr()/write_msr(), #GP on failure.
// A vCPU waiting (HLT, or an AP waiting for SIPI) sleeps until the kick and
// then looks again (pending_wakeup() says whether anything is there).
//
// ---- Threads and locks -------------------------------------------------------
// Any method may be called from any thread; the usual callers are: MMIO and
// MSR accesses and the injection calls on the vCPU's thread; receive() and
// set_lint() from other vCPUs' threads (IPIs), the IOAPIC's and HPET's
// callers and timer loops; the timer's handler on its loop thread.
// Locks, in order: write_mu_ (serializes register writes, INIT and resets)
// -> LapicTimer's lock -> mu_ (IRR/ISR/TMR and every other register). The
// timer delivers with its lock held, so nothing here calls the timer with
// mu_ held. IPIs, EOI broadcasts and kicks are made with no lock of this
// APIC held (IPIs reach other APICs' write_mu_, an EOI reaches the IOAPIC,
// which may send an MSI straight back), except the kick of a timer
// interrupt, made with the timer's lock held: the kick must not call back
// into this APIC, and must not block (VcpuThread::notify() does neither).
//
// ---- What bounds a storm ------------------------------------------------------
// Repeated interrupts of one vector coalesce in the IRR and kick only when a
// bit is newly set, so a self-IPI storm costs the guest its own exits and
// kicks at most once per vector per injection; a timer period shorter than
// LapicTimer::kMinPeriod fires at most once per kMinPeriod; a TSC deadline
// in the past fires once; every log line a guest can cause is rate-limited.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <span>

#include "devices/bus.h"
#include "devices/lapic_timer.h"
#include "devices/timer_device.h"

namespace vmm::devices {

class ApicBus;

// Delivery modes of the ICR, the LVT and MSI data (bits 10:8).
enum class ApicDelivery : std::uint8_t {
  fixed = 0,
  lowest_priority = 1,
  smi = 2,
  reserved3 = 3,
  nmi = 4,
  init = 5,
  startup = 6,  // SIPI (ICR only)
  extint = 7,   // LVT and MSI only
};

enum class ApicShorthand : std::uint8_t { none = 0, self = 1, all_including_self = 2, all_excluding_self = 3 };

// One message between APICs: an IPI from an ICR, or a decoded MSI.
struct ApicMessage {
  std::uint8_t vector = 0;
  ApicDelivery mode = ApicDelivery::fixed;
  bool logical = false;  // destination mode
  bool level_triggered = false;
  bool asserted = true;  // level messages: INIT de-assert has it clear
  ApicShorthand shorthand = ApicShorthand::none;
  std::uint32_t destination = 0;
  // 32-bit destination (x2APIC ICR; broadcast 0xFFFFFFFF); else 8 bits
  // (xAPIC ICR, MSI; broadcast 0xFF).
  bool x2apic_destination = false;
  bool redirection_hint = false;  // MSI RH: arbitrate as lowest priority
};

// A 256-bit vector register (IRR, ISR, TMR).
class ApicVectorSet {
 public:
  void set(std::uint8_t v) noexcept { bits_[v >> 6] |= std::uint64_t{1} << (v & 63); }
  void clear(std::uint8_t v) noexcept { bits_[v >> 6] &= ~(std::uint64_t{1} << (v & 63)); }
  bool test(std::uint8_t v) const noexcept { return (bits_[v >> 6] >> (v & 63)) & 1; }
  // The highest vector set, or -1.
  int highest() const noexcept;
  // The 32-bit register at offset base + 0x10 * n (n = 0..7).
  std::uint32_t word(unsigned n) const noexcept {
    return static_cast<std::uint32_t>(bits_[n / 2] >> (32 * (n % 2)));
  }
  void reset() noexcept { bits_ = {}; }

 private:
  std::array<std::uint64_t, 4> bits_{};
};

class Lapic final : public BusDevice, public TimerDevice {
 public:
  static constexpr std::uint64_t kMmioBase = 0xFEE0'0000;
  static constexpr std::uint64_t kMmioSize = 0x1000;

  // Register offsets (xAPIC); the x2APIC MSR is 0x800 + offset / 16.
  static constexpr unsigned kRegId = 0x20, kRegVersion = 0x30, kRegTpr = 0x80, kRegApr = 0x90, kRegPpr = 0xA0,
                            kRegEoi = 0xB0, kRegRrd = 0xC0, kRegLdr = 0xD0, kRegDfr = 0xE0, kRegSvr = 0xF0,
                            kRegIsr = 0x100, kRegTmr = 0x180, kRegIrr = 0x200, kRegEsr = 0x280, kRegCmci = 0x2F0,
                            kRegIcrLow = 0x300, kRegIcrHigh = 0x310, kRegLvtTimer = 0x320, kRegLvtThermal = 0x330,
                            kRegLvtPerf = 0x340, kRegLvtLint0 = 0x350, kRegLvtLint1 = 0x360, kRegLvtError = 0x370,
                            kRegTimerInitial = 0x380, kRegTimerCurrent = 0x390, kRegTimerDivide = 0x3E0,
                            kRegSelfIpi = 0x3F0;  // x2APIC only

  static constexpr std::uint32_t kMsrApicBase = 0x1B;
  static constexpr std::uint32_t kMsrTscDeadline = 0x6E0;
  static constexpr std::uint32_t kMsrX2apicFirst = 0x800, kMsrX2apicLast = 0x8FF;

  static constexpr std::uint32_t kVersion = 0x0005'0014;
  static constexpr std::uint64_t kBaseBsp = 1u << 8, kBaseExtd = 1u << 10, kBaseEnable = 1u << 11;
  static constexpr std::uint32_t kSvrEnable = 1u << 8;
  static constexpr std::uint32_t kLvtMasked = 1u << 16;
  static constexpr std::uint32_t kLvtLevel = 1u << 15;
  static constexpr std::uint32_t kLvtRemoteIrr = 1u << 14;
  static constexpr std::uint32_t kEsrSendIllegalVector = 1u << 5;
  static constexpr std::uint32_t kEsrReceiveIllegalVector = 1u << 6;

  struct Config {
    bool x2apic = true;        // CPUID.1:ECX[21]: EXTD may be set
    bool tsc_deadline = true;  // CPUID.1:ECX[24]: timer mode 2 and MSR 0x6E0
    LapicTimer::Config timer{};
  };

  // One per vCPU; made by ApicBus, whose routing it uses. `index` is the
  // vCPU index and the APIC ID; index 0 is the BSP. The timer starts on
  // `loop`. Throws vmm::Error when the timer cannot be created.
  Lapic(ApicBus& bus, unsigned index, timers::CyclicSystem& system, timers::EventLoop& loop, const Config& config);
  ~Lapic() override;
  Lapic(const Lapic&) = delete;
  Lapic& operator=(const Lapic&) = delete;

  // ---- guest interface ----
  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;
  static bool is_apic_msr(std::uint32_t index) noexcept;
  // nullopt / false: the guest gets #GP.
  std::optional<std::uint64_t> read_msr(std::uint32_t index) noexcept;
  bool write_msr(std::uint32_t index, std::uint64_t value) noexcept;

  // ---- injection (the vCPU's thread) ----
  // The highest vector in the IRR whose class is above PPR's; nullopt when
  // none (or the APIC is disabled).
  std::optional<std::uint8_t> next_interrupt() const noexcept;
  // KVM_INTERRUPT took `vector`: IRR -> ISR. False (nothing changed) when
  // it was no longer requested (an INIT or a disable raced the injection).
  bool accept(std::uint8_t vector) noexcept;
  // The 8259's INTR through LINT0 (unmasked, ExtINT; or any level on a
  // disabled APIC), or an ExtINT message, is waiting for its INTA.
  bool extint_pending() const noexcept;
  // The vCPU took an ExtINT vector from the PIC: clears a latched ExtINT
  // message (the LINT0 level follows the PIC's output by itself).
  void extint_accepted() noexcept;
  // CR8 is TPR[7:4]. set_cr8 keeps TPR[3:0] when the class is unchanged.
  std::uint64_t cr8() const noexcept;
  void set_cr8(std::uint64_t cr8) noexcept;
  struct Events {
    bool init = false;
    std::optional<std::uint8_t> sipi;
    bool nmi = false;
    bool smi = false;
  };
  // Takes the latched INIT, SIPI, NMI and SMI (each coalesces while it
  // waits; an INIT discards a SIPI that arrived before it).
  Events take_events() noexcept;
  // Something for the vCPU: an event, an ExtINT or a deliverable vector.
  bool pending_wakeup() const noexcept;
  // An INIT, SIPI, NMI or SMI is latched: what wakes a vCPU that cannot take
  // interrupts (waiting for a SIPI, or halted with interrupts disabled).
  bool events_pending() const noexcept;

  // ---- delivery into this APIC (ApicBus; any thread) ----
  // Does `destination` (not a shorthand) name this APIC? Never true while
  // it is disabled.
  bool matches(std::uint32_t destination, bool logical, bool x2apic_destination) const noexcept;
  bool software_enabled() const noexcept;
  std::uint8_t arbitration_priority() const noexcept;
  // One interrupt of `mode` (lowest_priority arrives here as fixed).
  void receive(ApicDelivery mode, std::uint8_t vector, bool level_triggered) noexcept;
  // Input pin LINT0 (0) or LINT1 (1) is at `level`.
  void set_lint(unsigned pin, bool level) noexcept;

  // What firmware leaves on the BSP: software enabled (SVR 0x1FF), LINT0
  // ExtINT (the 8259 pair's virtual wire), LINT1 NMI. The VMM calls it on
  // vCPU 0 after a reset, as KvmVcpu::setup_boot_lapic() does in kernel.
  void setup_virtual_wire() noexcept;

  // ---- lifecycle (devices/timer_device.h) ----
  void drain_timers() noexcept override;
  // Power-on state: xAPIC, enabled, BSP flag on index 0, every register at
  // its reset value, no event latched; LINT input levels are kept.
  void reset(timers::EventLoop& loop) noexcept override;
  void pause() noexcept override;
  void resume() noexcept override;
  void bind_timers(timers::EventLoop& loop) noexcept override;

  // ---- state, for the VMM and tests ----
  unsigned index() const noexcept { return index_; }
  std::uint32_t id() const noexcept { return index_; }
  std::uint64_t apic_base() const noexcept;
  bool enabled() const noexcept;      // IA32_APIC_BASE.EN
  bool x2apic_mode() const noexcept;  // EN and EXTD
  bool is_bsp() const noexcept;
  const Config& config() const noexcept { return config_; }
  LapicTimer::Stats timer_stats() const noexcept { return timer_.stats(); }
  timers::Nanos timer_deadline() const noexcept { return timer_.deadline(); }

  struct Stats {
    std::uint64_t interrupts = 0;       // fixed interrupts that reached the IRR, coalesced ones included
    std::uint64_t coalesced = 0;        // ...of which the vector was already requested
    std::uint64_t dropped_disabled = 0; // fixed interrupts dropped: software disabled
    std::uint64_t illegal_vectors = 0;  // sent or received with a vector 0-15
    std::uint64_t eois = 0;             // EOIs that retired a vector
    std::uint64_t eoi_broadcasts = 0;
    std::uint64_t ipis_sent = 0;
    std::uint64_t msr_faults = 0;       // #GP reported
    std::uint64_t ignored_accesses = 0; // MMIO accesses and writes dropped
    std::uint64_t kicks = 0;
  };
  Stats stats() const noexcept;
  // One line: TPR, PPR, the vectors in service and requested, and the
  // counters. For the VM's end-of-run debug log: a vector stuck in service
  // (no EOI) blocks every vector of its class and below, silently.
  std::string describe() const;

 private:
  // What to do once every lock of this APIC is released.
  struct Work {
    std::optional<ApicMessage> ipi;
    std::optional<std::uint8_t> eoi_broadcast;
    bool init = false;  // an INIT to this very APIC (through LINT)
    bool kick = false;
  };
  enum Lvt : unsigned { kLvtThermal, kLvtPerf, kLvtLint0, kLvtLint1, kLvtError, kLvtCount };

  static void on_timer_interrupt(Lapic& self, std::uint8_t vector) noexcept;
  std::optional<std::uint32_t> read_register(unsigned offset, bool x2apic) const noexcept;
  // false: #GP (x2APIC).
  bool write_register(unsigned offset, std::uint64_t value, bool x2apic) noexcept;
  bool write_locked(unsigned offset, std::uint64_t value, bool x2apic, Work& work) noexcept;  // mu_ held
  bool write_apic_base(std::uint64_t value) noexcept;
  void write_timer_lvt(std::uint32_t value) noexcept;  // write_mu_ held
  void finish(Work& work) noexcept;
  void init_reset() noexcept;  // an INIT received

  // mu_ held:
  std::uint8_t ppr_locked() const noexcept;
  std::uint8_t apr_locked() const noexcept;
  bool hw_enabled_locked() const noexcept { return (base_ & kBaseEnable) != 0; }
  bool x2apic_locked() const noexcept { return (base_ & (kBaseEnable | kBaseExtd)) == (kBaseEnable | kBaseExtd); }
  bool sw_enabled_locked() const noexcept { return (svr_ & kSvrEnable) != 0; }
  std::uint32_t ldr_locked() const noexcept;
  void power_on_registers_locked() noexcept;  // all but IA32_APIC_BASE and the timer
  // False when it did not reach the IRR (illegal vector, software disabled).
  bool accept_fixed_locked(std::uint8_t vector, bool level, Work& work) noexcept;
  void set_error_locked(std::uint32_t bits, Work& work) noexcept;
  void lint_changed_locked(unsigned pin, bool was, Work& work) noexcept;
  void eoi_locked(Work& work) noexcept;
  void send_locked(const ApicMessage& message, Work& work) noexcept;
  std::uint32_t lvt_mask_for(unsigned offset) const noexcept;

  ApicBus& bus_;
  const unsigned index_;
  const Config config_;

  std::mutex write_mu_;
  LapicTimer timer_;
  mutable std::mutex mu_;
  // Guarded by mu_.
  std::uint64_t base_ = 0;
  std::uint8_t tpr_ = 0;
  std::uint32_t ldr_ = 0;  // xAPIC; x2APIC derives it from the ID
  std::uint32_t dfr_ = 0;
  std::uint32_t svr_ = 0;
  ApicVectorSet irr_, isr_, tmr_;
  std::uint32_t esr_ = 0;
  std::uint32_t esr_pending_ = 0;
  bool error_firing_ = false;
  std::uint32_t icr_low_ = 0;
  std::uint32_t icr_high_ = 0;
  std::array<std::uint32_t, kLvtCount> lvt_{};
  std::array<bool, 2> lint_level_{};
  bool extint_latched_ = false;
  Events events_;
  Stats stats_;
};

}  // namespace vmm::devices
