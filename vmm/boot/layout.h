// Where the boot structures live in guest-physical memory.
//
// Everything the firmware would own sits below 1 MiB, in the places a PC
// guest expects, so that the kernel image (at 1 MiB or higher) can never
// overlap it:
//
//   0x0000_0000  real-mode IVT and BIOS data area (left alone, usable RAM)
//   0x0000_1000  GDT used at entry (both entry modes)
//   0x0000_5000  PVH memory map (hvm_memmap_table_entry[])
//   0x0000_6000  PVH hvm_start_info, module list right behind it
//   0x0000_7000  Linux zero page (struct boot_params)
//   0x0000_9000  page tables for the 64-bit entry: PML4, PDPT, 4 PDs
//   0x0002_0000  kernel command line
//   0x0009_FC00  --- reserved from here to 1 MiB: EBDA, VGA, option ROMs ---
//   0x000E_0000  ACPI tables, RSDP first (inside the legacy scan window)
//   0x0010_0000  1 MiB: start of "high" memory, kernels load here or above
//
// Kernels load at 1 MiB or above: a bzImage at its pref_address (a
// relocatable one lower down when that does not fit), an ELF at its
// segments' physical addresses. The initrd goes to the highest page-aligned
// place below the top of low RAM (and, for a bzImage, below
// initrd_addr_max) that does not overlap the kernel's range, or right
// below the kernel when nothing above it is free (initrd.h).
#pragma once

#include <cstdint>

namespace vmm::boot::layout {

inline constexpr std::uint64_t kPageSize = 0x1000;

inline constexpr std::uint64_t kGdtAddress = 0x1000;

inline constexpr std::uint64_t kPvhMemmapAddress = 0x5000;
inline constexpr std::uint64_t kPvhMemmapSize = 0x1000;
inline constexpr std::uint64_t kStartInfoAddress = 0x6000;
// Behind the 56-byte hvm_start_info, on a 64-byte boundary.
inline constexpr std::uint64_t kPvhModlistAddress = kStartInfoAddress + 0x40;

inline constexpr std::uint64_t kZeroPageAddress = 0x7000;

// PML4, PDPT and the four page directories that map 0-4 GiB in 2 MiB pages.
inline constexpr std::uint64_t kPml4Address = 0x9000;
inline constexpr std::uint64_t kPdptAddress = 0xA000;
inline constexpr std::uint64_t kPageDirectoryAddress = 0xB000;
inline constexpr std::uint64_t kPageDirectoryCount = 4;

// The protocol allows the command line anywhere below 0xA0000 for a 32-bit
// pointer; 64 KiB is far more than any kernel accepts (Linux: 2 KiB).
inline constexpr std::uint64_t kCmdlineAddress = 0x20000;
inline constexpr std::uint64_t kCmdlineCapacity = 0x10000;  // including the NUL

// Extended BIOS data area, VGA memory and the ROM area: reserved in the
// memory map so the guest never treats them as free RAM.
inline constexpr std::uint64_t kFirmwareReservedStart = 0x9FC00;
inline constexpr std::uint64_t kHighMemoryStart = 0x100000;

// ACPI tables: the RSDP first, 16-byte aligned, inside 0xE0000-0xFFFFF where
// an OS that ignores the boot protocol's pointer scans for it.
inline constexpr std::uint64_t kAcpiAddress = 0xE0000;
inline constexpr std::uint64_t kAcpiEnd = 0x100000;
inline constexpr std::uint64_t kRsdpAddress = kAcpiAddress;

// Default kernel load address when a kernel does not ask for another one.
inline constexpr std::uint64_t kKernelDefaultLoadAddress = kHighMemoryStart;

// The smallest guest that has RAM under every structure above.
inline constexpr std::uint64_t kMinimumGuestMemory = kHighMemoryStart;

inline constexpr std::uint64_t kInitrdAlignment = kPageSize;

// Every structure below 1 MiB ends before the next begins; a change to the
// constants that breaks this fails the build rather than a guest.
static_assert(kGdtAddress + kPageSize <= kPvhMemmapAddress);
static_assert(kPvhMemmapAddress + kPvhMemmapSize <= kStartInfoAddress);
static_assert(kStartInfoAddress + kPageSize <= kZeroPageAddress);
static_assert(kZeroPageAddress + kPageSize <= kPml4Address);
static_assert(kPml4Address + kPageSize <= kPdptAddress);
static_assert(kPdptAddress + kPageSize <= kPageDirectoryAddress);
static_assert(kPageDirectoryAddress + kPageDirectoryCount * kPageSize <= kCmdlineAddress);
static_assert(kCmdlineAddress + kCmdlineCapacity <= kFirmwareReservedStart);
static_assert(kFirmwareReservedStart <= kAcpiAddress && kAcpiEnd == kHighMemoryStart);

constexpr std::uint64_t align_down(std::uint64_t value, std::uint64_t alignment) {
  return value & ~(alignment - 1);
}
constexpr std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) & ~(alignment - 1);
}

}  // namespace vmm::boot::layout
