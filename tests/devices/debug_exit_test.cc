// isa-debug-exit: status (v << 1) | 1 for any width, reads all ones.
#include "devices/debug_exit.h"

#include <vector>

#include <gtest/gtest.h>

namespace vmm::devices {
namespace {

struct ExitRecorder {
  std::vector<std::uint64_t> statuses;
  DebugExit device{[this](std::uint64_t status) { statuses.push_back(status); }};

  void write(std::uint64_t offset, std::vector<std::uint8_t> bytes) { device.write(offset, bytes); }
};

TEST(DebugExit, StatusIsValueShiftedLeftWithLowBitSet) {
  ExitRecorder r;
  r.write(0, {0x00});
  r.write(0, {0x10});
  r.write(0, {0x7F});
  r.write(0, {0xFF});
  EXPECT_EQ(r.statuses, (std::vector<std::uint64_t>{0x01, 0x21, 0xFF, 0x1FF}));
}

TEST(DebugExit, EveryWidthIsZeroExtended) {
  ExitRecorder r;
  r.write(0, {0x34, 0x12});
  r.write(0, {0x78, 0x56, 0x34, 0x12});
  r.write(0, {0xFF, 0xFF, 0xFF, 0xFF});
  r.write(0, {1, 0, 0, 0, 0, 0, 0, 0x01});
  EXPECT_EQ(r.statuses, (std::vector<std::uint64_t>{0x2469, 0x2468ACF1, 0x1FFFFFFFF, 0x0200000000000003}));
}

TEST(DebugExit, AnyOffsetInTheWindowExits) {
  ExitRecorder r;
  for (std::uint64_t offset = 0; offset < DebugExit::kSize; ++offset) r.write(offset, {0x02});
  EXPECT_EQ(r.statuses, (std::vector<std::uint64_t>(4, 0x05)));
}

TEST(DebugExit, ExitCodeKeepsTheLowByteLikeQemu) {
  // A guest that writes 0x20 expects the VMM process to exit with 65.
  EXPECT_EQ(DebugExit::status_for(0x20) & 0xFF, 65u);
  EXPECT_EQ(DebugExit::status_for(0x80) & 0xFF, 1u);
}

TEST(DebugExit, ReadsReturnAllOnesAndDoNotExit) {
  ExitRecorder r;
  for (std::size_t width : {1u, 2u, 4u, 8u}) {
    std::vector<std::uint8_t> data(width, 0);
    r.device.read(0, data);
    EXPECT_EQ(data, std::vector<std::uint8_t>(width, 0xff));
  }
  EXPECT_TRUE(r.statuses.empty());
}

TEST(DebugExit, EmptyWriteAndMissingCallbackAreHarmless) {
  ExitRecorder r;
  r.write(0, {});
  EXPECT_TRUE(r.statuses.empty());
  DebugExit no_callback{nullptr};
  const std::uint8_t value = 1;
  no_callback.write(0, std::span<const std::uint8_t>(&value, 1));
}

}  // namespace
}  // namespace vmm::devices
