// PCI bus 0 of the PC: a host bridge at 00:00.0, up to 31 more functions
// (function 0 of each slot), configuration space through ports 0xCF8/0xCFC
// (mechanism #1) and through ECAM, and one MMIO window that every BAR is
// placed in and dispatched from.
//
// ---- Guest-physical layout (describe it in ACPI: _CRS, MCFG) --------------
//
//   0xC000_0000 - 0xDFFF_FFFF  PCI MMIO window, 512 MiB, 32-bit, non-
//                              prefetchable: every BAR is allocated here at
//                              set-up, naturally aligned, in slot order. The
//                              DSDT's host bridge _CRS should declare exactly
//                              this range (DWordMemory, ResourceProducer).
//   0xE000_0000 - 0xE00F_FFFF  ECAM for bus 0 only (1 MiB: 32 devices x 8
//                              functions x 4 KiB). The MCFG entry: base
//                              0xE0000000, segment 0, buses 0-0.
//   0xFEC0_0000 IOAPIC, 0xFED0_0000 HPET, 0xFEE0_0000 LAPIC: outside both.
//   Ports 0xCF8-0xCFF          CONFIG_ADDRESS (dword at 0xCF8) and
//                              CONFIG_DATA (0xCFC-0xCFF, any width). Byte
//                              accesses at 0xCF9 go to the reset-control
//                              register passed in (as on Intel chipsets),
//                              so the PC's 0xCF9 keeps working.
//
// A guest may move a BAR anywhere (Linux keeps the assignment it finds when
// it fits the _CRS). The window answers for any BAR that currently decodes
// inside it, looked up lock-free on each access, so no bus needs rebuilding;
// a BAR moved outside the window stops answering (the rest of the physical
// address space belongs to other devices or RAM). The VMM hears of each move
// through PciBarObserver (devices/pci/function.h) to move its ioeventfds.
//
// Unknown functions read as all ones (vendor 0xFFFF, "nothing here") and
// ignore writes, as do other buses, functions 1-7, and accesses that are not
// naturally aligned.
//
// Threading: slots are filled at set-up, before vCPUs run, and read without
// locks afterwards (like Bus). The config-address register is an atomic;
// each function guards its own state.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "devices/bus.h"
#include "devices/pci/config_space.h"
#include "devices/pci/function.h"

namespace vmm::devices::pci {

class PciRoot {
 public:
  static constexpr std::uint64_t kMmioWindowBase = 0xC000'0000;
  static constexpr std::uint64_t kMmioWindowSize = 0x2000'0000;
  static constexpr std::uint64_t kEcamBase = 0xE000'0000;
  static constexpr std::uint64_t kEcamSize = 0x10'0000;
  static constexpr std::uint64_t kConfigIoPort = 0xCF8;
  static constexpr std::uint64_t kConfigIoSize = 8;
  static constexpr unsigned kSlots = 32;
  // CONFIG_ADDRESS bits.
  static constexpr std::uint32_t kConfigEnable = 1u << 31;
  // The host bridge's identity (00:00.0): a generic PCIe host bridge.
  static constexpr std::uint16_t kHostBridgeVendor = 0x1B36, kHostBridgeDevice = 0x0008;
  static constexpr std::uint32_t kHostBridgeClass = 0x060000;

  // `reset_control` answers byte accesses at 0xCF9 (may be null: they are
  // then ignored). Not owned; must outlive the root.
  explicit PciRoot(BusDevice* reset_control = nullptr);
  ~PciRoot();
  PciRoot(const PciRoot&) = delete;
  PciRoot& operator=(const PciRoot&) = delete;

  // Places `function` (not owned; must outlive the root) at `slot` (1-31),
  // allocating every BAR it has from the MMIO window. Throws vmm::Error when
  // the slot is taken or out of range, or the window is full. Set-up only.
  void add(unsigned slot, PciFunction& function);
  // Same, at the lowest free slot; returns it.
  unsigned add(PciFunction& function);

  // Bus devices for the VMM to insert: at kConfigIoPort (kConfigIoSize
  // ports), kEcamBase (kEcamSize) and kMmioWindowBase (kMmioWindowSize).
  BusDevice& config_io() noexcept { return config_io_; }
  BusDevice& ecam() noexcept { return ecam_; }
  BusDevice& mmio_window() noexcept { return window_; }

  // Configuration access by bus/device/function (what both mechanisms use).
  void config_read(unsigned bus, unsigned slot, unsigned function, std::uint32_t offset,
                   std::span<std::uint8_t> data) const noexcept;
  void config_write(unsigned bus, unsigned slot, unsigned function, std::uint32_t offset,
                    std::span<const std::uint8_t> data) noexcept;

  // Power-on state of every function and of CONFIG_ADDRESS (VM reset).
  void reset() noexcept;

 private:
  class HostBridge;
  // One BusDevice per address space, each forwarding to the root's
  // handlers for it.
  class Space final : public BusDevice {
   public:
    using Read = void (PciRoot::*)(std::uint64_t, std::span<std::uint8_t>) noexcept;
    using Write = void (PciRoot::*)(std::uint64_t, std::span<const std::uint8_t>) noexcept;
    Space(PciRoot& root, Read on_read, Write on_write) : root_(root), read_(on_read), write_(on_write) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override { (root_.*read_)(offset, data); }
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override {
      (root_.*write_)(offset, data);
    }

   private:
    PciRoot& root_;
    const Read read_;
    const Write write_;
  };

  void io_read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept;
  void io_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept;
  void ecam_read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept;
  void ecam_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept;
  void window_read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept;
  void window_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept;

  PciFunction* at(unsigned bus, unsigned slot, unsigned function) const noexcept;
  PciFunction* decode(std::uint64_t address, std::uint64_t length, BarHit& hit) const noexcept;

  BusDevice* const reset_control_;
  std::unique_ptr<HostBridge> host_bridge_;
  std::array<PciFunction*, kSlots> slots_{};
  std::uint64_t next_bar_address_ = kMmioWindowBase;
  std::atomic<std::uint32_t> config_address_{0};
  Space config_io_{*this, &PciRoot::io_read, &PciRoot::io_write};
  Space ecam_{*this, &PciRoot::ecam_read, &PciRoot::ecam_write};
  Space window_{*this, &PciRoot::window_read, &PciRoot::window_write};
};

}  // namespace vmm::devices::pci
