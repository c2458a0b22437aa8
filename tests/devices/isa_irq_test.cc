// The ISA interrupt router: each line reaches PIC input n and the IOAPIC pin
// the MADT announces (IRQ 0 -> pin 2, IRQ 2 nowhere, others identity), and
// the whole path from the PIT to both controllers.
#include "devices/isa_irq.h"

#include <gtest/gtest.h>

#include <array>
#include <thread>
#include <vector>

#include "devices/error.h"
#include "devices/ioapic.h"
#include "devices/pit.h"
#include "tests/devices/fakes.h"

namespace vmm::devices {
namespace {

using testing::FakeIrqLine;
using testing::FakeMsiSink;

using testing::FakeIoApicPins;
using testing::init_pic;
using testing::write_port;

TEST(IsaIrqRouter, PinMappingMatchesTheMadt) {
  EXPECT_EQ(IsaIrqRouter::ioapic_pin_for(0), 2u);
  EXPECT_EQ(IsaIrqRouter::ioapic_pin_for(1), 1u);
  EXPECT_EQ(IsaIrqRouter::ioapic_pin_for(2), IsaIrqRouter::kNoPin);
  for (unsigned irq = 3; irq < 16; ++irq) EXPECT_EQ(IsaIrqRouter::ioapic_pin_for(irq), irq);
  EXPECT_EQ(IsaIrqRouter::ioapic_pin_for(16), IsaIrqRouter::kNoPin);
}

TEST(IsaIrqRouter, EveryLineReachesThePicAndItsIoApicPin) {
  FakeIrqLine intr;
  Pic pic(intr);
  init_pic(pic);
  FakeIoApicPins ioapic;
  IsaIrqRouter router(pic, ioapic.lookup());
  EXPECT_EQ(ioapic.looked_up.size(), 15u) << "every IRQ but 2 has a pin, looked up once";
  for (unsigned irq = 0; irq < 16; ++irq) {
    if (irq == 2) continue;
    SCOPED_TRACE(irq);
    router.line(irq).set_level(true);
    EXPECT_TRUE(router.level(irq));
    const unsigned pin = IsaIrqRouter::ioapic_pin_for(irq);
    EXPECT_TRUE(ioapic.pins[pin].level());
    const auto state = pic.chip_state(irq >= 8);
    EXPECT_EQ(state.irr & (1u << (irq & 7)), 1u << (irq & 7)) << "PIC input latched";
    router.line(irq).set_level(false);
    EXPECT_FALSE(ioapic.pins[pin].level());
    EXPECT_FALSE(router.level(irq));
  }
  EXPECT_EQ(ioapic.pins[0].history().size(), 0u) << "pin 0 (ExtINT) is not driven";
}

TEST(IsaIrqRouter, Irq2DrivesNothing) {
  FakeIrqLine intr;
  Pic pic(intr);
  init_pic(pic);
  FakeIoApicPins ioapic;
  IsaIrqRouter router(pic, ioapic.lookup());
  router.line(2).set_level(true);
  EXPECT_FALSE(router.level(2));
  EXPECT_EQ(ioapic.pins[2].history().size(), 0u) << "pin 2 belongs to IRQ 0";
  EXPECT_FALSE(pic.interrupt_pending());
}

TEST(IsaIrqRouter, NonexistentLinesAreAWiringError) {
  FakeIrqLine intr;
  Pic pic(intr);
  FakeIoApicPins ioapic;
  IsaIrqRouter router(pic, ioapic.lookup());
  EXPECT_THROW(router.line(16), vmm::Error);
  EXPECT_FALSE(router.level(16));
}

TEST(IsaIrqRouter, WorksWithTheProjectIoApic) {
  FakeMsiSink msi;
  IoApic ioapic(msi);
  FakeIrqLine intr;
  Pic pic(intr);
  init_pic(pic);
  IsaIrqRouter router(pic, [&](unsigned pin) -> IrqLine& { return ioapic.pin(pin); });

  // Redirection entry for pin 2: vector 0x40, fixed, edge, unmasked, to APIC 0.
  const auto write32 = [&](std::uint64_t offset, std::uint32_t value) {
    std::uint8_t bytes[4];
    store_le(bytes, value);
    ioapic.write(offset, bytes);
  };
  write32(IoApic::kRegisterSelect, IoApic::kRegRedirectionBase + 2 * 2);
  write32(IoApic::kWindow, 0x40);
  write32(IoApic::kRegisterSelect, IoApic::kRegRedirectionBase + 2 * 2 + 1);
  write32(IoApic::kWindow, 0);

  timers::ManualClock clock;
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  Pit pit(system, system.loop(0), router.line(0));
  write_port(pit, 3, 0x34);
  write_port(pit, 0, 0xA9);
  write_port(pit, 0, 0x04);  // 1193: a 1 ms tick
  clock.set(pit.irq_deadline());
  EXPECT_EQ(system.loop(0).run_due(), 1u);
  ASSERT_EQ(msi.count(), 1u) << "IRQ 0 arrived on IOAPIC pin 2";
  EXPECT_EQ(msi.last().value_or(MsiMessage{}).data & 0xFF, 0x40u);
  EXPECT_TRUE(pic.interrupt_pending()) << "and on PIC input 0";
  EXPECT_EQ(pic.acknowledge(), 0x30);
  clock.set(pit.irq_deadline());
  EXPECT_EQ(system.loop(0).run_due(), 1u);
  EXPECT_EQ(msi.count(), 2u) << "edge-triggered: one MSI per period";
  EXPECT_FALSE(pic.interrupt_pending()) << "IRQ 0 still in service on the PIC";
}

TEST(IsaIrqRouter, ConcurrentDriversKeepBothControllersInStep) {
  FakeIrqLine intr;
  Pic pic(intr);
  init_pic(pic);
  FakeIoApicPins ioapic;
  IsaIrqRouter router(pic, ioapic.lookup());
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 4; ++t) {
    threads.emplace_back([&router, t] {
      for (int i = 0; i < 20'000; ++i) router.line(3 + t).set_level(i % 2 == 0);
    });
  }
  for (auto& t : threads) t.join();
  for (unsigned irq = 3; irq < 7; ++irq) {
    EXPECT_FALSE(router.level(irq));
    EXPECT_FALSE(ioapic.pins[irq].level());
  }
}

}  // namespace
}  // namespace vmm::devices
