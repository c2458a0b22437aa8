// Per-VM ACPI tables: RSDP, RSDT, XSDT, FADT (+FACS), DSDT, MADT, MCFG and,
// when the HPET is enabled, the HPET table. They describe a PC that is not
// hardware-reduced: fixed PM1a event/control blocks, an SCI on IRQ 9, a
// reset register, and legacy ISA devices in the DSDT.
//
// The constants below are the contract with the device models: the VMM must
// implement the ports and values the tables promise.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "devices/guest_memory.h"
#include "devices/pci/intx_router.h"

namespace vmm::boot::acpi {

// --- What the VMM must implement -------------------------------------------

// System control interrupt: ISA IRQ 9, routed to GSI 9 level-triggered,
// active-high (see the MADT interrupt source override).
inline constexpr unsigned kSciIrq = 9;

// The CMOS register holding the century, named by the FADT.
inline constexpr std::uint8_t kCmosCenturyIndex = 0x32;

// PM1a event block: PM1_STS (16 bits) at the base, PM1_EN (16 bits) at +2.
inline constexpr std::uint16_t kPm1aEventPort = 0x600;
inline constexpr std::uint8_t kPm1EventLength = 4;
inline constexpr std::uint16_t kPm1aStatusPort = kPm1aEventPort;
inline constexpr std::uint16_t kPm1aEnablePort = kPm1aEventPort + 2;
// PM1_STS / PM1_EN bits: the power button is a fixed feature, so the VMM
// can ask the guest to shut down by setting PWRBTN_STS and raising the SCI
// (when the guest has set PWRBTN_EN).
inline constexpr std::uint16_t kPm1PowerButton = 1u << 8;
// Write-one-to-clear wake status, set by the platform on wake-up.
inline constexpr std::uint16_t kPm1WakeStatus = 1u << 15;

// PM1a control block (PM1_CNT, 16 bits).
inline constexpr std::uint16_t kPm1aControlPort = 0x604;
// The PM timer: 4 bytes, 24 bits of count (FADT flag TMR_VAL_EXT clear).
inline constexpr std::uint16_t kPmTimerPort = 0x608;
inline constexpr std::uint8_t kPmTimerLength = 4;
inline constexpr std::uint8_t kPm1ControlLength = 2;
// SCI_EN must read as 1: with SMI_CMD = 0 the platform is always in ACPI mode.
inline constexpr std::uint16_t kPm1ControlSciEnable = 1u << 0;
// SLP_TYP (bits 12:10) and SLP_EN (bit 13): a write with SLP_EN set and
// SLP_TYP == kSlpTypS5 is the guest powering off.
inline constexpr unsigned kPm1ControlSlpTypShift = 10;
inline constexpr std::uint16_t kPm1ControlSlpTypMask = 0x7u << kPm1ControlSlpTypShift;
inline constexpr std::uint16_t kPm1ControlSlpEnable = 1u << 13;
inline constexpr std::uint16_t kSlpTypS5 = 5;

// FADT reset register: writing kResetValue to this I/O port resets the VM.
inline constexpr std::uint16_t kResetPort = 0xCF9;
inline constexpr std::uint8_t kResetValue = 0x06;

// Interrupt controller and HPET addresses the MADT/HPET tables announce.
inline constexpr std::uint32_t kLocalApicAddress = 0xFEE0'0000;
inline constexpr std::uint32_t kIoApicAddress = 0xFEC0'0000;
inline constexpr std::uint32_t kIoApicGsiBase = 0;
inline constexpr std::uint32_t kHpetAddress = 0xFED0'0000;
inline constexpr std::uint32_t kHpetSize = 0x400;
// The HPET the table describes: 3 comparators, 64-bit counter, legacy
// replacement routing, PCI vendor 0x8086, revision 1. The HPET model's
// capabilities register should agree (its bits 31:0 are this value).
inline constexpr unsigned kHpetComparators = 3;
inline constexpr std::uint32_t kHpetEventTimerBlockId =
    (0x8086u << 16) | (1u << 15) /* legacy replacement */ | (1u << 13) /* 64-bit counter */ |
    ((kHpetComparators - 1) << 8) | 0x01 /* revision */;

// PCI bus 0 (devices/pci/pci_root.h has the layout): the DSDT's host bridge
// \_SB.PCI0 hands its bus the I/O ports outside 0xCF8-0xCFF and the 32-bit
// MMIO window at devices::pci::PciRoot::kMmioWindowBase. Its _PRT routes
// INTA# of slot s as devices/pci/intx_router.h wires it: in APIC mode (the
// OS called \_PIC(1)) to IOAPIC pin pci_intx_gsi(s), in PIC mode (the
// default, or \_PIC(0)) to ISA IRQ pci_intx_pic_irq(s) on the 8259 pair;
// level-triggered, active-low either way (the PCI default for a GSI without
// an override). Only INTA# is routed: a single-function device uses no other.
constexpr unsigned pci_intx_gsi(unsigned slot) noexcept { return devices::pci::IntxRouter::ioapic_pin_for(slot); }
constexpr unsigned pci_intx_pic_irq(unsigned slot) noexcept { return devices::pci::IntxRouter::pic_irq_for(slot); }
// Bus 0's configuration space is also memory-mapped (ECAM) at
// PciRoot::kEcamBase: the MCFG table names it, and the DSDT's motherboard
// resources device (PNP0C02) and the e820 map reserve it, which Linux checks
// before it uses it.

// APIC IDs 0xFF is the broadcast ID, and the I/O APIC needs one of its own.
inline constexpr unsigned kMaxCpus = 254;
// The I/O APIC takes the first APIC ID after the vCPUs' (vCPU i has ID i),
// so the two never clash. The I/O APIC model must report this ID.
constexpr std::uint8_t io_apic_id(unsigned cpus) noexcept { return static_cast<std::uint8_t>(cpus); }

// --- Building the tables ---------------------------------------------------

struct AcpiConfig {
  unsigned cpus = 1;
  bool hpet = true;
};

// Guest-physical addresses of the tables, for logging and tests.
struct AcpiTables {
  std::uint64_t rsdp = 0;
  std::uint64_t rsdt = 0;
  std::uint64_t xsdt = 0;
  std::uint64_t fadt = 0;
  std::uint64_t facs = 0;
  std::uint64_t dsdt = 0;
  std::uint64_t madt = 0;
  std::uint64_t mcfg = 0;
  std::optional<std::uint64_t> hpet;
  // One past the last byte used.
  std::uint64_t end = 0;
};

// Clears the ACPI area (layout::kAcpiAddress up to 1 MiB) and writes the
// tables there. Throws vmm::Error when cpus is 0 or above kMaxCpus, or when
// guest RAM does not cover the area.
AcpiTables write_acpi_tables(devices::GuestMemory& memory, const AcpiConfig& config);

// The DSDT's AML body (without the table header), exposed for tests.
std::vector<std::uint8_t> dsdt_aml(const AcpiConfig& config);

}  // namespace vmm::boot::acpi
