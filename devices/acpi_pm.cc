#include "devices/acpi_pm.h"

#include <spdlog/spdlog.h>

namespace vmm::devices {

AcpiPm::AcpiPm(IrqLine& sci, std::uint16_t s5_sleep_type, Callbacks callbacks, const timers::Clock& clock)
    : sci_(sci), s5_sleep_type_(s5_sleep_type), callbacks_(std::move(callbacks)), clock_(clock),
      timer_epoch_(clock.now()) {}

std::uint64_t AcpiPm::timer_ticks() const noexcept {
  const timers::Nanos elapsed = clock_.now() - timer_epoch_.load(std::memory_order_relaxed);
  if (elapsed <= 0) return 0;
  return static_cast<std::uint64_t>(static_cast<unsigned __int128>(elapsed) * kTimerHz / timers::kSecond);
}

std::uint16_t AcpiPm::status_locked() const noexcept {
  const std::uint64_t half_periods = timer_ticks() >> (kTimerBits - 1);
  return static_cast<std::uint16_t>(status_ | (half_periods > timer_status_cleared_at_ ? kTimerStatus : 0));
}

void AcpiPm::update_sci_locked() noexcept {
  // The SCI is level-triggered: asserted while an enabled event is pending.
  sci_.set_level((status_ & enable_) != 0 && (control_ & kSciEnable) != 0);
}

void AcpiPm::press_power_button() noexcept {
  std::lock_guard lock(mu_);
  status_ |= kPowerButtonStatus;
  update_sci_locked();
}

void AcpiPm::reset() noexcept {
  std::lock_guard lock(mu_);
  status_ = 0;
  enable_ = 0;
  control_ = kSciEnable;
  reset_control_ = 0;
  timer_epoch_.store(clock_.now(), std::memory_order_relaxed);
  timer_status_cleared_at_ = 0;
  update_sci_locked();
}

std::uint16_t AcpiPm::status() const noexcept {
  std::lock_guard lock(mu_);
  return status_locked();
}

std::uint16_t AcpiPm::enable() const noexcept {
  std::lock_guard lock(mu_);
  return enable_;
}

// PM1a event block: status at offset 0 (write 1 to clear), enable at 2.
void AcpiPm::EventBlock::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  std::lock_guard lock(pm.mu_);
  const std::uint32_t both = pm.status_locked() | (std::uint32_t{pm.enable_} << 16);
  store_le(data, offset < 4 ? both >> (8 * offset) : 0xffffffffu);
}

void AcpiPm::EventBlock::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  std::lock_guard lock(pm.mu_);
  const std::uint64_t value = load_le(data);
  for (std::size_t i = 0; i < data.size() && offset + i < 4; ++i) {
    const auto byte = static_cast<std::uint8_t>(value >> (8 * i));
    const std::uint64_t at = offset + i;
    if (at < 2) {
      const auto cleared = static_cast<std::uint16_t>(std::uint16_t{byte} << (8 * at));
      pm.status_ &= static_cast<std::uint16_t>(~cleared);
      if ((cleared & kTimerStatus) != 0) pm.timer_status_cleared_at_ = pm.timer_ticks() >> (kTimerBits - 1);
    } else {
      const unsigned shift = 8 * static_cast<unsigned>(at - 2);
      pm.enable_ = static_cast<std::uint16_t>((pm.enable_ & ~(0xffu << shift)) | (std::uint16_t{byte} << shift));
    }
  }
  pm.update_sci_locked();
}

void AcpiPm::ControlBlock::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  std::lock_guard lock(pm.mu_);
  // SLP_EN is write-only and reads as 0.
  const std::uint16_t visible = pm.control_ & static_cast<std::uint16_t>(~kSleepEnable);
  store_le(data, offset < 2 ? std::uint32_t{visible} >> (8 * offset) : 0xffffffffu);
}

void AcpiPm::ControlBlock::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  std::uint16_t value;
  {
    std::lock_guard lock(pm.mu_);
    value = pm.control_;
    const std::uint64_t in = load_le(data);
    for (std::size_t i = 0; i < data.size() && offset + i < 2; ++i) {
      const unsigned shift = 8 * static_cast<unsigned>(offset + i);
      value = static_cast<std::uint16_t>((value & ~(0xffu << shift)) | (((in >> (8 * i)) & 0xff) << shift));
    }
    // SCI_EN stays set: this platform has no legacy (non-ACPI) mode.
    pm.control_ = static_cast<std::uint16_t>((value & ~kSleepEnable) | kSciEnable);
  }
  if ((value & kSleepEnable) == 0) return;
  const auto type = static_cast<std::uint16_t>((value & kSleepTypeMask) >> kSleepTypeShift);
  if (type == pm.s5_sleep_type_) {
    if (pm.callbacks_.poweroff) pm.callbacks_.poweroff();
  } else if (pm.log_limit_.allow()) {
    // Only \_S5 is offered in the DSDT; other sleep states are not entered.
    spdlog::warn("acpi: guest asked for sleep type {} (only S5 is supported); ignored", type);
  }
}

void AcpiPm::ResetPort::read(std::uint64_t, std::span<std::uint8_t> data) noexcept {
  std::lock_guard lock(pm.mu_);
  store_le(data, pm.reset_control_);
}

void AcpiPm::ResetPort::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  if (offset != 0 || data.empty()) return;
  bool reset = false;
  {
    std::lock_guard lock(pm.mu_);
    pm.reset_control_ = data[0] & static_cast<std::uint8_t>(~kResetCpu);  // RST_CPU self-clears
    reset = (data[0] & kResetCpu) != 0;
  }
  if (reset && pm.callbacks_.reset) pm.callbacks_.reset();
}

void AcpiPm::PmTimer::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  // No lock: the counter is a function of the clock and an atomic epoch, and
  // the PM timer is read on every clock read of a guest that uses it.
  const std::uint32_t value = static_cast<std::uint32_t>(pm.timer_ticks() & ((1u << kTimerBits) - 1));
  store_le(data, offset < 4 ? value >> (8 * offset) : 0);
}

}  // namespace vmm::devices
