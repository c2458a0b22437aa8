#include "vmm/platform.h"

#include "devices/error.h"
#include "vmm/boot/acpi.h"

namespace vmm {

namespace acpi = boot::acpi;
using devices::Bus;

std::unique_ptr<devices::ApicBus> Platform::make_apic_bus(timers::CyclicSystem& timers, timers::EventLoop& loop,
                                                          const PlatformConfig& config, Platform& board) {
  if (!config.userspace_apics) return nullptr;
  return std::make_unique<devices::ApicBus>(
      timers, loop, devices::ApicBus::Config{config.cpus, config.lapic},
      [&board](unsigned index) {
        if (board.events_.kick_vcpu) board.events_.kick_vcpu(index);
      },
      [&board](std::uint8_t vector) { board.ioapic_.end_of_interrupt(vector); });
}

namespace {

devices::MsiSink& choose_msi_sink(devices::ApicBus* apics, devices::MsiSink* msi) {
  if (apics != nullptr) return *apics;
  if (msi == nullptr) throw Error("platform: the split irqchip needs an MSI sink");
  return *msi;
}

}  // namespace

Platform::Platform(timers::CyclicSystem& timers, timers::EventLoop& timer_loop, devices::MsiSink* msi,
                   devices::IoApicRouteObserver* routes, const PlatformConfig& config, PlatformEvents events)
    : events_(std::move(events)),
      apic_bus_(make_apic_bus(timers, timer_loop, config, *this)),
      msi_(choose_msi_sink(apic_bus_.get(), msi)),
      pic_output_([this](bool asserted) {
        // The 8259's INT is the virtual wire into every LINT0; with the
        // split irqchip the VM injects it into vCPU 0 itself.
        if (apic_bus_) {
          apic_bus_->lint0().set_level(asserted);
        } else if (events_.pic_output) {
          events_.pic_output(asserted);
        }
      }),
      // The MADT gives the IOAPIC an ID after the vCPUs' APIC IDs.
      ioapic_(msi_, routes, acpi::io_apic_id(config.cpus)),
      pic_(pic_output_),
      isa_(pic_, ioapic_pins()),
      pci_intx_(isa_, ioapic_pins()),
      serial_(isa_.line(4), *config.serial_output),
      i8042_(isa_.line(1), isa_.line(12),
             [this] {
               if (events_.reset) events_.reset("i8042 reset line");
             }),
      debug_exit_([this](std::uint64_t status) {
        if (events_.debug_exit) events_.debug_exit(status);
      }),
      pvpanic_([this] {
        if (events_.guest_panic) events_.guest_panic();
      }),
      boot_progress_(timers.clock(), config.boot_progress_start),
      acpi_pm_(isa_.line(acpi::kSciIrq), acpi::kSlpTypS5,
               devices::AcpiPm::Callbacks{
                   [this] {
                     if (events_.poweroff) events_.poweroff();
                   },
                   [this] {
                     if (events_.reset) events_.reset("ACPI reset register");
                   }},
               timers.clock()),
      pit_(timers, timer_loop, isa_.line(0)),
      rtc_(timers, timer_loop, isa_.line(8)),
      // 0xCF9 is inside the configuration ports: the root bus hands byte
      // accesses there to the reset register, as Intel chipsets do.
      pci_(&acpi_pm_.reset_port()) {
  if (config.serial_output == nullptr) throw Error("platform: no serial output");
  if (config.hpet) {
    // Legacy replacement hands IRQ 0 and IRQ 8 to the HPET: the PIT and RTC
    // keep counting but no longer drive their lines.
    hpet_ = std::make_unique<devices::Hpet>(
        timers, timer_loop, ioapic_pins(), isa_.line(0),
        isa_.line(8), msi_, [this](bool legacy) {
          pit_.set_output_enabled(!legacy);
          rtc_.set_output_enabled(!legacy);
        });
  }

  pio_.insert(devices::Pic::kMasterBase, devices::Pic::kChipSize, pic_.master(), "pic master");
  pio_.insert(devices::Pic::kSlaveBase, devices::Pic::kChipSize, pic_.slave(), "pic slave");
  pio_.insert(devices::Pic::kElcrBase, devices::Pic::kElcrSize, pic_.elcr(), "elcr");
  pio_.insert(devices::Pit::kBase, devices::Pit::kSize, pit_, "pit");
  pio_.insert(devices::Pit::kPort61, devices::Pit::kPort61Size, pit_.port61(), "nmi status/control");
  pio_.insert(devices::I8042::kDataPort, 1, i8042_.data_port(), "i8042 data");
  pio_.insert(devices::I8042::kCommandPort, 1, i8042_.command_port(), "i8042 command");
  pio_.insert(devices::Rtc::kBase, devices::Rtc::kSize, rtc_, "rtc");
  pio_.insert(0x80, 1, post_port_, "post code");
  pio_.insert(devices::Serial::kCom1Base, devices::Serial::kSize, serial_, "com1");
  pio_.insert(acpi::kPm1aEventPort, acpi::kPm1EventLength, acpi_pm_.event_block(), "pm1a event");
  pio_.insert(acpi::kPm1aControlPort, acpi::kPm1ControlLength, acpi_pm_.control_block(), "pm1a control");
  pio_.insert(acpi::kPmTimerPort, acpi::kPmTimerLength, acpi_pm_.pm_timer(), "pm timer");
  static_assert(acpi::kResetPort == devices::pci::PciRoot::kConfigIoPort + 1);
  pio_.insert(devices::pci::PciRoot::kConfigIoPort, devices::pci::PciRoot::kConfigIoSize, pci_.config_io(),
              "pci config, reset control");
  if (config.debug_exit) pio_.insert(devices::DebugExit::kPort, devices::DebugExit::kSize, debug_exit_, "debug exit");
  pio_.insert(devices::PvPanic::kPort, devices::PvPanic::kSize, pvpanic_, "pvpanic");
  pio_.insert(devices::BootProgress::kPort, devices::BootProgress::kSize, boot_progress_, "boot progress");

  mmio_.insert(devices::IoApic::kBase, devices::IoApic::kSize, ioapic_, "ioapic");
  if (hpet_) mmio_.insert(devices::Hpet::kBase, devices::Hpet::kSize, *hpet_, "hpet");
  // The MCFG table names it; a guest may use either this or the ports.
  mmio_.insert(devices::pci::PciRoot::kEcamBase, devices::pci::PciRoot::kEcamSize, pci_.ecam(), "pci ecam");
  mmio_.insert(devices::pci::PciRoot::kMmioWindowBase, devices::pci::PciRoot::kMmioWindowSize, pci_.mmio_window(),
               "pci window");
}

Platform::PciIntx Platform::pci_intx(unsigned slot) {
  return PciIntx{&pci_intx_.line(slot), static_cast<std::uint8_t>(acpi::pci_intx_gsi(slot))};
}

Platform::~Platform() {
  // Timer handlers call into the IOAPIC and PIC; stop them before any
  // member goes away.
  drain_timers();
}

std::vector<devices::TimerDevice*> Platform::timer_devices(bool with_lapics) noexcept {
  std::vector<devices::TimerDevice*> all{&pit_, &rtc_};
  if (hpet_) all.push_back(hpet_.get());
  if (with_lapics && apic_bus_) all.push_back(apic_bus_.get());
  return all;
}

void Platform::drain_timers() noexcept {
  for (auto* device : timer_devices()) device->drain_timers();
}

void Platform::pause_timers() noexcept {
  for (auto* device : timer_devices()) device->pause();
}

void Platform::resume_timers() noexcept {
  for (auto* device : timer_devices()) device->resume();
}

void Platform::bind_timers(timers::EventLoop& loop) noexcept {
  for (auto* device : timer_devices(/*with_lapics=*/false)) device->bind_timers(loop);
}

void Platform::reset(timers::EventLoop& timer_loop, timers::Nanos boot_progress_start) noexcept {
  for (auto* device : timer_devices()) device->reset(timer_loop);
  pic_.reset();
  ioapic_.reset();
  serial_.reset();
  i8042_.reset();
  acpi_pm_.reset();
  pci_.reset();
  boot_progress_.restart(boot_progress_start);
}

}  // namespace vmm
