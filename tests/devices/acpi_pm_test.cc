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
  AcpiPm pm{sci, 5, AcpiPm::Callbacks{[this] { ++poweroffs; }, [this] { ++resets; }}};

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

}  // namespace
}  // namespace vmm::devices
