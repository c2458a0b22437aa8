// The 8254 PIT against the datasheet, on a ManualClock with a caller-driven
// timer loop: counts, OUT levels and status at exact input pulses in every
// mode, IRQ 0 edges at exact times with no drift, the lag and rate policies,
// reprogramming while counting, port 0x61 as Linux's TSC calibration uses
// it, the TimerDevice lifecycle, a cross-check against a pulse-by-pulse
// reference model, and random input. The seed races on the PIT are in
// tests/seed_race/.
#include "devices/pit.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "tests/devices/fakes.h"

namespace vmm::devices {
namespace {

using namespace std::chrono_literals;
using testing::FakeIrqLine;
using timers::kMicrosecond;
using timers::kMillisecond;
using timers::kSecond;
using timers::Nanos;

constexpr std::int64_t kHz = 1'193'182;
constexpr Nanos kEpoch = kSecond;

// When input pulse k happens, from the datasheet clock and the epoch.
Nanos tick_time(Nanos epoch, std::int64_t k) {
  return epoch + static_cast<Nanos>((static_cast<__int128>(k) * kSecond + kHz - 1) / kHz);
}

class PitTest : public ::testing::Test {
 protected:
  timers::ManualClock clock{kEpoch};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  FakeIrqLine irq;
  Pit pit{system, system.loop(0), irq};

  Nanos tick(std::int64_t k) const { return tick_time(kEpoch, k); }
  // Just after pulse k (a little into its period, to show sub-pulse time
  // does not matter).
  void at(std::int64_t k, Nanos into = 0) { clock.set(tick(k) + into); }
  std::size_t run() { return system.loop(0).run_due(); }

  void out(unsigned port, std::uint8_t value) {
    if (port == 0x61) {
      pit.port61().write(0, std::span<const std::uint8_t>(&value, 1));
    } else {
      pit.write(port - 0x40, std::span<const std::uint8_t>(&value, 1));
    }
  }
  std::uint8_t in(unsigned port) {
    std::uint8_t value = 0;
    if (port == 0x61) {
      pit.port61().read(0, std::span<std::uint8_t>(&value, 1));
    } else {
      pit.read(port - 0x40, std::span<std::uint8_t>(&value, 1));
    }
    return value;
  }
  void write_count(unsigned channel, std::uint16_t count) {
    out(0x40 + channel, static_cast<std::uint8_t>(count));
    out(0x40 + channel, static_cast<std::uint8_t>(count >> 8));
  }
  // Counter latch command, then LSB and MSB (channel programmed LSB/MSB).
  std::uint16_t latched(unsigned channel) {
    out(0x43, static_cast<std::uint8_t>(channel << 6));
    const std::uint8_t low = in(0x40 + channel);
    return static_cast<std::uint16_t>(low | (in(0x40 + channel) << 8));
  }
  // Read-back of the status byte only.
  std::uint8_t status(unsigned channel) {
    out(0x43, static_cast<std::uint8_t>(0xE0 | (2u << channel)));
    return in(0x40 + channel);
  }
  bool out2() { return (in(0x61) & Pit::kOut2) != 0; }
  std::uint64_t edges() const { return irq.rising_edges(); }
};

constexpr std::uint8_t kOutBit = 0x80, kNullBit = 0x40;

// ------------------------------------------------------------ power-on

TEST_F(PitTest, PowerOnChannelsAreIdleInMode3WithNullCount) {
  for (unsigned ch = 0; ch < 3; ++ch) EXPECT_EQ(status(ch), kOutBit | kNullBit | 0x36) << ch;
  EXPECT_EQ(pit.irq_deadline(), 0);
  EXPECT_EQ(pit.epoch(), kEpoch);
  EXPECT_EQ(in(0x61) & 0x0F, 0) << "gate 2 low, speaker off";
  EXPECT_TRUE(out2());
  clock.advance(kSecond);
  EXPECT_EQ(run(), 0u);
  EXPECT_EQ(edges(), 0u);
}

// ------------------------------------------------------------ mode 0

TEST_F(PitTest, Mode0LoadsOnTheNextPulseAndRaisesOutAtTerminalCount) {
  at(100, 300);
  out(0x43, 0x30);  // channel 0, LSB/MSB, mode 0, binary
  EXPECT_FALSE(pit.output(0)) << "a mode 0 control word drops OUT";
  write_count(0, 50);
  EXPECT_EQ(status(0), kNullBit | 0x30) << "count written, not yet loaded";
  EXPECT_EQ(pit.irq_deadline(), tick(151)) << "loaded at pulse 101, terminal count 50 pulses later";
  at(101);
  EXPECT_EQ(status(0), 0x30);
  EXPECT_EQ(latched(0), 50);
  at(120, 500);
  EXPECT_EQ(latched(0), 31);
  at(150);
  EXPECT_EQ(latched(0), 1);
  EXPECT_FALSE(pit.output(0));
  clock.set(tick(151) - 1);
  EXPECT_EQ(run(), 0u);
  EXPECT_EQ(edges(), 0u);
  at(151);
  EXPECT_TRUE(pit.output(0));
  EXPECT_EQ(latched(0), 0);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(edges(), 1u) << "IRQ 0 at the exact pulse of terminal count";
  EXPECT_EQ(pit.irq_deadline(), 0) << "a one-shot clears its deadline once it fired";
  at(152);
  EXPECT_EQ(latched(0), 0xFFFF) << "the counter wraps and keeps counting";
  EXPECT_TRUE(pit.output(0)) << "OUT stays high until reprogrammed";
  at(70000);
  EXPECT_EQ(run(), 0u);
  EXPECT_EQ(edges(), 1u);
}

TEST_F(PitTest, Mode0FirstByteStopsTheCountAndSecondByteRestartsIt) {
  at(0);
  out(0x43, 0x30);
  write_count(0, 1000);  // loaded at 1, terminal count at 1001
  at(400);
  EXPECT_EQ(latched(0), 601);
  out(0x40, 0x10);  // LSB of 0x0210 = 528
  EXPECT_EQ(pit.irq_deadline(), 0) << "counting is disabled after the first byte";
  at(500);
  EXPECT_EQ(latched(0), 601) << "held while the count is half written";
  out(0x40, 0x02);
  EXPECT_EQ(pit.irq_deadline(), tick(501 + 528));
  at(501);
  EXPECT_EQ(latched(0), 528);
  at(1001);
  EXPECT_EQ(run(), 0u) << "the old terminal count is gone";
  at(1029);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(edges(), 1u);
}

TEST_F(PitTest, Mode0GateLowPausesCountingOnChannel2) {
  at(10);
  out(0x61, Pit::kGate2);
  out(0x43, 0xB0);  // channel 2, LSB/MSB, mode 0
  write_count(2, 100);  // loaded at 11
  at(41);
  EXPECT_EQ(latched(2), 70);
  out(0x61, 0);  // gate low after pulse 41
  at(500);
  EXPECT_EQ(latched(2), 70) << "GATE low disables counting";
  EXPECT_FALSE(out2());
  out(0x61, Pit::kGate2);  // counting resumes with pulse 501
  at(569);
  EXPECT_EQ(latched(2), 1);
  EXPECT_FALSE(out2());
  at(570);
  EXPECT_TRUE(out2()) << "70 more pulses after GATE rose";
  EXPECT_EQ(latched(2), 0);
}

TEST_F(PitTest, Mode0CountWrittenWhileGateLowIsLoadedAndWaitsForGate) {
  at(10);
  out(0x43, 0xB0);
  write_count(2, 20);  // GATE 2 is low at power-on
  at(11);
  EXPECT_EQ(status(2), 0x30) << "loaded (NULL COUNT clear) although GATE is low";
  EXPECT_EQ(latched(2), 20);
  at(300);
  out(0x61, Pit::kGate2);
  at(319);
  EXPECT_FALSE(out2());
  at(320);
  EXPECT_TRUE(out2()) << "OUT goes high N pulses after GATE rises";
}

// ------------------------------------------------------------ mode 1

TEST_F(PitTest, Mode1IsTriggeredByGateAndRetriggerable) {
  at(5);
  out(0x43, 0xB2);  // channel 2, LSB/MSB, mode 1
  EXPECT_TRUE(out2());
  write_count(2, 10);
  at(50);
  EXPECT_TRUE(out2()) << "nothing happens before a trigger";
  EXPECT_EQ(status(2), kOutBit | kNullBit | 0x32);
  out(0x61, Pit::kGate2);  // trigger after pulse 50
  EXPECT_TRUE(out2());
  at(51);
  EXPECT_FALSE(out2()) << "OUT drops on the pulse after the trigger";
  EXPECT_EQ(latched(2), 10);
  EXPECT_EQ(status(2), 0x32);
  at(55);
  EXPECT_EQ(latched(2), 6);
  out(0x61, 0);
  out(0x61, Pit::kGate2);  // retrigger after pulse 55: reload at 56
  at(60);
  EXPECT_FALSE(out2()) << "GATE level does not pause mode 1";
  at(65);
  EXPECT_FALSE(out2());
  EXPECT_EQ(latched(2), 1);
  at(66);
  EXPECT_TRUE(out2()) << "N pulses after the retrigger's load";
  EXPECT_EQ(latched(2), 0);
}

// ------------------------------------------------------------ mode 2

TEST_F(PitTest, Mode2OutIsLowForThePulseAtOneAndTheCountReloads) {
  at(10);
  out(0x43, 0x34);  // channel 0, LSB/MSB, mode 2
  write_count(0, 5);  // loaded at 11
  const std::uint16_t expected[] = {5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5};
  for (int i = 0; i < 11; ++i) {
    at(11 + i);
    EXPECT_EQ(latched(0), expected[i]) << "pulse " << 11 + i;
    EXPECT_EQ(pit.output(0), expected[i] != 1) << "pulse " << 11 + i;
  }
  EXPECT_EQ(pit.irq_deadline(), tick(16)) << "first rising edge at the first reload";
}

// ------------------------------------------------------------ mode 3

TEST_F(PitTest, Mode3EvenCountIsASymmetricSquareWave) {
  at(0);
  out(0x43, 0x36);
  write_count(0, 6);  // loaded at 1
  const std::uint16_t counts[] = {6, 4, 2, 6, 4, 2, 6};
  const bool levels[] = {true, true, true, false, false, false, true};
  for (int i = 0; i < 7; ++i) {
    at(1 + i);
    EXPECT_EQ(latched(0), counts[i]) << i;
    EXPECT_EQ(pit.output(0), levels[i]) << i;
  }
}

TEST_F(PitTest, Mode3OddCountIsHighOneMorePulseThanLow) {
  at(0);
  out(0x43, 0x36);
  write_count(0, 5);  // loaded at 1 with 4
  // High (N+1)/2 = 3 pulses reading 4, 2, 0; low (N-1)/2 = 2 reading 4, 2.
  const std::uint16_t counts[] = {4, 2, 0, 4, 2, 4, 2, 0, 4, 2, 4};
  const bool levels[] = {true, true, true, false, false, true, true, true, false, false, true};
  for (int i = 0; i < 11; ++i) {
    at(1 + i);
    EXPECT_EQ(latched(0), counts[i]) << i;
    EXPECT_EQ(pit.output(0), levels[i]) << i;
  }
}

TEST_F(PitTest, Mode3GateLowForcesOutHighAndGateRiseRestarts) {
  at(0);
  out(0x61, Pit::kGate2);
  out(0x43, 0xB6);
  write_count(2, 8);  // loaded at 1: high 1-4, low 5-8
  at(6);
  EXPECT_FALSE(out2());
  out(0x61, 0);
  EXPECT_TRUE(out2()) << "GATE low forces OUT high at once";
  at(30);
  EXPECT_TRUE(out2());
  out(0x61, Pit::kGate2);  // reload at 31, high half first
  at(34);
  EXPECT_TRUE(out2());
  at(35);
  EXPECT_FALSE(out2());
  EXPECT_EQ(latched(2), 8);
}

// ------------------------------------------------------------ modes 4, 5

TEST_F(PitTest, Mode4StrobesOutLowForOnePulseAndInterruptsOnTheRisingEdge) {
  at(0);
  out(0x43, 0x38);  // channel 0, LSB/MSB, mode 4 (Linux's one-shot)
  EXPECT_TRUE(pit.output(0));
  write_count(0, 30);  // loaded at 1, terminal count at 31
  EXPECT_EQ(pit.irq_deadline(), tick(32));
  at(30);
  EXPECT_TRUE(pit.output(0));
  at(31);
  EXPECT_FALSE(pit.output(0)) << "the strobe";
  EXPECT_EQ(latched(0), 0);
  EXPECT_EQ(run(), 0u);
  at(32);
  EXPECT_TRUE(pit.output(0));
  EXPECT_EQ(latched(0), 0xFFFF);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(edges(), 1u);
  EXPECT_EQ(pit.irq_deadline(), 0);
  at(70000);
  EXPECT_TRUE(pit.output(0)) << "no second strobe when the counter wraps";
  EXPECT_EQ(run(), 0u);
}

TEST_F(PitTest, Mode5IsAGateTriggeredStrobe) {
  at(0);
  out(0x43, 0xBA);  // channel 2, mode 5
  write_count(2, 4);
  at(20);
  EXPECT_TRUE(out2());
  out(0x61, Pit::kGate2);  // load at 21, terminal count at 25
  at(24);
  EXPECT_TRUE(out2());
  EXPECT_EQ(latched(2), 1);
  at(25);
  EXPECT_FALSE(out2());
  at(26);
  EXPECT_TRUE(out2());
}

TEST_F(PitTest, Modes6And7BehaveAsModes2And3AndReportTheirBits) {
  at(0);
  out(0x43, 0x3C);  // mode bits 110
  write_count(0, 4);
  at(1);
  EXPECT_EQ(status(0) & 0x0E, 0x0C) << "status shows the mode bits as written";
  at(4);
  EXPECT_FALSE(pit.output(0)) << "behaves as mode 2";
  at(5);
  EXPECT_TRUE(pit.output(0));
  out(0x43, 0xBE);  // channel 2, mode bits 111
  EXPECT_EQ(status(2) & 0x0E, 0x0E);
  out(0x61, Pit::kGate2);
  write_count(2, 4);  // loaded at 6
  at(8);
  EXPECT_FALSE(out2()) << "behaves as mode 3";
}

// ------------------------------------------------------------ reading

TEST_F(PitTest, CounterLatchHoldsTheCountUntilReadAndIgnoresRepeats) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 1000);
  at(101);
  out(0x43, 0x00);  // latch
  at(500);
  out(0x43, 0x00);  // ignored: the first latch was not read
  const std::uint8_t low = in(0x40);
  at(600);
  const std::uint8_t high = in(0x40);
  EXPECT_EQ(low | (high << 8), 900);
  EXPECT_EQ(latched(0), 401) << "after the latch was read, a new one works";
  out(0x43, 0x00);
  out(0x43, 0x34);  // reprogramming drops an unread latch
  write_count(0, 7);
  at(601);
  EXPECT_EQ(latched(0), 7);
}

TEST_F(PitTest, ReadBackLatchesSeveralChannelsAndStatusComesFirst) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 1000);
  out(0x43, 0x70);  // channel 1, LSB/MSB, mode 0
  write_count(1, 300);
  out(0x43, 0xB6);
  write_count(2, 500);
  at(101);
  out(0x43, 0xC0 | 0x08 | 0x02);  // count and status of channels 2 and 0
  at(200);
  EXPECT_EQ(in(0x40), kOutBit | 0x34);
  EXPECT_EQ(in(0x40), 900 & 0xFF);
  EXPECT_EQ(in(0x40), 900 >> 8);
  EXPECT_EQ(in(0x42), kOutBit | 0x36) << "GATE 2 low: loaded, not counting";
  EXPECT_EQ(in(0x42), 500 & 0xFF);
  EXPECT_EQ(in(0x42), 500 >> 8);
  EXPECT_EQ(latched(1), 101) << "channel 1 was not selected";
  // Count latched first, status after: status still reads first.
  out(0x43, 0xD2);  // count only, channel 0
  out(0x43, 0xE2);  // status only, channel 0
  EXPECT_EQ(in(0x40), kOutBit | 0x34);
  EXPECT_EQ(in(0x40), 801 & 0xFF);
}

TEST_F(PitTest, StatusByteReportsOutNullCountAccessModeAndBcd) {
  at(0);
  out(0x43, 0x13);  // channel 0, LSB only, mode 1, BCD
  EXPECT_EQ(status(0), kOutBit | kNullBit | 0x13);
  out(0x43, 0x20);  // channel 0, MSB only, mode 0, binary
  EXPECT_EQ(status(0), kNullBit | 0x20);
  out(0x40, 0x01);  // 256
  at(1);
  EXPECT_EQ(status(0), 0x20);
  at(257);
  EXPECT_EQ(status(0), kOutBit | 0x20);
}

TEST_F(PitTest, ByteAccessModesAndIndependentFlipFlops) {
  at(0);
  out(0x43, 0x14);  // LSB only, mode 2
  out(0x40, 200);
  at(11);
  EXPECT_EQ(in(0x40), 190);
  EXPECT_EQ(in(0x40), 190) << "LSB-only reads never flip to the MSB";
  out(0x43, 0x24);  // MSB only
  out(0x40, 0x02);  // 512
  at(12);
  EXPECT_EQ(in(0x40), 0x02);
  at(13);
  EXPECT_EQ(in(0x40), 0x01) << "511 >> 8";
  out(0x43, 0x34);  // LSB then MSB
  out(0x40, 0x00);  // write LSB ...
  EXPECT_EQ(in(0x40), 0xFF);  // ... read LSB (of the held count 511 >> 0: 0xFF) ...
  out(0x40, 0x10);  // ... write MSB: 0x1000
  EXPECT_EQ(in(0x40), 0x01) << "... read MSB: reads and writes keep separate flip-flops";
  at(14);
  EXPECT_EQ(latched(0), 0x1000);
}

TEST_F(PitTest, BcdCountsInDecimal) {
  at(0);
  out(0x43, 0x31);  // mode 0, BCD
  write_count(0, 0x1000);  // 1000 decimal
  at(1);
  EXPECT_EQ(latched(0), 0x1000);
  at(2);
  EXPECT_EQ(latched(0), 0x0999);
  at(1001);
  EXPECT_EQ(latched(0), 0x0000);
  EXPECT_EQ(run(), 1u) << "terminal count after 1000 decimal pulses";
  EXPECT_EQ(pit.irq_deadline(), 0);
  at(1002);
  EXPECT_EQ(latched(0), 0x9999) << "BCD wraps to 9999";
  out(0x43, 0x31);
  write_count(0, 0);  // 0 means 10000 in BCD, loaded at 1003
  EXPECT_EQ(pit.irq_deadline(), tick(1003 + 10000));
  at(1004);
  EXPECT_EQ(latched(0), 0x9999);
}

TEST_F(PitTest, CountZeroMeans65536InBinary) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 0);  // loaded at 1
  EXPECT_EQ(pit.irq_deadline(), tick(1 + 65536));
  at(1);
  EXPECT_EQ(latched(0), 0);
  at(2);
  EXPECT_EQ(latched(0), 0xFFFF);
  at(1 + 65535);
  EXPECT_FALSE(pit.output(0));
}

TEST_F(PitTest, NullCountLastsUntilTheCountReachesTheCountingElement) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 100);  // loaded at 1
  at(50);
  write_count(0, 40);  // mode 2: takes over at the end of the period (101)
  EXPECT_EQ(status(0) & kNullBit, kNullBit);
  at(100);
  EXPECT_EQ(status(0) & kNullBit, kNullBit);
  EXPECT_EQ(latched(0), 1);
  at(101);
  EXPECT_EQ(status(0) & kNullBit, 0);
  EXPECT_EQ(latched(0), 40);
}

TEST_F(PitTest, ControlPortReadsFloatAndReservedBitsAreIgnored) {
  EXPECT_EQ(in(0x43), 0xFF);
  at(0);
  out(0x43, 0x34);
  write_count(0, 100);
  at(11);
  out(0x43, 0xC3);  // read-back with the reserved bit 0 set: still latches channel 0
  EXPECT_EQ(in(0x40), kOutBit | 0x34);
  EXPECT_EQ(in(0x40), 90);
  EXPECT_EQ(in(0x40), 0);
  // Wide accesses are byte sequences: a word read at 0x40 takes its second
  // byte from port 0x41.
  std::uint8_t word[2] = {};
  out(0x43, 0x00);
  pit.read(0, word);
  EXPECT_EQ(word[0], 90);
  std::uint8_t dword[4] = {};
  pit.read(2, dword);
  EXPECT_EQ(dword[1], 0xFF) << "port 0x43";
  EXPECT_EQ(dword[2], 0xFF) << "beyond the window";
}

// ------------------------------------------------------------ IRQ 0 timing

TEST_F(PitTest, Channel0InterruptsEveryPeriodWithoutDriftOver10000Periods) {
  at(0);
  out(0x43, 0x34);
  constexpr std::int64_t kPeriod = 1193;  // Linux's LATCH for HZ=1000
  write_count(0, kPeriod);               // loaded at 1
  for (std::int64_t k = 1; k <= 10'000; ++k) {
    const Nanos due = tick(1 + k * kPeriod);
    ASSERT_EQ(pit.irq_deadline(), due) << "period " << k;
    clock.set(due - 1);
    ASSERT_EQ(run(), 0u) << "early at period " << k;
    clock.set(due);
    ASSERT_EQ(run(), 1u);
    ASSERT_EQ(edges(), static_cast<std::uint64_t>(k));
  }
  // 10,000 periods of 1193 pulses end exactly where the input clock says,
  // not where 10,000 rounded periods would.
  const Nanos exact = kEpoch + static_cast<Nanos>((static_cast<__int128>(1 + 10'000 * kPeriod) * kSecond + kHz - 1) / kHz);
  EXPECT_EQ(clock.now(), exact);
  const Nanos rounded_period = kPeriod * kSecond / kHz;  // 999847 ns
  EXPECT_NE(clock.now(), tick(1) + 10'000 * rounded_period) << "accumulating a rounded period drifts";
}

TEST_F(PitTest, Mode3InterruptsAtEachPeriodStart) {
  at(0);
  out(0x43, 0x36);
  write_count(0, 2000);  // loaded at 1, rising edges at 2001, 4001, ...
  for (std::int64_t k = 1; k <= 5; ++k) {
    EXPECT_EQ(pit.irq_deadline(), tick(1 + 2000 * k));
    at(1 + 2000 * k - 1000);
    EXPECT_FALSE(pit.output(0)) << "second half is low";
    EXPECT_EQ(run(), 0u);
    at(1 + 2000 * k);
    EXPECT_EQ(run(), 1u);
  }
  EXPECT_EQ(edges(), 5u);
}

TEST_F(PitTest, LateHandlerSkipsWholePeriodsAndStaysPhaseAligned) {
  at(0);
  out(0x43, 0x34);
  constexpr std::int64_t kPeriod = 1193;
  write_count(0, kPeriod);
  at(1 + kPeriod);
  ASSERT_EQ(run(), 1u);
  ASSERT_EQ(edges(), 1u);
  // The loop is late by 7.5 periods.
  clock.set(tick(1 + kPeriod) + (15 * kPeriod * kSecond) / (2 * kHz));
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(edges(), 2u) << "one interrupt for the late firing, missed edges skipped";
  EXPECT_EQ(pit.irq_deadline(), tick(1 + 9 * kPeriod)) << "next deadline on the original phase";
  at(1 + 9 * kPeriod);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(pit.irq_deadline(), tick(1 + 10 * kPeriod));
}

TEST_F(PitTest, EdgesFasterThanTheMinimumIntervalAreThinnedOnPeriodBoundaries) {
  testing::LogCapture logs;
  at(0);
  out(0x43, 0x34);
  write_count(0, 7);  // loaded at 1; edges at 8, 15, 22, ...
  at(8);
  EXPECT_EQ(run(), 1u);
  // At least 100 us later (119.3 pulses -> pulse 128 or later), on the grid.
  const std::int64_t next = pit.irq_deadline();
  std::int64_t k = 8;
  while (tick(k) < next) ++k;
  EXPECT_EQ(tick(k), next);
  EXPECT_GE(next - tick(8), Pit::kMinIrqInterval);
  EXPECT_EQ((k - 1) % 7, 0) << "still a period boundary";
  // One second of it: about 10,000 interrupts, not 170,000.
  std::size_t handled = 0;
  for (int i = 0; i < 10'000; ++i) {
    clock.set(pit.irq_deadline());
    handled += run();
  }
  EXPECT_EQ(handled, 10'000u);
  EXPECT_GE(clock.now() - tick(8), 10'000 * Pit::kMinIrqInterval);
  EXPECT_LE(logs.lines(), 10u) << "the thinning is reported, rate-limited";
}

TEST_F(PitTest, CountOneInModes2And3KeepsOutHighAndRaisesNothing) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 1);
  EXPECT_EQ(pit.irq_deadline(), 0);
  at(100);
  EXPECT_TRUE(pit.output(0));
  out(0x43, 0x36);
  write_count(0, 1);
  EXPECT_EQ(pit.irq_deadline(), 0);
  at(200);
  EXPECT_TRUE(pit.output(0));
  EXPECT_EQ(run(), 0u);
}

// ------------------------------------------------------------ reprogramming

TEST_F(PitTest, Mode2NewCountTakesEffectAtTheEndOfThePeriod) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 1193);  // edges at 1194, 2387, ...
  at(1194);
  ASSERT_EQ(run(), 1u);
  at(1194 + 300);
  write_count(0, 2000);
  EXPECT_EQ(pit.irq_deadline(), tick(2387)) << "the current period finishes with the old count";
  at(2387);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(pit.irq_deadline(), tick(2387 + 2000));
  EXPECT_EQ(latched(0), 2000);
  at(4387);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(pit.irq_deadline(), tick(6387));
  EXPECT_EQ(edges(), 3u);
}

TEST_F(PitTest, Mode3NewCountTakesEffectAtTheEndOfTheHalfCycle) {
  at(0);
  out(0x43, 0x36);
  write_count(0, 1000);  // high 1..500, low 501..1000, edges at 1001, 2001
  at(1001);
  ASSERT_EQ(run(), 1u);
  at(1201);  // in the high half that ends at 1501
  write_count(0, 601);  // odd: low 300 pulses, high 301
  EXPECT_EQ(pit.irq_deadline(), tick(1501 + 300));
  at(1500);
  EXPECT_TRUE(pit.output(0));
  at(1501);
  EXPECT_FALSE(pit.output(0)) << "the old high half ended on time";
  EXPECT_EQ(latched(0), 600) << "the new count (odd: N-1) took over at the half-cycle end";
  at(1800);
  EXPECT_FALSE(pit.output(0));
  at(1801);
  EXPECT_TRUE(pit.output(0));
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(pit.irq_deadline(), tick(1801 + 601));
}

TEST_F(PitTest, Mode0RewriteRestartsTheCount) {
  at(0);
  out(0x43, 0x30);
  write_count(0, 5000);
  EXPECT_EQ(pit.irq_deadline(), tick(5001));
  at(2000);
  write_count(0, 1000);  // loaded at 2001
  EXPECT_EQ(pit.irq_deadline(), tick(3001));
  at(3001);
  EXPECT_EQ(run(), 1u);
  at(5001);
  EXPECT_EQ(run(), 0u);
  EXPECT_EQ(edges(), 1u);
}

TEST_F(PitTest, Mode4RewriteRetriggersAndItsFirstByteChangesNothing) {
  at(0);
  out(0x43, 0x38);
  write_count(0, 5000);
  EXPECT_EQ(pit.irq_deadline(), tick(5002));
  at(2000);
  out(0x40, 0xE8);  // LSB of 1000
  EXPECT_EQ(pit.irq_deadline(), tick(5002)) << "mode 4: the first byte has no effect";
  out(0x40, 0x03);
  EXPECT_EQ(pit.irq_deadline(), tick(2001 + 1000 + 1));
  at(3002);
  EXPECT_EQ(run(), 1u);
  at(5002);
  EXPECT_EQ(run(), 0u);
}

TEST_F(PitTest, ControlWordStopsChannel0AndRaisesOutInModes1To5) {
  at(0);
  out(0x43, 0x30);
  write_count(0, 1000);
  at(500);
  EXPECT_FALSE(pit.output(0));
  out(0x43, 0x34);  // OUT low -> high: that is an edge on IRQ 0
  EXPECT_EQ(edges(), 1u);
  EXPECT_TRUE(pit.output(0));
  EXPECT_EQ(pit.irq_deadline(), 0) << "no count, nothing scheduled";
  at(5000);
  EXPECT_EQ(run(), 0u);
  out(0x43, 0x34);  // high -> high: no edge
  EXPECT_EQ(edges(), 1u);
}

TEST_F(PitTest, WriteAtTheDeadlineBeforeTheLoopRunsDeliversTheDueEdgeOnce) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 1193);
  at(1194);  // the edge is due; the guest writes before the loop runs
  write_count(0, 2000);
  EXPECT_EQ(edges(), 1u) << "the edge had already happened";
  EXPECT_EQ(pit.irq_deadline(), tick(1194 + 1193)) << "the period that just began ends with the old count";
  EXPECT_EQ(run(), 0u) << "the callout moved on; nothing fires twice";
  at(2387);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(edges(), 2u);
  EXPECT_EQ(pit.irq_deadline(), tick(4387));
}

// ------------------------------------------------------------ port 0x61

TEST_F(PitTest, LinuxPitCalibrateTscSequenceSeesOut2AtTheExactPulse) {
  // arch/x86/kernel/tsc.c pit_calibrate_tsc(): gate high, speaker off,
  // channel 2 mode 0 with a 50 ms latch, then poll port 0x61 bit 5.
  at(1234, 100);
  out(0x61, static_cast<std::uint8_t>((in(0x61) & ~Pit::kSpeakerData) | Pit::kGate2));
  out(0x43, 0xB0);
  constexpr std::uint16_t kLatch = kHz / 20;
  out(0x42, kLatch & 0xFF);
  out(0x42, kLatch >> 8);
  const Nanos high_at = tick(1234 + 1 + kLatch);
  std::uint64_t polls = 0;
  Nanos last_low = 0;
  while ((in(0x61) & Pit::kOut2) == 0) {
    last_low = clock.now();
    ++polls;
    clock.advance(997);  // a poll loop iteration
    ASSERT_LT(polls, 1'000'000u);
  }
  EXPECT_GE(clock.now(), high_at);
  EXPECT_LT(last_low, high_at);
  EXPECT_GT(polls, 45'000u);
  EXPECT_EQ(edges(), 0u) << "channel 2 is not wired to an interrupt";
}

TEST_F(PitTest, LinuxQuickPitCalibrateSeesTheMsbStepEvery256Pulses) {
  // quick_pit_calibrate(): channel 2 mode 0 from 0xFFFF, reading LSB then
  // MSB without latching, expecting the MSB to drop by one every 256 pulses.
  at(77, 50);
  out(0x61, static_cast<std::uint8_t>((in(0x61) & ~Pit::kSpeakerData) | Pit::kGate2));
  out(0x43, 0xB0);
  out(0x42, 0xFF);
  out(0x42, 0xFF);  // loaded at 78
  // "The PIT starts counting at the next edge": Linux reads the counter
  // once, which takes over a microsecond of ISA cycles.
  (void)in(0x42);
  clock.advance(600);
  (void)in(0x42);
  clock.advance(600);
  std::uint8_t expected_msb = 0xFF;
  int steps = 0;
  while (steps < 20) {
    clock.advance(523);
    (void)in(0x42);
    const std::uint8_t msb = in(0x42);
    if (msb == expected_msb) continue;
    ASSERT_EQ(msb, static_cast<std::uint8_t>(expected_msb - 1));
    expected_msb = msb;
    ++steps;
    const Nanos step_time = tick(78 + 256 * steps);
    EXPECT_GE(clock.now(), step_time);
    EXPECT_LT(clock.now() - 523, step_time) << "seen on the first read after the step";
  }
}

TEST_F(PitTest, Port61RefreshToggleAndLatchedBits) {
  at(0);
  EXPECT_EQ(in(0x61) & Pit::kRefreshToggle, 0);
  at(17);
  EXPECT_EQ(in(0x61) & Pit::kRefreshToggle, 0);
  at(18);
  EXPECT_EQ(in(0x61) & Pit::kRefreshToggle, Pit::kRefreshToggle);
  at(36);
  EXPECT_EQ(in(0x61) & Pit::kRefreshToggle, 0);
  out(0x61, 0xFF);
  EXPECT_EQ(in(0x61) & 0xCF, 0x0F) << "bits 0-3 stored; NMI status bits read 0";
  std::uint8_t wide[2] = {};
  pit.port61().read(0, wide);
  EXPECT_EQ(wide[1], 0xFF);
  const std::uint8_t wide_write[2] = {0x00, 0xFF};
  pit.port61().write(0, wide_write);
  EXPECT_EQ(in(0x61) & 0x0F, 0);
  pit.port61().write(1, std::span<const std::uint8_t>(wide_write + 1, 1));
  EXPECT_EQ(in(0x61) & 0x0F, 0) << "nothing behind offset 0";
}

TEST_F(PitTest, LinuxClocksourceLatchesChannel0InMode2) {
  // drivers/clocksource/i8253.c: mode 2 with LATCH, then "latch, LSB, MSB".
  at(0);
  out(0x43, 0x34);
  out(0x40, 1193 & 0xFF);
  out(0x40, 1193 >> 8);
  std::mt19937_64 rng(11);
  for (int i = 0; i < 200; ++i) {
    const std::int64_t k = 1 + static_cast<std::int64_t>(rng() % 100'000);
    at(k, static_cast<Nanos>(rng() % 800));
    out(0x43, 0x00);
    const std::uint8_t low = in(0x40);
    const std::uint16_t count = static_cast<std::uint16_t>(low | (in(0x40) << 8));
    EXPECT_EQ(count, 1193 - (k - 1) % 1193) << "pulse " << k;
  }
}

// ------------------------------------------------------------ HPET legacy

TEST_F(PitTest, DisabledOutputStillCountsButRaisesNothing) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 1193);
  at(1194);
  ASSERT_EQ(run(), 1u);
  pit.set_output_enabled(false);
  EXPECT_FALSE(pit.output_enabled());
  EXPECT_EQ(pit.irq_deadline(), 0);
  at(1194 + 5 * 1193 + 100);
  EXPECT_EQ(run(), 0u);
  EXPECT_EQ(edges(), 1u);
  EXPECT_EQ(latched(0), 1193 - 100) << "still counting";
  out(0x43, 0x34);  // a control word that raises OUT0: not delivered either
  write_count(0, 1193);  // loaded at 1194 + 5*1193 + 101
  EXPECT_EQ(edges(), 1u);
  const std::int64_t load = 1194 + 5 * 1193 + 101;
  at(load + 500);
  pit.set_output_enabled(true);
  EXPECT_EQ(pit.irq_deadline(), tick(load + 1193)) << "back on the channel's own phase";
  at(load + 1193);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(edges(), 2u);
}

// ------------------------------------------------------------ lifecycle

TEST_F(PitTest, PauseKeepsTheDeadlineAndResumeAppliesTheLagPolicy) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 1193);
  at(1194);
  ASSERT_EQ(run(), 1u);
  pit.pause();
  EXPECT_EQ(pit.irq_deadline(), tick(1 + 2 * 1193)) << "pause keeps the deadline";
  at(1 + 5 * 1193);
  EXPECT_EQ(run(), 0u) << "nothing fires while paused";
  pit.resume();
  EXPECT_EQ(run(), 1u) << "the passed deadline fires at once";
  EXPECT_EQ(edges(), 2u);
  EXPECT_EQ(pit.irq_deadline(), tick(1 + 6 * 1193));
}

TEST_F(PitTest, PauseAndResumeTellAFiredOneShotFromAPendingOne) {
  at(0);
  out(0x43, 0x30);
  write_count(0, 1000);
  pit.pause();
  at(5000);
  EXPECT_EQ(run(), 0u);
  pit.resume();
  EXPECT_EQ(run(), 1u) << "pending one-shot fires after resume";
  EXPECT_EQ(edges(), 1u);
  EXPECT_EQ(pit.irq_deadline(), 0);
  pit.pause();
  pit.resume();
  at(500'000);
  EXPECT_EQ(run(), 0u) << "a fired one-shot is not re-armed";
  EXPECT_EQ(edges(), 1u);
}

TEST_F(PitTest, DrainThenResetGivesAPowerOnPitThatWorks) {
  at(0);
  out(0x43, 0x34);
  write_count(0, 1193);
  at(1194);
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(pit.stats().handler_runs, 1u);
  pit.drain_timers();
  pit.drain_timers();  // idempotent
  write_count(0, 1193);
  EXPECT_EQ(pit.stats().refused_rearms, 2u) << "a drained PIT refuses the re-arm of each byte's write, and counts it";
  const auto edges_at_drain = edges();
  at(10 * 1193);
  EXPECT_EQ(run(), 0u) << "a drained PIT never fires";
  EXPECT_EQ(edges(), edges_at_drain);
  EXPECT_EQ(pit.stats().handler_runs, 1u);
  clock.advance(12345);
  const Nanos reset_at = clock.now();
  pit.reset(system.loop(0));
  EXPECT_EQ(pit.epoch(), reset_at);
  EXPECT_EQ(status(0), kOutBit | kNullBit | 0x36);
  EXPECT_EQ(pit.irq_deadline(), 0);
  out(0x43, 0x34);
  write_count(0, 100);
  EXPECT_EQ(pit.irq_deadline(), tick_time(reset_at, 101));
  const auto edges_at_reset = edges();
  clock.set(tick_time(reset_at, 101));
  EXPECT_EQ(run(), 1u);
  EXPECT_EQ(edges(), edges_at_reset + 1);
}

TEST_F(PitTest, BindTimersMovesTheCalloutKeepingItsDeadline) {
  timers::ManualClock clock2{kEpoch};
  timers::CyclicSystem two{clock2, timers::LoopOptions{.loops = 2, .threads = false}};
  FakeIrqLine line;
  Pit moved(two, two.loop(0), line);
  const std::uint8_t cw = 0x34, lsb = 100, msb = 0;
  moved.write(3, std::span<const std::uint8_t>(&cw, 1));
  moved.write(0, std::span<const std::uint8_t>(&lsb, 1));
  moved.write(0, std::span<const std::uint8_t>(&msb, 1));
  moved.bind_timers(two.loop(1));
  clock2.set(tick_time(kEpoch, 101));
  EXPECT_EQ(two.loop(0).run_due(), 0u);
  EXPECT_EQ(two.loop(1).run_due(), 1u);
  EXPECT_EQ(line.rising_edges(), 1u);
}

// ------------------------------------------------------------ reference model

// One 8254 counter stepped pulse by pulse, written from the datasheet's mode
// descriptions as literally as possible: the counting element changes only
// on CLK pulses, OUT and the CPU-visible registers also on CPU writes and
// GATE changes. The device derives the same values arithmetically; the two
// must agree at every pulse.
class RefCounter {
 public:
  explicit RefCounter(bool gate) : gate_(gate) { control(0x36); }

  void control(std::uint8_t cw) {
    access = (cw >> 4) & 3;
    const unsigned m = (cw >> 1) & 7;
    mode = m >= 6 ? m - 4 : m;
    bcd = cw & 1;
    control_bits = cw & 0x3F;
    set_out(mode != 0);
    loaded_ = load_pending_ = trigger_pending_ = reload_next_ = armed_ = has_count = holding_ = false;
    null_ = true;
    msb_next = false;
    read_msb_next = false;
  }

  void write(std::uint8_t v) {
    if (access == 3 && !msb_next) {
      lsb_ = v;
      msb_next = true;
      if (mode == 0) {
        holding_ = true;
        load_pending_ = false;  // undefined on the chip; both models drop the load
        set_out(false);
      }
      return;
    }
    cr_ = access == 1 ? v : access == 2 ? static_cast<std::uint16_t>(v << 8) : static_cast<std::uint16_t>(lsb_ | (v << 8));
    msb_next = false;
    const bool first = !has_count;
    has_count = true;
    null_ = true;
    switch (mode) {
      case 0:
        set_out(false);
        holding_ = false;
        load_pending_ = true;
        break;
      case 4:
        load_pending_ = true;
        break;
      case 2:
      case 3:
        if (first) load_pending_ = true;
        break;
      default:
        break;
    }
  }

  void set_gate(bool level) {
    if (level == gate_) return;
    gate_ = level;
    if (mode == 1 || mode == 5) {
      if (level && has_count) trigger_pending_ = true;
    } else if (mode == 2 || mode == 3) {
      if (!level) {
        set_out(true);
        reload_next_ = false;
      } else if (has_count) {
        trigger_pending_ = true;
      }
    }
  }

  void clock() {
    switch (mode) {
      case 0:
        if (load_pending_) return load_one_shot();
        if (!loaded_ || holding_ || !gate_) return;
        ce_ = dec(ce_);
        if (ce_ == 0 && armed_) {
          set_out(true);
          armed_ = false;
        }
        return;
      case 4:
        set_out(true);  // a strobe lasts one pulse
        if (load_pending_) return load_one_shot();
        if (!loaded_ || !gate_) return;
        ce_ = dec(ce_);
        if (ce_ == 0 && armed_) {
          set_out(false);
          armed_ = false;
        }
        return;
      case 1:
        if (trigger_pending_) {
          load_one_shot();
          trigger_pending_ = false;
          set_out(false);
          return;
        }
        if (!loaded_) return;
        ce_ = dec(ce_);
        if (ce_ == 0 && armed_) {
          set_out(true);
          armed_ = false;
        }
        return;
      case 5:
        set_out(true);
        if (trigger_pending_) {
          load_one_shot();
          trigger_pending_ = false;
          return;
        }
        if (!loaded_) return;
        ce_ = dec(ce_);
        if (ce_ == 0 && armed_) {
          set_out(false);
          armed_ = false;
        }
        return;
      case 2:
        if (load_pending_ || trigger_pending_ || (reload_next_ && gate_)) {
          ce_ = effective() % modulus();
          load_pending_ = trigger_pending_ = reload_next_ = false;
          loaded_ = true;
          null_ = false;
          set_out(true);
          return;
        }
        if (!loaded_ || !gate_) return;
        ce_ = dec(ce_);
        if (ce_ == 1) {
          set_out(false);
          reload_next_ = true;
        }
        return;
      default:  // 3
        if (load_pending_ || trigger_pending_) {
          load_square();
          load_pending_ = trigger_pending_ = false;
          set_out(true);
          check_half_end();
          return;
        }
        if (!loaded_ || !gate_) return;
        if (reload_next_) {
          load_square();
          set_out(!out_);
          check_half_end();
          return;
        }
        ce_ = dec(dec(ce_));
        check_half_end();
        return;
    }
  }

  bool out() const { return out_; }
  bool null() const { return null_; }
  std::uint16_t display() const {
    return bcd ? static_cast<std::uint16_t>(to_bcd(ce_ % 10000)) : static_cast<std::uint16_t>(ce_);
  }
  std::uint8_t status() const {
    return static_cast<std::uint8_t>((out_ ? 0x80 : 0) | (null_ ? 0x40 : 0) | control_bits);
  }
  std::uint64_t rises() const { return rises_; }

  unsigned access = 3, mode = 3;
  bool bcd = false, has_count = false, msb_next = false, read_msb_next = false;
  std::uint8_t control_bits = 0x36;

 private:
  std::uint32_t modulus() const { return bcd ? 10000 : 65536; }
  static std::uint32_t to_bcd(std::uint32_t v) {
    return (v % 10) | (v / 10 % 10) << 4 | (v / 100 % 10) << 8 | (v / 1000 % 10) << 12;
  }
  std::uint32_t effective() const {
    std::uint32_t n = cr_;
    if (bcd) n = ((cr_ & 0xF) + 10 * ((cr_ >> 4) & 0xF) + 100 * ((cr_ >> 8) & 0xF) + 1000 * ((cr_ >> 12) & 0xF)) % 10000;
    return n == 0 ? modulus() : n;
  }
  std::uint32_t dec(std::uint32_t v) const { return v == 0 ? modulus() - 1 : v - 1; }
  void set_out(bool level) {
    if (level && !out_) ++rises_;
    out_ = level;
  }
  void load_one_shot() {
    ce_ = effective() % modulus();
    load_pending_ = false;
    null_ = false;
    loaded_ = true;
    armed_ = true;
  }
  void load_square() {
    const std::uint32_t n = effective();
    odd_ = n & 1;
    ce_ = (n & ~1u) % modulus();
    null_ = false;
    loaded_ = true;
    reload_next_ = false;
  }
  // Odd counts run one extra pulse (down to 0) in the high half; otherwise a
  // half ends one pulse after the count reaches 2.
  void check_half_end() { reload_next_ = (odd_ && out_) ? ce_ == 0 : ce_ == 2; }

  bool gate_;
  bool out_ = true, null_ = true, loaded_ = false, load_pending_ = false, trigger_pending_ = false,
       reload_next_ = false, armed_ = false, holding_ = false, odd_ = false;
  std::uint16_t cr_ = 0;
  std::uint8_t lsb_ = 0;
  std::uint32_t ce_ = 0;
  std::uint64_t rises_ = 0;
};

std::uint16_t to_bcd_word(unsigned v) {
  return static_cast<std::uint16_t>((v % 10) | (v / 10 % 10) << 4 | (v / 100 % 10) << 8 | (v / 1000 % 10) << 12);
}

// Drives one channel with random control words, counts (whole or split),
// GATE changes, latches and plain reads, comparing with the reference at
// every pulse. On channel 0 the IRQ edges are compared too.
void cross_check(unsigned channel, std::uint64_t seed, std::int64_t pulses) {
  SCOPED_TRACE(::testing::Message() << "channel " << channel << " seed " << seed);
  timers::ManualClock clock{kEpoch};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  FakeIrqLine irq;
  Pit pit(system, system.loop(0), irq);
  RefCounter ref(/*gate=*/channel != 2);
  std::mt19937_64 rng(seed);
  const auto port_out = [&](std::uint64_t offset, std::uint8_t v) {
    pit.write(offset, std::span<const std::uint8_t>(&v, 1));
  };
  const auto port_in = [&](std::uint64_t offset) {
    std::uint8_t v = 0;
    pit.read(offset, std::span<std::uint8_t>(&v, 1));
    return v;
  };
  bool gate = channel != 2;
  int split_msb = -1;  // the MSB still owed to a half-written count
  const auto pick_count = [&]() -> unsigned {
    const bool periodic = ref.mode == 2 || ref.mode == 3;
    if (channel == 0 && periodic) return 150 + static_cast<unsigned>(rng() % 450);  // above the thinning limit
    if (rng() % 20 == 0) return 0;  // 65536 / 10000
    return 2 + static_cast<unsigned>(rng() % 60);
  };
  const auto count_bytes = [&](unsigned n) -> std::uint16_t {
    if (n == 0) return 0;
    return ref.bcd ? to_bcd_word(n % 10000) : static_cast<std::uint16_t>(n);
  };
  // PIT_TRACE=1 prints every event, to replay a failing scenario by hand.
  const bool trace = std::getenv("PIT_TRACE") != nullptr;
  std::int64_t current = 0;
  const auto note = [&](const char* what, unsigned value) {
    if (trace) std::fprintf(stderr, "pulse %lld: %s %#x (mode %u access %u)\n", static_cast<long long>(current), what, value, ref.mode, ref.access);
  };
  const auto event = [&](Nanos when) {
    clock.set(when);
    const unsigned kind = static_cast<unsigned>(rng() % 100);
    if (kind < 12) {
      const unsigned mode = static_cast<unsigned>(rng() % 8);
      const unsigned access = 1 + static_cast<unsigned>(rng() % 3);
      const unsigned bcd = rng() % 6 == 0;
      const auto cw = static_cast<std::uint8_t>(channel << 6 | access << 4 | mode << 1 | bcd);
      port_out(3, cw);
      ref.control(cw);
      note("control", cw);
      split_msb = -1;
    } else if (kind < 50) {
      // On channel 0, periods stay above the interrupt thinning limit.
      const bool fast_guard = channel == 0 && (ref.mode == 2 || ref.mode == 3);
      std::uint16_t raw = count_bytes(pick_count());
      if (ref.access == 1) {
        if (fast_guard && ref.bcd) return;  // at most 99 pulses: too fast
        raw &= 0xFF;
        if (raw < 2) raw = 2;  // counts of 1 are illegal in modes 2 and 3
        if (fast_guard && raw < 150) raw = 150;
      } else if (ref.access == 2) {
        raw = static_cast<std::uint16_t>((fast_guard ? 2 : 1 + rng() % 2) << 8);
      }
      const auto write = [&](std::uint8_t b) {
        port_out(channel, b);
        ref.write(b);
        note("write", b);
      };
      if (ref.access != 3) {
        write(static_cast<std::uint8_t>(ref.access == 2 ? raw >> 8 : raw));
      } else if (!ref.msb_next) {
        write(static_cast<std::uint8_t>(raw));
        if (rng() % 4) {
          write(static_cast<std::uint8_t>(raw >> 8));
        } else {
          split_msb = raw >> 8;  // the MSB comes at a later pulse
        }
      } else {
        write(static_cast<std::uint8_t>(split_msb >= 0 ? split_msb : raw >> 8));
        split_msb = -1;
      }
    } else if (kind < 70 && channel == 2) {
      gate = !gate;
      const std::uint8_t v = gate ? Pit::kGate2 : 0;
      pit.port61().write(0, std::span<const std::uint8_t>(&v, 1));
      ref.set_gate(gate);
      note("gate", gate);
    } else if (kind < 80) {
      port_out(3, static_cast<std::uint8_t>(channel << 6));  // counter latch
      const std::uint16_t v = ref.display();
      if (ref.access == 1) {
        ASSERT_EQ(port_in(channel), v & 0xFF);
      }
      if (ref.access == 2) {
        ASSERT_EQ(port_in(channel), v >> 8);
      }
      if (ref.access == 3) {
        ASSERT_EQ(port_in(channel), v & 0xFF);
        ASSERT_EQ(port_in(channel), v >> 8);
      }
    } else if (kind < 90) {
      const std::uint16_t v = ref.display();
      bool msb = ref.access == 2;
      if (ref.access == 3) {
        msb = ref.read_msb_next;
        ref.read_msb_next = !ref.read_msb_next;
      }
      ASSERT_EQ(port_in(channel), msb ? v >> 8 : v & 0xFF) << "plain read";
    }
  };
  const auto compare = [&](std::int64_t k) {
    port_out(3, static_cast<std::uint8_t>(0xC0 | (2u << channel)));  // read-back: count and status
    ASSERT_EQ(port_in(channel), ref.status()) << "status at pulse " << k << " mode " << ref.mode;
    const std::uint16_t v = ref.display();
    if (ref.access == 1) {
      ASSERT_EQ(port_in(channel), v & 0xFF) << "pulse " << k;
    }
    if (ref.access == 2) {
      ASSERT_EQ(port_in(channel), v >> 8) << "pulse " << k;
    }
    if (ref.access == 3) {
      const std::uint8_t low = port_in(channel);
      const std::uint8_t high = port_in(channel);
      ASSERT_EQ(low | (high << 8), v) << "count at pulse " << k << " mode " << ref.mode;
    }
    if (channel == 2) {
      std::uint8_t p61 = 0;
      pit.port61().read(0, std::span<std::uint8_t>(&p61, 1));
      ASSERT_EQ((p61 & Pit::kOut2) != 0, ref.out()) << "OUT2 at pulse " << k;
    }
    if (channel == 0) {
      ASSERT_EQ(irq.rising_edges(), ref.rises()) << "IRQ 0 edges by pulse " << k;
    }
  };

  for (std::int64_t k = 1; k <= pulses; ++k) {
    current = k;
    ref.clock();
    const Nanos start = tick_time(kEpoch, k);
    const Nanos span = tick_time(kEpoch, k + 1) - start;
    const bool events = rng() % 6 == 0;
    const bool events_first = rng() % 4 == 0;  // writes racing the due handler
    clock.set(start);
    if (!events_first) system.loop(0).run_due();
    if (events) {
      const int n = 1 + static_cast<int>(rng() % 3);
      for (int i = 0; i < n; ++i) {
        event(start + static_cast<Nanos>(rng() % static_cast<std::uint64_t>(span)));
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
    if (events_first) system.loop(0).run_due();
    compare(k);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// PIT_REFERENCE_SEEDS=n widens the sweep for a longer hunt.
std::uint64_t reference_seeds(std::uint64_t fallback) {
  const char* env = std::getenv("PIT_REFERENCE_SEEDS");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : fallback;
}

TEST(PitReference, Channel2MatchesThePulseByPulseModelInEveryMode) {
  const std::uint64_t seeds = reference_seeds(12);
  for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
    cross_check(2, seed, 12'000);
    if (HasFatalFailure()) return;
  }
}

TEST(PitReference, Channel0MatchesTheModelIncludingIrqEdges) {
  const std::uint64_t seeds = reference_seeds(10);
  for (std::uint64_t seed = 101; seed < 101 + seeds; ++seed) {
    cross_check(0, seed, 12'000);
    if (HasFatalFailure()) return;
  }
}

// ------------------------------------------------------------ bad input

TEST(PitFuzz, RandomAccessesNeverCrashSpinOrFloodTheLog) {
  testing::LogCapture logs;
  spdlog::warn("capture check");
  ASSERT_EQ(logs.lines(), 1u);
  timers::ManualClock clock{kEpoch};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  FakeIrqLine irq;
  Pit pit(system, system.loop(0), irq);
  std::mt19937_64 rng(0x8254);
  constexpr std::array<std::size_t, 4> kWidths = {1, 2, 4, 8};
  std::uint64_t arming_calls = 0;  // anything that may arm the callout
  const auto start_clock = clock.now();
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t handler_runs = 0;
  for (int i = 0; i < 200'000; ++i) {
    BusDevice& target = rng() % 4 ? static_cast<BusDevice&>(pit) : pit.port61();
    const std::size_t width = kWidths[rng() % kWidths.size()];
    std::uint64_t offset = rng() % 6;
    if (rng() % 50 == 0) offset = rng();
    std::array<std::uint8_t, 8> buffer{};
    const std::span<std::uint8_t> data(buffer.data(), width);
    if (rng() % 2) {
      for (auto& byte : data) byte = static_cast<std::uint8_t>(rng());
      // Bias towards channel 0 programming with small counts.
      if (&target == &pit && rng() % 3 == 0) {
        data[0] = static_cast<std::uint8_t>((rng() % 4) << 4 | (rng() % 8) << 1);
        offset = 3;
      }
      target.write(offset, data);
      ++arming_calls;
    } else {
      target.read(offset, data);
    }
    switch (rng() % 16) {
      case 0:
        clock.advance(static_cast<Nanos>(rng() % (2 * kMillisecond)));
        break;
      case 1:
      case 2:
        handler_runs += system.loop(0).run_due();
        break;
      case 3:
        pit.set_output_enabled(rng() % 4 != 0);
        ++arming_calls;
        break;
      case 4:
        if (rng() % 8 == 0) {
          pit.pause();
          pit.resume();
          ++arming_calls;
        }
        break;
      case 5:
        if (rng() % 500 == 0) {
          pit.drain_timers();
          pit.reset(system.loop(0));
        }
        break;
      default:
        break;
    }
    clock.advance(static_cast<Nanos>(rng() % 5000));
  }
  const Nanos simulated = clock.now() - start_clock;
  // The handler cannot run more often than the rate limit plus once per
  // thing that (re)armed it from outside.
  EXPECT_LE(handler_runs, static_cast<std::uint64_t>(simulated / Pit::kMinIrqInterval) + arming_calls + 1);
  EXPECT_GT(irq.rising_edges(), 0u) << "the fuzz should have produced interrupts";
  // Two rate-limited call sites (thinning, illegal count) at 10 lines per 5 s.
  const auto windows = 1 + std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start).count() / 5;
  EXPECT_LE(logs.lines(), 1 + 2 * 10 * static_cast<std::size_t>(windows + 1));
}

// ------------------------------------------------------------ threads

TEST(PitThreads, ConcurrentGuestWritesTimerFiringsAndLifecycleCalls) {
  timers::CyclicSystem system{timers::MonotonicClock::instance(),
                              timers::LoopOptions{.loops = 2, .threads = true, .pin = false}};
  FakeIrqLine irq;
  Pit pit(system, system.loop(0), irq);
  const auto out = [&](std::uint64_t offset, std::uint8_t v) { pit.write(offset, std::span<const std::uint8_t>(&v, 1)); };
  out(3, 0x34);
  out(0, 130);
  out(0, 0);  // about 9 kHz
  std::atomic<bool> stop{false};
  std::thread vcpu([&] {
    std::mt19937_64 rng(5);
    while (!stop) {
      std::uint8_t v[2] = {};
      switch (rng() % 6) {
        case 0:
          out(3, 0x00);
          pit.read(0, v);
          break;
        case 1:
          out(3, static_cast<std::uint8_t>(0x30 | (rng() % 6) << 1));
          out(0, static_cast<std::uint8_t>(120 + rng() % 100));
          out(0, 0);
          break;
        case 2:
          pit.port61().write(0, std::span<const std::uint8_t>(v, 1));
          pit.port61().read(0, std::span<std::uint8_t>(v, 1));
          break;
        default:
          pit.read(0, v);
          break;
      }
    }
  });
  std::thread control([&] {
    std::mt19937_64 rng(6);
    while (!stop) {
      switch (rng() % 4) {
        case 0:
          pit.pause();
          pit.resume();
          break;
        case 1:
          pit.set_output_enabled(rng() % 2);
          break;
        case 2:
          pit.bind_timers(system.loop(rng() % 2));
          break;
        default:
          std::this_thread::sleep_for(100us);
          break;
      }
    }
  });
  std::this_thread::sleep_for(300ms);
  stop = true;
  vcpu.join();
  control.join();
  pit.set_output_enabled(true);
  EXPECT_GT(irq.rising_edges(), 0u);
  pit.drain_timers();
  const auto after_drain = irq.rising_edges();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(irq.rising_edges(), after_drain) << "no handler runs after drain_timers() returned";
  pit.reset(system.loop(1));
  out(3, 0x34);
  out(0, 0xA9);
  out(0, 0x04);
  std::this_thread::sleep_for(20ms);
  EXPECT_GT(irq.rising_edges(), after_drain) << "works again after reset";
}

}  // namespace
}  // namespace vmm::devices
