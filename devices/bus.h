// Address-space dispatch for port I/O and MMIO exits.
//
// A bus is built at VM set-up and is read-only afterwards, so vCPU threads
// look it up concurrently without locks; each device guards its own state.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace vmm::devices {

// A device's register window. `offset` is relative to the base the device was
// inserted at; data.size() is the access width (1, 2, 4 or 8; 1..8 for MMIO
// from odd instructions). Implementations never throw and never trust the
// guest: unknown registers read as all ones and ignore writes.
class BusDevice {
 public:
  virtual ~BusDevice() = default;
  virtual void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept = 0;
  virtual void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept = 0;
};

class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Maps [base, base + length) to `device` (not owned; must outlive the bus).
  // Throws vmm::Error on an empty or overlapping range: a set-up bug.
  void insert(std::uint64_t base, std::uint64_t length, BusDevice& device, std::string name);

  // Dispatch. Return false when no device covers the whole access; then a
  // read fills `data` with 0xff and a write is dropped (the caller logs it,
  // rate-limited).
  bool read(std::uint64_t address, std::span<std::uint8_t> data) const noexcept;
  bool write(std::uint64_t address, std::span<const std::uint8_t> data) const noexcept;

  struct Range {
    std::uint64_t base;
    std::uint64_t length;
    BusDevice* device;
    std::string name;
  };

 private:
  const Range* find(std::uint64_t address, std::uint64_t size) const noexcept;

  std::string name_;
  std::vector<Range> ranges_;  // sorted by base, non-overlapping
};

// Little-endian helpers for register access of any width.
inline std::uint64_t load_le(std::span<const std::uint8_t> data) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < data.size() && i < 8; ++i) value |= std::uint64_t{data[i]} << (8 * i);
  return value;
}
inline void store_le(std::span<std::uint8_t> data, std::uint64_t value) noexcept {
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = i < 8 ? static_cast<std::uint8_t>(value >> (8 * i)) : 0;
}

}  // namespace vmm::devices
