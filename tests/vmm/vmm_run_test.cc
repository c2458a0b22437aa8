// The real `vmm` binary on this host's /dev/kvm, running the project's test
// guest: boots, SMP, every timer, re-arm storms, reboots through every reset
// path with all timers running, power-off, a register-fuzzing guest, and the
// host-side ways a run ends.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "tests/vmm/vmm_fixture.h"

namespace vmm::testing {
namespace {

TEST(VmmRun, BootsTheTestGuestWithOneVcpu) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=boot");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: boot ok")) << r.out;
  EXPECT_TRUE(r.err.empty()) << "a clean boot logs nothing at the default level:\n" << r.err;
}

class VmmSmp : public ::testing::TestWithParam<int> {};

TEST_P(VmmSmp, StartsEveryVcpuThroughInitSipi) {
  VMM_REQUIRE_KVM();
  const int cpus = GetParam();
  const ProcessResult r = run_guest("test=smp", {"--cpus", std::to_string(cpus)});
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: smp ok cpus=" + std::to_string(cpus))) << r.out;
}
INSTANTIATE_TEST_SUITE_P(Vcpus, VmmSmp, ::testing::Values(1, 2, 4));

TEST(VmmRun, EveryTimerDeliversAtItsRate) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=timers");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  // One line per timer, in the guest's fixed format:
  // "timer NAME hz=... late_p50_us=... late_p99_us=... count=..."
  std::set<std::string> seen;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string word, name, hz, p50, p99, count;
    if (fields >> word >> name >> hz >> p50 >> p99 >> count && word == "timer" && hz.rfind("hz=", 0) == 0 &&
        p50.rfind("late_p50_us=", 0) == 0 && p99.rfind("late_p99_us=", 0) == 0 && count.rfind("count=", 0) == 0) {
      seen.insert(name);
    }
  }
  for (const char* name : {"pit", "rtc", "hpet0-periodic", "hpet0-oneshot", "hpet1-periodic", "hpet1-oneshot",
                           "hpet2-periodic", "hpet2-oneshot", "lapic-periodic", "lapic-oneshot",
                           "lapic-tscdeadline"}) {
    EXPECT_TRUE(seen.count(name)) << "no line for timer " << name << "\n" << r.out;
  }
}

// A guest on the 8259s alone (virtual-wire LINT0): every PIT tick must
// reach it as an ExtINT that vCPU 0 injects with KVM_INTERRUPT.
TEST(VmmRun, The8259PairDeliversThroughExtInt) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=pic");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: pic ok")) << r.out;
}

TEST(VmmRun, GuestReArmingPeriodicTimersWhileTheyFireKeepsThemRunning) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=retimer seconds=2");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: retimer ok")) << r.out;
}

TEST(VmmRun, HundredRebootsWithEveryTimerRunning) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=reboot count=100", {"--log-level", "info"});
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out.substr(r.out.size() > 2000 ? r.out.size() - 2000 : 0) << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: reboot ok boots=100"));
  EXPECT_TRUE(contains(r.err, "99 reboots")) << r.err.substr(r.err.size() > 500 ? r.err.size() - 500 : 0);
}

class VmmResetPath : public ::testing::TestWithParam<const char*> {};

TEST_P(VmmResetPath, RebootsWithTimersRunning) {
  VMM_REQUIRE_KVM();
  const std::string via = GetParam();
  const ProcessResult r = run_guest("test=reboot count=5 via=" + via, {"--log-level", "info"});
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: reboot ok boots=5")) << r.out;
  EXPECT_TRUE(contains(r.err, "4 reboots")) << r.err;
}
INSTANTIATE_TEST_SUITE_P(Via, VmmResetPath, ::testing::Values("kbd", "triple", "acpi", "cf9"));

TEST(VmmRun, NoRebootTurnsAGuestResetIntoExitZero) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=reboot count=5", {"--no-reboot", "--log-level", "info"});
  EXPECT_EQ(r.exit_status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "--no-reboot")) << r.err;
  EXPECT_FALSE(contains(r.out, "boot 2 of 5")) << "the guest must not boot a second time";
}

TEST(VmmRun, TripleFaultIsReportedNotACrash) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=fault kind=triple", {"--no-reboot", "--log-level", "info"});
  EXPECT_EQ(r.exit_status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "triple fault")) << r.err;
}

TEST(VmmRun, AcpiPowerOffExitsWithZero) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=poweroff");
  EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "S5")) << r.out;
}

TEST(VmmRun, GuestExceptionReachesTheDebugExitStatus) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=fault kind=ud");
  EXPECT_EQ(r.exit_status, kGuestException) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "vector=6")) << r.out;
}

// Random values at every width to every device register and to stray
// addresses: the VMM stays up, the guest finishes, the log stays bounded.
TEST(VmmRun, AGuestWritingAnythingAnywhereLeavesTheVmmRunning) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=chaos ops=5000");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.err.substr(0, 3000);
  EXPECT_TRUE(contains(r.out, "testguest: chaos ok")) << r.out.substr(r.out.size() > 500 ? r.out.size() - 500 : 0);
  EXPECT_LT(count_lines(r.err), 200u) << "the log must be rate-limited:\n" << r.err.substr(0, 3000);
}

TEST(VmmRun, SerialToAFileAndToNull) {
  VMM_REQUIRE_KVM();
  const auto path = std::filesystem::temp_directory_path() / ("vmm-serial-" + std::to_string(::getpid()));
  const ProcessResult to_file = run_guest("test=boot", {"--serial", "file:" + path.string()});
  EXPECT_EQ(to_file.exit_status, kGuestOk) << to_file.err;
  EXPECT_TRUE(to_file.out.empty());
  std::ifstream in(path);
  std::stringstream written_stream;
  written_stream << in.rdbuf();
  const std::string written = written_stream.str();
  EXPECT_TRUE(contains(written, "testguest: boot ok")) << written;
  std::filesystem::remove(path);

  const ProcessResult to_null = run_guest("test=boot", {"--serial", "null"});
  EXPECT_EQ(to_null.exit_status, kGuestOk);
  EXPECT_TRUE(to_null.out.empty());
}

TEST(VmmRun, SigtermTwiceStopsByForce) {
  VMM_REQUIRE_KVM();
  // A guest that runs until stopped: endless reboots with every timer on.
  std::atomic<pid_t> child{0};
  ProcessResult r;
  std::thread runner([&] {
    r = run_process({vmm_binary(), "run", "--kernel", test_guest(), "--memory", "64M", "--cmdline",
                     "test=reboot count=65535"},
                    std::chrono::seconds(60), {}, [&](pid_t pid) { child.store(pid); });
  });
  while (child.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // This guest has no ACPI driver, so the power button the first SIGTERM
  // presses goes unanswered; the second one stops it by force.
  ::kill(child.load(), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ::kill(child.load(), SIGTERM);
  runner.join();
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.exit_status, 8) << r.err;
}

// ------------------------------------------------------------- bad input

struct BadInput {
  const char* name;
  std::vector<std::string> args;
  int status;
  const char* message;
};

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
  for (const char* name : {"empty", "garbage", "initrd"}) std::filesystem::remove(scratch(name));
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
        BadInput{"bad_serial", {"run", "--kernel", "GUEST", "--serial", "tty:/dev/x"}, 2, "--serial"},
        BadInput{"kvm_absent", {"run", "--kernel", "GUEST", "--kvm-device", "/nonexistent/kvm"}, 4,
                 "is the kvm module loaded"},
        BadInput{"kvm_not_kvm", {"run", "--kernel", "GUEST", "--kvm-device", "/dev/null"}, 4,
                 "not a KVM device"}),
    [](const ::testing::TestParamInfo<BadInput>& param_info) { return param_info.param.name; });

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
