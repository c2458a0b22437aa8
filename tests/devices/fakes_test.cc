// The fakes other device tests rely on must themselves record correctly.
#include "tests/devices/fakes.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace vmm::testing {
namespace {

TEST(FakeIrqLine, CountsEdgesNotCalls) {
  FakeIrqLine line;
  line.set_level(true);
  line.set_level(true);
  line.set_level(false);
  line.pulse();
  EXPECT_EQ(line.history(), (std::vector<bool>{true, true, false, true, false}));
  EXPECT_EQ(line.rising_edges(), 2u);
  EXPECT_EQ(line.falling_edges(), 2u);
  EXPECT_FALSE(line.level());
  line.set_level(true);
  line.clear();
  EXPECT_TRUE(line.history().empty());
  EXPECT_EQ(line.rising_edges(), 0u);
  EXPECT_TRUE(line.level()) << "clear() keeps the level";
}

TEST(FakeIrqLine, IsThreadSafe) {
  FakeIrqLine line;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) line.pulse();
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(line.history().size(), 80000u);
  EXPECT_EQ(line.rising_edges(), line.falling_edges());
  EXPECT_FALSE(line.level());
}

TEST(FakeMsiSink, RecordsMessagesInOrder) {
  FakeMsiSink sink;
  EXPECT_FALSE(sink.last().has_value());
  sink.send_msi({0xFEE00000, 0x31});
  sink.send_msi({0xFEE01000, 0x8042});
  EXPECT_EQ(sink.count(), 2u);
  EXPECT_EQ(sink.vectors(), (std::vector<std::uint8_t>{0x31, 0x42}));
  EXPECT_EQ(sink.last()->address, 0xFEE01000u);
  sink.clear();
  EXPECT_EQ(sink.count(), 0u);
}

TEST(CaptureOutput, CollectsBytes) {
  CaptureOutput out;
  const std::uint8_t a[] = {'a', 'b'};
  out.write(a);
  out.write(std::span<const std::uint8_t>(a, 1));
  EXPECT_EQ(out.text(), "aba");
  EXPECT_EQ(out.calls(), 2u);
}

TEST(LogCapture, CountsAllLevelsAndRestoresTheLogger) {
  const auto before = spdlog::default_logger();
  {
    LogCapture logs;
    spdlog::trace("t");
    spdlog::debug("d");
    spdlog::error("e {}", 1);
    EXPECT_EQ(logs.lines(), 3u);
    EXPECT_EQ(logs.messages().back(), "e 1");
  }
  EXPECT_EQ(spdlog::default_logger(), before);
}

}  // namespace
}  // namespace vmm::testing
