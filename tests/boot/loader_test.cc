// The front door: file handling, format detection, size limits and
// repeatable loading.
#include "vmm/boot/loader.h"

#include <gtest/gtest.h>

#include "tests/boot/test_support.h"
#include "vmm/boot/layout.h"
#include "vmm/boot/start_info.h"

namespace vmm::boot {
namespace {

using test::expect_error;
using test::kMiB;

test::ElfSpec small_pvh_kernel() {
  test::ElfSpec spec;
  spec.segments = {{0x100000, test::pattern(4096, 7), 8192}};
  spec.pvh_entry = 0x100000;
  return spec;
}

struct LoaderTest : ::testing::Test {
  test::TempDir dir;
  devices::GuestMemory memory = devices::GuestMemory::allocate(16 * kMiB);
};

TEST_F(LoaderTest, MissingKernel) {
  BootConfig config;
  config.kernel = dir.path() / "no-such-kernel";
  expect_error([&] { load(memory, config); }, {"kernel", config.kernel.string(), "file not found"});
}

TEST_F(LoaderTest, KernelThatIsADirectory) {
  BootConfig config;
  config.kernel = dir.path();
  expect_error([&] { load(memory, config); }, {"kernel", dir.path().string(), "not a regular file"});
}

TEST_F(LoaderTest, UnreadableKernel) {
  BootConfig config;
  // A path through a regular file: open fails with ENOTDIR for anyone,
  // including root (for whom permission bits would not stop the read).
  config.kernel = dir.write("plain", "x") / "kernel";
  expect_error([&] { load(memory, config); }, {"kernel", config.kernel.string(), "cannot open", "Not a directory"});
}

TEST_F(LoaderTest, EmptyKernel) {
  BootConfig config;
  config.kernel = dir.write("empty", "");
  expect_error([&] { load(memory, config); }, {"kernel", config.kernel.string(), "file is empty"});
}

TEST_F(LoaderTest, GarbageKernelSaysWhatWasExpected) {
  BootConfig config;
  config.kernel = dir.write("garbage", test::pattern(5000, 42));
  expect_error([&] { load(memory, config); },
               {config.kernel.string(), "neither a bzImage (no 'HdrS' setup header", "nor an ELF"});
  config.kernel = dir.write("tiny", "MZ");
  expect_error([&] { load(memory, config); }, {"neither a bzImage"});
}

TEST_F(LoaderTest, KernelLargerThanGuestMemoryIsRefusedBeforeReading) {
  auto small = devices::GuestMemory::allocate(2 * kMiB);
  BootConfig config;
  config.kernel = dir.write("big", test::Bytes(2 * kMiB + 1, 0));
  expect_error([&] { load(small, config); }, {"kernel", "2097153 bytes", "larger than guest memory", "2097152 bytes"});
}

TEST_F(LoaderTest, MissingInitrd) {
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::make_elf(small_pvh_kernel()));
  config.initrd = dir.path() / "no-initrd";
  expect_error([&] { load(memory, config); }, {"initrd", config.initrd->string(), "file not found"});
}

TEST_F(LoaderTest, InitrdLargerThanGuestMemorySaysBothSizes) {
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::make_elf(small_pvh_kernel()));
  config.initrd = dir.write("initrd", test::Bytes(16 * kMiB + 4096, 0));
  expect_error([&] { load(memory, config); },
               {"initrd", config.initrd->string(), "16781312 bytes", "larger than guest memory", "16.0 MiB"});
}

TEST_F(LoaderTest, PvhCommandLineLongerThanTheBootAreaIsRefused) {
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::make_elf(small_pvh_kernel()));
  config.cmdline = std::string(layout::kCmdlineCapacity, 'a');
  expect_error([&] { load(memory, config); }, {"command line is 65536 bytes", "at most 65535"});
}

TEST_F(LoaderTest, CommandLineWithNulIsRefused) {
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::make_elf(small_pvh_kernel()));
  config.cmdline = std::string("a\0b", 3);
  expect_error([&] { load(memory, config); }, {"NUL"});
}

TEST_F(LoaderTest, GuestMemoryBelowOneMiBIsRefused) {
  auto tiny = devices::GuestMemory::allocate(512 * 1024);
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::make_elf(small_pvh_kernel()));
  expect_error([&] { load(tiny, config); }, {"512 KiB is too small"});
}

TEST_F(LoaderTest, UnsupportedVcpuCount) {
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::make_elf(small_pvh_kernel()));
  config.cpus = 0;
  expect_error([&] { load(memory, config); }, {"vCPUs"});
}

TEST_F(LoaderTest, LoadingAgainAfterDiscardGivesTheSameMemory) {
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::make_elf(small_pvh_kernel()));
  config.initrd = dir.write("initrd", test::pattern(10000, 8));
  config.cmdline = "console=ttyS0";
  config.cpus = 4;

  const BootImage first = load(memory, config);
  const test::Bytes low_first = test::read_guest_bytes(memory, 0, layout::kHighMemoryStart);
  const test::Bytes initrd_first = test::read_guest_bytes(memory, first.initrd->address, first.initrd->size);

  memory.discard();
  const BootImage second = load(memory, config);
  EXPECT_EQ(test::read_guest_bytes(memory, 0, layout::kHighMemoryStart), low_first);
  EXPECT_EQ(test::read_guest_bytes(memory, second.initrd->address, second.initrd->size), initrd_first);
  EXPECT_EQ(second.entry.rip, first.entry.rip);
  EXPECT_EQ(second.entry.rbx, first.entry.rbx);
  EXPECT_EQ(second.acpi.madt, first.acpi.madt);

  // Without a discard in between, too (the previous contents are overwritten).
  const BootImage third = load(memory, config);
  EXPECT_EQ(test::read_guest_bytes(memory, 0, layout::kHighMemoryStart), low_first);
  EXPECT_EQ(third.entry.rip, first.entry.rip);
}

TEST_F(LoaderTest, ReloadingWithADifferentConfigurationLeavesNothingStale) {
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::make_elf(small_pvh_kernel()));
  config.initrd = dir.write("initrd", test::pattern(10000, 8));
  config.cmdline = "a much longer command line than the next one";
  load(memory, config);

  config.initrd.reset();
  config.cmdline = "short";
  const BootImage second = load(memory, config);
  const auto info = test::read_guest<pvh_abi::StartInfo>(memory, layout::kStartInfoAddress);
  EXPECT_EQ(info.nr_modules, 0u);
  EXPECT_EQ(test::read_guest_string(memory, info.cmdline_paddr), "short");
  EXPECT_FALSE(second.initrd);
}

TEST_F(LoaderTest, DescribeNamesEveryPlacement) {
  BootConfig config;
  config.kernel = dir.write("kernel.elf", test::make_elf(small_pvh_kernel()));
  config.initrd = dir.write("initrd", test::pattern(10000, 8));
  config.cmdline = "quiet";
  const std::string text = describe(load(memory, config));
  for (const char* fragment : {"ELF via PVH", "entry 0x100000", "start_info at 0x6000", "command line at 0x20000",
                               "(5 bytes)", "initrd [0xffd000, 0xfff710)", "RSDP at 0xe0000", "with HPET",
                               "4 memory map entries"}) {
    EXPECT_NE(text.find(fragment), std::string::npos) << text << "\nlacks: " << fragment;
  }
}

}  // namespace
}  // namespace vmm::boot
