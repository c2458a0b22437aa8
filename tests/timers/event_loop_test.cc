// Event loops on real time: threads, pinning, names, the timerfd arming
// policy, posted work. Deadlines here are generous; nothing asserts speed.
#include "timers/event_loop.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "tests/common/sync.h"
#include "timers/cyclic.h"

namespace vmm::timers {
namespace {

using vmm::testing::Gate;
using namespace std::chrono_literals;

const Clock& mono = MonotonicClock::instance();

struct Fired {
  Gate gate;
  std::atomic<int> count{0};
  std::atomic<Nanos> at{0};
  std::atomic<bool> on_loop_thread{false};
  EventLoop* loop = nullptr;
  static void handler(void* arg, const Expiry&) {
    auto* f = static_cast<Fired*>(arg);
    f->at.store(MonotonicClock::instance().now());
    if (f->loop) f->on_loop_thread.store(f->loop->on_loop_thread());
    f->count.fetch_add(1);
    f->gate.open();
  }
};

TEST(EventLoopTest, ThreadedLoopFiresAOneShotAfterItsDeadline) {
  Fired fired;  // outlives the system, whose thread touches it
  CyclicSystem system(mono, LoopOptions{.loops = 1});
  fired.loop = &system.loop(0);
  const Nanos deadline = mono.now() + 2 * kMillisecond;
  ASSERT_TRUE(system.add(&Fired::handler, &fired, deadline, kOneShot, system.loop(0)).valid());
  ASSERT_TRUE(fired.gate.wait_for(5s));
  EXPECT_GE(fired.at.load(), deadline);
  EXPECT_TRUE(fired.on_loop_thread.load());
}

TEST(EventLoopTest, PeriodicCyclicKeepsFiring) {
  Fired fired;
  CyclicSystem system(mono, LoopOptions{.loops = 1});
  const CyclicId id = system.add(&Fired::handler, &fired, mono.now(), kMillisecond, system.loop(0));
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (fired.count.load() < 20 && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
  EXPECT_GE(fired.count.load(), 20);
  EXPECT_TRUE(system.remove(id));
  const int after_remove = fired.count.load();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(fired.count.load(), after_remove);
}

TEST(EventLoopTest, ADeadlineAtOrBeforeZeroStillFires) {
  // An all-zero itimerspec would disarm the timerfd; the loop must clamp.
  Fired fired;
  CyclicSystem system(mono, LoopOptions{.loops = 1});
  ASSERT_TRUE(system.add(&Fired::handler, &fired, 0, kOneShot, system.loop(0)).valid());
  EXPECT_TRUE(fired.gate.wait_for(5s));
}

TEST(EventLoopTest, LoopThreadsAreNamedAndPinnedToTheirCpus) {
  CyclicSystem system(mono, LoopOptions{});
  ASSERT_GE(system.loop_count(), 1u);
  std::set<std::string> names;
  std::map<std::string, std::string> cpus_of;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(entry.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name.rfind("vmm-timer-", 0) != 0) continue;
    names.insert(name);
    std::ifstream status(entry.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Cpus_allowed_list:", 0) == 0) cpus_of[name] = line.substr(line.find_first_not_of(" \t", 18));
    }
  }
  EXPECT_EQ(names.size(), system.loop_count());
  for (std::size_t i = 0; i < system.loop_count(); ++i) {
    const std::string name = "vmm-timer-" + std::to_string(i);
    EXPECT_TRUE(names.count(name)) << name;
    EXPECT_EQ(cpus_of[name], std::to_string(system.loop(i).cpu())) << name;
  }
}

TEST(EventLoopTest, LoopForCurrentCpuIsTheLoopPinnedThere) {
  CyclicSystem system(mono, LoopOptions{});
  for (std::size_t i = 0; i < system.loop_count(); ++i) {
    const int cpu = system.loop(i).cpu();
    std::thread probe([&] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      ASSERT_EQ(::sched_setaffinity(0, sizeof set, &set), 0);
      EXPECT_EQ(&system.loop_for_current_cpu(), &system.loop(i));
    });
    probe.join();
  }
}

TEST(EventLoopTest, PostedWorkRunsOnTheLoopThreadInOrder) {
  std::vector<int> order;
  std::atomic<bool> all_on_loop{true};
  Gate done;
  CyclicSystem system(mono, LoopOptions{.loops = 1});
  EventLoop& loop = system.loop(0);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(loop.post([&, i] {
      order.push_back(i);
      if (!loop.on_loop_thread()) all_on_loop.store(false);
      if (i == 9) done.open();
    }));
  }
  ASSERT_TRUE(done.wait_for(5s));
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_TRUE(all_on_loop.load());
  EXPECT_FALSE(loop.on_loop_thread());
}

// A threaded loop waits on a CLOCK_MONOTONIC timerfd, which knows nothing of
// another clock: on a manual clock its cyclics would never fire however far
// the clock moved. Refused when the system is made, not discovered later.
TEST(EventLoopTest, ThreadedLoopsOnAClockTheTimerfdCannotFollowAreRefused) {
  ManualClock manual;
  EXPECT_THROW(CyclicSystem(manual, LoopOptions{.loops = 1}), std::invalid_argument);
  EXPECT_NO_THROW(CyclicSystem(manual, LoopOptions{.loops = 1, .threads = false}));
  EXPECT_NO_THROW(CyclicSystem(mono, LoopOptions{.loops = 1}));
}

// Another thread stepping a threaded loop used to record itself as the
// loop's thread: its remove() of the running cyclic then returned at once,
// and that handler's own remove(self) waited for itself for ever.
TEST(EventLoopTest, AnotherThreadCannotStepAThreadedLoopNorBecomeItsThread) {
  struct Handler {
    CyclicSystem* system = nullptr;
    CyclicId self;
    Gate started, release, done;
    std::atomic<bool> loop_taken_over{false};
    bool removed_itself = false;
    static void run(void* arg, const Expiry&) {
      auto* h = static_cast<Handler*>(arg);
      h->started.open();
      EXPECT_TRUE(h->release.wait_for(10s));
      // Skipped once the test saw the loop taken over: it would never return.
      if (!h->loop_taken_over.load()) h->removed_itself = h->system->remove(h->self);
      h->done.open();
    }
  } h;
  CyclicSystem system(mono, LoopOptions{.loops = 1, .pin = false});
  h.system = &system;
  EventLoop& loop = system.loop(0);
  h.self = system.add(&Handler::run, &h, mono.now(), kOneShot, loop);
  ASSERT_TRUE(h.started.wait_for(10s));

  EXPECT_EQ(loop.run_due(), 0u);
  EXPECT_EQ(loop.run_once(0), 0u);
  EXPECT_EQ(loop.run_once(kMillisecond), 0u);
  h.loop_taken_over.store(loop.on_loop_thread());
  EXPECT_FALSE(h.loop_taken_over.load()) << "a thread that only asked to step the loop became its thread";
  h.release.open();
  ASSERT_TRUE(h.done.wait_for(10s));
  EXPECT_TRUE(h.removed_itself || h.loop_taken_over.load());
  EXPECT_FALSE(system.remove(h.self)) << "removed by its own handler";
}

// The arming policy, observed through LoopStats on a caller-driven loop on
// real time: another thread arms at once only when the earliest deadline
// moves earlier; the loop's own thread defers to its next wait.
TEST(EventLoopTest, TimerfdIsReArmedOnlyWhenTheEarliestDeadlineMovesEarlier) {
  Fired fired;
  CyclicSystem system(mono, LoopOptions{.loops = 1, .threads = false});
  EventLoop& loop = system.loop(0);
  const Nanos far = mono.now() + 10 * kSecond;
  CyclicId id;
  std::thread other([&] { id = system.add(&Fired::handler, &fired, far, kOneShot, loop); });
  other.join();
  EXPECT_EQ(loop.stats().timerfd_arms, 1u);
  EXPECT_EQ(loop.armed_deadline(), far);

  std::thread later([&] { ASSERT_TRUE(system.reprogram(id, far + kSecond)); });
  later.join();
  EXPECT_EQ(loop.stats().timerfd_arms, 1u) << "moving later must not cost a syscall";

  std::thread earlier([&] { ASSERT_TRUE(system.reprogram(id, far - kSecond)); });
  earlier.join();
  EXPECT_EQ(loop.stats().timerfd_arms, 2u);
  EXPECT_EQ(loop.armed_deadline(), far - kSecond);

  // On the loop's own thread (this one drives it): no syscall until it waits.
  const auto arms = loop.stats().timerfd_arms;
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(system.reprogram(id, mono.now() + kSecond - i));
  EXPECT_EQ(loop.stats().timerfd_arms, arms);
  ASSERT_TRUE(system.reprogram(id, mono.now() + kMillisecond));
  EXPECT_EQ(loop.run_once(5 * kSecond), 1u);  // arms once, waits, fires
  EXPECT_EQ(loop.stats().timerfd_arms, arms + 1);
  EXPECT_EQ(fired.count.load(), 1);
}

TEST(EventLoopTest, RunOnceReturnsOnTimeoutWithNothingDue) {
  CyclicSystem system(mono, LoopOptions{.loops = 1, .threads = false});
  const Nanos start = mono.now();
  EXPECT_EQ(system.loop(0).run_once(5 * kMillisecond), 0u);
  EXPECT_GE(mono.now() - start, 5 * kMillisecond);
}

TEST(EventLoopTest, RunOnceWakesForPostedWork) {
  CyclicSystem system(mono, LoopOptions{.loops = 1, .threads = false});
  EventLoop& loop = system.loop(0);
  std::atomic<bool> ran{false};
  std::thread poster([&] {
    std::this_thread::sleep_for(10ms);
    loop.post([&] { ran.store(true); });
  });
  const Nanos start = mono.now();
  while (!ran.load() && mono.now() - start < 10 * kSecond) loop.run_once(10 * kSecond);
  poster.join();
  EXPECT_TRUE(ran.load());
  EXPECT_LT(mono.now() - start, 10 * kSecond);
}

TEST(EventLoopTest, DestroyingTheSystemWithArmedCyclicsRunsNoMoreHandlers) {
  Fired fired;
  {
    CyclicSystem system(mono, LoopOptions{.loops = 2});
    for (int i = 0; i < 100; ++i) {
      system.add(&Fired::handler, &fired, mono.now() + 20 * kMillisecond, kMillisecond, system.loop(i % 2));
    }
  }
  const int after = fired.count.load();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(fired.count.load(), after);
}

TEST(EventLoopTest, PostAfterStopIsRefused) {
  auto system = std::make_unique<CyclicSystem>(mono, LoopOptions{.loops = 1});
  EventLoop& loop = system->loop(0);
  loop.stop();
  EXPECT_FALSE(loop.post([] {}));
}

TEST(EventLoopTest, NoFileDescriptorOrThreadLeaksAcrossManySystems) {
  auto count = [](const char* dir) {
    return std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator{});
  };
  // Warm up first: runtimes (ThreadSanitizer's, io_uring's workers) may
  // start a thread of their own on first use, which is not a leak.
  { CyclicSystem warm_up(mono, LoopOptions{.loops = 2}); }
  const auto fds = count("/proc/self/fd");
  const auto tasks = count("/proc/self/task");
  for (int i = 0; i < 50; ++i) {
    Fired fired;
    CyclicSystem system(mono, LoopOptions{.loops = 2});
    system.add(&Fired::handler, &fired, mono.now(), kOneShot, system.loop(1));
    fired.gate.wait_for(5s);
  }
  EXPECT_EQ(count("/proc/self/fd"), fds);
  EXPECT_EQ(count("/proc/self/task"), tasks);
}

}  // namespace
}  // namespace vmm::timers
