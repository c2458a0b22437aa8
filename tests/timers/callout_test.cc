// Callouts on a ManualClock: target/fired semantics, the handler idiom, the
// lock rules, and every misuse returning its documented value.
#include "timers/callout.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/common/race_script.h"
#include "timers/event_loop.h"
#include "timers/race_points.h"

namespace vmm::timers {
namespace {

using namespace std::chrono_literals;

// A device that follows the handler idiom of callout.h.
struct Device {
  std::mutex mu;
  Callout callout;
  const Clock* clock = nullptr;
  Nanos deadline = 0;  // what the device asked for (under mu)
  int work = 0;        // firings that did the device's work
  int ignored_pending = 0;
  int ignored_inactive = 0;
  int raw_calls = 0;
  Nanos period = 0;    // re-arm from the handler when non-zero
  bool rearm_result = true;

  static void on_timer(void* arg) {
    auto* d = static_cast<Device*>(arg);
    std::lock_guard lock(d->mu);
    ++d->raw_calls;
    if (d->callout.pending()) {
      ++d->ignored_pending;
      return;
    }
    if (!d->callout.active()) {
      ++d->ignored_inactive;
      return;
    }
    d->callout.deactivate();
    EXPECT_GE(d->clock->now(), d->deadline) << "work ran before the deadline it was armed for";
    ++d->work;
    if (d->period != 0) {
      d->deadline += d->period;
      d->rearm_result = d->callout.reset(d->deadline, CalloutTime::absolute);
    }
  }

  bool arm(Nanos when, CalloutTime kind = CalloutTime::absolute) {
    std::lock_guard lock(mu);
    deadline = kind == CalloutTime::absolute ? when : clock->now() + when;
    return callout.reset(when, kind);
  }
};

class CalloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dev.clock = &clock;
    ASSERT_TRUE(dev.callout.init(system, system.loop(0), &Device::on_timer, &dev));
  }
  ManualClock clock{kSecond};
  CyclicSystem system{clock, LoopOptions{.loops = 2, .threads = false}};
  Device dev;  // destroyed (drained) before the system
  std::size_t run() { return system.loop(0).run_due() + system.loop(1).run_due(); }
};

TEST_F(CalloutTest, FreshCalloutIsInactiveAndNotPending) {
  EXPECT_FALSE(dev.callout.active());
  EXPECT_FALSE(dev.callout.pending());
  EXPECT_EQ(dev.callout.target(), 0);
  EXPECT_EQ(dev.callout.loop(), &system.loop(0));
}

TEST_F(CalloutTest, ResetRelativeFiresOnceAtItsTarget) {
  ASSERT_TRUE(dev.arm(100, CalloutTime::relative));
  EXPECT_TRUE(dev.callout.active());
  EXPECT_EQ(dev.callout.target(), clock.now() + 100);
  clock.advance(99);
  EXPECT_EQ(run(), 0u);
  clock.advance(1);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(dev.work, 1);
  EXPECT_FALSE(dev.callout.active());
  EXPECT_EQ(dev.callout.fired(), clock.now());
  clock.advance(kSecond);
  EXPECT_EQ(run(), 0u);  // one-shot
}

TEST_F(CalloutTest, ResetAbsoluteInThePastFiresAtTheNextRun) {
  ASSERT_TRUE(dev.arm(clock.now() - kMillisecond));
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(dev.work, 1);
}

TEST_F(CalloutTest, ResetWithANegativeOrZeroTimeStaysActive) {
  ASSERT_TRUE(dev.callout.reset(-5, CalloutTime::absolute));
  EXPECT_TRUE(dev.callout.active());  // target clamped to 1, never 0
  ASSERT_TRUE(dev.callout.reset(0, CalloutTime::relative));
  EXPECT_TRUE(dev.callout.active());
  EXPECT_EQ(run(), 1u);
}

TEST_F(CalloutTest, StopPreventsTheFiring) {
  ASSERT_TRUE(dev.arm(10, CalloutTime::relative));
  {
    std::lock_guard lock(dev.mu);
    EXPECT_TRUE(dev.callout.stop());
    EXPECT_FALSE(dev.callout.stop());  // already inactive
  }
  clock.advance(100);
  EXPECT_EQ(run(), 0u);
  EXPECT_EQ(dev.work, 0);
}

TEST_F(CalloutTest, ReArmBeforeAStaleFiringIsRunIsSeenAsPending) {
  // The old deadline becomes due, but before the loop runs the device re-arms
  // for later: the stale firing must be ignored and the new one honoured.
  ASSERT_TRUE(dev.arm(clock.now() + 10));
  clock.advance(10);
  // Both are collected into one batch; the re-arm runs first, so the
  // callout's firing arrives already stale.
  struct Rearmer {
    Device* dev;
    Nanos to;
  } rearmer{&dev, clock.now() + 1000};
  system.add(
      [](void* arg, const Expiry&) {
        auto* r = static_cast<Rearmer*>(arg);
        r->dev->arm(r->to);
      },
      &rearmer, clock.now() - 1, kOneShot, system.loop(0));
  EXPECT_EQ(system.loop(0).run_due(), 2u);  // rearmer, then the stale firing
  EXPECT_EQ(dev.raw_calls, 1);
  EXPECT_EQ(dev.ignored_pending, 1) << "the stale firing must be recognised as pending";
  EXPECT_EQ(dev.work, 0);
  clock.advance(1000);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(dev.work, 1);
}

TEST_F(CalloutTest, SetDeadlineArmsStopsAndLeavesAnUnchangedDeadlineAlone) {
  const Nanos t = clock.now() + 10;
  {
    std::lock_guard lock(dev.mu);
    dev.deadline = t;
    EXPECT_TRUE(dev.callout.set_deadline(t));
    EXPECT_EQ(dev.callout.target(), t);
  }
  clock.advance(10);
  // The deadline is due; before the loop runs the device recomputes it and
  // finds it unchanged. Re-arming would put the cyclic back for a second,
  // inactive firing; set_deadline leaves it alone.
  system.add(
      [](void* arg, const Expiry&) {
        auto* d = static_cast<Device*>(arg);
        std::lock_guard lock(d->mu);
        EXPECT_TRUE(d->callout.set_deadline(d->deadline));
      },
      &dev, clock.now() - 1, kOneShot, system.loop(0));
  EXPECT_EQ(system.loop(0).run_due(), 2u);
  EXPECT_EQ(run(), 0u) << "no second firing";
  EXPECT_EQ(dev.raw_calls, 1);
  EXPECT_EQ(dev.work, 1);

  std::lock_guard lock(dev.mu);
  EXPECT_TRUE(dev.callout.set_deadline(clock.now() + 5));
  EXPECT_TRUE(dev.callout.set_deadline(0));
  EXPECT_FALSE(dev.callout.active());
  EXPECT_TRUE(dev.callout.set_deadline(0)) << "stopping a stopped callout is fine";
}

TEST_F(CalloutTest, SetDeadlineAfterDrainIsRefused) {
  ASSERT_TRUE(dev.callout.drain());
  std::lock_guard lock(dev.mu);
  EXPECT_FALSE(dev.callout.set_deadline(clock.now() + 10));
  EXPECT_FALSE(dev.callout.active());
  EXPECT_TRUE(dev.callout.set_deadline(0));
}

TEST_F(CalloutTest, ClaimIsTheHandlerIdiomsOpening) {
  // A handler that only records what claim() says.
  struct Claimer {
    std::mutex mu;
    Callout callout;
    std::vector<bool> claims;
    static void on_timer(void* arg) {
      auto* c = static_cast<Claimer*>(arg);
      std::lock_guard lock(c->mu);
      c->claims.push_back(c->callout.claim());
    }
  } claimer;
  ASSERT_TRUE(claimer.callout.init(system, system.loop(0), &Claimer::on_timer, &claimer));
  {
    std::lock_guard lock(claimer.mu);
    EXPECT_FALSE(claimer.callout.claim()) << "never armed";
    ASSERT_TRUE(claimer.callout.reset(clock.now() + 10, CalloutTime::absolute));
    EXPECT_FALSE(claimer.callout.claim()) << "armed, not fired yet: pending";
    EXPECT_TRUE(claimer.callout.active()) << "a refused claim changes nothing";
  }
  clock.advance(10);
  EXPECT_EQ(system.loop(0).run_due(), 1u);
  EXPECT_EQ(claimer.claims, (std::vector<bool>{true})) << "its own firing is claimed";
  EXPECT_FALSE(claimer.callout.active()) << "and deactivated";
  {
    std::lock_guard lock(claimer.mu);
    ASSERT_TRUE(claimer.callout.reset(clock.now() + 10, CalloutTime::absolute));
    claimer.callout.stop();
  }
  clock.advance(10);
  EXPECT_EQ(system.loop(0).run_due(), 0u) << "a stopped callout is parked";
  EXPECT_TRUE(claimer.callout.drain());
}

TEST_F(CalloutTest, PendingIsTargetLaterThanFired) {
  ASSERT_TRUE(dev.arm(clock.now() + 5));
  clock.advance(5);
  run();
  const Nanos fired = dev.callout.fired();
  EXPECT_FALSE(dev.callout.pending());
  std::lock_guard lock(dev.mu);
  ASSERT_TRUE(dev.callout.reset(fired + 1, CalloutTime::absolute));
  EXPECT_TRUE(dev.callout.pending());
  ASSERT_TRUE(dev.callout.reset(fired - 1, CalloutTime::absolute));
  EXPECT_FALSE(dev.callout.pending());
}

TEST_F(CalloutTest, PeriodicDeviceReArmsFromItsHandler) {
  dev.period = 1000;
  ASSERT_TRUE(dev.arm(clock.now() + 1000));
  for (int i = 0; i < 10; ++i) {
    clock.advance(1000);
    EXPECT_EQ(run(), 1u);
  }
  EXPECT_EQ(dev.work, 10);
  EXPECT_TRUE(dev.rearm_result);
}

TEST_F(CalloutTest, DrainRemovesAndFurtherResetsFailQuietly) {
  ASSERT_TRUE(dev.arm(clock.now() + 10));
  EXPECT_TRUE(dev.callout.drain());
  EXPECT_FALSE(dev.callout.active());
  EXPECT_FALSE(dev.callout.drain()) << "drain twice";
  {
    std::lock_guard lock(dev.mu);
    EXPECT_FALSE(dev.callout.reset(10, CalloutTime::relative)) << "reset after drain";
    EXPECT_FALSE(dev.callout.active());
    EXPECT_FALSE(dev.callout.stop());
  }
  EXPECT_FALSE(dev.callout.localize());
  EXPECT_FALSE(dev.callout.bind(system.loop(1)));
  clock.advance(kSecond);
  EXPECT_EQ(run(), 0u);
  EXPECT_EQ(system.live_count(), 0u);
}

// TimerDevice::drain_timers() promises that no handler runs once it
// returns; two drains at once (a VM reset and a forced stop) must both keep
// that promise, the second as much as the first.
TEST_F(CalloutTest, TwoConcurrentDrainsBothWaitForTheRunningHandler) {
  struct Parked {
    std::mutex mu;
    Callout callout;
    vmm::testing::RemovalCheck* check = nullptr;
    std::atomic<bool> returned{false};
    static void on_timer(void* arg) {
      auto* p = static_cast<Parked*>(arg);
      {
        std::lock_guard lock(p->mu);
        EXPECT_TRUE(p->callout.claim());
      }
      p->check->park();
      p->returned.store(true);
    }
  } parked;
  vmm::testing::RemovalCheck check(2, [&] { return parked.returned.load(); });
  vmm::testing::RaceScript script([&](RacePoint point) { check.on_point(point); });
  parked.check = &check;
  ASSERT_TRUE(parked.callout.init(system, system.loop(0), &Parked::on_timer, &parked));
  {
    std::lock_guard lock(parked.mu);
    ASSERT_TRUE(parked.callout.reset(clock.now(), CalloutTime::absolute));
  }
  std::thread timer_cpu([&] { system.loop(0).run_due(); });
  ASSERT_TRUE(check.wait_parked());
  std::atomic<int> first_drains{0};
  std::thread reset([&] { first_drains += check.remove([&] { return parked.callout.drain(); }) ? 1 : 0; });
  std::thread force_stop([&] { first_drains += check.remove([&] { return parked.callout.drain(); }) ? 1 : 0; });
  reset.join();
  force_stop.join();
  timer_cpu.join();
  EXPECT_EQ(check.handler_returned_at_each_removal(), (std::vector<bool>{true, true}))
      << "a drain returned while the handler ran";
  EXPECT_EQ(first_drains.load(), 1);
  EXPECT_FALSE(parked.callout.active());
}

// A drain racing the handler's own re-arm: the handler has passed
// whatever check reset() makes before it stores its target (parked where a
// relative reset reads the clock), the drain flags the callout and clears
// its target, and only then does the handler store its new target and
// reprogram the cyclic, which the drain has not removed yet. The drained
// callout must not come out of this active with that target.
TEST(CalloutDrainTest, ADrainRacingTheHandlersOwnReArmLeavesItInactive) {
  vmm::testing::HookedClock clock;
  CyclicSystem system{clock, LoopOptions{.loops = 1, .threads = false}};
  struct Rearming {
    std::mutex mu;
    Callout callout;
    std::atomic<bool> rearming{false};
    bool rearmed = true;
    static void on_timer(void* arg) {
      auto* d = static_cast<Rearming*>(arg);
      std::lock_guard lock(d->mu);
      if (!d->callout.claim()) return;
      d->rearming.store(true);
      d->rearmed = d->callout.reset(kMillisecond, CalloutTime::relative);
    }
  } dev;
  vmm::testing::Gate handler_parked, handler_may_go, drain_parked, drain_may_go;
  clock.set_hook([&] {
    if (!dev.rearming.exchange(false)) return;
    handler_parked.open();
    EXPECT_TRUE(handler_may_go.wait_for(10s));
  });
  vmm::testing::RaceScript script([&](RacePoint point) {
    if (point != RacePoint::callout_drain_before_remove) return;
    drain_parked.open();
    EXPECT_TRUE(drain_may_go.wait_for(10s));
  });
  ASSERT_TRUE(dev.callout.init(system, system.loop(0), &Rearming::on_timer, &dev));
  {
    std::lock_guard lock(dev.mu);
    ASSERT_TRUE(dev.callout.reset(clock.now(), CalloutTime::absolute));
  }
  std::thread timer_cpu([&] { system.loop(0).run_due(); });
  ASSERT_TRUE(handler_parked.wait_for(10s));
  std::thread vm_reset([&] { EXPECT_TRUE(dev.callout.drain()); });
  ASSERT_TRUE(drain_parked.wait_for(10s));
  handler_may_go.open();
  timer_cpu.join();
  drain_may_go.open();
  vm_reset.join();
  EXPECT_FALSE(dev.callout.active()) << "drained, yet active with the target its handler stored";
  EXPECT_EQ(dev.callout.target(), 0);
  EXPECT_FALSE(dev.rearmed) << "a re-arm racing a drain that had begun must be refused";
  EXPECT_EQ(system.live_count(), 0u);
}

TEST_F(CalloutTest, InitAfterDrainMakesItUsableAgain) {
  ASSERT_TRUE(dev.callout.drain());
  ASSERT_TRUE(dev.callout.init(system, system.loop(1), &Device::on_timer, &dev));
  ASSERT_TRUE(dev.arm(clock.now() + 1));
  clock.advance(1);
  EXPECT_EQ(system.loop(1).run_due(), 1u);
  EXPECT_EQ(dev.work, 1);
}

TEST(CalloutMisuseTest, UninitialisedCalloutRefusesEverything) {
  Callout c;
  EXPECT_FALSE(c.initialized());
  EXPECT_FALSE(c.reset(10));
  EXPECT_FALSE(c.stop());
  EXPECT_FALSE(c.drain());
  EXPECT_FALSE(c.localize());
  EXPECT_FALSE(c.active());
  EXPECT_EQ(c.loop(), nullptr);
}

TEST(CalloutMisuseTest, InitTwiceOrWithoutHandlerIsRefused) {
  ManualClock clock;
  CyclicSystem system(clock, LoopOptions{.loops = 1, .threads = false});
  Callout c;
  EXPECT_FALSE(c.init(system, system.loop(0), nullptr, nullptr));
  EXPECT_FALSE(c.initialized());
  ASSERT_TRUE(c.init(system, system.loop(0), [](void*) {}, nullptr));
  EXPECT_FALSE(c.init(system, system.loop(0), [](void*) {}, nullptr));
  EXPECT_EQ(system.live_count(), 1u);
  EXPECT_TRUE(c.drain());
}

TEST_F(CalloutTest, BindMovesKeepingTheTarget) {
  ASSERT_TRUE(dev.arm(clock.now() + 50));
  ASSERT_TRUE(dev.callout.bind(system.loop(1)));
  EXPECT_EQ(dev.callout.loop(), &system.loop(1));
  clock.advance(50);
  EXPECT_EQ(system.loop(0).run_due(), 0u);
  EXPECT_EQ(system.loop(1).run_due(), 1u);
  EXPECT_EQ(dev.work, 1);
}

TEST_F(CalloutTest, LocalizeMovesToTheCallersCpuLoop) {
  ASSERT_TRUE(dev.callout.localize());
  EXPECT_EQ(dev.callout.loop(), &system.loop_for_current_cpu());
}

TEST_F(CalloutTest, HandlerReArmAfterDrainIsRefusedAndNeverRunsAgain) {
  // Drain from the handler's own thread, as its handler runs: the re-arm
  // that follows must fail quietly (seed 002's shape, single-threaded).
  struct Ctx {
    Device* dev;
    bool rearm = true;
  } ctx{&dev};
  Callout killer;
  ASSERT_TRUE(killer.init(
      system, system.loop(0),
      [](void* arg) {
        auto* c = static_cast<Ctx*>(arg);
        c->dev->callout.drain();
        std::lock_guard lock(c->dev->mu);
        c->rearm = c->dev->callout.reset(10, CalloutTime::relative);
      },
      &ctx));
  ASSERT_TRUE(killer.reset(0));
  run();
  EXPECT_FALSE(ctx.rearm);
  clock.advance(kSecond);
  EXPECT_EQ(run(), 0u);
  EXPECT_EQ(dev.raw_calls, 0);
}

}  // namespace
}  // namespace vmm::timers
