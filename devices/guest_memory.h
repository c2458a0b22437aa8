// Guest RAM: anonymous host mappings plus bounds-checked access by guest
// physical address. A guest-supplied address is never trusted: every access
// is checked against the memory map and fails (returns false / nullopt)
// rather than touching anything outside guest RAM.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

namespace vmm::devices {

struct MemoryRegion {
  std::uint64_t guest_address;
  std::uint64_t size;
  std::uint8_t* host;
};

class GuestMemory {
 public:
  // Below-4 GiB RAM ends where the 32-bit MMIO hole begins (IOAPIC, HPET,
  // LAPIC and PCI live above it); RAM beyond that continues at 4 GiB.
  static constexpr std::uint64_t kMmioHoleStart = 0xC000'0000;
  static constexpr std::uint64_t kHighRamStart = 0x1'0000'0000;

  // Maps `size` bytes (a multiple of 4 KiB, > 0) of zeroed, lazily committed
  // memory. Throws vmm::Error when the size is invalid or cannot be mapped.
  static GuestMemory allocate(std::uint64_t size);

  GuestMemory() = default;
  ~GuestMemory();
  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&& other) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  std::span<const MemoryRegion> regions() const noexcept { return regions_; }
  std::uint64_t size() const noexcept { return size_; }

  // A view of [address, address + length) when it lies inside one region.
  std::optional<std::span<std::uint8_t>> slice(std::uint64_t address, std::uint64_t length) const noexcept;
  bool contains(std::uint64_t address, std::uint64_t length) const noexcept {
    return slice(address, length).has_value();
  }

  bool read(std::uint64_t address, std::span<std::uint8_t> out) const noexcept;
  bool write(std::uint64_t address, std::span<const std::uint8_t> in) noexcept;

  template <typename T>
  bool read_obj(std::uint64_t address, T& out) const noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    return read(address, std::span(reinterpret_cast<std::uint8_t*>(&out), sizeof(T)));
  }
  template <typename T>
  bool write_obj(std::uint64_t address, const T& in) noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    return write(address, std::span(reinterpret_cast<const std::uint8_t*>(&in), sizeof(T)));
  }

  // Returns every page to the host and leaves RAM reading as zeroes (used by
  // VM reset before the images are loaded again).
  void discard() noexcept;

 private:
  void unmap() noexcept;

  std::vector<MemoryRegion> regions_;
  std::uint64_t size_ = 0;
};

}  // namespace vmm::devices
