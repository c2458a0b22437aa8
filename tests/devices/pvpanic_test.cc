// pvpanic: the features a guest reads, and which writes count as a panic.
#include "devices/pvpanic.h"

#include <gtest/gtest.h>

#include <vector>

namespace vmm::devices {
namespace {

struct PanicRecorder {
  int panics = 0;
  PvPanic device{[this] { ++panics; }};
};

TEST(PvPanic, ReadsTheEventsItSupports) {
  PanicRecorder r;
  std::vector<std::uint8_t> byte(1, 0xAA);
  r.device.read(0, byte);
  EXPECT_EQ(byte[0], PvPanic::kPanicked | PvPanic::kCrashLoaded);
  std::vector<std::uint8_t> wide(4, 0xAA);
  r.device.read(0, wide);
  EXPECT_EQ(wide, (std::vector<std::uint8_t>{3, 0, 0, 0}));
}

TEST(PvPanic, OnlyThePanickedBitEndsTheVm) {
  PanicRecorder r;
  const std::vector<std::uint8_t> crash_loaded{PvPanic::kCrashLoaded};
  const std::vector<std::uint8_t> nothing{0};
  const std::vector<std::uint8_t> panicked{PvPanic::kPanicked};
  const std::vector<std::uint8_t> both{PvPanic::kPanicked | PvPanic::kCrashLoaded | 0xF0};
  r.device.write(0, crash_loaded);
  r.device.write(0, nothing);
  EXPECT_EQ(r.panics, 0);
  r.device.write(0, panicked);
  r.device.write(0, both);
  EXPECT_EQ(r.panics, 2);
}

TEST(PvPanic, EmptyAndUnwiredAccessesAreHarmless) {
  PvPanic unwired{nullptr};
  const std::vector<std::uint8_t> panicked{PvPanic::kPanicked};
  unwired.write(0, panicked);
  unwired.write(0, {});
  std::vector<std::uint8_t> none;
  unwired.read(0, none);
}

}  // namespace
}  // namespace vmm::devices
