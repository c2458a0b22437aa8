// The 8259A pair against the datasheet: initialisation as Linux and a PC
// BIOS send it, priority resolution and nesting, every OCW2 command,
// automatic EOI, cascade acknowledge and special fully nested mode, ELCR
// edge/level semantics, spurious IRQ 7 and 15, OCW3 reads, poll and special
// mask modes, the INT output, and random input.
#include "devices/pic.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "tests/devices/fakes.h"

namespace vmm::devices {
namespace {

using testing::FakeIrqLine;

class PicTest : public ::testing::Test {
 protected:
  FakeIrqLine intr;
  Pic pic{intr};

  BusDevice& device_for(unsigned port, std::uint64_t& offset) {
    if (port >= 0x4D0) {
      offset = port - 0x4D0;
      return pic.elcr();
    }
    offset = port & 1;
    return port >= 0xA0 ? pic.slave() : pic.master();
  }
  void out(unsigned port, std::uint8_t value) {
    std::uint64_t offset = 0;
    device_for(port, offset).write(offset, std::span<const std::uint8_t>(&value, 1));
  }
  std::uint8_t in(unsigned port) {
    std::uint64_t offset = 0;
    std::uint8_t value = 0;
    device_for(port, offset).read(offset, std::span<std::uint8_t>(&value, 1));
    return value;
  }

  // arch/x86/kernel/i8259.c init_8259A(), then the cached masks.
  void linux_init(bool auto_eoi = false) {
    out(0x21, 0xFF);
    out(0xA1, 0xFF);
    out(0x20, 0x11);  // ICW1: edge, cascade, ICW4 follows
    out(0x21, 0x30);  // ICW2: vectors 0x30-0x37
    out(0x21, 0x04);  // ICW3: slave on IR2
    out(0x21, auto_eoi ? 0x03 : 0x01);
    out(0xA0, 0x11);
    out(0xA1, 0x38);
    out(0xA1, 0x02);  // ICW3: slave identity 2
    out(0xA1, 0x01);
    out(0x21, 0xFB);  // everything masked except the cascade
    out(0xA1, 0xFF);
  }
  // What a PC BIOS (SeaBIOS pic_setup) sends: real-mode vectors.
  void bios_init() {
    out(0x20, 0x11);
    out(0x21, 0x08);
    out(0x21, 0x04);
    out(0x21, 0x01);
    out(0xA0, 0x11);
    out(0xA1, 0x70);
    out(0xA1, 0x02);
    out(0xA1, 0x01);
    out(0x21, 0xFB);
    out(0xA1, 0xFF);
  }
  void unmask(unsigned irq) {
    const unsigned port = irq < 8 ? 0x21 : 0xA1;
    out(port, static_cast<std::uint8_t>(in(port) & ~(1u << (irq & 7))));
  }
  void pulse(unsigned irq) {
    pic.set_irq(irq, true);
    pic.set_irq(irq, false);
  }
  // Linux's mask_and_ack_8259A: specific EOIs, slave first.
  void eoi(unsigned irq) {
    if (irq >= 8) {
      out(0xA0, static_cast<std::uint8_t>(0x60 + (irq & 7)));
      out(0x20, 0x62);
    } else {
      out(0x20, static_cast<std::uint8_t>(0x60 + irq));
    }
  }
  std::uint8_t isr(bool slave) {
    const unsigned port = slave ? 0xA0 : 0x20;
    out(port, 0x0B);
    const std::uint8_t value = in(port);
    out(port, 0x0A);
    return value;
  }
  std::uint8_t irr(bool slave) {
    const unsigned port = slave ? 0xA0 : 0x20;
    out(port, 0x0A);
    return in(port);
  }
};

// ------------------------------------------------------------ initialisation

TEST_F(PicTest, PowerOnMasksEverythingUntilTheGuestProgramsIt) {
  EXPECT_EQ(in(0x21), 0xFF);
  EXPECT_EQ(in(0xA1), 0xFF);
  EXPECT_EQ(in(0x4D0), 0);
  EXPECT_EQ(in(0x4D1), 0);
  pic.set_irq(1, true);
  pic.set_irq(12, true);
  EXPECT_FALSE(pic.interrupt_pending());
  EXPECT_EQ(intr.history().size(), 0u);
  EXPECT_EQ(pic.chip_state(false).vector_base, Pic::kPowerOnMasterBase);
  EXPECT_EQ(pic.chip_state(true).vector_base, Pic::kPowerOnSlaveBase);
}

TEST_F(PicTest, LinuxInitSequenceAndProbe) {
  linux_init();
  EXPECT_FALSE(pic.chip_state(false).initializing);
  EXPECT_FALSE(pic.chip_state(true).initializing);
  EXPECT_EQ(pic.chip_state(false).vector_base, 0x30);
  EXPECT_EQ(pic.chip_state(true).vector_base, 0x38);
  // probe_8259A(): the mask written reads back, or there is no PIC.
  out(0x21, 0xFB);
  EXPECT_EQ(in(0x21), 0xFB);
  unmask(1);
  pulse(1);
  EXPECT_TRUE(pic.interrupt_pending());
  EXPECT_TRUE(intr.level());
  EXPECT_EQ(pic.acknowledge(), 0x31);
  EXPECT_FALSE(pic.interrupt_pending());
  EXPECT_EQ(isr(false), 0x02);
  eoi(1);
  EXPECT_EQ(isr(false), 0x00);
}

TEST_F(PicTest, BiosInitSequenceGivesRealModeVectorsThroughTheCascade) {
  bios_init();
  unmask(0);
  unmask(8);
  pulse(0);
  EXPECT_EQ(pic.acknowledge(), 0x08);
  eoi(0);
  pulse(8);
  EXPECT_TRUE(pic.interrupt_pending());
  EXPECT_EQ(pic.acknowledge(), 0x70);
  EXPECT_EQ(isr(false), 0x04);
  EXPECT_EQ(isr(true), 0x01);
  eoi(8);
  EXPECT_EQ(isr(false), 0);
  EXPECT_EQ(isr(true), 0);
}

TEST_F(PicTest, SingleModeSkipsIcw3) {
  out(0x20, 0x13);  // ICW1: single, ICW4 follows
  out(0x21, 0x40);
  out(0x21, 0x01);  // this is ICW4, not ICW3
  EXPECT_FALSE(pic.chip_state(false).initializing);
  out(0x21, 0xFE);  // OCW1
  EXPECT_EQ(in(0x21), 0xFE);
  pulse(0);
  EXPECT_EQ(pic.acknowledge(), 0x40);
  out(0x20, 0x12);  // single, no ICW4: ICW2 ends the sequence
  out(0x21, 0x50);
  EXPECT_FALSE(pic.chip_state(false).initializing);
  out(0x21, 0x5A);
  EXPECT_EQ(in(0x21), 0x5A);
}

TEST_F(PicTest, Icw1ResetsEdgeSenseSoAHighLineMustRiseAgain) {
  linux_init();
  unmask(4);
  pic.set_irq(4, true);  // stays high
  EXPECT_TRUE(pic.interrupt_pending());
  linux_init();
  unmask(4);
  EXPECT_FALSE(pic.interrupt_pending()) << "ICW1 clears the edge latch; the line did not rise again";
  pic.set_irq(4, true);
  EXPECT_FALSE(pic.interrupt_pending()) << "still high: no new edge";
  pic.set_irq(4, false);
  pic.set_irq(4, true);
  EXPECT_TRUE(pic.interrupt_pending());
}

TEST_F(PicTest, Icw1ClearsInServiceAndMaskAndRestoresDefaultPriority) {
  linux_init();
  unmask(3);
  pulse(3);
  EXPECT_EQ(pic.acknowledge(), 0x33);
  out(0x20, 0xC0 | 5);  // IRQ 5 lowest: 6, 7, 0 .. 5
  out(0x20, 0x0B);      // reads select ISR
  out(0x20, 0x11);
  EXPECT_EQ(in(0x21), 0x00) << "ICW1 clears the IMR";
  out(0x21, 0x30);
  out(0x21, 0x04);
  out(0x21, 0x01);
  pulse(7);
  EXPECT_EQ(in(0x20), 0x80) << "reads select IRR again after ICW1";
  EXPECT_EQ(isr(false), 0) << "and nothing is in service";
  pulse(4);
  EXPECT_EQ(pic.acknowledge(), 0x34) << "IR0 highest .. IR7 lowest again";
}

// ------------------------------------------------------------ priorities

TEST_F(PicTest, FixedPrioritiesAndNesting) {
  linux_init();
  out(0x21, 0x00);
  pulse(5);
  pulse(3);
  pulse(1);
  EXPECT_EQ(pic.acknowledge(), 0x31);
  EXPECT_FALSE(pic.interrupt_pending()) << "IRQ 3 and 5 wait behind IRQ 1 in service";
  pulse(0);
  EXPECT_TRUE(pic.interrupt_pending()) << "a higher priority nests";
  EXPECT_EQ(pic.acknowledge(), 0x30);
  EXPECT_EQ(isr(false), 0x03);
  out(0x20, 0x20);  // non-specific EOI: the highest in service (IRQ 0)
  EXPECT_EQ(isr(false), 0x02);
  EXPECT_FALSE(pic.interrupt_pending());
  out(0x20, 0x20);
  EXPECT_EQ(pic.acknowledge(), 0x33);
  out(0x20, 0x20);
  EXPECT_EQ(pic.acknowledge(), 0x35);
  out(0x20, 0x20);
  EXPECT_FALSE(pic.interrupt_pending());
  EXPECT_EQ(isr(false), 0);
}

TEST_F(PicTest, SpecificEoiClearsOnlyTheNamedLevel) {
  linux_init();
  out(0x21, 0x00);
  pulse(6);
  EXPECT_EQ(pic.acknowledge(), 0x36);
  pulse(2 + 1);
  EXPECT_EQ(pic.acknowledge(), 0x33);
  out(0x20, 0x66);  // specific EOI for IRQ 6, although 3 is higher
  EXPECT_EQ(isr(false), 0x08);
  out(0x20, 0x65);  // IRQ 5 is not in service: nothing happens
  EXPECT_EQ(isr(false), 0x08);
  out(0x20, 0x40);  // OCW2 no-op
  EXPECT_EQ(isr(false), 0x08);
}

TEST_F(PicTest, RotateOnNonSpecificEoiMakesTheServedLevelLowest) {
  linux_init();
  out(0x21, 0x00);
  pulse(1);
  EXPECT_EQ(pic.acknowledge(), 0x31);
  out(0x20, 0xA0);  // rotate on non-specific EOI: IRQ 1 becomes lowest
  pulse(0);
  pulse(5);
  EXPECT_EQ(pic.acknowledge(), 0x35) << "priority now 2,3,4,5,6,7,0,1";
  out(0x20, 0x20);
  EXPECT_EQ(pic.acknowledge(), 0x30);
}

TEST_F(PicTest, RotateOnSpecificEoiAndSetPriority) {
  linux_init();
  out(0x21, 0x00);
  pulse(3);
  EXPECT_EQ(pic.acknowledge(), 0x33);
  out(0x20, 0xE3);  // rotate on specific EOI 3: IRQ 4 highest
  EXPECT_EQ(isr(false), 0);
  pulse(1);
  pulse(4);
  EXPECT_EQ(pic.acknowledge(), 0x34) << "order is 4..7, 0..3";
  out(0x20, 0x20);
  EXPECT_EQ(pic.acknowledge(), 0x31);
  out(0x20, 0x20);
  out(0x20, 0xC0 | 6);  // set priority: IRQ 6 lowest, IRQ 7 highest
  pulse(0);
  pulse(7);
  EXPECT_EQ(pic.acknowledge(), 0x37);
}

// ------------------------------------------------------------ automatic EOI

TEST_F(PicTest, AutoEoiLeavesNothingInService) {
  linux_init(/*auto_eoi=*/true);
  EXPECT_TRUE(pic.chip_state(false).auto_eoi);
  out(0x21, 0x00);
  pulse(1);
  pulse(4);
  EXPECT_EQ(pic.acknowledge(), 0x31);
  EXPECT_EQ(isr(false), 0);
  EXPECT_TRUE(pic.interrupt_pending()) << "no EOI needed for the next one";
  EXPECT_EQ(pic.acknowledge(), 0x34);
  EXPECT_FALSE(pic.interrupt_pending());
}

TEST_F(PicTest, RotateInAutoEoiMode) {
  linux_init(/*auto_eoi=*/true);
  out(0x21, 0x00);
  out(0x20, 0x80);  // set rotate in automatic EOI mode
  pulse(1);
  pulse(4);
  EXPECT_EQ(pic.acknowledge(), 0x31);  // IRQ 1 becomes the lowest
  pulse(0);
  EXPECT_EQ(pic.acknowledge(), 0x34) << "order is now 2..7, 0, 1";
  EXPECT_EQ(pic.acknowledge(), 0x30);  // IRQ 0 lowest: 1 is highest
  out(0x20, 0x00);  // clear rotate in automatic EOI mode
  pulse(1);
  pulse(6);
  EXPECT_EQ(pic.acknowledge(), 0x31);
  EXPECT_EQ(pic.acknowledge(), 0x36);
  pulse(0);
  pulse(3);
  EXPECT_EQ(pic.acknowledge(), 0x33) << "serving 1 did not rotate any more";
}

// ------------------------------------------------------------ cascade

TEST_F(PicTest, CascadeAcknowledgeReturnsTheSlaveVector) {
  linux_init();
  unmask(12);
  pulse(12);
  EXPECT_TRUE(pic.interrupt_pending());
  EXPECT_EQ(irr(false) & 0x04, 0x04) << "the master's IR2 latched the slave's INT";
  EXPECT_EQ(pic.acknowledge(), 0x3C);
  EXPECT_EQ(isr(false), 0x04);
  EXPECT_EQ(isr(true), 0x10);
  EXPECT_EQ(irr(true), 0);
  EXPECT_EQ(irr(false), 0);
  EXPECT_FALSE(pic.interrupt_pending());
  eoi(12);
  EXPECT_EQ(isr(false), 0);
  EXPECT_EQ(isr(true), 0);
}

TEST_F(PicTest, HigherSlaveRequestNestsOnlyInSpecialFullyNestedMode) {
  for (const bool sfnm : {false, true}) {
    SCOPED_TRACE(sfnm ? "special fully nested" : "fully nested");
    linux_init();
    if (sfnm) {
      out(0x20, 0x11);
      out(0x21, 0x30);
      out(0x21, 0x04);
      out(0x21, 0x11);  // ICW4: 8086, SFNM
      out(0x21, 0xFB);
    }
    out(0x21, 0x00);
    out(0xA1, 0x00);
    pulse(12);
    EXPECT_EQ(pic.acknowledge(), 0x3C);
    pulse(9);  // slave IR1: higher than IR4 in service on the slave
    EXPECT_EQ(pic.interrupt_pending(), sfnm);
    pulse(3);  // a lower master level than the cascade stays blocked either way
    if (sfnm) {
      EXPECT_EQ(pic.acknowledge(), 0x39);
      EXPECT_EQ(isr(true), 0x12);
      out(0xA0, 0x20);  // non-specific EOI on the slave: IR1
      EXPECT_EQ(isr(true), 0x10);
      EXPECT_FALSE(pic.interrupt_pending()) << "IRQ 3 is below the cascade level in service";
    }
    eoi(12);
    if (!sfnm) {
      EXPECT_EQ(pic.acknowledge(), 0x39);
      eoi(9);
    }
    EXPECT_EQ(pic.acknowledge(), 0x33);
    eoi(3);
    EXPECT_FALSE(pic.interrupt_pending());
  }
}

// ------------------------------------------------------------ ELCR

TEST_F(PicTest, ElcrReservedBitsReadZero) {
  out(0x4D0, 0xFF);
  out(0x4D1, 0xFF);
  EXPECT_EQ(in(0x4D0), Pic::kMasterElcrMask);
  EXPECT_EQ(in(0x4D1), Pic::kSlaveElcrMask);
  const std::uint8_t word[2] = {0x07, 0x21};
  pic.elcr().write(0, word);
  EXPECT_EQ(in(0x4D0), 0x00) << "IRQ 0-2 cannot be level-triggered";
  EXPECT_EQ(in(0x4D1), 0x00) << "nor IRQ 8 and 13";
  std::uint8_t wide[4] = {};
  pic.elcr().read(0, wide);
  EXPECT_EQ(wide[2], 0xFF);
}

TEST_F(PicTest, LevelTriggeredRequestFollowsTheLineAndReassertsAfterEoi) {
  linux_init();
  out(0x4D1, 0x02);  // IRQ 9 (ACPI SCI) level-triggered
  unmask(9);
  pic.set_irq(9, true);
  EXPECT_EQ(pic.acknowledge(), 0x39);
  EXPECT_EQ(irr(true) & 0x02, 0x02) << "a level request stays in IRR while the line is high";
  eoi(9);
  EXPECT_TRUE(pic.interrupt_pending()) << "still asserted after EOI: delivered again";
  EXPECT_EQ(pic.acknowledge(), 0x39);
  pic.set_irq(9, false);  // the handler cleared the source
  eoi(9);
  EXPECT_FALSE(pic.interrupt_pending());
  EXPECT_EQ(irr(true), 0);
}

TEST_F(PicTest, EdgeTriggeredRequestIsLatchedOnceAndConsumedByAcknowledge) {
  linux_init();
  unmask(4);
  pic.set_irq(4, true);
  EXPECT_EQ(pic.acknowledge(), 0x34);
  eoi(4);
  EXPECT_FALSE(pic.interrupt_pending()) << "a line held high is one edge";
  pic.set_irq(4, true);
  EXPECT_FALSE(pic.interrupt_pending()) << "repeating the level is not an edge";
  pic.set_irq(4, false);
  EXPECT_FALSE(pic.interrupt_pending());
  pic.set_irq(4, true);
  EXPECT_TRUE(pic.interrupt_pending());
  pic.set_irq(4, false);
  EXPECT_TRUE(pic.interrupt_pending()) << "the latch outlives a short pulse";
}

TEST_F(PicTest, SwitchingAnInputToLevelTakesTheLineAsIs) {
  linux_init();
  unmask(10);
  pic.set_irq(10, true);
  EXPECT_EQ(pic.acknowledge(), 0x3A);
  eoi(10);
  EXPECT_FALSE(pic.interrupt_pending());
  out(0x4D1, 0x04);  // IRQ 10 level: the line is high
  EXPECT_TRUE(pic.interrupt_pending());
  EXPECT_EQ(pic.acknowledge(), 0x3A);
  pic.set_irq(10, false);
  eoi(10);
  EXPECT_FALSE(pic.interrupt_pending());
}

// ------------------------------------------------------------ spurious

TEST_F(PicTest, VanishedMasterRequestGivesSpuriousIrq7) {
  linux_init();
  out(0x4D0, 0x20);  // IRQ 5 level
  unmask(5);
  pic.set_irq(5, true);
  EXPECT_TRUE(pic.interrupt_pending());
  pic.set_irq(5, false);  // gone before the INTA cycle
  EXPECT_EQ(pic.acknowledge(), 0x37);
  EXPECT_EQ(isr(false), 0) << "a spurious IRQ 7 sets no ISR bit";
  EXPECT_EQ(pic.spurious_count(), 1u);
  // A request masked after the VMM saw INT: spurious too, and it stays pending.
  unmask(3);
  pulse(3);
  out(0x21, 0xFF);
  EXPECT_EQ(pic.acknowledge(), 0x37);
  EXPECT_EQ(irr(false) & 0x08, 0x08);
  EXPECT_EQ(pic.spurious_count(), 2u);
}

TEST_F(PicTest, VanishedSlaveRequestGivesSpuriousIrq15AndMasterInService) {
  linux_init();
  out(0x4D1, 0x08);  // IRQ 11 level
  unmask(11);
  pic.set_irq(11, true);
  pic.set_irq(11, false);
  EXPECT_TRUE(pic.interrupt_pending()) << "the master latched the cascade edge";
  EXPECT_EQ(pic.acknowledge(), 0x3F);
  EXPECT_EQ(isr(false), 0x04) << "the master did acknowledge IR2 ...";
  EXPECT_EQ(isr(true), 0) << "... the slave had nothing";
  out(0x20, 0x62);  // Linux EOIs the master for a spurious IRQ 15
  EXPECT_EQ(isr(false), 0);
  EXPECT_FALSE(pic.interrupt_pending());
}

// ------------------------------------------------------------ OCW3

TEST_F(PicTest, Ocw3SelectsIrrOrIsrAndDataPortReadsImr) {
  linux_init();
  out(0x21, 0x00);
  pulse(6);
  pulse(2 + 3);
  EXPECT_EQ(pic.acknowledge(), 0x35);
  out(0x20, 0x0A);
  EXPECT_EQ(in(0x20), 0x40);
  EXPECT_EQ(in(0x20), 0x40) << "the selection persists";
  out(0x20, 0x0B);
  EXPECT_EQ(in(0x20), 0x20);
  out(0x20, 0x08);  // OCW3 without RR: selection unchanged
  EXPECT_EQ(in(0x20), 0x20);
  EXPECT_EQ(in(0x21), 0x00);
  out(0x21, 0xA5);
  EXPECT_EQ(in(0x21), 0xA5);
}

TEST_F(PicTest, PollModeAcknowledgesOnTheNextRead) {
  linux_init();
  out(0x21, 0x00);
  out(0xA1, 0x00);
  pulse(6);
  out(0x20, 0x0C);  // poll
  EXPECT_EQ(in(0x20), 0x86);
  EXPECT_EQ(isr(false), 0x40);
  EXPECT_EQ(in(0x21), 0x00) << "poll is one-shot";
  out(0x20, 0x66);
  out(0x21, 0x80);
  out(0x20, 0x0C);
  EXPECT_EQ(in(0x21), 0x00) << "a poll read at A0=1 too; no request: I bit clear";
  EXPECT_EQ(in(0x21), 0x80);
  pulse(13);
  out(0x20, 0x0C);
  EXPECT_EQ(in(0x20), 0x82) << "the master reports the cascade level";
  out(0xA0, 0x0C);
  EXPECT_EQ(in(0xA0), 0x85);
  EXPECT_EQ(isr(true), 0x20);
  EXPECT_EQ(isr(false), 0x04);
}

TEST_F(PicTest, SpecialMaskModeLetsLowerLevelsThroughAMaskedInServiceLevel) {
  linux_init();
  out(0x21, 0x00);
  pulse(3);
  EXPECT_EQ(pic.acknowledge(), 0x33);
  pulse(5);
  EXPECT_FALSE(pic.interrupt_pending());
  out(0x20, 0x68);  // set special mask mode
  EXPECT_TRUE(pic.chip_state(false).special_mask);
  EXPECT_FALSE(pic.interrupt_pending()) << "IRQ 3 is not masked yet";
  out(0x21, 0x08);  // mask IRQ 3, which is in service
  EXPECT_TRUE(pic.interrupt_pending());
  EXPECT_EQ(pic.acknowledge(), 0x35);
  out(0x20, 0x65);
  out(0x20, 0x48);  // reset special mask mode
  EXPECT_FALSE(pic.chip_state(false).special_mask);
  out(0x20, 0x63);
  EXPECT_EQ(isr(false), 0);
}

// ------------------------------------------------------------ INT output, access

TEST_F(PicTest, IntOutputIsDrivenOnlyOnChanges) {
  linux_init();
  out(0x21, 0x00);
  pulse(1);
  pulse(1);
  pulse(4);
  EXPECT_EQ(intr.history(), std::vector<bool>{true});
  EXPECT_EQ(pic.acknowledge(), 0x31);
  EXPECT_EQ(intr.history(), (std::vector<bool>{true, false}));
  eoi(1);
  EXPECT_EQ(intr.history(), (std::vector<bool>{true, false, true}));
}

TEST_F(PicTest, WideAccessesAreByteSequences) {
  linux_init();
  out(0x21, 0x00);
  pulse(2 + 5);
  EXPECT_EQ(pic.acknowledge(), 0x37);
  const std::uint8_t eoi_and_mask[2] = {0x20, 0x5A};  // out dx, ax at 0x20
  pic.master().write(0, eoi_and_mask);
  EXPECT_EQ(isr(false), 0);
  EXPECT_EQ(in(0x21), 0x5A);
  std::uint8_t four[4] = {};
  pic.master().read(0, four);
  EXPECT_EQ(four[1], 0x5A);
  EXPECT_EQ(four[2], 0xFF);
  EXPECT_EQ(four[3], 0xFF);
  const std::uint8_t beyond = 0x00;
  pic.master().write(2, std::span<const std::uint8_t>(&beyond, 1));
  EXPECT_EQ(in(0x21), 0x5A);
}

TEST_F(PicTest, ResetReturnsToPowerOnAndKeepsLineLevels) {
  linux_init();
  out(0x4D1, 0x02);
  pic.set_irq(9, true);
  unmask(9);
  EXPECT_TRUE(pic.interrupt_pending());
  pic.reset();
  EXPECT_FALSE(pic.interrupt_pending());
  EXPECT_EQ(in(0x4D1), 0);
  EXPECT_EQ(in(0xA1), 0xFF);
  linux_init();
  out(0x4D1, 0x02);  // level again: the line is still high
  unmask(9);
  EXPECT_TRUE(pic.interrupt_pending());
  EXPECT_EQ(pic.acknowledge(), 0x39);
}

TEST_F(PicTest, OutOfRangeAndCascadeInputsAreIgnored) {
  linux_init();
  out(0x21, 0x00);
  pic.set_irq(2, true);
  pic.set_irq(16, true);
  pic.set_irq(1000, true);
  EXPECT_FALSE(pic.interrupt_pending());
}

// ------------------------------------------------------------ bad input

TEST(PicFuzz, RandomAccessesKeepVectorsSaneAndLogsBounded) {
  testing::LogCapture logs;
  FakeIrqLine intr;
  Pic pic(intr);
  std::mt19937_64 rng(0x8259);
  constexpr std::array<std::size_t, 4> kWidths = {1, 2, 4, 8};
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 200'000; ++i) {
    BusDevice* targets[] = {&pic.master(), &pic.slave(), &pic.elcr()};
    BusDevice& target = *targets[rng() % 3];
    std::array<std::uint8_t, 8> buffer{};
    const std::span<std::uint8_t> data(buffer.data(), kWidths[rng() % kWidths.size()]);
    std::uint64_t offset = rng() % 4;
    if (rng() % 50 == 0) offset = rng();
    if (rng() % 2) {
      for (auto& byte : data) byte = static_cast<std::uint8_t>(rng());
      target.write(offset, data);
    } else {
      target.read(offset, data);
    }
    pic.set_irq(static_cast<unsigned>(rng() % 18), rng() % 2);
    if (rng() % 4 == 0) {
      const bool pending = pic.interrupt_pending();
      const auto master = pic.chip_state(false);
      const auto slave = pic.chip_state(true);
      const std::uint8_t vector = pic.acknowledge();
      const auto base = static_cast<std::uint8_t>(vector & 0xF8);
      ASSERT_TRUE(base == master.vector_base || base == slave.vector_base) << int{vector};
      if (!pending) {
        ASSERT_EQ(vector, master.vector_base | 7) << "nothing pending: spurious IRQ 7";
      }
    }
    ASSERT_EQ(pic.interrupt_pending(), intr.level()) << "the INT line mirrors the state";
  }
  const auto windows =
      1 + std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start).count() / 5;
  EXPECT_LE(logs.lines(), 1 + 10 * static_cast<std::size_t>(windows + 1)) << "one rate-limited call site";
}

TEST(PicThreads, ConcurrentLinesAcknowledgesAndRegisterAccesses) {
  FakeIrqLine intr;
  Pic pic(intr);
  {
    const std::uint8_t init[][2] = {{0, 0x11}, {1, 0x30}, {1, 0x04}, {1, 0x01}, {1, 0x00}};
    for (const auto& w : init) pic.master().write(w[0], std::span<const std::uint8_t>(&w[1], 1));
    const std::uint8_t slave_init[][2] = {{0, 0x11}, {1, 0x38}, {1, 0x02}, {1, 0x01}, {1, 0x00}};
    for (const auto& w : slave_init) pic.slave().write(w[0], std::span<const std::uint8_t>(&w[1], 1));
  }
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> delivered{0};
  std::vector<std::thread> devices;
  for (unsigned t = 0; t < 3; ++t) {
    devices.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      while (!stop) {
        const unsigned irq = static_cast<unsigned>(rng() % 16);
        pic.set_irq(irq, true);
        pic.set_irq(irq, false);
      }
    });
  }
  std::thread vcpu([&] {
    while (!stop) {
      if (!pic.interrupt_pending()) continue;
      const std::uint8_t vector = pic.acknowledge();
      ++delivered;
      const std::uint8_t eoi = 0x20;
      if (vector >= 0x38) pic.slave().write(0, std::span<const std::uint8_t>(&eoi, 1));
      pic.master().write(0, std::span<const std::uint8_t>(&eoi, 1));
    }
  });
  std::thread guest([&] {
    std::mt19937_64 rng(99);
    while (!stop) {
      std::uint8_t v = 0;
      pic.elcr().write(0, std::span<const std::uint8_t>(&v, 1));
      pic.master().read(rng() % 2, std::span<std::uint8_t>(&v, 1));
      (void)pic.chip_state(rng() % 2);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  for (auto& t : devices) t.join();
  vcpu.join();
  guest.join();
  EXPECT_GT(delivered.load(), 0u);
  EXPECT_EQ(pic.interrupt_pending(), intr.level());
}

}  // namespace
}  // namespace vmm::devices
