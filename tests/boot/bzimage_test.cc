// bzImage loading with synthetic images written by the test.
#include "vmm/boot/bzimage.h"

#include <gtest/gtest.h>

#include "tests/boot/test_support.h"
#include "vmm/boot/boot_params.h"
#include "vmm/boot/layout.h"
#include "vmm/boot/loader.h"

namespace vmm::boot {
namespace {

using test::BzImageSpec;
using test::expect_error;
using test::kMiB;
using test::read_guest;
using test::read_guest_bytes;
namespace abi = linux_abi;

struct BzImageTest : ::testing::Test {
  test::TempDir dir;

  BootImage load_spec(devices::GuestMemory& memory, const BzImageSpec& spec, const std::string& cmdline = "",
                      std::optional<test::Bytes> initrd = std::nullopt) {
    BootConfig config;
    config.kernel = dir.write("bzImage", test::make_bzimage(spec));
    if (initrd) config.initrd = dir.write("initrd", *initrd);
    config.cmdline = cmdline;
    return load(memory, config);
  }

  void expect_load_error(const BzImageSpec& spec, const std::vector<std::string>& fragments,
                         std::uint64_t memory_size = 64 * kMiB) {
    auto memory = devices::GuestMemory::allocate(memory_size);
    std::vector<std::string> all = fragments;
    all.push_back((dir.path() / "bzImage").string());
    expect_error([&] { load_spec(memory, spec); }, all);
  }
};

TEST_F(BzImageTest, LoadsAtThePreferredAddressAndFillsTheZeroPage) {
  auto memory = devices::GuestMemory::allocate(64 * kMiB);
  const BzImageSpec spec;
  const test::Bytes image = test::make_bzimage(spec);
  const test::Bytes initrd = test::pattern(300 * 1024 + 5, 0x11);
  const std::string cmdline = "console=ttyS0 root=/dev/vda quiet";
  const BootImage result = load_spec(memory, spec, cmdline, initrd);

  EXPECT_EQ(result.format, KernelFormat::bzimage);
  EXPECT_EQ(result.boot_protocol, 0x020F);
  EXPECT_EQ(result.kernel, (GuestRange{spec.pref_address, spec.init_size}));
  const std::size_t setup_size = (spec.setup_sects + 1) * 512;
  EXPECT_EQ(read_guest_bytes(memory, spec.pref_address, image.size() - setup_size),
            test::Bytes(image.begin() + static_cast<std::ptrdiff_t>(setup_size), image.end()));

  const auto params = read_guest<abi::BootParams>(memory, layout::kZeroPageAddress);
  EXPECT_EQ(test::by_value(params.hdr.kernel_version), 0x1234) << "setup header copied from the file";
  EXPECT_EQ(test::by_value(params.hdr.version), 0x020F);
  EXPECT_EQ(test::by_value(params.hdr.init_size), spec.init_size);
  EXPECT_EQ(test::by_value(params.hdr.type_of_loader), 0xFF);
  EXPECT_EQ(test::by_value(params.hdr.loadflags), abi::kLoadedHigh | abi::kCanUseHeap);
  EXPECT_EQ(test::by_value(params.hdr.heap_end_ptr), 0xFE00);
  EXPECT_EQ(test::by_value(params.hdr.vid_mode), 0xFFFF);
  EXPECT_EQ(test::by_value(params.hdr.code32_start), spec.pref_address);
  EXPECT_EQ(test::by_value(params.sentinel), 0);
  EXPECT_EQ(test::by_value(params.hdr.cmd_line_ptr), layout::kCmdlineAddress);
  EXPECT_EQ(test::by_value(params.ext_cmd_line_ptr), 0u);
  EXPECT_EQ(test::read_guest_string(memory, test::by_value(params.hdr.cmd_line_ptr)), cmdline);

  // Highest page-aligned spot below the top of RAM.
  const std::uint64_t expected_initrd = layout::align_down(64 * kMiB - initrd.size(), 4096);
  EXPECT_EQ(test::by_value(params.hdr.ramdisk_image), expected_initrd);
  EXPECT_EQ(test::by_value(params.hdr.ramdisk_size), initrd.size());
  EXPECT_EQ(test::by_value(params.ext_ramdisk_image), 0u);
  EXPECT_EQ(read_guest_bytes(memory, expected_initrd, initrd.size()), initrd);
  ASSERT_TRUE(result.initrd);
  EXPECT_EQ(*result.initrd, (GuestRange{expected_initrd, initrd.size()}));

  ASSERT_EQ(test::by_value(params.e820_entries), 4);
  EXPECT_EQ(test::by_value(params.e820_table[0].addr), 0u);
  EXPECT_EQ(test::by_value(params.e820_table[0].size), 0x9FC00u);
  EXPECT_EQ(test::by_value(params.e820_table[0].type), 1u);
  EXPECT_EQ(test::by_value(params.e820_table[1].addr), 0x9FC00u);
  EXPECT_EQ(test::by_value(params.e820_table[1].size), 0x100000u - 0x9FC00u);
  EXPECT_EQ(test::by_value(params.e820_table[1].type), 2u);
  EXPECT_EQ(test::by_value(params.e820_table[2].addr), 0x100000u);
  EXPECT_EQ(test::by_value(params.e820_table[2].size), 63 * kMiB);
  EXPECT_EQ(test::by_value(params.e820_table[2].type), 1u);
  EXPECT_EQ(test::by_value(params.e820_table[3].addr), 0xE000'0000u) << "PCI ECAM, reserved";
  EXPECT_EQ(test::by_value(params.e820_table[3].type), 2u);
  EXPECT_EQ(test::by_value(params.acpi_rsdp_addr), layout::kRsdpAddress);

  const EntryState& entry = result.entry;
  EXPECT_EQ(entry.mode, EntryMode::linux64);
  EXPECT_EQ(entry.rip, spec.pref_address + 0x200);
  EXPECT_EQ(entry.rsi, layout::kZeroPageAddress);
  EXPECT_EQ(entry.cs.selector, 0x10);
  EXPECT_EQ(entry.ds.selector, 0x18);
  EXPECT_EQ(entry.cs.l, 1);
}

TEST_F(BzImageTest, RelocatableKernelMovesDownWhenThePreferredAddressDoesNotFit) {
  auto memory = devices::GuestMemory::allocate(16 * kMiB);
  const BootImage result = load_spec(memory, BzImageSpec{});
  // min_alignment 21: the first 2 MiB boundary above 1 MiB.
  EXPECT_EQ(result.kernel.address, 2 * kMiB);
  EXPECT_EQ(result.entry.rip, 2 * kMiB + 0x200);
  EXPECT_EQ(read_guest<abi::BootParams>(memory, layout::kZeroPageAddress).hdr.code32_start, 2 * kMiB);
}

TEST_F(BzImageTest, NonRelocatableKernelThatDoesNotFitIsRefused) {
  BzImageSpec spec;
  spec.relocatable = 0;
  expect_load_error(spec, {"init_size", "give the guest more memory"}, 16 * kMiB);
}

TEST_F(BzImageTest, InitrdStaysBelowInitrdAddrMax) {
  auto memory = devices::GuestMemory::allocate(64 * kMiB);
  BzImageSpec spec;
  spec.initrd_addr_max = 32 * kMiB - 1;
  const test::Bytes initrd = test::pattern(12345, 3);
  const BootImage result = load_spec(memory, spec, "", initrd);
  ASSERT_TRUE(result.initrd);
  EXPECT_EQ(result.initrd->address, layout::align_down(32 * kMiB - initrd.size(), 4096));
  EXPECT_LE(result.initrd->end(), 32 * kMiB);
}

TEST_F(BzImageTest, InitrdGoesBelowTheKernelWhenThereIsNoRoomAbove) {
  auto memory = devices::GuestMemory::allocate(24 * kMiB);
  BzImageSpec spec;
  spec.init_size = 8 * kMiB;  // the kernel owns 16-24 MiB, the top of RAM
  const test::Bytes initrd = test::pattern(3 * kMiB, 9);
  const BootImage result = load_spec(memory, spec, "", initrd);
  ASSERT_TRUE(result.initrd);
  EXPECT_EQ(result.initrd->address, 13 * kMiB);
  EXPECT_FALSE(result.initrd->overlaps(result.kernel));
  EXPECT_EQ(read_guest_bytes(memory, 13 * kMiB, initrd.size()), initrd);
}

TEST_F(BzImageTest, InitrdThatFitsNowhereIsRefusedWithSizes) {
  auto memory = devices::GuestMemory::allocate(24 * kMiB);
  BzImageSpec spec;
  spec.init_size = 8 * kMiB;
  spec.relocatable = 0;
  BootConfig config;
  config.kernel = dir.write("bzImage", test::make_bzimage(spec));
  config.initrd = dir.write("initrd", test::pattern(16 * kMiB, 1));
  expect_error([&] { load(memory, config); },
               {"initrd", config.initrd->string(), "16777216 bytes do not fit", "0x1000000"});
}

TEST_F(BzImageTest, OlderProtocolGetsNoRsdpPointer) {
  auto memory = devices::GuestMemory::allocate(64 * kMiB);
  BzImageSpec spec;
  spec.version = 0x020D;
  load_spec(memory, spec);
  EXPECT_EQ(read_guest<abi::BootParams>(memory, layout::kZeroPageAddress).acpi_rsdp_addr, 0u);
}

TEST_F(BzImageTest, SetupSectsZeroMeansFour) {
  auto memory = devices::GuestMemory::allocate(64 * kMiB);
  BzImageSpec spec;
  spec.setup_sects = 0;
  const test::Bytes image = test::make_bzimage(spec);
  load_spec(memory, spec);
  EXPECT_EQ(read_guest_bytes(memory, spec.pref_address, 64), test::Bytes(image.begin() + 5 * 512, image.begin() + 5 * 512 + 64));
}

TEST_F(BzImageTest, CommandLineLimitComesFromTheKernel) {
  auto memory = devices::GuestMemory::allocate(64 * kMiB);
  BzImageSpec spec;
  spec.cmdline_size = 16;
  EXPECT_NO_THROW(load_spec(memory, spec, std::string(16, 'x')));
  expect_error([&] { load_spec(memory, spec, std::string(17, 'x')); },
               {"command line is 17 bytes", "accepts at most 16", "bzImage"});
}

TEST_F(BzImageTest, RejectsProtocolOlderThan212) {
  BzImageSpec spec;
  spec.version = 0x020B;
  expect_load_error(spec, {"boot protocol 2.11 is too old", "2.12"});
}

TEST_F(BzImageTest, RejectsKernelWithout64BitEntry) {
  BzImageSpec spec;
  spec.xloadflags = 0;
  expect_load_error(spec, {"no 64-bit entry point", "XLF_KERNEL_64"});
}

TEST_F(BzImageTest, RejectsMissingBootSectorSignature) {
  BzImageSpec spec;
  spec.boot_flag = 0x1234;
  expect_load_error(spec, {"boot sector signature", "0xaa55"});
}

TEST_F(BzImageTest, RejectsZImage) {
  BzImageSpec spec;
  spec.loadflags = 0;
  expect_load_error(spec, {"zImage"});
}

TEST_F(BzImageTest, RejectsHeaderTooShortForItsProtocol) {
  BzImageSpec spec;
  spec.jump_offset = 0x50;
  expect_load_error(spec, {"invalid setup header", "ends it at 0x252", "protocol 2.12"});
}

TEST_F(BzImageTest, CopiesOnlyTheDeclaredHeader) {
  auto memory = devices::GuestMemory::allocate(64 * kMiB);
  BzImageSpec spec;
  spec.jump_offset = 0x268 - 0x202;  // a 2.12-era header without kernel_info_offset
  test::Bytes image = test::make_bzimage(spec);
  image[0x268] = 0xAB;  // setup code right after the header, not a header field
  BootConfig config;
  config.kernel = dir.write("bzImage", image);
  load(memory, config);
  EXPECT_EQ(test::by_value(read_guest<abi::BootParams>(memory, layout::kZeroPageAddress).hdr.kernel_info_offset), 0u);
}

TEST_F(BzImageTest, RejectsFileShorterThanItsSyssize) {
  BzImageSpec spec;
  spec.syssize_bytes = static_cast<std::uint32_t>(spec.kernel_bytes + 4096);
  expect_load_error(spec, {"truncated bzImage", "declares 69632 bytes of kernel", "holds 65536"});
}

TEST_F(BzImageTest, RejectsFileCutInsideTheSetupHeader) {
  auto memory = devices::GuestMemory::allocate(64 * kMiB);
  test::Bytes image = test::make_bzimage(BzImageSpec{});
  image.resize(0x240);
  BootConfig config;
  config.kernel = dir.write("short", image);
  expect_error([&] { load(memory, config); }, {"truncated bzImage", "too short to hold a setup header"});
}

TEST_F(BzImageTest, RejectsFileWithNothingAfterTheSetupCode) {
  BzImageSpec spec;
  spec.kernel_bytes = 0;
  expect_load_error(spec, {"truncated bzImage", "leaves no kernel"});
}

}  // namespace
}  // namespace vmm::boot
