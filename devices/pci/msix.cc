#include "devices/pci/msix.h"

#include <array>
#include <string>

#include "devices/error.h"

namespace vmm::devices::pci {

Msix::Msix(std::uint16_t vectors, MsiSink& sink, unsigned table_bar, std::uint32_t table_offset, unsigned pba_bar,
           std::uint32_t pba_offset)
    : sink_(sink), table_bar_(table_bar), pba_bar_(pba_bar), table_offset_(table_offset), pba_offset_(pba_offset) {
  if (vectors == 0 || vectors > kMaxVectors) throw Error("msi-x: " + std::to_string(vectors) + " vectors");
  if (table_bar >= PciFunction::kBars || pba_bar >= PciFunction::kBars || table_offset % 8 != 0 || pba_offset % 8 != 0) {
    throw Error("msi-x: table or PBA misplaced");
  }
  entries_.assign(std::size_t{vectors} * 4, 0);
  pending_.assign((vectors + 63u) / 64u, 0);
  reset();
}

std::uint8_t Msix::add_capability(ConfigSpace& config) {
  const std::uint16_t control = static_cast<std::uint16_t>(vectors() - 1);
  const std::uint32_t table = table_offset_ | table_bar_;
  const std::uint32_t pba = pba_offset_ | pba_bar_;
  const std::array<std::uint8_t, 12> body = {0, 0,
                                             static_cast<std::uint8_t>(control), static_cast<std::uint8_t>(control >> 8),
                                             static_cast<std::uint8_t>(table), static_cast<std::uint8_t>(table >> 8),
                                             static_cast<std::uint8_t>(table >> 16), static_cast<std::uint8_t>(table >> 24),
                                             static_cast<std::uint8_t>(pba), static_cast<std::uint8_t>(pba >> 8),
                                             static_cast<std::uint8_t>(pba >> 16), static_cast<std::uint8_t>(pba >> 24)};
  std::array<std::uint8_t, 12> writable{};
  writable[3] = static_cast<std::uint8_t>((kControlEnable | kControlFunctionMask) >> 8);
  capability_ = config.add_capability(kCapabilityId, body, writable);
  return capability_;
}

void Msix::config_written(const ConfigSpace& config) noexcept {
  if (capability_ == 0) return;
  const std::uint16_t control = config.word(capability_ + 2u);
  const bool was_enabled = enabled_;
  enabled_ = (control & kControlEnable) != 0;
  function_masked_ = (control & kControlFunctionMask) != 0;
  if (!enabled_ && was_enabled) {
    for (auto& word : pending_) word = 0;  // pending bits only mean something while enabled
  }
  deliver_pending();
}

bool Msix::masked(std::uint16_t vector) const noexcept {
  return vector >= vectors() || (entries_[std::size_t{vector} * 4 + 3] & kEntryMasked) != 0;
}

bool Msix::pending(std::uint16_t vector) const noexcept {
  return vector < vectors() && ((pending_[vector / 64u] >> (vector % 64u)) & 1u) != 0;
}

void Msix::set_pending(std::uint16_t vector, bool on) noexcept {
  const std::uint64_t bit = std::uint64_t{1} << (vector % 64u);
  if (on) {
    pending_[vector / 64u] |= bit;
  } else {
    pending_[vector / 64u] &= ~bit;
  }
}

MsiMessage Msix::message(std::uint16_t vector) const noexcept {
  if (vector >= vectors()) return {};
  const std::uint32_t* entry = &entries_[std::size_t{vector} * 4];
  return MsiMessage{std::uint64_t{entry[0]} | std::uint64_t{entry[1]} << 32, entry[2]};
}

void Msix::table_read(std::uint64_t offset, std::span<std::uint8_t> data) const noexcept {
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t at = offset + i;
    if (at >= table_bytes()) {
      data[i] = 0xFF;
      continue;
    }
    data[i] = static_cast<std::uint8_t>(entries_[at / 4] >> (8 * (at % 4)));
  }
}

void Msix::table_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  if (offset >= table_bytes() || data.size() > table_bytes() - offset) return;
  if (data.size() > 1 && offset / kEntrySize != (offset + data.size() - 1) / kEntrySize) return;  // spans two entries
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t at = offset + i;
    std::uint32_t& dword = entries_[at / 4];
    const unsigned shift = 8 * (at % 4);
    dword = (dword & ~(std::uint32_t{0xFF} << shift)) | (std::uint32_t{data[i]} << shift);
  }
  // Only the mask bit of Vector Control is defined; the rest reads as zero.
  const std::size_t vector = offset / kEntrySize;
  entries_[vector * 4 + 3] &= kEntryMasked;
  deliver_pending();
}

void Msix::pba_read(std::uint64_t offset, std::span<std::uint8_t> data) const noexcept {
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t at = offset + i;
    data[i] = at < pba_bytes() ? static_cast<std::uint8_t>(pending_[at / 8] >> (8 * (at % 8))) : 0xFF;
  }
}

bool Msix::signal(std::uint16_t vector) noexcept {
  if (!enabled_ || vector >= vectors()) return false;
  if (function_masked_ || masked(vector)) {
    set_pending(vector, true);
  } else {
    sink_.send_msi(message(vector));
  }
  return true;
}

void Msix::deliver_pending() noexcept {
  if (!enabled_ || function_masked_) return;
  for (std::uint16_t v = 0; v < vectors(); ++v) {
    if (pending(v) && !masked(v)) {
      set_pending(v, false);
      sink_.send_msi(message(v));
    }
  }
}

void Msix::reset() noexcept {
  for (std::size_t i = 0; i < entries_.size(); ++i) entries_[i] = (i % 4 == 3) ? kEntryMasked : 0;
  for (auto& word : pending_) word = 0;
  enabled_ = false;
  function_masked_ = false;
}

}  // namespace vmm::devices::pci
