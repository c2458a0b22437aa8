// ELF kernels entered through the PVH boot ABI: PT_LOAD segments go to their
// physical addresses, the entry point comes from the Xen PHYS32_ENTRY note,
// and the vCPU starts in flat 32-bit protected mode, paging off, with EBX
// pointing at an hvm_start_info (version 1) that lists the command line, the
// initrd as module 0, the memory map and the RSDP.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "devices/guest_memory.h"
#include "vmm/boot/boot_image.h"
#include "vmm/boot/image_file.h"

namespace vmm::boot {

bool has_elf_magic(std::span<const std::uint8_t> image) noexcept;

struct ElfSegment {
  std::uint64_t file_offset = 0;
  std::uint64_t physical_address = 0;
  std::uint64_t file_size = 0;
  std::uint64_t memory_size = 0;
};

struct PvhElf {
  bool is_64bit = false;
  std::uint64_t elf_entry = 0;
  // From the PHYS32_ENTRY note; this, not elf_entry, is where PVH starts.
  std::uint32_t pvh_entry = 0;
  std::vector<ElfSegment> segments;  // PT_LOAD with memory_size > 0
};

// Validates the ELF header, program headers and PT_LOAD segments against
// the file and guest RAM, and finds the PVH entry note. Throws vmm::Error
// (naming `file`) for anything malformed, an ELF without the PVH note, or a
// segment outside guest RAM.
PvhElf parse_pvh_elf(std::span<const std::uint8_t> image, const ImageFile& file,
                     const devices::GuestMemory& memory);

// Loads the segments (zeroing each one's tail beyond its file bytes), then
// the command line, initrd, memory map and start_info, and sets up entry.
BootImage load_pvh(devices::GuestMemory& memory, const ImageFile& file, std::span<const std::uint8_t> image,
                   const KernelArgs& args);

}  // namespace vmm::boot
