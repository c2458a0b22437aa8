// 82093AA-style I/O APIC, 24 pins, version 0x20 (the one with an EOI
// register), at 0xFEC00000. Its output is an MSI per delivered interrupt,
// sent to an MsiSink; with KVM's split irqchip that becomes KVM_SIGNAL_MSI
// (or KVM_IRQ_LINE on the pin's routed GSI) into the in-kernel LAPICs.
//
// ---- Split irqchip: how the kernel knows which EOIs to hand back ----------
//
// A level-triggered interrupt sets Remote IRR here and must not be delivered
// again until the guest's EOI reaches this IOAPIC. With the LAPIC in the
// kernel, the EOI comes back as KVM_EXIT_IOAPIC_EOI (kvm_run::eoi.vector),
// which the VMM turns into end_of_interrupt(vector). The kernel only reports
// an EOI for vectors set in the vCPU's ioapic_handled_vectors bitmap (the
// same bitmap is loaded as the VMCS EOI-exit bitmap with APICv). Where that
// bitmap comes from, checked in the kernel and QEMU sources:
//
// * KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP, args[0] = N), before any vCPU is
//   created, installs an empty GSI routing table and records N as
//   kvm->arch.nr_reserved_ioapic_pins. Documentation/virt/kvm/api.rst: "The
//   first args[0] MSI routes are reserved for the IOAPIC pins. Whenever the
//   LAPIC receives an EOI for these routes, a KVM_EXIT_IOAPIC_EOI vmexit will
//   be reported to userspace."
// * Every KVM_SET_GSI_ROUTING on a split irqchip raises KVM_REQ_SCAN_IOAPIC
//   on all vCPUs (kvm_arch_post_irq_routing_update, later moved into
//   kvm_arch_irq_routing_update). Before its next guest entry each vCPU runs
//   kvm_scan_ioapic_routes() (arch/x86/kvm/irq_comm.c; irq.c in newer
//   trees): for GSI 0 .. min(N, table size) - 1 it takes the routes of type
//   KVM_IRQ_ROUTING_MSI, decodes each as an MSI, skips edge-triggered ones
//   (MSI data bit 15 clear) and sets bit `vector` when kvm_apic_match_dest()
//   says the route's destination (ID, physical/logical) includes this vCPU.
// * On an EOI, kvm_ioapic_send_eoi() (arch/x86/kvm/lapic.c) tests only that
//   bitmap, not the TMR, and for a split irqchip requests the
//   KVM_EXIT_IOAPIC_EOI exit.
//
// So the belief "the bitmap is built from the routing-table MSI entries with
// gsi < args[0] that are level-triggered and target the vCPU" is right, and
// the VMM must mirror every redirection entry into an MSI route with
// gsi = pin (args[0] = 24). Consequences and caveats this code relies on:
//
// 1. Delivery does not need the routes (KVM_SIGNAL_MSI works without them),
//    which is what makes forgetting them dangerous: the interrupt arrives,
//    no EOI exit ever comes, and the pin is stuck with Remote IRR set.
// 2. The route must be in place before an interrupt that needs it is
//    delivered. KVM_SET_GSI_ROUTING returns after queueing the rescan on
//    every vCPU, and a vCPU rescans before it next enters the guest, so
//    "update route, then deliver" cannot lose the EOI. This IOAPIC keeps
//    that order (IoApicRouteObserver below). QEMU had exactly this bug: a
//    redirection-entry write re-delivered a pending level interrupt through
//    the old route before updating it; it now updates the routes first
//    (hw/intc/ioapic.c, ioapic_mem_write: ioapic_update_kvm_routes, then
//    ioapic_service).
// 3. Older kernels tested kvm_set_msi_irq()'s irq.level, which is always 1,
//    so they report EOIs for edge-triggered routes too; "KVM: x86: don't
//    notify userspace IOAPIC on edge-triggered interrupt EOI" (February 2020,
//    v5.6 as far as could be told) switched the test to the trigger mode. An
//    EOI for a vector with no level entry is therefore expected and ignored.
// 4. Newer kernels (kvm_scan_ioapic_irq) also keep intercepting a vector
//    for a vCPU that still has that EOI pending after the route moved to
//    another vCPU; older ones can miss the EOI of an interrupt in service
//    while its route is retargeted. Keeping masked pins routed (point 6)
//    narrows that window; Linux masks a level pin while it moves the IRQ.
// 5. For a split irqchip KVM advertises Directed EOI (suppress EOI
//    broadcast, LAPIC version bit 24) to x2APIC guests but has always exited
//    on the EOI anyway; 2025 patches let the VMM opt in to honouring it,
//    after which a guest that enables it EOIs through this IOAPIC's EOI
//    register (offset 0x40), which is implemented. Whether and in which
//    release those patches landed was not verified.
// 6. QEMU (target/i386/kvm/kvm.c kvm_arch_init_irq_routing; hw/intc/ioapic.c
//    ioapic_update_kvm_routes) reserves 24 MSI routes at start-up, rewrites
//    route i from redirection entry i after every entry write (only for
//    unmasked entries: a masked pin keeps its previous route) and commits
//    them with KVM_SET_GSI_ROUTING; it injects with kvm_set_irq(gsi = pin),
//    edge as 1 then 0, level as 1. Our observer gets masked entries too and
//    the recommended handling is to keep a route installed for them as well
//    (the message is computed from the entry either way), so an EOI for an
//    interrupt delivered before the guest masked the pin still exits.
//
// ---- Behaviour -------------------------------------------------------------
// * Edge pins deliver on a rising edge of the input while unmasked. An edge
//   that arrives while masked is dropped, not remembered (82093AA: "Edge-
//   sensitive interrupts signaled on a masked interrupt pin are ignored";
//   QEMU and KVM's in-kernel IOAPIC do the same).
// * Level pins deliver while the input is asserted, unmasked and Remote IRR
//   is clear, and set Remote IRR. An EOI for the vector clears Remote IRR of
//   every level entry with that vector and re-delivers if still asserted.
//   Unmasking an asserted level pin delivers.
// * The input is the logical "asserted" state of the line (IrqLine), so the
//   polarity bit is stored for the guest but does not invert anything, as in
//   QEMU and KVM.
// * Delivery is immediate, so Delivery Status always reads 0. Writing an
//   entry as edge-triggered clears Remote IRR: Linux's EOI emulation for
//   IOAPICs without an EOI register (flip to edge and back) depends on it.
// * Register access: IOREGSEL (0x00) and IOWIN (0x10) as in the datasheet
//   (IOWIN only as an aligned 32-bit access), EOI at 0x40 (the low byte of
//   the write is the vector). Anything else in the 4 KiB window reads as all
//   ones and ignores writes. Reserved entry bits 17-55 read as zero.
//
// Locking: `mu_` guards the register state. Route publication and MSI
// sending happen after it is released, under a second mutex that only
// serializes them: every thread that is about to send MSIs first publishes
// all route changes still outstanding (whoever made them), then sends. So
// the observer sees entries in order and always ends with the latest value,
// and no MSI overtakes the route change that preceded it. The observer and
// the sink must not call back into this IOAPIC. Lock order: a device's own
// lock -> publication mutex -> mu_; the IOAPIC never calls into a device.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <span>

#include "devices/bus.h"
#include "devices/interrupts.h"

namespace vmm::devices {

// Implemented by the VMM's KVM layer: mirror each pin's current message into
// the KVM MSI route for GSI = pin (KVM_IRQ_ROUTING_MSI, address_lo =
// message.address, address_hi = 0, data = message.data) and commit it with
// KVM_SET_GSI_ROUTING before returning.
class IoApicRouteObserver {
 public:
  virtual ~IoApicRouteObserver() = default;
  // Called whenever a pin's vector, delivery mode, destination, destination
  // mode, trigger mode or mask changed (not for Remote IRR or Delivery
  // Status), outside the IOAPIC's register lock and before any MSI that the
  // same change makes the IOAPIC send. Calls are serialized.
  virtual void on_route_changed(unsigned pin, const MsiMessage& message, bool masked, bool level) noexcept = 0;
};

class IoApic final : public BusDevice {
 public:
  static constexpr std::uint64_t kBase = 0xFEC0'0000;
  static constexpr std::uint64_t kSize = 0x1000;
  static constexpr unsigned kPins = 24;
  static constexpr std::uint8_t kVersion = 0x20;

  // MMIO offsets.
  static constexpr std::uint64_t kRegisterSelect = 0x00, kWindow = 0x10, kEoi = 0x40;
  // Indirect registers (IOREGSEL values).
  static constexpr std::uint8_t kRegId = 0x00, kRegVersion = 0x01, kRegArbitration = 0x02,
                                kRegRedirectionBase = 0x10;
  // Redirection entry fields.
  static constexpr std::uint64_t kVectorMask = 0xFF;
  static constexpr unsigned kDeliveryModeShift = 8;
  static constexpr std::uint64_t kDeliveryModeMask = std::uint64_t{7} << kDeliveryModeShift;
  static constexpr std::uint64_t kDestinationLogical = std::uint64_t{1} << 11;
  static constexpr std::uint64_t kDeliveryStatus = std::uint64_t{1} << 12;
  static constexpr std::uint64_t kPolarityLow = std::uint64_t{1} << 13;
  static constexpr std::uint64_t kRemoteIrr = std::uint64_t{1} << 14;
  static constexpr std::uint64_t kLevelTriggered = std::uint64_t{1} << 15;
  static constexpr std::uint64_t kMasked = std::uint64_t{1} << 16;
  static constexpr unsigned kDestinationShift = 56;

  // MSI encoding of a redirection entry.
  static constexpr std::uint64_t kMsiAddressBase = 0xFEE0'0000;
  static constexpr std::uint32_t kMsiDataAssert = 1u << 14;
  static constexpr std::uint32_t kMsiDataLevel = 1u << 15;

  // `sink` and `observer` (may be null: no KVM routes to keep, as in unit
  // tests) are not owned and must outlive the IOAPIC. The observer is not
  // called from the constructor; call publish_all_routes() once the VMM's
  // routing is ready.
  explicit IoApic(MsiSink& sink, IoApicRouteObserver* observer = nullptr, std::uint8_t id = 0) noexcept;

  IoApic(const IoApic&) = delete;
  IoApic& operator=(const IoApic&) = delete;

  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

  // Input pin n (0..23). Throws vmm::Error for n >= kPins (a wiring bug).
  IrqLine& pin(unsigned n);

  // The guest EOI'd `vector` (KVM_EXIT_IOAPIC_EOI, or the EOI register).
  void end_of_interrupt(std::uint8_t vector) noexcept;

  // Tell the observer every pin's current route (start-up, after restoring
  // state).
  void publish_all_routes() noexcept;

  // Power-on state: all entries masked, Remote IRR clear, the ID given at
  // construction; input levels are kept (they belong to the devices).
  // Publishes every route.
  void reset() noexcept;

  // The 64-bit entry as the guest would read it; all ones for n >= kPins.
  std::uint64_t redirection_entry(unsigned n) const noexcept;

  static MsiMessage message_for(std::uint64_t entry) noexcept;

 private:
  class Pin final : public IrqLine {
   public:
    void set_level(bool asserted) noexcept override;
    IoApic* owner = nullptr;
    unsigned index = 0;
  };

  // What to do once mu_ is released.
  struct Work {
    std::array<MsiMessage, kPins> messages;
    unsigned count = 0;
    bool routes_dirty = false;
    void add(const MsiMessage& message) noexcept {
      if (count < messages.size()) messages[count++] = message;
    }
  };

  void set_pin_level(unsigned n, bool asserted) noexcept;
  void deliver_if_due(unsigned n, Work& work) noexcept;  // level pins; mu_ held
  void end_of_interrupt_locked(std::uint8_t vector, Work& work) noexcept;
  std::uint32_t read_indirect() const noexcept;
  void write_indirect(std::uint32_t value, Work& work) noexcept;
  void finish(Work& work) noexcept;
  // Runs `change(work)` under mu_, notes whether routes need publishing,
  // then finish()es: publication and delivery happen outside mu_.
  template <typename Change>
  void change_then_finish(Change change) noexcept;

  MsiSink& sink_;
  IoApicRouteObserver* const observer_;
  const std::uint8_t initial_id_;  // what the firmware tables announce
  std::array<Pin, kPins> pins_;

  std::mutex publish_mu_;  // serializes observer calls and MSI sends
  mutable std::mutex mu_;
  // Guarded by mu_.
  std::array<std::uint64_t, kPins> entries_{};
  std::uint32_t input_levels_ = 0;  // bit n: pin n asserted
  std::uint32_t routes_dirty_ = 0;  // bit n: pin n's route not yet published
  std::uint8_t select_ = 0;
  std::uint8_t id_ = 0;
};

}  // namespace vmm::devices
