#include "devices/isa_irq.h"

#include <string>

#include "devices/error.h"

namespace vmm::devices {

IsaIrqRouter::IsaIrqRouter(Pic& pic, const IoApicPins& ioapic_pins) : pic_(pic) {
  for (unsigned irq = 0; irq < kIrqs; ++irq) {
    Line& line = lines_[irq];
    line.router = this;
    line.irq = irq;
    const unsigned pin = ioapic_pin_for(irq);
    if (pin != kNoPin && ioapic_pins) line.ioapic_pin = &ioapic_pins(pin);
  }
}

IrqLine& IsaIrqRouter::line(unsigned irq) {
  if (irq >= kIrqs) throw Error("ISA IRQ " + std::to_string(irq) + " does not exist (0-15)");
  return lines_[irq];
}

bool IsaIrqRouter::level(unsigned irq) const noexcept {
  return irq < kIrqs && lines_[irq].level.load(std::memory_order_acquire);
}

void IsaIrqRouter::Line::set_level(bool asserted) noexcept {
  if (irq == Pic::kCascadeIrq) return;  // nothing is wired to ISA IRQ 2
  std::lock_guard lock(mu);
  level.store(asserted, std::memory_order_release);
  router->pic_.set_irq(irq, asserted);
  if (ioapic_pin != nullptr) ioapic_pin->set_level(asserted);
}

}  // namespace vmm::devices
