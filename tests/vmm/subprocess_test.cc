// The end-to-end tests' process runner: a child that runs out of time is
// described and killed, and the runner never waits on it without a bound.
#include "tests/common/subprocess.h"

#include <gtest/gtest.h>

#include <chrono>

namespace vmm::testing {
namespace {

TEST(RunProcess, AChildThatRunsOutOfTimeIsDescribedKilledAndReaped) {
  bool asked = false;
  const ProcessResult r = run_process({"/bin/sh", "-c", "echo started; exec sleep 60"}, std::chrono::milliseconds(300),
                                      {}, {}, [&](pid_t) {
                                        asked = true;
                                        return std::string("asked while it ran");
                                      });
  EXPECT_TRUE(r.timed_out);
  EXPECT_TRUE(asked);
  EXPECT_EQ(r.signal, SIGKILL);
  EXPECT_EQ(r.out, "started\n");
  EXPECT_NE(r.err.find("asked while it ran"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the process's threads"), std::string::npos) << r.err;
  EXPECT_LT(r.wall_ms, 30'000);
}

TEST(RunProcess, AChildThatClosesItsOutputIsStillWaitedFor) {
  const ProcessResult r =
      run_process({"/bin/sh", "-c", "exec >/dev/null 2>&1; sleep 0.2; exit 3"}, std::chrono::seconds(20));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_status, 3);
  EXPECT_GE(r.wall_ms, 200);
}

TEST(RunProcess, WaitForExitIsBounded) {
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(wait_for_exit(::getpid(), std::chrono::milliseconds(100))) << "this process does not end";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
}  // namespace vmm::testing
