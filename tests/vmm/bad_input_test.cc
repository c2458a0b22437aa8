// The vmm binary as a user with a bad command line or bad files meets it:
// one line naming the problem and a documented status, checked before
// /dev/kvm is opened, so these run on any host (label unit).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/vmm/vmm_fixture.h"
#include "vmm/block_file.h"

namespace vmm::testing {
namespace {

// ------------------------------------------------------------- bad input

struct BadInput {
  const char* name;
  std::vector<std::string> args;
  int status;
  const char* message;
};

// ctest shows the case's name, not its bytes.
void PrintTo(const BadInput& input, std::ostream* os) { *os << input.name; }

// Placeholders stand for files made inside the test, named per process:
// test parameters are built in every ctest process, so files made there
// would be rewritten by one process while another's vmm reads them.
std::string scratch(const char* name) {
  return (std::filesystem::temp_directory_path() /
          ("vmm-bad-" + std::to_string(::getpid()) + "-" + name))
      .string();
}

std::string resolve(const std::string& arg) {
  if (arg == "GUEST") return test_guest();
  if (arg == "EMPTY") {
    std::ofstream(scratch("empty"), std::ios::binary);
    return scratch("empty");
  }
  if (arg == "GARBAGE") {
    std::ofstream(scratch("garbage"), std::ios::binary) << std::string(4096, 'x');
    return scratch("garbage");
  }
  if (arg == "SHORT_DISK") {
    std::ofstream(scratch("short-disk"), std::ios::binary) << std::string(511, 'd');
    return scratch("short-disk");
  }
  if (arg.rfind("DISK", 0) == 0 && (arg.size() == 4 || arg[4] == ',')) {  // DISK[,options]
    std::ofstream(scratch("disk"), std::ios::binary).put('\0');
    std::filesystem::resize_file(scratch("disk"), 1 << 20);  // sparse
    return scratch("disk") + arg.substr(4);
  }
  if (arg == "BIG_INITRD") {
    std::ofstream(scratch("initrd"), std::ios::binary).put('\0');
    std::filesystem::resize_file(scratch("initrd"), 100ull << 20);  // sparse
    return scratch("initrd");
  }
  return arg;
}

class VmmBadInput : public ::testing::TestWithParam<BadInput> {};

TEST_P(VmmBadInput, OneClearLineAndADocumentedStatus) {
  const BadInput& input = GetParam();
  std::vector<std::string> argv = {vmm_binary()};
  for (const auto& a : input.args) argv.push_back(resolve(a));
  const ProcessResult r = run_process(argv, std::chrono::seconds(30));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.signal, 0) << "crashed";
  EXPECT_EQ(r.exit_status, input.status) << r.err;
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("vmm: ", 0), 0u) << r.err;
  EXPECT_TRUE(contains(r.err, input.message)) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  for (const char* name : {"empty", "garbage", "initrd", "short-disk", "disk"}) std::filesystem::remove(scratch(name));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, VmmBadInput,
    ::testing::Values(
        BadInput{"missing_kernel", {"run", "--kernel", "/nonexistent/kernel"}, 4, "file not found"},
        BadInput{"directory_kernel", {"run", "--kernel", "/tmp"}, 4, "not a regular file"},
        BadInput{"empty_kernel", {"run", "--kernel", "EMPTY"}, 4, "empty"},
        BadInput{"garbage_kernel", {"run", "--kernel", "GARBAGE"}, 4,
                 "unrecognised format"},
        BadInput{"missing_initrd", {"run", "--kernel", "GUEST", "--initrd", "/nonexistent/initrd"}, 4,
                 "file not found"},
        BadInput{"initrd_too_large",
                 {"run", "--kernel", "GUEST", "--memory", "64M", "--initrd", "BIG_INITRD"},
                 4, "larger than guest memory"},
        BadInput{"memory_zero", {"run", "--kernel", "GUEST", "--memory", "0"}, 2, "more than 0"},
        BadInput{"memory_beyond_host", {"run", "--kernel", "GUEST", "--memory", "64T"}, 4, "this host's"},
        BadInput{"memory_garbage", {"run", "--kernel", "GUEST", "--memory", "lots"}, 2, "--memory"},
        BadInput{"zero_cpus", {"run", "--kernel", "GUEST", "--cpus", "0"}, 2, "at least 1"},
        BadInput{"too_many_cpus", {"run", "--kernel", "GUEST", "--cpus", "100000"}, 4, "exceeds"},
        BadInput{"unknown_option", {"run", "--kernel", "GUEST", "--frobnicate"}, 2, "--frobnicate"},
        BadInput{"no_kernel", {"run"}, 2, "--kernel is required"},
        BadInput{"unknown_option_without_kernel", {"run", "--frobnicate"}, 2, "--frobnicate"},
        BadInput{"kernel_and_kvm_both_missing",
                 {"run", "--kernel", "/nonexistent/kernel", "--kvm-device", "/nonexistent/kvm"}, 4,
                 "kernel /nonexistent/kernel: file not found"},
        BadInput{"bad_serial", {"run", "--kernel", "GUEST", "--serial", "tty:/dev/x"}, 2, "--serial"},
        // Disk images: checked before /dev/kvm is opened, like the kernel.
        BadInput{"missing_disk",
                 {"run", "--kernel", "GUEST", "--disk", "/nonexistent/disk.img", "--kvm-device", "/nonexistent/kvm"},
                 4, "disk image /nonexistent/disk.img: no such file"},
        BadInput{"directory_disk", {"run", "--kernel", "GUEST", "--disk", "/tmp"}, 4,
                 "not a regular file or block device"},
        BadInput{"short_disk", {"run", "--kernel", "GUEST", "--disk", "SHORT_DISK", "--kvm-device", "/nonexistent/kvm"},
                 4, "shorter than one 512-byte sector (511 bytes)"},
        BadInput{"same_disk_twice", {"run", "--kernel", "GUEST", "--disk", "DISK,readonly", "--disk", "DISK,readonly"},
                 4, "given twice"},
        BadInput{"disk_bad_option", {"run", "--kernel", "GUEST", "--disk", "DISK,fast"}, 2, "unknown option 'fast'"},
        BadInput{"disk_long_serial",
                 {"run", "--kernel", "GUEST", "--disk", "DISK,serial=123456789012345678901"}, 2, "longer than 20"},
        BadInput{"disk_no_path", {"run", "--kernel", "GUEST", "--disk", ",readonly"}, 2, "--disk"},
        BadInput{"kvm_absent", {"run", "--kernel", "GUEST", "--kvm-device", "/nonexistent/kvm"}, 4,
                 "is the kvm module loaded"},
        BadInput{"kvm_not_kvm", {"run", "--kernel", "GUEST", "--kvm-device", "/dev/null"}, 4,
                 "not a KVM device"}),
    [](const ::testing::TestParamInfo<BadInput>& param_info) { return param_info.param.name; });

// The image is locked: while one writer has it, a second vmm (writer or
// reader) is refused before it opens /dev/kvm; readers share.
TEST(VmmCli, ADiskInUseIsRefused) {
  const std::string disk = resolve("DISK");
  {
    auto writer = BlockFile::open(disk, BlockFile::Options{});
    for (const char* suffix : {"", ",readonly"}) {
      const ProcessResult r =
          run_process({vmm_binary(), "run", "--kernel", test_guest(), "--disk", disk + suffix, "--kvm-device",
                       "/nonexistent/kvm"},
                      std::chrono::seconds(30));
      EXPECT_EQ(r.exit_status, 4) << r.err;
      EXPECT_EQ(count_lines(r.err), 1u) << r.err;
      EXPECT_TRUE(contains(r.err, "in use")) << r.err;
    }
  }
  {
    BlockFile::Options read_only;
    read_only.read_only = true;
    auto reader = BlockFile::open(disk, read_only);
    const ProcessResult r = run_process(
        {vmm_binary(), "run", "--kernel", test_guest(), "--disk", disk + ",readonly", "--kvm-device", "/nonexistent/kvm"},
        std::chrono::seconds(30));
    EXPECT_EQ(r.exit_status, 4) << r.err;
    EXPECT_TRUE(contains(r.err, "/nonexistent/kvm")) << "a second reader got past the disk: " << r.err;
  }
  std::filesystem::remove(disk);
}

TEST(VmmCli, HelpAndVersionExitZero) {
  const ProcessResult help = run_process({vmm_binary(), "run", "--help"});
  EXPECT_EQ(help.exit_status, 0);
  EXPECT_TRUE(contains(help.out, "--kernel"));
  const ProcessResult top = run_process({vmm_binary(), "--help"});
  EXPECT_EQ(top.exit_status, 0);
  EXPECT_TRUE(contains(top.out, "Exit status")) << top.out;
  const ProcessResult version = run_process({vmm_binary(), "--version"});
  EXPECT_EQ(version.exit_status, 0);
  EXPECT_EQ(version.out.rfind("vmm ", 0), 0u) << version.out;
}

}  // namespace
}  // namespace vmm::testing
