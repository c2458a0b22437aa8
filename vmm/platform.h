// The PC the guest sees: which device answers at which port or address, and
// where each interrupt line goes. Pure wiring of devices/ — no KVM here; the
// VM hands in an MsiSink (KVM_SIGNAL_MSI) and a route observer (KVM GSI
// routes) and receives the board's requests through PlatformEvents.
//
// Interrupts: every ISA IRQ goes to the 8259 pair and to the IOAPIC pin the
// MADT's override names (IRQ 0 -> GSI 2, else identity). With the split
// irqchip the IOAPIC and the HPET's FSB mode deliver by MSI to the in-kernel
// LAPICs and the PIC's INT output is injected into vCPU 0 as an ExtINT by
// the VM. With the user-space irqchip the board also has the local APICs
// (devices/apic_bus): MSIs go to them, the PIC's INT drives every LINT0 (the
// virtual wire), their level-triggered EOIs come back to the IOAPIC, and
// their timers drain, reset and pause with the other device timers. Each
// LAPIC timer follows its own vCPU's CPU, so bind_timers() leaves them alone.
//
//   port 0x20-0x21, 0xA0-0xA1   8259 master/slave      0x4D0-0x4D1  ELCR
//   port 0x40-0x43, 0x61        8254 PIT, NMI status/control (channel 2 gate)
//   port 0x60, 0x64             i8042 (reset through 0xFE)
//   port 0x70-0x71              MC146818 RTC/CMOS (IRQ 8)
//   port 0x3F8-0x3FF            16550A COM1 (IRQ 4)
//   port 0x600-0x605            ACPI PM1a event/control (SCI = IRQ 9)
//   port 0x608-0x60B            ACPI PM timer (3.579545 MHz, 24 bits)
//   port 0xCF8-0xCFF            PCI configuration (mechanism #1); byte 0xCF9 is
//                               reset control (the FADT's reset register)
//   port 0xF4-0xF7              debug exit (QEMU isa-debug-exit semantics)
//   port 0xFF0-0xFF3            boot-progress milestones
//   port 0x80                   POST/delay port: ignored (Linux's outb_p)
//   port 0x505                  pvpanic (ACPI QEMU0001): the guest kernel panicked
//   MMIO 0xFEC00000 (4 KiB)     IOAPIC, 24 pins
//   MMIO 0xFED00000 (1 KiB)     HPET, 3 comparators (when enabled)
//   MMIO 0xC0000000 (512 MiB)   PCI BARs (the DSDT's \_SB.PCI0 window); the
//                               VM adds its PCI functions through pci()
//   MMIO 0xE0000000 (1 MiB)     PCI ECAM for bus 0 (the MCFG table's)
//
// PCI INTA# of slot s goes to IOAPIC pin acpi::pci_intx_gsi(s) and to ISA
// IRQ acpi::pci_intx_pic_irq(s) of the 8259 pair (devices/pci/intx_router.h),
// so a guest gets INTx in either interrupt model the DSDT's _PRT offers.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "devices/acpi_pm.h"
#include "devices/apic_bus.h"
#include "devices/boot_progress.h"
#include "devices/bus.h"
#include "devices/debug_exit.h"
#include "devices/hpet.h"
#include "devices/i8042.h"
#include "devices/ioapic.h"
#include "devices/isa_irq.h"
#include "devices/pci/intx_router.h"
#include "devices/pci/pci_root.h"
#include "devices/pic.h"
#include "devices/pit.h"
#include "devices/pvpanic.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "timers/cyclic.h"

namespace vmm {

// What the board asks of the VM. Called on vCPU threads (or, for the PIC
// output, on whichever thread raised the interrupt): implementations post
// and return; they must not block on vCPUs or call back into devices.
struct PlatformEvents {
  std::function<void(const char* source)> reset;   // i8042 0xFE, reset register
  std::function<void()> poweroff;                  // ACPI S5
  std::function<void(std::uint64_t status)> debug_exit;
  std::function<void()> guest_panic;               // pvpanic
  std::function<void(bool asserted)> pic_output;   // 8259 INT line (split irqchip)
  // Something arrived at vCPU `index`'s user-space LAPIC: make it look
  // (VcpuThread::notify()). Any thread; must not block.
  std::function<void(unsigned index)> kick_vcpu;
};

struct PlatformConfig {
  unsigned cpus = 1;
  bool hpet = true;
  devices::SerialOutput* serial_output = nullptr;  // required
  timers::Nanos boot_progress_start = 0;           // "process start" on the loops' clock
  // The debug-exit port at 0xF4 (see VmConfig::debug_exit); absent, its
  // writes go nowhere like any unclaimed port's.
  bool debug_exit = false;
  // The local APICs are the board's (--irqchip=userspace), with this
  // configuration (x2APIC, TSC-deadline, the TSC's rate and origin).
  bool userspace_apics = false;
  devices::Lapic::Config lapic{};
};

class Platform {
 public:
  // `timer_loop` is where the PIT, RTC and HPET callouts start (the VM moves
  // them to vCPU 0's CPU once it runs; the LAPIC timers start there too).
  // `msi` (split irqchip) is where MSIs go; with config.userspace_apics it
  // is ignored and may be null. Throws vmm::Error on a wiring bug.
  Platform(timers::CyclicSystem& timers, timers::EventLoop& timer_loop, devices::MsiSink* msi,
           devices::IoApicRouteObserver* routes, const PlatformConfig& config, PlatformEvents events);
  ~Platform();
  Platform(const Platform&) = delete;
  Platform& operator=(const Platform&) = delete;

  const devices::Bus& pio() const noexcept { return pio_; }
  const devices::Bus& mmio() const noexcept { return mmio_; }

  devices::IoApic& ioapic() noexcept { return ioapic_; }
  devices::Pic& pic() noexcept { return pic_; }
  devices::Serial& serial() noexcept { return serial_; }
  devices::AcpiPm& acpi_pm() noexcept { return acpi_pm_; }
  devices::BootProgress& boot_progress() noexcept { return boot_progress_; }
  devices::pci::PciRoot& pci() noexcept { return pci_; }

  // INTA# of PCI slot `slot` (1-31), and the GSI that firmware would write
  // into its interrupt line register (the IOAPIC pin: the model every
  // guest that knows ACPI picks on this platform).
  // Functions go on the bus with pci().add(slot, function), at set-up.
  struct PciIntx {
    devices::IrqLine* line;
    std::uint8_t gsi;
  };
  PciIntx pci_intx(unsigned slot);
  // The user-space local APICs; null with the split irqchip.
  devices::ApicBus* apic_bus() noexcept { return apic_bus_.get(); }
  // Where MSIs go: KVM's LAPICs (split irqchip) or the APIC bus.
  devices::MsiSink& msi() noexcept { return msi_; }

  // The VM reset and pause sequences, over every device with timers
  // (see devices/timer_device.h for the order and the lock rules).
  void drain_timers() noexcept;
  void pause_timers() noexcept;
  void resume_timers() noexcept;
  void bind_timers(timers::EventLoop& loop) noexcept;
  // Power-on state for every device (NVRAM and the RTC's time survive).
  void reset(timers::EventLoop& timer_loop, timers::Nanos boot_progress_start) noexcept;

 private:
  // An IrqLine that reports its level to a callback (the PIC's INT pin).
  class CallbackLine final : public devices::IrqLine {
   public:
    explicit CallbackLine(std::function<void(bool)> fn) : fn_(std::move(fn)) {}
    void set_level(bool asserted) noexcept override {
      if (fn_) fn_(asserted);
    }

   private:
    std::function<void(bool)> fn_;
  };
  // Accepts and ignores accesses (ports guests poke for delays).
  class IgnoredPort final : public devices::BusDevice {
   public:
    void read(std::uint64_t, std::span<std::uint8_t> data) noexcept override { devices::store_le(data, 0); }
    void write(std::uint64_t, std::span<const std::uint8_t>) noexcept override {}
  };

  // Every device with timers; `with_lapics` adds the LAPIC timers, which
  // follow their vCPUs rather than vCPU 0.
  std::vector<devices::TimerDevice*> timer_devices(bool with_lapics = true) noexcept;
  static std::unique_ptr<devices::ApicBus> make_apic_bus(timers::CyclicSystem& timers, timers::EventLoop& loop,
                                                         const PlatformConfig& config, Platform& board);

  // Looks up the IOAPIC's input lines, for what wires itself to them.
  devices::IsaIrqRouter::IoApicPins ioapic_pins() {
    return [this](unsigned pin) -> devices::IrqLine& { return ioapic_.pin(pin); };
  }

  PlatformEvents events_;
  // Before the IOAPIC, which sends its MSIs into it.
  std::unique_ptr<devices::ApicBus> apic_bus_;
  devices::MsiSink& msi_;
  CallbackLine pic_output_;
  devices::IoApic ioapic_;
  devices::Pic pic_;
  devices::IsaIrqRouter isa_;
  devices::pci::IntxRouter pci_intx_;
  devices::Serial serial_;
  devices::I8042 i8042_;
  devices::DebugExit debug_exit_;
  devices::PvPanic pvpanic_;
  devices::BootProgress boot_progress_;
  devices::AcpiPm acpi_pm_;
  devices::Pit pit_;
  devices::Rtc rtc_;
  std::unique_ptr<devices::Hpet> hpet_;
  IgnoredPort post_port_;
  devices::pci::PciRoot pci_;
  devices::Bus pio_{"port I/O"};
  devices::Bus mmio_{"MMIO"};
};

}  // namespace vmm
