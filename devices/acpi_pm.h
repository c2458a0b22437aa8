// ACPI fixed-hardware power management: the PM1a event block (status and
// enable registers), the PM1a control block, and the reset register at
// 0xCF9 that the FADT names.
//
// What it gives a guest: power-off (writing SLP_EN with the \_S5 sleep type
// from the DSDT), a power button the VMM can press for a graceful stop
// (PWRBTN_STS raised through the SCI, which ACPI makes level-triggered), and
// reset through the FADT's reset register or the traditional PCI reset
// control port (the same port: writes with RST_CPU set reset).
//
// The ports are the platform's choice; the VMM maps `event_block()` (4
// bytes), `control_block()` (2 bytes) and `reset_port()` (1 byte) where its
// ACPI tables say they are.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "devices/bus.h"
#include "devices/interrupts.h"
#include "devices/rate_limit.h"

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

  struct Callbacks {
    std::function<void()> poweroff;      // guest entered S5
    std::function<void()> reset;         // reset register written
  };

  // `s5_sleep_type` is SLP_TYP from the DSDT's \_S5 package; `sci` is the
  // SCI line (ISA IRQ 9, level-triggered, active high per the MADT).
  AcpiPm(IrqLine& sci, std::uint16_t s5_sleep_type, Callbacks callbacks);

  BusDevice& event_block() noexcept { return event_block_; }
  BusDevice& control_block() noexcept { return control_block_; }
  BusDevice& reset_port() noexcept { return reset_port_; }

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

  void update_sci_locked() noexcept;

  IrqLine& sci_;
  const std::uint16_t s5_sleep_type_;
  const Callbacks callbacks_;
  EventBlock event_block_{*this};
  ControlBlock control_block_{*this};
  ResetPort reset_port_{*this};

  mutable std::mutex mu_;
  std::uint16_t status_ = 0;
  std::uint16_t enable_ = 0;
  std::uint16_t control_ = kSciEnable;  // ACPI mode always on (no SMI_CMD)
  std::uint8_t reset_control_ = 0;
  RateLimit log_limit_;
};

}  // namespace vmm::devices
