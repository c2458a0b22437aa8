// Short runs of vmm-stress's loops (reboot, start / force-stop; in-process
// and with `vmm` processes), as CI runs them in the release, ASan and TSan
// builds; with fault injection when the build has it (VMM_FAULT_INJECTION).
// Plus the tool's own failure paths, so that a clean run means something: a
// guest that fails, a VMM that exits on its own, one that ignores every stop
// (the watchdog), each must turn into a failing exit status.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/common/json_report.h"
#include "tests/common/skip.h"
#include "tests/common/subprocess.h"

namespace vmm::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::string test_guest() {
  if (const char* env = std::getenv("VMM_TESTGUEST_ELF"); env && *env) return env;
  return VMM_TESTGUEST_DEFAULT;
}

// Sanitizer builds are several times slower; the loops' own hang timeout
// stays well inside ctest's.
constexpr auto kRunTimeout = std::chrono::seconds(400);
constexpr const char* kHangTimeoutMs = "60000";
// The process loops start a vmm per cycle. Under a sanitizer each start
// costs seconds in the nested lab, and what the sanitizer checks (every
// stop and reboot path, each of the four stop methods) is covered in a third
// of the cycles; the release build runs them all and counts the leaks.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kProcessCycleDivisor = 3;
#else
constexpr int kProcessCycleDivisor = 1;
#endif

#if defined(VMM_FAULT_INJECTION)
// Every race point, a few percent of the time, up to 0.3 ms: enough to
// reorder what the loops race, not so much that the short runs crawl.
constexpr const char* kFaultSpec = "all:0.03:300";
#endif

#define REQUIRE_KVM_AND_GUEST()                                                                     \
  do {                                                                                              \
    VMM_SKIP_UNLESS_KVM();                                                                          \
    if (::access(test_guest().c_str(), R_OK) != 0) {                                                \
      FAIL() << "the test guest '" << test_guest()                                                  \
             << "' is missing: build the testguest target, or set VMM_TESTGUEST_ELF (sanitizer "    \
                "builds: the release build's guest-images/testguest.elf)";                          \
    }                                                                                               \
  } while (0)

struct StressRun {
  ProcessResult process;
  json report;  // the --json object (null if none)
};

StressRun run_stress(std::vector<std::string> args, bool inject = true) {
  std::vector<std::string> argv = {VMM_STRESS_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--kernel", test_guest(), "--json", "--no-progress"});
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Shadow memory and quarantines grow with what the run touches: under a
  // sanitizer RSS says little about leaks (fds and threads still do).
  argv.insert(argv.end(), {"--rss-limit-kib", "1048576"});
#endif
#if defined(VMM_FAULT_INJECTION)
  if (inject) argv.insert(argv.end(), {"--fault-inject", kFaultSpec});
#else
  (void)inject;
#endif
  StressRun run;
  run.process = run_process(argv, kRunTimeout);
  run.report = last_json_line(run.process.out);
  return run;
}

std::string explain(const StressRun& run) {
  return "exit " + std::to_string(run.process.exit_status) + (run.process.timed_out ? " (timed out)" : "") +
         "\nstdout: " + run.process.out + "\nstderr: " + run.process.err.substr(0, 4000);
}

// What every clean run must show.
void expect_clean(const StressRun& run, std::uint64_t cycles) {
  ASSERT_TRUE(run.report.is_object()) << explain(run);
  EXPECT_EQ(run.process.exit_status, 0) << explain(run);
  EXPECT_EQ(run.report["cycles"], cycles) << explain(run);
  EXPECT_EQ(run.report["failures"], 0) << explain(run);
  EXPECT_EQ(run.report["hangs"], 0) << explain(run);
  EXPECT_EQ(run.report["fd_leak"], 0) << explain(run);
  EXPECT_EQ(run.report["thread_leak"], 0) << explain(run);
  EXPECT_EQ(run.report["ok"], true) << explain(run);
  std::printf("[ info ] %s: %s cycles, %.1f/s, rss_growth_kib=%s, stop_ms=%s%s\n",
              run.report.value("mode", "?").c_str(), run.report["cycles"].dump().c_str(),
              run.report.value("rate_per_s", 0.0), run.report["rss_growth_kib"].dump().c_str(),
              run.report.contains("stop_ms") ? run.report["stop_ms"].dump().c_str() : "-",
              run.report.contains("fault_injection") ? (" faults=" + run.report["fault_injection"].dump()).c_str() : "");
}

// With fault injection on, the run must have actually injected something.
void expect_faults_injected([[maybe_unused]] const StressRun& run) {
#if defined(VMM_FAULT_INJECTION)
  ASSERT_TRUE(run.report.contains("fault_injection")) << explain(run);
  std::uint64_t delays = 0;
  for (const auto& [name, point] : run.report["fault_injection"]["points"].items()) {
    delays += point["delays"].get<std::uint64_t>();
  }
  EXPECT_GT(delays, 0u) << run.report["fault_injection"].dump();
#endif
}

TEST(VmmStress, RebootInProcess) {
  REQUIRE_KVM_AND_GUEST();
  const StressRun run = run_stress({"reboot", "--cycles", "50", "--reboots-per-vm", "20", "--hang-timeout-ms", kHangTimeoutMs});
  expect_clean(run, 50);
  EXPECT_EQ(run.report["vm_runs"], 4) << "the warm-up's 5 reboots, then 20, 20 and 5";
  expect_faults_injected(run);
}

TEST(VmmStress, RebootProcess) {
  REQUIRE_KVM_AND_GUEST();
  const int cycles = 50 / kProcessCycleDivisor;
  const StressRun run = run_stress({"reboot", "--process", "--cycles", std::to_string(cycles), "--reboots-per-vm",
                                    std::to_string(cycles / 2), "--hang-timeout-ms", kHangTimeoutMs});
  expect_clean(run, cycles);
  EXPECT_EQ(run.report["leftover_processes"], 0);
  EXPECT_EQ(run.report["leftover_sockets"], 0);
}

TEST(VmmStress, StopForceInProcess) {
  REQUIRE_KVM_AND_GUEST();
  const StressRun run = run_stress(
      {"stop-force", "--cycles", "50", "--vms", "2", "--jitter-ms", "0-40", "--hang-timeout-ms", kHangTimeoutMs});
  expect_clean(run, 50);
  // Stops landed while the guest ran its timers (and, by chance, elsewhere).
  EXPECT_GT(run.report["landed"]["scenario"].get<int>() + run.report["landed"]["resetting"].get<int>(), 0);
  expect_faults_injected(run);
}

TEST(VmmStress, StopForceProcess) {
  REQUIRE_KVM_AND_GUEST();
  const int cycles = 48 / kProcessCycleDivisor;
  const StressRun run = run_stress({"stop-force", "--process", "--cycles", std::to_string(cycles), "--vms", "2",
                                    "--jitter-ms", "0-40", "--hang-timeout-ms", kHangTimeoutMs});
  expect_clean(run, cycles);
  EXPECT_EQ(run.report["leftover_processes"], 0);
  EXPECT_EQ(run.report["leftover_sockets"], 0);
  // All four ways to stop were used: vmm ctl, the client library, SIGTERM
  // then SIGINT, SIGTERM repeated.
  EXPECT_EQ(run.report["stop_ms_by_method"].size(), 4u) << run.report["stop_ms_by_method"].dump();
}

// ------------------------------------------------- the tool can fail

// A stand-in for `vmm` in a private directory.
class FakeVmm {
 public:
  explicit FakeVmm(const std::string& script) {
    std::string pattern = (std::filesystem::temp_directory_path() / "vmm-stress-test.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp");
    dir_ = pattern;
    std::ofstream(path()) << "#!/bin/sh\n" << script << "\n";
    ::chmod(path().c_str(), 0755);
  }
  ~FakeVmm() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path() const { return dir_ + "/vmm"; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

bool processes_mentioning(const std::string& marker) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::string cmdline;
    std::getline(in, cmdline);  // NUL-separated arguments, no newline: all of it
    if (std::stol(name) != ::getpid() && cmdline.find(marker) != std::string::npos) return true;
  }
  return false;
}

TEST(VmmStress, AGuestThatFailsIsAFailure) {
  REQUIRE_KVM_AND_GUEST();
  // An unknown reset method: every boot fails its scenario.
  const StressRun run =
      run_stress({"reboot", "--cycles", "4", "--reboots-per-vm", "2", "--warmup", "2", "--cmdline", "test=reboot via=nosuch"},
                 false);
  ASSERT_TRUE(run.report.is_object()) << explain(run);
  EXPECT_NE(run.process.exit_status, 0);
  EXPECT_EQ(run.report["failures"], 2) << "two VMs, both failed";
  EXPECT_NE(run.process.err.find("via=nosuch"), std::string::npos) << "the guest's words are reported: " << run.process.err;
}

TEST(VmmStress, AVmmThatExitsOnItsOwnIsAFailure) {
  REQUIRE_KVM_AND_GUEST();
  FakeVmm fake("exit 0");
  const StressRun run = run_stress({"stop-force", "--process", "--cycles", "4", "--jitter-ms", "5", "--vmm", fake.path()}, false);
  ASSERT_TRUE(run.report.is_object()) << explain(run);
  EXPECT_NE(run.process.exit_status, 0);
  EXPECT_EQ(run.report["failures"], 4) << explain(run);
}

TEST(VmmStress, TheWatchdogReportsAHangAndLeavesNoProcessBehind) {
  REQUIRE_KVM_AND_GUEST();
  // Ignores every stop request and never opens its socket.
  FakeVmm fake("trap '' TERM INT HUP\nwhile :; do sleep 1; done");
  const StressRun run = run_stress(
      {"stop-force", "--process", "--cycles", "3", "--jitter-ms", "1", "--hang-timeout-ms", "1500", "--vmm", fake.path()},
      false);
  EXPECT_EQ(run.process.exit_status, 3) << explain(run);
  EXPECT_NE(run.process.err.find("HANG"), std::string::npos) << explain(run);
  EXPECT_NE(run.process.err.find("threads of pid"), std::string::npos) << "the stuck child's threads are listed";
  EXPECT_NE(run.process.err.find("threads of vmm-stress"), std::string::npos);
  EXPECT_EQ(run.report["hangs"], 1) << explain(run);
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(processes_mentioning(fake.dir())) << "the hung child was cleaned up";
}

#if defined(VMM_FAULT_INJECTION)
// A vCPU that takes seconds to acknowledge a kick: the forced stop cannot
// complete, and the watchdog must say so with the threads' states.
TEST(VmmStress, TheWatchdogCatchesAStuckVcpuInProcess) {
  REQUIRE_KVM_AND_GUEST();
  std::vector<std::string> argv = {VMM_STRESS_BINARY, "stop-force",       "--cycles", "3", "--jitter-ms", "20",
                                   "--hang-timeout-ms", "1000",            "--kernel", test_guest(),
                                   "--fault-inject",  "vcpu_exit_before_kick_ack:1:10000000", "--json", "--no-progress"};
  const ProcessResult r = run_process(argv, kRunTimeout);
  EXPECT_EQ(r.exit_status, 3) << r.out << r.err;
  EXPECT_NE(r.err.find("HANG"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("vcpu-0"), std::string::npos) << "the vCPU thread is listed: " << r.err;
  EXPECT_NE(r.err.find("vm status: state="), std::string::npos) << r.err;
}
#endif

}  // namespace
}  // namespace vmm::testing
