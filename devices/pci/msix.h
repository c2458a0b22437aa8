// MSI-X (PCI Local Bus 3.0, 6.8.2): the capability in configuration space,
// the vector table and the pending-bit array in a BAR, delivering through an
// MsiSink.
//
// A vector is delivered when MSI-X is enabled, the function is not masked
// and the vector's mask bit is clear; otherwise, while MSI-X is enabled, its
// pending bit is set, and the message goes out when the mask that held it
// back is cleared (entry mask or function mask), the pending bit clearing as
// it does. Entries start masked with address and data zero. While MSI-X is
// disabled signal() returns false and the owner uses INTx.
//
// Table access: any width up to 8 bytes within one 16-byte entry (the spec
// asks for aligned dwords and qwords; anything else is served byte by byte
// and nothing beyond the table is touched). The PBA is read only.
//
// Not thread-safe: the owning function holds its lock around every call;
// the MsiSink is called with that lock held (the sink never calls back).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "devices/interrupts.h"
#include "devices/pci/config_space.h"

namespace vmm::devices::pci {

class Msix {
 public:
  static constexpr std::uint8_t kCapabilityId = 0x11;
  static constexpr std::uint16_t kMaxVectors = 2048;
  static constexpr std::uint32_t kEntrySize = 16;
  // Message Control bits.
  static constexpr std::uint16_t kControlEnable = 1u << 15, kControlFunctionMask = 1u << 14;
  // Offsets inside an entry, and its mask bit.
  static constexpr std::uint32_t kEntryAddressLow = 0, kEntryAddressHigh = 4, kEntryData = 8, kEntryControl = 12;
  static constexpr std::uint32_t kEntryMasked = 1;

  // `vectors` (1..2048) entries; the table at `table_offset` of BAR
  // `table_bar`, the PBA at `pba_offset` of `pba_bar` (8-byte aligned both).
  // Throws vmm::Error on bad values. `sink` must outlive the table.
  Msix(std::uint16_t vectors, MsiSink& sink, unsigned table_bar, std::uint32_t table_offset, unsigned pba_bar,
       std::uint32_t pba_offset);

  std::uint16_t vectors() const noexcept { return static_cast<std::uint16_t>(entries_.size() / 4); }
  std::uint32_t table_bytes() const noexcept { return vectors() * kEntrySize; }
  std::uint32_t pba_bytes() const noexcept { return static_cast<std::uint32_t>(pending_.size() * 8); }

  // Adds the capability to `config` (set-up) and remembers where it is.
  std::uint8_t add_capability(ConfigSpace& config);
  // After a configuration write: picks up enable and function-mask changes
  // and sends what they unmasked.
  void config_written(const ConfigSpace& config) noexcept;

  bool enabled() const noexcept { return enabled_; }
  bool function_masked() const noexcept { return function_masked_; }
  bool masked(std::uint16_t vector) const noexcept;
  bool pending(std::uint16_t vector) const noexcept;
  MsiMessage message(std::uint16_t vector) const noexcept;

  void table_read(std::uint64_t offset, std::span<std::uint8_t> data) const noexcept;
  void table_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept;
  void pba_read(std::uint64_t offset, std::span<std::uint8_t> data) const noexcept;

  // Raises `vector`: delivered, or left pending while masked. False when
  // MSI-X is disabled or the vector does not exist (nothing happened).
  bool signal(std::uint16_t vector) noexcept;

  // Power-on: disabled, every entry masked and zero, nothing pending (the
  // capability bytes are reset with the ConfigSpace).
  void reset() noexcept;

 private:
  void deliver_pending() noexcept;
  void set_pending(std::uint16_t vector, bool on) noexcept;

  MsiSink& sink_;
  const unsigned table_bar_, pba_bar_;
  const std::uint32_t table_offset_, pba_offset_;
  std::vector<std::uint32_t> entries_;  // four dwords per vector
  std::vector<std::uint64_t> pending_;  // the PBA
  std::uint8_t capability_ = 0;
  bool enabled_ = false;
  bool function_masked_ = false;
};

}  // namespace vmm::devices::pci
