// The board's wiring without /dev/kvm: which ports a guest finds.
#include "vmm/platform.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <vector>

#include "devices/debug_exit.h"
#include "devices/serial.h"
#include "tests/devices/fakes.h"
#include "timers/cyclic.h"

namespace vmm {
namespace {

// Writes `value` to the debug-exit port of a platform built with or without
// it; returns the exit statuses the platform reported.
std::vector<std::uint64_t> write_debug_exit(bool enabled, std::uint32_t value, bool* claimed) {
  timers::CyclicSystem timers;
  testing::FakeMsiSink msi;
  devices::NullOutput serial;
  PlatformConfig config;
  config.serial_output = &serial;
  config.debug_exit = enabled;
  std::vector<std::uint64_t> exits;
  PlatformEvents events;
  events.debug_exit = [&](std::uint64_t status) { exits.push_back(status); };
  Platform platform(timers, timers.loop_for_current_cpu(), &msi, nullptr, config, events);
  std::array<std::uint8_t, 4> bytes{};
  devices::store_le(bytes, value);
  *claimed = platform.pio().write(devices::DebugExit::kPort, bytes);
  return exits;
}

// A guest must not choose the VMM's exit status (one that looks like a
// signal death or the VMM's own failure) unless the user asked for it.
TEST(Platform, TheDebugExitPortExistsOnlyWhenAskedFor) {
  bool claimed = true;
  EXPECT_TRUE(write_debug_exit(false, 0x40, &claimed).empty()) << "the write ended the run";
  EXPECT_FALSE(claimed) << "port 0xf4 is unclaimed by default";

  const std::vector<std::uint64_t> exits = write_debug_exit(true, 0x40, &claimed);
  EXPECT_TRUE(claimed);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0], (0x40u << 1) | 1u);
}

}  // namespace
}  // namespace vmm
