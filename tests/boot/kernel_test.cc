// Loading Debian's cloud kernel (fetched by tools/fetch-test-kernel.sh as a
// ctest fixture): the bzImage through the 64-bit boot protocol and its
// vmlinux through PVH. Nothing boots here; the tests check what the loader
// left in guest memory against the files, read independently of the loader.
#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "tests/boot/test_support.h"
#include "vmm/boot/boot_params.h"
#include "vmm/boot/layout.h"
#include "vmm/boot/loader.h"
#include "vmm/boot/page_tables.h"
#include "vmm/boot/start_info.h"

#ifndef VMM_TEST_KERNEL_DIR
#error "VMM_TEST_KERNEL_DIR must name the directory tools/fetch-test-kernel.sh fills"
#endif

namespace vmm::boot {
namespace {

using test::kMiB;
using test::read_guest;
using test::read_guest_bytes;
namespace abi = linux_abi;

constexpr std::uint64_t kGuestMemory = 256 * kMiB;
const std::string kCmdline = "console=ttyS0 earlyprintk=serial panic=-1 rdinit=/init";

test::Bytes read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return test::Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class DebianKernel : public ::testing::Test {
 protected:
  static std::filesystem::path dir() { return VMM_TEST_KERNEL_DIR; }

  void SetUp() override {
    for (const char* name : {"vmlinuz", "vmlinux"}) {
      const std::filesystem::path path = dir() / name;
      if (!std::filesystem::is_regular_file(path)) {
        FAIL() << "test kernel " << path << " is missing. The ctest fixture test boot.fetch_test_kernel runs "
               << "tools/fetch-test-kernel.sh " << dir() << " to download it from Debian's archive; see that "
               << "test's output for why it failed (or run the script by hand).";
      }
    }
    initrd_bytes = test::pattern(kMiB + 123, 0x77);
    initrd_path = temp.write("initrd.cpio", initrd_bytes);
  }

  BootConfig config(const char* kernel) const {
    BootConfig c;
    c.kernel = dir() / kernel;
    c.initrd = initrd_path;
    c.cmdline = kCmdline;
    c.cpus = 2;
    c.hpet = true;
    return c;
  }

  test::TempDir temp;
  test::Bytes initrd_bytes;
  std::filesystem::path initrd_path;
};

using DebianKernelBzImage = DebianKernel;
using DebianKernelPvh = DebianKernel;

const std::vector<E820Entry> kExpectedMap = {
    {0, 0x9FC00, E820Type::ram},
    {0x9FC00, 0x100000 - 0x9FC00, E820Type::reserved},
    {0x100000, kGuestMemory - 0x100000, E820Type::ram},
    {0xE000'0000, 0x10'0000, E820Type::reserved},  // PCI ECAM
};

TEST_F(DebianKernelBzImage, ZeroPageCarriesTheSetupHeaderAndLoaderFields) {
  const test::Bytes file = read_file(dir() / "vmlinuz");
  abi::SetupHeader header{};
  ASSERT_GT(file.size(), 0x1000u);
  std::memcpy(&header, file.data() + abi::kSetupHeaderOffset, sizeof(header));
  ASSERT_GE(test::by_value(header.version), 0x020C) << "Debian's kernel should speak boot protocol 2.12+";

  auto memory = devices::GuestMemory::allocate(kGuestMemory);
  const BootImage result = load(memory, config("vmlinuz"));
  ASSERT_EQ(result.format, KernelFormat::bzimage);
  EXPECT_EQ(result.boot_protocol, test::by_value(header.version));
  const std::uint64_t load_address = result.kernel.address;
  EXPECT_EQ(load_address, test::by_value(header.pref_address)) << "256 MiB leaves room at the preferred address";
  EXPECT_EQ(result.kernel.size, test::by_value(header.init_size));

  // The whole setup header as the file has it, with only the fields a boot
  // loader is meant to fill changed.
  abi::SetupHeader expected = header;
  expected.type_of_loader = 0xFF;
  expected.loadflags = static_cast<std::uint8_t>(header.loadflags | abi::kCanUseHeap);
  expected.heap_end_ptr = 0xFE00;
  expected.vid_mode = 0xFFFF;
  expected.code32_start = static_cast<std::uint32_t>(load_address);
  expected.cmd_line_ptr = layout::kCmdlineAddress;
  ASSERT_TRUE(result.initrd);
  expected.ramdisk_image = static_cast<std::uint32_t>(result.initrd->address);
  expected.ramdisk_size = static_cast<std::uint32_t>(initrd_bytes.size());
  expected.setup_data = 0;
  const auto params = read_guest<abi::BootParams>(memory, layout::kZeroPageAddress);
  EXPECT_EQ(std::memcmp(&params.hdr, &expected, sizeof(expected)), 0) << "setup header differs";
  // Bytes of a newer header than this loader knows are copied as well.
  const std::size_t header_end = 0x202 + file[0x201];
  const test::Bytes zero_page = read_guest_bytes(memory, layout::kZeroPageAddress, 0x1000);
  EXPECT_TRUE(std::equal(zero_page.begin() + 0x26C, zero_page.begin() + static_cast<std::ptrdiff_t>(header_end),
                         file.begin() + 0x26C))
      << "header tail differs";

  EXPECT_EQ(test::by_value(params.hdr.type_of_loader), 0xFF);
  EXPECT_TRUE(params.hdr.loadflags & abi::kLoadedHigh);
  EXPECT_TRUE(params.hdr.loadflags & abi::kCanUseHeap);
  EXPECT_EQ(test::read_guest_string(memory, test::by_value(params.hdr.cmd_line_ptr)), kCmdline);
  EXPECT_EQ(test::by_value(params.acpi_rsdp_addr), result.acpi.rsdp);
  EXPECT_EQ(test::by_value(params.sentinel), 0);

  ASSERT_EQ(test::by_value(params.e820_entries), kExpectedMap.size());
  for (std::size_t i = 0; i < kExpectedMap.size(); ++i) {
    EXPECT_EQ(test::by_value(params.e820_table[i].addr), kExpectedMap[i].address) << i;
    EXPECT_EQ(test::by_value(params.e820_table[i].size), kExpectedMap[i].size) << i;
    EXPECT_EQ(test::by_value(params.e820_table[i].type), static_cast<std::uint32_t>(kExpectedMap[i].type)) << i;
  }
}

TEST_F(DebianKernelBzImage, KernelAndInitrdBytesAreWhereTheZeroPageSays) {
  const test::Bytes file = read_file(dir() / "vmlinuz");
  abi::SetupHeader header{};
  std::memcpy(&header, file.data() + abi::kSetupHeaderOffset, sizeof(header));
  const std::size_t setup_size = (std::size_t{header.setup_sects ? header.setup_sects : 4u} + 1) * 512;

  auto memory = devices::GuestMemory::allocate(kGuestMemory);
  const BootImage result = load(memory, config("vmlinuz"));
  const auto params = read_guest<abi::BootParams>(memory, layout::kZeroPageAddress);
  EXPECT_EQ(read_guest_bytes(memory, result.kernel.address, file.size() - setup_size),
            test::Bytes(file.begin() + static_cast<std::ptrdiff_t>(setup_size), file.end()));

  const std::uint64_t initrd = params.hdr.ramdisk_image;
  const std::uint64_t ceiling = std::min<std::uint64_t>(std::uint64_t{header.initrd_addr_max} + 1, kGuestMemory);
  EXPECT_EQ(initrd % 4096, 0u);
  EXPECT_EQ(test::by_value(params.hdr.ramdisk_size), initrd_bytes.size());
  EXPECT_LE(initrd + initrd_bytes.size(), ceiling);
  EXPECT_GT(initrd + 4096 + initrd_bytes.size(), ceiling) << "not the highest aligned address";
  EXPECT_FALSE((GuestRange{initrd, initrd_bytes.size()}).overlaps({result.kernel.address, header.init_size}));
  EXPECT_EQ(read_guest_bytes(memory, initrd, initrd_bytes.size()), initrd_bytes);
}

TEST_F(DebianKernelBzImage, LongModeEntryOnIdentityMappedPageTables) {
  const test::Bytes file = read_file(dir() / "vmlinuz");
  auto memory = devices::GuestMemory::allocate(kGuestMemory);
  const BootImage result = load(memory, config("vmlinuz"));
  const EntryState& entry = result.entry;
  const std::uint64_t load_address = result.kernel.address;

  EXPECT_EQ(entry.mode, EntryMode::linux64);
  EXPECT_TRUE(entry.cr0 & kCr0Pg);
  EXPECT_TRUE(entry.cr0 & kCr0Pe);
  EXPECT_TRUE(entry.cr4 & kCr4Pae);
  EXPECT_TRUE(entry.efer & kEferLme);
  EXPECT_TRUE(entry.efer & kEferLma);
  EXPECT_EQ(entry.cs.l, 1);
  EXPECT_EQ(entry.cs.db, 0);
  EXPECT_EQ(entry.cs.selector, 0x10);
  EXPECT_EQ(entry.cs.present, 1);
  EXPECT_EQ(entry.ds.selector, 0x18);
  EXPECT_EQ(entry.ss.selector, 0x18);
  EXPECT_EQ(entry.rip, load_address + 0x200);
  EXPECT_EQ(entry.rsi, layout::kZeroPageAddress);
  EXPECT_EQ(entry.rflags, 0x2u);

  const auto params = read_guest<abi::BootParams>(memory, layout::kZeroPageAddress);
  for (std::uint64_t address :
       {load_address, entry.rip, load_address + params.hdr.init_size - 1, std::uint64_t{layout::kZeroPageAddress},
        std::uint64_t{params.hdr.cmd_line_ptr}, std::uint64_t{params.hdr.ramdisk_image},
        std::uint64_t{params.hdr.ramdisk_image} + params.hdr.ramdisk_size - 1, entry.gdt.base}) {
    EXPECT_EQ(translate(memory, entry.cr3, address), address) << std::hex << address;
  }
  // The bytes the vCPU fetches first are the kernel's 64-bit entry code.
  const std::size_t setup_size = (std::size_t{file[0x1F1] ? file[0x1F1] : 4u} + 1) * 512;
  EXPECT_EQ(read_guest_bytes(memory, *translate(memory, entry.cr3, entry.rip), 16),
            test::Bytes(file.begin() + static_cast<std::ptrdiff_t>(setup_size + 0x200),
                        file.begin() + static_cast<std::ptrdiff_t>(setup_size + 0x210)));
}

TEST_F(DebianKernelBzImage, SmallGuestRelocatesTheKernel) {
  auto memory = devices::GuestMemory::allocate(64 * kMiB);
  const BootImage result = load(memory, config("vmlinuz"));
  EXPECT_EQ(result.kernel.address, 2 * kMiB);
  EXPECT_EQ(result.entry.rip, 2 * kMiB + 0x200);
  ASSERT_TRUE(result.initrd);
  EXPECT_GE(result.initrd->address, result.kernel.end());
}

TEST_F(DebianKernelBzImage, CommandLineLimitIsTheKernelsOwn) {
  const test::Bytes file = read_file(dir() / "vmlinuz");
  abi::SetupHeader header{};
  std::memcpy(&header, file.data() + abi::kSetupHeaderOffset, sizeof(header));
  auto memory = devices::GuestMemory::allocate(kGuestMemory);
  BootConfig c = config("vmlinuz");
  c.cmdline = std::string(header.cmdline_size, 'x');
  EXPECT_NO_THROW(load(memory, c));
  c.cmdline.push_back('x');
  test::expect_error([&] { load(memory, c); },
                     {"vmlinuz", "accepts at most " + std::to_string(header.cmdline_size)});
}

struct ElfLoad {
  std::uint64_t offset, paddr, filesz, memsz;
};

// A straightforward reading of the file, independent of the loader's.
void read_vmlinux(const test::Bytes& file, std::vector<ElfLoad>& loads, std::uint32_t& pvh_entry) {
  Elf64_Ehdr ehdr;
  std::memcpy(&ehdr, file.data(), sizeof(ehdr));
  ASSERT_EQ(ehdr.e_ident[EI_CLASS], ELFCLASS64);
  pvh_entry = 0;
  for (unsigned i = 0; i < ehdr.e_phnum; ++i) {
    Elf64_Phdr phdr;
    std::memcpy(&phdr, file.data() + ehdr.e_phoff + i * sizeof(phdr), sizeof(phdr));
    if (phdr.p_type == PT_LOAD) loads.push_back({phdr.p_offset, phdr.p_paddr, phdr.p_filesz, phdr.p_memsz});
    if (phdr.p_type != PT_NOTE) continue;
    for (std::uint64_t at = phdr.p_offset; at + 12 <= phdr.p_offset + phdr.p_filesz;) {
      Elf64_Nhdr note;
      std::memcpy(&note, file.data() + at, sizeof(note));
      const std::uint64_t name = at + sizeof(note);
      const std::uint64_t desc = name + ((note.n_namesz + 3) & ~3u);
      if (note.n_type == 18 && note.n_namesz == 4 && std::memcmp(file.data() + name, "Xen", 4) == 0) {
        std::memcpy(&pvh_entry, file.data() + desc, 4);
      }
      at = desc + ((note.n_descsz + 3) & ~3u);
    }
  }
}

TEST_F(DebianKernelPvh, SegmentsAreLoadedAtTheirPhysicalAddresses) {
  const test::Bytes file = read_file(dir() / "vmlinux");
  std::vector<ElfLoad> loads;
  std::uint32_t pvh_entry = 0;
  read_vmlinux(file, loads, pvh_entry);
  ASSERT_FALSE(loads.empty());
  ASSERT_NE(pvh_entry, 0u) << "Debian's vmlinux carries XEN_ELFNOTE_PHYS32_ENTRY";

  auto memory = devices::GuestMemory::allocate(kGuestMemory);
  const BootImage result = load(memory, config("vmlinux"));
  ASSERT_EQ(result.format, KernelFormat::pvh_elf);
  EXPECT_EQ(result.entry_point, pvh_entry);
  for (const ElfLoad& segment : loads) {
    EXPECT_EQ(read_guest_bytes(memory, segment.paddr, segment.filesz),
              test::Bytes(file.begin() + static_cast<std::ptrdiff_t>(segment.offset),
                          file.begin() + static_cast<std::ptrdiff_t>(segment.offset + segment.filesz)))
        << "segment at 0x" << std::hex << segment.paddr;
    EXPECT_EQ(read_guest_bytes(memory, segment.paddr + segment.filesz, segment.memsz - segment.filesz),
              test::Bytes(segment.memsz - segment.filesz, 0));
    EXPECT_GE(segment.paddr, result.kernel.address);
    EXPECT_LE(segment.paddr + segment.memsz, result.kernel.end());
  }
}

TEST_F(DebianKernelPvh, StartInfoListsCommandLineInitrdMemoryMapAndRsdp) {
  auto memory = devices::GuestMemory::allocate(kGuestMemory);
  const BootImage result = load(memory, config("vmlinux"));
  EXPECT_EQ(result.boot_info, layout::kStartInfoAddress);
  const auto info = read_guest<pvh_abi::StartInfo>(memory, layout::kStartInfoAddress);
  EXPECT_EQ(info.magic, 0x336EC578u);
  EXPECT_EQ(info.version, 1u);
  EXPECT_EQ(test::read_guest_string(memory, info.cmdline_paddr), kCmdline);
  EXPECT_EQ(info.rsdp_paddr, result.acpi.rsdp);
  char signature[8];
  ASSERT_TRUE(memory.read_obj(info.rsdp_paddr, signature));
  EXPECT_EQ(std::string(signature, 8), "RSD PTR ");

  ASSERT_EQ(info.nr_modules, 1u);
  const auto module = read_guest<pvh_abi::ModlistEntry>(memory, info.modlist_paddr);
  EXPECT_EQ(module.size, initrd_bytes.size());
  EXPECT_EQ(module.paddr % 4096, 0u);
  EXPECT_FALSE((GuestRange{module.paddr, module.size}).overlaps(result.kernel));
  EXPECT_EQ(read_guest_bytes(memory, module.paddr, module.size), initrd_bytes);

  ASSERT_EQ(info.memmap_entries, kExpectedMap.size());
  for (std::size_t i = 0; i < kExpectedMap.size(); ++i) {
    const auto entry = read_guest<pvh_abi::MemmapEntry>(memory, info.memmap_paddr + i * sizeof(pvh_abi::MemmapEntry));
    EXPECT_EQ(entry.addr, kExpectedMap[i].address) << i;
    EXPECT_EQ(entry.size, kExpectedMap[i].size) << i;
    EXPECT_EQ(entry.type, static_cast<std::uint32_t>(kExpectedMap[i].type)) << i;
  }
}

TEST_F(DebianKernelPvh, EntersFlatProtectedModeWithEbxAtStartInfo) {
  const test::Bytes file = read_file(dir() / "vmlinux");
  std::vector<ElfLoad> loads;
  std::uint32_t pvh_entry = 0;
  read_vmlinux(file, loads, pvh_entry);

  auto memory = devices::GuestMemory::allocate(kGuestMemory);
  const BootImage result = load(memory, config("vmlinux"));
  const EntryState& entry = result.entry;
  EXPECT_EQ(entry.mode, EntryMode::pvh32);
  EXPECT_EQ(entry.rip, pvh_entry);
  EXPECT_EQ(entry.rbx, layout::kStartInfoAddress);
  EXPECT_EQ(entry.cr0 & kCr0Pg, 0u);
  EXPECT_TRUE(entry.cr0 & kCr0Pe);
  EXPECT_EQ(entry.efer, 0u);
  EXPECT_EQ(entry.rflags, 0x2u);
  EXPECT_EQ(entry.cs.db, 1);
  EXPECT_EQ(entry.cs.l, 0);
  EXPECT_EQ(entry.cs.base, 0u);
  EXPECT_EQ(entry.cs.limit, 0xFFFF'FFFFu);
  for (const Segment* data : {&entry.ds, &entry.es, &entry.ss}) {
    EXPECT_EQ(data->base, 0u);
    EXPECT_EQ(data->limit, 0xFFFF'FFFFu);
    EXPECT_EQ(data->s, 1);
  }
  // The first bytes at the entry are the file's bytes for that address.
  for (const ElfLoad& segment : loads) {
    if (pvh_entry < segment.paddr || pvh_entry >= segment.paddr + segment.filesz) continue;
    const std::uint64_t at = segment.offset + (pvh_entry - segment.paddr);
    EXPECT_EQ(read_guest_bytes(memory, pvh_entry, 16),
              test::Bytes(file.begin() + static_cast<std::ptrdiff_t>(at),
                          file.begin() + static_cast<std::ptrdiff_t>(at + 16)));
  }
}

}  // namespace
}  // namespace vmm::boot
