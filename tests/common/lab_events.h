// What the nested KVM lab (tools/kvm-lab) does to a test that no test can
// rule out, and the one way the end-to-end tests answer it: the boot is run
// once more and that is said, in the step's log ($VMM_LAB_EVENTS) and on
// standard error. Never on hardware KVM, and a second boot always stands.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/common/subprocess.h"

namespace vmm::testing {

// Inside tools/kvm-lab, which sets KVM_LAB=1 in the environment it runs
// commands with.
inline bool in_nested_lab() {
  const char* lab = std::getenv("KVM_LAB");
  return lab != nullptr && std::string(lab) == "1";
}

// A boot the nested lab cut short: the VM was reset for a CPU's triple
// fault although the test did not ask for one (its guest command line does
// not name one). The lab emulates AMD SVM in software, and there a guest
// CPU now and then triple-faults while taking an event the lab's KVM
// injected (README, "What still kills the lab"). Returns the VMM's log
// lines of those resets (level info), or nothing.
inline std::string cut_short_by_the_lab(const ProcessResult& process, const std::string& cmdline) {
  if (!in_nested_lab() || cmdline.find("triple") != std::string::npos) return {};
  std::string resets;
  std::istringstream log(process.err);
  for (std::string line; std::getline(log, line);) {
    if (line.find("vm: reset (") != std::string::npos &&
        line.find("triple fault (KVM_EXIT_SHUTDOWN)") != std::string::npos) {
      resets += line + "\n";
    }
  }
  return resets;
}

// Whether a run with these extra `vmm run` arguments may be run again:
// not when something outlives it (a disk image, a serial file), nor when
// our own LAPICs delivered its events (--irqchip), which a second run
// would then hide.
inline bool may_run_again(const std::vector<std::string>& extra) {
  return std::none_of(extra.begin(), extra.end(), [](const std::string& arg) {
    return arg.rfind("--disk", 0) == 0 || arg.rfind("--serial", 0) == 0 || arg.rfind("--irqchip", 0) == 0;
  });
}

// Says that a boot was tried again, where the step's log will show it:
// $VMM_LAB_EVENTS (tools/test.sh prints that file after each KVM step), and
// standard error.
inline void record_lab_event(const std::string& what) {
  std::fprintf(stderr, "lab event: %s\n", what.c_str());
  if (const char* path = std::getenv("VMM_LAB_EVENTS"); path && *path) {
    std::ofstream(path, std::ios::app) << what << "\n";
  }
}

// The resets that cut this first attempt (attempt 1) short in the lab, so
// that it is run once more, said through record_lab_event with the test's
// name; empty when the attempt stands (a second one always does).
inline std::string lab_cut_short_first_attempt(const ProcessResult& process, const std::string& cmdline,
                                               int attempt) {
  const std::string resets = attempt == 1 ? cut_short_by_the_lab(process, cmdline) : "";
  if (resets.empty()) return resets;
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string one_line = resets;
  std::replace(one_line.begin(), one_line.end(), '\n', ' ');
  record_lab_event(std::string(test ? test->test_suite_name() : "?") + "." + (test ? test->name() : "?") +
                   ": a triple fault it did not ask for; booted once more: " + one_line);
  return resets;
}

}  // namespace vmm::testing
