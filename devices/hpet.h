// IA-PC HPET (specification 1.0a): one 64-bit main counter at 100 MHz
// (period 10,000,000 fs, so a tick is exactly 10 ns) and three comparators,
// MMIO 1 KiB at 0xFED00000.
//
// ---- What this HPET offers -------------------------------------------------------
// * Capabilities: vendor 0x8086, revision 1, 3 comparators, 64-bit counter,
//   legacy replacement route capable. Bits 31:0 are the ACPI HPET table's
//   event timer block ID (kEventTimerBlockId).
// * Every comparator: 64-bit capable (32-bit mode available), periodic
//   capable, FSB (MSI) capable, IOAPIC route capability pins 20-23
//   (kRouteCap). Those are the pins an ICH-family HPET offers and which no
//   ISA device or PCI INTx swizzle of this machine uses; a route write naming
//   a pin outside the capability is ignored (the field keeps its old value,
//   which the spec allows: "the value read back will not match").
// * Legacy replacement (LEG_RT_CNF): comparator 0 drives ISA IRQ 0 and
//   comparator 1 ISA IRQ 8 (the two lines given at construction), and the
//   `legacy_changed(true)` callback tells the VMM to disconnect the PIT's and
//   RTC's outputs; clearing it calls `legacy_changed(false)`.
//
// ---- Comparator semantics --------------------------------------------------------
// * The main counter is derived from the monotonic clock while ENABLE_CNF is
//   set and holds its value while halted (writable then; a write while
//   running is ignored). It is host-time based and keeps counting while the
//   VM is paused, as the TSC does, so a guest comparing the two (Linux's
//   clocksource watchdog) never sees them disagree.
// * A comparator matches when the counter reaches its value (32-bit mode:
//   the low 32 bits, so it matches again every 2^32 ticks, 42.9 s). A value
//   the counter already passed matches only after the wrap: the callout is
//   armed for that far deadline, or not at all in 64-bit mode.
// * Periodic: on a match the comparator advances by whole periods to the
//   first value past the counter; missed periods are skipped. A write to the
//   comparator sets the period, and with Tn_VAL_SET_CNF also the comparator
//   itself (the bit clears after that write), which is Linux's sequence. A
//   zero period matches like a one-shot. Callouts of a periodic comparator
//   are at least kMinRearmInterval apart: a guest programming a period of a
//   few ticks gets coalesced interrupts, never a spinning timer thread.
// * Level-triggered (Tn_INT_TYPE_CNF = 1): a match sets the comparator's bit
//   in the general interrupt status register (also with Tn_INT_ENB_CNF clear,
//   as the spec says) and, when enabled, holds its line asserted until the
//   guest writes 1 to that bit. Edge-triggered: a pulse per match, status
//   bit stays 0. FSB: one MSI (address = route register bits 63:32, data =
//   bits 31:0) per match, or per status rise for a level comparator.
// * Matches are accounted whenever the device looks at a comparator (a
//   register access, the callout, resume), so reads are exact even if the
//   timer thread is late; a callout is armed only when a match would change
//   something the guest can see.
// * Reserved registers read 0 and ignore writes; any width 1-8 at any offset
//   works (bytes are merged into the 64-bit registers).
//
// Locking: one mutex; interrupt lines and the MSI sink are driven with it
// held (they never call back into a device). The legacy callback is called
// without it, serialised by a second mutex so the VMM sees changes in order.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "devices/bus.h"
#include "devices/interrupts.h"
#include "devices/timer_device.h"
#include "timers/callout.h"
#include "timers/clock.h"
#include "timers/cyclic.h"

namespace vmm::devices {

class Hpet final : public BusDevice, public TimerDevice {
 public:
  static constexpr std::uint64_t kBase = 0xFED0'0000;
  static constexpr std::uint64_t kSize = 0x400;
  static constexpr unsigned kTimers = 3;
  static constexpr std::uint32_t kPeriodFs = 10'000'000;  // 100 MHz
  static constexpr timers::Nanos kTickNs = 10;
  static constexpr std::uint16_t kVendorId = 0x8086;
  static constexpr std::uint8_t kRevision = 1;
  static constexpr unsigned kIoApicPins = 24;
  static constexpr std::uint32_t kRouteCap = 0x00F0'0000;  // IOAPIC pins 20-23
  static constexpr timers::Nanos kMinRearmInterval = 100 * timers::kMicrosecond;

  // General capabilities and ID register.
  static constexpr std::uint64_t kCapLegacyRoute = 1u << 15;
  static constexpr std::uint64_t kCapCounter64 = 1u << 13;
  static constexpr std::uint64_t kCapabilities = (std::uint64_t{kPeriodFs} << 32) |
                                                 (std::uint64_t{kVendorId} << 16) | kCapLegacyRoute |
                                                 kCapCounter64 | ((kTimers - 1) << 8) | kRevision;

  // What the ACPI HPET table must carry.
  static constexpr std::uint32_t kEventTimerBlockId = static_cast<std::uint32_t>(kCapabilities);
  // Minimum clock ticks for periodic mode without lost interrupts: 128
  // ticks (1.28 us) is what PC firmware reports; periods below
  // kMinRearmInterval work but coalesce.
  static constexpr std::uint16_t kAcpiMinimumTick = 0x80;
  static constexpr std::uint8_t kAcpiHpetNumber = 0;
  static constexpr std::uint8_t kAcpiPageProtection = 0;

  // Register offsets.
  static constexpr std::uint64_t kRegCapabilities = 0x000, kRegConfig = 0x010, kRegStatus = 0x020,
                                 kRegCounter = 0x0F0;
  static constexpr std::uint64_t timer_config_reg(unsigned n) { return 0x100 + 0x20 * n; }
  static constexpr std::uint64_t timer_comparator_reg(unsigned n) { return 0x108 + 0x20 * n; }
  static constexpr std::uint64_t timer_fsb_reg(unsigned n) { return 0x110 + 0x20 * n; }

  // General configuration.
  static constexpr std::uint64_t kConfigEnable = 1u << 0, kConfigLegacy = 1u << 1;
  // Timer n configuration and capabilities.
  static constexpr std::uint64_t kTimerLevel = 1u << 1, kTimerIntEnable = 1u << 2,
                                 kTimerPeriodic = 1u << 3, kTimerPeriodicCap = 1u << 4,
                                 kTimerSize64Cap = 1u << 5, kTimerValSet = 1u << 6, kTimer32Bit = 1u << 8,
                                 kTimerRouteMask = 0x1Fu << 9, kTimerFsbEnable = 1u << 14,
                                 kTimerFsbCap = 1u << 15;
  static constexpr unsigned kTimerRouteShift = 9;

  // The IOAPIC's input pin n (called at construction for the pins in
  // kRouteCap only; the IOAPIC's pin() fits).
  using PinLookup = std::function<IrqLine&(unsigned pin)>;
  // Called with true when legacy replacement is switched on, false when off
  // (and at reset if it was on): the VMM calls the PIT's and RTC's
  // set_output_enabled(!legacy). Called without the HPET's lock.
  using LegacyCallback = std::function<void(bool legacy)>;

  // `system`/`loop`: where the comparators' callouts live; system.clock()
  // is the time base. `isa_irq0` and `isa_irq8` are the lines the PIT and
  // RTC drive (legacy replacement takes them over). FSB interrupts go to
  // `msi`. Insert at [kBase, kBase + kSize) on the MMIO bus.
  Hpet(timers::CyclicSystem& system, timers::EventLoop& loop, const PinLookup& ioapic_pin, IrqLine& isa_irq0,
       IrqLine& isa_irq8, MsiSink& msi, LegacyCallback legacy_changed = {});
  ~Hpet() override;
  Hpet(const Hpet&) = delete;
  Hpet& operator=(const Hpet&) = delete;

  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

  // TimerDevice.
  void drain_timers() noexcept override;
  void reset(timers::EventLoop& loop) noexcept override;
  void pause() noexcept override;
  void resume() noexcept override;
  void bind_timers(timers::EventLoop& loop) noexcept override;

  bool legacy_replacement() const noexcept;

  struct Stats {
    std::array<std::uint64_t, kTimers> handler_runs{};  // handlers that did work, per comparator
    std::uint64_t refused_rearms = 0;  // re-arms refused because the callouts were drained
  };
  Stats stats() const noexcept;
  // Deadline of comparator n's callout (0 when not armed), for tests.
  timers::Nanos armed(unsigned n) const noexcept;

 private:
  struct Timer {
    std::uint64_t config = 0;  // writable bits only; capabilities are added on read
    std::uint64_t comparator = ~std::uint64_t{0};
    std::uint64_t period = 0;
    std::uint64_t fsb = 0;
    std::uint64_t seen = 0;  // main counter value up to which matches are accounted
    timers::Nanos last_fire = 0;
    IrqLine* held = nullptr;  // line this comparator holds asserted (level mode)
  };
  struct CalloutArg {
    Hpet* hpet;
    unsigned n;
  };

  static void on_callout(void* arg);
  void on_timer(unsigned n) noexcept;

  std::uint64_t read_reg(std::uint64_t reg, timers::Nanos now) noexcept;
  // Returns true when the legacy-replacement bit changed.
  bool write_reg(std::uint64_t reg, std::uint64_t value, std::uint64_t mask, timers::Nanos now) noexcept;
  bool write_config(std::uint64_t value, timers::Nanos now) noexcept;
  void write_timer_config(unsigned n, std::uint64_t value, timers::Nanos now) noexcept;
  void write_comparator(unsigned n, std::uint64_t value, std::uint64_t mask, timers::Nanos now) noexcept;

  void power_on_locked() noexcept;
  bool enabled() const noexcept { return (config_ & kConfigEnable) != 0; }
  bool legacy() const noexcept { return (config_ & kConfigLegacy) != 0; }
  std::uint64_t counter_at(timers::Nanos now) const noexcept;
  static std::uint64_t width_mask(const Timer& t) noexcept;

  bool account(unsigned n, std::uint64_t counter) noexcept;
  void sync(unsigned n, timers::Nanos now) noexcept;
  void sync_all(timers::Nanos now) noexcept;
  void deliver(unsigned n, bool status_rose) noexcept;
  IrqLine* output_line(unsigned n) const noexcept;
  void refresh_lines() noexcept;
  void rearm(unsigned n, timers::Nanos now) noexcept;
  void rearm_all(timers::Nanos now) noexcept;
  void report_legacy() noexcept;

  mutable std::mutex mu_;
  timers::CyclicSystem& system_;
  const timers::Clock& clock_;
  std::array<IrqLine*, kIoApicPins> pins_{};  // the pins in kRouteCap; null elsewhere
  IrqLine& isa_irq0_;
  IrqLine& isa_irq8_;
  MsiSink& msi_;

  std::uint64_t config_ = 0;
  std::uint64_t status_ = 0;
  std::uint64_t counter_ = 0;        // the value while halted; at counter_time_ while running
  timers::Nanos counter_time_ = 0;
  bool paused_ = false;
  std::array<Timer, kTimers> timers_{};
  Stats stats_;

  // Serialises legacy_changed_ calls so they reach the VMM in order.
  std::mutex legacy_mu_;
  const LegacyCallback legacy_changed_;
  bool legacy_reported_ = false;  // guarded by legacy_mu_

  std::array<CalloutArg, kTimers> callout_args_{};
  // Last: destroyed (drained) first, while everything a handler touches lives.
  std::array<timers::Callout, kTimers> callouts_;
};

}  // namespace vmm::devices
