// vmm-stress with Linux as the guest: the seed loops (illumos 12476 was
// found rebooting and force-stopping guests in a tight loop) with a real
// kernel whose tick is on our HPET, so every reset lands on a device timer
// that is re-arming. In-process: one vmm-stress process creates, reboots,
// stops and destroys every VM, and must leak nothing.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/common/json_report.h"
#include "tests/linux/linux_fixture.h"

namespace vmm::testing {
namespace {

using nlohmann::json;

struct StressRun {
  ProcessResult process;
  json report;
  std::string explain() const {
    return "exit " + std::to_string(process.exit_status) + (process.timed_out ? " (timed out)" : "") +
           "\nstdout: " + process.out + "\nstderr: " + process.err.substr(0, 4000);
  }
};

StressRun run_linux_stress(std::vector<std::string> args) {
  std::vector<std::string> argv = {VMM_STRESS_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--guest", "linux", "--kernel", linux_kernel(KernelFormat::bzimage), "--initrd",
                           linux_initrd(), "--memory", "256M", "--json", "--no-progress",
                           // A Linux boot under emulation takes seconds, not milliseconds.
                           "--hang-timeout-ms", "120000"});
  StressRun run;
  run.process = run_process(argv, std::chrono::seconds(570));
  run.report = last_json_line(run.process.out);
  return run;
}

void expect_clean(const StressRun& run, std::uint64_t cycles) {
  ASSERT_TRUE(run.report.is_object()) << run.explain();
  EXPECT_EQ(run.process.exit_status, 0) << run.explain();
  EXPECT_EQ(run.report["cycles"], cycles) << run.explain();
  EXPECT_EQ(run.report["failures"], 0) << run.explain();
  EXPECT_EQ(run.report["hangs"], 0) << run.explain();
  EXPECT_EQ(run.report["fd_leak"], 0) << run.explain();
  EXPECT_EQ(run.report["thread_leak"], 0) << run.explain();
  EXPECT_EQ(run.report["ok"], true) << run.explain();
  std::printf("[ info ] %s\n", run.report.dump().c_str());
}

// One VM reboots once (the baseline for leaks), then one VM reboots 50
// times in a row: each boot must reach /init (vmm-stress counts the
// initramfs's readiness line) and the last one powers off. Reboot methods
// rotate: i8042, triple fault, the FADT reset register, port 0xCF9.
// About 4 s a boot in the lab. Longer runs by hand:
//   vmm-stress reboot --guest linux --cycles 301 --warmup 1 --reboots-per-vm 50 ...
TEST(LinuxStress, FiftyConsecutiveRebootsInOneProcess) {
  VMM_REQUIRE_LINUX_GUEST();
  const StressRun run = run_linux_stress({"reboot", "--cycles", "51", "--warmup", "1", "--reboots-per-vm", "50"});
  expect_clean(run, 51);
  EXPECT_EQ(run.report["vm_runs"], 2) << run.explain();
}

// A hundred VMs, two at a time, each stopped by force at a random moment of
// its first three seconds: mostly while the kernel boots, some at /init.
TEST(LinuxStress, HundredForcedStopsAtRandomMomentsOfABoot) {
  VMM_REQUIRE_LINUX_GUEST();
  const StressRun run =
      run_linux_stress({"stop-force", "--cycles", "100", "--vms", "2", "--jitter-ms", "0-3000", "--seed", "12476"});
  expect_clean(run, 100);
  ASSERT_TRUE(run.report.contains("landed")) << run.explain();
  EXPECT_GT(run.report["landed"]["booting"].get<int>(), 0) << run.explain();
  EXPECT_EQ(run.report["ended_early"], 0) << "the guest sleeps at /init: nothing ends on its own\n" << run.explain();
}

}  // namespace
}  // namespace vmm::testing
