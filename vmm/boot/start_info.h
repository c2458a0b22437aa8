// The PVH boot ABI's start-of-day structures (Xen public header
// arch-x86/hvm/start_info.h, version 1): the guest finds them through EBX.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vmm::boot::pvh_abi {

// "xEn3" with the 0x80 bit of the "E" set.
inline constexpr std::uint32_t kStartMagic = 0x336EC578;
// Version 1 adds the memory map; without it Linux asks the (absent) Xen
// hypervisor for one.
inline constexpr std::uint32_t kStartInfoVersion = 1;

// The ELF note that marks a PVH-capable image and carries its 32-bit
// physical entry point.
inline constexpr std::uint32_t kElfNotePhys32Entry = 18;
inline constexpr char kElfNoteName[] = "Xen";

struct StartInfo {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t flags;
  std::uint32_t nr_modules;
  std::uint64_t modlist_paddr;
  std::uint64_t cmdline_paddr;
  std::uint64_t rsdp_paddr;
  std::uint64_t memmap_paddr;
  std::uint32_t memmap_entries;
  std::uint32_t reserved;
};

struct ModlistEntry {
  std::uint64_t paddr;
  std::uint64_t size;
  std::uint64_t cmdline_paddr;
  std::uint64_t reserved;
};

struct MemmapEntry {
  std::uint64_t addr;
  std::uint64_t size;
  std::uint32_t type;  // E820 type codes
  std::uint32_t reserved;
};

static_assert(offsetof(StartInfo, nr_modules) == 12);
static_assert(offsetof(StartInfo, modlist_paddr) == 16);
static_assert(offsetof(StartInfo, cmdline_paddr) == 24);
static_assert(offsetof(StartInfo, rsdp_paddr) == 32);
static_assert(offsetof(StartInfo, memmap_paddr) == 40);
static_assert(offsetof(StartInfo, memmap_entries) == 48);
static_assert(sizeof(StartInfo) == 56);
static_assert(sizeof(ModlistEntry) == 32);
static_assert(offsetof(MemmapEntry, type) == 16);
static_assert(sizeof(MemmapEntry) == 24);

}  // namespace vmm::boot::pvh_abi
