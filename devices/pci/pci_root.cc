#include "devices/pci/pci_root.h"

#include <mutex>
#include <string>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "devices/rate_limit.h"

namespace vmm::devices::pci {

namespace {

RateLimit g_bad_access_log;

bool naturally_aligned(std::uint64_t offset, std::size_t size) {
  return (size == 1 || size == 2 || size == 4) && offset % size == 0;
}

}  // namespace

// 00:00.0: identity, command and status only; no BARs, no interrupts.
class PciRoot::HostBridge final : public PciFunction {
 public:
  HostBridge()
      : config_(PciIdentity{kHostBridgeVendor, kHostBridgeDevice, 0, kHostBridgeClass, kHostBridgeVendor,
                            kHostBridgeDevice, 0}) {}

  void config_read(std::uint32_t offset, std::span<std::uint8_t> data) noexcept override {
    std::lock_guard lock(mu_);
    config_.read(offset, data);
  }
  void config_write(std::uint32_t offset, std::span<const std::uint8_t> data) noexcept override {
    std::lock_guard lock(mu_);
    config_.write(offset, data);
  }
  void bar_read(unsigned, std::uint64_t, std::span<std::uint8_t> data) noexcept override { store_le(data, ~0ull); }
  void bar_write(unsigned, std::uint64_t, std::span<const std::uint8_t>) noexcept override {}
  std::optional<BarHit> decode(std::uint64_t, std::uint64_t) const noexcept override { return std::nullopt; }
  std::uint64_t bar_size(unsigned) const noexcept override { return 0; }
  void assign_bar(unsigned, std::uint64_t) override { throw Error("pci host bridge: no BARs"); }
  void set_bar_observer(PciBarObserver*) noexcept override {}
  void reset() noexcept override {
    std::lock_guard lock(mu_);
    config_.reset();
  }

 private:
  std::mutex mu_;
  ConfigSpace config_;
};

PciRoot::PciRoot(BusDevice* reset_control) : reset_control_(reset_control), host_bridge_(std::make_unique<HostBridge>()) {
  slots_[0] = host_bridge_.get();
}

PciRoot::~PciRoot() = default;

void PciRoot::add(unsigned slot, PciFunction& function) {
  if (slot == 0 || slot >= kSlots) throw Error("pci: slot " + std::to_string(slot) + " out of range (1-31)");
  if (slots_[slot] != nullptr) throw Error("pci: slot " + std::to_string(slot) + " already taken");
  std::uint64_t next = next_bar_address_;
  std::array<std::uint64_t, PciFunction::kBars> placed{};
  for (unsigned bar = 0; bar < PciFunction::kBars; ++bar) {
    const std::uint64_t size = function.bar_size(bar);
    if (size == 0) continue;
    next = (next + size - 1) & ~(size - 1);
    if (next + size > kMmioWindowBase + kMmioWindowSize) {
      throw Error("pci: the MMIO window has no room for BAR " + std::to_string(bar) + " of slot " +
                  std::to_string(slot));
    }
    placed[bar] = next;
    next += size;
  }
  for (unsigned bar = 0; bar < PciFunction::kBars; ++bar) {
    if (placed[bar] != 0) function.assign_bar(bar, placed[bar]);
  }
  next_bar_address_ = next;
  slots_[slot] = &function;
}

unsigned PciRoot::add(PciFunction& function) {
  for (unsigned slot = 1; slot < kSlots; ++slot) {
    if (slots_[slot] == nullptr) {
      add(slot, function);
      return slot;
    }
  }
  throw Error("pci: all 31 slots are taken");
}

PciFunction* PciRoot::at(unsigned bus, unsigned slot, unsigned function) const noexcept {
  if (bus != 0 || slot >= kSlots || function != 0) return nullptr;
  return slots_[slot];
}

void PciRoot::config_read(unsigned bus, unsigned slot, unsigned function, std::uint32_t offset,
                          std::span<std::uint8_t> data) const noexcept {
  PciFunction* target = at(bus, slot, function);
  if (target == nullptr || offset >= kExtendedSize || !naturally_aligned(offset, data.size())) {
    store_le(data, ~0ull);
    return;
  }
  target->config_read(offset, data);
}

void PciRoot::config_write(unsigned bus, unsigned slot, unsigned function, std::uint32_t offset,
                           std::span<const std::uint8_t> data) noexcept {
  PciFunction* target = at(bus, slot, function);
  if (target == nullptr || offset >= kExtendedSize || !naturally_aligned(offset, data.size())) return;
  target->config_write(offset, data);
}

void PciRoot::reset() noexcept {
  config_address_.store(0, std::memory_order_relaxed);
  for (PciFunction* function : slots_) {
    if (function != nullptr) function->reset();
  }
}

// ---- 0xCF8-0xCFF -------------------------------------------------------------

void PciRoot::io_read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  if (offset == 0 && data.size() == 4) {
    store_le(data, config_address_.load(std::memory_order_relaxed));
    return;
  }
  if (offset == 1 && data.size() == 1 && reset_control_ != nullptr) {
    reset_control_->read(0, data);
    return;
  }
  if (offset >= 4) {
    const std::uint32_t address = config_address_.load(std::memory_order_relaxed);
    if ((address & kConfigEnable) != 0) {
      config_read((address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 7,
                        (address & 0xFC) + static_cast<std::uint32_t>(offset - 4), data);
      return;
    }
  }
  store_le(data, ~0ull);
}

void PciRoot::io_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  if (offset == 0 && data.size() == 4) {
    // Bits 1:0 are reserved and read as zero; 30:24 are reserved too.
    config_address_.store(static_cast<std::uint32_t>(load_le(data)) & 0x80FF'FFFC, std::memory_order_relaxed);
    return;
  }
  if (offset == 1 && data.size() == 1) {
    if (reset_control_ != nullptr) reset_control_->write(0, data);
    return;
  }
  if (offset >= 4) {
    const std::uint32_t address = config_address_.load(std::memory_order_relaxed);
    if ((address & kConfigEnable) != 0) {
      config_write((address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 7,
                         (address & 0xFC) + static_cast<std::uint32_t>(offset - 4), data);
    }
    return;
  }
  // Byte and word writes to 0xCF8/0xCFA/0xCFB (Linux's probe writes 0xCFB)
  // are not CONFIG_ADDRESS on a mechanism #1 bridge.
}

// ---- ECAM ----------------------------------------------------------------------

void PciRoot::ecam_read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  config_read(static_cast<unsigned>(offset >> 20), (offset >> 15) & 0x1F, (offset >> 12) & 7,
                    offset & 0xFFF, data);
}

void PciRoot::ecam_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  config_write(static_cast<unsigned>(offset >> 20), (offset >> 15) & 0x1F, (offset >> 12) & 7,
                     offset & 0xFFF, data);
}

// ---- The BAR window ------------------------------------------------------------

PciFunction* PciRoot::decode(std::uint64_t address, std::uint64_t length, BarHit& hit) const noexcept {
  for (PciFunction* function : slots_) {
    if (function == nullptr) continue;
    if (auto found = function->decode(address, length)) {
      hit = *found;
      return function;
    }
  }
  return nullptr;
}

void PciRoot::window_read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  BarHit hit;
  if (PciFunction* function = decode(kMmioWindowBase + offset, data.size(), hit)) {
    function->bar_read(hit.bar, hit.offset, data);
    return;
  }
  store_le(data, ~0ull);
  if (g_bad_access_log.allow()) {
    spdlog::debug("pci: read of {:#x} hits no BAR ({} suppressed)", kMmioWindowBase + offset,
                  g_bad_access_log.take_suppressed());
  }
}

void PciRoot::window_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  BarHit hit;
  if (PciFunction* function = decode(kMmioWindowBase + offset, data.size(), hit)) {
    function->bar_write(hit.bar, hit.offset, data);
    return;
  }
  if (g_bad_access_log.allow()) {
    spdlog::debug("pci: write to {:#x} hits no BAR ({} suppressed)", kMmioWindowBase + offset,
                  g_bad_access_log.take_suppressed());
  }
}

}  // namespace vmm::devices::pci
