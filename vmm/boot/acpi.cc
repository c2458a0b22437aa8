#include "vmm/boot/acpi.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

#include "devices/error.h"
#include "devices/pci/pci_root.h"
#include "devices/pvpanic.h"
#include "vmm/boot/acpi_tables.h"
#include "vmm/boot/aml.h"
#include "vmm/boot/layout.h"

namespace vmm::boot::acpi {

namespace {

using Bytes = std::vector<std::uint8_t>;

constexpr char kOemId[] = "VMMKVM";
constexpr char kCreatorId[] = "VMM ";
constexpr std::uint32_t kOemRevision = 1;
constexpr std::uint32_t kCreatorRevision = 1;

template <std::size_t N>
void set_chars(char (&field)[N], std::string_view text) {
  std::memset(field, ' ', N);
  std::memcpy(field, text.data(), std::min(N, text.size()));
}

TableHeader make_header(std::string_view signature, std::uint8_t revision) {
  TableHeader header{};
  std::memcpy(header.signature, signature.data(), sizeof(header.signature));
  header.revision = revision;
  set_chars(header.oem_id, kOemId);
  // "VMM" plus the signature tells the tables apart in a guest's log.
  set_chars(header.oem_table_id, std::string("VMM") + std::string(signature));
  header.oem_revision = kOemRevision;
  set_chars(header.creator_id, kCreatorId);
  header.creator_revision = kCreatorRevision;
  return header;
}

// resize + memcpy rather than insert: GCC 12 at -O3 reports a bogus
// stringop-overflow inside vector::insert for these byte ranges.
void append_bytes(Bytes& out, const void* data, std::size_t size) {
  const std::size_t old_size = out.size();
  out.resize(old_size + size);
  std::memcpy(out.data() + old_size, data, size);
}

template <typename T>
void append_object(Bytes& out, const T& object) {
  static_assert(std::is_trivially_copyable_v<T>);
  append_bytes(out, &object, sizeof(T));
}

template <typename T>
Bytes object_bytes(const T& object) {
  Bytes out;
  append_object(out, object);
  return out;
}

// Fills in a finished table's length and checksum (the header's first two
// variable fields), so the builders never have to size a table up front.
void seal(Bytes& table) {
  const auto length = static_cast<std::uint32_t>(table.size());
  std::memcpy(table.data() + offsetof(TableHeader, length), &length, sizeof(length));
  table[offsetof(TableHeader, checksum)] = 0;
  table[offsetof(TableHeader, checksum)] = checksum_complement(table);
}

// Bump allocator over an image of the ACPI area; written to the guest in one
// piece so that stale tables from an earlier load cannot survive.
class Area {
 public:
  Area() : image_(layout::kAcpiEnd - layout::kAcpiAddress, 0) {}

  std::uint64_t place(std::span<const std::uint8_t> bytes, std::uint64_t alignment) {
    const std::uint64_t offset = layout::align_up(used_, alignment);
    if (offset > image_.size() || bytes.size() > image_.size() - offset) {
      throw Error(fmt::format("the ACPI tables need more than the {} KiB reserved for them", image_.size() >> 10));
    }
    std::memcpy(image_.data() + offset, bytes.data(), bytes.size());
    used_ = offset + bytes.size();
    return layout::kAcpiAddress + offset;
  }

  std::uint64_t end() const noexcept { return layout::kAcpiAddress + used_; }
  std::span<const std::uint8_t> image() const noexcept { return image_; }
  // Lets the RSDP be patched once the XSDT address is known.
  std::span<std::uint8_t> at(std::uint64_t address, std::size_t size) {
    return std::span(image_).subspan(address - layout::kAcpiAddress, size);
  }

 private:
  Bytes image_;
  std::uint64_t used_ = 0;
};

Bytes build_dsdt(const AcpiConfig& config) {
  Bytes table = object_bytes(make_header("DSDT", kDsdtRevision));
  const Bytes aml = dsdt_aml(config);
  append_bytes(table, aml.data(), aml.size());
  seal(table);
  return table;
}

Bytes build_fadt(std::uint64_t dsdt, std::uint64_t facs) {
  Fadt fadt{};
  fadt.header = make_header("FACP", kFadtRevision);
  fadt.header.length = sizeof(Fadt);
  fadt.firmware_ctrl = static_cast<std::uint32_t>(facs);
  fadt.dsdt = static_cast<std::uint32_t>(dsdt);
  fadt.sci_int = kSciIrq;
  // SMI_CMD = 0: there is no SMM to hand over from; ACPI mode is always on.
  fadt.smi_cmd = 0;
  fadt.pm1a_evt_blk = kPm1aEventPort;
  fadt.pm1a_cnt_blk = kPm1aControlPort;
  fadt.pm1_evt_len = kPm1EventLength;
  fadt.pm1_cnt_len = kPm1ControlLength;
  fadt.pm_tmr_blk = kPmTimerPort;
  fadt.pm_tmr_len = kPmTimerLength;
  // Latencies above 100 / 1000 us mean "C2 / C3 not supported".
  fadt.p_lvl2_lat = 101;
  fadt.p_lvl3_lat = 1001;
  // The CMOS holds the century at 0x32 (the RTC model keeps it), so Linux
  // reads four-digit years instead of guessing 19xx/20xx.
  fadt.century = kCmosCenturyIndex;
  fadt.iapc_boot_arch = kBootArchLegacyDevices | kBootArch8042 | kBootArchVgaNotPresent;
  fadt.flags = kFadtWbinvd | kFadtProcC1 | kFadtSleepButton | kFadtResetRegSupported;
  fadt.reset_reg = {kAddressSpaceSystemIo, 8, 0, kAccessByte, kResetPort};
  fadt.reset_value = kResetValue;
  fadt.minor_version = kFadtMinorRevision;
  fadt.x_dsdt = dsdt;
  fadt.x_pm1a_evt_blk = {kAddressSpaceSystemIo, kPm1EventLength * 8, 0, kAccessWord, kPm1aEventPort};
  fadt.x_pm1a_cnt_blk = {kAddressSpaceSystemIo, kPm1ControlLength * 8, 0, kAccessWord, kPm1aControlPort};
  fadt.x_pm_tmr_blk = {kAddressSpaceSystemIo, kPmTimerLength * 8, 0, kAccessDword, kPmTimerPort};
  Bytes table = object_bytes(fadt);
  seal(table);
  return table;
}

Bytes build_facs() {
  Facs facs{};
  std::memcpy(facs.signature, "FACS", 4);
  facs.length = sizeof(Facs);
  facs.version = kFacsVersion;
  return object_bytes(facs);
}

Bytes build_madt(unsigned cpus) {
  MadtHeader madt{};
  madt.header = make_header("APIC", kMadtRevision);
  madt.local_apic_address = kLocalApicAddress;
  madt.flags = kMadtPcatCompat;
  Bytes table = object_bytes(madt);
  for (unsigned cpu = 0; cpu < cpus; ++cpu) {
    const auto id = static_cast<std::uint8_t>(cpu);
    append_object(table, MadtLocalApic{kMadtTypeLocalApic, sizeof(MadtLocalApic), id, id, kMadtLocalApicEnabled});
  }
  append_object(table, MadtIoApic{kMadtTypeIoApic, sizeof(MadtIoApic), io_apic_id(cpus), 0, kIoApicAddress,
                                  kIoApicGsiBase});
  // The PIT's IRQ 0 arrives on I/O APIC pin 2 (pin 0 is the 8259 cascade);
  // conforming flags mean ISA's edge-triggered, active-high.
  append_object(table, MadtInterruptOverride{kMadtTypeInterruptOverride, sizeof(MadtInterruptOverride), 0, 0, 2,
                                             kMpsIntiConforming});
  append_object(table, MadtInterruptOverride{kMadtTypeInterruptOverride, sizeof(MadtInterruptOverride), 0,
                                             kSciIrq, kSciIrq, kMpsIntiActiveHigh | kMpsIntiLevel});
  append_object(table, MadtLocalApicNmi{kMadtTypeLocalApicNmi, sizeof(MadtLocalApicNmi), kAllProcessors,
                                        kMpsIntiConforming, 1});
  seal(table);
  return table;
}

Bytes build_hpet() {
  HpetTable hpet{};
  hpet.header = make_header("HPET", kHpetRevision);
  hpet.header.length = sizeof(HpetTable);
  hpet.event_timer_block_id = kHpetEventTimerBlockId;
  hpet.base_address = {kAddressSpaceSystemMemory, 64, 0, 0, kHpetAddress};
  hpet.hpet_number = 0;
  hpet.minimum_tick = kHpetMinimumTick;
  hpet.page_protection = 0;
  Bytes table = object_bytes(hpet);
  seal(table);
  return table;
}

Bytes build_mcfg() {
  McfgHeader mcfg{};
  mcfg.header = make_header("MCFG", kMcfgRevision);
  Bytes table = object_bytes(mcfg);
  append_object(table, McfgEntry{devices::pci::PciRoot::kEcamBase, 0, 0, 0, 0});  // segment 0, bus 0 only
  seal(table);
  return table;
}

template <typename Pointer>
Bytes build_root_table(std::string_view signature, const std::vector<std::uint64_t>& entries) {
  Bytes table = object_bytes(make_header(signature, kRootTableRevision));
  for (std::uint64_t entry : entries) append_object(table, static_cast<Pointer>(entry));
  seal(table);
  return table;
}

}  // namespace

std::uint8_t checksum_complement(std::span<const std::uint8_t> bytes) noexcept {
  const unsigned sum = std::accumulate(bytes.begin(), bytes.end(), 0u);
  return static_cast<std::uint8_t>(0x100 - (sum & 0xFF));
}

namespace {

// \_SB.PCI0: bus 0 behind a PCI host bridge, with the ranges it decodes
// and the INTx routing of every slot.
// The interrupt model the OS chose through \_PIC: 0 PIC (ACPI's default
// until the OS says otherwise), 1 APIC. _PRT reads it.
constexpr const char* kInterruptModel = "\\PICM";
constexpr const char* kApicRoutes = "PRTA";
constexpr const char* kPicRoutes = "PRTP";

aml::Bytes pci_host_bridge() {
  using namespace aml;
  using devices::pci::PciRoot;
  const auto window_base = static_cast<std::uint32_t>(PciRoot::kMmioWindowBase);
  const auto window_last = static_cast<std::uint32_t>(PciRoot::kMmioWindowBase + PciRoot::kMmioWindowSize - 1);
  const auto config_first = static_cast<std::uint16_t>(PciRoot::kConfigIoPort);
  const auto config_last = static_cast<std::uint16_t>(PciRoot::kConfigIoPort + PciRoot::kConfigIoSize - 1);
  const Bytes crs = ResourceTemplate()
                        .word_bus_number(0, 0)
                        .io(config_first, static_cast<std::uint8_t>(PciRoot::kConfigIoSize))
                        .word_io(0, config_first - 1)
                        .word_io(config_last + 1, 0xFFFF)
                        .dword_memory(window_base, window_last)
                        .buffer();
  // _PRT entries: { address (slot << 16 | 0xFFFF: any function), pin
  // (0 = INTA#), source (0: the fourth field is a GSI), GSI }. In PIC mode
  // GSIs 0-15 are the 8259 pair's inputs, so no link devices are needed.
  std::vector<Bytes> apic_routes, pic_routes;
  for (unsigned slot = 1; slot < PciRoot::kSlots; ++slot) {
    const Bytes address = integer((std::uint64_t{slot} << 16) | 0xFFFF);
    apic_routes.push_back(package({address, integer(0), integer(0), integer(pci_intx_gsi(slot))}));
    pic_routes.push_back(package({address, integer(0), integer(0), integer(pci_intx_pic_irq(slot))}));
  }
  return device("PCI0", {name("_HID", eisa_id("PNP0A03")), name("_UID", integer(0)), name("_ADR", integer(0)),
                         name("_BBN", integer(0)), name("_CRS", crs), name(kApicRoutes, package(apic_routes)),
                         name(kPicRoutes, package(pic_routes)),
                         method("_PRT", 0,
                                {if_then(reference(kInterruptModel), {return_value(reference(kApicRoutes))}),
                                 return_value(reference(kPicRoutes))})});
}

}  // namespace

std::vector<std::uint8_t> dsdt_aml(const AcpiConfig& config) {
  using namespace aml;
  std::vector<Bytes> devices = {
      device("COM1", {name("_HID", eisa_id("PNP0501")),
                      name("_CRS", ResourceTemplate().io(0x3F8, 8).irq(4).buffer())}),
      device("PS2K", {name("_HID", eisa_id("PNP0303")),
                      name("_CRS", ResourceTemplate().io(0x60, 1).io(0x64, 1).irq(1).buffer())}),
      device("RTC", {name("_HID", eisa_id("PNP0B00")),
                     name("_CRS", ResourceTemplate().io(0x70, 2).irq(8).buffer())}),
      // pvpanic, as QEMU names it: Linux's pvpanic driver binds to this ID.
      device("PEVT", {name("_HID", string("QEMU0001")),
                      name("_CRS", ResourceTemplate().io(devices::PvPanic::kPort, 1).buffer())}),
  };
  devices.push_back(pci_host_bridge());
  // Motherboard resources: what no device's _CRS claims but the OS must not
  // hand out, here the ECAM range.
  devices.push_back(device("MRES", {name("_HID", eisa_id("PNP0C02")), name("_UID", integer(0)),
                                    name("_CRS", ResourceTemplate()
                                                     .memory32_fixed(static_cast<std::uint32_t>(
                                                                         devices::pci::PciRoot::kEcamBase),
                                                                     static_cast<std::uint32_t>(
                                                                         devices::pci::PciRoot::kEcamSize))
                                                     .buffer())}));
  if (config.hpet) {
    devices.push_back(device("HPET", {name("_HID", eisa_id("PNP0103")),
                                      name("_CRS", ResourceTemplate().memory32_fixed(kHpetAddress, kHpetSize).buffer())}));
  }
  // \_S5: SLP_TYPa, SLP_TYPb, two reserved. The guest writes SLP_TYPa into
  // PM1a_CNT to power off.
  return concat({
      name("\\_S5", package({integer(kSlpTypS5), integer(kSlpTypS5), integer(0), integer(0)})),
      name(kInterruptModel, integer(0)),
      method("\\_PIC", 1, {store(arg(0), kInterruptModel)}),
      scope("\\_SB", devices),
  });
}

AcpiTables write_acpi_tables(devices::GuestMemory& memory, const AcpiConfig& config) {
  if (config.cpus == 0 || config.cpus > kMaxCpus) {
    throw Error(fmt::format("{} vCPUs requested; between 1 and {} are supported", config.cpus, kMaxCpus));
  }
  Area area;
  AcpiTables tables;
  // The RSDP goes first so that it sits at the start of the scan window.
  Rsdp rsdp{};
  tables.rsdp = area.place(object_bytes(rsdp), 16);
  tables.facs = area.place(build_facs(), 64);
  tables.dsdt = area.place(build_dsdt(config), 16);
  tables.fadt = area.place(build_fadt(tables.dsdt, tables.facs), 16);
  tables.madt = area.place(build_madt(config.cpus), 16);
  tables.mcfg = area.place(build_mcfg(), 16);
  std::vector<std::uint64_t> entries = {tables.fadt, tables.madt, tables.mcfg};
  if (config.hpet) {
    tables.hpet = area.place(build_hpet(), 16);
    entries.push_back(*tables.hpet);
  }
  tables.xsdt = area.place(build_root_table<std::uint64_t>("XSDT", entries), 16);
  tables.rsdt = area.place(build_root_table<std::uint32_t>("RSDT", entries), 16);
  tables.end = area.end();

  std::memcpy(rsdp.signature, "RSD PTR ", sizeof(rsdp.signature));
  set_chars(rsdp.oem_id, kOemId);
  rsdp.revision = kRsdpRevision;
  rsdp.rsdt_address = static_cast<std::uint32_t>(tables.rsdt);
  rsdp.length = sizeof(Rsdp);
  rsdp.xsdt_address = tables.xsdt;
  const Bytes first = object_bytes(rsdp);
  rsdp.checksum = checksum_complement(std::span(first).first(kRsdpV1Length));
  const Bytes second = object_bytes(rsdp);
  rsdp.extended_checksum = checksum_complement(second);
  const Bytes sealed = object_bytes(rsdp);
  std::memcpy(area.at(tables.rsdp, sizeof(Rsdp)).data(), sealed.data(), sealed.size());

  if (!memory.write(layout::kAcpiAddress, area.image())) {
    throw Error(fmt::format("guest RAM does not cover the ACPI area [{:#x}, {:#x}); the guest needs at least 1 MiB",
                            layout::kAcpiAddress, layout::kAcpiEnd));
  }
  return tables;
}

}  // namespace vmm::boot::acpi
