// MC146818-compatible CMOS real-time clock: ports 0x70 (index, bit 7 = NMI
// mask) and 0x71 (data), ISA IRQ 8, 114 bytes of battery-backed NVRAM.
//
// ---- Time model -------------------------------------------------------------
// Nothing ticks. The divider chain is a phase `div_base` on the monotonic
// clock: update cycles (second boundaries) happen at div_base + k s, periodic
// edges at div_base + k * P (every rate's period divides a second, so both
// share one phase and never drift). The calendar is `base_secs + k`, rendered
// into register bytes in the format register B asks for when the guest reads
// them. UIP, UF, AF and PF are all derived from the clock when they are
// looked at; callouts exist only to raise IRQ 8 on time, so one is armed only
// while its interrupt is enabled and its flag is clear (a second edge while
// the flag is still set changes nothing the guest can see).
//
// The host wall clock is read at construction and at reset() only; the
// guest's time is kept as an offset from it, so a time the guest set survives
// a reboot. Between resets the clock runs on the monotonic clock (it does not
// follow steps of the host's wall clock) and keeps running while the VM is
// paused, as a battery-backed clock does.
//
// ---- Behaviour worth knowing --------------------------------------------------
// * Divider (register A DV bits): only 010 runs the clock, as on the DS12887
//   a PC carries. Any other value stops it (11x holds the chain in reset);
//   writing 010 again restarts the chain so that the first update comes
//   500 ms later. A write of the same DV value changes nothing.
// * UIP reads 1 during the 244.140 us (8 cycles of 32.768 kHz) before each
//   update; the update itself is instantaneous at the boundary, so the time
//   registers are never seen half-updated. SET or a stopped divider: UIP = 0.
// * SET freezes the registers (the guest reads what it wrote), inhibits
//   updates (no UF, no AF) and clears UIE. Clearing SET loads the registers
//   into the clock; the divider phase is kept. A time register written with
//   SET clear takes effect at once, also keeping the phase.
// * Register 0x32 is the century (part of the clock, as on PC firmware and
//   ACPI's FADT.century); the other 113 NVRAM bytes are plain memory.
// * Format (DM, 24/12): registers are rendered in the current format, so
//   flipping a format bit re-renders the running clock instead of
//   reinterpreting stale bytes. Values written under SET are parsed in the
//   format in force when SET clears.
// * Invalid time written by a guest (month 13, hour 25, day 0, Feb 30, BCD
//   digit > 9, 12-hour value 0 or 13): the bytes are kept exactly as written
//   and read back unchanged, and the calendar stops there (update cycles, UF
//   and an alarm that matches the frozen bytes still happen) until the guest
//   writes a valid time. The datasheet leaves such values undefined; this is
//   the choice bhyve made, and nothing here can divide by zero or loop on it.
// * Day of week is counted independently of the date, as the chip does: the
//   value written (1-7) advances at each midnight. An invalid one is kept as
//   written and does not advance.
// * DSE (daylight saving) and SQWE are stored and read back but do nothing.
// * Reading port 0x70 returns 0xFF (it is write-only on a PC).
// * IRQF = (PF & PIE) | (AF & AIE) | (UF & UIE); IRQ 8 is held asserted while
//   IRQF is set (the chip's level output), lowered by reading register C,
//   and not driven at all while set_output_enabled(false) (HPET legacy
//   replacement owns IRQ 8 then).
//
// reset() is a VM reset: registers A-D and the alarm are re-initialised
// (A = 0x26, B = 0x02, as PC firmware leaves them), the clock reloads from
// host time plus the guest's offset, NVRAM and the offset are kept.
//
// Locking: one mutex. The IrqLine is driven with it held (lock order device ->
// interrupt controller; an IrqLine never calls back into a device).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>

#include "devices/bus.h"
#include "devices/interrupts.h"
#include "devices/timer_device.h"
#include "timers/callout.h"
#include "timers/clock.h"
#include "timers/cyclic.h"

namespace vmm::devices {

// Unix time in nanoseconds. Injectable so tests can choose the host's date.
using WallClock = std::function<std::int64_t()>;
// CLOCK_REALTIME.
std::int64_t host_wall_clock_ns() noexcept;

class Rtc final : public BusDevice, public TimerDevice {
 public:
  static constexpr std::uint64_t kBase = 0x70;  // index port; data at kBase + 1
  static constexpr std::uint64_t kSize = 2;
  static constexpr unsigned kIsaIrq = 8;

  // Register indices.
  static constexpr std::uint8_t kSeconds = 0x00, kSecondsAlarm = 0x01, kMinutes = 0x02,
                                kMinutesAlarm = 0x03, kHours = 0x04, kHoursAlarm = 0x05,
                                kDayOfWeek = 0x06, kDayOfMonth = 0x07, kMonth = 0x08, kYear = 0x09,
                                kRegA = 0x0A, kRegB = 0x0B, kRegC = 0x0C, kRegD = 0x0D,
                                kCentury = 0x32;
  static constexpr std::uint8_t kNvramFirst = 0x0E;
  static constexpr std::size_t kNvramSize = 114;  // 0x0E-0x7F

  // Register A.
  static constexpr std::uint8_t kRegAUip = 0x80, kRegADvMask = 0x70, kRegADv32k = 0x20,
                                kRegARsMask = 0x0F;
  // Register B.
  static constexpr std::uint8_t kRegBSet = 0x80, kRegBPie = 0x40, kRegBAie = 0x20, kRegBUie = 0x10,
                                kRegBSqwe = 0x08, kRegBBinary = 0x04, kRegB24h = 0x02, kRegBDse = 0x01;
  // Register C.
  static constexpr std::uint8_t kRegCIrqf = 0x80, kRegCPf = 0x40, kRegCAf = 0x20, kRegCUf = 0x10;
  // Register D.
  static constexpr std::uint8_t kRegDVrt = 0x80;
  // Hour byte in 12-hour mode.
  static constexpr std::uint8_t kHourPm = 0x80;
  // Alarm bytes 0xC0-0xFF match any value.
  static constexpr std::uint8_t kAlarmDontCare = 0xC0;

  static constexpr std::int64_t kCrystalHz = 32768;
  // UIP lead: 8 crystal cycles = 244.140625 us, to the nanosecond.
  static constexpr timers::Nanos kUipLeadNs = 244'140;
  // After the divider leaves reset the first update comes this much later.
  static constexpr timers::Nanos kFirstUpdateAfterDividerStart = 500 * timers::kMillisecond;

  // Crystal cycles per periodic edge for register A rate `rs` (0 = none):
  // 3-15 as the datasheet tabulates (2^(rs-1)); 1 and 2 are what the
  // 32.768 kHz time base yields for them (3.90625 ms and 7.8125 ms).
  static constexpr std::int64_t periodic_cycles(unsigned rs) noexcept {
    if (rs == 0 || rs > 15) return 0;
    if (rs <= 2) return std::int64_t{1} << (rs + 6);
    return std::int64_t{1} << (rs - 1);
  }

  // `system` and `loop`: where the three callouts (periodic, update, alarm)
  // live; system.clock() is the time base. `irq` is ISA IRQ 8 (the VMM wires
  // it to the PIC and to the IOAPIC pin the MADT's override names).
  // Insert at ports [kBase, kBase + kSize).
  Rtc(timers::CyclicSystem& system, timers::EventLoop& loop, IrqLine& irq,
      WallClock wall_clock = host_wall_clock_ns);
  ~Rtc() override;
  Rtc(const Rtc&) = delete;
  Rtc& operator=(const Rtc&) = delete;

  // BusDevice: offset 0 = port 0x70, 1 = port 0x71; wider accesses cover
  // consecutive ports.
  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

  // HPET legacy replacement: false disconnects IRQ 8 (lowered and not driven).
  void set_output_enabled(bool enabled) noexcept;
  // Bit 7 of the last write to port 0x70.
  bool nmi_masked() const noexcept;

  // TimerDevice.
  void drain_timers() noexcept override;
  void reset(timers::EventLoop& loop) noexcept override;
  void pause() noexcept override;
  void resume() noexcept override;
  void bind_timers(timers::EventLoop& loop) noexcept override;

  struct Stats {
    std::uint64_t handler_runs = 0;    // callout handlers that did work
    std::uint64_t refused_rearms = 0;  // re-arms refused because the callouts were drained
  };
  Stats stats() const noexcept;
  // Deadlines of the three callouts (0 when not armed), for tests.
  struct Armed {
    timers::Nanos periodic = 0, update = 0, alarm = 0;
  };
  Armed armed() const noexcept;

 private:
  enum Source : unsigned { kPeriodic = 0, kUpdate = 1, kAlarm = 2, kSources = 3 };
  struct CalloutArg {
    Rtc* rtc;
    Source source;
  };
  struct Fields {  // a broken-down time
    std::int64_t year;
    int month, day, hour, minute, second, wday;  // wday 0 = Sunday
  };

  static void on_callout(void* arg);
  void on_timer(Source source) noexcept;

  std::uint8_t read_data_locked(timers::Nanos now) noexcept;
  void write_data_locked(std::uint8_t value, timers::Nanos now) noexcept;
  void write_reg_a(std::uint8_t value, timers::Nanos now) noexcept;
  void write_reg_b(std::uint8_t value, timers::Nanos now) noexcept;
  void write_time_register(std::uint8_t index, std::uint8_t value, timers::Nanos now) noexcept;

  void power_on_locked(timers::Nanos now) noexcept;
  void load_from_host(timers::Nanos now) noexcept;
  void remember_offset(timers::Nanos now) noexcept;

  bool dividing() const noexcept { return (reg_a_ & kRegADvMask) == kRegADv32k; }
  bool updating() const noexcept { return dividing() && (reg_b_ & kRegBSet) == 0; }
  bool latched() const noexcept { return (reg_b_ & kRegBSet) != 0 || broken_; }
  bool binary() const noexcept { return (reg_b_ & kRegBBinary) != 0; }
  bool hours24() const noexcept { return (reg_b_ & kRegB24h) != 0; }

  std::int64_t cycles_since_base(timers::Nanos t) const noexcept;
  std::int64_t updates_since_base(timers::Nanos t) const noexcept;
  std::int64_t current_secs(timers::Nanos now) const noexcept;
  bool uip(timers::Nanos now) const noexcept;

  std::uint8_t render(std::uint8_t index, std::int64_t secs) const noexcept;
  void snapshot(timers::Nanos now) noexcept;
  void commit_time(timers::Nanos now) noexcept;
  bool alarm_matches_bytes(std::uint8_t sec, std::uint8_t min, std::uint8_t hour) const noexcept;
  std::optional<std::int64_t> next_alarm_after(std::int64_t secs) const noexcept;

  void sync(timers::Nanos now) noexcept;
  void update_irq() noexcept;
  void rearm(timers::Nanos now) noexcept;
  void arm(Source source, timers::Nanos deadline) noexcept;

  mutable std::mutex mu_;
  timers::CyclicSystem& system_;
  const timers::Clock& clock_;
  IrqLine& irq_;
  const WallClock wall_clock_;

  std::uint8_t index_ = 0;
  bool nmi_masked_ = false;
  std::array<std::uint8_t, 128> cmos_{};  // NVRAM, alarm bytes, and time bytes while latched
  std::uint8_t reg_a_ = 0;
  std::uint8_t reg_b_ = 0;
  std::uint8_t flags_ = 0;  // PF | AF | UF, latched until register C is read
  timers::Nanos synced_to_ = 0;  // flags account for every event up to here

  timers::Nanos div_base_ = 0;   // divider phase (valid while dividing)
  std::int64_t base_secs_ = 0;   // calendar at div_base_ (frozen value while not dividing)
  bool broken_ = false;          // the guest's time did not parse: registers hold its bytes
  int dow_delta_ = 0;            // guest's day of week minus the date's, mod 7
  std::optional<std::uint8_t> dow_fixed_;  // an invalid day of week, kept as written
  std::int64_t offset_secs_ = 0;  // guest time minus host wall time: seconds part
  timers::Nanos offset_ns_ = 0;   // and nanoseconds part, 0..999'999'999

  bool output_enabled_ = true;
  bool line_level_ = false;
  bool paused_ = false;
  Stats stats_;

  std::array<CalloutArg, kSources> callout_args_{};
  // Last: destroyed (drained) first, while everything a handler touches lives.
  std::array<timers::Callout, kSources> callouts_;
};

}  // namespace vmm::devices
