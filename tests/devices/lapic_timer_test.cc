// The LAPIC timer against the SDM on a ManualClock.
#include "devices/lapic_timer.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/common/race_script.h"
#include "tests/devices/fakes.h"
#include "timers/event_loop.h"

namespace vmm::devices {
namespace {

using timers::kMicrosecond;
using timers::Nanos;

constexpr std::uint32_t kPeriodic = 1u << LapicTimer::kModeShift;
constexpr std::uint32_t kTscDeadline = 2u << LapicTimer::kModeShift;

class LapicTimerTest : public ::testing::Test {
 protected:
  timers::ManualClock clock{timers::kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 2, .threads = false}};
  std::vector<std::pair<Nanos, std::uint8_t>> delivered;
  LapicTimer timer{system, system.loop(0),
                   [this](std::uint8_t vector) { delivered.emplace_back(clock.now(), vector); },
                   LapicTimer::Config{.bus_hz = 1'000'000'000, .tsc_hz = 2'000'000'000, .tsc_at_zero = 0}};

  void run_until(Nanos t) {
    // Step in small increments so each firing happens at its own time.
    while (clock.now() < t) {
      const Nanos next = system.loop(0).next_deadline();
      clock.set(next <= t ? next : t);
      system.loop(0).run_due();
    }
  }
};

TEST_F(LapicTimerTest, PowerOnState) {
  EXPECT_EQ(timer.read_lvt(), LapicTimer::kLvtMasked);
  EXPECT_EQ(timer.read_initial_count(), 0u);
  EXPECT_EQ(timer.read_current_count(), 0u);
  EXPECT_EQ(timer.read_divide_config(), 0u);
}

TEST_F(LapicTimerTest, DivideConfigurationSelectsEveryDivisor) {
  // code (bits 3,1,0) -> divisor; at 1 GHz one count lasts `divisor` ns.
  const std::pair<std::uint32_t, Nanos> table[] = {{0x0, 2},  {0x1, 4},  {0x2, 8},  {0x3, 16},
                                                   {0x8, 32}, {0x9, 64}, {0xa, 128}, {0xb, 1}};
  timer.write_lvt(0x30);
  for (auto [config, divisor] : table) {
    timer.write_divide_config(config | 0xf0);  // reserved bits ignored
    EXPECT_EQ(timer.read_divide_config(), config);
    const Nanos start = clock.now();
    timer.write_initial_count(1000);
    run_until(start + 1000 * divisor - 1);
    EXPECT_EQ(timer.interrupts_delivered(), delivered.size());
    const auto before = delivered.size();
    run_until(start + 1000 * divisor);
    ASSERT_EQ(delivered.size(), before + 1) << "divisor " << divisor;
    EXPECT_EQ(delivered.back().first, start + 1000 * divisor);
  }
}

TEST_F(LapicTimerTest, OneShotCountsDownAndFiresOnce) {
  timer.write_lvt(0x40);
  timer.write_divide_config(0xb);  // divide by 1: 1 ns per count
  const Nanos start = clock.now();
  timer.write_initial_count(5000);
  EXPECT_EQ(timer.read_current_count(), 5000u);
  clock.set(start + 1200);
  EXPECT_EQ(timer.read_current_count(), 3800u);
  run_until(start + 5000);
  ASSERT_EQ(delivered.size(), 1u);
  EXPECT_EQ(delivered[0], (std::pair<Nanos, std::uint8_t>{start + 5000, 0x40}));
  EXPECT_EQ(timer.read_current_count(), 0u);
  EXPECT_EQ(timer.deadline(), 0) << "a one-shot that fired keeps no deadline";
  run_until(start + 100000);
  EXPECT_EQ(delivered.size(), 1u);
}

TEST_F(LapicTimerTest, PeriodicHasNoDriftOverTenThousandPeriods) {
  timer.write_lvt(0x41 | kPeriodic);
  timer.write_divide_config(0xb);
  const Nanos start = clock.now();
  timer.write_initial_count(100 * 1000);  // 100 us
  run_until(start + 10000 * 100 * kMicrosecond);
  ASSERT_EQ(delivered.size(), 10000u);
  for (std::size_t i = 0; i < delivered.size(); ++i) {
    ASSERT_EQ(delivered[i].first, start + static_cast<Nanos>(i + 1) * 100 * kMicrosecond);
  }
  // The current count runs down within each period and reloads.
  clock.advance(25 * kMicrosecond);
  EXPECT_EQ(timer.read_current_count(), 75000u);
}

TEST_F(LapicTimerTest, PeriodicThatMissedAWholePeriodRestartsItsTimeBase) {
  timer.write_lvt(0x41 | kPeriodic);
  timer.write_divide_config(0xb);
  const Nanos start = clock.now();
  timer.write_initial_count(200'000);  // 200 us
  clock.set(start + 700'000);          // three deadlines passed unserved
  system.loop(0).run_due();
  ASSERT_EQ(delivered.size(), 1u);
  EXPECT_EQ(timer.deadline(), start + 700'000 + 200'000);
}

TEST_F(LapicTimerTest, DivideChangeWhileAPeriodIsDueAppliesToTheNextPeriods) {
  // The divisor changes when the count has reached 0 but the handler has not
  // run yet: the reload counts at the new rate, so every later period does.
  timer.write_lvt(0x31 | kPeriodic);
  timer.write_divide_config(0xb);  // 1 ns per count
  const Nanos start = clock.now();
  timer.write_initial_count(100'000);
  clock.set(start + 100'000);      // due, not yet handled
  timer.write_divide_config(0x0);  // 2 ns per count
  run_until(start + 500'000);
  ASSERT_EQ(delivered.size(), 3u);
  EXPECT_EQ(delivered[0].first, start + 100'000);
  EXPECT_EQ(delivered[1].first, start + 300'000);
  EXPECT_EQ(delivered[2].first, start + 500'000);
}

TEST_F(LapicTimerTest, MaskedTimerKeepsRunningWithoutInterrupts) {
  timer.write_lvt(0x42 | kPeriodic | LapicTimer::kLvtMasked);
  timer.write_divide_config(0xb);
  const Nanos start = clock.now();
  timer.write_initial_count(100'000);
  run_until(start + 550'000);
  EXPECT_TRUE(delivered.empty());
  EXPECT_EQ(timer.read_current_count(), 50'000u);
  timer.write_lvt(0x42 | kPeriodic);  // unmask, same mode: keeps counting
  run_until(start + 600'000);
  EXPECT_EQ(delivered.size(), 1u);
}

TEST_F(LapicTimerTest, InitialCountZeroStopsAndModeChangeDisarms) {
  timer.write_lvt(0x43);
  timer.write_initial_count(1000);
  timer.write_initial_count(0);
  run_until(clock.now() + kMicrosecond * 100);
  EXPECT_TRUE(delivered.empty());
  timer.write_initial_count(1000);
  timer.write_lvt(0x43 | kPeriodic);  // mode change
  EXPECT_EQ(timer.read_initial_count(), 0u);
  run_until(clock.now() + kMicrosecond * 100);
  EXPECT_TRUE(delivered.empty());
}

TEST_F(LapicTimerTest, TscDeadlineFiresAtTheDeadlineAndClearsTheMsr) {
  timer.write_lvt(0x44 | kTscDeadline);
  timer.write_initial_count(123);  // ignored in TSC-deadline mode
  EXPECT_EQ(timer.read_initial_count(), 0u);
  const std::uint64_t tsc_now = static_cast<std::uint64_t>(clock.now()) * 2;  // 2 GHz TSC from 0
  timer.write_tsc_deadline(tsc_now + 2000);                                    // 1 us ahead
  EXPECT_EQ(timer.read_tsc_deadline(), tsc_now + 2000);
  const Nanos expected = clock.now() + 1000;
  run_until(expected + 10);
  ASSERT_EQ(delivered.size(), 1u);
  EXPECT_EQ(delivered[0].first, expected);
  EXPECT_EQ(timer.read_tsc_deadline(), 0u);
  timer.write_tsc_deadline(1);  // long past: fires at once
  system.loop(0).run_due();
  EXPECT_EQ(delivered.size(), 2u);
  timer.write_tsc_deadline(tsc_now + 1'000'000);
  timer.write_tsc_deadline(0);  // disarm
  run_until(clock.now() + timers::kMillisecond);
  EXPECT_EQ(delivered.size(), 2u);
}

TEST_F(LapicTimerTest, TscDeadlineWritesOutsideTheModeAreIgnored) {
  timer.write_lvt(0x45);
  timer.write_tsc_deadline(12345);
  EXPECT_EQ(timer.read_tsc_deadline(), 0u);
  run_until(clock.now() + timers::kMillisecond);
  EXPECT_TRUE(delivered.empty());
}

TEST_F(LapicTimerTest, PauseKeepsTheDeadlineAndResumeFiresAMissedOne) {
  timer.write_lvt(0x46);
  timer.write_divide_config(0xb);
  const Nanos start = clock.now();
  timer.write_initial_count(1000);
  timer.pause();
  run_until(start + 5000);
  EXPECT_TRUE(delivered.empty());
  EXPECT_EQ(timer.deadline(), start + 1000);
  timer.resume();
  system.loop(0).run_due();
  EXPECT_EQ(delivered.size(), 1u);
  timer.pause();
  timer.resume();  // a fired one-shot has deadline 0: nothing re-armed
  run_until(start + 50000);
  EXPECT_EQ(delivered.size(), 1u);
}

TEST_F(LapicTimerTest, DrainThenResetGivesPowerOnStateAndWorksAgain) {
  timer.write_lvt(0x47 | kPeriodic);
  timer.write_divide_config(0xb);  // 1 ns per count
  timer.write_initial_count(100'000);
  run_until(clock.now() + 300'000);
  EXPECT_EQ(timer.stats().handler_runs, 3u);
  timer.drain_timers();
  timer.write_initial_count(100'000);
  EXPECT_EQ(timer.stats().refused_rearms, 1u) << "a drained timer refuses the re-arm, and counts it";
  delivered.clear();
  run_until(clock.now() + timers::kMillisecond);
  EXPECT_TRUE(delivered.empty());
  EXPECT_EQ(timer.stats().handler_runs, 3u);
  timer.reset(system.loop(1));
  EXPECT_EQ(timer.read_lvt(), LapicTimer::kLvtMasked);
  timer.write_lvt(0x48);
  timer.write_initial_count(10);
  clock.advance(timers::kMillisecond);
  EXPECT_EQ(system.loop(1).run_due(), 1u);
  EXPECT_EQ(delivered.size(), 1u);
}

TEST_F(LapicTimerTest, PeriodShorterThanTheFloorFiresInWholePeriodsOnItsGrid) {
  timer.write_lvt(0x49 | kPeriodic);
  timer.write_divide_config(0xb);  // 1 ns per count
  const Nanos start = clock.now();
  timer.write_initial_count(30'000);  // 30 us: stepped by 4 periods (120 us)
  run_until(start + 630'000);
  ASSERT_EQ(delivered.size(), 6u);
  EXPECT_EQ(delivered[0].first, start + 30'000);
  for (std::size_t i = 1; i < delivered.size(); ++i) {
    EXPECT_EQ(delivered[i].first - delivered[i - 1].first, 120'000) << i;
  }
  // The guest still sees its own period in the count: 10 us into a period.
  clock.set(start + 640'000);
  EXPECT_EQ(timer.read_current_count(), 20'000u);
}

TEST_F(LapicTimerTest, PeriodOfOneCountDoesNotSpinTheLoop) {
  testing::LogCapture logs;
  timer.write_lvt(0x4a | kPeriodic);
  timer.write_divide_config(0xb);
  const Nanos start = clock.now();
  timer.write_initial_count(1);
  std::uint64_t batches = 0;
  testing::run_loop_until(clock, system.loop(0), start + 10 * timers::kMillisecond, [&] { ++batches; }, 1000);
  // One firing per kMinPeriod at the most, every one of them an interrupt.
  EXPECT_LE(timer.stats().handler_runs, 10 * timers::kMillisecond / LapicTimer::kMinPeriod + 1);
  EXPECT_GE(timer.stats().handler_runs, 10 * timers::kMillisecond / LapicTimer::kMinPeriod - 1);
  EXPECT_EQ(delivered.size(), timer.stats().handler_runs);
  EXPECT_LE(logs.lines(), 10u) << "one line per firing would flood the log";
}

TEST_F(LapicTimerTest, TscDeadlineAtTheMaximumNeverFires) {
  timer.write_lvt(0x4b | kTscDeadline);
  timer.write_tsc_deadline(UINT64_MAX);
  EXPECT_EQ(timer.read_tsc_deadline(), UINT64_MAX);
  EXPECT_GT(timer.deadline(), clock.now() + 100 * timers::kSecond * 3600 * 24 * 365)
      << "2^64 TSC ticks at 2 GHz is centuries away, not in the past";
  run_until(clock.now() + timers::kSecond);
  EXPECT_TRUE(delivered.empty());
  EXPECT_EQ(timer.stats().handler_runs, 0u);
}

TEST_F(LapicTimerTest, PowerOnStopsARunningTimerAndLeavesItUsable) {
  timer.write_lvt(0x4c | kPeriodic);
  timer.write_divide_config(0xb);
  timer.write_initial_count(200'000);
  run_until(clock.now() + 400'000);
  ASSERT_EQ(delivered.size(), 2u);
  timer.power_on();
  EXPECT_EQ(timer.read_lvt(), LapicTimer::kLvtMasked);
  EXPECT_EQ(timer.read_initial_count(), 0u);
  EXPECT_EQ(timer.read_divide_config(), 0u);
  EXPECT_EQ(timer.deadline(), 0);
  run_until(clock.now() + timers::kMillisecond);
  EXPECT_EQ(delivered.size(), 2u);
  timer.write_lvt(0x4c);
  timer.write_initial_count(1000);  // 2 us at divide-by-2: no drain, no reset needed
  run_until(clock.now() + timers::kMillisecond);
  EXPECT_EQ(delivered.size(), 3u);
}

TEST_F(LapicTimerTest, ReservedModeAndBitsAreHandledLikeHardware) {
  timer.write_lvt(0xffffffff);  // mode 3 is reserved: one-shot; reserved bits dropped
  EXPECT_EQ(timer.read_lvt(), 0xffu | LapicTimer::kLvtMasked);
  for (std::uint32_t v : {0u, 1u, 0x7fffffffu, 0xffffffffu}) {
    timer.write_initial_count(v);
    timer.write_divide_config(v);
    (void)timer.read_current_count();
  }
}

}  // namespace
}  // namespace vmm::devices
