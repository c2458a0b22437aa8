// i8042 controller and keyboard: the command sequences Linux's i8042, atkbd
// and psmouse drivers send, and the reboot paths.
#include "devices/i8042.h"

#include <vector>

#include <gtest/gtest.h>

#include "tests/devices/fakes.h"

namespace vmm::devices {
namespace {

using testing::FakeIrqLine;

struct Controller {
  FakeIrqLine kbd_irq;
  FakeIrqLine aux_irq;
  int resets = 0;
  I8042 i8042{kbd_irq, aux_irq, [this] { ++resets; }};

  std::uint8_t status() {
    std::uint8_t byte = 0;
    i8042.command_port().read(0, std::span<std::uint8_t>(&byte, 1));
    return byte;
  }
  std::uint8_t data() {
    std::uint8_t byte = 0;
    i8042.data_port().read(0, std::span<std::uint8_t>(&byte, 1));
    return byte;
  }
  void command(std::uint8_t value) { i8042.command_port().write(0, std::span<const std::uint8_t>(&value, 1)); }
  void write_data(std::uint8_t value) { i8042.data_port().write(0, std::span<const std::uint8_t>(&value, 1)); }
  // Reads everything the controller has to say, as a polling driver would.
  std::vector<std::uint8_t> drain() {
    std::vector<std::uint8_t> out;
    for (int i = 0; i < 64 && (status() & I8042::kStatusOutputFull); ++i) out.push_back(data());
    return out;
  }
  std::uint8_t ctr() {
    command(0x20);
    EXPECT_TRUE(status() & I8042::kStatusOutputFull);
    return data();
  }
  void set_ctr(std::uint8_t value) {
    command(0x60);
    write_data(value);
  }
};

using Bytes = std::vector<std::uint8_t>;

TEST(I8042, PowerOnState) {
  Controller c;
  const std::uint8_t status = c.status();
  EXPECT_EQ(status & I8042::kStatusOutputFull, 0);
  EXPECT_EQ(status & I8042::kStatusInputFull, 0);
  EXPECT_NE(status & I8042::kStatusNotInhibited, 0);
  EXPECT_EQ(c.ctr(), I8042::kCtrKeyboardInt | I8042::kCtrSystemFlag);
  EXPECT_FALSE(c.kbd_irq.level());
  EXPECT_FALSE(c.aux_irq.level());
}

TEST(I8042, SelfTestAndInterfaceTests) {
  Controller c;
  c.command(0xAA);
  EXPECT_EQ(c.drain(), Bytes{0x55});
  c.command(0xAB);
  EXPECT_EQ(c.drain(), Bytes{0x00});
  c.command(0xA9);
  EXPECT_EQ(c.drain(), Bytes{0x00});
  EXPECT_NE(c.status() & I8042::kStatusSystemFlag, 0);
}

TEST(I8042, CommandByteReadWriteAndCommandStatusBit) {
  Controller c;
  c.command(0x60);
  EXPECT_NE(c.status() & I8042::kStatusCommand, 0) << "A2 records that the last write was a command";
  c.write_data(0x47);
  EXPECT_EQ(c.status() & I8042::kStatusCommand, 0);
  EXPECT_EQ(c.ctr(), 0x47);
  // The other RAM bytes are plain storage.
  c.command(0x65);
  c.write_data(0x99);
  c.command(0x25);
  EXPECT_EQ(c.drain(), Bytes{0x99});
}

TEST(I8042, DisableAndEnableCommandsFlipCtrBits) {
  Controller c;
  c.command(0xAD);
  EXPECT_NE(c.ctr() & I8042::kCtrKeyboardDisabled, 0);
  c.command(0xAE);
  EXPECT_EQ(c.ctr() & I8042::kCtrKeyboardDisabled, 0);
  c.command(0xA7);
  EXPECT_NE(c.ctr() & I8042::kCtrAuxDisabled, 0);
  c.command(0xA8);
  EXPECT_EQ(c.ctr() & I8042::kCtrAuxDisabled, 0);
}

TEST(I8042, ReplyRaisesIrq1OnlyWithKeyboardInterruptEnabled) {
  Controller c;
  c.command(0xAA);
  EXPECT_TRUE(c.kbd_irq.level());
  EXPECT_EQ(c.data(), 0x55);
  EXPECT_FALSE(c.kbd_irq.level());
  c.set_ctr(I8042::kCtrSystemFlag);  // interrupts off
  c.kbd_irq.clear();
  c.command(0xAA);
  EXPECT_NE(c.status() & I8042::kStatusOutputFull, 0);
  EXPECT_FALSE(c.kbd_irq.level());
  EXPECT_EQ(c.kbd_irq.rising_edges(), 0u);
}

TEST(I8042, KeyboardResetAnswersAckThenBatWithAnEdgePerByte) {
  Controller c;
  c.write_data(0xFF);
  EXPECT_TRUE(c.kbd_irq.level());
  EXPECT_EQ(c.data(), I8042::kAck);
  EXPECT_TRUE(c.kbd_irq.level()) << "the next byte is already in the buffer";
  EXPECT_EQ(c.data(), I8042::kSelfTestPassed);
  EXPECT_FALSE(c.kbd_irq.level());
  EXPECT_EQ(c.kbd_irq.rising_edges(), 2u) << "edge-triggered IRQ1 needs one edge per byte";
}

TEST(I8042, IdentifyAndOtherAtkbdCommands) {
  Controller c;
  c.write_data(0xF2);
  EXPECT_EQ(c.drain(), (Bytes{0xFA, 0xAB, 0x83}));
  c.write_data(0xF5);
  EXPECT_EQ(c.drain(), Bytes{0xFA});
  c.write_data(0xED);  // LEDs
  EXPECT_EQ(c.drain(), Bytes{0xFA});
  c.write_data(0x07);
  EXPECT_EQ(c.drain(), Bytes{0xFA});
  c.write_data(0xF3);  // typematic
  c.write_data(0x20);
  EXPECT_EQ(c.drain(), (Bytes{0xFA, 0xFA}));
  c.write_data(0xF0);  // get scan-code set
  c.write_data(0x00);
  EXPECT_EQ(c.drain(), (Bytes{0xFA, 0xFA, 0x02}));
  c.write_data(0xF0);  // set 1, then read it back
  c.write_data(0x01);
  c.write_data(0xF0);
  c.write_data(0x00);
  EXPECT_EQ(c.drain(), (Bytes{0xFA, 0xFA, 0xFA, 0xFA, 0x01}));
  c.write_data(0xF4);
  EXPECT_EQ(c.drain(), Bytes{0xFA});
  c.write_data(0xEE);
  EXPECT_EQ(c.drain(), Bytes{0xEE});
  c.write_data(0x42);  // not a keyboard command
  EXPECT_EQ(c.drain(), Bytes{0xFE});
  c.write_data(0xEE);
  c.write_data(0xFE);  // resend repeats the last byte sent
  EXPECT_EQ(c.drain(), (Bytes{0xEE, 0xEE}));
}

TEST(I8042, KeyboardRepliesWaitWhileTheInterfaceIsDisabled) {
  Controller c;
  c.command(0xAD);
  c.write_data(0xF4);
  EXPECT_EQ(c.status() & I8042::kStatusOutputFull, 0);
  EXPECT_FALSE(c.kbd_irq.level());
  c.command(0xAE);
  EXPECT_EQ(c.drain(), Bytes{0xFA});
}

TEST(I8042, ControllerRepliesGoAheadOfQueuedKeyboardBytes) {
  Controller c;
  c.write_data(0xF2);  // three keyboard bytes queued, first one in the buffer
  EXPECT_EQ(c.data(), 0xFA);
  c.command(0x20);  // the CTR comes before the rest of the keyboard's answer
  EXPECT_EQ(c.drain(), (Bytes{0xAB, I8042::kCtrKeyboardInt | I8042::kCtrSystemFlag, 0x83}));
}

TEST(I8042, KeyboardQueueIsBounded) {
  Controller c;
  c.command(0xAD);
  for (int i = 0; i < 1000; ++i) c.write_data(0xF2);
  c.command(0xAE);
  EXPECT_EQ(c.drain().size(), 16u);
}

TEST(I8042, OutputPortReadAndWrite) {
  Controller c;
  c.command(0xD0);
  EXPECT_EQ(c.drain(), Bytes{I8042::kOutPortResetDeasserted | I8042::kOutPortA20});
  c.command(0xD1);
  c.write_data(0x01);  // A20 off, reset stays deasserted
  EXPECT_EQ(c.resets, 0);
  c.command(0xD0);
  EXPECT_EQ(c.drain(), Bytes{0x01});
  c.command(0xDF);
  c.command(0xD0);
  EXPECT_EQ(c.drain(), Bytes{0x03});
}

TEST(I8042, OutputPortWriteWithBitZeroClearResetsTheCpu) {
  Controller c;
  c.command(0xD1);
  c.write_data(0xFE);
  EXPECT_EQ(c.resets, 1);
  EXPECT_EQ(c.i8042.reset_requests(), 1u);
}

TEST(I8042, PulseCommand0xFEResetsTheCpu) {
  Controller c;
  c.command(0xFF);  // pulses nothing
  EXPECT_EQ(c.resets, 0);
  c.command(0xFE);
  EXPECT_EQ(c.resets, 1);
  c.command(0xF0);  // bit 0 clear: also pulses reset
  EXPECT_EQ(c.resets, 2);
  c.command(0xF1);
  EXPECT_EQ(c.resets, 2);
}

TEST(I8042, LinuxRebootLoopSeesInputBufferEmptyAndResets) {
  // native_machine_emergency_restart, BOOT_KBD: wait for IBF clear, write
  // 0xFE to 0x64, ten times.
  Controller c;
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(c.status() & I8042::kStatusInputFull, 0);
    c.command(0xFE);
  }
  EXPECT_EQ(c.resets, 10);
}

TEST(I8042, WriteKeyboardAndAuxOutputBuffer) {
  Controller c;
  c.set_ctr(I8042::kCtrKeyboardInt | I8042::kCtrAuxInt | I8042::kCtrSystemFlag);
  c.command(0xD2);
  c.write_data(0x1C);
  EXPECT_TRUE(c.kbd_irq.level());
  EXPECT_EQ(c.status() & I8042::kStatusAuxData, 0);
  EXPECT_EQ(c.data(), 0x1C);
  c.command(0xD3);
  c.write_data(0x5A);
  EXPECT_TRUE(c.aux_irq.level());
  EXPECT_FALSE(c.kbd_irq.level());
  EXPECT_NE(c.status() & I8042::kStatusAuxData, 0);
  EXPECT_EQ(c.data(), 0x5A);
  EXPECT_FALSE(c.aux_irq.level());
}

TEST(I8042, AuxDeviceIsAbsent) {
  Controller c;
  c.command(0xD4);
  c.write_data(0xF2);  // identify, to a mouse that is not there
  const std::uint8_t status = c.status();
  EXPECT_NE(status & I8042::kStatusAuxData, 0);
  EXPECT_NE(status & I8042::kStatusTimeout, 0);
  EXPECT_EQ(c.data(), 0xFE);
  EXPECT_EQ(c.status() & I8042::kStatusTimeout, 0);
}

TEST(I8042, LinuxProbeSequence) {
  Controller c;
  // i8042_controller_check: flush must end.
  EXPECT_LT(c.drain().size(), 16u);
  // i8042_controller_selftest
  c.command(0xAA);
  ASSERT_EQ(c.drain(), Bytes{0x55});
  // i8042_controller_init: two equal CTR reads, then write it back with
  // the keyboard disabled.
  const std::uint8_t ctr = c.ctr();
  ASSERT_EQ(c.ctr(), ctr);
  c.set_ctr(static_cast<std::uint8_t>((ctr | I8042::kCtrKeyboardDisabled) & ~I8042::kCtrKeyboardInt));
  // i8042_check_aux: loop test answers from the AUX side...
  c.command(0xD3);
  c.write_data(0x5A);
  ASSERT_NE(c.status() & I8042::kStatusAuxData, 0);
  ASSERT_EQ(c.data(), 0x5A);
  // ...the AUXDIS bit follows A7/A8...
  c.command(0xA7);
  ASSERT_NE(c.ctr() & I8042::kCtrAuxDisabled, 0);
  c.command(0xA8);
  ASSERT_EQ(c.ctr() & I8042::kCtrAuxDisabled, 0);
  // ...and IRQ12 arrives for a loop byte once AUX interrupts are on.
  c.set_ctr(static_cast<std::uint8_t>((c.ctr() | I8042::kCtrAuxInt) & ~I8042::kCtrAuxDisabled));
  c.command(0xD3);
  c.write_data(0xA5);
  EXPECT_TRUE(c.aux_irq.level());
  EXPECT_EQ(c.data(), 0xA5);
  // i8042_enable_kbd_port, then atkbd probing.
  c.set_ctr(static_cast<std::uint8_t>((c.ctr() & ~I8042::kCtrKeyboardDisabled) | I8042::kCtrKeyboardInt));
  c.write_data(0xF2);
  EXPECT_EQ(c.drain(), (Bytes{0xFA, 0xAB, 0x83}));
  // psmouse probing gets a timeout right away.
  c.command(0xD4);
  c.write_data(0xFF);
  EXPECT_NE(c.status() & I8042::kStatusTimeout, 0);
  EXPECT_EQ(c.drain(), Bytes{0xFE});
  EXPECT_EQ(c.resets, 0);
}

TEST(I8042, ANewCommandAbandonsAPendingParameter) {
  Controller c;
  c.command(0x60);
  c.command(0xAA);  // the CTR write is abandoned
  c.write_data(0xF4);  // so this goes to the keyboard
  EXPECT_EQ(c.drain(), (Bytes{0x55, 0xFA}));
  EXPECT_EQ(c.ctr(), I8042::kCtrKeyboardInt | I8042::kCtrSystemFlag);
}

TEST(I8042, OddAccessesAreHarmless) {
  Controller c;
  std::uint8_t wide[4] = {0, 0, 0, 0};
  c.i8042.command_port().read(0, wide);
  EXPECT_EQ(wide[1], 0xff);
  EXPECT_EQ(wide[3], 0xff);
  std::uint8_t byte = 0;
  c.i8042.data_port().read(1, std::span<std::uint8_t>(&byte, 1));
  EXPECT_EQ(byte, 0xff);
  const std::uint8_t reset = 0xFE;
  c.i8042.command_port().write(3, std::span<const std::uint8_t>(&reset, 1));
  EXPECT_EQ(c.resets, 0) << "only offset 0 is the port";
  c.i8042.command_port().write(0, std::span<const std::uint8_t>());
  EXPECT_EQ(c.resets, 0);
}

TEST(I8042, ResetRestoresPowerOnState) {
  Controller c;
  c.set_ctr(0x47);
  c.write_data(0xF2);
  ASSERT_TRUE(c.status() & I8042::kStatusOutputFull);
  c.i8042.reset();
  EXPECT_FALSE(c.kbd_irq.level());
  EXPECT_EQ(c.status() & I8042::kStatusOutputFull, 0);
  EXPECT_EQ(c.ctr(), I8042::kCtrKeyboardInt | I8042::kCtrSystemFlag);
}

}  // namespace
}  // namespace vmm::devices
