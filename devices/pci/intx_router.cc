#include "devices/pci/intx_router.h"

#include <string>

#include "devices/error.h"

namespace vmm::devices::pci {

IntxRouter::IntxRouter(IsaIrqRouter& isa, const IsaIrqRouter::IoApicPins& ioapic_pins) {
  for (unsigned n = 0; n < kIoApicPins; ++n) ioapic_outputs_[n].line = &ioapic_pins(kIoApicPinBase + n);
  for (unsigned n = 0; n < kPicIrqs.size(); ++n) pic_outputs_[n].line = &isa.line(kPicIrqs[n]);
  for (unsigned slot = 0; slot < slots_.size(); ++slot) {
    slots_[slot].router = this;
    slots_[slot].slot = slot;
  }
}

IrqLine& IntxRouter::line(unsigned slot) {
  if (slot == 0 || slot >= slots_.size()) {
    throw Error("PCI slot " + std::to_string(slot) + " has no INTx line (slots 1-" +
                std::to_string(slots_.size() - 1) + ")");
  }
  return slots_[slot];
}

void IntxRouter::SharedOutput::add(bool assert) noexcept {
  if (assert) {
    if (asserted++ == 0) line->set_level(true);
  } else if (--asserted == 0) {
    line->set_level(false);
  }
}

void IntxRouter::SlotLine::set_level(bool asserted) noexcept {
  std::lock_guard lock(router->mu_);
  // Counting needs each slot to change state once per edge: a repeated
  // level is not a second holder of the output.
  if (asserted == level) return;
  level = asserted;
  router->ioapic_outputs_[slot % kIoApicPins].add(asserted);
  router->pic_outputs_[pic_index(slot)].add(asserted);
}

}  // namespace vmm::devices::pci
