// The Vm in-process, on this host's /dev/kvm: the legacy timers follow vCPU
// 0 from CPU to CPU, resets that arrive together make one reboot, and a VM
// can be created, run, stopped at any moment and destroyed again and again.
#include "vmm/vm.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "tests/vmm/vmm_fixture.h"
#include "vmm/vcpu.h"

namespace vmm::testing {
namespace {

using namespace std::chrono_literals;

// The kick signal must be blocked before any thread exists: a global
// environment runs before the first test creates one.
class KickSignalEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    signals_.emplace();
    spdlog::set_level(spdlog::level::warn);  // the VM's info lines are not test output
  }
  std::optional<KvmSignals> signals_;
};
const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new KickSignalEnvironment);

VmConfig config_for(const std::string& cmdline, unsigned cpus = 1, bool userspace_irqchip = false) {
  VmConfig config;
  config.userspace_irqchip = userspace_irqchip;
  config.boot.kernel = test_guest();
  config.boot.cmdline = cmdline;
  config.boot.cpus = cpus;
  config.memory = 64ull << 20;
  config.debug_exit = true;  // the test guest's verdict
  return config;
}

std::optional<pid_t> thread_named(const std::string& name) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(entry.path() / "comm");
    std::string line;
    std::getline(comm, line);
    if (line == name) return static_cast<pid_t>(std::stol(entry.path().filename().string()));
  }
  return std::nullopt;
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

// Runs vm.run() on a thread; whatever the test does (a failed ASSERT
// included), the VM is stopped and joined when this goes out of scope.
class Running {
 public:
  explicit Running(Vm& vm) : vm_(vm), outcome_(std::async(std::launch::async, [&vm] { return vm.run(); })) {}
  ~Running() {
    if (outcome_.valid()) {
      vm_.force_stop();
      outcome_.wait();
    }
  }
  VmOutcome get() { return outcome_.get(); }

 private:
  Vm& vm_;
  std::future<VmOutcome> outcome_;
};

TEST(VmInProcess, LegacyTimersFollowVcpuZeroToItsCpu) {
  VMM_REQUIRE_KVM();
  VMM_SKIP_UNLESS(std::thread::hardware_concurrency() >= 2, "needs two CPUs to move vCPU 0 between");
  KvmSystem kvm;
  timers::CyclicSystem timers;
  ASSERT_GE(timers.loop_count(), 2u);
  const int cpu_a = timers.loop(0).cpu();
  const int cpu_b = timers.loop(1).cpu();
  // The guest re-arms the PIT, HPET and LAPIC timers for four seconds and
  // checks their rates: it only passes if they keep firing wherever vCPU 0
  // (and with it the PIT/RTC/HPET callouts) is moved meanwhile.
  Vm vm(config_for("test=retimer seconds=4"), kvm, timers);
  Running running(vm);

  ASSERT_TRUE(eventually([] { return thread_named("vcpu-0").has_value(); }));
  const pid_t vcpu0 = *thread_named("vcpu-0");
  for (int cpu : {cpu_a, cpu_b, cpu_a, cpu_b}) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ASSERT_EQ(::sched_setaffinity(vcpu0, sizeof set, &set), 0) << std::strerror(errno);
    EXPECT_TRUE(eventually([&] { return vm.legacy_timer_loop() && vm.legacy_timer_loop()->cpu() == cpu; }, 2s))
        << "the PIT/RTC/HPET callouts did not move to CPU " << cpu;
    std::this_thread::sleep_for(300ms);
  }
  const VmOutcome outcome = running.get();
  EXPECT_EQ(outcome.exit_status, kGuestOk) << outcome.message;
}

TEST(VmInProcess, ResetsRaisedTogetherMakeOneReboot) {
  VMM_REQUIRE_KVM();
  KvmSystem kvm;
  timers::CyclicSystem timers;
  Vm vm(config_for("test=reboot count=20 via=double"), kvm, timers);
  const VmOutcome outcome = vm.run();
  EXPECT_EQ(outcome.end, VmEnd::debug_exit);
  EXPECT_EQ(outcome.exit_status, kGuestOk) << outcome.message;
  EXPECT_EQ(outcome.reboots, 19u) << "20 boots are 19 reboots; more means a reset was not coalesced";
}

void host_reset_storm(bool userspace_irqchip) {
  KvmSystem kvm;
  timers::CyclicSystem timers;
  Vm vm(config_for("test=reboot count=65535", 1, userspace_irqchip), kvm, timers);
  Running outcome(vm);
  std::mt19937 rng(3);
  int accepted = 0;
  for (int i = 0; i < 40; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 15));
    accepted += vm.reset() ? 1 : 0;
  }
  EXPECT_GT(accepted, 0);
  // The guest goes on rebooting itself after the storm: no reset wedged it.
  // Counted from here, not as a total, so a slow host (a sanitizer in the
  // nested lab) does not turn into a failure.
  const std::uint64_t after_storm = vm.status().reboots;
  EXPECT_TRUE(eventually([&] { return vm.status().reboots >= after_storm + 5; }, 60s))
      << "stuck at " << vm.status().reboots << " reboots";
  vm.force_stop();
  EXPECT_EQ(outcome.get().end, VmEnd::stopped);
}

TEST(VmInProcess, HostResetRequestsWhileTheGuestRebootsItself) {
  VMM_REQUIRE_KVM();
  host_reset_storm(false);
}

// The LAPICs and their timers are ours: each host reset drains and resets
// them with the other device timers while the guest re-arms them.
TEST(VmInProcessUserspaceIrqchip, HostResetRequestsWhileTheGuestRebootsItself) {
  VMM_REQUIRE_KVM();
  host_reset_storm(true);
}

void refuses_senseless_requests(bool userspace_irqchip) {
  KvmSystem kvm;
  timers::CyclicSystem timers;
  Vm vm(config_for("test=reboot count=65535", 1, userspace_irqchip), kvm, timers);
  std::string why;
  EXPECT_FALSE(vm.resume(&why));
  EXPECT_FALSE(why.empty());
  Running outcome(vm);
  ASSERT_TRUE(eventually([&] { return vm.status().state == VmState::running; }));
  EXPECT_FALSE(vm.resume(&why)) << "resume while running";
  ASSERT_TRUE(vm.pause(&why)) << why;
  ASSERT_TRUE(eventually([&] { return vm.status().state == VmState::paused; }));
  const std::uint64_t reboots = vm.status().reboots;
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(vm.status().reboots, reboots) << "a paused guest must not run";
  ASSERT_TRUE(vm.resume(&why)) << why;
  EXPECT_TRUE(eventually([&] { return vm.status().reboots > reboots; }));
  ASSERT_TRUE(vm.stop(&why)) << why;
  EXPECT_FALSE(vm.stop(&why)) << "stop while stopping";
  vm.force_stop();
  EXPECT_EQ(outcome.get().end, VmEnd::stopped);
}

// A host reset of a paused VM: the reboot runs the guest again with every
// timer device live (the RTC and HPET used to stay paused: status said
// running, resume was refused, and neither timer fired again).
TEST(VmInProcess, ResetWhilePausedRestartsEveryTimer) {
  VMM_REQUIRE_KVM();
  KvmSystem kvm;
  timers::CyclicSystem timers;
  Vm vm(config_for("test=timers"), kvm, timers);
  Running running(vm);
  ASSERT_TRUE(eventually([&] { return vm.status().state == VmState::running; }));
  std::string why;
  ASSERT_TRUE(vm.pause(&why)) << why;
  ASSERT_TRUE(eventually([&] { return vm.status().state == VmState::paused; }));
  ASSERT_TRUE(vm.reset(&why)) << why;
  ASSERT_TRUE(eventually([&] { return vm.status().boot_generation == 1; }));
  EXPECT_EQ(vm.status().state, VmState::running);
  const VmOutcome outcome = running.get();
  EXPECT_EQ(outcome.exit_status, kGuestOk) << "the rebooted guest's timers did not all fire: " << outcome.message;
}

// Hang reports sample where each vCPU is: every vCPU answers with its
// registers each time, and the guest, paused only to be read, still passes.
TEST(VmInProcess, SamplingTheVcpusReadsEachAndLetsTheGuestRunOn) {
  VMM_REQUIRE_KVM();
  KvmSystem kvm;
  timers::CyclicSystem timers;
  // A guest that keeps re-arming its timers for a second: long enough to be
  // sampled three times, short enough for the sanitizer builds.
  Vm vm(config_for("test=retimer seconds=1", 2), kvm, timers);
  Running running(vm);
  ASSERT_TRUE(eventually([&] { return vm.status().state == VmState::running; }));
  const Vm::VcpuSamples sampled = vm.sample_vcpus(3, std::chrono::milliseconds(5), std::chrono::seconds(10));
  EXPECT_EQ(sampled.missing, "");
  const std::string& samples = sampled.taken;
  for (const char* vcpu : {"vcpu 0: ", "vcpu 1: "}) {
    std::size_t seen = 0;
    for (std::size_t at = samples.find(vcpu); at != std::string::npos; at = samples.find(vcpu, at + 1)) {
      const std::size_t end = samples.find('\n', at);
      const std::string line = samples.substr(at, end - at);
      // A vCPU in HLT or waiting for its SIPI is paused and read the same way.
      EXPECT_NE(line.find(" rip=0x"), std::string::npos) << line;
      ++seen;
    }
    EXPECT_EQ(seen, 3u) << samples;
  }
  const VmOutcome outcome = running.get();
  EXPECT_EQ(outcome.exit_status, kGuestOk) << outcome.message;
  const Vm::VcpuSamples after_the_end = vm.sample_vcpus(1, std::chrono::milliseconds(0), std::chrono::seconds(1));
  EXPECT_EQ(after_the_end.taken, "");
  EXPECT_EQ(after_the_end.missing, "the VM has ended");
}

TEST(VmInProcess, RequestsThatMakeNoSenseAreRefusedWithAReason) {
  VMM_REQUIRE_KVM();
  refuses_senseless_requests(false);
}

// Pause stops the LAPIC timers with the others; a paused guest must not run.
TEST(VmInProcessUserspaceIrqchip, RequestsThatMakeNoSenseAreRefusedWithAReason) {
  VMM_REQUIRE_KVM();
  refuses_senseless_requests(true);
}

void create_run_force_stop_destroy(bool userspace_irqchip) {
  KvmSystem kvm;
  timers::CyclicSystem timers;
  auto count = [](const char* dir) {
    return std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator{});
  };
  auto cycle = [&](int i) {
    Vm vm(config_for("test=reboot count=65535", 1, userspace_irqchip), kvm, timers);
    Running outcome(vm);
    std::this_thread::sleep_for(std::chrono::milliseconds(i % 7 * 3));  // mid-boot, mid-reset, mid-timer
    vm.force_stop();
    EXPECT_EQ(outcome.get().exit_status, kExitStoppedByHost);
  };
  cycle(0);  // warm-up: runtimes start threads of their own on first use
  const auto fds = count("/proc/self/fd");
  const auto tasks = count("/proc/self/task");
  for (int i = 1; i <= 30; ++i) cycle(i);
  EXPECT_EQ(count("/proc/self/fd"), fds);
  EXPECT_EQ(count("/proc/self/task"), tasks);
  EXPECT_EQ(timers.live_count(), 0u) << "cyclics left behind by destroyed VMs";
}

TEST(VmInProcess, CreateRunForceStopDestroyLeaksNothing) {
  VMM_REQUIRE_KVM();
  create_run_force_stop_destroy(false);
}

// Force stops land mid-boot, mid-reset and mid-LAPIC-timer; every LAPIC
// timer's cyclic goes with its VM.
TEST(VmInProcessUserspaceIrqchip, CreateRunForceStopDestroyLeaksNothing) {
  VMM_REQUIRE_KVM();
  create_run_force_stop_destroy(true);
}

}  // namespace
}  // namespace vmm::testing
