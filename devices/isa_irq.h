// The sixteen ISA interrupt lines of a PC, each wired to both interrupt
// controllers: PIC input n, and the IOAPIC input the firmware tables
// announce for it. Devices take `router.line(n)` as their IrqLine.
//
// Wiring (matches the MADT the loader builds: one interrupt source override,
// ISA IRQ 0 -> GSI 2, everything else identity-mapped):
//
//   ISA IRQ   PIC input          IOAPIC pin
//   0         master IR0         2   (the PIT; pin 0 would be the 8259's INTR)
//   1, 3-7    master IR1, IR3-7  same number
//   2         (none)             (none)
//   8-15      slave IR0-7        same number
//
// IRQ 2 drives nothing: on the PIC it is the slave's cascade input, and its
// IOAPIC pin carries IRQ 0. The 8259's INTR output is not connected to
// IOAPIC pin 0 (ExtINT) either: the VMM injects the PIC's interrupts into
// vCPU 0 directly (see pic.h), so pin 0 stays unused.
//
// Each line remembers its level and forwards every change to both
// controllers under a per-line mutex, so the PIC and the IOAPIC always see
// the same sequence of levels. A line is meant to have one driver. Edge
// devices pulse the line (IrqLine::pulse), which both controllers latch as a
// rising edge. Lock order: the driving device's lock -> line -> PIC / IOAPIC;
// neither controller calls back into a device.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>

#include "devices/interrupts.h"
#include "devices/pic.h"

namespace vmm::devices {

class IsaIrqRouter {
 public:
  static constexpr unsigned kIrqs = 16;
  static constexpr unsigned kNoPin = ~0u;

  // The IOAPIC input of an ISA IRQ, or kNoPin.
  static constexpr unsigned ioapic_pin_for(unsigned irq) noexcept {
    if (irq == 0) return 2;
    if (irq == Pic::kCascadeIrq || irq >= kIrqs) return kNoPin;
    return irq;
  }

  // Returns the IOAPIC's input line `pin`; with the project's IoApic:
  //   [&](unsigned pin) -> IrqLine& { return ioapic.pin(pin); }
  using IoApicPins = std::function<IrqLine&(unsigned pin)>;

  // Looks up every IOAPIC pin once, here. `pic` and the pins must outlive
  // the router. Throws what `ioapic_pins` throws (a wiring bug).
  IsaIrqRouter(Pic& pic, const IoApicPins& ioapic_pins);
  IsaIrqRouter(const IsaIrqRouter&) = delete;
  IsaIrqRouter& operator=(const IsaIrqRouter&) = delete;

  // ISA IRQ line `irq` (0-15). Throws vmm::Error for irq >= 16 (a wiring bug).
  IrqLine& line(unsigned irq);

  // The level last driven on `irq`; false for irq >= 16.
  bool level(unsigned irq) const noexcept;

 private:
  class Line final : public IrqLine {
   public:
    void set_level(bool asserted) noexcept override;

    IsaIrqRouter* router = nullptr;
    unsigned irq = 0;
    IrqLine* ioapic_pin = nullptr;
    std::mutex mu;
    std::atomic<bool> level{false};
  };

  Pic& pic_;
  std::array<Line, kIrqs> lines_;
};

}  // namespace vmm::devices
