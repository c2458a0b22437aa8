// HPET against the IA-PC HPET 1.0a specification on a ManualClock: register
// values, the counter, one-shot and periodic comparators in 32- and 64-bit
// mode, level/edge and the status register, legacy replacement, FSB, the
// timer-device lifecycle, and random guest traffic. The seed races on the
// HPET are in tests/seed_race/.
#include "devices/hpet.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "tests/common/race_script.h"
#include "tests/devices/fakes.h"
#include "timers/event_loop.h"

namespace vmm::devices {
namespace {

using namespace std::chrono_literals;
using testing::FakeIrqLine;
using testing::FakeMsiSink;
using timers::kMicrosecond;
using timers::kMillisecond;
using timers::kSecond;
using timers::Nanos;

constexpr std::uint64_t kTwo32 = std::uint64_t{1} << 32;
constexpr std::uint64_t kRoute20 = 20u << Hpet::kTimerRouteShift;
constexpr std::uint64_t kRoute21 = 21u << Hpet::kTimerRouteShift;
constexpr std::uint64_t kRoute22 = 22u << Hpet::kTimerRouteShift;

class HpetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hpet = std::make_unique<Hpet>(
        system, system.loop(0), [this](unsigned pin) -> IrqLine& { return pins[pin]; }, isa0, isa8, msi,
        [this](bool legacy) { legacy_calls.push_back(legacy); });
  }

  std::uint64_t rd(std::uint64_t offset, std::size_t width = 8) {
    std::array<std::uint8_t, 8> bytes{};
    hpet->read(offset, std::span<std::uint8_t>(bytes.data(), width));
    return load_le(std::span<const std::uint8_t>(bytes.data(), width));
  }
  void wr(std::uint64_t offset, std::uint64_t value, std::size_t width = 8) {
    std::array<std::uint8_t, 8> bytes{};
    store_le(std::span<std::uint8_t>(bytes.data(), width), value);
    hpet->write(offset, std::span<const std::uint8_t>(bytes.data(), width));
  }
  void at(Nanos t) {
    clock.set(t);
    system.loop(0).run_due();
  }
  // Deadline to deadline up to `until` (fails if a device spins).
  void run_to(Nanos until, const std::function<void()>& on_fire = {}) {
    testing::run_loop_until(clock, system.loop(0), until, on_fire, kMaxBatches);
  }
  std::uint64_t counter() { return rd(Hpet::kRegCounter); }
  void enable() { wr(Hpet::kRegConfig, rd(Hpet::kRegConfig) | Hpet::kConfigEnable); }
  void disable() { wr(Hpet::kRegConfig, rd(Hpet::kRegConfig) & ~Hpet::kConfigEnable); }
  void config(unsigned n, std::uint64_t value) { wr(Hpet::timer_config_reg(n), value); }
  void comparator(unsigned n, std::uint64_t value) { wr(Hpet::timer_comparator_reg(n), value); }
  std::uint64_t comparator(unsigned n) { return rd(Hpet::timer_comparator_reg(n)); }
  // Linux's hpet_clkevt_set_state_periodic: SETVAL, comparator, then the
  // period (32-bit writes in 32-bit mode, as Linux; 64-bit ones otherwise).
  void start_periodic(unsigned n, std::uint64_t first, std::uint64_t period, std::uint64_t extra = 0) {
    config(n, Hpet::kTimerIntEnable | Hpet::kTimerPeriodic | Hpet::kTimerValSet | extra);
    const std::size_t width = (extra & Hpet::kTimer32Bit) != 0 ? 4 : 8;
    wr(Hpet::timer_comparator_reg(n), first, width);
    wr(Hpet::timer_comparator_reg(n), period, width);
  }
  std::uint64_t runs(unsigned n) { return hpet->stats().handler_runs[n]; }

  static constexpr std::uint64_t kMaxBatches = 1'000'000;
  timers::ManualClock clock{kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  std::array<FakeIrqLine, Hpet::kIoApicPins> pins;
  FakeIrqLine isa0, isa8;
  FakeMsiSink msi;
  std::vector<bool> legacy_calls;
  std::unique_ptr<Hpet> hpet;  // destroyed (drained) before the system
};

// ------------------------------------------------------------ registers

TEST_F(HpetTest, CapabilitiesAndPowerOnValues) {
  EXPECT_EQ(rd(Hpet::kRegCapabilities), 0x0098'9680'8086'A201u);
  EXPECT_EQ(rd(0x004, 4), 10'000'000u) << "100 MHz";
  EXPECT_EQ(rd(0x000, 4), 0x8086'A201u);
  EXPECT_EQ(Hpet::kEventTimerBlockId, 0x8086'A201u) << "what the ACPI HPET table carries";
  EXPECT_EQ(Hpet::kAcpiMinimumTick, 0x80);
  EXPECT_EQ(rd(Hpet::kRegConfig), 0u);
  EXPECT_EQ(rd(Hpet::kRegStatus), 0u);
  EXPECT_EQ(counter(), 0u);
  for (unsigned n = 0; n < Hpet::kTimers; ++n) {
    EXPECT_EQ(rd(Hpet::timer_config_reg(n)), 0x00F0'0000'0000'8030u) << "pins 20-23, FSB, 64-bit, periodic";
    EXPECT_EQ(comparator(n), ~std::uint64_t{0});
    EXPECT_EQ(rd(Hpet::timer_fsb_reg(n)), 0u);
  }
  for (const std::uint64_t reserved : {0x008u, 0x018u, 0x028u, 0x0E8u, 0x0F8u, 0x118u, 0x160u, 0x3F8u}) {
    EXPECT_EQ(rd(reserved), 0u) << std::hex << reserved;
  }
  EXPECT_EQ(rd(0x3FC, 8), 0xFFFF'FFFF'0000'0000u) << "bytes past the block read as ones";
  EXPECT_EQ(system.loop(0).next_deadline(), timers::kNever);
}

TEST_F(HpetTest, TimerConfigKeepsCapabilitiesAndRejectsRoutesOutsideThem) {
  config(0, ~std::uint64_t{0});
  const std::uint64_t writable_without_route = Hpet::kTimerLevel | Hpet::kTimerIntEnable | Hpet::kTimerPeriodic |
                                               Hpet::kTimerValSet | Hpet::kTimer32Bit | Hpet::kTimerFsbEnable;
  EXPECT_EQ(rd(Hpet::timer_config_reg(0)), 0x00F0'0000'0000'8030u | writable_without_route)
      << "route 31 is outside the capability: the field keeps 0";
  config(1, 23u << Hpet::kTimerRouteShift);
  std::uint64_t accepted = 23;
  for (unsigned pin = 0; pin < 32; ++pin) {
    config(1, std::uint64_t{pin} << Hpet::kTimerRouteShift);
    const auto route = (rd(Hpet::timer_config_reg(1)) & Hpet::kTimerRouteMask) >> Hpet::kTimerRouteShift;
    if (pin >= 20 && pin <= 23) accepted = pin;
    EXPECT_EQ(route, accepted) << "pin " << pin;
  }
  EXPECT_EQ(rd(Hpet::timer_config_reg(1)) >> 32, Hpet::kRouteCap);
  // 32-bit halves, as Linux writes them.
  config(2, 0);
  wr(Hpet::timer_config_reg(2), Hpet::kTimerIntEnable | kRoute22, 4);
  wr(Hpet::timer_config_reg(2) + 4, 0, 4);
  EXPECT_EQ(rd(Hpet::timer_config_reg(2), 4), 0x8030u | Hpet::kTimerIntEnable | kRoute22);
  EXPECT_EQ(rd(Hpet::timer_config_reg(2) + 4, 4), Hpet::kRouteCap);
}

TEST_F(HpetTest, FsbRouteAndStatusRegisters) {
  wr(Hpet::timer_fsb_reg(1), 0x4041, 4);
  wr(Hpet::timer_fsb_reg(1) + 4, 0xFEE0'1000, 4);
  EXPECT_EQ(rd(Hpet::timer_fsb_reg(1)), 0xFEE0'1000'0000'4041u);
  wr(Hpet::kRegStatus, ~std::uint64_t{0});
  EXPECT_EQ(rd(Hpet::kRegStatus), 0u);
  wr(Hpet::kRegConfig, ~std::uint64_t{0});
  EXPECT_EQ(rd(Hpet::kRegConfig), Hpet::kConfigEnable | Hpet::kConfigLegacy);
}

// ------------------------------------------------------------ counter

TEST_F(HpetTest, CounterRunsFromTheClockWhileEnabledAndHoldsWhileHalted) {
  enable();
  at(kSecond + kMillisecond);
  EXPECT_EQ(counter(), 100'000u);
  at(kSecond + kMillisecond + 9);
  EXPECT_EQ(counter(), 100'000u);
  at(kSecond + kMillisecond + 10);
  EXPECT_EQ(counter(), 100'001u);
  disable();
  at(kSecond + 2 * kSecond);
  EXPECT_EQ(counter(), 100'001u) << "held while halted";
  wr(Hpet::kRegCounter, 0x1234'5678'9ABC'DEF0u);
  EXPECT_EQ(counter(), 0x1234'5678'9ABC'DEF0u);
  wr(Hpet::kRegCounter + 4, 0x0000'0001, 4);
  EXPECT_EQ(rd(Hpet::kRegCounter, 4), 0x9ABC'DEF0u);
  EXPECT_EQ(rd(Hpet::kRegCounter + 4, 4), 0x1u);
  enable();
  at(clock.now() + kMicrosecond);
  EXPECT_EQ(counter(), 0x1'9ABC'DEF0u + 100);
  wr(Hpet::kRegCounter, 0);
  EXPECT_EQ(counter(), 0x1'9ABC'DEF0u + 100) << "a write while running is ignored";
}

// ------------------------------------------------------------ one-shot

TEST_F(HpetTest, OneShotFiresAtTheExactTick) {
  enable();
  at(clock.now() + 3 * kMicrosecond);
  const Nanos start = clock.now();
  const std::uint64_t c0 = counter();
  EXPECT_EQ(c0, 300u);
  config(0, Hpet::kTimerIntEnable | kRoute20);
  comparator(0, c0 + 12'345);
  EXPECT_EQ(hpet->armed(0), start + 123'450);
  at(start + 123'449);
  EXPECT_EQ(pins[20].rising_edges(), 0u);
  at(start + 123'450);
  EXPECT_EQ(pins[20].rising_edges(), 1u);
  EXPECT_FALSE(pins[20].level()) << "edge-triggered: a pulse";
  EXPECT_EQ(rd(Hpet::kRegStatus), 0u) << "no status in edge mode";
  EXPECT_EQ(hpet->armed(0), 0) << "64-bit: the next match is 2^64 ticks away";
  run_to(clock.now() + 100 * kSecond);
  EXPECT_EQ(pins[20].rising_edges(), 1u);
  EXPECT_EQ(runs(0), 1u);
}

TEST_F(HpetTest, ComparatorInThePastWaitsForTheWrapWithoutSpinning) {
  enable();
  at(clock.now() + 10 * kMicrosecond);  // counter 1000
  const Nanos start = clock.now();
  config(0, Hpet::kTimerIntEnable | Hpet::kTimer32Bit | kRoute20);
  comparator(0, 500);
  EXPECT_EQ(hpet->armed(0), start + static_cast<Nanos>(kTwo32 - 500) * 10) << "42.9 s away, not now";
  // Step the first second finely: a comparator in the past must not fire.
  for (int i = 0; i < 100'000; ++i) {
    clock.advance(10 * kMicrosecond);
    ASSERT_EQ(system.loop(0).run_due(), 0u);
  }
  run_to(start + 100 * kSecond);
  EXPECT_EQ(pins[20].rising_edges(), 2u) << "at the wrap, and again 2^32 ticks later";
  EXPECT_EQ(runs(0), 2u);

  // 64-bit mode: nothing is armed at all.
  config(1, Hpet::kTimerIntEnable | kRoute21);
  comparator(1, counter() - 1);
  EXPECT_EQ(hpet->armed(1), 0);
  run_to(clock.now() + 100 * kSecond);
  EXPECT_EQ(pins[21].rising_edges(), 0u);
}

TEST_F(HpetTest, ThirtyTwoBitModeMatchesTheLowHalfAcrossTheWrap) {
  wr(Hpet::kRegCounter, kTwo32 - 100);
  config(0, Hpet::kTimerIntEnable | Hpet::kTimer32Bit | kRoute20);
  comparator(0, 50);
  config(1, Hpet::kTimerIntEnable | kRoute21);
  comparator(1, kTwo32 + 50);
  config(2, Hpet::kTimerIntEnable | kRoute22);
  comparator(2, 50);
  enable();
  const Nanos start = clock.now();
  EXPECT_EQ(hpet->armed(0), start + 1500);
  EXPECT_EQ(hpet->armed(1), start + 1500);
  EXPECT_EQ(hpet->armed(2), 0) << "64-bit comparator 50 is behind a 64-bit counter";
  at(start + 1500);
  EXPECT_EQ(pins[20].rising_edges(), 1u);
  EXPECT_EQ(pins[21].rising_edges(), 1u);
  EXPECT_EQ(pins[22].rising_edges(), 0u);
  EXPECT_EQ(counter(), kTwo32 + 50);
  // The upper half does not exist in 32-bit mode.
  wr(Hpet::timer_comparator_reg(0) + 4, 0xFFFF'FFFF, 4);
  EXPECT_EQ(comparator(0), 50u);
  comparator(0, 0xAAAA'BBBB'CCCC'DDDDu);
  EXPECT_EQ(comparator(0), 0xCCCC'DDDDu);
  // Switching a timer to 32-bit mode truncates its comparator.
  config(1, Hpet::kTimerIntEnable | Hpet::kTimer32Bit | kRoute21);
  EXPECT_EQ(comparator(1), 50u);
}

// ------------------------------------------------------------ periodic

TEST_F(HpetTest, PeriodicLinuxSequenceHasNoDrift) {
  enable();
  const Nanos start = clock.now();
  const std::uint64_t c0 = counter();
  constexpr std::uint64_t kPeriod = 100'000;  // 1 ms
  start_periodic(0, c0 + kPeriod, kPeriod, Hpet::kTimer32Bit | kRoute20);
  EXPECT_EQ(rd(Hpet::timer_config_reg(0)) & Hpet::kTimerValSet, 0u) << "VAL_SET clears after the write";
  constexpr int kPeriods = 10'000;
  for (int k = 1; k <= kPeriods; ++k) {
    const Nanos due = start + k * kMillisecond;
    ASSERT_EQ(system.loop(0).next_deadline(), due) << k;
    at(due - 1);
    ASSERT_EQ(pins[20].rising_edges(), static_cast<std::uint64_t>(k - 1));
    at(due);
    ASSERT_EQ(pins[20].rising_edges(), static_cast<std::uint64_t>(k));
    ASSERT_EQ(comparator(0), (c0 + (k + 1) * kPeriod) & 0xFFFF'FFFF);
  }
  EXPECT_EQ(runs(0), static_cast<std::uint64_t>(kPeriods));
}

// Linux's /dev/hpet (drivers/char/hpet.c, HPET_IE_ON on a periodic-capable
// comparator) with the legacy replacement already taking comparators 0 and
// 1: the route written alone (32-bit), then TYPE | VAL_SET, the first match
// and the period as 64-bit writes, and 32-bit mode switched on last, with
// the counter already past 2^32 (43 s after the HPET was enabled).
TEST_F(HpetTest, LinuxCharacterDeviceSequenceFiresAtTheRequestedRate) {
  wr(Hpet::kRegConfig, Hpet::kConfigEnable | Hpet::kConfigLegacy);
  at(clock.now() + 50 * kSecond);
  const Nanos start = clock.now();
  ASSERT_GT(counter(), kTwo32);
  const std::uint64_t route = 20u << Hpet::kTimerRouteShift;
  const std::uint64_t v = (rd(Hpet::timer_config_reg(2), 4) & ~0x3E00u) | route;
  wr(Hpet::timer_config_reg(2), v, 4);
  const std::uint64_t cfg = rd(Hpet::timer_config_reg(2));
  config(2, cfg | Hpet::kTimerPeriodic | Hpet::kTimerValSet);
  constexpr std::uint64_t kPeriod = 100'000'000 / 64;
  const std::uint64_t m = counter();
  comparator(2, kPeriod + m + 1000);
  comparator(2, kPeriod);
  config(2, cfg | Hpet::kTimer32Bit | Hpet::kTimerIntEnable | Hpet::kTimerPeriodic);
  run_to(start + kSecond);
  EXPECT_NEAR(static_cast<double>(pins[20].rising_edges()), 64.0, 1.0);
}

TEST_F(HpetTest, PeriodicSkipsMissedPeriods) {
  enable();
  const Nanos start = clock.now();
  const std::uint64_t c0 = counter();
  constexpr std::uint64_t kPeriod = 100'000;
  start_periodic(0, c0 + kPeriod, kPeriod, kRoute20);
  // The timer thread wakes 10.5 periods late: one interrupt, ten skipped.
  clock.set(start + 10 * kMillisecond + kMillisecond / 2);
  EXPECT_EQ(system.loop(0).run_due(), 1u);
  EXPECT_EQ(pins[20].rising_edges(), 1u);
  EXPECT_EQ(comparator(0), c0 + 11 * kPeriod);
  EXPECT_EQ(system.loop(0).next_deadline(), start + 11 * kMillisecond) << "still on the original grid";
  at(start + 11 * kMillisecond);
  EXPECT_EQ(pins[20].rising_edges(), 2u);
}

TEST_F(HpetTest, PeriodicWithZeroPeriodDoesNotSpin) {
  enable();
  const Nanos start = clock.now();
  const std::uint64_t c0 = counter();
  start_periodic(0, c0 + 1000, 0, kRoute20);
  start_periodic(1, c0 + 1000, 0, Hpet::kTimer32Bit | kRoute21);
  for (int i = 0; i < 100'000; ++i) {
    clock.advance(10 * kMicrosecond);
    ASSERT_LE(system.loop(0).run_due(), 2u);
  }
  EXPECT_EQ(runs(0), 1u);
  EXPECT_EQ(runs(1), 1u);
  EXPECT_EQ(pins[20].rising_edges(), 1u);
  EXPECT_EQ(hpet->armed(0), 0);
  EXPECT_EQ(hpet->armed(1), start + 10'000 + static_cast<Nanos>(kTwo32) * 10) << "32-bit: once per wrap";
}

TEST_F(HpetTest, PeriodicWithATinyPeriodIsCoalescedNotSpun) {
  enable();
  const std::uint64_t c0 = counter();
  start_periodic(0, c0 + 1, 1, kRoute20);
  const Nanos start = clock.now();
  for (int i = 0; i < 10'000; ++i) {
    clock.advance(kMicrosecond);
    system.loop(0).run_due();
  }
  const Nanos elapsed = clock.now() - start;
  EXPECT_LE(runs(0), static_cast<std::uint64_t>(elapsed / Hpet::kMinRearmInterval + 1));
  EXPECT_GE(runs(0), static_cast<std::uint64_t>(elapsed / Hpet::kMinRearmInterval - 1));
  EXPECT_EQ(pins[20].rising_edges(), runs(0));
  EXPECT_EQ(comparator(0), counter() + 1) << "the comparator stays on its grid";
}

// ------------------------------------------------------------ level, status

TEST_F(HpetTest, LevelTriggeredStatusHoldsTheLineUntilWrittenOne) {
  enable();
  config(1, Hpet::kTimerLevel | Hpet::kTimerIntEnable | kRoute21);
  comparator(1, counter() + 100);
  at(clock.now() + 1000);
  EXPECT_EQ(rd(Hpet::kRegStatus), 0x2u);
  EXPECT_TRUE(pins[21].level());
  EXPECT_EQ(hpet->armed(1), 0);
  wr(Hpet::kRegStatus, 0x5);  // other bits: no effect
  EXPECT_EQ(rd(Hpet::kRegStatus), 0x2u);
  EXPECT_TRUE(pins[21].level());
  wr(Hpet::kRegStatus, 0x2);
  EXPECT_EQ(rd(Hpet::kRegStatus), 0u);
  EXPECT_FALSE(pins[21].level());
  EXPECT_EQ(pins[21].rising_edges(), 1u);

  // Periodic level: one assertion per acknowledgement, no callouts meanwhile.
  const std::uint64_t c = counter();
  start_periodic(1, c + 10'000, 10'000, Hpet::kTimerLevel | kRoute21);  // 100 us
  const Nanos s = clock.now();
  run_to(s + kMillisecond);
  EXPECT_TRUE(pins[21].level());
  EXPECT_EQ(runs(1), 2u) << "the one-shot and the first period; then the set bit stops callouts";
  EXPECT_EQ(hpet->armed(1), 0);
  wr(Hpet::kRegStatus, 0x2);
  EXPECT_FALSE(pins[21].level());
  EXPECT_EQ(hpet->armed(1), s + 1100 * kMicrosecond) << "next period on the grid";
  at(s + 1100 * kMicrosecond);
  EXPECT_TRUE(pins[21].level());
  EXPECT_EQ(pins[21].rising_edges(), 3u);
}

TEST_F(HpetTest, LevelStatusIsSetEvenWithInterruptsDisabled) {
  enable();
  config(2, Hpet::kTimerLevel | kRoute22);
  comparator(2, counter() + 100);
  at(clock.now() + 1000);
  EXPECT_EQ(rd(Hpet::kRegStatus), 0x4u);
  EXPECT_FALSE(pins[22].level());
  config(2, Hpet::kTimerLevel | Hpet::kTimerIntEnable | kRoute22);
  EXPECT_TRUE(pins[22].level()) << "enabling with the status set asserts";
  config(2, Hpet::kTimerIntEnable | kRoute22);
  EXPECT_FALSE(pins[22].level());
  EXPECT_EQ(rd(Hpet::kRegStatus), 0u) << "edge mode has no status";
}

TEST_F(HpetTest, TwoLevelComparatorsOnOnePinKeepItUpUntilBothAreCleared) {
  enable();
  config(0, Hpet::kTimerLevel | Hpet::kTimerIntEnable | kRoute20);
  config(1, Hpet::kTimerLevel | Hpet::kTimerIntEnable | kRoute20);
  comparator(0, counter() + 10);
  comparator(1, counter() + 20);
  at(clock.now() + 1000);
  EXPECT_EQ(rd(Hpet::kRegStatus), 0x3u);
  EXPECT_TRUE(pins[20].level());
  wr(Hpet::kRegStatus, 0x1);
  EXPECT_TRUE(pins[20].level());
  wr(Hpet::kRegStatus, 0x2);
  EXPECT_FALSE(pins[20].level());
}

// ------------------------------------------------------------ routing

TEST_F(HpetTest, LegacyReplacementRoutesTimers0And1AndCallsBack) {
  wr(Hpet::kRegConfig, Hpet::kConfigEnable | Hpet::kConfigLegacy);
  EXPECT_EQ(legacy_calls, std::vector<bool>{true});
  EXPECT_TRUE(hpet->legacy_replacement());
  for (unsigned n = 0; n < 3; ++n) {
    config(n, Hpet::kTimerIntEnable | (std::uint64_t{20 + n} << Hpet::kTimerRouteShift));
    comparator(n, counter() + 100);
  }
  at(clock.now() + 1000);
  EXPECT_EQ(isa0.rising_edges(), 1u);
  EXPECT_EQ(isa8.rising_edges(), 1u);
  EXPECT_EQ(pins[20].rising_edges(), 0u);
  EXPECT_EQ(pins[21].rising_edges(), 0u);
  EXPECT_EQ(pins[22].rising_edges(), 1u) << "timer 2 keeps its own route";
  wr(Hpet::kRegConfig, Hpet::kConfigEnable | Hpet::kConfigLegacy);  // no change: no call
  wr(Hpet::kRegConfig, Hpet::kConfigEnable);
  EXPECT_EQ(legacy_calls, (std::vector<bool>{true, false}));
  comparator(0, counter() + 100);
  at(clock.now() + 1000);
  EXPECT_EQ(pins[20].rising_edges(), 1u);
  EXPECT_EQ(isa0.rising_edges(), 1u);
  // A reset gives IRQ 0 and 8 back to the PIT and RTC.
  wr(Hpet::kRegConfig, Hpet::kConfigLegacy, 1);
  hpet->drain_timers();
  hpet->reset(system.loop(0));
  EXPECT_EQ(legacy_calls, (std::vector<bool>{true, false, true, false}));
}

TEST_F(HpetTest, FsbDeliversMsiAndNoPin) {
  enable();
  wr(Hpet::timer_fsb_reg(2), 0x4041, 4);         // data, as Linux writes it
  wr(Hpet::timer_fsb_reg(2) + 4, 0xFEE0'1000, 4);  // address
  config(2, Hpet::kTimerFsbEnable | Hpet::kTimerIntEnable | kRoute22);
  comparator(2, counter() + 100);
  at(clock.now() + 1000);
  ASSERT_EQ(msi.count(), 1u);
  EXPECT_EQ(msi.last()->address, 0xFEE0'1000u);
  EXPECT_EQ(msi.last()->data, 0x4041u);
  EXPECT_EQ(pins[22].rising_edges(), 0u);
  // Periodic FSB: one message per period.
  start_periodic(2, counter() + 100'000, 100'000, Hpet::kTimerFsbEnable | kRoute22);
  run_to(clock.now() + 5 * kMillisecond);
  EXPECT_EQ(msi.count(), 1u + 5u);
}

TEST_F(HpetTest, RouteOutsideTheCapabilityDeliversNowhere) {
  enable();
  config(0, Hpet::kTimerIntEnable);  // route 0: not in the capability
  comparator(0, counter() + 100);
  at(clock.now() + 1000);
  EXPECT_EQ(runs(0), 1u);
  for (unsigned pin = 0; pin < Hpet::kIoApicPins; ++pin) EXPECT_TRUE(pins[pin].history().empty()) << pin;
}

// ------------------------------------------------------------ lifecycle

TEST_F(HpetTest, PauseKeepsCountingAndResumeFiresWhatCameDue) {
  enable();
  const Nanos start = clock.now();
  const std::uint64_t c0 = counter();
  config(0, Hpet::kTimerIntEnable | kRoute20);
  comparator(0, c0 + 100'000);  // 1 ms
  start_periodic(1, c0 + 10'000, 10'000, kRoute21);  // 100 us
  run_to(start + 500 * kMicrosecond);
  EXPECT_EQ(pins[21].rising_edges(), 5u);
  hpet->pause();
  EXPECT_EQ(hpet->armed(0), 0);
  EXPECT_EQ(hpet->armed(1), 0);
  for (int i = 0; i < 500; ++i) {
    clock.advance(10 * kMicrosecond);
    ASSERT_EQ(system.loop(0).run_due(), 0u);
  }
  EXPECT_EQ(counter(), c0 + 550'000) << "host-time based: the counter ran on while paused";
  hpet->resume();
  EXPECT_EQ(pins[20].rising_edges(), 1u) << "the one-shot that came due fires at resume";
  EXPECT_EQ(pins[21].rising_edges(), 6u) << "one interrupt for the missed periods";
  EXPECT_EQ(comparator(1), c0 + 560'000);
  EXPECT_EQ(hpet->armed(1), start + 5600 * kMicrosecond);
  EXPECT_EQ(hpet->armed(0), 0);
}

// A VM reset of a paused VM resets a paused HPET: power-on state is
// running, so a comparator armed after the reset fires without a resume
// (which the VM would refuse: it reports running after a reset).
TEST_F(HpetTest, ResetOfAPausedHpetLeavesItRunning) {
  enable();
  start_periodic(0, counter() + 1000, 1000, kRoute20);
  hpet->pause();
  hpet->drain_timers();
  hpet->reset(system.loop(0));
  enable();
  start_periodic(0, counter() + 100'000, 100'000, kRoute20);  // 1 ms
  EXPECT_NE(hpet->armed(0), 0) << "power-on state is not paused";
  run_to(clock.now() + 10 * kMillisecond);
  EXPECT_GE(runs(0), 9u);
  EXPECT_GE(pins[20].rising_edges(), 9u);
}

TEST_F(HpetTest, DrainThenResetRestoresPowerOn) {
  enable();
  start_periodic(0, counter() + 1000, 1000, kRoute20);
  config(1, Hpet::kTimerLevel | Hpet::kTimerIntEnable | kRoute21);
  comparator(1, counter() + 500);
  run_to(clock.now() + 100 * kMicrosecond);
  EXPECT_TRUE(pins[21].level());
  const auto before = runs(0);
  EXPECT_GT(before, 0u);
  hpet->drain_timers();
  hpet->drain_timers();  // idempotent
  run_to(clock.now() + 10 * kMillisecond);
  EXPECT_EQ(runs(0), before) << "no handler after drain";
  hpet->reset(system.loop(0));
  EXPECT_FALSE(pins[21].level()) << "reset lowers a held line";
  EXPECT_EQ(rd(Hpet::kRegConfig), 0u);
  EXPECT_EQ(rd(Hpet::kRegStatus), 0u);
  EXPECT_EQ(counter(), 0u);
  EXPECT_EQ(comparator(0), ~std::uint64_t{0});
  EXPECT_EQ(rd(Hpet::timer_config_reg(0)), 0x00F0'0000'0000'8030u);
  EXPECT_EQ(system.loop(0).next_deadline(), timers::kNever);
  enable();
  config(0, Hpet::kTimerIntEnable | kRoute20);
  comparator(0, counter() + 100);
  at(clock.now() + 1000);
  EXPECT_EQ(runs(0), before + 1) << "usable again after reset";
}

// ------------------------------------------------------------ bad input

TEST_F(HpetTest, RandomAccessesAtEveryOffsetAndWidthStayBounded) {
  testing::LogCapture logs;
  spdlog::warn("capture check");
  ASSERT_EQ(logs.lines(), 1u);
  const auto real_start = std::chrono::steady_clock::now();
  std::mt19937_64 rng(0x5EED'FED0);
  constexpr std::array<std::size_t, 4> kWidths = {1, 2, 4, 8};
  const std::array<std::uint64_t, 13> registers = {
      Hpet::kRegConfig,           Hpet::kRegStatus,          Hpet::kRegCounter,
      Hpet::timer_config_reg(0),  Hpet::timer_comparator_reg(0), Hpet::timer_fsb_reg(0),
      Hpet::timer_config_reg(1),  Hpet::timer_comparator_reg(1), Hpet::timer_fsb_reg(1),
      Hpet::timer_config_reg(2),  Hpet::timer_comparator_reg(2), Hpet::timer_fsb_reg(2),
      Hpet::kRegCapabilities};
  constexpr Nanos kStep = 10 * kMicrosecond;
  std::uint64_t ops = 0, resets = 0;
  Nanos simulated = 0;
  for (int i = 0; i < 30'000; ++i) {
    const std::size_t width = kWidths[rng() % kWidths.size()];
    if (rng() % 5 < 2) {
      // Garbage: any offset, any width, any value, read or write.
      std::uint64_t offset = rng() % 2 == 0 ? registers[rng() % registers.size()] + rng() % 8 : rng() % Hpet::kSize;
      if (offset + width > Hpet::kSize) offset = Hpet::kSize - width;
      if (rng() % 3 == 0) {
        (void)rd(offset, width);
      } else {
        wr(offset, rng(), width);
      }
    } else {
      // Plausible but hostile programming: near-future and past comparators,
      // tiny and zero periods, every mode bit, routes around the capability.
      const unsigned n = static_cast<unsigned>(rng() % Hpet::kTimers);
      switch (rng() % 6) {
        case 0:
          wr(Hpet::kRegConfig, (rng() % 8 != 0 ? Hpet::kConfigEnable : 0) | (rng() % 4 == 0 ? Hpet::kConfigLegacy : 0));
          break;
        case 1: {
          const std::uint64_t route = 18 + rng() % 8;
          wr(Hpet::timer_config_reg(n), (rng() & 0x414E) | (route << Hpet::kTimerRouteShift), rng() % 2 ? 4 : 8);
          break;
        }
        case 2:
        case 3: {
          const std::int64_t delta = static_cast<std::int64_t>(rng() % 20'000) - 2'000;
          wr(Hpet::timer_comparator_reg(n), counter() + static_cast<std::uint64_t>(delta), width >= 4 ? width : 4);
          break;
        }
        case 4:
          wr(Hpet::kRegStatus, rng() % 8);
          break;
        default:
          wr(Hpet::timer_comparator_reg(n), rng() % 4 == 0 ? 0 : rng() % 3000);  // a period, maybe zero
          break;
      }
    }
    ++ops;
    switch (rng() % 2000) {
      case 0:
        hpet->drain_timers();
        hpet->reset(system.loop(0));
        ++resets;
        break;
      case 1:
        hpet->pause();
        break;
      case 2:
        hpet->resume();
        break;
      default:
        break;
    }
    const int steps = static_cast<int>(rng() % 10);
    for (int s = 0; s < steps; ++s) {
      clock.advance(kStep);
      simulated += kStep;
      ASSERT_LE(system.loop(0).run_due(), Hpet::kTimers);
    }
  }
  // A periodic comparator fires at most once per kMinRearmInterval; one-shots
  // fire once per guest write (a 32-bit wrap takes 43 s, longer than this run).
  std::uint64_t total = 0;
  for (const auto n : hpet->stats().handler_runs) total += n;
  const auto bound = Hpet::kTimers * static_cast<std::uint64_t>(simulated / Hpet::kMinRearmInterval + 1) + ops +
                     Hpet::kTimers * resets;
  EXPECT_LE(total, bound);
  EXPECT_GT(total, 0u) << "the traffic should have made some comparator fire";
  for (unsigned pin = 0; pin < 20; ++pin) EXPECT_TRUE(pins[pin].history().empty()) << "pin " << pin;
  // Two guest-reachable log sites, each at most 10 lines per 5 s of real time.
  const auto windows = static_cast<std::size_t>((std::chrono::steady_clock::now() - real_start) / 5s) + 2;
  EXPECT_LE(logs.lines(), 1u + 2 * 10u * windows) << "guest-triggered logging must be rate limited";
}

// Real threads on the real clock: the timer thread runs comparators with
// tiny and ordinary periods while a guest thread reprograms them and clears
// status, and a VMM thread pauses, resumes and moves the timers.
TEST(HpetThreads, GuestTimerAndVmmThreadsTogether) {
  timers::CyclicSystem system(timers::MonotonicClock::instance(),
                              timers::LoopOptions{.loops = 2, .threads = true, .pin = false});
  std::array<FakeIrqLine, Hpet::kIoApicPins> pins;
  FakeIrqLine isa0, isa8;
  FakeMsiSink msi;
  std::atomic<int> legacy_changes{0};
  Hpet hpet(
      system, system.loop(0), [&](unsigned pin) -> IrqLine& { return pins[pin]; }, isa0, isa8, msi,
      [&](bool) { ++legacy_changes; });
  const auto wr = [&](std::uint64_t offset, std::uint64_t value) {
    std::array<std::uint8_t, 8> bytes{};
    store_le(bytes, value);
    hpet.write(offset, bytes);
  };
  const auto rd = [&](std::uint64_t offset) {
    std::array<std::uint8_t, 8> bytes{};
    hpet.read(offset, bytes);
    return load_le(bytes);
  };
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ops{0};
  std::thread guest([&] {
    std::mt19937_64 rng(7);
    wr(Hpet::kRegConfig, Hpet::kConfigEnable);
    while (!stop) {
      const unsigned n = static_cast<unsigned>(rng() % Hpet::kTimers);
      const std::uint64_t route = std::uint64_t{20 + n} << Hpet::kTimerRouteShift;
      switch (rng() % 5) {
        case 0:
          wr(Hpet::timer_config_reg(n), Hpet::kTimerIntEnable | Hpet::kTimerPeriodic | Hpet::kTimerValSet |
                                            (rng() % 2 ? Hpet::kTimerLevel : 0) | route);
          wr(Hpet::timer_comparator_reg(n), rd(Hpet::kRegCounter) + 1 + rng() % 100'000);
          wr(Hpet::timer_comparator_reg(n), rng() % 4 == 0 ? rng() % 3 : rng() % 100'000);
          break;
        case 1:
          wr(Hpet::timer_config_reg(n), Hpet::kTimerIntEnable | (rng() % 2 ? Hpet::kTimerFsbEnable : 0) | route);
          wr(Hpet::timer_comparator_reg(n), rd(Hpet::kRegCounter) + rng() % 50'000);
          break;
        case 2:
          wr(Hpet::kRegStatus, rd(Hpet::kRegStatus));
          break;
        case 3:
          wr(Hpet::kRegConfig, Hpet::kConfigEnable | (rng() % 8 == 0 ? Hpet::kConfigLegacy : 0));
          break;
        default:
          (void)rd(Hpet::timer_comparator_reg(n));
          break;
      }
      ++ops;
    }
  });
  std::thread vmm([&] {
    for (int i = 0; !stop; ++i) {
      hpet.pause();
      hpet.resume();
      hpet.bind_timers(system.loop(i % 2));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  guest.join();
  vmm.join();
  hpet.drain_timers();
  std::uint64_t runs = 0;
  for (const auto r : hpet.stats().handler_runs) runs += r;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto per_timer = static_cast<std::uint64_t>(seconds * timers::kSecond / Hpet::kMinRearmInterval) + 1;
  EXPECT_LE(runs, Hpet::kTimers * per_timer + ops.load());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::uint64_t after = 0;
  for (const auto r : hpet.stats().handler_runs) after += r;
  EXPECT_EQ(after, runs) << "a handler ran after drain_timers()";
  hpet.reset(system.loop(0));
  EXPECT_FALSE(hpet.legacy_replacement());
  EXPECT_EQ(rd(Hpet::kRegConfig), 0u);
}

}  // namespace
}  // namespace vmm::devices
