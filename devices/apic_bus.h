// The local APICs of one VM and the wires between them: IPIs from an ICR
// to the APICs it names, MSIs from the IOAPIC and the HPET's FSB mode (this
// is the MsiSink they deliver into in the user-space irqchip mode), the
// 8259 pair's INT output on every LINT0 (the virtual wire) and an NMI line
// on every LINT1, and each APIC's EOI broadcast back to the IOAPIC.
//
// Routing (SDM vol. 3A, "Determining IPI Destination", "Lowest Priority
// Delivery Mode"; MSI format in "Message Signalled Interrupts"):
// * Physical: the APIC whose ID equals the destination; 0xFF (8-bit
//   formats) or 0xFFFFFFFF (x2APIC) is every APIC.
// * Logical: each APIC matches against its own LDR in its own mode: xAPIC
//   flat (DFR model 0xF: LDR[31:24] & dest), xAPIC cluster (model 0x0:
//   cluster dest[7:4] equal, or 0xF for every cluster, and a common member
//   bit in dest[3:0]), x2APIC cluster (dest[31:16] equal, a common bit in
//   dest[15:0]).
// * Shorthands self, all including self, all excluding self; a disabled
//   APIC (IA32_APIC_BASE.EN clear) receives nothing.
// * Lowest priority (and any MSI with the redirection hint set, as KVM
//   does): one of the matching, software-enabled APICs with the lowest
//   arbitration priority (APR); a tie goes to the (vector mod ties)-th of
//   them, so different vectors spread and a test can tell which one.
//   Focus-processor checking is not modelled.
// * A message that names no present APIC is dropped and logged at a rate
//   limit; so are MSIs whose address is not 0xFEExxxxx or whose delivery
//   mode is reserved (3, 6). (ICR modes 3 and 7 never leave the APIC.)
//
// Threads: send_msi(), deliver() and the lines are callable from any thread;
// they hold no lock of their own while calling into an APIC. The kick and
// the EOI broadcast are called with no APIC lock held, except that a timer
// interrupt kicks with its timer's lock held (see devices/lapic.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "devices/interrupts.h"
#include "devices/lapic.h"
#include "devices/timer_device.h"

namespace vmm::devices {

class ApicBus final : public MsiSink, public TimerDevice {
 public:
  struct Config {
    unsigned cpus = 1;
    Lapic::Config lapic{};
  };
  // Something arrived for vCPU `index` (an interrupt, an ExtINT, an NMI,
  // INIT or SIPI): make its thread look (VcpuThread::notify(), or wake an
  // AP waiting for SIPI). Any thread; must not block or call the APICs.
  using Kick = std::function<void(unsigned index)>;
  // A level-triggered vector was EOI'd: IoApic::end_of_interrupt(vector).
  using EoiBroadcast = std::function<void(std::uint8_t vector)>;

  // Every APIC's timer starts on `loop`. Throws vmm::Error when cpus is 0
  // or a timer cannot be created.
  ApicBus(timers::CyclicSystem& system, timers::EventLoop& loop, const Config& config, Kick kick,
          EoiBroadcast eoi_broadcast);
  ~ApicBus() override;
  ApicBus(const ApicBus&) = delete;
  ApicBus& operator=(const ApicBus&) = delete;

  unsigned size() const noexcept { return static_cast<unsigned>(lapics_.size()); }
  // Throws vmm::Error for index >= size() (a wiring bug).
  Lapic& lapic(unsigned index);

  // MsiSink: the IOAPIC's and the HPET's interrupts.
  void send_msi(const MsiMessage& message) noexcept override;
  static std::optional<ApicMessage> decode_msi(const MsiMessage& message) noexcept;

  // Routes `message`; `source` is the sending APIC (for shorthands), or
  // null for an MSI. Returns how many APICs received it.
  unsigned deliver(const ApicMessage& message, const Lapic* source) noexcept;

  // The 8259 pair's INT output, wired to LINT0 of every APIC, and an NMI
  // source wired to every LINT1 (nothing drives it yet).
  IrqLine& lint0() noexcept { return lint0_; }
  IrqLine& lint1() noexcept { return lint1_; }

  // For the APICs.
  void kick(unsigned index) noexcept;
  void broadcast_eoi(std::uint8_t vector) noexcept;

  // Every APIC's timer, the TimerDevice way (a vCPU that moved binds its
  // own: lapic(i).bind_timers(loop)).
  void drain_timers() noexcept override;
  void reset(timers::EventLoop& loop) noexcept override;
  void pause() noexcept override;
  void resume() noexcept override;
  void bind_timers(timers::EventLoop& loop) noexcept override;

  struct Stats {
    std::uint64_t messages = 0;        // IPIs and MSIs routed
    std::uint64_t no_destination = 0;  // named no present APIC
    std::uint64_t invalid = 0;         // MSIs or ICR modes that mean nothing
  };
  Stats stats() const noexcept;

 private:
  class LintLine final : public IrqLine {
   public:
    LintLine(ApicBus& bus, unsigned pin) noexcept : bus_(bus), pin_(pin) {}
    void set_level(bool asserted) noexcept override;

   private:
    ApicBus& bus_;
    const unsigned pin_;
  };

  bool names(const Lapic& lapic, const ApicMessage& message, const Lapic* source) const noexcept;
  Lapic* lowest_priority(const ApicMessage& message, const Lapic* source) noexcept;

  Kick kick_;
  EoiBroadcast eoi_broadcast_;
  std::vector<std::unique_ptr<Lapic>> lapics_;  // fixed after construction
  LintLine lint0_{*this, 0};
  LintLine lint1_{*this, 1};
  std::atomic<std::uint64_t> messages_{0};
  std::atomic<std::uint64_t> no_destination_{0};
  std::atomic<std::uint64_t> invalid_{0};
};

}  // namespace vmm::devices
