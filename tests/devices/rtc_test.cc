// MC146818 RTC against the datasheet on a ManualClock: the calendar in every
// format, UIP and SET timing, the divider, the three interrupts with exact
// edges, register C, NVRAM across reset, and guest garbage.
#include "devices/rtc.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "tests/common/race_script.h"
#include "tests/devices/fakes.h"
#include "timers/event_loop.h"

namespace vmm::devices {
namespace {

using testing::FakeIrqLine;
using timers::kMicrosecond;
using timers::kMillisecond;
using timers::kSecond;
using timers::Nanos;

// Unix seconds of a UTC date, by the C library (an implementation independent
// of the device's own calendar code).
std::int64_t unix_seconds(int year, int month, int day, int hour, int minute, int second) {
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return static_cast<std::int64_t>(::timegm(&tm));
}

std::uint8_t bcd(int v) { return static_cast<std::uint8_t>(((v / 10) << 4) | (v % 10)); }

// Leap day 2024, 2 s before midnight, a quarter second into the second.
const std::int64_t kWallStart = unix_seconds(2024, 2, 29, 23, 59, 58) * kSecond + 250 * kMillisecond;
// The ManualClock starts at 1 s, so the divider phase (where the wall
// clock's second boundaries fall on the monotonic clock) is 0.75 s.
constexpr Nanos kStart = kSecond;
constexpr Nanos kPhase = 750 * kMillisecond;
constexpr Nanos boundary(std::int64_t k) { return kPhase + k * kSecond; }

// Exact time of periodic edge k for a rate with `cycles` crystal cycles per
// edge, relative to the phase: ceil(k * cycles * 10^9 / 32768) ns.
Nanos edge_time(Nanos phase, std::int64_t k, std::int64_t cycles) {
  const std::int64_t num = k * cycles * 1'953'125;
  return phase + (num + 63) / 64;
}

class RtcTest : public ::testing::Test {
 protected:
  // The host's wall clock runs with the monotonic clock; `wall` is its
  // reading at kStart, so second boundaries stay at kPhase + k s whenever
  // the RTC is made.
  void make(std::int64_t wall = kWallStart) {
    rtc.reset();
    wall_at_start = wall;
    rtc = std::make_unique<Rtc>(system, system.loop(0), irq,
                                [this] { return wall_at_start + (clock.now() - kStart); });
  }
  void SetUp() override { make(); }

  std::uint8_t get(std::uint8_t index) {
    rtc->write(0, std::span<const std::uint8_t>(&index, 1));
    std::uint8_t value = 0;
    rtc->read(1, std::span<std::uint8_t>(&value, 1));
    return value;
  }
  void set(std::uint8_t index, std::uint8_t value) {
    rtc->write(0, std::span<const std::uint8_t>(&index, 1));
    rtc->write(1, std::span<const std::uint8_t>(&value, 1));
  }
  // Sets the clock to `t` and runs what is due (the host timer thread).
  void at(Nanos t) {
    clock.set(t);
    system.loop(0).run_due();
  }
  // Deadline to deadline up to `until` (fails if a device spins).
  void run_to(Nanos until, const std::function<void()>& on_fire = {}) {
    testing::run_loop_until(clock, system.loop(0), until, on_fire, kMaxBatches);
  }
  // Sets the time under SET, BCD 24-hour, as Linux does (divider untouched).
  void set_time_bcd(int year, int month, int day, int hour, int minute, int second, int dow) {
    const std::uint8_t b = get(Rtc::kRegB);
    set(Rtc::kRegB, b | Rtc::kRegBSet);
    set(Rtc::kSeconds, bcd(second));
    set(Rtc::kMinutes, bcd(minute));
    set(Rtc::kHours, bcd(hour));
    set(Rtc::kDayOfWeek, bcd(dow));
    set(Rtc::kDayOfMonth, bcd(day));
    set(Rtc::kMonth, bcd(month));
    set(Rtc::kYear, bcd(year % 100));
    set(Rtc::kCentury, bcd(year / 100));
    set(Rtc::kRegB, b & static_cast<std::uint8_t>(~Rtc::kRegBSet));
  }

  static constexpr std::uint64_t kMaxBatches = 1'000'000;
  timers::ManualClock clock{kStart};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  FakeIrqLine irq;
  std::int64_t wall_at_start = kWallStart;
  std::unique_ptr<Rtc> rtc;  // destroyed (drained) before the system
};

// ------------------------------------------------------------------ time

TEST_F(RtcTest, PowerOnRegistersAndBcd24HourTime) {
  EXPECT_EQ(get(Rtc::kRegA), 0x26);
  EXPECT_EQ(get(Rtc::kRegB), 0x02);
  EXPECT_EQ(get(Rtc::kRegC), 0x00);
  EXPECT_EQ(get(Rtc::kRegD), 0x80);
  EXPECT_EQ(get(Rtc::kSeconds), 0x58);
  EXPECT_EQ(get(Rtc::kMinutes), 0x59);
  EXPECT_EQ(get(Rtc::kHours), 0x23);
  EXPECT_EQ(get(Rtc::kDayOfWeek), 5);  // Thursday (Sunday = 1)
  EXPECT_EQ(get(Rtc::kDayOfMonth), 0x29);
  EXPECT_EQ(get(Rtc::kMonth), 0x02);
  EXPECT_EQ(get(Rtc::kYear), 0x24);
  EXPECT_EQ(get(Rtc::kCentury), 0x20);
  EXPECT_FALSE(irq.level());
  const Rtc::Armed armed = rtc->armed();
  EXPECT_EQ(armed.periodic, 0) << "no interrupt enabled: nothing may tick";
  EXPECT_EQ(armed.update, 0);
  EXPECT_EQ(armed.alarm, 0);
}

TEST_F(RtcTest, EveryFormatRendersTheSameInstant) {
  // 23:59:58 in binary 24h, BCD 12h (11 PM), binary 12h.
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBBinary);
  EXPECT_EQ(get(Rtc::kSeconds), 58);
  EXPECT_EQ(get(Rtc::kHours), 23);
  EXPECT_EQ(get(Rtc::kDayOfMonth), 29);
  EXPECT_EQ(get(Rtc::kYear), 24);
  EXPECT_EQ(get(Rtc::kCentury), 20);
  set(Rtc::kRegB, 0x00);
  EXPECT_EQ(get(Rtc::kHours), 0x80 | 0x11);
  EXPECT_EQ(get(Rtc::kMinutes), 0x59);
  set(Rtc::kRegB, Rtc::kRegBBinary);
  EXPECT_EQ(get(Rtc::kHours), 0x80 | 11);
  // Two seconds later it is midnight, 1 March: 12 AM in 12-hour mode.
  at(boundary(2));
  set(Rtc::kRegB, 0x00);
  EXPECT_EQ(get(Rtc::kHours), 0x12);
  EXPECT_EQ(get(Rtc::kDayOfMonth), 0x01);
  EXPECT_EQ(get(Rtc::kMonth), 0x03);
  EXPECT_EQ(get(Rtc::kDayOfWeek), 6);
  // Noon is 12 PM.
  at(boundary(2) + 12 * 3600 * kSecond);
  EXPECT_EQ(get(Rtc::kHours), 0x92);
  set(Rtc::kRegB, Rtc::kRegB24h);
  EXPECT_EQ(get(Rtc::kHours), 0x12);
}

TEST_F(RtcTest, CalendarMatchesTheCLibraryAtRandomInstants) {
  std::mt19937_64 rng(0x0C10C);
  std::uniform_int_distribution<std::int64_t> when(0, unix_seconds(2099, 12, 31, 23, 59, 59));
  for (int i = 0; i < 2000; ++i) {
    const std::int64_t secs = when(rng);
    make(secs * kSecond - (clock.now() - kStart));
    std::tm tm{};
    const auto t = static_cast<std::time_t>(secs);
    ASSERT_NE(::gmtime_r(&t, &tm), nullptr);
    for (const std::uint8_t b : {0x02, 0x06, 0x00, 0x04}) {
      set(Rtc::kRegB, b);
      const bool binary = (b & Rtc::kRegBBinary) != 0;
      const auto enc = [&](int v) { return binary ? static_cast<std::uint8_t>(v) : bcd(v); };
      std::uint8_t hour = enc(tm.tm_hour);
      if ((b & Rtc::kRegB24h) == 0) {
        const int h12 = tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12;
        hour = static_cast<std::uint8_t>(enc(h12) | (tm.tm_hour >= 12 ? 0x80 : 0));
      }
      SCOPED_TRACE(::testing::Message() << "unix " << secs << " B=" << int{b});
      ASSERT_EQ(get(Rtc::kSeconds), enc(tm.tm_sec));
      ASSERT_EQ(get(Rtc::kMinutes), enc(tm.tm_min));
      ASSERT_EQ(get(Rtc::kHours), hour);
      ASSERT_EQ(get(Rtc::kDayOfWeek), enc(tm.tm_wday + 1));
      ASSERT_EQ(get(Rtc::kDayOfMonth), enc(tm.tm_mday));
      ASSERT_EQ(get(Rtc::kMonth), enc(tm.tm_mon + 1));
      ASSERT_EQ(get(Rtc::kYear), enc((tm.tm_year + 1900) % 100));
      ASSERT_EQ(get(Rtc::kCentury), enc((tm.tm_year + 1900) / 100));
    }
  }
}

TEST_F(RtcTest, CountsThroughCenturyAndNonLeapYears) {
  set_time_bcd(2099, 12, 31, 23, 59, 59, 5);
  at(boundary(1));
  EXPECT_EQ(get(Rtc::kYear), 0x00);
  EXPECT_EQ(get(Rtc::kCentury), 0x21);
  EXPECT_EQ(get(Rtc::kMonth), 0x01);
  EXPECT_EQ(get(Rtc::kDayOfMonth), 0x01);
  EXPECT_EQ(get(Rtc::kDayOfWeek), 6) << "the day of week counts on from what the guest wrote";
  set_time_bcd(2100, 2, 28, 23, 59, 59, 1);
  at(boundary(2));
  EXPECT_EQ(get(Rtc::kMonth), 0x03) << "2100 is not a leap year";
  EXPECT_EQ(get(Rtc::kDayOfMonth), 0x01);
  EXPECT_EQ(get(Rtc::kDayOfWeek), 2);
}

TEST_F(RtcTest, GuestTimeSurvivesResetAsAnOffsetFromHostTime) {
  at(kStart + 100 * kMillisecond);
  set_time_bcd(2031, 7, 4, 12, 0, 0, 6);
  // A reboot 10 s of host time later: the guest's clock moved on 10 s too.
  at(clock.now() + 10 * kSecond);
  rtc->drain_timers();
  rtc->reset(system.loop(0));
  EXPECT_EQ(get(Rtc::kYear), 0x31);
  EXPECT_EQ(get(Rtc::kMonth), 0x07);
  EXPECT_EQ(get(Rtc::kDayOfMonth), 0x04);
  EXPECT_EQ(get(Rtc::kHours), 0x12);
  EXPECT_EQ(get(Rtc::kMinutes), 0x00);
  EXPECT_EQ(get(Rtc::kSeconds), 0x10);
}

// ------------------------------------------------------------ UIP, SET

TEST_F(RtcTest, UipIsSetExactlyIn244usBeforeEachUpdate) {
  for (std::int64_t k = 1; k <= 5; ++k) {
    const Nanos b = boundary(k);
    at(b - Rtc::kUipLeadNs - 1);
    EXPECT_EQ(get(Rtc::kRegA) & Rtc::kRegAUip, 0) << "second " << k;
    at(b - Rtc::kUipLeadNs);
    EXPECT_EQ(get(Rtc::kRegA) & Rtc::kRegAUip, Rtc::kRegAUip) << "second " << k;
    at(b - 1);
    EXPECT_EQ(get(Rtc::kRegA), Rtc::kRegAUip | 0x26);
    const std::uint8_t before = get(Rtc::kSeconds);
    at(b);
    EXPECT_EQ(get(Rtc::kRegA), 0x26);
    EXPECT_NE(get(Rtc::kSeconds), before) << "the update happens at the boundary";
  }
  EXPECT_EQ(Rtc::kUipLeadNs, 244'140) << "8 cycles of 32.768 kHz, 244.140625 us";
}

TEST_F(RtcTest, LinuxWaitForUipToFallLoopTerminates) {
  // Like mc146818_get_time: spin (in guest time) while UIP is set, then read.
  at(boundary(3) - 100 * kMicrosecond);
  int spins = 0;
  while ((get(Rtc::kRegA) & Rtc::kRegAUip) != 0) {
    clock.advance(1 * kMicrosecond);
    ASSERT_LT(++spins, 1000);
  }
  EXPECT_EQ(clock.now(), boundary(3));
  EXPECT_EQ(get(Rtc::kSeconds), 0x01);  // 00:00:01
}

TEST_F(RtcTest, SetFreezesRegistersInhibitsUpdatesAndClearsUieAndUip) {
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBUie);
  at(boundary(1) - 100 * kMicrosecond);
  ASSERT_NE(get(Rtc::kRegA) & Rtc::kRegAUip, 0);
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBSet | Rtc::kRegBUie);
  EXPECT_EQ(get(Rtc::kRegB), Rtc::kRegB24h | Rtc::kRegBSet) << "SET clears UIE";
  EXPECT_EQ(get(Rtc::kRegA) & Rtc::kRegAUip, 0) << "SET clears UIP";
  set(Rtc::kMinutes, 0x30);
  EXPECT_EQ(get(Rtc::kMinutes), 0x30);
  (void)get(Rtc::kRegC);
  at(boundary(4) + 10 * kMillisecond);
  EXPECT_EQ(get(Rtc::kSeconds), 0x58) << "frozen while SET";
  EXPECT_EQ(get(Rtc::kMinutes), 0x30);
  EXPECT_EQ(get(Rtc::kRegC) & Rtc::kRegCUf, 0) << "no update cycle while SET";
  // Clearing SET loads 23:30:58; the divider phase is kept.
  set(Rtc::kRegB, Rtc::kRegB24h);
  EXPECT_EQ(get(Rtc::kSeconds), 0x58);
  EXPECT_EQ(get(Rtc::kMinutes), 0x30);
  at(boundary(5) - 1);
  EXPECT_EQ(get(Rtc::kSeconds), 0x58);
  at(boundary(5));
  EXPECT_EQ(get(Rtc::kSeconds), 0x59);
  EXPECT_EQ(get(Rtc::kHours), 0x23);
}

TEST_F(RtcTest, TimeRegisterWrittenWithoutSetTakesEffectAtOnce) {
  at(kStart + 800 * kMillisecond);  // 23:59:59
  set(Rtc::kHours, 0x05);
  EXPECT_EQ(get(Rtc::kHours), 0x05);
  EXPECT_EQ(get(Rtc::kSeconds), 0x59);
  at(boundary(2));
  EXPECT_EQ(get(Rtc::kSeconds), 0x00);
  EXPECT_EQ(get(Rtc::kMinutes), 0x00);
  EXPECT_EQ(get(Rtc::kHours), 0x06);
  EXPECT_EQ(get(Rtc::kDayOfMonth), 0x29) << "05:59:59 + 1 s stays on the same day";
}

TEST_F(RtcTest, DividerResetHoldsTimeAndFirstUpdateComesHalfASecondAfterRestart) {
  // Linux's mc146818_set_time: SET, divider reset, write, clear SET, restore A.
  const Nanos t = kStart + 123 * kMillisecond;
  at(t);
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBSet);
  set(Rtc::kRegA, 0x70 | 0x06);
  set(Rtc::kSeconds, 0x10);
  set(Rtc::kRegB, Rtc::kRegB24h);
  at(t + 7 * kSecond);
  EXPECT_EQ(get(Rtc::kSeconds), 0x10) << "the chain is held in reset";
  EXPECT_EQ(get(Rtc::kRegA), 0x76) << "no UIP in reset";
  const Nanos restart = t + 7 * kSecond + 77 * kMillisecond;
  at(restart);
  set(Rtc::kRegA, 0x26);
  at(restart + 500 * kMillisecond - Rtc::kUipLeadNs);
  EXPECT_EQ(get(Rtc::kRegA), 0xA6);
  at(restart + 500 * kMillisecond - 1);
  EXPECT_EQ(get(Rtc::kSeconds), 0x10);
  at(restart + 500 * kMillisecond);
  EXPECT_EQ(get(Rtc::kSeconds), 0x11);
  at(restart + 1500 * kMillisecond);
  EXPECT_EQ(get(Rtc::kSeconds), 0x12);
  // Rewriting the same divider value does not restart the chain.
  at(restart + 1800 * kMillisecond);
  set(Rtc::kRegA, 0x26);
  at(restart + 2500 * kMillisecond);
  EXPECT_EQ(get(Rtc::kSeconds), 0x13);
}

TEST_F(RtcTest, OscillatorOffPatternsStopTheClock) {
  for (const std::uint8_t dv : {0x00, 0x10, 0x30, 0x40, 0x50}) {
    set(Rtc::kRegA, static_cast<std::uint8_t>(dv | 0x06));
    const std::uint8_t before = get(Rtc::kSeconds);
    at(clock.now() + 3 * kSecond);
    EXPECT_EQ(get(Rtc::kSeconds), before) << "DV=" << (dv >> 4);
    set(Rtc::kRegA, 0x26);
  }
}

// ------------------------------------------------------------ periodic

TEST_F(RtcTest, PeriodicInterruptAtEveryRateHasExactEdgesAndNoDrift) {
  for (unsigned rs = 1; rs <= 15; ++rs) {
    make();
    const std::int64_t cycles = Rtc::periodic_cycles(rs);
    ASSERT_GT(cycles, 0);
    set(Rtc::kRegA, static_cast<std::uint8_t>(0x20 | rs));
    set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBPie);
    irq.clear();
    // The first edge after now on the divider's grid, then every one after.
    std::int64_t k = 1;
    while (edge_time(kPhase, k, cycles) <= clock.now()) ++k;
    constexpr int kEdges = 2000;
    for (int i = 0; i < kEdges; ++i, ++k) {
      const Nanos expected = edge_time(kPhase, k, cycles);
      ASSERT_EQ(system.loop(0).next_deadline(), expected) << "rate " << rs << " edge " << i;
      at(expected - 1);
      ASSERT_FALSE(irq.level());
      at(expected);
      ASSERT_TRUE(irq.level()) << "rate " << rs << " edge " << i;
      // UF and AF may be set too (they are set without UIE/AIE; the power-on
      // alarm 00:00:00 matches at midnight): only IRQF and PF matter here.
      ASSERT_EQ(get(Rtc::kRegC) & (Rtc::kRegCIrqf | Rtc::kRegCPf), Rtc::kRegCIrqf | Rtc::kRegCPf);
      ASSERT_FALSE(irq.level());
    }
    EXPECT_EQ(irq.rising_edges(), static_cast<std::uint64_t>(kEdges));
    EXPECT_EQ(rtc->stats().handler_runs, static_cast<std::uint64_t>(kEdges));
  }
  EXPECT_EQ(Rtc::periodic_cycles(1), 128) << "3.90625 ms";
  EXPECT_EQ(Rtc::periodic_cycles(2), 256) << "7.8125 ms";
  EXPECT_EQ(Rtc::periodic_cycles(3), 4) << "122.070 us";
  EXPECT_EQ(Rtc::periodic_cycles(6), 32) << "976.5625 us";
  EXPECT_EQ(Rtc::periodic_cycles(15), 16384) << "500 ms";
  EXPECT_EQ(Rtc::periodic_cycles(0), 0);
}

TEST_F(RtcTest, PeriodicEdgesSkipWhatWasMissedAndKeepThePhase) {
  const std::int64_t cycles = Rtc::periodic_cycles(6);
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBPie);
  irq.clear();
  // The timer thread is 10.5 periods late: one interrupt, not ten.
  const Nanos late = clock.now() + edge_time(0, 21, cycles) / 2;
  clock.set(late);
  EXPECT_EQ(system.loop(0).run_due(), 1u);
  EXPECT_EQ(irq.rising_edges(), 1u);
  EXPECT_EQ(get(Rtc::kRegC), 0xC0);
  std::int64_t k = 1;
  while (edge_time(kPhase, k, cycles) <= late) ++k;
  EXPECT_EQ(system.loop(0).next_deadline(), edge_time(kPhase, k, cycles)) << "back on the divider's grid";
  // A guest that does not acknowledge sees no further interrupts and costs
  // no callouts; the flag is still derived on read.
  at(edge_time(kPhase, k, cycles));
  EXPECT_EQ(irq.rising_edges(), 2u);
  const auto runs = rtc->stats().handler_runs;
  EXPECT_EQ(rtc->armed().periodic, 0);
  run_to(clock.now() + 5 * kSecond);
  EXPECT_EQ(rtc->stats().handler_runs, runs);
  EXPECT_EQ(get(Rtc::kRegC), 0xC0 | Rtc::kRegCUf | Rtc::kRegCAf) << "midnight passed: the 00:00:00 alarm matched";
  EXPECT_NE(rtc->armed().periodic, 0);
}

TEST_F(RtcTest, PeriodicFlagIsSetWithoutPieAndNoCalloutRuns) {
  set(Rtc::kRegA, 0x23);  // 8192 Hz
  run_to(clock.now() + kSecond);
  EXPECT_EQ(rtc->stats().handler_runs, 0u);
  EXPECT_EQ(get(Rtc::kRegC), Rtc::kRegCPf | Rtc::kRegCUf) << "PF and UF set, no IRQF";
  EXPECT_EQ(irq.rising_edges(), 0u);
  // Enabling PIE with PF already set raises the IRQ at once (IRQF = PF.PIE).
  at(clock.now() + kMillisecond);
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBPie);
  EXPECT_TRUE(irq.level());
  // Disabling it again drops IRQF and the line.
  set(Rtc::kRegB, Rtc::kRegB24h);
  EXPECT_FALSE(irq.level());
  EXPECT_EQ(get(Rtc::kRegC), Rtc::kRegCPf);
}

// ------------------------------------------------------------ update, alarm

TEST_F(RtcTest, UpdateEndedInterruptAtEachSecondBoundary) {
  set(Rtc::kRegA, 0x20);  // no periodic rate: PF stays out of register C
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBUie);
  for (std::int64_t k = 1; k <= 20; ++k) {
    EXPECT_EQ(system.loop(0).next_deadline(), boundary(k));
    at(boundary(k) - 1);
    EXPECT_FALSE(irq.level());
    at(boundary(k));
    EXPECT_TRUE(irq.level());
    // Midnight also matches the power-on alarm (AF, not enabled).
    EXPECT_EQ(get(Rtc::kRegC) & ~Rtc::kRegCAf, Rtc::kRegCIrqf | Rtc::kRegCUf);
  }
  EXPECT_EQ(irq.rising_edges(), 20u);
}

TEST_F(RtcTest, AlarmAtAnExactTimeFiresOnceADay) {
  set(Rtc::kRegA, 0x20);  // no periodic rate: PF stays out of register C
  // 00:00:05 on 1 March.
  set(Rtc::kSecondsAlarm, 0x05);
  set(Rtc::kMinutesAlarm, 0x00);
  set(Rtc::kHoursAlarm, 0x00);
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBAie);
  EXPECT_EQ(rtc->armed().alarm, boundary(7));
  run_to(boundary(7) - 1);
  EXPECT_FALSE(irq.level());
  at(boundary(7));
  EXPECT_TRUE(irq.level());
  EXPECT_EQ(get(Rtc::kRegC), Rtc::kRegCIrqf | Rtc::kRegCAf | Rtc::kRegCUf);
  EXPECT_EQ(rtc->armed().alarm, boundary(7 + 86'400)) << "next: same time tomorrow";
  EXPECT_EQ(rtc->stats().handler_runs, 1u) << "one callout, not one per second";
}

TEST_F(RtcTest, AlarmDontCareFields) {
  // Seconds don't care, 00:01 (BCD): every second of that minute.
  set(Rtc::kSecondsAlarm, 0xC0);
  set(Rtc::kMinutesAlarm, 0x01);
  set(Rtc::kHoursAlarm, 0x00);
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBAie);
  std::vector<Nanos> fired;
  run_to(boundary(2 + 200), [&] {
    if (irq.level()) {
      fired.push_back(clock.now());
      EXPECT_EQ(get(Rtc::kRegC) & (Rtc::kRegCIrqf | Rtc::kRegCAf), Rtc::kRegCIrqf | Rtc::kRegCAf);
    }
  });
  ASSERT_EQ(fired.size(), 60u);
  for (std::size_t i = 0; i < fired.size(); ++i) EXPECT_EQ(fired[i], boundary(2 + 60 + static_cast<int>(i)));

  // All three don't care: every second.
  make();
  set(Rtc::kSecondsAlarm, 0xFF);
  set(Rtc::kMinutesAlarm, 0xC3);
  set(Rtc::kHoursAlarm, 0xD0);
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBAie);
  int count = 0;
  const Nanos t0 = clock.now();
  run_to(t0 + 10 * kSecond, [&] {
    if (irq.level()) ++count;
    (void)get(Rtc::kRegC);
  });
  EXPECT_EQ(count, 10);
}

TEST_F(RtcTest, AlarmIn12HourModeComparesThePmBit) {
  set(Rtc::kRegB, 0x00);  // BCD, 12-hour
  set_time_bcd(2024, 3, 1, 0, 0, 0, 6);  // written as 24h BCD: invalid in 12h...
  EXPECT_EQ(get(Rtc::kHours), 0x00) << "hour 0 is invalid in 12-hour mode: kept as written";
  // ...so write 11:59:58 PM properly in 12-hour BCD.
  set(Rtc::kRegB, Rtc::kRegBSet);
  set(Rtc::kHours, 0x80 | 0x11);
  set(Rtc::kMinutes, 0x59);
  set(Rtc::kSeconds, 0x58);
  set(Rtc::kRegB, 0x00);
  // Alarm at 12:00:00 AM (0x12, no PM bit).
  set(Rtc::kSecondsAlarm, 0x00);
  set(Rtc::kMinutesAlarm, 0x00);
  set(Rtc::kHoursAlarm, 0x12);
  set(Rtc::kRegB, Rtc::kRegBAie);
  const Nanos when = rtc->armed().alarm;
  EXPECT_EQ(when, boundary(2));
  at(when);
  EXPECT_TRUE(irq.level());
  EXPECT_EQ(get(Rtc::kHours), 0x12);
  EXPECT_EQ(get(Rtc::kDayOfMonth), 0x02);
}

TEST_F(RtcTest, AlarmThatCanNeverMatchArmsNothing) {
  set(Rtc::kRegA, 0x20);  // no periodic rate: PF stays out of register C
  set(Rtc::kSecondsAlarm, 0x75);  // 75 s does not exist
  set(Rtc::kMinutesAlarm, 0xC0);
  set(Rtc::kHoursAlarm, 0xC0);
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBAie);
  EXPECT_EQ(rtc->armed().alarm, 0);
  run_to(clock.now() + 3 * kSecond);
  EXPECT_EQ(get(Rtc::kRegC), Rtc::kRegCUf);
  EXPECT_EQ(rtc->stats().handler_runs, 0u);
}

// ------------------------------------------------------------ register C

TEST_F(RtcTest, RegisterCClearsOnReadAndLowersTheLine) {
  set(Rtc::kRegA, 0x20);  // no periodic rate: PF stays out of register C
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBUie);
  at(boundary(1));
  ASSERT_TRUE(irq.level());
  EXPECT_EQ(get(Rtc::kRegC), 0x90);
  EXPECT_FALSE(irq.level());
  EXPECT_EQ(get(Rtc::kRegC), 0x00) << "cleared by the first read";
  EXPECT_EQ(irq.falling_edges(), 1u);
  // C and D are read-only.
  set(Rtc::kRegC, 0xFF);
  set(Rtc::kRegD, 0x00);
  EXPECT_EQ(get(Rtc::kRegC), 0x00);
  EXPECT_EQ(get(Rtc::kRegD), 0x80);
}

TEST_F(RtcTest, FlagsStayLatchedUntilRead) {
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBUie | Rtc::kRegBPie);
  at(boundary(1));
  EXPECT_TRUE(irq.level());
  at(boundary(3) + 1);
  EXPECT_EQ(irq.rising_edges(), 1u) << "the line stays up; no new edge";
  EXPECT_EQ(get(Rtc::kRegC), 0xD0 | Rtc::kRegCAf) << "AF: midnight matched the power-on alarm";
  EXPECT_EQ(get(Rtc::kRegC), 0x00);
}

// ------------------------------------------------------------ NVRAM, NMI

TEST_F(RtcTest, NvramKeepsEveryByteAcrossReset) {
  for (unsigned i = Rtc::kNvramFirst; i < 0x80; ++i) {
    if (i == Rtc::kCentury) continue;  // the clock's
    set(static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i * 7 + 3));
  }
  for (unsigned i = Rtc::kNvramFirst; i < 0x80; ++i) {
    if (i == Rtc::kCentury) continue;
    EXPECT_EQ(get(static_cast<std::uint8_t>(i)), static_cast<std::uint8_t>(i * 7 + 3)) << i;
  }
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBBinary | Rtc::kRegBPie);
  rtc->drain_timers();
  rtc->reset(system.loop(0));
  for (unsigned i = Rtc::kNvramFirst; i < 0x80; ++i) {
    if (i == Rtc::kCentury) continue;
    EXPECT_EQ(get(static_cast<std::uint8_t>(i)), static_cast<std::uint8_t>(i * 7 + 3)) << i;
  }
  EXPECT_EQ(get(Rtc::kRegB), 0x02) << "registers are re-initialised";
  EXPECT_EQ(get(Rtc::kRegA), 0x26);
  EXPECT_EQ(get(Rtc::kCentury), 0x20);
  EXPECT_EQ(Rtc::kNvramSize, 114u);
}

TEST_F(RtcTest, BootCounterInNvramSurvivesManyResets) {
  for (int boot = 1; boot <= 20; ++boot) {
    const int seen = get(0x7E) == 0xA5 ? get(0x7F) + 1 : 1;
    EXPECT_EQ(seen, boot);
    set(0x7F, static_cast<std::uint8_t>(seen));
    set(0x7E, 0xA5);
    set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBPie);  // timers running at reboot
    at(clock.now() + 3 * kMillisecond);
    rtc->drain_timers();
    rtc->reset(system.loop(0));
    EXPECT_EQ(rtc->armed().periodic, 0);
  }
}

TEST_F(RtcTest, IndexBit7IsTheNmiMask) {
  std::uint8_t index = 0x80 | Rtc::kRegD;
  rtc->write(0, std::span<const std::uint8_t>(&index, 1));
  EXPECT_TRUE(rtc->nmi_masked());
  std::uint8_t value = 0;
  rtc->read(1, std::span<std::uint8_t>(&value, 1));
  EXPECT_EQ(value, 0x80) << "bit 7 is not part of the index";
  rtc->read(0, std::span<std::uint8_t>(&value, 1));
  EXPECT_EQ(value, 0xFF) << "port 0x70 is write-only";
  index = Rtc::kRegD;
  rtc->write(0, std::span<const std::uint8_t>(&index, 1));
  EXPECT_FALSE(rtc->nmi_masked());
  // A 16-bit access covers both ports: index then data.
  const std::uint8_t pair[2] = {0x80 | 0x40, 0x5A};
  rtc->write(0, pair);
  EXPECT_TRUE(rtc->nmi_masked());
  EXPECT_EQ(get(0x40), 0x5A);
}

// ------------------------------------------------------------ bad input

TEST_F(RtcTest, InvalidTimeIsKeptAsWrittenAndNeverCrashes) {
  struct Bad {
    std::uint8_t index, value;
  };
  const Bad cases[] = {{Rtc::kMonth, 0x13},      {Rtc::kHours, 0x25},      {Rtc::kDayOfMonth, 0x00},
                       {Rtc::kSeconds, 0x1A},    {Rtc::kMinutes, 0x60},    {Rtc::kDayOfMonth, 0x30},
                       {Rtc::kMonth, 0x00},      {Rtc::kYear, 0xFF},       {Rtc::kCentury, 0xA0}};
  for (const Bad& bad : cases) {
    make(kWallStart - (clock.now() - kStart));  // 23:59:58 on 29 February again
    if (bad.index == Rtc::kDayOfMonth && bad.value == 0x30) {
      EXPECT_EQ(get(Rtc::kMonth), 0x02);  // 30 February
    }
    set(bad.index, bad.value);
    EXPECT_EQ(get(bad.index), bad.value) << "index " << int{bad.index};
    const std::uint8_t seconds = get(Rtc::kSeconds);
    (void)get(Rtc::kRegC);
    at(clock.now() + 3 * kSecond);
    EXPECT_EQ(get(bad.index), bad.value);
    EXPECT_EQ(get(Rtc::kSeconds), seconds) << "the calendar stops on an invalid time";
    EXPECT_EQ(get(Rtc::kRegC) & Rtc::kRegCUf, Rtc::kRegCUf) << "update cycles go on";
  }
  // A valid value restarts the calendar from the registers.
  make();
  set(Rtc::kMonth, 0x13);
  at(clock.now() + 5 * kSecond);
  set(Rtc::kMonth, 0x12);
  EXPECT_EQ(get(Rtc::kMonth), 0x12);
  const std::uint8_t s = get(Rtc::kSeconds);
  at(clock.now() + kSecond);
  EXPECT_NE(get(Rtc::kSeconds), s);
}

TEST_F(RtcTest, InvalidDayOfWeekIsKeptWhileTheDateCounts) {
  set(Rtc::kDayOfWeek, 0x00);
  at(boundary(3));
  EXPECT_EQ(get(Rtc::kDayOfWeek), 0x00);
  EXPECT_EQ(get(Rtc::kDayOfMonth), 0x01);
}

TEST_F(RtcTest, BinaryModeAcceptsWhatBcdRejects) {
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBBinary);
  set(Rtc::kSeconds, 0x1A);  // 26 in binary
  EXPECT_EQ(get(Rtc::kSeconds), 0x1A);
  at(boundary(1));
  EXPECT_EQ(get(Rtc::kSeconds), 0x1B);
  set(Rtc::kMonth, 13);
  at(boundary(2));
  EXPECT_EQ(get(Rtc::kMonth), 13);
  EXPECT_EQ(get(Rtc::kSeconds), 0x1B);
  // Flipping to BCD re-parses the kept bytes: 0x0D is not BCD either.
  set(Rtc::kRegB, Rtc::kRegB24h);
  EXPECT_EQ(get(Rtc::kMonth), 13);
}

// ------------------------------------------------------------ output, lifecycle

TEST_F(RtcTest, SetOutputEnabledDisconnectsIrq8) {
  set(Rtc::kRegA, 0x20);  // no periodic rate: PF stays out of register C
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBUie);
  at(boundary(1));
  ASSERT_TRUE(irq.level());
  rtc->set_output_enabled(false);
  EXPECT_FALSE(irq.level());
  (void)get(Rtc::kRegC);
  at(boundary(2));
  EXPECT_FALSE(irq.level()) << "HPET legacy replacement owns IRQ 8";
  EXPECT_EQ(get(Rtc::kRegC) & Rtc::kRegCIrqf, Rtc::kRegCIrqf) << "the chip still flags it";
  at(boundary(3));
  rtc->set_output_enabled(true);
  EXPECT_TRUE(irq.level());
}

TEST_F(RtcTest, PauseStopsCalloutsAndResumeCatchesUp) {
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBPie);
  const Nanos first = system.loop(0).next_deadline();
  rtc->pause();
  EXPECT_EQ(rtc->armed().periodic, 0);
  run_to(clock.now() + 20 * kMillisecond);
  EXPECT_EQ(rtc->stats().handler_runs, 0u);
  EXPECT_FALSE(irq.level());
  rtc->resume();
  EXPECT_TRUE(irq.level()) << "an edge passed while paused: one interrupt at resume";
  EXPECT_EQ(irq.rising_edges(), 1u);
  EXPECT_EQ(get(Rtc::kRegC), 0xC0);
  const std::int64_t cycles = Rtc::periodic_cycles(6);
  std::int64_t k = 1;
  while (edge_time(kPhase, k, cycles) <= clock.now()) ++k;
  EXPECT_EQ(rtc->armed().periodic, edge_time(kPhase, k, cycles));
  EXPECT_GT(first, 0);
  EXPECT_EQ(get(Rtc::kSeconds), 0x58) << "still 23:59:58: 20 ms passed";
}

TEST_F(RtcTest, DrainStopsHandlersAndResetRearmsNothing) {
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBPie | Rtc::kRegBUie);
  run_to(clock.now() + 3 * kMillisecond, [&] { (void)get(Rtc::kRegC); });
  const auto runs = rtc->stats().handler_runs;
  EXPECT_GT(runs, 0u);
  rtc->drain_timers();
  rtc->drain_timers();  // idempotent
  run_to(clock.now() + 2 * kSecond);
  EXPECT_EQ(rtc->stats().handler_runs, runs);
  rtc->reset(system.loop(0));
  EXPECT_FALSE(irq.level());
  EXPECT_EQ(system.loop(0).next_deadline(), timers::kNever);
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBUie);
  EXPECT_NE(rtc->armed().update, 0) << "usable again after reset";
}

// A VM reset while the VM is paused (the host's reset request, or the
// guest's own reboot caught by a pause) resets a paused RTC: power-on state
// is running, so the chip must interrupt again without a resume, which the
// VM would refuse (it reports running after a reset).
TEST_F(RtcTest, ResetOfAPausedRtcLeavesItRunning) {
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBPie);
  rtc->pause();
  rtc->drain_timers();
  rtc->reset(system.loop(0));
  set(Rtc::kRegB, Rtc::kRegB24h | Rtc::kRegBPie);
  EXPECT_NE(rtc->armed().periodic, 0) << "power-on state is not paused";
  run_to(clock.now() + 5 * kMillisecond, [&] { (void)get(Rtc::kRegC); });
  EXPECT_GE(rtc->stats().handler_runs, 4u) << "1024 Hz for 5 ms";
  EXPECT_GE(irq.rising_edges(), 4u);
}

TEST_F(RtcTest, RandomPortTrafficStaysBoundedAndQuiet) {
  testing::LogCapture logs;
  spdlog::warn("capture check");
  ASSERT_EQ(logs.lines(), 1u);
  const auto real_start = std::chrono::steady_clock::now();
  std::mt19937_64 rng(0x5EED'0070);
  constexpr Nanos kStep = 10 * kMicrosecond;
  std::uint64_t ops = 0;
  Nanos simulated = 0;
  for (int i = 0; i < 20'000; ++i) {
    if (rng() % 5 < 2) {
      // Garbage: any port, any width, any bytes, read or write.
      const unsigned width = 1u << (rng() % 3);
      std::uint8_t bytes[4];
      for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
      const std::uint64_t offset = rng() % 8 == 0 ? rng() % 4 : rng() % 2;
      if (rng() % 3 == 0) {
        rtc->read(offset, std::span<std::uint8_t>(bytes, width));
      } else {
        rtc->write(offset, std::span<const std::uint8_t>(bytes, width));
      }
    } else {
      // Index then data on the clock's registers, with every interrupt
      // enable, rate and divider value likely to come up.
      const auto index = static_cast<std::uint8_t>(rng() % 4 == 0 ? rng() % 0x80 : rng() % 0x0E);
      auto value = static_cast<std::uint8_t>(rng());
      // A running divider most of the time, or nothing would tick.
      if (index == Rtc::kRegA && rng() % 4 != 0) value = static_cast<std::uint8_t>(0x20 | (value & 0x0F));
      if (rng() % 3 == 0) {
        (void)get(index);
      } else {
        set(index, value);
      }
    }
    ++ops;
    if (rng() % 1000 == 0) {
      rtc->drain_timers();
      rtc->reset(system.loop(0));
    }
    if (rng() % 500 == 0) rtc->set_output_enabled(rng() % 2 == 0);
    const int steps = static_cast<int>(rng() % 20);
    for (int s = 0; s < steps; ++s) {
      clock.advance(kStep);
      simulated += kStep;
      ASSERT_LE(system.loop(0).run_due(), 3u);
    }
  }
  // Periodic at most 8192 Hz, update and alarm 1 Hz each, and each port
  // access can move a deadline once.
  const double seconds = static_cast<double>(simulated) / kSecond;
  const auto bound = static_cast<std::uint64_t>(seconds * (8192 + 2)) + 3 * ops;
  EXPECT_LE(rtc->stats().handler_runs, bound);
  // One guest-reachable log site, at most 10 lines per 5 s of real time.
  const auto windows =
      static_cast<std::size_t>((std::chrono::steady_clock::now() - real_start) / std::chrono::seconds(5)) + 2;
  EXPECT_LE(logs.lines(), 1u + 10u * windows) << "guest-triggered logging must be rate limited";
}

// Real threads on the real clock: a timer thread runs the callouts while a
// guest thread programs the chip and a VMM thread pauses, resumes and moves
// the timers; ThreadSanitizer checks the locking, the bound checks that
// nothing ran away.
TEST(RtcThreads, GuestTimerAndVmmThreadsTogether) {
  timers::CyclicSystem system(timers::MonotonicClock::instance(),
                              timers::LoopOptions{.loops = 2, .threads = true, .pin = false});
  FakeIrqLine irq;
  Rtc rtc(system, system.loop(0), irq);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ops{0};
  const auto io = [&](std::uint8_t index, std::optional<std::uint8_t> value) {
    rtc.write(0, std::span<const std::uint8_t>(&index, 1));
    std::uint8_t v = value.value_or(0);
    if (value) {
      rtc.write(1, std::span<const std::uint8_t>(&v, 1));
    } else {
      rtc.read(1, std::span<std::uint8_t>(&v, 1));
    }
    ++ops;
  };
  std::thread guest([&] {
    std::mt19937 rng(8);
    while (!stop) {
      switch (rng() % 6) {
        case 0:
          io(Rtc::kRegA, static_cast<std::uint8_t>(0x20 | (3 + rng() % 13)));
          break;
        case 1:
          io(Rtc::kRegB, static_cast<std::uint8_t>(0x02 | (rng() & 0x70)));
          break;
        case 2:
          io(Rtc::kSecondsAlarm, 0xC0);
          break;
        default:
          io(Rtc::kRegC, std::nullopt);
          io(Rtc::kSeconds, std::nullopt);
          break;
      }
    }
  });
  std::thread vmm([&] {
    for (int i = 0; !stop; ++i) {
      rtc.pause();
      rtc.resume();
      rtc.bind_timers(system.loop(i % 2));
      rtc.set_output_enabled(i % 3 != 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  guest.join();
  vmm.join();
  rtc.drain_timers();
  const auto runs = rtc.stats().handler_runs;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LE(runs, static_cast<std::uint64_t>(seconds * (8192 + 2)) + 3 * ops.load() + 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(rtc.stats().handler_runs, runs) << "a handler ran after drain_timers()";
  // After drain and reset the timers work again: the periodic handler runs.
  // Not "is armed" right after the write: a periodic edge that passes before
  // it (under TSan, reset to write can take longer than the period) sets PF,
  // and with PF pending the chip rightly arms nothing until C is read. So C
  // is read until a handler has run, at 64 Hz, each read arming the next edge.
  rtc.reset(system.loop(0));
  io(Rtc::kRegA, 0x20 | 0x0A);
  io(Rtc::kRegB, 0x02 | Rtc::kRegBPie);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (rtc.stats().handler_runs == runs && std::chrono::steady_clock::now() < give_up) {
    io(Rtc::kRegC, std::nullopt);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GT(rtc.stats().handler_runs, runs) << "the periodic timer never fired after drain and reset";
}

}  // namespace
}  // namespace vmm::devices
