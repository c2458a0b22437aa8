// Interrupt delivery into KVM's in-kernel LAPICs (split irqchip).
//
// KvmMsiSink: every MSI the user-space devices produce (the IOAPIC's output,
// HPET FSB, PCI MSI) goes through KVM_SIGNAL_MSI.
//
// IoapicRoutes: the user-space IOAPIC needs to hear the guest's EOI of a
// level-triggered interrupt, so it can clear Remote IRR and re-deliver if the
// line is still asserted. With KVM_CAP_SPLIT_IRQCHIP(args[0] = N) the kernel
// LAPIC turns an EOI into a KVM_EXIT_IOAPIC_EOI only for vectors it knows to
// be level-triggered IOAPIC vectors, and it learns them from the GSI routing
// table: for each GSI below N, every MSI-type route whose data has the
// trigger-mode bit (15) set and whose destination matches the vCPU puts its
// vector into that vCPU's "IOAPIC handled vectors" bitmap
// (kvm_scan_ioapic_routes in arch/x86/kvm/irq_comm.c; irq.c in recent
// kernels). Writing the table (KVM_SET_GSI_ROUTING) makes every vCPU
// rescan it before its next guest entry. The EOI exit does not depend on how
// the interrupt was injected: delivering through KVM_SIGNAL_MSI is fine as
// long as the route names the same vector and destination.
//
// So each redirection entry is mirrored into an MSI route on GSI = pin:
//   - unmasked: route installed, data bit 15 set exactly when the pin is
//     level-triggered (the kernel ignores edge routes for EOI purposes, and
//     the route also lets KVM_IRQ_LINE or an irqfd deliver on that GSI);
//   - vectors 0-15 are invalid: no route;
//   - masked: the previous route is kept. A level interrupt may be in
//     service while the guest masks its pin (Linux does so around threaded
//     handlers); its EOI must still reach the IOAPIC. QEMU's
//     ioapic_update_kvm_routes makes the same choice (masked entries are not
//     updated).
// Only changes reach the kernel; masking, unmasking and rewriting an entry
// with the same contents cost no system call.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "devices/interrupts.h"
#include "devices/ioapic.h"
#include "vmm/kvm.h"

namespace vmm {

class KvmMsiSink final : public devices::MsiSink {
 public:
  // `vm` must outlive the sink and have its split irqchip enabled.
  explicit KvmMsiSink(const KvmVm& vm);

  void send_msi(const devices::MsiMessage& message) noexcept override;

  struct Stats {
    std::uint64_t delivered = 0;
    std::uint64_t blocked = 0;  // KVM accepted the MSI, no LAPIC took it
    std::uint64_t failed = 0;
  };
  Stats stats() const noexcept;

 private:
  const KvmVm& vm_;
  std::atomic<std::uint64_t> delivered_{0}, blocked_{0}, failed_{0};
};

class IoapicRoutes final : public devices::IoApicRouteObserver {
 public:
  static constexpr std::uint32_t kMsiDataLevelTriggered = 1u << 15;
  static constexpr unsigned kMaxPins = 256;

  // `vm` must outlive this object and have its split irqchip enabled; pins
  // are GSIs [0, vm.ioapic_pins()).
  explicit IoapicRoutes(const KvmVm& vm);

  // Mirrors one redirection entry: `message` is what the IOAPIC would send
  // for the pin, `level` its trigger mode. Thread-safe and cheap when
  // nothing changes; never throws. Pins out of range are ignored (logged).
  void set_ioapic_route(unsigned pin, const devices::MsiMessage& message, bool masked, bool level) noexcept;

  // devices::IoApicRouteObserver: the user-space IOAPIC calls this before
  // any MSI that depends on the change, and the table is committed before it
  // returns, so "route, then deliver" holds.
  void on_route_changed(unsigned pin, const devices::MsiMessage& message, bool masked,
                        bool level) noexcept override {
    set_ioapic_route(pin, message, masked, level);
  }

  // Drops every route (VM reset). Never throws.
  void clear() noexcept;

  // KVM_SET_GSI_ROUTING calls made (successful or not).
  std::uint64_t commits() const noexcept { return commits_.load(std::memory_order_relaxed); }
  // The MSI route currently mirrored for `pin`, if any.
  std::optional<devices::MsiMessage> route(unsigned pin) const;

 private:
  void commit_locked() noexcept;

  const KvmVm& vm_;
  const unsigned pins_;
  mutable std::mutex mu_;
  std::vector<std::optional<devices::MsiMessage>> wanted_;     // per pin
  std::vector<std::optional<devices::MsiMessage>> committed_;  // what KVM has
  bool ever_committed_ = false;
  std::atomic<std::uint64_t> commits_{0};
};

}  // namespace vmm
