// 16550A register behaviour, checked against the datasheet and against what
// Linux's 8250 driver does to the chip.
#include "devices/serial.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "devices/error.h"
#include "tests/common/temp_dir.h"
#include "tests/devices/fakes.h"

namespace vmm::devices {
namespace {

using testing::CaptureOutput;
using testing::FakeIrqLine;

struct Uart {
  FakeIrqLine irq;
  CaptureOutput output;
  Serial serial{irq, output};

  std::uint8_t in(std::uint64_t offset) {
    std::uint8_t byte = 0;
    serial.read(offset, std::span<std::uint8_t>(&byte, 1));
    return byte;
  }
  void out(std::uint64_t offset, std::uint8_t value) { serial.write(offset, std::span<const std::uint8_t>(&value, 1)); }
  std::size_t receive(const std::string& text) {
    return serial.receive(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  }
};

TEST(Serial, PowerOnRegisterValues) {
  Uart u;
  EXPECT_EQ(u.in(Serial::kIer), 0x00);
  EXPECT_EQ(u.in(Serial::kIirFcr), 0x01);  // no interrupt, FIFOs off
  EXPECT_EQ(u.in(Serial::kLcr), 0x00);
  EXPECT_EQ(u.in(Serial::kMcr), 0x00);
  EXPECT_EQ(u.in(Serial::kLsr), 0x60);  // THRE | TEMT
  EXPECT_EQ(u.in(Serial::kMsr), 0xB0);  // DCD, DSR, CTS of a connected console
  EXPECT_EQ(u.in(Serial::kScr), 0x00);
  EXPECT_FALSE(u.irq.level());
}

TEST(Serial, TransmittedBytesReachTheOutputAndThrStaysEmpty) {
  Uart u;
  for (char c : std::string("hello\n")) u.out(Serial::kRbrThr, static_cast<std::uint8_t>(c));
  EXPECT_EQ(u.output.text(), "hello\n");
  EXPECT_EQ(u.in(Serial::kLsr) & 0x60, 0x60);
}

TEST(Serial, DivisorLatchSharesOffsetsZeroAndOne) {
  Uart u;
  u.out(Serial::kLcr, 0x83);  // DLAB + 8N1
  u.out(Serial::kDll, 0x01);
  u.out(Serial::kDlm, 0x02);
  EXPECT_EQ(u.in(Serial::kDll), 0x01);
  EXPECT_EQ(u.in(Serial::kDlm), 0x02);
  EXPECT_TRUE(u.output.text().empty()) << "a DLL write must not transmit";
  u.out(Serial::kLcr, 0x03);
  EXPECT_EQ(u.in(Serial::kIer), 0x00) << "IER is back at offset 1";
  u.out(Serial::kRbrThr, 'A');
  EXPECT_EQ(u.output.text(), "A");
  u.out(Serial::kLcr, 0x83);
  EXPECT_EQ(u.in(Serial::kDll), 0x01) << "THR write must not touch DLL";
}

TEST(Serial, ScratchRegisterHoldsAnyValue) {
  Uart u;
  for (int v : {0x00, 0x55, 0xAA, 0xFF}) {
    u.out(Serial::kScr, static_cast<std::uint8_t>(v));
    EXPECT_EQ(u.in(Serial::kScr), v);
  }
}

TEST(Serial, IerUpperNibbleReadsZero) {
  // Linux's autoconfig: IER=0 must read 0 and IER=0x0F must read 0x0F; it
  // also writes 0x40 (XScale UUE) and expects it not to stick on a 16550A.
  Uart u;
  u.out(Serial::kIer, 0xFF);
  EXPECT_EQ(u.in(Serial::kIer), 0x0F);
  u.out(Serial::kIer, 0x40);
  EXPECT_EQ(u.in(Serial::kIer), 0x00);
}

TEST(Serial, McrUpperBitsReadZero) {
  Uart u;
  u.out(Serial::kMcr, 0xEF);
  EXPECT_EQ(u.in(Serial::kMcr), 0x0F);
}

TEST(Serial, EnablingEtbeiWithThrEmptyRaisesThre) {
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrOut2);
  EXPECT_FALSE(u.irq.level());
  u.out(Serial::kIer, Serial::kIerThre);
  EXPECT_TRUE(u.irq.level());
  EXPECT_EQ(u.irq.rising_edges(), 1u);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirThre);
  // Reading IIR while THRE is the reported source acknowledges it.
  EXPECT_FALSE(u.irq.level());
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirNoInterrupt);
}

TEST(Serial, ThreReassertsWhenEtbeiIsSetAgain) {
  // Linux's UART_BUG_THRE probe: IER=THRI, read IIR, IER=0, IER=THRI, read
  // IIR. A real 16550A reports THRE again; if not, Linux marks the port buggy.
  Uart u;
  u.out(Serial::kIer, Serial::kIerThre);
  EXPECT_EQ(u.in(Serial::kIirFcr) & 0x0F, Serial::kIirThre);
  u.out(Serial::kIer, 0);
  u.out(Serial::kIer, Serial::kIerThre);
  EXPECT_EQ(u.in(Serial::kIirFcr) & 0x0F, Serial::kIirThre);
}

TEST(Serial, SettingEtbeiWhenAlreadySetDoesNotReassert) {
  Uart u;
  u.out(Serial::kIer, Serial::kIerThre);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirThre);
  u.out(Serial::kIer, Serial::kIerThre | Serial::kIerRxData);  // ETBEI stays 1: no new edge
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirNoInterrupt);
}

TEST(Serial, ThrWriteReraisesThreAndProducesANewEdge) {
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrOut2);
  u.out(Serial::kIer, Serial::kIerThre);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirThre);  // line drops
  EXPECT_FALSE(u.irq.level());
  u.out(Serial::kRbrThr, 'x');  // the byte leaves at once: THR empty again
  EXPECT_TRUE(u.irq.level());
  EXPECT_EQ(u.irq.rising_edges(), 2u);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirThre);
  EXPECT_EQ(u.output.text(), "x");
}

TEST(Serial, ClearingEtbeiDropsThre) {
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrOut2);
  u.out(Serial::kIer, Serial::kIerThre);
  EXPECT_TRUE(u.irq.level());
  u.out(Serial::kIer, 0);
  EXPECT_FALSE(u.irq.level());
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirNoInterrupt);
}

TEST(Serial, IirReadDoesNotAcknowledgeThreWhenAHigherSourceIsReported) {
  Uart u;
  u.out(Serial::kIer, Serial::kIerThre | Serial::kIerRxData);
  u.receive("r");
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirRxData);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirRxData);
  EXPECT_EQ(u.in(Serial::kRbrThr), 'r');
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirThre) << "THRE was still pending behind RX data";
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirNoInterrupt);
}

TEST(Serial, ReceivedDataInterruptWithoutFifo) {
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrOut2 | Serial::kMcrDtr | Serial::kMcrRts);
  u.out(Serial::kIer, Serial::kIerRxData);
  EXPECT_FALSE(u.irq.level());
  EXPECT_EQ(u.receive("a"), 0u);
  EXPECT_TRUE(u.irq.level());
  EXPECT_EQ(u.in(Serial::kLsr) & Serial::kLsrDataReady, Serial::kLsrDataReady);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirRxData);
  EXPECT_EQ(u.in(Serial::kRbrThr), 'a');
  EXPECT_FALSE(u.irq.level());
  EXPECT_EQ(u.in(Serial::kLsr) & Serial::kLsrDataReady, 0);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirNoInterrupt);
}

TEST(Serial, FifoTriggerLevelAndCharacterTimeout) {
  Uart u;
  u.out(Serial::kIer, Serial::kIerRxData);
  u.out(Serial::kIirFcr, 0x81);  // FIFO on, trigger at 8
  EXPECT_EQ(u.in(Serial::kIirFcr), 0xC1) << "bits 7:6 report FIFOs enabled";
  u.receive("1234567");
  EXPECT_EQ(u.in(Serial::kIirFcr), 0xC0 | Serial::kIirCharTimeout);
  u.receive("8");
  EXPECT_EQ(u.in(Serial::kIirFcr), 0xC0 | Serial::kIirRxData);
  EXPECT_EQ(u.in(Serial::kRbrThr), '1');
  EXPECT_EQ(u.in(Serial::kIirFcr), 0xC0 | Serial::kIirCharTimeout) << "7 left: below the trigger level";
  std::string rest;
  while (u.in(Serial::kLsr) & Serial::kLsrDataReady) rest.push_back(static_cast<char>(u.in(Serial::kRbrThr)));
  EXPECT_EQ(rest, "2345678");
  EXPECT_EQ(u.in(Serial::kIirFcr), 0xC1);
}

TEST(Serial, EachTriggerLevelSetting) {
  const std::pair<std::uint8_t, std::size_t> levels[] = {{0x01, 1}, {0x41, 4}, {0x81, 8}, {0xC1, 14}};
  for (const auto& [fcr, level] : levels) {
    Uart u;
    u.out(Serial::kIer, Serial::kIerRxData);
    u.out(Serial::kIirFcr, fcr);
    u.receive(std::string(level - 1, 'x'));
    if (level > 1) {
      EXPECT_EQ(u.in(Serial::kIirFcr) & 0x0F, Serial::kIirCharTimeout) << int(fcr);
    }
    u.receive("y");
    EXPECT_EQ(u.in(Serial::kIirFcr) & 0x0F, Serial::kIirRxData) << int(fcr);
  }
}

TEST(Serial, FifoOverrunKeepsTheFifoAndSetsOe) {
  Uart u;
  u.out(Serial::kIirFcr, Serial::kFcrEnable);
  EXPECT_EQ(u.serial.rx_room(), 16u);
  EXPECT_EQ(u.receive("abcdefghijklmnopQ"), 1u);
  EXPECT_EQ(u.serial.rx_room(), 0u);
  const std::uint8_t lsr = u.in(Serial::kLsr);
  EXPECT_EQ(lsr & (Serial::kLsrOverrun | Serial::kLsrDataReady), Serial::kLsrOverrun | Serial::kLsrDataReady);
  EXPECT_EQ(u.in(Serial::kLsr) & Serial::kLsrOverrun, 0) << "reading LSR clears OE";
  std::string got;
  while (u.in(Serial::kLsr) & Serial::kLsrDataReady) got.push_back(static_cast<char>(u.in(Serial::kRbrThr)));
  EXPECT_EQ(got, "abcdefghijklmnop");
}

TEST(Serial, OverrunWithoutFifoReplacesTheUnreadByte) {
  Uart u;
  EXPECT_EQ(u.serial.rx_room(), 1u);
  EXPECT_EQ(u.receive("ab"), 1u);
  EXPECT_EQ(u.in(Serial::kLsr) & Serial::kLsrOverrun, Serial::kLsrOverrun);
  EXPECT_EQ(u.in(Serial::kRbrThr), 'b');
}

TEST(Serial, LineStatusInterruptHasTopPriority) {
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrOut2);
  u.out(Serial::kIer, Serial::kIerRxData | Serial::kIerLineStatus | Serial::kIerThre);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirThre);
  u.receive("ab");  // second byte overruns the 16450-mode holding register
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirLineStatus);
  EXPECT_TRUE(u.irq.level());
  u.in(Serial::kLsr);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirRxData);
}

TEST(Serial, FcrResetsAndModeChangesEmptyTheReceiver) {
  Uart u;
  u.out(Serial::kIirFcr, Serial::kFcrEnable);
  u.receive("abc");
  u.out(Serial::kIirFcr, Serial::kFcrEnable | Serial::kFcrClearRx);
  EXPECT_EQ(u.in(Serial::kLsr) & Serial::kLsrDataReady, 0);
  u.receive("abc");
  u.out(Serial::kIirFcr, 0);  // leaving FIFO mode
  EXPECT_EQ(u.in(Serial::kLsr) & Serial::kLsrDataReady, 0);
  EXPECT_EQ(u.in(Serial::kIirFcr) & 0xC0, 0);
}

TEST(Serial, FcrBitsAreIgnoredWithoutTheEnableBit) {
  Uart u;
  u.out(Serial::kIirFcr, 0xC0);  // trigger 14 but FIFO off
  u.out(Serial::kIer, Serial::kIerRxData);
  u.receive("a");
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirRxData);
}

TEST(Serial, LoopbackReflectsMcrInMsr) {
  // Linux's existence check: MCR = LOOP | 0x0A must read MSR & 0xF0 == 0x90.
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrLoop | 0x0A);
  EXPECT_EQ(u.in(Serial::kMsr) & 0xF0, 0x90);
  u.out(Serial::kMcr, Serial::kMcrLoop | 0x0F);
  EXPECT_EQ(u.in(Serial::kMsr) & 0xF0, 0xF0);
  u.out(Serial::kMcr, Serial::kMcrLoop);
  EXPECT_EQ(u.in(Serial::kMsr) & 0xF0, 0x00);
  u.out(Serial::kMcr, 0);
  EXPECT_EQ(u.in(Serial::kMsr) & 0xF0, 0xB0) << "external inputs again";
}

TEST(Serial, ModemStatusDeltaBits) {
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrLoop);  // inputs go from DCD|DSR|CTS to nothing
  EXPECT_EQ(u.in(Serial::kMsr), Serial::kMsrDcts | Serial::kMsrDdsr | Serial::kMsrDdcd);
  EXPECT_EQ(u.in(Serial::kMsr), 0x00) << "reading MSR clears the deltas";
  u.out(Serial::kMcr, Serial::kMcrLoop | Serial::kMcrOut1);  // RI rises: no delta (TERI is trailing edge)
  EXPECT_EQ(u.in(Serial::kMsr), Serial::kMsrRi);
  u.out(Serial::kMcr, Serial::kMcrLoop);  // RI falls
  EXPECT_EQ(u.in(Serial::kMsr), Serial::kMsrTeri);
  u.out(Serial::kMcr, Serial::kMcrLoop | Serial::kMcrRts);
  EXPECT_EQ(u.in(Serial::kMsr), Serial::kMsrCts | Serial::kMsrDcts);
}

TEST(Serial, ModemStatusInterruptIsLowestPriorityAndClearedByMsrRead) {
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrLoop);
  u.in(Serial::kMsr);
  u.out(Serial::kIer, Serial::kIerModemStatus | Serial::kIerThre);
  u.out(Serial::kMcr, Serial::kMcrLoop | Serial::kMcrDtr);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirThre);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirModemStatus);
  u.in(Serial::kMsr);
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirNoInterrupt);
}

TEST(Serial, LoopbackFeedsTheReceiverAndNeverRaisesTheIrq) {
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrLoop | Serial::kMcrOut2);
  u.out(Serial::kIer, 0x0F);
  u.out(Serial::kRbrThr, 'z');
  EXPECT_TRUE(u.output.text().empty()) << "nothing leaves the chip in loopback";
  EXPECT_NE(u.in(Serial::kIirFcr) & Serial::kIirNoInterrupt, Serial::kIirNoInterrupt);
  EXPECT_FALSE(u.irq.level()) << "loopback forces OUT2 inactive, and OUT2 gates the IRQ";
  EXPECT_EQ(u.in(Serial::kRbrThr), 'z');
  EXPECT_EQ(u.irq.rising_edges(), 0u);
  // The serial input is disconnected in loopback.
  EXPECT_EQ(u.serial.rx_room(), 0u);
  EXPECT_EQ(u.receive("q"), 1u);
  EXPECT_EQ(u.in(Serial::kLsr) & Serial::kLsrDataReady, 0);
}

TEST(Serial, Out2GatesTheIrqLine) {
  Uart u;
  u.out(Serial::kIer, Serial::kIerRxData);
  u.receive("a");
  EXPECT_FALSE(u.irq.level()) << "pending, but OUT2 is low";
  u.out(Serial::kMcr, Serial::kMcrOut2);
  EXPECT_TRUE(u.irq.level());
  u.out(Serial::kMcr, 0);
  EXPECT_FALSE(u.irq.level());
  EXPECT_EQ(u.in(Serial::kIirFcr), Serial::kIirRxData) << "identification is independent of OUT2";
}

TEST(Serial, WideAccessesAreSplitIntoBytes) {
  Uart u;
  const std::uint8_t lcr_mcr[2] = {0x03, 0x0B};
  u.serial.write(Serial::kLcr, lcr_mcr);
  EXPECT_EQ(u.in(Serial::kLcr), 0x03);
  EXPECT_EQ(u.in(Serial::kMcr), 0x0B);
  std::uint8_t both[2] = {};
  u.serial.read(Serial::kLcr, both);
  EXPECT_EQ(both[0], 0x03);
  EXPECT_EQ(both[1], 0x0B);
  std::uint8_t past_end[4] = {};
  u.serial.read(6, past_end);  // MSR, SCR, then nothing
  EXPECT_EQ(past_end[1], 0x00);
  EXPECT_EQ(past_end[2], 0xff);
  EXPECT_EQ(past_end[3], 0xff);
}

TEST(Serial, ResetRestoresPowerOnStateAndLowersTheIrq) {
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrOut2);
  u.out(Serial::kIer, 0x0F);
  u.out(Serial::kLcr, 0x1B);
  u.out(Serial::kScr, 0x42);
  u.receive("a");
  ASSERT_TRUE(u.irq.level());
  u.serial.reset();
  EXPECT_FALSE(u.irq.level());
  EXPECT_EQ(u.in(Serial::kIer), 0);
  EXPECT_EQ(u.in(Serial::kLcr), 0);
  EXPECT_EQ(u.in(Serial::kScr), 0);
  EXPECT_EQ(u.in(Serial::kLsr), 0x60);
}

TEST(Serial, LinuxProbeSequenceFinds16550A) {
  // The register dance of Linux's 8250 autoconfig, in order, with the
  // answers a 16550A gives.
  Uart u;
  // Existence: IER scratch test.
  u.out(Serial::kIer, 0);
  ASSERT_EQ(u.in(Serial::kIer) & 0x0F, 0);
  u.out(Serial::kIer, 0x0F);
  ASSERT_EQ(u.in(Serial::kIer) & 0x0F, 0x0F);
  u.out(Serial::kIer, 0);
  // Loopback check.
  const std::uint8_t saved_mcr = u.in(Serial::kMcr);
  u.out(Serial::kMcr, Serial::kMcrLoop | 0x0A);
  ASSERT_EQ(u.in(Serial::kMsr) & 0xF0, 0x90);
  u.out(Serial::kMcr, saved_mcr);
  // EFR probe with LCR=0xBF writes FCR=0 on a 16550A; then FIFO enable.
  u.out(Serial::kLcr, 0xBF);
  u.out(Serial::kIirFcr, 0);
  u.out(Serial::kLcr, 0);
  u.out(Serial::kIirFcr, Serial::kFcrEnable);
  ASSERT_EQ(u.in(Serial::kIirFcr) >> 6, 3) << "16550A: FIFOs work";
  // 16650 check: EFR at offset 2 with LCR=0xBF must not read 0.
  u.out(Serial::kLcr, 0xBF);
  EXPECT_NE(u.in(Serial::kIirFcr), 0);
  // SuperIO check: IIR bit 4 must not follow MCR.LOOP.
  u.out(Serial::kLcr, 0);
  u.out(Serial::kMcr, Serial::kMcrLoop);
  u.out(Serial::kLcr, 0xE0);
  EXPECT_EQ(u.in(Serial::kIirFcr) & 0x30, 0);
  u.out(Serial::kLcr, 0);
  u.out(Serial::kMcr, 0);
  // 16750 check: 64-byte FIFO bit must not show in IIR bit 5.
  u.out(Serial::kLcr, Serial::kLcrDlab);
  u.out(Serial::kIirFcr, Serial::kFcrEnable | 0x20);
  EXPECT_EQ(u.in(Serial::kIirFcr) >> 5, 6);
  u.out(Serial::kLcr, 0);
  // Divisor id probe reads back what was written.
  u.out(Serial::kLcr, Serial::kLcrDlab);
  u.out(Serial::kDll, 0);
  u.out(Serial::kDlm, 0);
  EXPECT_EQ(u.in(Serial::kDll), 0);
  EXPECT_EQ(u.in(Serial::kDlm), 0);
  u.out(Serial::kLcr, 0x03);
  EXPECT_NE(u.in(Serial::kLsr), 0xFF) << "LSR safety check";
}

TEST(Serial, LinuxStyleInterruptDrivenTransmit) {
  // start_tx sets ETBEI; the handler writes up to 16 bytes per THRE
  // interrupt and clears ETBEI when it has nothing left.
  Uart u;
  u.out(Serial::kMcr, Serial::kMcrOut2 | Serial::kMcrDtr | Serial::kMcrRts);
  u.out(Serial::kIirFcr, 0xC7);
  const std::string message = "The quick brown fox jumps over the lazy dog, twice over.";
  std::size_t next = 0;
  u.out(Serial::kIer, Serial::kIerRxData | Serial::kIerThre);
  int interrupts = 0;
  while (u.irq.level() && interrupts < 100) {
    ++interrupts;
    const std::uint8_t iir = u.in(Serial::kIirFcr);
    ASSERT_EQ(iir & 0x0F, Serial::kIirThre);
    if (next == message.size()) {
      u.out(Serial::kIer, Serial::kIerRxData);  // stop_tx
      continue;
    }
    for (int i = 0; i < 16 && next < message.size(); ++i) {
      u.out(Serial::kRbrThr, static_cast<std::uint8_t>(message[next++]));
    }
  }
  EXPECT_EQ(u.output.text(), message);
  EXPECT_EQ(interrupts, 5);  // 4 batches of 16 + the final "nothing left"
  EXPECT_FALSE(u.irq.level());
}

TEST(Serial, ConcurrentReceiveAndReadKeepOrderWithoutOverrun) {
  Uart u;
  u.out(Serial::kIirFcr, Serial::kFcrEnable);
  constexpr int kBytes = 20000;
  std::atomic<bool> lost{false};
  std::thread producer([&] {
    for (int sent = 0; sent < kBytes && !lost;) {
      if (u.serial.rx_room() == 0) {
        std::this_thread::yield();
        continue;
      }
      const std::uint8_t byte = static_cast<std::uint8_t>(sent);
      if (u.serial.receive(std::span<const std::uint8_t>(&byte, 1)) != 0) lost = true;
      ++sent;
    }
  });
  int received = 0;
  bool in_order = true;
  bool overrun = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (received < kBytes && !lost && std::chrono::steady_clock::now() < deadline) {
    const std::uint8_t lsr = u.in(Serial::kLsr);
    overrun = overrun || (lsr & Serial::kLsrOverrun);
    if (!(lsr & Serial::kLsrDataReady)) continue;
    in_order = in_order && u.in(Serial::kRbrThr) == static_cast<std::uint8_t>(received);
    ++received;
  }
  lost = true;  // stops the producer if the reader gave up early
  producer.join();
  EXPECT_EQ(received, kBytes);
  EXPECT_TRUE(in_order);
  EXPECT_FALSE(overrun);
}

// ---- FdOutput -----------------------------------------------------------

struct Pipe {
  int read_end = -1;
  int write_end = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    read_end = fds[0];
    write_end = fds[1];
  }
  ~Pipe() {
    if (read_end >= 0) ::close(read_end);
    if (write_end >= 0) ::close(write_end);
  }
  std::string drain() {
    std::string out;
    const int flags = ::fcntl(read_end, F_GETFL);
    ::fcntl(read_end, F_SETFL, flags | O_NONBLOCK);
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(read_end, buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<std::size_t>(n));
    ::fcntl(read_end, F_SETFL, flags);
    return out;
  }
};

std::span<const std::uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

TEST(FdOutput, WritesEverythingToAReadablePipe) {
  Pipe pipe;
  auto output = FdOutput::borrow(pipe.write_end);
  output->write(as_bytes("hello "));
  output->write(as_bytes("world"));
  EXPECT_EQ(pipe.drain(), "hello world");
  EXPECT_EQ(output->bytes_written(), 11u);
  EXPECT_EQ(output->bytes_dropped(), 0u);
  EXPECT_FALSE(output->stuck());
}

TEST(FdOutput, DropsAndCountsWhenTheReaderIsStuckInsteadOfBlocking) {
  Pipe pipe;
  const int capacity = ::fcntl(pipe.write_end, F_SETPIPE_SZ, 4096);
  ASSERT_GT(capacity, 0);
  const std::string fill(static_cast<std::size_t>(capacity), 'f');
  ASSERT_EQ(::write(pipe.write_end, fill.data(), fill.size()), capacity);  // now full

  auto output = FdOutput::borrow(pipe.write_end, std::chrono::milliseconds(50));
  const auto start = std::chrono::steady_clock::now();
  output->write(as_bytes(std::string(100, 'x')));
  const auto first = std::chrono::steady_clock::now() - start;
  EXPECT_GE(first, std::chrono::milliseconds(40));
  EXPECT_LT(first, std::chrono::seconds(2));
  EXPECT_EQ(output->bytes_dropped(), 100u);
  EXPECT_TRUE(output->stuck());

  // Once stuck, a write costs no stall at all.
  const auto again = std::chrono::steady_clock::now();
  output->write(as_bytes(std::string(100, 'y')));
  EXPECT_LT(std::chrono::steady_clock::now() - again, std::chrono::milliseconds(30));
  EXPECT_EQ(output->bytes_dropped(), 200u);

  // When the reader catches up, output resumes.
  EXPECT_EQ(pipe.drain(), fill);
  output->write(as_bytes("ok"));
  EXPECT_EQ(pipe.drain(), "ok");
  EXPECT_FALSE(output->stuck());
  EXPECT_EQ(output->bytes_written(), 2u);
}

TEST(FdOutput, NonBlockingFdWorksTheSame) {
  Pipe pipe;
  ::fcntl(pipe.write_end, F_SETFL, O_NONBLOCK);
  const int capacity = ::fcntl(pipe.write_end, F_SETPIPE_SZ, 4096);
  auto output = FdOutput::borrow(pipe.write_end, std::chrono::milliseconds(20));
  output->write(as_bytes(std::string(static_cast<std::size_t>(capacity) + 10, 'z')));
  EXPECT_EQ(output->bytes_written(), static_cast<std::uint64_t>(capacity));
  EXPECT_EQ(output->bytes_dropped(), 10u);
}

TEST(FdOutput, ClosedReaderDropsWithoutDying) {
  Pipe pipe;
  ::close(pipe.read_end);
  pipe.read_end = -1;
  auto output = FdOutput::borrow(pipe.write_end, std::chrono::milliseconds(20));
  output->write(as_bytes("gone"));
  EXPECT_EQ(output->bytes_dropped(), 4u);
}

TEST(FdOutput, FileOutputAndOpenFailure) {
  const auto path = std::filesystem::temp_directory_path() / ("serial_test_" + std::to_string(::getpid()));
  {
    auto output = FdOutput::open_file(path.string());
    output->write(as_bytes("to a file"));
  }
  std::string content(64, '\0');
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const ssize_t n = ::read(fd, content.data(), content.size());
  ::close(fd);
  content.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  EXPECT_EQ(content, "to a file");
  std::filesystem::remove(path);
  EXPECT_THROW(FdOutput::open_file("/nonexistent-dir/serial.log"), vmm::Error);
  EXPECT_THROW(FdOutput::borrow(-1), vmm::Error);
}

// --serial file:PATH is opened the way a careful daemon opens a log: never
// through a symbolic link, only a regular file of its own, mode 0600, and
// never more than a size limit.

std::string file_content(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

void expect_open_error(const std::string& path, const std::string& fragment) {
  try {
    FdOutput::open_file(path);
    ADD_FAILURE() << "opened " << path << "; expected an error containing '" << fragment << "'";
  } catch (const vmm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "the message names the file: " << e.what();
  }
}

TEST(FdOutput, FileIsNeverOpenedThroughASymbolicLink) {
  vmm::testing::TempDir dir;
  const std::string target = dir.file("precious");
  dir.write("precious", "keep me");
  const std::string link = dir.file("serial.log");
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  expect_open_error(link, "symbolic link");
  EXPECT_EQ(file_content(target), "keep me") << "the link's target was truncated";
}

TEST(FdOutput, FileThatIsAFifoIsRefusedWithoutHanging) {
  vmm::testing::TempDir dir;
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto opened = std::async(std::launch::async, [&] { expect_open_error(fifo, "not a regular file"); });
  if (opened.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    // Release the open stuck waiting for a reader, then fail.
    const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    opened.wait();
    if (reader >= 0) ::close(reader);
    FAIL() << "opening a FIFO with no reader hung";
  }
  opened.get();
  // With a reader waiting it would open at once: still not a log file.
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  expect_open_error(fifo, "not a regular file");
  ::close(reader);
}

TEST(FdOutput, FileThatIsNotARegularFileIsRefused) {
  vmm::testing::TempDir dir;
  expect_open_error(dir.path(), "directory");
  expect_open_error("/dev/null", "not a regular file");
}

TEST(FdOutput, FileWithOtherHardLinksIsRefused) {
  vmm::testing::TempDir dir;
  const std::string other = dir.file("other");
  dir.write("other", "keep me");
  const std::string log = dir.file("serial.log");
  ASSERT_EQ(::link(other.c_str(), log.c_str()), 0);
  expect_open_error(log, "hard link");
  EXPECT_EQ(file_content(other), "keep me");
}

TEST(FdOutput, FileIsCreatedAndKeptPrivate) {
  vmm::testing::TempDir dir;
  const std::string log = dir.file("serial.log");
  const mode_t old_umask = ::umask(0);  // the mode must not depend on the caller's umask
  {
    auto output = FdOutput::open_file(log);
    output->write(as_bytes("secret"));
  }
  ::umask(old_umask);
  struct stat st {};
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(file_content(log), "secret");

  // An existing file of ours: truncated, and made private if it was not.
  ASSERT_EQ(::chmod(log.c_str(), 0644), 0);
  FdOutput::open_file(log)->write(as_bytes("new"));
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(file_content(log), "new");
}

TEST(FdOutput, FileStopsGrowingAtItsLimit) {
  vmm::testing::TempDir dir;
  const std::string log = dir.file("serial.log");
  auto output = FdOutput::open_file(log, 100);
  output->write(as_bytes(std::string(60, 'a')));
  output->write(as_bytes(std::string(60, 'b')));
  output->write(as_bytes(std::string(60, 'c')));
  EXPECT_EQ(output->bytes_written(), 100u);
  EXPECT_EQ(output->bytes_dropped(), 80u);
  EXPECT_EQ(file_content(log), std::string(60, 'a') + std::string(40, 'b'));
}

TEST(Serial, WorksWithNullOutput) {
  FakeIrqLine irq;
  NullOutput null;
  Serial serial(irq, null);
  const std::uint8_t byte = 'n';
  serial.write(Serial::kRbrThr, std::span<const std::uint8_t>(&byte, 1));
  std::uint8_t lsr = 0;
  serial.read(Serial::kLsr, std::span<std::uint8_t>(&lsr, 1));
  EXPECT_EQ(lsr, 0x60);
}

}  // namespace
}  // namespace vmm::devices
