#include "vmm/irq_routing.h"

#include <cstring>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "devices/rate_limit.h"

namespace vmm {

namespace {

RateLimit g_msi_failed_log;
RateLimit g_msi_blocked_log;
RateLimit g_route_log;

bool same(const std::optional<devices::MsiMessage>& a, const std::optional<devices::MsiMessage>& b) noexcept {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->address == b->address && a->data == b->data);
}

}  // namespace

// -------------------------------------------------------------- KvmMsiSink

KvmMsiSink::KvmMsiSink(const KvmVm& vm) : vm_(vm) {
  if (!vm.has_split_irqchip()) throw Error("KVM_SIGNAL_MSI needs the in-kernel LAPIC: enable the split irqchip first");
}

void KvmMsiSink::send_msi(const devices::MsiMessage& message) noexcept {
  const int r = vm_.signal_msi(message);
  if (r > 0) {
    delivered_.fetch_add(1, std::memory_order_relaxed);
  } else if (r == 0) {
    // Normal while a guest has its LAPIC software-disabled (early boot,
    // shutdown); worth a trace, not a warning.
    blocked_.fetch_add(1, std::memory_order_relaxed);
    if (g_msi_blocked_log.allow()) {
      spdlog::debug("MSI {:#x}/{:#x} reached no LAPIC ({} similar suppressed)", message.address, message.data,
                    g_msi_blocked_log.take_suppressed());
    }
  } else {
    failed_.fetch_add(1, std::memory_order_relaxed);
    if (g_msi_failed_log.allow()) {
      spdlog::warn("KVM_SIGNAL_MSI {:#x}/{:#x} failed: {} ({} similar suppressed)", message.address, message.data,
                   std::strerror(-r), g_msi_failed_log.take_suppressed());
    }
  }
}

KvmMsiSink::Stats KvmMsiSink::stats() const noexcept {
  return {delivered_.load(std::memory_order_relaxed), blocked_.load(std::memory_order_relaxed),
          failed_.load(std::memory_order_relaxed)};
}

// ------------------------------------------------------------ IoapicRoutes

IoapicRoutes::IoapicRoutes(const KvmVm& vm) : vm_(vm), pins_(vm.ioapic_pins()) {
  if (!vm.has_split_irqchip()) throw Error("IOAPIC routes need the split irqchip: enable it first");
  if (pins_ > kMaxPins) throw Error("too many IOAPIC pins: " + std::to_string(pins_));
  wanted_.resize(pins_);
  committed_.resize(pins_);
}

void IoapicRoutes::set_ioapic_route(unsigned pin, const devices::MsiMessage& message, bool masked,
                                    bool level) noexcept {
  if (pin >= pins_) {
    if (g_route_log.allow()) {
      spdlog::warn("IOAPIC route for pin {} ignored: only {} pins are reserved ({} similar suppressed)", pin, pins_,
                   g_route_log.take_suppressed());
    }
    return;
  }
  std::lock_guard lock(mu_);
  if (masked) return;  // keep the previous route: see the header
  constexpr std::uint32_t kFirstValidVector = 16;
  std::optional<devices::MsiMessage> route;
  if ((message.data & 0xFF) >= kFirstValidVector) {
    const std::uint32_t data =
        level ? (message.data | kMsiDataLevelTriggered) : (message.data & ~kMsiDataLevelTriggered);
    route = devices::MsiMessage{message.address, data};
  }
  if (same(wanted_[pin], route)) return;
  wanted_[pin] = route;
  commit_locked();
}

void IoapicRoutes::clear() noexcept {
  std::lock_guard lock(mu_);
  for (auto& route : wanted_) route.reset();
  commit_locked();
}

std::optional<devices::MsiMessage> IoapicRoutes::route(unsigned pin) const {
  std::lock_guard lock(mu_);
  if (pin >= pins_) return std::nullopt;
  return wanted_[pin];
}

void IoapicRoutes::commit_locked() noexcept {
  bool changed = !ever_committed_;
  for (unsigned pin = 0; pin < pins_ && !changed; ++pin) changed = !same(wanted_[pin], committed_[pin]);
  if (!changed) return;

  std::array<kvm_irq_routing_entry, kMaxPins> entries{};
  std::size_t n = 0;
  for (unsigned pin = 0; pin < pins_; ++pin) {
    if (!wanted_[pin]) continue;
    kvm_irq_routing_entry& e = entries[n++];
    e.gsi = pin;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<std::uint32_t>(wanted_[pin]->address);
    e.u.msi.address_hi = static_cast<std::uint32_t>(wanted_[pin]->address >> 32);
    e.u.msi.data = wanted_[pin]->data;
  }
  commits_.fetch_add(1, std::memory_order_relaxed);
  const int r = vm_.try_set_gsi_routing(std::span(entries.data(), n));
  if (r < 0) {
    // Keep `committed_` as it was: the next change retries the whole table.
    if (g_route_log.allow()) {
      spdlog::warn("KVM_SET_GSI_ROUTING ({} routes) failed: {}; level-triggered EOIs may be missed ({} similar "
                   "suppressed)",
                   n, std::strerror(-r), g_route_log.take_suppressed());
    }
    return;
  }
  committed_ = wanted_;
  ever_committed_ = true;
}

}  // namespace vmm
