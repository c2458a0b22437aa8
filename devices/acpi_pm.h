// ACPI fixed-hardware power management: the PM1a event block (status and
// enable registers), the PM1a control block, the PM timer, and the reset
// register at 0xCF9 that the FADT names.
//
// What it gives a guest: power-off (writing SLP_EN with the \_S5 sleep type
// from the DSDT), a power button the VMM can press for a graceful stop
// (PWRBTN_STS raised through the SCI, which ACPI makes level-triggered), and
// reset through the FADT's reset register or the traditional PCI reset
// control port (the same port: writes with RST_CPU set reset).
//
// The PM timer (ACPI 4.8.3.3) is a free-running 24-bit counter at 3.579545
// MHz that Linux can use as its clocksource (acpi_pm): derived from the
// clock on every read, so it never needs a timer of its own. TMR_STS (PM1
// status bit 0) reports that the counter's top bit changed since the guest
// last cleared it; TMR_EN is kept but raises no SCI (the overflow interrupt
// exists for firmware that extends the counter in software; Linux reads the
// counter only, and no guest this VMM runs enables it).
//
// The ports are the platform's choice; the VMM maps `event_block()` (4
// bytes), `control_block()` (2 bytes), `pm_timer()` (4 bytes) and
// `reset_port()` (1 byte) where its ACPI tables say they are.
#pragma once

#include <cstdint>
#include <atomic>
#include <functional>
#include <mutex>

#include "devices/bus.h"
#include "devices/interrupts.h"
#include "devices/rate_limit.h"
#include "timers/clock.h"

namespace vmm::devices {

class AcpiPm {
 public:
  // Register bits defined by the ACPI specification (4.8.3).
  static constexpr std::uint16_t kPowerButtonStatus = 1u << 8;  // PM1 status/enable
  static constexpr std::uint16_t kWakeStatus = 1u << 15;
  static constexpr std::uint16_t kSciEnable = 1u << 0;  // PM1 control
  static constexpr unsigned kSleepTypeShift = 10;
  static constexpr std::uint16_t kSleepTypeMask = 0x7u << kSleepTypeShift;
  static constexpr std::uint16_t kSleepEnable = 1u << 13;
  // Reset control register: RST_CPU starts the reset; SYS_RST selects a full
  // (hard) reset. A VM reboot is the same either way.
  static constexpr std::uint8_t kResetCpu = 1u << 2;
  static constexpr std::uint16_t kTimerStatus = 1u << 0;  // PM1 status: the timer's top bit changed
  static constexpr std::uint64_t kTimerHz = 3'579'545;
  static constexpr unsigned kTimerBits = 24;

  struct Callbacks {
    std::function<void()> poweroff;      // guest entered S5
    std::function<void()> reset;         // reset register written
  };

  // `s5_sleep_type` is SLP_TYP from the DSDT's \_S5 package; `sci` is the
  // SCI line (ISA IRQ 9, level-triggered, active high per the MADT). The PM
  // timer counts on `clock` from now (and from every reset()).
  AcpiPm(IrqLine& sci, std::uint16_t s5_sleep_type, Callbacks callbacks, const timers::Clock& clock);

  BusDevice& event_block() noexcept { return event_block_; }
  BusDevice& control_block() noexcept { return control_block_; }
  BusDevice& reset_port() noexcept { return reset_port_; }
  BusDevice& pm_timer() noexcept { return pm_timer_; }

  // Presses the power button: the guest sees PWRBTN_STS and, if it enabled
  // the event, an SCI. A guest without ACPI ignores it (the VMM's graceful
  // stop then falls back to its timeout).
  void press_power_button() noexcept;
  // Power-on state (a VM reset).
  void reset() noexcept;

  std::uint16_t status() const noexcept;
  std::uint16_t enable() const noexcept;

 private:
  struct EventBlock final : BusDevice {
    explicit EventBlock(AcpiPm& owner) : pm(owner) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;
    AcpiPm& pm;
  };
  struct ControlBlock final : BusDevice {
    explicit ControlBlock(AcpiPm& owner) : pm(owner) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;
    AcpiPm& pm;
  };
  struct ResetPort final : BusDevice {
    explicit ResetPort(AcpiPm& owner) : pm(owner) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;
    AcpiPm& pm;
  };
  struct PmTimer final : BusDevice {
    explicit PmTimer(AcpiPm& owner) : pm(owner) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
    void write(std::uint64_t, std::span<const std::uint8_t>) noexcept override {}  // read-only
    AcpiPm& pm;
  };

  // Timer ticks since timer_epoch_ (not wrapped).
  std::uint64_t timer_ticks() const noexcept;
  // The status register as read: with TMR_STS derived from the timer.
  std::uint16_t status_locked() const noexcept;

  void update_sci_locked() noexcept;

  IrqLine& sci_;
  const std::uint16_t s5_sleep_type_;
  const Callbacks callbacks_;
  EventBlock event_block_{*this};
  ControlBlock control_block_{*this};
  ResetPort reset_port_{*this};
  PmTimer pm_timer_{*this};
  const timers::Clock& clock_;

  mutable std::mutex mu_;
  std::uint16_t status_ = 0;
  std::uint16_t enable_ = 0;
  std::uint16_t control_ = kSciEnable;  // ACPI mode always on (no SMI_CMD)
  std::uint8_t reset_control_ = 0;
  std::atomic<timers::Nanos> timer_epoch_;  // read without the lock by PM timer reads
  // TMR_STS is set while the counter has passed more half-periods (top-bit
  // changes) than it had when the guest last cleared it.
  std::uint64_t timer_status_cleared_at_ = 0;
  RateLimit log_limit_;
};

}  // namespace vmm::devices
