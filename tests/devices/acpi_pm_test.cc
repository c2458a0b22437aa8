// ACPI fixed-hardware power management against the ACPI specification.
#include "devices/acpi_pm.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/devices/fakes.h"

namespace vmm::devices {
namespace {

using vmm::testing::FakeIrqLine;

class AcpiPmTest : public ::testing::Test {
 protected:
  FakeIrqLine sci;
  int poweroffs = 0;
  int resets = 0;
  timers::ManualClock clock;
  AcpiPm pm{sci, 5, AcpiPm::Callbacks{[this] { ++poweroffs; }, [this] { ++resets; }}, clock};

  std::uint32_t read32(BusDevice& dev, std::uint64_t offset) {
    std::uint8_t b[4] = {};
    dev.read(offset, b);
    return static_cast<std::uint32_t>(b[0] | (b[1] << 8) | (b[2] << 16) | (std::uint32_t{b[3]} << 24));
  }

  void write16(BusDevice& dev, std::uint64_t offset, std::uint16_t value) {
    std::uint8_t b[2] = {static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8)};
    dev.write(offset, b);
  }
  std::uint16_t read16(BusDevice& dev, std::uint64_t offset) {
    std::uint8_t b[2] = {};
    dev.read(offset, b);
    return static_cast<std::uint16_t>(b[0] | (b[1] << 8));
  }
};

TEST_F(AcpiPmTest, SciEnableReadsAsSetAndSleepEnableAsClear) {
  EXPECT_EQ(read16(pm.control_block(), 0) & AcpiPm::kSciEnable, AcpiPm::kSciEnable);
  write16(pm.control_block(), 0, 0);
  EXPECT_EQ(read16(pm.control_block(), 0) & AcpiPm::kSciEnable, AcpiPm::kSciEnable);
}

TEST_F(AcpiPmTest, S5SleepPowersOffOtherSleepTypesDoNot) {
  write16(pm.control_block(), 0, (3u << AcpiPm::kSleepTypeShift) | AcpiPm::kSleepEnable);
  EXPECT_EQ(poweroffs, 0);
  write16(pm.control_block(), 0, 5u << AcpiPm::kSleepTypeShift);  // type set, SLP_EN clear
  EXPECT_EQ(poweroffs, 0);
  write16(pm.control_block(), 0, (5u << AcpiPm::kSleepTypeShift) | AcpiPm::kSleepEnable);  // 0x3400
  EXPECT_EQ(poweroffs, 1);
  EXPECT_EQ(read16(pm.control_block(), 0) & AcpiPm::kSleepEnable, 0);
}

TEST_F(AcpiPmTest, PowerButtonRaisesTheSciOnlyWhenEnabledAndClearsOnWriteOne) {
  pm.press_power_button();
  EXPECT_EQ(read16(pm.event_block(), 0) & AcpiPm::kPowerButtonStatus, AcpiPm::kPowerButtonStatus);
  EXPECT_FALSE(sci.level());
  write16(pm.event_block(), 2, AcpiPm::kPowerButtonStatus);  // enable
  EXPECT_TRUE(sci.level()) << "a pending enabled event asserts the level-triggered SCI";
  write16(pm.event_block(), 0, 0);  // writing 0 clears nothing
  EXPECT_TRUE(sci.level());
  write16(pm.event_block(), 0, AcpiPm::kPowerButtonStatus);  // write 1 to clear
  EXPECT_FALSE(sci.level());
  EXPECT_EQ(pm.status(), 0);
  EXPECT_EQ(pm.enable(), AcpiPm::kPowerButtonStatus);
}

TEST_F(AcpiPmTest, ResetRegisterResetsOnRstCpu) {
  std::uint8_t v = 0x02;  // SYS_RST alone: Linux writes this first
  pm.reset_port().write(0, std::span(&v, 1));
  EXPECT_EQ(resets, 0);
  v = 0x06;  // the FADT's reset value
  pm.reset_port().write(0, std::span(&v, 1));
  EXPECT_EQ(resets, 1);
  std::uint8_t r = 0xff;
  pm.reset_port().read(0, std::span(&r, 1));
  EXPECT_EQ(r, 0x02) << "RST_CPU self-clears";
}

TEST_F(AcpiPmTest, ResetRestoresPowerOnState) {
  write16(pm.event_block(), 2, 0xffff);
  pm.press_power_button();
  pm.reset();
  EXPECT_EQ(pm.status(), 0);
  EXPECT_EQ(pm.enable(), 0);
  EXPECT_FALSE(sci.level());
}

TEST_F(AcpiPmTest, RandomAccessesNeverCrash) {
  std::mt19937_64 rng(5);
  BusDevice* blocks[] = {&pm.event_block(), &pm.control_block(), &pm.reset_port()};
  for (int i = 0; i < 100000; ++i) {
    std::uint8_t buf[8];
    const std::size_t width = std::size_t{1} << (rng() % 4);
    for (auto& b : buf) b = static_cast<std::uint8_t>(rng());
    BusDevice* dev = blocks[rng() % 3];
    const std::uint64_t offset = rng() % 8;
    if (rng() % 2) {
      dev->write(offset, std::span(buf, width));
    } else {
      dev->read(offset, std::span(buf, width));
    }
  }
  EXPECT_GE(poweroffs + resets, 1);  // random writes do hit the trigger bits
}

// ------------------------------------------------------------- PM timer

TEST_F(AcpiPmTest, PmTimerCountsAt3579545HzFromCreation) {
  EXPECT_EQ(read32(pm.pm_timer(), 0), 0u);
  clock.advance(timers::kSecond);
  EXPECT_EQ(read32(pm.pm_timer(), 0), 3'579'545u);
  clock.advance(1'000);  // 1 us: 3.58 ticks
  EXPECT_EQ(read32(pm.pm_timer(), 0), 3'579'548u);
}

TEST_F(AcpiPmTest, PmTimerWrapsAt24BitsAndIgnoresWrites) {
  // 2^24 ticks = 4.687 s; 5 s is 1,119,337 ticks past the wrap.
  clock.advance(5 * timers::kSecond);
  EXPECT_EQ(read32(pm.pm_timer(), 0), 17'897'725u - (1u << 24));
  const std::uint8_t garbage[4] = {0xff, 0xff, 0xff, 0xff};
  pm.pm_timer().write(0, garbage);
  EXPECT_EQ(read32(pm.pm_timer(), 0), 17'897'725u - (1u << 24));
  std::uint8_t low[2] = {};
  pm.pm_timer().read(0, low);
  EXPECT_EQ(low[0] | (low[1] << 8), static_cast<int>((17'897'725u - (1u << 24)) & 0xffff)) << "narrow reads";
}

TEST_F(AcpiPmTest, TimerStatusSetsWhenTheTopBitChangesAndClearsOnWrite) {
  EXPECT_EQ(pm.status() & AcpiPm::kTimerStatus, 0);
  clock.advance(2'300'000'000);  // 8,232,953 ticks: bit 23 not yet set
  EXPECT_EQ(read16(pm.event_block(), 0) & AcpiPm::kTimerStatus, 0);
  clock.advance(100'000'000);  // past 2^23 ticks
  EXPECT_EQ(read16(pm.event_block(), 0) & AcpiPm::kTimerStatus, AcpiPm::kTimerStatus);
  write16(pm.event_block(), 0, AcpiPm::kTimerStatus);
  EXPECT_EQ(read16(pm.event_block(), 0) & AcpiPm::kTimerStatus, 0);
  clock.advance(2'400'000'000);  // the next change, at 2^24
  EXPECT_EQ(read16(pm.event_block(), 0) & AcpiPm::kTimerStatus, AcpiPm::kTimerStatus);
  EXPECT_FALSE(sci.level()) << "TMR_EN is not set: no SCI";
}

TEST_F(AcpiPmTest, ResetRestartsThePmTimer) {
  clock.advance(3 * timers::kSecond);
  pm.reset();
  EXPECT_EQ(read32(pm.pm_timer(), 0), 0u);
  clock.advance(timers::kSecond / 2);
  EXPECT_EQ(read32(pm.pm_timer(), 0), 1'789'772u);
}

}  // namespace
}  // namespace vmm::devices
