#include "devices/ioapic.h"

#include <algorithm>
#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "devices/rate_limit.h"

namespace vmm::devices {

namespace {

constexpr std::uint64_t kDestinationMask = std::uint64_t{0xFF} << IoApic::kDestinationShift;
constexpr std::uint64_t kWritableBits = IoApic::kVectorMask | IoApic::kDeliveryModeMask |
                                        IoApic::kDestinationLogical | IoApic::kPolarityLow |
                                        IoApic::kLevelTriggered | IoApic::kMasked | kDestinationMask;
constexpr std::uint64_t kReadOnlyBits = IoApic::kDeliveryStatus | IoApic::kRemoteIrr;
// Fields that change the MSI a pin produces, or whether KVM must report its
// EOIs: a change to any of them is a route change.
constexpr std::uint64_t kRouteBits = IoApic::kVectorMask | IoApic::kDeliveryModeMask |
                                     IoApic::kDestinationLogical | IoApic::kLevelTriggered |
                                     IoApic::kMasked | kDestinationMask;

constexpr std::uint32_t kIdShift = 24;
// The 82093AA had a 4-bit ID (bits 27:24); xAPIC-era I/O APICs, and the
// guests reading them (Linux's IO_APIC_reg_00, FreeBSD), use all 8 bits.
// The MADT gives this IOAPIC the ID after the vCPUs' APIC IDs, up to 254:
// a 4-bit register could not hold it from 16 vCPUs on and would disagree.
constexpr std::uint32_t kIdMask = 0xFF;
constexpr std::uint32_t kVersionRegister =
    ((IoApic::kPins - 1) << 16) | IoApic::kVersion;  // max redirection entry, version
constexpr std::uint32_t kAllPins = (1u << IoApic::kPins) - 1;

void log_ignored_access(const char* what, std::uint64_t offset, std::size_t size) {
  static RateLimit limit;
  if (limit.allow()) {
    spdlog::debug("ioapic: ignoring {}-byte {} at offset {:#x} ({} suppressed)", size, what, offset,
                  limit.take_suppressed());
  }
}

}  // namespace

IoApic::IoApic(MsiSink& sink, IoApicRouteObserver* observer, std::uint8_t id) noexcept
    : sink_(sink), observer_(observer), initial_id_(static_cast<std::uint8_t>(id & kIdMask)) {
  for (unsigned n = 0; n < kPins; ++n) {
    pins_[n].owner = this;
    pins_[n].index = n;
    entries_[n] = kMasked;
  }
  id_ = initial_id_;
}

IrqLine& IoApic::pin(unsigned n) {
  if (n >= kPins) throw Error("ioapic: no input pin " + std::to_string(n) + " (it has 24)");
  return pins_[n];
}

std::uint64_t IoApic::redirection_entry(unsigned n) const noexcept {
  if (n >= kPins) return ~std::uint64_t{0};
  std::lock_guard lock(mu_);
  return entries_[n];
}

MsiMessage IoApic::message_for(std::uint64_t entry) noexcept {
  MsiMessage message;
  message.address = kMsiAddressBase | (((entry >> kDestinationShift) & 0xFF) << 12) |
                    ((entry & kDestinationLogical) ? (1u << 2) : 0);
  message.data = static_cast<std::uint32_t>(entry & kVectorMask) |
                 static_cast<std::uint32_t>(entry & kDeliveryModeMask) |
                 ((entry & kLevelTriggered) ? kMsiDataLevel : 0) | kMsiDataAssert;
  return message;
}

void IoApic::Pin::set_level(bool asserted) noexcept { owner->set_pin_level(index, asserted); }

void IoApic::deliver_if_due(unsigned n, Work& work) noexcept {
  std::uint64_t& entry = entries_[n];
  if (!(entry & kLevelTriggered) || (entry & (kMasked | kRemoteIrr))) return;
  if (!(input_levels_ & (1u << n))) return;
  entry |= kRemoteIrr;
  work.add(message_for(entry));
}

template <typename Change>
void IoApic::change_then_finish(Change change) noexcept {
  Work work;
  {
    std::lock_guard lock(mu_);
    change(work);
    work.routes_dirty = routes_dirty_ != 0;
  }
  finish(work);
}

void IoApic::set_pin_level(unsigned n, bool asserted) noexcept {
  change_then_finish([&](Work& work) {
    const std::uint32_t bit = 1u << n;
    const bool was_asserted = input_levels_ & bit;
    if (asserted) {
      input_levels_ |= bit;
    } else {
      input_levels_ &= ~bit;
    }
    const std::uint64_t entry = entries_[n];
    if (entry & kLevelTriggered) {
      deliver_if_due(n, work);
    } else if (asserted && !was_asserted && !(entry & kMasked)) {
      work.add(message_for(entry));
    }
  });
}

void IoApic::end_of_interrupt_locked(std::uint8_t vector, Work& work) noexcept {
  for (unsigned n = 0; n < kPins; ++n) {
    std::uint64_t& entry = entries_[n];
    if (!(entry & kLevelTriggered) || (entry & kVectorMask) != vector || !(entry & kRemoteIrr)) continue;
    entry &= ~kRemoteIrr;
    deliver_if_due(n, work);
  }
}

void IoApic::end_of_interrupt(std::uint8_t vector) noexcept {
  change_then_finish([&](Work& work) { end_of_interrupt_locked(vector, work); });
}

void IoApic::publish_all_routes() noexcept {
  Work work;
  {
    std::lock_guard lock(mu_);
    routes_dirty_ = kAllPins;
    work.routes_dirty = true;
  }
  finish(work);
}

void IoApic::reset() noexcept {
  Work work;
  {
    std::lock_guard lock(mu_);
    entries_.fill(kMasked);
    select_ = 0;
    id_ = initial_id_;
    routes_dirty_ = kAllPins;
    work.routes_dirty = true;
  }
  finish(work);
}

void IoApic::finish(Work& work) noexcept {
  if (work.count == 0 && !work.routes_dirty) return;
  std::lock_guard publish(publish_mu_);
  std::uint32_t dirty = 0;
  std::array<std::uint64_t, kPins> snapshot{};
  {
    std::lock_guard lock(mu_);
    dirty = std::exchange(routes_dirty_, 0);
    if (dirty) snapshot = entries_;
  }
  if (observer_) {
    for (unsigned n = 0; n < kPins; ++n) {
      if (!(dirty & (1u << n))) continue;
      const std::uint64_t entry = snapshot[n];
      observer_->on_route_changed(n, message_for(entry), (entry & kMasked) != 0, (entry & kLevelTriggered) != 0);
    }
  }
  for (unsigned i = 0; i < work.count; ++i) sink_.send_msi(work.messages[i]);
}

std::uint32_t IoApic::read_indirect() const noexcept {
  switch (select_) {
    case kRegId:
    case kRegArbitration:  // the arbitration ID is loaded from the APIC ID
      return static_cast<std::uint32_t>(id_) << kIdShift;
    case kRegVersion:
      return kVersionRegister;
    default:
      break;
  }
  if (select_ >= kRegRedirectionBase && select_ < kRegRedirectionBase + 2 * kPins) {
    const std::uint64_t entry = entries_[(select_ - kRegRedirectionBase) / 2];
    return static_cast<std::uint32_t>((select_ & 1) ? entry >> 32 : entry);
  }
  return 0;  // reserved registers read as zero
}

void IoApic::write_indirect(std::uint32_t value, Work& work) noexcept {
  if (select_ == kRegId) {
    id_ = static_cast<std::uint8_t>((value >> kIdShift) & kIdMask);
    return;
  }
  if (select_ < kRegRedirectionBase || select_ >= kRegRedirectionBase + 2 * kPins) {
    log_ignored_access("write to read-only or reserved register", select_, 4);
    return;
  }
  const unsigned n = (select_ - kRegRedirectionBase) / 2;
  const std::uint64_t before = entries_[n];
  std::uint64_t after = (select_ & 1) ? (before & 0xFFFF'FFFFu) | (std::uint64_t{value} << 32)
                                      : (before & ~std::uint64_t{0xFFFF'FFFFu}) | value;
  after = (after & kWritableBits) | (before & kReadOnlyBits);
  if (!(after & kLevelTriggered)) after &= ~kRemoteIrr;
  entries_[n] = after;
  if ((before ^ after) & kRouteBits) routes_dirty_ |= 1u << n;
  deliver_if_due(n, work);  // unmasking, or turning level, an asserted line
}

void IoApic::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  std::fill(data.begin(), data.end(), std::uint8_t{0xff});
  if (offset == kRegisterSelect && !data.empty() && data.size() <= 4) {
    std::lock_guard lock(mu_);
    store_le(data, select_);
  } else if (offset == kWindow && data.size() == 4) {
    std::lock_guard lock(mu_);
    store_le(data, read_indirect());
  } else {
    log_ignored_access("read", offset, data.size());
  }
}

void IoApic::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  if (offset == kRegisterSelect && !data.empty() && data.size() <= 4) {
    std::lock_guard lock(mu_);
    select_ = data[0];
  } else if (offset == kWindow && data.size() == 4) {
    change_then_finish([&](Work& work) { write_indirect(static_cast<std::uint32_t>(load_le(data)), work); });
  } else if (offset == kEoi && !data.empty() && data.size() <= 4) {
    change_then_finish([&](Work& work) { end_of_interrupt_locked(data[0], work); });
  } else {
    log_ignored_access("write", offset, data.size());
  }
}

}  // namespace vmm::devices
