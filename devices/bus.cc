#include "devices/bus.h"

#include <algorithm>

#include "devices/error.h"

namespace vmm::devices {

void Bus::insert(std::uint64_t base, std::uint64_t length, BusDevice& device, std::string name) {
  if (length == 0 || base + length < base) {
    throw Error(name_ + ": invalid range for " + name);
  }
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), base,
                             [](const Range& r, std::uint64_t b) { return r.base < b; });
  if (it != ranges_.end() && it->base < base + length) {
    throw Error(name_ + ": " + name + " overlaps " + it->name);
  }
  if (it != ranges_.begin()) {
    const Range& prev = *std::prev(it);
    if (prev.base + prev.length > base) throw Error(name_ + ": " + name + " overlaps " + prev.name);
  }
  ranges_.insert(it, Range{base, length, &device, std::move(name)});
}

const Bus::Range* Bus::find(std::uint64_t address, std::uint64_t size) const noexcept {
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), address,
                             [](std::uint64_t a, const Range& r) { return a < r.base; });
  if (it == ranges_.begin()) return nullptr;
  const Range& range = *std::prev(it);
  const std::uint64_t offset = address - range.base;
  if (offset >= range.length || size > range.length - offset) return nullptr;
  return &range;
}

bool Bus::read(std::uint64_t address, std::span<std::uint8_t> data) const noexcept {
  if (const Range* range = find(address, data.size())) {
    range->device->read(address - range->base, data);
    return true;
  }
  std::fill(data.begin(), data.end(), std::uint8_t{0xff});
  return false;
}

bool Bus::write(std::uint64_t address, std::span<const std::uint8_t> data) const noexcept {
  if (const Range* range = find(address, data.size())) {
    range->device->write(address - range->base, data);
    return true;
  }
  return false;
}

}  // namespace vmm::devices
