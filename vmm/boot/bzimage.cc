#include "vmm/boot/bzimage.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "devices/error.h"
#include "vmm/boot/e820.h"
#include "vmm/boot/gdt.h"
#include "vmm/boot/initrd.h"
#include "vmm/boot/layout.h"
#include "vmm/boot/page_tables.h"

namespace vmm::boot {

namespace abi = linux_abi;

namespace {

std::string protocol_string(std::uint16_t version) {
  return fmt::format("{}.{:02}", version >> 8, version & 0xFF);
}

// Where the protected-mode kernel goes: its preferred address if init_size
// fits there, otherwise (relocatable kernels only) the lowest address above
// 1 MiB that honours its minimum alignment.
std::uint64_t choose_load_address(const BzImageHeader& bz, std::uint64_t span, std::uint64_t ram_end,
                                  const ImageFile& file) {
  const abi::SetupHeader& h = bz.header;
  const std::uint64_t preferred = h.pref_address;
  if (preferred >= layout::kHighMemoryStart && preferred <= ram_end && span <= ram_end - preferred) {
    return preferred;
  }
  if (h.relocatable_kernel) {
    const unsigned alignment_bits = h.min_alignment < 32 ? h.min_alignment : 21;
    const std::uint64_t address = layout::align_up(layout::kHighMemoryStart, std::uint64_t{1} << alignment_bits);
    if (address <= ram_end && span <= ram_end - address) return address;
  }
  file.fail(fmt::format(
      "the kernel needs {} MiB (init_size) at {:#x}{}, but guest RAM below 4 GiB ends at {:#x} ({} MiB); "
      "give the guest more memory",
      (span + (1 << 20) - 1) >> 20, preferred, h.relocatable_kernel ? " or above 1 MiB" : "", ram_end,
      ram_end >> 20));
}

void write_or_fail(devices::GuestMemory& memory, std::uint64_t address, std::span<const std::uint8_t> bytes,
                   std::string_view what) {
  if (!memory.write(address, bytes)) {
    throw Error(fmt::format("guest RAM does not cover the {} at [{:#x}, {:#x})", what, address,
                            address + bytes.size()));
  }
}

}  // namespace

bool has_setup_header(std::span<const std::uint8_t> image) noexcept {
  std::uint32_t magic = 0;
  if (image.size() < abi::kHeaderMagicOffset + sizeof(magic)) return false;
  std::memcpy(&magic, image.data() + abi::kHeaderMagicOffset, sizeof(magic));
  return magic == abi::kHeaderMagic;
}

BzImageHeader parse_bzimage(std::span<const std::uint8_t> image, const ImageFile& file) {
  // SetupHeader is packed: its fields are passed to fmt by value (unsigned{})
  // so that no reference ever binds to a misaligned member.
  BzImageHeader bz{};
  constexpr std::uint64_t kHeaderEnd = abi::kSetupHeaderOffset + sizeof(abi::SetupHeader);
  if (image.size() < kHeaderEnd) {
    file.fail(fmt::format("truncated bzImage: {} bytes, too short to hold a setup header", image.size()));
  }
  std::memcpy(&bz.header, image.data() + abi::kSetupHeaderOffset, sizeof(bz.header));
  const abi::SetupHeader& h = bz.header;

  if (h.boot_flag != abi::kBootFlag) {
    file.fail(fmt::format("not a bzImage: boot sector signature at 0x1FE is {:#06x}, expected 0xaa55",
                          unsigned{h.boot_flag}));
  }
  if (h.header != abi::kHeaderMagic) file.fail("not a bzImage: no 'HdrS' setup header at 0x202");
  if (h.version < abi::kMinimumProtocol) {
    file.fail(fmt::format("boot protocol {} is too old; the 64-bit entry needs protocol {} or newer (Linux 3.8+)",
                          protocol_string(h.version), protocol_string(abi::kMinimumProtocol)));
  }
  if (!(h.xloadflags & abi::kXlfKernel64)) {
    file.fail("the kernel has no 64-bit entry point (XLF_KERNEL_64 is clear in xloadflags); "
              "a 64-bit x86 kernel is required");
  }
  if (!(h.loadflags & abi::kLoadedHigh)) {
    file.fail("is a zImage (LOADED_HIGH clear); only bzImage kernels are supported");
  }

  // The header's length is given by the jump at 0x200: a short jump (0xEB,
  // offset) from 0x202 over the header. Everything up to its end is copied
  // into the zero page, including fields newer than this loader.
  const std::uint64_t declared_end = abi::kJumpOffset + 2 + image[abi::kJumpOffset + 1];
  if (declared_end < abi::kMinimumHeaderEnd) {
    file.fail(fmt::format("invalid setup header: the jump at 0x200 ends it at {:#x}, before the protocol 2.12 "
                          "fields (which end at {:#x})",
                          declared_end, abi::kMinimumHeaderEnd));
  }
  bz.header_size =
      std::min<std::uint64_t>({declared_end, abi::kMaximumHeaderEnd, image.size()}) - abi::kSetupHeaderOffset;

  const std::uint64_t setup_sects = h.setup_sects == 0 ? abi::kDefaultSetupSects : h.setup_sects;
  bz.setup_size = (setup_sects + 1) * abi::kSectorSize;
  if (bz.setup_size >= image.size()) {
    file.fail(fmt::format("truncated bzImage: the setup code ({} bytes) leaves no kernel in the {}-byte file",
                          bz.setup_size, image.size()));
  }
  bz.kernel_size = image.size() - bz.setup_size;
  // syssize counts 16-byte paragraphs, rounded up.
  const std::uint64_t declared_kernel = std::uint64_t{h.syssize} * 16;
  if (declared_kernel > bz.kernel_size + 15) {
    file.fail(fmt::format("truncated bzImage: the setup header declares {} bytes of kernel, the file holds {}",
                          declared_kernel, bz.kernel_size));
  }
  if (h.relocatable_kernel && (h.kernel_alignment == 0 || (h.kernel_alignment & (h.kernel_alignment - 1)))) {
    file.fail(fmt::format("invalid setup header: kernel_alignment {:#x} is not a power of two",
                          unsigned{h.kernel_alignment}));
  }
  return bz;
}

BootImage load_bzimage(devices::GuestMemory& memory, const ImageFile& file, std::span<const std::uint8_t> image,
                       const KernelArgs& args) {
  const BzImageHeader bz = parse_bzimage(image, file);
  const abi::SetupHeader& h = bz.header;
  const std::uint64_t ram_end = low_ram_end(memory);

  // The cmdline_size limit excludes the terminating NUL.
  const std::uint64_t cmdline_limit = std::min<std::uint64_t>(h.cmdline_size, layout::kCmdlineCapacity - 1);
  if (args.cmdline.size() > cmdline_limit) {
    file.fail(fmt::format("the command line is {} bytes; this kernel accepts at most {}", args.cmdline.size(),
                          cmdline_limit));
  }
  if (args.cmdline.find('\0') != std::string_view::npos) throw Error("the kernel command line contains a NUL byte");

  const std::uint64_t span = std::max<std::uint64_t>(h.init_size, bz.kernel_size);
  const std::uint64_t load_address = choose_load_address(bz, span, ram_end, file);
  write_or_fail(memory, load_address, image.subspan(bz.setup_size), "kernel");

  BootImage result;
  result.format = KernelFormat::bzimage;
  result.boot_protocol = h.version;
  result.kernel = {load_address, span};

  if (args.initrd) {
    // initrd_addr_max is the highest address the initrd may occupy.
    const std::uint64_t ceiling = std::min<std::uint64_t>(std::uint64_t{h.initrd_addr_max} + 1, ram_end);
    result.initrd = load_initrd(memory, *args.initrd, ceiling, result.kernel);
  }

  std::vector<std::uint8_t> cmdline(args.cmdline.begin(), args.cmdline.end());
  cmdline.push_back(0);
  write_or_fail(memory, layout::kCmdlineAddress, cmdline, "kernel command line");
  result.cmdline = {layout::kCmdlineAddress, cmdline.size()};

  abi::BootParams params{};
  // The kernel reads its own setup header back from the zero page, so it is
  // copied whole, including fields this loader does not know.
  std::memcpy(reinterpret_cast<std::uint8_t*>(&params) + abi::kSetupHeaderOffset,
              image.data() + abi::kSetupHeaderOffset, bz.header_size);
  params.hdr.type_of_loader = abi::kLoaderTypeUndefined;
  params.hdr.loadflags |= abi::kCanUseHeap;
  params.hdr.heap_end_ptr = abi::kHeapEndPtr;
  params.hdr.vid_mode = abi::kVidModeNormal;
  params.hdr.code32_start = static_cast<std::uint32_t>(load_address);
  params.hdr.cmd_line_ptr = static_cast<std::uint32_t>(layout::kCmdlineAddress);
  params.hdr.setup_data = 0;
  if (result.initrd) {
    params.hdr.ramdisk_image = static_cast<std::uint32_t>(result.initrd->address);
    params.ext_ramdisk_image = static_cast<std::uint32_t>(result.initrd->address >> 32);
    params.hdr.ramdisk_size = static_cast<std::uint32_t>(result.initrd->size);
    params.ext_ramdisk_size = static_cast<std::uint32_t>(result.initrd->size >> 32);
  }
  if (h.version >= abi::kAcpiRsdpProtocol) params.acpi_rsdp_addr = args.rsdp;
  if (args.memory_map.size() > abi::kE820MaxEntries) {
    throw Error(fmt::format("the memory map has {} entries; the zero page holds {}", args.memory_map.size(),
                            abi::kE820MaxEntries));
  }
  params.e820_entries = static_cast<std::uint8_t>(args.memory_map.size());
  for (std::size_t i = 0; i < args.memory_map.size(); ++i) {
    const E820Entry& entry = args.memory_map[i];
    params.e820_table[i] = {entry.address, entry.size, static_cast<std::uint32_t>(entry.type)};
  }
  if (!memory.write_obj(layout::kZeroPageAddress, params)) {
    throw Error(fmt::format("guest RAM does not cover the zero page at {:#x}", layout::kZeroPageAddress));
  }
  result.boot_info = layout::kZeroPageAddress;

  EntryState& entry = result.entry;
  entry.mode = EntryMode::linux64;
  gdt::install(memory, entry);
  entry.cr3 = write_identity_page_tables(memory);
  entry.cr0 = kCr0Pe | kCr0Et | kCr0Pg;
  entry.cr4 = kCr4Pae;
  entry.efer = kEferLme | kEferLma;
  entry.rip = load_address + abi::kEntry64Offset;
  entry.rsi = layout::kZeroPageAddress;
  result.entry_point = entry.rip;
  result.memory_map.assign(args.memory_map.begin(), args.memory_map.end());
  return result;
}

}  // namespace vmm::boot
