// INTA# of the slots on PCI bus 0, wired the way a PC chipset's PIRQ links
// wire them: each slot's line reaches one IOAPIC pin and one ISA IRQ of the
// 8259 pair, and slots that share either output are ORed onto it (PCI INTx
// is a shared, level-triggered, wired-OR signal).
//
//   slot s   IOAPIC pin             8259 input (ISA IRQ)
//            16 + s mod 4           10 for odd s, 11 for even s
//
// Which one the guest sees depends on the interrupt model it picks: the
// DSDT's _PRT answers with the IOAPIC pin once the OS has called
// \_PIC(1) (APIC mode) and with the ISA IRQ before that or after \_PIC(0)
// (PIC mode, e.g. Linux with `noapic`). Driving both is harmless: a guest
// in APIC mode masks the 8259 and a guest in PIC mode leaves the IOAPIC
// masked. Pins 16-19 carry nothing else (the HPET routes to 20-23); IRQs 10
// and 11 are free on this platform, and in PIC mode the guest sets them
// level-triggered in the ELCR.
//
// The ISA IRQ goes through the IsaIrqRouter's line, so it also reaches
// IOAPIC pin 10 or 11, which no table assigns to anything: a guest in APIC
// mode never unmasks them.
//
// Lock order: the driving device's lock -> this router -> ISA line / IOAPIC
// pin -> PIC / IOAPIC. Nothing calls back.
#pragma once

#include <array>
#include <mutex>

#include "devices/interrupts.h"
#include "devices/isa_irq.h"
#include "devices/pci/pci_root.h"

namespace vmm::devices::pci {

class IntxRouter {
 public:
  static constexpr unsigned kIoApicPinBase = 16;
  static constexpr unsigned kIoApicPins = 4;
  static constexpr std::array<unsigned, 2> kPicIrqs = {10, 11};

  static constexpr unsigned ioapic_pin_for(unsigned slot) noexcept { return kIoApicPinBase + slot % kIoApicPins; }
  static constexpr unsigned pic_irq_for(unsigned slot) noexcept { return kPicIrqs[pic_index(slot)]; }

  // Looks up the IOAPIC pins once, here; `isa` and the pins must outlive
  // the router. Throws what `ioapic_pins` or `isa` throw (a wiring bug).
  IntxRouter(IsaIrqRouter& isa, const IsaIrqRouter::IoApicPins& ioapic_pins);
  IntxRouter(const IntxRouter&) = delete;
  IntxRouter& operator=(const IntxRouter&) = delete;

  // INTA# of `slot` (1 to PciRoot::kSlots - 1; slot 0 is the host bridge,
  // which raises none). Throws vmm::Error otherwise (a wiring bug).
  IrqLine& line(unsigned slot);

 private:
  static constexpr unsigned pic_index(unsigned slot) noexcept { return slot % 2 == 1 ? 0 : 1; }

  class SlotLine final : public IrqLine {
   public:
    void set_level(bool asserted) noexcept override;

    IntxRouter* router = nullptr;
    unsigned slot = 0;
    bool level = false;  // guarded by router->mu_
  };

  // One wired-OR output: driven asserted while any of its slots is.
  struct SharedOutput {
    IrqLine* line = nullptr;
    unsigned asserted = 0;  // slots holding it; guarded by mu_
    void add(bool assert) noexcept;
  };

  std::mutex mu_;
  std::array<SlotLine, PciRoot::kSlots> slots_;
  std::array<SharedOutput, kIoApicPins> ioapic_outputs_;
  std::array<SharedOutput, kPicIrqs.size()> pic_outputs_;
};

}  // namespace vmm::devices::pci
