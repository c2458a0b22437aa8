// The seed races against the project's real device code: the LAPIC timer
// (where illumos 12738 was found) with the guest's initial-count write forced
// into the window of a firing, and its handler's re-arm forced against a VM
// reset's drain (the shape of illumos 12476). The model-vs-project proof is in
// seed_race_test.cc; this shows the real device keeps the promise too.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "devices/lapic_timer.h"
#include "tests/common/race_script.h"
#include "tests/common/sync.h"
#include "timers/event_loop.h"
#include "timers/race_points.h"

namespace vmm {
namespace {

using namespace std::chrono_literals;
using testing::Gate;
using testing::RaceScript;
using timers::Nanos;
using timers::RacePoint;

constexpr std::uint32_t kPeriodic = 1u << devices::LapicTimer::kModeShift;

TEST(DeviceSeedRace, LapicInitialCountWriteRacingTheFiringTicksOnceAtTheNewDeadline) {
  timers::ManualClock clock{timers::kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  std::mutex ticks_mu;
  std::vector<Nanos> ticks;
  devices::LapicTimer timer(system, system.loop(0), [&](std::uint8_t) {
    std::lock_guard lock(ticks_mu);
    ticks.push_back(clock.now());
  });
  timer.write_lvt(0x30 | kPeriodic);
  timer.write_divide_config(0xb);  // 1 ns per count
  const Nanos t0 = clock.now();
  timer.write_initial_count(1'000'000);  // 1 ms period: due at t0 + 1 ms

  clock.advance(timers::kMillisecond);  // the old deadline is due...
  std::thread timer_cpu;
  Gate glue_ran;
  bool forced = false;
  {
    RaceScript hook([&](RacePoint point) {
      if (point == RacePoint::callout_glue_before_handler) glue_ran.open();
      if (point == RacePoint::callout_reset_stored && !forced) {
        // ...and the vCPU's write has stored its new deadline but not yet
        // reprogrammed the cyclic: the old deadline fires now.
        forced = true;
        timer_cpu = std::thread([&] { system.loop(0).run_due(); });
        EXPECT_TRUE(glue_ran.wait_for(10s));
      }
    });
    timer.write_initial_count(1'000'000);  // the guest re-arms at t0 + 1 ms
    timer_cpu.join();
  }
  {
    std::lock_guard lock(ticks_mu);
    EXPECT_TRUE(ticks.empty()) << "the stale firing must not tick";
  }
  clock.set(t0 + 2 * timers::kMillisecond);
  system.loop(0).run_due();
  std::lock_guard lock(ticks_mu);
  ASSERT_EQ(ticks.size(), 1u);
  EXPECT_EQ(ticks[0], t0 + 2 * timers::kMillisecond);
}

TEST(DeviceSeedRace, LapicHandlerReArmRacingAResetDrainIsRefusedQuietly) {
  timers::ManualClock clock{timers::kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  std::atomic<int> ticks{0};
  devices::LapicTimer timer(system, system.loop(0), [&](std::uint8_t) { ticks.fetch_add(1); });
  timer.write_lvt(0x31 | kPeriodic);
  timer.write_divide_config(0xb);
  timer.write_initial_count(1000);
  clock.advance(1000);

  Gate at_rearm, may_rearm;
  std::thread timer_cpu;
  {
    RaceScript hook([&](RacePoint point) {
      if (point == RacePoint::device_handler_before_rearm) {
        at_rearm.open();
        EXPECT_TRUE(may_rearm.wait_for(10s));
      }
      if (point == RacePoint::cyclic_remove_waiting) may_rearm.open();
    });
    timer_cpu = std::thread([&] { system.loop(0).run_due(); });
    ASSERT_TRUE(at_rearm.wait_for(10s));
    std::thread reset([&] { timer.drain_timers(); });  // the VM reset path
    reset.join();
    timer_cpu.join();
  }
  EXPECT_EQ(ticks.load(), 1);
  EXPECT_EQ(system.live_count(), 0u) << "the drained callout's cyclic is gone";
  clock.advance(timers::kSecond);
  EXPECT_EQ(system.loop(0).run_due(), 0u);
  EXPECT_EQ(ticks.load(), 1);
}

}  // namespace
}  // namespace vmm
