// The PC's pair of Intel 8259A interrupt controllers: master at 0x20-0x21
// (ISA IRQs 0-7), slave at 0xA0-0xA1 (IRQs 8-15) with its INT output on the
// master's IR2, and the PIIX-style edge/level control registers (ELCR) at
// 0x4D0 (IRQs 0-7) and 0x4D1 (IRQs 8-15).
//
// Wiring (what the VMM does):
//   Pic pic(int_line);       // int_line: asks vCPU 0 for an interrupt window
//   bus.insert(Pic::kMasterBase, Pic::kChipSize, pic.master(), "pic master");
//   bus.insert(Pic::kSlaveBase, Pic::kChipSize, pic.slave(), "pic slave");
//   bus.insert(Pic::kElcrBase, Pic::kElcrSize, pic.elcr(), "elcr");
//   devices drive pic.set_irq(n, level), normally through an IsaIrqRouter.
// The three register windows are not adjacent, so each is a small BusDevice
// owned by the Pic; the Pic itself is not one.
//
// The Pic does not touch KVM. Its INT output is an IrqLine held asserted while
// the master has an interrupt to deliver (priority-resolved, unmasked, not
// blocked by one in service). While it is asserted the VMM requests an
// interrupt window on vCPU 0; when the window is open it calls acknowledge()
// (the INTA cycle) and injects the returned vector with KVM_INTERRUPT (an
// ExtINT as far as the LAPIC's LINT0 is concerned). acknowledge() may find
// nothing to deliver by then (the request went away): it returns the spurious
// vector, as the chip does.
//
// ---- Behaviour (8259A datasheet; PIIX ELCR) --------------------------------
// * ICW1 (A0=0, bit 4) starts initialisation: edge-detect latches and the
//   IMR, ISR and special mask are cleared, IR0 gets the highest priority,
//   OCW3 reads select IRR, ICW4 functions are cleared; then ICW2 (vector base,
//   bits 7-3), ICW3 unless SNGL, ICW4 if IC4. Clearing the ISR is not in the
//   datasheet, but a guest that re-initialises (kexec, a reboot without a
//   reset) must not be left with a stale in-service bit.
// * The trigger mode of each input comes from the ELCR; ICW1's LTIM bit is
//   ignored, as on PIIX-class chipsets. ELCR bits of IRQ 0, 1, 2, 8 and 13 are
//   reserved (read 0). Edge inputs latch IRR on a rising edge and keep it
//   until the acknowledge; level inputs have IRR follow the line.
// * OCW1 (A0=1) is the IMR. OCW2: non-specific and specific EOI, rotate on
//   non-specific or specific EOI, set priority, set/clear rotate in automatic
//   EOI mode. OCW3: read IRR or ISR at A0=0, poll, special mask mode (masked
//   in-service levels stop blocking lower priorities). Reads at A0=1 return
//   the IMR.
// * Poll: after OCW3 with P=1 the next read of the chip (either port) is an
//   acknowledge of that chip alone and returns 0x80 | level, or 0 with no
//   request. Polling the master for a cascaded request acknowledges IR2 on
//   the master only; the software then polls the slave.
// * Auto-EOI (ICW4 bit 1): acknowledge does not set ISR; with rotate in AEOI
//   set it makes the acknowledged level the lowest priority.
// * Special fully nested mode (ICW4 bit 4, master): a request on the cascade
//   input is accepted while the cascade level itself is in service, so a
//   higher-priority slave interrupt can nest.
// * Cascade: whenever the slave has an interrupt to deliver, the master's IR2
//   is latched (edge-triggered, as PIIX wires it). Acknowledging IR2 sets the
//   master's ISR bit 2 and acknowledges the slave; if the slave's request
//   vanished meanwhile the vector is the slave's IRQ 15 (base + 7) with no
//   slave ISR bit set, and the guest must still EOI the master.
// * Spurious IRQ 7: an acknowledge with no deliverable request on the master
//   returns master base + 7 and sets no ISR bit.
// * Power-on: ELCR all edge, IMR 0xFF (nothing reaches vCPU 0 before the
//   guest programs the chips), vector bases 0x08 and 0x70 (what a PC BIOS
//   leaves), IR0 highest priority. reset() returns to that and keeps the input
//   levels, which belong to the devices driving them.
// * Not modelled: the 8080/8085 INTA sequence (ICW4 uPM=0 acts as 8086 mode),
//   buffered mode (stored only), the cascade address lines (the slave is always
//   on IR2; ICW3 is stored only).
//
// ---- Locking ---------------------------------------------------------------
// One mutex guards both chips. The INT output IrqLine is driven with it held,
// only when its level changes, so it sees changes in order. That line must not
// call back into the Pic (it may kick vCPU 0; acknowledge() then runs on the
// vCPU thread). Lock order: a device's lock -> ISA router line -> Pic -> the
// INT output's implementation. All methods are thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>

#include "devices/bus.h"
#include "devices/interrupts.h"

namespace vmm::devices {

class Pic {
 public:
  static constexpr std::uint64_t kMasterBase = 0x20;
  static constexpr std::uint64_t kSlaveBase = 0xA0;
  static constexpr std::uint64_t kChipSize = 2;
  static constexpr std::uint64_t kElcrBase = 0x4D0;
  static constexpr std::uint64_t kElcrSize = 2;
  static constexpr unsigned kIrqs = 16;
  static constexpr unsigned kCascadeIrq = 2;
  static constexpr std::uint8_t kMasterElcrMask = 0xF8;  // IRQ 0, 1, 2 are edge only
  static constexpr std::uint8_t kSlaveElcrMask = 0xDE;   // IRQ 8, 13 are edge only
  static constexpr std::uint8_t kPowerOnMasterBase = 0x08;
  static constexpr std::uint8_t kPowerOnSlaveBase = 0x70;

  // `int_output` is not owned and must outlive the Pic.
  explicit Pic(IrqLine& int_output) noexcept;
  Pic(const Pic&) = delete;
  Pic& operator=(const Pic&) = delete;

  BusDevice& master() noexcept { return master_port_; }
  BusDevice& slave() noexcept { return slave_port_; }
  BusDevice& elcr() noexcept { return elcr_port_; }

  // Input line `irq` (0-15) is now at `level`. IRQ 2 is the cascade input and
  // ignored here, as is anything above 15.
  void set_irq(unsigned irq, bool level) noexcept;

  // The INT output: an interrupt is waiting for acknowledge().
  bool interrupt_pending() const noexcept;

  // The INTA cycle: resolves priorities, moves the request from IRR to ISR
  // (unless auto-EOI), acknowledges the slave for a cascaded request, and
  // returns the vector (a spurious vector when nothing is deliverable).
  std::uint8_t acknowledge() noexcept;

  // Power-on state (VM reset); input levels are kept.
  void reset() noexcept;

  // For tests and diagnostics.
  struct ChipState {
    std::uint8_t irr, isr, imr, elcr, vector_base;
    bool auto_eoi, special_mask, initializing;
  };
  ChipState chip_state(bool slave) const noexcept;
  std::uint64_t spurious_count() const noexcept;

 private:
  struct Chip {
    bool is_master = false;
    std::uint8_t irr = 0;
    std::uint8_t isr = 0;
    std::uint8_t imr = 0xFF;
    std::uint8_t elcr = 0;
    std::uint8_t elcr_mask = 0;
    std::uint8_t levels = 0;           // input lines as last driven
    std::uint8_t highest_priority = 0;  // the IR that currently has priority 0
    std::uint8_t vector_base = 0;
    std::uint8_t icw3 = 0;
    unsigned expecting_icw = 0;  // 0 when initialised, else 2, 3 or 4
    bool icw4_expected = false;
    bool single = false;
    bool auto_eoi = false;
    bool rotate_on_auto_eoi = false;
    bool special_fully_nested = false;
    bool buffered = false;
    bool special_mask = false;
    bool read_isr = false;
    bool poll = false;
  };

  class ChipPort final : public BusDevice {
   public:
    ChipPort(Pic& owner, bool slave) noexcept : owner_(owner), slave_(slave) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

   private:
    Pic& owner_;
    const bool slave_;
  };

  class ElcrPort final : public BusDevice {
   public:
    explicit ElcrPort(Pic& owner) noexcept : owner_(owner) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

   private:
    Pic& owner_;
  };

  static unsigned priority_of(const Chip& chip, std::uint8_t mask) noexcept;
  static int resolve(const Chip& chip) noexcept;
  static void intack(Chip& chip, unsigned irq) noexcept;
  static void power_on(Chip& chip, bool master) noexcept;
  Chip& chip(bool slave) noexcept { return slave ? slave_ : master_; }
  std::uint8_t read_locked(Chip& chip, unsigned a0) noexcept;
  void write_locked(Chip& chip, unsigned a0, std::uint8_t value) noexcept;
  void write_ocw2_locked(Chip& chip, std::uint8_t value) noexcept;
  std::uint8_t poll_locked(Chip& chip) noexcept;
  void set_elcr_locked(Chip& chip, std::uint8_t value) noexcept;
  void update_locked() noexcept;

  IrqLine& int_output_;
  ChipPort master_port_{*this, false};
  ChipPort slave_port_{*this, true};
  ElcrPort elcr_port_{*this};

  mutable std::mutex mu_;
  // Guarded by mu_ (output_ below: written under it).
  Chip master_;
  Chip slave_;
  std::uint64_t spurious_ = 0;
  // Written under mu_; read without it by interrupt_pending(), which vCPU 0
  // asks before every KVM_RUN (a value that may change right after it is
  // read is all a lock would give, too).
  std::atomic<bool> output_{false};
};

}  // namespace vmm::devices
