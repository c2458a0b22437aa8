// Shared by the end-to-end tests: where the vmm binary and the test guest
// are, and the rule for /dev/kvm (run here; skip only where it is absent).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/common/lab_events.h"
#include "tests/common/skip.h"
#include "tests/common/subprocess.h"

namespace vmm::testing {

inline std::string vmm_binary() { return VMM_BINARY; }

// The test guest: $VMM_TESTGUEST_ELF (sanitizer builds do not build it and
// point at the release build's), else the one this build made.
inline std::string test_guest() {
  if (const char* env = std::getenv("VMM_TESTGUEST_ELF"); env && *env) return env;
  return VMM_TESTGUEST_DEFAULT;
}

// True when the test may go on. A missing guest is a failure, not a skip.
inline bool have_test_guest() {
  const std::string path = test_guest();
  if (path.empty() || ::access(path.c_str(), R_OK) != 0) {
    ADD_FAILURE() << "the test guest '" << path
                  << "' is missing: build the testguest target, or set VMM_TESTGUEST_ELF";
    return false;
  }
  return true;
}

#define VMM_REQUIRE_KVM()                                     \
  do {                                                        \
    VMM_SKIP_UNLESS_KVM();                                    \
    if (!::vmm::testing::have_test_guest()) return;           \
  } while (0)

// `vmm run --kernel <guest> --memory 64M --debug-exit --cmdline "<cmdline>"
// <extra...>`: the test guest reports its verdict through the debug-exit port.
// A run the lab cut short (lab_events.h; its reset lines need --log-level
// info) runs once more, as the Linux suite's boots do, when may_run_again.
inline ProcessResult run_guest(const std::string& cmdline, std::vector<std::string> extra = {},
                               std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  std::vector<std::string> argv = {vmm_binary(), "run", "--kernel", test_guest(), "--memory", "64M",
                                   "--debug-exit", "--cmdline", cmdline};
  argv.insert(argv.end(), extra.begin(), extra.end());
  ProcessResult result = run_process(argv, timeout);
  if (may_run_again(extra)) {
    if (const std::string resets = lab_cut_short_first_attempt(result, cmdline, 1); !resets.empty()) {
      result = run_process(argv, timeout);
      result.err = "(a first run, run again: " + resets + ")\n" + result.err;
    }
  }
  return result;
}

// What the debug-exit port turns guest exit code v into (QEMU's rule).
constexpr int debug_exit_status(int v) { return (v << 1) | 1; }
constexpr int kGuestOk = debug_exit_status(0);
constexpr int kGuestFailed = debug_exit_status(1);
constexpr int kGuestException = debug_exit_status(3);

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace vmm::testing
