#include "vmm/boot/page_tables.h"

#include <array>

#include <fmt/format.h>

#include "devices/error.h"
#include "vmm/boot/layout.h"

namespace vmm::boot {

namespace {

constexpr std::uint64_t kPresent = 1ull << 0;
constexpr std::uint64_t kWritable = 1ull << 1;
constexpr std::uint64_t kPageSizeBit = 1ull << 7;
// Bits 51:12 of an entry hold the next table or the page frame.
constexpr std::uint64_t kAddressMask = 0x000F'FFFF'FFFF'F000ull;
constexpr std::uint64_t kEntriesPerTable = 512;
constexpr std::uint64_t kTwoMiB = 2ull << 20;
constexpr std::uint64_t kOneGiB = 1ull << 30;

using Table = std::array<std::uint64_t, kEntriesPerTable>;

void write_table(devices::GuestMemory& memory, std::uint64_t address, const Table& table) {
  if (!memory.write_obj(address, table)) {
    throw Error(fmt::format("guest memory does not cover the boot page tables at {:#x}", address));
  }
}

}  // namespace

std::uint64_t write_identity_page_tables(devices::GuestMemory& memory) {
  static_assert(layout::kPageDirectoryCount * kOneGiB == kIdentityMappedLimit);
  Table pml4{};
  pml4[0] = layout::kPdptAddress | kPresent | kWritable;
  Table pdpt{};
  for (std::uint64_t directory = 0; directory < layout::kPageDirectoryCount; ++directory) {
    const std::uint64_t directory_address = layout::kPageDirectoryAddress + directory * layout::kPageSize;
    pdpt[directory] = directory_address | kPresent | kWritable;
    Table pd{};
    for (std::uint64_t i = 0; i < kEntriesPerTable; ++i) {
      pd[i] = (directory * kOneGiB + i * kTwoMiB) | kPresent | kWritable | kPageSizeBit;
    }
    write_table(memory, directory_address, pd);
  }
  write_table(memory, layout::kPdptAddress, pdpt);
  write_table(memory, layout::kPml4Address, pml4);
  return layout::kPml4Address;
}

std::optional<std::uint64_t> translate(const devices::GuestMemory& memory, std::uint64_t cr3,
                                       std::uint64_t virtual_address) noexcept {
  // Bits 63:47 must all equal bit 47 with 4-level paging.
  const std::uint64_t upper = virtual_address >> 47;
  if (upper != 0 && upper != 0x1FFFF) return std::nullopt;

  std::uint64_t table = cr3 & kAddressMask;
  // Shift of the index field at PML4, PDPT, PD and PT level.
  constexpr unsigned kShifts[] = {39, 30, 21, 12};
  for (unsigned level = 0; level < 4; ++level) {
    const unsigned shift = kShifts[level];
    const std::uint64_t index = (virtual_address >> shift) & (kEntriesPerTable - 1);
    std::uint64_t entry = 0;
    if (!memory.read_obj(table + index * sizeof(entry), entry)) return std::nullopt;
    if (!(entry & kPresent)) return std::nullopt;
    // A large page at PDPT (1 GiB) or PD (2 MiB) level ends the walk.
    const bool large_page = (level == 1 || level == 2) && (entry & kPageSizeBit);
    if (large_page || level == 3) {
      const std::uint64_t page_mask = (1ull << shift) - 1;
      return ((entry & kAddressMask) & ~page_mask) | (virtual_address & page_mask);
    }
    table = entry & kAddressMask;
  }
  return std::nullopt;
}

}  // namespace vmm::boot
