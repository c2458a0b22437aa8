#include "vmm/boot/e820.h"

#include <algorithm>

#include "devices/pci/pci_root.h"
#include "vmm/boot/layout.h"

namespace vmm::boot {

namespace {

struct Range {
  std::uint64_t start;
  std::uint64_t end;
};

// Sorted by address. The firmware area holds the ACPI tables; the ECAM is
// listed because Linux uses it only when the firmware reserved it.
constexpr Range kReservedRanges[] = {
    {layout::kFirmwareReservedStart, layout::kHighMemoryStart},
    {devices::pci::PciRoot::kEcamBase, devices::pci::PciRoot::kEcamBase + devices::pci::PciRoot::kEcamSize},
};

void add(std::vector<E820Entry>& map, std::uint64_t start, std::uint64_t end, E820Type type) {
  if (end > start) map.push_back({start, end - start, type});
}

}  // namespace

std::vector<E820Entry> build_e820(const devices::GuestMemory& memory) {
  std::vector<E820Entry> map;
  for (const devices::MemoryRegion& region : memory.regions()) {
    // Cut the reserved ranges out of this region; what is left is RAM.
    std::uint64_t cursor = region.guest_address;
    const std::uint64_t region_end = region.guest_address + region.size;
    for (const Range& reserved : kReservedRanges) {
      if (reserved.end <= cursor || reserved.start >= region_end) continue;
      add(map, cursor, reserved.start, E820Type::ram);
      cursor = std::max(cursor, reserved.end);
    }
    add(map, cursor, region_end, E820Type::ram);
  }
  // The reserved ranges are listed whether or not RAM backs them: a guest
  // must not place anything there.
  for (const Range& reserved : kReservedRanges) add(map, reserved.start, reserved.end, E820Type::reserved);
  std::sort(map.begin(), map.end(),
            [](const E820Entry& a, const E820Entry& b) { return a.address < b.address; });
  return map;
}

std::uint64_t low_ram_end(const devices::GuestMemory& memory) noexcept {
  std::uint64_t end = 0;
  for (const devices::MemoryRegion& region : memory.regions()) {
    if (region.guest_address < devices::GuestMemory::kHighRamStart) {
      end = std::max(end, std::min(region.guest_address + region.size, devices::GuestMemory::kHighRamStart));
    }
  }
  return end;
}

}  // namespace vmm::boot
