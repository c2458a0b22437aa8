// Boot-progress port: milestones stamped with a manual clock, a 64-entry ring.
#include "devices/boot_progress.h"

#include <gtest/gtest.h>

#include "tests/devices/fakes.h"

namespace vmm::devices {
namespace {

void write32(BootProgress& port, std::uint32_t code) {
  std::uint8_t bytes[4];
  store_le(bytes, code);
  port.write(0, bytes);
}

TEST(BootProgress, RecordsCodeAndTimeSinceStart) {
  timers::ManualClock clock(10 * timers::kSecond);
  BootProgress port(clock, clock.now());
  clock.advance(5 * timers::kMillisecond);
  write32(port, static_cast<std::uint32_t>(BootMilestone::entry32));
  clock.advance(2 * timers::kMillisecond);
  write32(port, static_cast<std::uint32_t>(BootMilestone::long_mode));
  const auto records = port.milestones();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].code, 1u);
  EXPECT_EQ(records[0].since_start, 5 * timers::kMillisecond);
  EXPECT_EQ(records[1].code, 2u);
  EXPECT_EQ(records[1].since_start, 7 * timers::kMillisecond);
  EXPECT_EQ(port.total_recorded(), 2u);
}

TEST(BootProgress, MilestoneNames) {
  EXPECT_EQ(milestone_name(1), "entry32");
  EXPECT_EQ(milestone_name(2), "long_mode");
  EXPECT_EQ(milestone_name(3), "main");
  EXPECT_EQ(milestone_name(4), "scenario_start");
  EXPECT_EQ(milestone_name(5), "scenario_done");
  EXPECT_EQ(milestone_name(0), "unknown");
  EXPECT_EQ(milestone_name(0xdeadbeef), "unknown");
}

TEST(BootProgress, RingKeepsTheLast64InOrder) {
  timers::ManualClock clock;
  BootProgress port(clock, clock.now());
  for (std::uint32_t code = 1; code <= 100; ++code) {
    clock.advance(timers::kMicrosecond);
    write32(port, code);
  }
  const auto records = port.milestones();
  ASSERT_EQ(records.size(), BootProgress::kCapacity);
  for (std::size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i].code, 37 + i);
    EXPECT_EQ(records[i].since_start, static_cast<timers::Nanos>(37 + i) * timers::kMicrosecond);
  }
  EXPECT_EQ(port.total_recorded(), 100u);
}

TEST(BootProgress, OnlyAligned32BitWritesCount) {
  testing::LogCapture logs;
  timers::ManualClock clock;
  BootProgress port(clock, clock.now());
  const std::uint8_t byte = 3;
  port.write(0, std::span<const std::uint8_t>(&byte, 1));
  const std::uint8_t word[2] = {3, 0};
  port.write(0, word);
  const std::uint8_t quad[8] = {3};
  port.write(0, quad);
  const std::uint8_t dword[4] = {3};
  port.write(1, dword);
  EXPECT_EQ(port.total_recorded(), 0u);
  port.write(0, dword);
  EXPECT_EQ(port.total_recorded(), 1u);
}

TEST(BootProgress, ReadsReturnAllOnes) {
  timers::ManualClock clock;
  BootProgress port(clock, clock.now());
  std::uint8_t data[4] = {};
  port.read(0, data);
  for (std::uint8_t b : data) EXPECT_EQ(b, 0xff);
}

TEST(BootProgress, RestartForgetsAndRebasesTime) {
  timers::ManualClock clock;
  BootProgress port(clock, clock.now());
  write32(port, 1);
  clock.advance(timers::kSecond);
  port.restart(clock.now());
  clock.advance(3 * timers::kMillisecond);
  write32(port, 3);
  const auto records = port.milestones();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].code, 3u);
  EXPECT_EQ(records[0].since_start, 3 * timers::kMillisecond);
}

TEST(BootProgress, LogsAtDebugLevel) {
  testing::LogCapture logs;
  timers::ManualClock clock;
  BootProgress port(clock, clock.now());
  write32(port, static_cast<std::uint32_t>(BootMilestone::main));
  ASSERT_GE(logs.lines(), 1u);
  EXPECT_NE(logs.messages().back().find("main"), std::string::npos);
}

}  // namespace
}  // namespace vmm::devices
