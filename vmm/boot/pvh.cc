#include "vmm/boot/pvh.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include <fmt/format.h>

#include "devices/error.h"
#include "vmm/boot/e820.h"
#include "vmm/boot/gdt.h"
#include "vmm/boot/initrd.h"
#include "vmm/boot/layout.h"
#include "vmm/boot/start_info.h"

namespace vmm::boot {

namespace {

// More program headers than any kernel has; bounds the work on a bad file.
constexpr std::uint64_t kMaxProgramHeaders = 1024;

struct Elf32 {
  using Ehdr = Elf32_Ehdr;
  using Phdr = Elf32_Phdr;
  static constexpr unsigned char kClass = ELFCLASS32;
  static constexpr std::uint16_t kMachine = EM_386;
};
struct Elf64 {
  using Ehdr = Elf64_Ehdr;
  using Phdr = Elf64_Phdr;
  static constexpr unsigned char kClass = ELFCLASS64;
  static constexpr std::uint16_t kMachine = EM_X86_64;
};

// True when [offset, offset + length) lies inside a buffer of `size` bytes,
// without any sum that could overflow.
bool within(std::uint64_t offset, std::uint64_t length, std::uint64_t size) {
  return offset <= size && length <= size - offset;
}

template <typename T>
T load(std::span<const std::uint8_t> bytes, std::uint64_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

std::string describe_ram(const devices::GuestMemory& memory) {
  std::string ranges;
  for (const devices::MemoryRegion& region : memory.regions()) {
    if (!ranges.empty()) ranges += ", ";
    ranges += fmt::format("[{:#x}, {:#x})", region.guest_address, region.guest_address + region.size);
  }
  return ranges;
}

// Walks the notes of one PT_NOTE segment looking for the PVH entry.
std::optional<std::uint32_t> find_pvh_note(std::span<const std::uint8_t> notes, std::uint64_t alignment,
                                           const ImageFile& file) {
  constexpr std::uint64_t kNoteHeader = 12;  // namesz, descsz, type: 32 bits each in both classes
  std::uint64_t offset = 0;
  while (notes.size() - offset >= kNoteHeader) {
    const auto name_size = load<std::uint32_t>(notes, offset);
    const auto desc_size = load<std::uint32_t>(notes, offset + 4);
    const auto type = load<std::uint32_t>(notes, offset + 8);
    const std::uint64_t name_offset = offset + kNoteHeader;
    const std::uint64_t desc_offset = name_offset + layout::align_up(name_size, alignment);
    const std::uint64_t next = desc_offset + layout::align_up(desc_size, alignment);
    if (!within(name_offset, name_size, notes.size()) || !within(desc_offset, desc_size, notes.size())) {
      file.fail(fmt::format("malformed ELF note at offset {:#x} of a PT_NOTE segment", offset));
    }
    const std::string_view name(reinterpret_cast<const char*>(notes.data() + name_offset), name_size);
    // The name is NUL-terminated by convention; accept it without as well.
    const bool is_xen = name == std::string_view(pvh_abi::kElfNoteName, sizeof(pvh_abi::kElfNoteName)) ||
                        name == std::string_view(pvh_abi::kElfNoteName);
    if (is_xen && type == pvh_abi::kElfNotePhys32Entry) {
      std::uint64_t entry = 0;
      if (desc_size == 4) {
        entry = load<std::uint32_t>(notes, desc_offset);
      } else if (desc_size == 8) {
        entry = load<std::uint64_t>(notes, desc_offset);
      } else {
        file.fail(fmt::format("the PVH entry note has a {}-byte value; expected 4 or 8", desc_size));
      }
      if (entry > std::numeric_limits<std::uint32_t>::max()) {
        file.fail(fmt::format("the PVH entry point {:#x} is above 4 GiB; PVH enters in 32-bit mode", entry));
      }
      return static_cast<std::uint32_t>(entry);
    }
    if (next >= notes.size()) break;
    offset = next;
  }
  return std::nullopt;
}

template <typename Elf>
PvhElf parse(std::span<const std::uint8_t> image, const ImageFile& file, const devices::GuestMemory& memory) {
  using Ehdr = typename Elf::Ehdr;
  using Phdr = typename Elf::Phdr;
  if (image.size() < sizeof(Ehdr)) {
    file.fail(fmt::format("truncated ELF: {} bytes, too short for an ELF header", image.size()));
  }
  const auto header = load<Ehdr>(image, 0);
  if (header.e_type != ET_EXEC) {
    file.fail(fmt::format("ELF type {} is not an executable (ET_EXEC)", header.e_type));
  }
  if (header.e_machine != Elf::kMachine) {
    file.fail(fmt::format("ELF machine {} is not {}", header.e_machine,
                          Elf::kClass == ELFCLASS64 ? "x86-64 (62) for a 64-bit ELF" : "i386 (3) for a 32-bit ELF"));
  }
  if (header.e_version != EV_CURRENT) file.fail(fmt::format("unknown ELF version {}", header.e_version));
  if (header.e_phnum == 0 || header.e_phnum > kMaxProgramHeaders || header.e_phnum == PN_XNUM) {
    file.fail(fmt::format("ELF has {} program headers; expected 1 to {}", header.e_phnum, kMaxProgramHeaders));
  }
  if (header.e_phentsize != sizeof(Phdr)) {
    file.fail(fmt::format("ELF program header size is {}, expected {}", header.e_phentsize, sizeof(Phdr)));
  }
  if (!within(header.e_phoff, std::uint64_t{header.e_phnum} * sizeof(Phdr), image.size())) {
    file.fail("truncated ELF: the program header table runs past the end of the file");
  }

  PvhElf elf;
  elf.is_64bit = Elf::kClass == ELFCLASS64;
  elf.elf_entry = header.e_entry;
  std::optional<std::uint32_t> pvh_entry;
  for (unsigned index = 0; index < header.e_phnum; ++index) {
    const auto phdr = load<Phdr>(image, header.e_phoff + std::uint64_t{index} * sizeof(Phdr));
    if (phdr.p_type != PT_LOAD && phdr.p_type != PT_NOTE) continue;
    if (!within(phdr.p_offset, phdr.p_filesz, image.size())) {
      file.fail(fmt::format("truncated ELF: segment {} (file bytes [{:#x}, +{:#x})) runs past the end of the "
                            "{}-byte file",
                            index, phdr.p_offset, phdr.p_filesz, image.size()));
    }
    if (phdr.p_type == PT_NOTE) {
      if (!pvh_entry) {
        pvh_entry = find_pvh_note(image.subspan(phdr.p_offset, phdr.p_filesz), phdr.p_align == 8 ? 8 : 4, file);
      }
      continue;
    }
    if (phdr.p_filesz > phdr.p_memsz) {
      file.fail(fmt::format("ELF segment {} has more file bytes ({:#x}) than memory bytes ({:#x})", index,
                            phdr.p_filesz, phdr.p_memsz));
    }
    if (phdr.p_memsz == 0) continue;
    const std::uint64_t start = phdr.p_paddr;
    if (start < layout::kHighMemoryStart) {
      file.fail(fmt::format("ELF segment {} at physical {:#x} is below 1 MiB, where the boot structures live; "
                            "link the kernel at 1 MiB or higher",
                            index, start));
    }
    if (!memory.contains(start, phdr.p_memsz)) {
      const bool wraps = phdr.p_memsz > std::numeric_limits<std::uint64_t>::max() - start;
      file.fail(fmt::format("ELF segment {} at physical [{:#x}, {}) lies outside guest RAM {}; give the guest "
                            "more memory or check the kernel's link address",
                            index, start, wraps ? std::string("overflow") : fmt::format("{:#x}", start + phdr.p_memsz),
                            describe_ram(memory)));
    }
    elf.segments.push_back({phdr.p_offset, start, phdr.p_filesz, phdr.p_memsz});
  }

  if (!pvh_entry) {
    file.fail("the ELF has no PVH entry point: no Xen ELF note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY) in its "
              "PT_NOTE segments; boot a kernel built with PVH support (CONFIG_PVH) or its bzImage");
  }
  if (elf.segments.empty()) file.fail("the ELF has no loadable (PT_LOAD) segment");
  // Overlapping segments would be copied and zero-filled once each, so a
  // tiny file of many overlapping headers could cost headers x RAM of work
  // at every boot. Disjoint, the work is bounded by guest RAM (as QEMU,
  // which also refuses overlapping images). Real kernels never overlap.
  std::vector<ElfSegment> by_address = elf.segments;
  std::sort(by_address.begin(), by_address.end(),
            [](const ElfSegment& a, const ElfSegment& b) { return a.physical_address < b.physical_address; });
  for (std::size_t i = 1; i < by_address.size(); ++i) {
    const ElfSegment& before = by_address[i - 1];
    const ElfSegment& after = by_address[i];
    if (after.physical_address - before.physical_address < before.memory_size) {
      file.fail(fmt::format("ELF segments at physical [{:#x}, {:#x}) and [{:#x}, {:#x}) overlap; each guest byte "
                            "may belong to one loadable segment only",
                            before.physical_address, before.physical_address + before.memory_size,
                            after.physical_address, after.physical_address + after.memory_size));
    }
  }
  const bool entry_loaded = std::any_of(elf.segments.begin(), elf.segments.end(), [&](const ElfSegment& s) {
    return *pvh_entry >= s.physical_address && *pvh_entry - s.physical_address < s.memory_size;
  });
  if (!entry_loaded) {
    file.fail(fmt::format("the PVH entry point {:#x} lies outside every loadable segment", *pvh_entry));
  }
  elf.pvh_entry = *pvh_entry;
  return elf;
}

template <typename T>
void write_or_fail(devices::GuestMemory& memory, std::uint64_t address, const T& object, std::string_view what) {
  if (!memory.write_obj(address, object)) {
    throw Error(fmt::format("guest RAM does not cover the {} at {:#x}", what, address));
  }
}

}  // namespace

bool has_elf_magic(std::span<const std::uint8_t> image) noexcept {
  return image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0;
}

PvhElf parse_pvh_elf(std::span<const std::uint8_t> image, const ImageFile& file, const devices::GuestMemory& memory) {
  if (image.size() < EI_NIDENT || !has_elf_magic(image)) file.fail("not an ELF file (no \\x7fELF magic)");
  if (image[EI_DATA] != ELFDATA2LSB) file.fail("ELF is not little-endian; an x86 kernel is required");
  if (image[EI_VERSION] != EV_CURRENT) file.fail(fmt::format("unknown ELF version {}", image[EI_VERSION]));
  switch (image[EI_CLASS]) {
    case ELFCLASS64:
      return parse<Elf64>(image, file, memory);
    case ELFCLASS32:
      return parse<Elf32>(image, file, memory);
    default:
      file.fail(fmt::format("unknown ELF class {} (expected 1 for 32-bit or 2 for 64-bit)", image[EI_CLASS]));
  }
}

BootImage load_pvh(devices::GuestMemory& memory, const ImageFile& file, std::span<const std::uint8_t> image,
                   const KernelArgs& args) {
  const PvhElf elf = parse_pvh_elf(image, file, memory);

  const std::uint64_t cmdline_limit = layout::kCmdlineCapacity - 1;
  if (args.cmdline.size() > cmdline_limit) {
    file.fail(fmt::format("the command line is {} bytes; at most {} fit in the boot area", args.cmdline.size(),
                          cmdline_limit));
  }
  if (args.cmdline.find('\0') != std::string_view::npos) throw Error("the kernel command line contains a NUL byte");
  constexpr std::size_t kMemmapCapacity = layout::kPvhMemmapSize / sizeof(pvh_abi::MemmapEntry);
  if (args.memory_map.size() > kMemmapCapacity) {
    throw Error(fmt::format("the memory map has {} entries; the PVH memmap area holds {}", args.memory_map.size(),
                            kMemmapCapacity));
  }

  BootImage result;
  result.format = KernelFormat::pvh_elf;
  std::uint64_t lowest = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t highest = 0;
  for (const ElfSegment& segment : elf.segments) {
    // parse_pvh_elf checked that the whole segment is in one RAM region.
    std::span<std::uint8_t> destination = *memory.slice(segment.physical_address, segment.memory_size);
    std::memcpy(destination.data(), image.data() + segment.file_offset, segment.file_size);
    std::memset(destination.data() + segment.file_size, 0, segment.memory_size - segment.file_size);
    lowest = std::min(lowest, segment.physical_address);
    highest = std::max(highest, segment.physical_address + segment.memory_size);
  }
  result.kernel = {lowest, highest - lowest};

  if (args.initrd) result.initrd = load_initrd(memory, *args.initrd, low_ram_end(memory), result.kernel);

  std::vector<std::uint8_t> cmdline(args.cmdline.begin(), args.cmdline.end());
  cmdline.push_back(0);
  if (!memory.write(layout::kCmdlineAddress, cmdline)) {
    throw Error(fmt::format("guest RAM does not cover the command line at {:#x}", layout::kCmdlineAddress));
  }
  result.cmdline = {layout::kCmdlineAddress, cmdline.size()};

  std::vector<pvh_abi::MemmapEntry> memmap;
  for (const E820Entry& entry : args.memory_map) {
    memmap.push_back({entry.address, entry.size, static_cast<std::uint32_t>(entry.type), 0});
  }
  if (!memory.write(layout::kPvhMemmapAddress,
                    std::span(reinterpret_cast<const std::uint8_t*>(memmap.data()),
                              memmap.size() * sizeof(pvh_abi::MemmapEntry)))) {
    throw Error(fmt::format("guest RAM does not cover the PVH memory map at {:#x}", layout::kPvhMemmapAddress));
  }

  pvh_abi::StartInfo info{};
  info.magic = pvh_abi::kStartMagic;
  info.version = pvh_abi::kStartInfoVersion;
  info.cmdline_paddr = layout::kCmdlineAddress;
  info.rsdp_paddr = args.rsdp;
  info.memmap_paddr = layout::kPvhMemmapAddress;
  info.memmap_entries = static_cast<std::uint32_t>(memmap.size());
  if (result.initrd) {
    info.nr_modules = 1;
    info.modlist_paddr = layout::kPvhModlistAddress;
    const pvh_abi::ModlistEntry module{result.initrd->address, result.initrd->size, 0, 0};
    write_or_fail(memory, layout::kPvhModlistAddress, module, "PVH module list");
  }
  write_or_fail(memory, layout::kStartInfoAddress, info, "hvm_start_info");
  result.boot_info = layout::kStartInfoAddress;

  EntryState& entry = result.entry;
  entry.mode = EntryMode::pvh32;
  gdt::install(memory, entry);
  entry.cr0 = kCr0Pe | kCr0Et;
  entry.rip = elf.pvh_entry;
  entry.rbx = layout::kStartInfoAddress;
  result.entry_point = entry.rip;
  result.memory_map.assign(args.memory_map.begin(), args.memory_map.end());
  return result;
}

}  // namespace vmm::boot
