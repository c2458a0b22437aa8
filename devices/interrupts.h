// How devices raise interrupts, without knowing what delivers them.
//
// Timer and legacy devices drive IrqLines (inputs of the user-space IOAPIC
// and PIC); MSI-capable devices (HPET FSB, the IOAPIC's own output, virtio
// later) send MsiMessages to an MsiSink that vmm/ implements with KVM.
#pragma once

#include <cstdint>

namespace vmm::devices {

struct MsiMessage {
  std::uint64_t address = 0;  // 0xFEExxxxx: destination APIC ID in bits 19:12
  std::uint32_t data = 0;     // vector in bits 7:0, delivery mode in 10:8
};

class MsiSink {
 public:
  virtual ~MsiSink() = default;
  // Thread-safe; callable from any thread, including timer handlers.
  virtual void send_msi(const MsiMessage& message) noexcept = 0;
};

// One interrupt input line. Level-triggered sources hold it asserted;
// edge-triggered sources pulse it. Thread-safe.
class IrqLine {
 public:
  virtual ~IrqLine() = default;
  virtual void set_level(bool asserted) noexcept = 0;
  void pulse() noexcept {
    set_level(true);
    set_level(false);
  }
};

}  // namespace vmm::devices
