// The rule by which an end-to-end test boots once more in the nested lab
// (tests/common/lab_events.h): only in the lab, only for a triple fault the
// guest's command line did not ask for, only the first attempt, and always
// said in $VMM_LAB_EVENTS. (Which log lines are such a fault:
// LinuxFixture.OnlyATripleFaultInTheLabThatTheTestDidNotAskForIsBootedAgain.)
#include "tests/common/lab_events.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "tests/common/temp_dir.h"

namespace vmm::testing {
namespace {

// As the VMM logs it (level info) in the lab.
constexpr const char* kUnaskedTripleFault =
    "vmm: info: vm: reset (vcpu 0: triple fault (KVM_EXIT_SHUTDOWN) at rip 0xfff0 (the reset vector: registers "
    "already reset by KVM, as on AMD)) 212.4 ms and 3400 vCPU 0 entries into boot 41\n";

// Sets (or clears, with nullptr) an environment variable for one test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    set(value);
  }
  ~ScopedEnv() { set(old_ ? old_->c_str() : nullptr); }

 private:
  void set(const char* value) const {
    if (value) {
      ::setenv(name_, value, 1);
    } else {
      ::unsetenv(name_);
    }
  }
  const char* name_;
  std::optional<std::string> old_;
};

ProcessResult with_log(const std::string& err) {
  ProcessResult r;
  r.err = err;
  return r;
}

TEST(LabEvents, AnUnaskedTripleFaultInTheLabRunsOnceMoreAndIsRecorded) {
  TempDir dir("lab-events");
  const std::string events = (dir.path() / "events").string();
  ScopedEnv lab("KVM_LAB", "1");
  ScopedEnv file("VMM_LAB_EVENTS", events.c_str());
  const std::string resets = lab_cut_short_first_attempt(with_log(kUnaskedTripleFault), "test=reboot count=100", 1);
  EXPECT_EQ(resets, kUnaskedTripleFault);
  std::ifstream in(events);
  std::stringstream recorded;
  recorded << in.rdbuf();
  EXPECT_NE(recorded.str().find("LabEvents.AnUnaskedTripleFaultInTheLabRunsOnceMoreAndIsRecorded: a triple fault "
                                "it did not ask for"),
            std::string::npos)
      << recorded.str();
}

TEST(LabEvents, EverythingElseStands) {
  TempDir dir("lab-events");
  const std::string events = (dir.path() / "events").string();
  ScopedEnv file("VMM_LAB_EVENTS", events.c_str());
  {
    ScopedEnv lab("KVM_LAB", nullptr);  // hardware KVM: no lab to blame
    EXPECT_EQ(lab_cut_short_first_attempt(with_log(kUnaskedTripleFault), "test=reboot", 1), "");
  }
  ScopedEnv lab("KVM_LAB", "1");
  EXPECT_EQ(lab_cut_short_first_attempt(with_log(kUnaskedTripleFault), "test=reboot", 2), "")
      << "a second attempt always stands";
  EXPECT_EQ(lab_cut_short_first_attempt(with_log(kUnaskedTripleFault), "test=reboot via=triple", 1), "")
      << "the guest asked for its triple faults";
  const ProcessResult asked =
      with_log("vmm: info: vm: reset (vcpu 0: i8042 reset line) 9.0 ms and 10 vCPU 0 entries\n");
  EXPECT_EQ(lab_cut_short_first_attempt(asked, "test=reboot", 1), "") << "a reset the guest asked for";
  EXPECT_FALSE(std::ifstream(events).good()) << "nothing was recorded";
  EXPECT_TRUE(may_run_again({"--log-level", "info"}));
  EXPECT_FALSE(may_run_again({"--disk=/tmp/image"})) << "the image outlives the run";
  EXPECT_FALSE(may_run_again({"--serial", "file:/tmp/out"})) << "the file outlives the run";
  EXPECT_FALSE(may_run_again({"--irqchip=userspace"})) << "our LAPICs delivered its events";
}

}  // namespace
}  // namespace vmm::testing
