// Page tables for the Linux 64-bit entry, and a walker to check them.
//
// The boot protocol wants the kernel, zero page and command line identity
// mapped; mapping all of 0-4 GiB in 2 MiB pages covers those wherever they
// land, plus the initrd and the MMIO hole, with six pages of tables.
#pragma once

#include <cstdint>
#include <optional>

#include "devices/guest_memory.h"

namespace vmm::boot {

inline constexpr std::uint64_t kIdentityMappedLimit = 0x1'0000'0000;

// Writes PML4, PDPT and page directories at the layout addresses and returns
// the value for CR3. Throws vmm::Error if guest RAM does not cover them.
std::uint64_t write_identity_page_tables(devices::GuestMemory& memory);

// Translates `virtual_address` through the 4-level tables at `cr3` (1 GiB,
// 2 MiB and 4 KiB pages). nullopt when a level is not present, a table lies
// outside guest RAM, or the address is not canonical. Never throws, so it is
// also safe on tables a guest wrote.
std::optional<std::uint64_t> translate(const devices::GuestMemory& memory, std::uint64_t cr3,
                                       std::uint64_t virtual_address) noexcept;

}  // namespace vmm::boot
