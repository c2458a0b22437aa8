#include "devices/pci/config_space.h"

#include <string>

#include "devices/error.h"

namespace vmm::devices::pci {

namespace {

constexpr std::uint16_t kCommandWritable =
    kCommandIo | kCommandMemory | kCommandBusMaster | kCommandParity | kCommandSerr | kCommandIntxDisable;

bool is_power_of_two(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

ConfigSpace::ConfigSpace(const PciIdentity& identity) noexcept {
  for (auto& d : decoded_) d.store(kNotDecoded, std::memory_order_relaxed);
  set_word(kVendorId, identity.vendor);
  set_word(kDeviceId, identity.device);
  set_byte(kRevisionId, identity.revision);
  set_byte(kClassCode, static_cast<std::uint8_t>(identity.class_code));
  set_byte(kClassCode + 1, static_cast<std::uint8_t>(identity.class_code >> 8));
  set_byte(kClassCode + 2, static_cast<std::uint8_t>(identity.class_code >> 16));
  set_word(kSubsystemVendorId, identity.subsystem_vendor);
  set_word(kSubsystemId, identity.subsystem);
  set_byte(kInterruptPin, identity.interrupt_pin);
  writable_[kCommand] = static_cast<std::uint8_t>(kCommandWritable);
  writable_[kCommand + 1] = static_cast<std::uint8_t>(kCommandWritable >> 8);
  writable_[kCacheLineSize] = 0xFF;
  writable_[kLatencyTimer] = 0xFF;
  writable_[kInterruptLine] = 0xFF;
  power_on_ = bytes_;
}

void ConfigSpace::add_memory_bar(unsigned bar, std::uint32_t size) {
  if (bar >= PciFunction::kBars || bar_sizes_[bar] != 0) throw Error("pci: BAR " + std::to_string(bar) + " taken or invalid");
  if (!is_power_of_two(size) || size < 16) throw Error("pci: BAR size " + std::to_string(size) + " is not a power of two >= 16");
  bar_sizes_[bar] = size;
  for (unsigned i = 0; i < 4; ++i) writable_[kBar0 + 4 * bar + i] = 0xFF;  // masked again after each write
}

void ConfigSpace::assign_bar(unsigned bar, std::uint64_t address) {
  if (bar >= PciFunction::kBars || bar_sizes_[bar] == 0) throw Error("pci: BAR " + std::to_string(bar) + " not implemented");
  if (address == 0 || address % bar_sizes_[bar] != 0 || address + bar_sizes_[bar] > (std::uint64_t{1} << 32)) {
    throw Error("pci: BAR " + std::to_string(bar) + " cannot be placed at " + std::to_string(address));
  }
  set_dword(kBar0 + 4 * bar, static_cast<std::uint32_t>(address));
  for (unsigned i = 0; i < 4; ++i) power_on_[kBar0 + 4 * bar + i] = bytes_[kBar0 + 4 * bar + i];
  update_decoding();
}

std::uint64_t ConfigSpace::bar_size(unsigned bar) const noexcept { return bar < PciFunction::kBars ? bar_sizes_[bar] : 0; }

std::uint8_t ConfigSpace::add_capability(std::uint8_t id, std::span<const std::uint8_t> body,
                                         std::span<const std::uint8_t> writable) {
  if (body.size() < 2 || (!writable.empty() && writable.size() != body.size())) throw Error("pci: malformed capability");
  const std::uint32_t offset = next_capability_;
  if (offset + body.size() > kConventionalSize) throw Error("pci: configuration space full");
  for (std::size_t i = 0; i < body.size(); ++i) {
    bytes_[offset + i] = body[i];
    writable_[offset + i] = (i >= 2 && !writable.empty()) ? writable[i] : 0;
  }
  bytes_[offset] = id;
  bytes_[offset + 1] = 0;
  if (last_capability_ == 0) {
    bytes_[kCapabilityPointer] = static_cast<std::uint8_t>(offset);
  } else {
    bytes_[last_capability_ + 1u] = static_cast<std::uint8_t>(offset);
  }
  set_word(kStatus, word(kStatus) | kStatusCapabilityList);
  last_capability_ = static_cast<std::uint8_t>(offset);
  next_capability_ = (offset + static_cast<std::uint32_t>(body.size()) + 3) & ~3u;  // dword aligned
  power_on_ = bytes_;
  return static_cast<std::uint8_t>(offset);
}

void ConfigSpace::set_observer(PciFunction* function, PciBarObserver* observer) noexcept {
  function_ = function;
  observer_ = observer;
}

void ConfigSpace::set_intx_line(IrqLine* line, std::uint8_t interrupt_line) noexcept {
  intx_line_ = line;
  set_byte(kInterruptLine, interrupt_line);
  power_on_[kInterruptLine] = interrupt_line;
}

std::uint16_t ConfigSpace::word(std::uint32_t offset) const noexcept {
  return static_cast<std::uint16_t>(byte(offset) | byte(offset + 1) << 8);
}

std::uint32_t ConfigSpace::dword(std::uint32_t offset) const noexcept {
  return std::uint32_t{word(offset)} | std::uint32_t{word(offset + 2)} << 16;
}

void ConfigSpace::set_byte(std::uint32_t offset, std::uint8_t value) noexcept {
  if (offset < kConventionalSize) bytes_[offset] = value;
}
void ConfigSpace::set_word(std::uint32_t offset, std::uint16_t value) noexcept {
  set_byte(offset, static_cast<std::uint8_t>(value));
  set_byte(offset + 1, static_cast<std::uint8_t>(value >> 8));
}
void ConfigSpace::set_dword(std::uint32_t offset, std::uint32_t value) noexcept {
  set_word(offset, static_cast<std::uint16_t>(value));
  set_word(offset + 2, static_cast<std::uint16_t>(value >> 16));
}

void ConfigSpace::read(std::uint32_t offset, std::span<std::uint8_t> data) const noexcept {
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = byte(offset + static_cast<std::uint32_t>(i));
}

void ConfigSpace::write(std::uint32_t offset, std::span<const std::uint8_t> data) noexcept {
  bool bars_touched = false;
  bool command_touched = false;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint32_t at = offset + static_cast<std::uint32_t>(i);
    if (at >= kConventionalSize) break;
    bytes_[at] = static_cast<std::uint8_t>((bytes_[at] & ~writable_[at]) | (data[i] & writable_[at]));
    bars_touched |= at >= kBar0 && at < kBar0 + 4 * PciFunction::kBars;
    command_touched |= at == kCommand || at == kCommand + 1;
  }
  if (bars_touched) {
    for (unsigned bar = 0; bar < PciFunction::kBars; ++bar) {
      // Bits below the size read as zero (that is how a BAR reports its
      // size); the type bits read as "32-bit memory, not prefetchable".
      const std::uint32_t size = bar_sizes_[bar];
      const std::uint32_t mask = size == 0 ? 0 : ~(size - 1) & kBarMemoryAddressMask;
      set_dword(kBar0 + 4 * bar, dword(kBar0 + 4 * bar) & mask);
    }
  }
  if (command_touched) update_intx_pin();
  if (bars_touched || command_touched) update_decoding();
}

void ConfigSpace::update_decoding() noexcept {
  const bool memory = (command() & kCommandMemory) != 0;
  for (unsigned bar = 0; bar < PciFunction::kBars; ++bar) {
    if (bar_sizes_[bar] == 0) continue;
    const std::uint64_t base = dword(kBar0 + 4 * bar) & kBarMemoryAddressMask;
    const std::uint64_t now = (memory && base != 0) ? base : kNotDecoded;
    if (decoded_[bar].exchange(now, std::memory_order_acq_rel) != now && observer_ != nullptr && function_ != nullptr) {
      observer_->on_bar_changed(*function_, bar, now == kNotDecoded ? std::nullopt : std::optional(now), bar_sizes_[bar]);
    }
  }
}

std::optional<BarHit> ConfigSpace::decode(std::uint64_t address, std::uint64_t length) const noexcept {
  for (unsigned bar = 0; bar < PciFunction::kBars; ++bar) {
    const std::uint64_t base = decoded_[bar].load(std::memory_order_acquire);
    if (base == kNotDecoded) continue;
    const std::uint64_t size = bar_sizes_[bar];
    if (address >= base && address - base < size && length <= size - (address - base)) {
      return BarHit{bar, address - base};
    }
  }
  return std::nullopt;
}

std::optional<std::uint64_t> ConfigSpace::decoded_base(unsigned bar) const noexcept {
  if (bar >= PciFunction::kBars) return std::nullopt;
  const std::uint64_t base = decoded_[bar].load(std::memory_order_acquire);
  return base == kNotDecoded ? std::nullopt : std::optional(base);
}

void ConfigSpace::set_intx(bool pending) noexcept {
  intx_pending_ = pending;
  const std::uint16_t status = word(kStatus);
  set_word(kStatus, pending ? (status | kStatusInterrupt) : (status & ~kStatusInterrupt));
  update_intx_pin();
}

void ConfigSpace::update_intx_pin() noexcept {
  const bool level = intx_pending_ && (command() & kCommandIntxDisable) == 0;
  if (level == intx_level_) return;
  intx_level_ = level;
  if (intx_line_ != nullptr) intx_line_->set_level(level);
}

void ConfigSpace::reset() noexcept {
  bytes_ = power_on_;
  intx_pending_ = false;
  update_intx_pin();
  update_decoding();
}

}  // namespace vmm::devices::pci
