#include "devices/guest_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <string>
#include <utility>

#include "devices/error.h"

namespace vmm::devices {

GuestMemory GuestMemory::allocate(std::uint64_t size) {
  constexpr std::uint64_t kPage = 4096;
  if (size == 0 || size % kPage != 0) {
    throw Error("guest memory size must be a positive multiple of 4 KiB, got " + std::to_string(size));
  }
  GuestMemory memory;
  const std::uint64_t low = std::min(size, kMmioHoleStart);
  const std::uint64_t high = size - low;
  auto map = [&](std::uint64_t guest_address, std::uint64_t length) {
    // MAP_NORESERVE: a guest gets pages only as it touches them, so a 64 MiB
    // guest that uses 2 MiB costs 2 MiB.
    void* host = ::mmap(nullptr, length, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (host == MAP_FAILED) {
      throw_errno("cannot map " + std::to_string(length >> 20) + " MiB of guest memory");
    }
    ::madvise(host, length, MADV_DONTDUMP);
    memory.regions_.push_back({guest_address, length, static_cast<std::uint8_t*>(host)});
  };
  map(0, low);
  if (high > 0) map(kHighRamStart, high);
  memory.size_ = size;
  return memory;
}

GuestMemory::~GuestMemory() { unmap(); }

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : regions_(std::exchange(other.regions_, {})), size_(std::exchange(other.size_, 0)) {}

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
  if (this != &other) {
    unmap();
    regions_ = std::exchange(other.regions_, {});
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void GuestMemory::unmap() noexcept {
  for (const MemoryRegion& region : regions_) ::munmap(region.host, region.size);
  regions_.clear();
  size_ = 0;
}

std::optional<std::span<std::uint8_t>> GuestMemory::slice(std::uint64_t address,
                                                          std::uint64_t length) const noexcept {
  for (const MemoryRegion& region : regions_) {
    // Written so that no sum can overflow, whatever the guest supplied.
    if (address >= region.guest_address && address - region.guest_address <= region.size &&
        length <= region.size - (address - region.guest_address)) {
      return std::span<std::uint8_t>(region.host + (address - region.guest_address), length);
    }
  }
  return std::nullopt;
}

bool GuestMemory::read(std::uint64_t address, std::span<std::uint8_t> out) const noexcept {
  auto view = slice(address, out.size());
  if (!view) return false;
  if (!out.empty()) std::memcpy(out.data(), view->data(), out.size());  // memcpy(nullptr, ..., 0) is UB
  return true;
}

bool GuestMemory::write(std::uint64_t address, std::span<const std::uint8_t> in) noexcept {
  auto view = slice(address, in.size());
  if (!view) return false;
  if (!in.empty()) std::memcpy(view->data(), in.data(), in.size());
  return true;
}

void GuestMemory::discard() noexcept {
  // MADV_DONTNEED on private anonymous memory drops the pages; the next touch
  // maps a fresh zero page.
  for (const MemoryRegion& region : regions_) ::madvise(region.host, region.size, MADV_DONTNEED);
}

}  // namespace vmm::devices
