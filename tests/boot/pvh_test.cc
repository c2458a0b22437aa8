// PVH loading with synthetic ELF images built by the test.
#include "vmm/boot/pvh.h"

#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>

#include "tests/boot/test_support.h"
#include "vmm/boot/gdt.h"
#include "vmm/boot/layout.h"
#include "vmm/boot/loader.h"
#include "vmm/boot/start_info.h"

namespace vmm::boot {
namespace {

using test::ElfSpec;
using test::expect_error;
using test::kMiB;
using test::read_guest;
using test::read_guest_bytes;

constexpr std::uint64_t kEntry = 0x100040;

ElfSpec two_segment_kernel(bool is_64bit) {
  ElfSpec spec;
  spec.is_64bit = is_64bit;
  spec.segments = {
      {0x100000, test::pattern(8192, 1), 8192},
      // data followed by bss
      {0x200000, test::pattern(4096, 2), 4096 + 12288},
  };
  spec.pvh_entry = kEntry;
  return spec;
}

struct PvhTest : ::testing::Test {
  test::TempDir dir;
  devices::GuestMemory memory = devices::GuestMemory::allocate(32 * kMiB);

  BootImage load_elf(const ElfSpec& spec, const std::string& cmdline = "",
                     std::optional<test::Bytes> initrd = std::nullopt) {
    BootConfig config;
    config.kernel = dir.write("kernel.elf", test::make_elf(spec));
    if (initrd) config.initrd = dir.write("initrd", *initrd);
    config.cmdline = cmdline;
    return load(memory, config);
  }

  void expect_load_error(const ElfSpec& spec, const std::vector<std::string>& fragments) {
    std::vector<std::string> all = fragments;
    all.push_back((dir.path() / "kernel.elf").string());
    expect_error([&] { load_elf(spec); }, all);
  }

  void check_loaded(const ElfSpec& spec, const BootImage& result, const test::Bytes& initrd,
                    const std::string& cmdline) {
    EXPECT_EQ(result.format, KernelFormat::pvh_elf);
    for (const test::ElfSegmentSpec& segment : spec.segments) {
      EXPECT_EQ(read_guest_bytes(memory, segment.paddr, segment.data.size()), segment.data);
      EXPECT_EQ(read_guest_bytes(memory, segment.paddr + segment.data.size(), segment.memsz - segment.data.size()),
                test::Bytes(segment.memsz - segment.data.size(), 0))
          << "bss is zeroed";
    }
    EXPECT_EQ(result.kernel, (GuestRange{0x100000, 0x200000 + 16384 - 0x100000}));

    const auto info = read_guest<pvh_abi::StartInfo>(memory, layout::kStartInfoAddress);
    EXPECT_EQ(info.magic, 0x336EC578u);
    EXPECT_EQ(info.version, 1u);
    EXPECT_EQ(info.flags, 0u);
    EXPECT_EQ(test::read_guest_string(memory, info.cmdline_paddr), cmdline);
    EXPECT_EQ(info.rsdp_paddr, layout::kRsdpAddress);
    ASSERT_EQ(info.nr_modules, 1u);
    const auto module = read_guest<pvh_abi::ModlistEntry>(memory, info.modlist_paddr);
    EXPECT_EQ(module.paddr % 4096, 0u);
    EXPECT_EQ(module.paddr, layout::align_down(32 * kMiB - initrd.size(), 4096));
    EXPECT_EQ(module.size, initrd.size());
    EXPECT_EQ(module.cmdline_paddr, 0u);
    EXPECT_EQ(read_guest_bytes(memory, module.paddr, module.size), initrd);

    ASSERT_EQ(info.memmap_entries, result.memory_map.size());
    ASSERT_EQ(info.memmap_entries, 4u);  // low RAM, firmware, RAM, PCI ECAM
    for (std::size_t i = 0; i < info.memmap_entries; ++i) {
      const auto entry = read_guest<pvh_abi::MemmapEntry>(memory, info.memmap_paddr + i * sizeof(pvh_abi::MemmapEntry));
      EXPECT_EQ(entry.addr, result.memory_map[i].address);
      EXPECT_EQ(entry.size, result.memory_map[i].size);
      EXPECT_EQ(entry.type, static_cast<std::uint32_t>(result.memory_map[i].type));
      EXPECT_EQ(entry.reserved, 0u);
    }
    EXPECT_EQ(result.memory_map[2].type, E820Type::ram);
    EXPECT_EQ(result.memory_map[2].end(), 32 * kMiB) << "RAM up to the end of guest memory";

    const EntryState& entry = result.entry;
    EXPECT_EQ(entry.mode, EntryMode::pvh32);
    EXPECT_EQ(entry.rip, kEntry);
    EXPECT_EQ(entry.rbx, layout::kStartInfoAddress);
    EXPECT_EQ(entry.rflags, 0x2u);
    EXPECT_EQ(entry.cr0, kCr0Pe | kCr0Et);
    EXPECT_EQ(entry.cr4, 0u);
    EXPECT_EQ(entry.efer, 0u);
    EXPECT_EQ(entry.cs.selector, gdt::kCode32Selector);
    EXPECT_EQ(entry.cs.base, 0u);
    EXPECT_EQ(entry.cs.limit, 0xFFFF'FFFFu);
    EXPECT_EQ(entry.cs.db, 1);
    EXPECT_EQ(entry.cs.l, 0);
    EXPECT_EQ(entry.cs.type, gdt::kTypeCodeExecuteRead);
    for (const Segment* data : {&entry.ds, &entry.es, &entry.ss}) {
      EXPECT_EQ(data->selector, gdt::kDataSelector);
      EXPECT_EQ(data->base, 0u);
      EXPECT_EQ(data->limit, 0xFFFF'FFFFu);
      EXPECT_EQ(data->type, gdt::kTypeDataReadWrite);
      EXPECT_EQ(data->db, 1);
    }
    EXPECT_EQ(entry.gdt.base, layout::kGdtAddress);
  }
};

TEST_F(PvhTest, Elf64LoadsSegmentsStartInfoAndEntryState) {
  // Dirty the bss first: loading must zero it, not rely on fresh memory.
  std::vector<std::uint8_t> junk(12288, 0xCC);
  ASSERT_TRUE(memory.write(0x201000, junk));
  const ElfSpec spec = two_segment_kernel(true);
  const test::Bytes initrd = test::pattern(70000, 4);
  const BootImage result = load_elf(spec, "console=ttyS0", initrd);
  check_loaded(spec, result, initrd, "console=ttyS0");
}

TEST_F(PvhTest, Elf32LoadsTheSameWay) {
  const ElfSpec spec = two_segment_kernel(false);
  const test::Bytes initrd = test::pattern(4096, 5);
  const BootImage result = load_elf(spec, "x", initrd);
  check_loaded(spec, result, initrd, "x");
}

TEST_F(PvhTest, EightByteEntryNoteAsLinuxWritesIt) {
  ElfSpec spec = two_segment_kernel(true);
  spec.pvh_desc_size = 8;
  spec.leading_note = false;
  EXPECT_EQ(load_elf(spec).entry.rip, kEntry);
}

TEST_F(PvhTest, WithoutInitrdThereAreNoModules) {
  const BootImage result = load_elf(two_segment_kernel(true));
  EXPECT_FALSE(result.initrd);
  const auto info = read_guest<pvh_abi::StartInfo>(memory, layout::kStartInfoAddress);
  EXPECT_EQ(info.nr_modules, 0u);
  EXPECT_EQ(info.modlist_paddr, 0u);
  EXPECT_EQ(test::read_guest_string(memory, info.cmdline_paddr), "");
}

TEST_F(PvhTest, RejectsElfWithoutPvhNote) {
  ElfSpec spec = two_segment_kernel(true);
  spec.pvh_entry.reset();
  expect_load_error(spec, {"no PVH entry point", "XEN_ELFNOTE_PHYS32_ENTRY", "type 18"});
}

TEST_F(PvhTest, RejectsSegmentOutsideGuestRam) {
  ElfSpec spec = two_segment_kernel(true);
  spec.segments[1].paddr = 40 * kMiB;
  expect_load_error(spec, {"segment", "0x2800000", "outside guest RAM", "[0x0, 0x2000000)"});
}

TEST_F(PvhTest, RejectsSegmentInTheMmioHole) {
  ElfSpec spec = two_segment_kernel(true);
  spec.segments[1].paddr = 0xFEC00000;
  expect_load_error(spec, {"outside guest RAM"});
}

TEST_F(PvhTest, RejectsSegmentWhoseEndWrapsAround) {
  ElfSpec spec = two_segment_kernel(true);
  spec.segments[1].paddr = 0xFFFF'FFFF'FFFF'F000ull;
  spec.segments[1].memsz = 0x2000;
  expect_load_error(spec, {"outside guest RAM", "overflow"});
}

TEST_F(PvhTest, RejectsSegmentBelowOneMiB) {
  ElfSpec spec = two_segment_kernel(true);
  spec.segments[0].paddr = 0x8000;
  expect_load_error(spec, {"below 1 MiB"});
}

TEST_F(PvhTest, RejectsSegmentWithMoreFileBytesThanMemory) {
  ElfSpec spec = two_segment_kernel(true);
  spec.segments[0].memsz = 100;
  expect_load_error(spec, {"more file bytes"});
}

TEST_F(PvhTest, RejectsTruncatedSegmentData) {
  ElfSpec spec = two_segment_kernel(true);
  spec.truncate_by = 100;
  expect_load_error(spec, {"truncated ELF", "runs past the end"});
}

TEST_F(PvhTest, RejectsTruncatedHeader) {
  const test::Bytes elf = test::make_elf(two_segment_kernel(true));
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::Bytes(elf.begin(), elf.begin() + 40));
  expect_error([&] { load(memory, config); }, {"truncated ELF", "too short for an ELF header"});
  config.kernel = dir.write("kernel.elf", test::Bytes(elf.begin(), elf.begin() + 100));
  expect_error([&] { load(memory, config); }, {"program header table runs past the end"});
}

TEST_F(PvhTest, RejectsWrongMachineAndType) {
  ElfSpec spec = two_segment_kernel(true);
  spec.machine = EM_AARCH64;
  expect_load_error(spec, {"ELF machine 183", "x86-64"});
  spec = two_segment_kernel(false);
  spec.machine = EM_X86_64;
  expect_load_error(spec, {"ELF machine 62", "i386"});
  spec = two_segment_kernel(true);
  spec.type = ET_DYN;
  expect_load_error(spec, {"not an executable"});
}

TEST_F(PvhTest, RejectsBadIdentification) {
  test::Bytes elf = test::make_elf(two_segment_kernel(true));
  BootConfig config;
  elf[EI_DATA] = ELFDATA2MSB;
  config.kernel = dir.write("kernel.elf", elf);
  expect_error([&] { load(memory, config); }, {"not little-endian"});
  elf[EI_DATA] = ELFDATA2LSB;
  elf[EI_CLASS] = 7;
  config.kernel = dir.write("kernel.elf", elf);
  expect_error([&] { load(memory, config); }, {"unknown ELF class 7"});
}

TEST_F(PvhTest, RejectsEntryOutsideTheLoadedSegments) {
  ElfSpec spec = two_segment_kernel(true);
  spec.pvh_entry = 0x300000;
  expect_load_error(spec, {"entry point 0x300000", "outside every loadable segment"});
}

TEST_F(PvhTest, RejectsEntryAboveFourGiB) {
  ElfSpec spec = two_segment_kernel(true);
  spec.pvh_entry = 0x1'0010'0000ull;
  spec.pvh_desc_size = 8;
  expect_load_error(spec, {"above 4 GiB"});
}

TEST_F(PvhTest, RejectsMalformedNote) {
  test::Bytes elf = test::make_elf(two_segment_kernel(true));
  // The PT_NOTE program header comes first; make its first note's name
  // longer than the whole segment.
  Elf64_Phdr note;
  std::memcpy(&note, elf.data() + sizeof(Elf64_Ehdr), sizeof(note));
  ASSERT_EQ(note.p_type, PT_NOTE);
  const std::uint32_t huge = 0x10000;
  std::memcpy(elf.data() + note.p_offset, &huge, sizeof(huge));
  BootConfig config;
  config.kernel = dir.write("kernel.elf", elf);
  expect_error([&] { load(memory, config); }, {"malformed ELF note"});
}

TEST_F(PvhTest, RejectsElfWithoutProgramHeaders) {
  test::Bytes elf = test::make_elf(two_segment_kernel(true));
  const std::uint16_t zero = 0;
  std::memcpy(elf.data() + offsetof(Elf64_Ehdr, e_phnum), &zero, sizeof(zero));
  BootConfig config;
  config.kernel = dir.write("kernel.elf", elf);
  expect_error([&] { load(memory, config); }, {"0 program headers"});
}

TEST_F(PvhTest, RejectsOverlappingSegments) {
  // A few hundred bytes of headers that all claim most of guest RAM: loaded,
  // each would be zero-filled in turn (headers x RAM of work at every boot).
  ElfSpec spec;
  spec.pvh_entry = kEntry;
  for (int i = 0; i < 512; ++i) spec.segments.push_back({0x100000, test::pattern(16, 3), 30 * kMiB});
  expect_load_error(spec, {"overlap", "0x100000"});

  // Partial overlap in any order of the headers.
  spec.segments = {{0x200000, test::pattern(16, 1), 0x1000}, {0x100000, test::pattern(16, 2), 0x100001}};
  expect_load_error(spec, {"[0x100000, 0x200001)", "[0x200000, 0x201000)", "overlap"});

  // Adjacent is not overlapping.
  spec.segments = {{0x200000, test::pattern(16, 1), 0x1000}, {0x100000, test::pattern(16, 2), 0x100000}};
  EXPECT_EQ(load_elf(spec).kernel, (GuestRange{0x100000, 0x101000}));
}

}  // namespace
}  // namespace vmm::boot
