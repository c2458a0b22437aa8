#include "vmm/boot/acpi.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <stdexcept>

#include "devices/ioapic.h"
#include "tests/boot/aml_reader.h"
#include "tests/boot/test_support.h"
#include "vmm/boot/acpi_tables.h"
#include "vmm/boot/layout.h"

namespace vmm::boot::acpi {
namespace {

using test::Bytes;
using test::read_guest;
using test::read_guest_bytes;

unsigned byte_sum(const Bytes& bytes) {
  return std::accumulate(bytes.begin(), bytes.end(), 0u) & 0xFF;
}

// Reads a whole table (length from its header) and checks signature and
// checksum on the way.
Bytes read_table(const devices::GuestMemory& memory, std::uint64_t address, const char* signature) {
  const auto header = read_guest<TableHeader>(memory, address);
  EXPECT_EQ(std::string(test::by_value(header.signature), 4), signature) << "at 0x" << std::hex << address;
  EXPECT_GE(test::by_value(header.length), sizeof(TableHeader));
  const Bytes table = read_guest_bytes(memory, address, header.length);
  EXPECT_EQ(byte_sum(table), 0u) << signature << " checksum";
  EXPECT_EQ(std::string(test::by_value(header.oem_id), 6), "VMMKVM");
  return table;
}

template <typename T>
std::vector<T> root_entries(const Bytes& table) {
  std::vector<T> entries((table.size() - sizeof(TableHeader)) / sizeof(T));
  std::memcpy(entries.data(), table.data() + sizeof(TableHeader), entries.size() * sizeof(T));
  return entries;
}

struct AcpiFixture : ::testing::Test {
  devices::GuestMemory memory = devices::GuestMemory::allocate(16 * test::kMiB);
};

TEST_F(AcpiFixture, RsdpIsFoundByALegacyScanWithBothChecksums) {
  const AcpiTables tables = write_acpi_tables(memory, {2, true});
  std::vector<std::uint64_t> found;
  for (std::uint64_t address = 0xE0000; address < 0x100000; address += 16) {
    char signature[8];
    ASSERT_TRUE(memory.read_obj(address, signature));
    if (std::memcmp(signature, "RSD PTR ", 8) == 0) found.push_back(address);
  }
  ASSERT_EQ(found, std::vector<std::uint64_t>{tables.rsdp});

  const Bytes rsdp = read_guest_bytes(memory, tables.rsdp, sizeof(Rsdp));
  EXPECT_EQ(byte_sum(Bytes(rsdp.begin(), rsdp.begin() + 20)), 0u);
  EXPECT_EQ(byte_sum(rsdp), 0u);
  const auto fields = read_guest<Rsdp>(memory, tables.rsdp);
  EXPECT_EQ(test::by_value(fields.revision), 2);
  EXPECT_EQ(test::by_value(fields.length), 36u);
  EXPECT_EQ(test::by_value(fields.xsdt_address), tables.xsdt);
  EXPECT_EQ(test::by_value(fields.rsdt_address), tables.rsdt);
  EXPECT_LE(tables.end, layout::kAcpiEnd);
}

TEST_F(AcpiFixture, RootTablesListFadtMadtMcfgAndHpet) {
  const AcpiTables tables = write_acpi_tables(memory, {1, true});
  ASSERT_TRUE(tables.hpet);
  const std::vector<std::uint64_t> expected = {tables.fadt, tables.madt, tables.mcfg, *tables.hpet};
  EXPECT_EQ(root_entries<std::uint64_t>(read_table(memory, tables.xsdt, "XSDT")), expected);
  const auto rsdt = root_entries<std::uint32_t>(read_table(memory, tables.rsdt, "RSDT"));
  EXPECT_EQ(std::vector<std::uint64_t>(rsdt.begin(), rsdt.end()), expected);
  read_table(memory, tables.fadt, "FACP");
  read_table(memory, tables.madt, "APIC");
  read_table(memory, *tables.hpet, "HPET");
  read_table(memory, tables.dsdt, "DSDT");
}

// The ECAM the VMM maps, for segment 0, bus 0 only, as the PCI Firmware
// Specification lays the MCFG out.
TEST_F(AcpiFixture, McfgNamesBusZerosEcam) {
  const AcpiTables tables = write_acpi_tables(memory, {2, true});
  const Bytes mcfg = read_table(memory, tables.mcfg, "MCFG");
  ASSERT_EQ(mcfg.size(), sizeof(McfgHeader) + sizeof(McfgEntry));
  McfgEntry entry{};
  std::memcpy(&entry, mcfg.data() + sizeof(McfgHeader), sizeof entry);
  EXPECT_EQ(test::by_value(entry.base_address), devices::pci::PciRoot::kEcamBase);
  EXPECT_EQ(test::by_value(entry.segment), 0u);
  EXPECT_EQ(test::by_value(entry.start_bus), 0u);
  EXPECT_EQ(test::by_value(entry.end_bus), 0u);
  EXPECT_EQ(devices::pci::PciRoot::kEcamSize, 1u << 20) << "one bus: 32 devices x 8 functions x 4 KiB";
}

TEST_F(AcpiFixture, WithoutHpetThereIsNoHpetTableOrDevice) {
  write_acpi_tables(memory, {1, true});
  // A second load over the first must not leave the old HPET table behind.
  const AcpiTables tables = write_acpi_tables(memory, {1, false});
  EXPECT_FALSE(tables.hpet);
  const std::vector<std::uint64_t> expected = {tables.fadt, tables.madt, tables.mcfg};
  EXPECT_EQ(root_entries<std::uint64_t>(read_table(memory, tables.xsdt, "XSDT")), expected);
  const Bytes area = read_guest_bytes(memory, layout::kAcpiAddress, layout::kAcpiEnd - layout::kAcpiAddress);
  const std::string_view text(reinterpret_cast<const char*>(area.data()), area.size());
  EXPECT_EQ(text.find("HPET"), std::string_view::npos);
  EXPECT_EQ(text.find("RSD PTR "), tables.rsdp - layout::kAcpiAddress);
  EXPECT_EQ(text.rfind("RSD PTR "), tables.rsdp - layout::kAcpiAddress);
}

TEST_F(AcpiFixture, FadtDescribesPmBlocksResetRegisterAndDsdt) {
  const AcpiTables tables = write_acpi_tables(memory, {1, true});
  read_table(memory, tables.fadt, "FACP");
  const auto fadt = read_guest<Fadt>(memory, tables.fadt);
  EXPECT_EQ(test::by_value(fadt.header.revision), 6);
  EXPECT_EQ(test::by_value(fadt.header.length), 276u);
  EXPECT_EQ(test::by_value(fadt.dsdt), tables.dsdt);
  EXPECT_EQ(test::by_value(fadt.x_dsdt), tables.dsdt);
  EXPECT_EQ(test::by_value(fadt.firmware_ctrl), tables.facs);
  EXPECT_EQ(test::by_value(fadt.x_firmware_ctrl), 0u);
  EXPECT_EQ(test::by_value(fadt.sci_int), 9);
  EXPECT_EQ(test::by_value(fadt.smi_cmd), 0u);
  EXPECT_EQ(test::by_value(fadt.pm1a_evt_blk), kPm1aEventPort);
  EXPECT_EQ(test::by_value(fadt.pm1_evt_len), 4);
  EXPECT_EQ(test::by_value(fadt.pm1a_cnt_blk), kPm1aControlPort);
  EXPECT_EQ(test::by_value(fadt.pm1_cnt_len), 2);
  EXPECT_EQ(test::by_value(fadt.pm1b_evt_blk), 0u);
  EXPECT_EQ(test::by_value(fadt.pm1b_cnt_blk), 0u);
  EXPECT_EQ(test::by_value(fadt.x_pm1a_evt_blk.space_id), kAddressSpaceSystemIo);
  EXPECT_EQ(test::by_value(fadt.x_pm1a_evt_blk.address), kPm1aEventPort);
  EXPECT_EQ(test::by_value(fadt.x_pm1a_evt_blk.bit_width), 32);
  EXPECT_EQ(test::by_value(fadt.x_pm1a_cnt_blk.space_id), kAddressSpaceSystemIo);
  EXPECT_EQ(test::by_value(fadt.x_pm1a_cnt_blk.address), kPm1aControlPort);
  EXPECT_EQ(test::by_value(fadt.x_pm1a_cnt_blk.bit_width), 16);
  // The PM timer: Linux's acpi_pm clocksource reads it here, 24 bits wide.
  EXPECT_EQ(test::by_value(fadt.pm_tmr_blk), 0x608u);
  EXPECT_EQ(test::by_value(fadt.pm_tmr_len), 4);
  EXPECT_EQ(test::by_value(fadt.x_pm_tmr_blk.space_id), kAddressSpaceSystemIo);
  EXPECT_EQ(test::by_value(fadt.x_pm_tmr_blk.address), 0x608u);
  EXPECT_EQ(test::by_value(fadt.x_pm_tmr_blk.bit_width), 32);
  EXPECT_EQ(test::by_value(fadt.flags) & (1u << 8), 0u) << "TMR_VAL_EXT clear: a 24-bit counter";

  EXPECT_TRUE(fadt.flags & kFadtResetRegSupported);
  EXPECT_FALSE(fadt.flags & kFadtHardwareReduced);
  EXPECT_EQ(test::by_value(fadt.reset_reg.space_id), kAddressSpaceSystemIo);
  EXPECT_EQ(test::by_value(fadt.reset_reg.bit_width), 8);
  EXPECT_EQ(test::by_value(fadt.reset_reg.bit_offset), 0);
  EXPECT_EQ(test::by_value(fadt.reset_reg.access_size), kAccessByte);
  EXPECT_EQ(test::by_value(fadt.reset_reg.address), 0xCF9u);
  EXPECT_EQ(test::by_value(fadt.reset_value), 0x06);
  EXPECT_EQ(test::by_value(fadt.century), 0x32) << "the CMOS century register";
  EXPECT_TRUE(fadt.iapc_boot_arch & kBootArch8042);
  EXPECT_TRUE(fadt.iapc_boot_arch & kBootArchLegacyDevices);

  const auto facs = read_guest<Facs>(memory, tables.facs);
  EXPECT_EQ(std::string(test::by_value(facs.signature), 4), "FACS");
  EXPECT_EQ(test::by_value(facs.length), 64u);
  EXPECT_EQ(tables.facs % 64, 0u);
}

struct Device {
  std::string hid;
  std::vector<test::AmlResource> resources;
};

std::map<std::string, Device> dsdt_devices(const std::vector<test::AmlObject>& terms) {
  std::map<std::string, Device> devices;
  for (const test::AmlObject& term : terms) {
    if (term.kind != test::AmlObject::Kind::scope || term.name != "\\_SB_") continue;
    for (const test::AmlObject& device : term.children) {
      EXPECT_EQ(device.kind, test::AmlObject::Kind::device);
      const test::AmlObject* hid = test::find_name(device.children, "_HID");
      const test::AmlObject* crs = test::find_name(device.children, "_CRS");
      if (hid == nullptr || crs == nullptr) {
        ADD_FAILURE() << device.name << " lacks _HID or _CRS";
        continue;
      }
      // A _HID is a compressed EISA ID, or a string for IDs that are not.
      devices[device.name] = {hid->kind == test::AmlObject::Kind::string
                                  ? hid->text
                                  : test::decode_eisa_id(static_cast<std::uint32_t>(hid->value)),
                              test::parse_resources(crs->data)};
    }
  }
  return devices;
}

TEST_F(AcpiFixture, DsdtIsWellFormedWithS5AndLegacyDevices) {
  const AcpiTables tables = write_acpi_tables(memory, {1, true});
  const Bytes dsdt = read_table(memory, tables.dsdt, "DSDT");
  EXPECT_EQ(dsdt[8], 2) << "DSDT revision 2 for 64-bit integers";
  const auto terms = test::parse_aml(std::span(dsdt).subspan(sizeof(TableHeader)));

  const test::AmlObject* s5 = test::find_name(terms, "\\_S5_");
  ASSERT_NE(s5, nullptr);
  ASSERT_EQ(s5->kind, test::AmlObject::Kind::package);
  ASSERT_EQ(s5->children.size(), 4u);
  EXPECT_EQ(s5->children[0].value, kSlpTypS5);
  EXPECT_EQ(s5->children[1].value, kSlpTypS5);
  EXPECT_EQ(s5->children[2].value, 0u);
  EXPECT_EQ(s5->children[3].value, 0u);
  // What the VMM decodes: a PM1a_CNT write of SLP_TYP = 5 with SLP_EN.
  EXPECT_EQ((kSlpTypS5 << kPm1ControlSlpTypShift) | kPm1ControlSlpEnable, 0x3400);

  using Kind = test::AmlResource::Kind;
  const auto devices = dsdt_devices(terms);
  ASSERT_EQ(devices.size(), 7u);
  const Device& resources = devices.at("MRES");
  EXPECT_EQ(resources.hid, "PNP0C02") << "motherboard resources";
  ASSERT_EQ(resources.resources.size(), 1u);
  EXPECT_EQ(resources.resources[0].kind, Kind::memory32_fixed);
  EXPECT_EQ(resources.resources[0].base, devices::pci::PciRoot::kEcamBase) << "the ECAM, reserved";
  EXPECT_EQ(resources.resources[0].length, devices::pci::PciRoot::kEcamSize);
  const Device& com1 = devices.at("COM1");
  EXPECT_EQ(com1.hid, "PNP0501");
  ASSERT_EQ(com1.resources.size(), 2u);
  EXPECT_EQ(com1.resources[0].kind, Kind::io);
  EXPECT_EQ(com1.resources[0].base, 0x3F8u);
  EXPECT_EQ(com1.resources[0].length, 8u);
  EXPECT_TRUE(com1.resources[0].decode16);
  EXPECT_EQ(com1.resources[1].kind, Kind::irq);
  EXPECT_EQ(com1.resources[1].irq_mask, 1u << 4);

  const Device& keyboard = devices.at("PS2K");
  EXPECT_EQ(keyboard.hid, "PNP0303");
  ASSERT_EQ(keyboard.resources.size(), 3u);
  EXPECT_EQ(keyboard.resources[0].base, 0x60u);
  EXPECT_EQ(keyboard.resources[1].base, 0x64u);
  EXPECT_EQ(keyboard.resources[2].irq_mask, 1u << 1);

  const Device& rtc = devices.at("RTC_");
  EXPECT_EQ(rtc.hid, "PNP0B00");
  ASSERT_EQ(rtc.resources.size(), 2u);
  EXPECT_EQ(rtc.resources[0].base, 0x70u);
  EXPECT_EQ(rtc.resources[1].irq_mask, 1u << 8);

  const Device& pvpanic = devices.at("PEVT");
  EXPECT_EQ(pvpanic.hid, "QEMU0001") << "the ID Linux's pvpanic driver binds to";
  ASSERT_EQ(pvpanic.resources.size(), 1u);
  EXPECT_EQ(pvpanic.resources[0].kind, Kind::io);
  EXPECT_EQ(pvpanic.resources[0].base, 0x505u);
  EXPECT_EQ(pvpanic.resources[0].length, 1u);

  const Device& hpet = devices.at("HPET");
  EXPECT_EQ(hpet.hid, "PNP0103");
  ASSERT_EQ(hpet.resources.size(), 1u);
  EXPECT_EQ(hpet.resources[0].kind, Kind::memory32_fixed);
  EXPECT_EQ(hpet.resources[0].base, 0xFED00000u);
  EXPECT_EQ(hpet.resources[0].length, 0x400u);
}

TEST(AcpiDsdt, HpetDeviceOnlyWhenEnabled) {
  const auto without = test::parse_aml(dsdt_aml({1, false}));
  const auto devices = dsdt_devices(without);
  EXPECT_EQ(devices.size(), 6u);
  EXPECT_EQ(devices.count("HPET"), 0u);
  ASSERT_NE(test::find_name(without, "\\_S5_"), nullptr);
}

// What an OS does with the DSDT's interrupt routing, with just the AML those
// methods use: \\_PIC(argument) (unless it is absent: an OS that never
// calls it), then PCI0._PRT. Returns the package _PRT returns.
const test::AmlObject* evaluate_prt(const std::vector<test::AmlObject>& root, const test::AmlObject& pci0,
                                    std::optional<std::uint64_t> pic_argument) {
  using Kind = test::AmlObject::Kind;
  std::map<std::string, std::uint64_t> integers;
  for (const test::AmlObject& term : root) {
    if (term.kind == Kind::name && term.children.at(0).kind == Kind::integer) integers[term.name] = term.children[0].value;
  }
  const test::AmlObject* pic = test::find_method(root, "\\_PIC");
  if (pic == nullptr) throw std::runtime_error("no \\_PIC method");
  if (pic->value != 1) throw std::runtime_error("\\_PIC does not take one argument");
  if (pic_argument) {
    for (const test::AmlObject& statement : pic->children) {
      if (statement.kind != Kind::store || statement.children.at(0).kind != Kind::arg ||
          statement.children[0].value != 0 || statement.children.at(1).kind != Kind::reference ||
          integers.count(statement.children[1].name) == 0) {
        throw std::runtime_error("\\_PIC does more than store Arg0 into a root integer");
      }
      integers[statement.children[1].name] = *pic_argument;
    }
  }
  const test::AmlObject* prt = test::find_method(pci0.children, "_PRT");
  if (prt == nullptr) throw std::runtime_error("no PCI0._PRT method");
  std::function<const test::AmlObject*(const std::vector<test::AmlObject>&, std::size_t)> run =
      [&](const std::vector<test::AmlObject>& statements, std::size_t first) -> const test::AmlObject* {
    for (std::size_t i = first; i < statements.size(); ++i) {
      const test::AmlObject& statement = statements[i];
      if (statement.kind == Kind::if_ && statement.children.at(0).kind == Kind::reference) {
        if (integers.at(statement.children[0].name) != 0) {
          if (const test::AmlObject* returned = run(statement.children, 1)) return returned;
        }
      } else if (statement.kind == Kind::return_ && statement.children.at(0).kind == Kind::reference) {
        return test::find_name(pci0.children, statement.children[0].name);
      } else {
        throw std::runtime_error("_PRT uses a statement this evaluator does not know");
      }
    }
    return nullptr;
  };
  return run(prt->children, 0);
}

// The PCI host bridge hands its bus exactly what devices/pci/pci_root.h
// decodes, and routes each slot's INTA# to the pin the platform wires it to.
TEST(AcpiDsdt, PciHostBridgeDescribesTheBusWindowAndRouting) {
  using Kind = test::AmlResource::Kind;
  const auto terms = test::parse_aml(dsdt_aml({2, true}));
  const auto devices = dsdt_devices(terms);
  ASSERT_EQ(devices.count("PCI0"), 1u);
  const Device& pci = devices.at("PCI0");
  EXPECT_EQ(pci.hid, "PNP0A03");
  ASSERT_EQ(pci.resources.size(), 5u);
  const auto& bus = pci.resources[0];
  EXPECT_EQ(bus.kind, Kind::address_space);
  EXPECT_EQ(bus.space_type, 2);
  EXPECT_EQ(bus.base, 0u);
  EXPECT_EQ(bus.max, 0u);
  EXPECT_EQ(pci.resources[1].kind, Kind::io);
  EXPECT_EQ(pci.resources[1].base, 0xCF8u);
  EXPECT_EQ(pci.resources[1].length, 8u);
  for (int i : {2, 3}) {
    EXPECT_EQ(pci.resources[i].kind, Kind::address_space);
    EXPECT_EQ(pci.resources[i].space_type, 1);
    EXPECT_EQ(pci.resources[i].general_flags & 1, 0) << "a producer: the bridge hands the range to its bus";
  }
  EXPECT_EQ(pci.resources[2].base, 0u);
  EXPECT_EQ(pci.resources[2].max, 0xCF7u);
  EXPECT_EQ(pci.resources[3].base, 0xD00u);
  EXPECT_EQ(pci.resources[3].max, 0xFFFFu);
  const auto& window = pci.resources[4];
  EXPECT_EQ(window.kind, Kind::address_space);
  EXPECT_EQ(window.space_type, 0);
  EXPECT_EQ(window.general_flags, 0x0C) << "producer, positive decode, fixed minimum and maximum";
  EXPECT_EQ(window.base, 0xC0000000u);
  EXPECT_EQ(window.length, 0x20000000u);

  const test::AmlObject* pci0 = nullptr;
  for (const test::AmlObject& term : terms) {
    if (term.kind != test::AmlObject::Kind::scope) continue;
    for (const test::AmlObject& device : term.children) {
      if (device.name == "PCI0") pci0 = &device;
    }
  }
  ASSERT_NE(pci0, nullptr);
  struct Model {
    std::optional<std::uint64_t> pic_argument;  // none: the OS never calls \_PIC
    std::function<unsigned(unsigned)> route;
    const char* what;
  };
  for (const Model& model : {Model{std::nullopt, pci_intx_pic_irq, "no \\_PIC call: ACPI's PIC mode"},
                             Model{0, pci_intx_pic_irq, "\\_PIC(0): PIC mode"},
                             Model{1, pci_intx_gsi, "\\_PIC(1): APIC mode"}}) {
    SCOPED_TRACE(model.what);
    const test::AmlObject* prt = evaluate_prt(terms, *pci0, model.pic_argument);
    ASSERT_NE(prt, nullptr);
    ASSERT_EQ(prt->kind, test::AmlObject::Kind::package);
    ASSERT_EQ(prt->children.size(), 31u) << "slots 1-31";
    for (unsigned slot = 1; slot <= 31; ++slot) {
      const auto& entry = prt->children[slot - 1];
      ASSERT_EQ(entry.children.size(), 4u);
      EXPECT_EQ(entry.children[0].value, (std::uint64_t{slot} << 16) | 0xFFFF);
      EXPECT_EQ(entry.children[1].value, 0u) << "INTA#";
      EXPECT_EQ(entry.children[2].value, 0u) << "a GSI, not a link device";
      EXPECT_EQ(entry.children[3].value, model.route(slot));
    }
  }
  for (unsigned slot = 1; slot <= 31; ++slot) {
    EXPECT_GE(pci_intx_gsi(slot), 16u) << "clear of the ISA IRQs";
    EXPECT_LE(pci_intx_gsi(slot), 23u) << "on the 24-pin IOAPIC";
    EXPECT_TRUE(pci_intx_pic_irq(slot) == 10 || pci_intx_pic_irq(slot) == 11) << "ISA IRQs nothing else uses";
  }
  EXPECT_NE(pci_intx_gsi(1), pci_intx_gsi(2)) << "neighbouring slots, different pins";
}

class AcpiMadt : public ::testing::TestWithParam<unsigned> {};

TEST_P(AcpiMadt, OneEnabledLocalApicPerVcpuAndTheIoApic) {
  const unsigned cpus = GetParam();
  auto memory = devices::GuestMemory::allocate(4 * test::kMiB);
  const AcpiTables tables = write_acpi_tables(memory, {cpus, true});
  const Bytes madt = read_table(memory, tables.madt, "APIC");
  const auto header = read_guest<MadtHeader>(memory, tables.madt);
  EXPECT_EQ(test::by_value(header.local_apic_address), 0xFEE00000u);
  EXPECT_EQ(test::by_value(header.flags), kMadtPcatCompat);

  std::vector<MadtLocalApic> cpus_seen;
  std::vector<MadtIoApic> io_apics;
  std::vector<MadtInterruptOverride> overrides;
  std::vector<MadtLocalApicNmi> nmis;
  for (std::size_t offset = sizeof(MadtHeader); offset < madt.size();) {
    const std::uint8_t type = madt[offset];
    const std::uint8_t length = madt[offset + 1];
    ASSERT_GE(length, 2u);
    ASSERT_LE(offset + length, madt.size());
    auto take = [&](auto& list) {
      typename std::remove_reference_t<decltype(list)>::value_type entry;
      ASSERT_EQ(length, sizeof(entry)) << "entry type " << int{type};
      std::memcpy(&entry, madt.data() + offset, sizeof(entry));
      list.push_back(entry);
    };
    switch (type) {
      case kMadtTypeLocalApic: take(cpus_seen); break;
      case kMadtTypeIoApic: take(io_apics); break;
      case kMadtTypeInterruptOverride: take(overrides); break;
      case kMadtTypeLocalApicNmi: take(nmis); break;
      default: ADD_FAILURE() << "unexpected MADT entry type " << int{type};
    }
    offset += length;
  }

  ASSERT_EQ(cpus_seen.size(), cpus);
  for (unsigned i = 0; i < cpus; ++i) {
    EXPECT_EQ(test::by_value(cpus_seen[i].processor_uid), i);
    EXPECT_EQ(test::by_value(cpus_seen[i].apic_id), i);
    EXPECT_EQ(test::by_value(cpus_seen[i].flags), kMadtLocalApicEnabled);
  }
  ASSERT_EQ(io_apics.size(), 1u);
  EXPECT_EQ(test::by_value(io_apics[0].address), 0xFEC00000u);
  EXPECT_EQ(test::by_value(io_apics[0].gsi_base), 0u);
  EXPECT_EQ(test::by_value(io_apics[0].io_apic_id), io_apic_id(cpus));
  for (const MadtLocalApic& cpu : cpus_seen) EXPECT_NE(cpu.apic_id, test::by_value(io_apics[0].io_apic_id));
  // The IOAPIC model, made with the ID the platform gives it, must report
  // the MADT's ID in its ID register: FreeBSD compares the two and rewrites
  // the register, 32-bit Linux picks the register's value when they differ.
  struct NullMsi final : devices::MsiSink {
    void send_msi(const devices::MsiMessage&) noexcept override {}
  } msi;
  devices::IoApic ioapic(msi, nullptr, io_apic_id(cpus));
  const std::uint8_t select[4] = {devices::IoApic::kRegId, 0, 0, 0};
  ioapic.write(devices::IoApic::kRegisterSelect, select);
  std::uint8_t id_register[4] = {};
  ioapic.read(devices::IoApic::kWindow, id_register);
  EXPECT_EQ(devices::load_le(id_register) >> 24, test::by_value(io_apics[0].io_apic_id))
      << "the IOAPIC's ID register disagrees with the MADT at " << cpus << " vCPUs";

  ASSERT_EQ(overrides.size(), 2u);
  EXPECT_EQ(test::by_value(overrides[0].bus), 0);
  EXPECT_EQ(test::by_value(overrides[0].source), 0);
  EXPECT_EQ(test::by_value(overrides[0].gsi), 2u);
  EXPECT_EQ(test::by_value(overrides[0].flags), 0);  // conforming: ISA edge, active high
  EXPECT_EQ(test::by_value(overrides[1].bus), 0);
  EXPECT_EQ(test::by_value(overrides[1].source), 9);
  EXPECT_EQ(test::by_value(overrides[1].gsi), 9u);
  EXPECT_EQ(test::by_value(overrides[1].flags) & 0x3, 0x1);         // active high
  EXPECT_EQ((test::by_value(overrides[1].flags) >> 2) & 0x3, 0x3);  // level triggered

  ASSERT_EQ(nmis.size(), 1u);
  EXPECT_EQ(test::by_value(nmis[0].processor_uid), 0xFF);
  EXPECT_EQ(test::by_value(nmis[0].lint), 1);
}

INSTANTIATE_TEST_SUITE_P(Vcpus, AcpiMadt, ::testing::Values(1u, 2u, 4u, 15u, 16u, 64u, kMaxCpus));

TEST_F(AcpiFixture, HpetTableDescribesAThreeComparatorHpet) {
  const AcpiTables tables = write_acpi_tables(memory, {1, true});
  ASSERT_TRUE(tables.hpet);
  read_table(memory, *tables.hpet, "HPET");
  const auto hpet = read_guest<HpetTable>(memory, *tables.hpet);
  EXPECT_EQ(test::by_value(hpet.header.length), 56u);
  EXPECT_EQ(test::by_value(hpet.event_timer_block_id) >> 16, 0x8086u);
  EXPECT_TRUE(hpet.event_timer_block_id & (1u << 15)) << "legacy replacement capable";
  EXPECT_TRUE(hpet.event_timer_block_id & (1u << 13)) << "64-bit counter";
  EXPECT_EQ(((test::by_value(hpet.event_timer_block_id) >> 8) & 0x1F) + 1, 3u) << "comparators";
  EXPECT_EQ(test::by_value(hpet.base_address.space_id), kAddressSpaceSystemMemory);
  EXPECT_EQ(test::by_value(hpet.base_address.address), 0xFED00000u);
  EXPECT_EQ(test::by_value(hpet.hpet_number), 0);
  EXPECT_GT(test::by_value(hpet.minimum_tick), 0);
}

TEST_F(AcpiFixture, RejectsUnsupportedVcpuCounts) {
  test::expect_error([&] { write_acpi_tables(memory, {0, true}); }, {"0 vCPUs", "between 1 and 254"});
  test::expect_error([&] { write_acpi_tables(memory, {255, true}); }, {"255 vCPUs"});
}

TEST(AcpiMemory, RefusesAGuestWithoutRamUnderTheTables) {
  auto memory = devices::GuestMemory::allocate(512 * 1024);
  test::expect_error([&] { write_acpi_tables(memory, {1, true}); }, {"ACPI area"});
}

}  // namespace
}  // namespace vmm::boot::acpi
