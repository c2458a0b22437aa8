// PCI INTA# wiring: each slot reaches its IOAPIC pin and its 8259 input, and
// slots sharing an output hold it asserted together (wired-OR), so one
// device's deassertion never hides another's pending interrupt.
#include "devices/pci/intx_router.h"

#include <gtest/gtest.h>

#include "devices/error.h"
#include "devices/hpet.h"
#include "tests/devices/fakes.h"

namespace vmm::devices::pci {
namespace {

using testing::FakeIoApicPins;
using testing::FakeIrqLine;

// IRQs 10 and 11 are on the slave 8259 (inputs 2 and 3).
constexpr std::uint8_t slave_bit(unsigned irq) { return static_cast<std::uint8_t>(1u << (irq - 8)); }

struct Board {
  Board() : pic(intr), isa(pic, ioapic.lookup()), router(isa, ioapic.lookup()) {
    testing::init_pic(pic);
    // What Linux's acpi_register_gsi_pic does for a level-triggered PCI IRQ.
    testing::write_port(pic.elcr(), 1, slave_bit(10) | slave_bit(11));
  }
  bool pic_requests(unsigned irq) const { return (pic.chip_state(true).irr & slave_bit(irq)) != 0; }

  FakeIrqLine intr;
  Pic pic;
  FakeIoApicPins ioapic;
  IsaIrqRouter isa;
  IntxRouter router;
};

TEST(PciIntxRouter, WiringMatchesWhatTheDsdtAnnounces) {
  EXPECT_EQ(IntxRouter::ioapic_pin_for(1), 17u);
  EXPECT_EQ(IntxRouter::ioapic_pin_for(4), 16u);
  EXPECT_EQ(IntxRouter::ioapic_pin_for(31), 19u);
  EXPECT_EQ(IntxRouter::pic_irq_for(1), 10u);
  EXPECT_EQ(IntxRouter::pic_irq_for(2), 11u);
  for (unsigned slot = 1; slot < PciRoot::kSlots; ++slot) {
    EXPECT_EQ((Hpet::kRouteCap >> IntxRouter::ioapic_pin_for(slot)) & 1, 0u) << "slot " << slot
                                                                                << " shares a pin with the HPET";
  }
}

TEST(PciIntxRouter, EachSlotReachesItsIoApicPinAndItsPicInput) {
  Board board;
  for (unsigned slot = 1; slot < PciRoot::kSlots; ++slot) {
    SCOPED_TRACE(slot);
    const unsigned pin = IntxRouter::ioapic_pin_for(slot), irq = IntxRouter::pic_irq_for(slot);
    board.router.line(slot).set_level(true);
    EXPECT_TRUE(board.ioapic.pins[pin].level());
    EXPECT_TRUE(board.pic_requests(irq));
    EXPECT_TRUE(board.ioapic.pins[irq].level()) << "the ISA line reaches its own IOAPIC pin too";
    board.router.line(slot).set_level(false);
    EXPECT_FALSE(board.ioapic.pins[pin].level());
    EXPECT_FALSE(board.pic_requests(irq)) << "level-triggered: IRR follows the line";
  }
}

TEST(PciIntxRouter, ASharedOutputStaysAssertedWhileAnySlotHoldsIt) {
  Board board;
  // Slots 1 and 5 share IOAPIC pin 17 and IRQ 10.
  ASSERT_EQ(IntxRouter::ioapic_pin_for(1), IntxRouter::ioapic_pin_for(5));
  ASSERT_EQ(IntxRouter::pic_irq_for(1), IntxRouter::pic_irq_for(5));
  const unsigned pin = IntxRouter::ioapic_pin_for(1);
  board.router.line(1).set_level(true);
  board.router.line(5).set_level(true);
  board.router.line(1).set_level(false);
  EXPECT_TRUE(board.ioapic.pins[pin].level()) << "slot 5 still holds the pin";
  EXPECT_TRUE(board.pic_requests(10)) << "slot 5 still holds IRQ 10";
  board.router.line(5).set_level(false);
  EXPECT_FALSE(board.ioapic.pins[pin].level());
  EXPECT_FALSE(board.pic_requests(10));
  EXPECT_EQ(board.ioapic.pins[pin].rising_edges(), 1u) << "one assertion seen, not two";
}

TEST(PciIntxRouter, ARepeatedLevelIsNotASecondHolder) {
  Board board;
  const unsigned pin = IntxRouter::ioapic_pin_for(3);
  board.router.line(3).set_level(true);
  board.router.line(3).set_level(true);
  board.router.line(3).set_level(false);
  EXPECT_FALSE(board.ioapic.pins[pin].level());
  EXPECT_FALSE(board.pic_requests(IntxRouter::pic_irq_for(3)));
  board.router.line(3).set_level(false);
  board.router.line(7).set_level(true);
  EXPECT_TRUE(board.ioapic.pins[pin].level()) << "a repeated deassertion released nothing it did not hold";
}

TEST(PciIntxRouter, TheHostBridgeAndSlotsOffTheBusHaveNoLine) {
  Board board;
  EXPECT_THROW(board.router.line(0), vmm::Error);
  EXPECT_THROW(board.router.line(PciRoot::kSlots), vmm::Error);
}

}  // namespace
}  // namespace vmm::devices::pci
