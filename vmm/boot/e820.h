// The guest's physical memory map, as handed to Linux in boot_params and to
// PVH guests as the start_info memmap. One list, built once per load, so
// both entry paths describe memory identically.
#pragma once

#include <cstdint>
#include <vector>

#include "devices/guest_memory.h"

namespace vmm::boot {

// The type codes are the BIOS INT 15h/E820 ones, which the PVH memmap reuses.
enum class E820Type : std::uint32_t {
  ram = 1,
  reserved = 2,
  acpi = 3,
  nvs = 4,
  unusable = 5,
};

struct E820Entry {
  std::uint64_t address = 0;
  std::uint64_t size = 0;
  E820Type type = E820Type::ram;

  std::uint64_t end() const noexcept { return address + size; }
  friend bool operator==(const E820Entry&, const E820Entry&) = default;
};

// RAM is every guest memory region minus the firmware area
// [layout::kFirmwareReservedStart, 1 MiB), which is listed as reserved (it
// holds the ACPI tables). Sorted by address, no overlaps, no empty entries.
std::vector<E820Entry> build_e820(const devices::GuestMemory& memory);

// The highest address + 1 of RAM below 4 GiB (where the MMIO hole begins, or
// the end of RAM in a smaller guest).
std::uint64_t low_ram_end(const devices::GuestMemory& memory) noexcept;

}  // namespace vmm::boot
