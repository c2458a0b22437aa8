#include "devices/apic_bus.h"

#include <string>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "devices/rate_limit.h"

namespace vmm::devices {

namespace {

constexpr std::uint64_t kMsiAddressMask = 0xFFF0'0000;
constexpr std::uint64_t kMsiAddressBase = 0xFEE0'0000;
constexpr unsigned kMsiDestinationShift = 12;
constexpr std::uint64_t kMsiRedirectionHint = 1u << 3;
constexpr std::uint64_t kMsiLogical = 1u << 2;
constexpr std::uint32_t kMsiDataAssert = 1u << 14;
constexpr std::uint32_t kMsiDataLevel = 1u << 15;

RateLimit g_drop_log;

}  // namespace

ApicBus::ApicBus(timers::CyclicSystem& system, timers::EventLoop& loop, const Config& config, Kick kick,
                 EoiBroadcast eoi_broadcast)
    : kick_(std::move(kick)), eoi_broadcast_(std::move(eoi_broadcast)) {
  if (config.cpus == 0) throw Error("apic bus: a VM needs at least one local APIC");
  lapics_.reserve(config.cpus);
  for (unsigned i = 0; i < config.cpus; ++i) {
    lapics_.push_back(std::make_unique<Lapic>(*this, i, system, loop, config.lapic));
  }
}

ApicBus::~ApicBus() {
  // Timer handlers route into the bus; stop them while it is whole.
  drain_timers();
}

Lapic& ApicBus::lapic(unsigned index) {
  if (index >= lapics_.size()) {
    throw Error("apic bus: no local APIC " + std::to_string(index) + " (there are " +
                std::to_string(lapics_.size()) + ")");
  }
  return *lapics_[index];
}

std::optional<ApicMessage> ApicBus::decode_msi(const MsiMessage& message) noexcept {
  if ((message.address & ~std::uint64_t{0xFFFF'FFFF}) != 0 || (message.address & kMsiAddressMask) != kMsiAddressBase) {
    return std::nullopt;
  }
  ApicMessage out;
  out.vector = static_cast<std::uint8_t>(message.data & 0xFF);
  out.mode = static_cast<ApicDelivery>((message.data >> 8) & 7);
  if (out.mode == ApicDelivery::reserved3 || out.mode == ApicDelivery::startup) return std::nullopt;
  out.logical = (message.address & kMsiLogical) != 0;
  out.redirection_hint = (message.address & kMsiRedirectionHint) != 0;
  out.level_triggered = (message.data & kMsiDataLevel) != 0;
  out.asserted = !out.level_triggered || (message.data & kMsiDataAssert) != 0;
  out.destination = static_cast<std::uint32_t>((message.address >> kMsiDestinationShift) & 0xFF);
  return out;
}

void ApicBus::send_msi(const MsiMessage& message) noexcept {
  const std::optional<ApicMessage> decoded = decode_msi(message);
  if (!decoded) {
    invalid_.fetch_add(1, std::memory_order_relaxed);
    if (g_drop_log.allow()) {
      spdlog::debug("apic bus: MSI address {:#x} data {:#x} means nothing; dropped ({} suppressed)", message.address,
                    message.data, g_drop_log.take_suppressed());
    }
    return;
  }
  if (!decoded->asserted) return;  // a level de-assert message: nothing to deliver
  (void)deliver(*decoded, nullptr);
}

bool ApicBus::names(const Lapic& lapic, const ApicMessage& message, const Lapic* source) const noexcept {
  switch (message.shorthand) {
    case ApicShorthand::self:
      return &lapic == source && lapic.enabled();
    case ApicShorthand::all_including_self:
      return lapic.enabled();
    case ApicShorthand::all_excluding_self:
      return &lapic != source && lapic.enabled();
    case ApicShorthand::none:
      break;
  }
  return lapic.matches(message.destination, message.logical, message.x2apic_destination);
}

Lapic* ApicBus::lowest_priority(const ApicMessage& message, const Lapic* source) noexcept {
  // Two passes, no allocation: the lowest APR and how many share it, then
  // the (vector mod ties)-th of those. Priorities may move in between (other
  // threads run); then the last one found at that priority, or the first
  // candidate, wins -- any of them is a correct choice at some instant.
  int lowest = 256;
  unsigned ties = 0;
  Lapic* first = nullptr;
  for (const auto& lapic : lapics_) {
    if (!names(*lapic, message, source) || !lapic->software_enabled()) continue;
    const int apr = lapic->arbitration_priority();
    if (apr < lowest) {
      lowest = apr;
      ties = 1;
      first = lapic.get();
    } else if (apr == lowest) {
      ++ties;
    }
  }
  if (ties <= 1) return first;
  const unsigned pick = message.vector % ties;
  unsigned seen = 0;
  Lapic* chosen = first;
  for (const auto& lapic : lapics_) {
    if (!names(*lapic, message, source) || !lapic->software_enabled()) continue;
    if (lapic->arbitration_priority() != lowest) continue;
    chosen = lapic.get();
    if (seen++ == pick) break;
  }
  return chosen;
}

unsigned ApicBus::deliver(const ApicMessage& message, const Lapic* source) noexcept {
  messages_.fetch_add(1, std::memory_order_relaxed);
  const ApicDelivery mode = message.mode == ApicDelivery::lowest_priority ? ApicDelivery::fixed : message.mode;
  unsigned delivered = 0;
  if (message.mode == ApicDelivery::lowest_priority || message.redirection_hint) {
    if (Lapic* target = lowest_priority(message, source)) {
      target->receive(mode, message.vector, message.level_triggered);
      delivered = 1;
    }
  } else {
    for (const auto& lapic : lapics_) {
      if (!names(*lapic, message, source)) continue;
      lapic->receive(mode, message.vector, message.level_triggered);
      ++delivered;
    }
  }
  if (delivered == 0) {
    no_destination_.fetch_add(1, std::memory_order_relaxed);
    if (g_drop_log.allow()) {
      spdlog::debug("apic bus: vector {:#x} mode {} to {} destination {:#x} (shorthand {}) reached no APIC; dropped "
                    "({} suppressed)",
                    message.vector, static_cast<unsigned>(message.mode), message.logical ? "logical" : "physical",
                    message.destination, static_cast<unsigned>(message.shorthand), g_drop_log.take_suppressed());
    }
  }
  return delivered;
}

void ApicBus::LintLine::set_level(bool asserted) noexcept {
  for (const auto& lapic : bus_.lapics_) lapic->set_lint(pin_, asserted);
}

void ApicBus::kick(unsigned index) noexcept {
  if (kick_) kick_(index);
}

void ApicBus::broadcast_eoi(std::uint8_t vector) noexcept {
  if (eoi_broadcast_) eoi_broadcast_(vector);
}

void ApicBus::drain_timers() noexcept {
  for (const auto& lapic : lapics_) lapic->drain_timers();
}

void ApicBus::reset(timers::EventLoop& loop) noexcept {
  for (const auto& lapic : lapics_) lapic->reset(loop);
}

void ApicBus::pause() noexcept {
  for (const auto& lapic : lapics_) lapic->pause();
}

void ApicBus::resume() noexcept {
  for (const auto& lapic : lapics_) lapic->resume();
}

void ApicBus::bind_timers(timers::EventLoop& loop) noexcept {
  for (const auto& lapic : lapics_) lapic->bind_timers(loop);
}

ApicBus::Stats ApicBus::stats() const noexcept {
  return Stats{messages_.load(std::memory_order_relaxed), no_destination_.load(std::memory_order_relaxed),
               invalid_.load(std::memory_order_relaxed)};
}

}  // namespace vmm::devices
