// Every device register hit with random values at random widths and offsets,
// in range and far out of it, with a fixed seed so a failure reproduces. The
// devices must not crash, must keep their invariants, and must not let the
// guest flood the log.
#include <array>
#include <chrono>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "devices/boot_progress.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "devices/ioapic.h"
#include "devices/serial.h"
#include "tests/devices/fakes.h"

namespace vmm::devices {
namespace {

using testing::CaptureOutput;
using testing::FakeIrqLine;
using testing::FakeMsiSink;

class LastRoutes final : public IoApicRouteObserver {
 public:
  void on_route_changed(unsigned pin, const MsiMessage& message, bool masked, bool level) noexcept override {
    std::lock_guard lock(mu_);
    seen[pin] = true;
    messages[pin] = message;
    masks[pin] = masked;
    levels[pin] = level;
  }
  std::mutex mu_;
  std::array<bool, IoApic::kPins> seen{};
  std::array<MsiMessage, IoApic::kPins> messages{};
  std::array<bool, IoApic::kPins> masks{};
  std::array<bool, IoApic::kPins> levels{};
};

TEST(DeviceFuzz, RandomAccessesKeepInvariantsAndLogsStayBounded) {
  testing::LogCapture logs;
  spdlog::warn("capture check");
  ASSERT_EQ(logs.lines(), 1u) << "the log capture itself must work, or the bound below proves nothing";

  FakeIrqLine serial_irq, kbd_irq, aux_irq;
  CaptureOutput serial_out;
  Serial serial(serial_irq, serial_out);
  std::uint64_t cpu_resets = 0;
  I8042 i8042(kbd_irq, aux_irq, [&] { ++cpu_resets; });
  std::uint64_t exits = 0;
  std::uint64_t last_exit_status = 0;
  DebugExit debug_exit([&](std::uint64_t status) {
    ++exits;
    last_exit_status = status;
  });
  timers::ManualClock clock;
  BootProgress progress(clock, clock.now());
  FakeMsiSink msi;
  LastRoutes routes;
  IoApic ioapic(msi, &routes);

  struct Target {
    BusDevice* device;
    std::uint64_t size;
  };
  const std::array<Target, 6> targets = {{{&serial, Serial::kSize},
                                          {&i8042.data_port(), 1},
                                          {&i8042.command_port(), 1},
                                          {&debug_exit, DebugExit::kSize},
                                          {&progress, BootProgress::kSize},
                                          {&ioapic, IoApic::kSize}}};
  constexpr std::array<std::size_t, 4> kWidths = {1, 2, 4, 8};

  std::mt19937_64 rng(0x5EED'1234);
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t debug_exit_writes = 0;
  std::uint64_t ignored_progress_writes = 0;
  std::uint64_t ioapic_odd_accesses = 0;
  constexpr int kOperations = 200'000;
  for (int i = 0; i < kOperations; ++i) {
    const std::size_t which = rng() % targets.size();
    const Target& target = targets[which];
    const std::size_t width = kWidths[rng() % kWidths.size()];
    std::uint64_t offset = 0;
    const unsigned shape = rng() % 10;
    if (target.device == &ioapic && shape < 5) {
      constexpr std::array<std::uint64_t, 3> kRegisters = {IoApic::kRegisterSelect, IoApic::kWindow, IoApic::kEoi};
      offset = kRegisters[rng() % kRegisters.size()];
    } else if (shape < 7) {
      offset = rng() % target.size;
    } else if (shape < 9) {
      offset = target.size + rng() % 16;
    } else {
      offset = rng();  // anywhere, including next to 2^64
    }
    std::array<std::uint8_t, 8> buffer{};
    const std::span<std::uint8_t> data(buffer.data(), width);
    if (rng() % 2) {
      for (auto& byte : data) byte = static_cast<std::uint8_t>(rng());
      // Keep the IOAPIC's selector on real registers most of the time.
      if (target.device == &ioapic && offset == IoApic::kRegisterSelect && rng() % 4) {
        data[0] = static_cast<std::uint8_t>(rng() % 0x40);
      }
      target.device->write(offset, data);
      if (target.device == &debug_exit) ++debug_exit_writes;
      if (target.device == &progress && (offset != 0 || width != 4)) ++ignored_progress_writes;
    } else {
      target.device->read(offset, data);
      if (target.device == &serial && offset == Serial::kIirFcr) {
        ASSERT_EQ(data[0] & 0x30, 0) << "IIR bits 5:4 are always zero on a 16550A";
      }
      if (target.device == &i8042.command_port() && offset == 0) {
        ASSERT_EQ(data[0] & I8042::kStatusInputFull, 0);
      }
      if (target.device == &debug_exit || target.device == &progress) {
        for (std::uint8_t byte : data) ASSERT_EQ(byte, 0xff);
      }
    }
    if (target.device == &ioapic && offset != IoApic::kRegisterSelect && offset != IoApic::kWindow &&
        offset != IoApic::kEoi) {
      ++ioapic_odd_accesses;
    }
    // Device-side activity in between.
    switch (rng() % 8) {
      case 0: {
        std::array<std::uint8_t, 20> input{};
        for (auto& byte : input) byte = static_cast<std::uint8_t>(rng());
        serial.receive(std::span<const std::uint8_t>(input.data(), rng() % input.size()));
        break;
      }
      case 1:
        ioapic.pin(static_cast<unsigned>(rng() % IoApic::kPins)).set_level(rng() & 1);
        break;
      case 2:
        ioapic.end_of_interrupt(static_cast<std::uint8_t>(rng()));
        break;
      case 3:
        clock.advance(static_cast<timers::Nanos>(rng() % timers::kMillisecond));
        break;
      default:
        break;
    }
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;

  // Behaviour that must have survived the noise.
  EXPECT_EQ(exits, debug_exit_writes);
  EXPECT_EQ(last_exit_status & 1, 1u);
  const std::uint8_t select_version[1] = {IoApic::kRegVersion};
  ioapic.write(IoApic::kRegisterSelect, select_version);
  std::uint8_t version[4];
  ioapic.read(IoApic::kWindow, version);
  EXPECT_EQ(load_le(version), 0x00170020u);
  for (unsigned pin = 0; pin < IoApic::kPins; ++pin) {
    const std::uint64_t entry = ioapic.redirection_entry(pin);
    EXPECT_EQ(entry & 0x00FF'FFFF'FFFE'0000ull, 0u) << "reserved bits stay zero";
    if (!routes.seen[pin]) continue;
    EXPECT_EQ(routes.messages[pin].data, IoApic::message_for(entry).data) << pin;
    EXPECT_EQ(routes.messages[pin].address, IoApic::message_for(entry).address) << pin;
    EXPECT_EQ(routes.masks[pin], (entry & IoApic::kMasked) != 0) << pin;
  }
  EXPECT_GT(msi.count(), 0u) << "the fuzz should have delivered something";
  EXPECT_GT(cpu_resets, 0u) << "random writes to 0x64 hit 0xFE now and then";

  // The log: each rate-limited call site may log a burst of 10 per 5 s
  // window. Four such sites can be reached here (i8042 unknown command,
  // boot-progress ignored write and milestone, IOAPIC ignored access).
  const auto windows = 1 + std::chrono::duration_cast<std::chrono::seconds>(elapsed).count() / 5;
  const std::size_t bound = 1 + 4 * 10 * static_cast<std::size_t>(windows + 1);
  EXPECT_LE(logs.lines(), bound);
  // ...and the guest tried hard enough that unbounded logging would show.
  EXPECT_GT(ignored_progress_writes, 10 * bound);
  EXPECT_GT(ioapic_odd_accesses, 10 * bound);
}

TEST(DeviceFuzz, SerialSurvivesEveryRegisterValueAtEveryOffset) {
  // Exhaustive over offset x value, with a read after each write.
  FakeIrqLine irq;
  CaptureOutput out;
  Serial serial(irq, out);
  for (std::uint64_t offset = 0; offset < Serial::kSize; ++offset) {
    for (unsigned value = 0; value < 256; ++value) {
      const std::uint8_t byte = static_cast<std::uint8_t>(value);
      serial.write(offset, std::span<const std::uint8_t>(&byte, 1));
      for (std::uint64_t probe = 0; probe < Serial::kSize; ++probe) {
        std::uint8_t got = 0;
        serial.read(probe, std::span<std::uint8_t>(&got, 1));
        if (probe == Serial::kLsr) {
          ASSERT_NE(got, 0xff);
        }
      }
    }
  }
  EXPECT_GT(out.bytes().size(), 0u);
}

}  // namespace
}  // namespace vmm::devices
