// Binary layouts of the ACPI tables this VMM writes (ACPI 6.x, chapter 5),
// with every offset the tables rely on pinned by a static_assert. Shared by
// the table builder and the tests that read the tables back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace vmm::boot::acpi {

inline constexpr std::uint8_t kRsdpRevision = 2;  // ACPI 2.0+: has the XSDT pointer
inline constexpr std::size_t kRsdpV1Length = 20;  // the part the first checksum covers
inline constexpr std::uint8_t kRootTableRevision = 1;
inline constexpr std::uint8_t kFadtRevision = 6;
inline constexpr std::uint8_t kFadtMinorRevision = 0;
inline constexpr std::uint8_t kDsdtRevision = 2;  // 2+: AML integers are 64-bit
inline constexpr std::uint8_t kMadtRevision = 3;
inline constexpr std::uint8_t kHpetRevision = 1;
inline constexpr std::uint8_t kMcfgRevision = 1;
inline constexpr std::uint8_t kFacsVersion = 2;

// Generic Address Structure address spaces and access sizes.
inline constexpr std::uint8_t kAddressSpaceSystemMemory = 0;
inline constexpr std::uint8_t kAddressSpaceSystemIo = 1;
inline constexpr std::uint8_t kAccessByte = 1;
inline constexpr std::uint8_t kAccessWord = 2;
inline constexpr std::uint8_t kAccessDword = 3;

// FADT flags.
inline constexpr std::uint32_t kFadtWbinvd = 1u << 0;
inline constexpr std::uint32_t kFadtProcC1 = 1u << 2;
inline constexpr std::uint32_t kFadtPowerButton = 1u << 4;  // set = no fixed power button
inline constexpr std::uint32_t kFadtSleepButton = 1u << 5;  // set = no fixed sleep button
inline constexpr std::uint32_t kFadtResetRegSupported = 1u << 10;
inline constexpr std::uint32_t kFadtHardwareReduced = 1u << 20;
// FADT IA-PC boot architecture flags.
inline constexpr std::uint16_t kBootArchLegacyDevices = 1u << 0;
inline constexpr std::uint16_t kBootArch8042 = 1u << 1;
inline constexpr std::uint16_t kBootArchVgaNotPresent = 1u << 2;

// MADT.
inline constexpr std::uint32_t kMadtPcatCompat = 1u << 0;
inline constexpr std::uint8_t kMadtTypeLocalApic = 0;
inline constexpr std::uint8_t kMadtTypeIoApic = 1;
inline constexpr std::uint8_t kMadtTypeInterruptOverride = 2;
inline constexpr std::uint8_t kMadtTypeLocalApicNmi = 4;
inline constexpr std::uint32_t kMadtLocalApicEnabled = 1u << 0;
inline constexpr std::uint8_t kAllProcessors = 0xFF;
// MPS INTI flags: polarity in bits 1:0, trigger mode in bits 3:2.
inline constexpr std::uint16_t kMpsIntiConforming = 0;
inline constexpr std::uint16_t kMpsIntiActiveHigh = 0x1;
inline constexpr std::uint16_t kMpsIntiLevel = 0x3 << 2;

// HPET: the main counter's minimum periodic tick, in counter ticks.
inline constexpr std::uint16_t kHpetMinimumTick = 0x80;

#pragma pack(push, 1)

struct TableHeader {
  char signature[4];
  std::uint32_t length;
  std::uint8_t revision;
  std::uint8_t checksum;
  char oem_id[6];
  char oem_table_id[8];
  std::uint32_t oem_revision;
  char creator_id[4];
  std::uint32_t creator_revision;
};

struct Rsdp {
  char signature[8];
  std::uint8_t checksum;
  char oem_id[6];
  std::uint8_t revision;
  std::uint32_t rsdt_address;
  std::uint32_t length;
  std::uint64_t xsdt_address;
  std::uint8_t extended_checksum;
  std::uint8_t reserved[3];
};

struct GenericAddress {
  std::uint8_t space_id;
  std::uint8_t bit_width;
  std::uint8_t bit_offset;
  std::uint8_t access_size;
  std::uint64_t address;
};

struct Fadt {
  TableHeader header;
  std::uint32_t firmware_ctrl;
  std::uint32_t dsdt;
  std::uint8_t reserved0;
  std::uint8_t preferred_pm_profile;
  std::uint16_t sci_int;
  std::uint32_t smi_cmd;
  std::uint8_t acpi_enable;
  std::uint8_t acpi_disable;
  std::uint8_t s4bios_req;
  std::uint8_t pstate_cnt;
  std::uint32_t pm1a_evt_blk;
  std::uint32_t pm1b_evt_blk;
  std::uint32_t pm1a_cnt_blk;
  std::uint32_t pm1b_cnt_blk;
  std::uint32_t pm2_cnt_blk;
  std::uint32_t pm_tmr_blk;
  std::uint32_t gpe0_blk;
  std::uint32_t gpe1_blk;
  std::uint8_t pm1_evt_len;
  std::uint8_t pm1_cnt_len;
  std::uint8_t pm2_cnt_len;
  std::uint8_t pm_tmr_len;
  std::uint8_t gpe0_blk_len;
  std::uint8_t gpe1_blk_len;
  std::uint8_t gpe1_base;
  std::uint8_t cst_cnt;
  std::uint16_t p_lvl2_lat;
  std::uint16_t p_lvl3_lat;
  std::uint16_t flush_size;
  std::uint16_t flush_stride;
  std::uint8_t duty_offset;
  std::uint8_t duty_width;
  std::uint8_t day_alrm;
  std::uint8_t mon_alrm;
  std::uint8_t century;
  std::uint16_t iapc_boot_arch;
  std::uint8_t reserved1;
  std::uint32_t flags;
  GenericAddress reset_reg;
  std::uint8_t reset_value;
  std::uint16_t arm_boot_arch;
  std::uint8_t minor_version;
  std::uint64_t x_firmware_ctrl;
  std::uint64_t x_dsdt;
  GenericAddress x_pm1a_evt_blk;
  GenericAddress x_pm1b_evt_blk;
  GenericAddress x_pm1a_cnt_blk;
  GenericAddress x_pm1b_cnt_blk;
  GenericAddress x_pm2_cnt_blk;
  GenericAddress x_pm_tmr_blk;
  GenericAddress x_gpe0_blk;
  GenericAddress x_gpe1_blk;
  GenericAddress sleep_control_reg;
  GenericAddress sleep_status_reg;
  std::uint64_t hypervisor_vendor_id;
};

struct Facs {
  char signature[4];
  std::uint32_t length;
  std::uint32_t hardware_signature;
  std::uint32_t firmware_waking_vector;
  std::uint32_t global_lock;
  std::uint32_t flags;
  std::uint64_t x_firmware_waking_vector;
  std::uint8_t version;
  std::uint8_t reserved0[3];
  std::uint32_t ospm_flags;
  std::uint8_t reserved1[24];
};

struct MadtHeader {
  TableHeader header;
  std::uint32_t local_apic_address;
  std::uint32_t flags;
};

struct MadtLocalApic {
  std::uint8_t type;
  std::uint8_t length;
  std::uint8_t processor_uid;
  std::uint8_t apic_id;
  std::uint32_t flags;
};

struct MadtIoApic {
  std::uint8_t type;
  std::uint8_t length;
  std::uint8_t io_apic_id;
  std::uint8_t reserved;
  std::uint32_t address;
  std::uint32_t gsi_base;
};

struct MadtInterruptOverride {
  std::uint8_t type;
  std::uint8_t length;
  std::uint8_t bus;
  std::uint8_t source;
  std::uint32_t gsi;
  std::uint16_t flags;
};

struct MadtLocalApicNmi {
  std::uint8_t type;
  std::uint8_t length;
  std::uint8_t processor_uid;
  std::uint16_t flags;
  std::uint8_t lint;
};

struct HpetTable {
  TableHeader header;
  std::uint32_t event_timer_block_id;
  GenericAddress base_address;
  std::uint8_t hpet_number;
  std::uint16_t minimum_tick;
  std::uint8_t page_protection;
};

// MCFG (PCI Firmware Specification 3.0, 4.1.2): the header, 8 reserved
// bytes, then one entry per ECAM range.
struct McfgHeader {
  TableHeader header;
  std::uint64_t reserved;
};

struct McfgEntry {
  std::uint64_t base_address;
  std::uint16_t segment;
  std::uint8_t start_bus;
  std::uint8_t end_bus;
  std::uint32_t reserved;
};

#pragma pack(pop)

static_assert(sizeof(TableHeader) == 36);
static_assert(offsetof(TableHeader, length) == 4);
static_assert(offsetof(TableHeader, checksum) == 9);
static_assert(offsetof(TableHeader, oem_id) == 10);
static_assert(offsetof(TableHeader, oem_table_id) == 16);
static_assert(offsetof(TableHeader, creator_id) == 28);

static_assert(offsetof(Rsdp, checksum) == 8);
static_assert(offsetof(Rsdp, revision) == 15);
static_assert(offsetof(Rsdp, rsdt_address) == 16);
static_assert(offsetof(Rsdp, length) == kRsdpV1Length);
static_assert(offsetof(Rsdp, xsdt_address) == 24);
static_assert(offsetof(Rsdp, extended_checksum) == 32);
static_assert(sizeof(Rsdp) == 36);

static_assert(sizeof(GenericAddress) == 12);
static_assert(sizeof(McfgHeader) == 44);
static_assert(sizeof(McfgEntry) == 16);

static_assert(offsetof(Fadt, firmware_ctrl) == 36);
static_assert(offsetof(Fadt, dsdt) == 40);
static_assert(offsetof(Fadt, sci_int) == 46);
static_assert(offsetof(Fadt, smi_cmd) == 48);
static_assert(offsetof(Fadt, pm1a_evt_blk) == 56);
static_assert(offsetof(Fadt, pm1a_cnt_blk) == 64);
static_assert(offsetof(Fadt, pm_tmr_blk) == 76);
static_assert(offsetof(Fadt, pm1_evt_len) == 88);
static_assert(offsetof(Fadt, pm1_cnt_len) == 89);
static_assert(offsetof(Fadt, p_lvl2_lat) == 96);
static_assert(offsetof(Fadt, iapc_boot_arch) == 109);
static_assert(offsetof(Fadt, flags) == 112);
static_assert(offsetof(Fadt, reset_reg) == 116);
static_assert(offsetof(Fadt, reset_value) == 128);
static_assert(offsetof(Fadt, minor_version) == 131);
static_assert(offsetof(Fadt, x_firmware_ctrl) == 132);
static_assert(offsetof(Fadt, x_dsdt) == 140);
static_assert(offsetof(Fadt, x_pm1a_evt_blk) == 148);
static_assert(offsetof(Fadt, x_pm1a_cnt_blk) == 172);
static_assert(offsetof(Fadt, sleep_control_reg) == 244);
static_assert(offsetof(Fadt, hypervisor_vendor_id) == 268);
static_assert(sizeof(Fadt) == 276);

static_assert(offsetof(Facs, x_firmware_waking_vector) == 24);
static_assert(offsetof(Facs, version) == 32);
static_assert(sizeof(Facs) == 64);

static_assert(sizeof(MadtHeader) == 44);
static_assert(sizeof(MadtLocalApic) == 8);
static_assert(sizeof(MadtIoApic) == 12);
static_assert(sizeof(MadtInterruptOverride) == 10);
static_assert(offsetof(MadtInterruptOverride, gsi) == 4);
static_assert(sizeof(MadtLocalApicNmi) == 6);
static_assert(offsetof(MadtLocalApicNmi, lint) == 5);

static_assert(offsetof(HpetTable, event_timer_block_id) == 36);
static_assert(offsetof(HpetTable, base_address) == 40);
static_assert(offsetof(HpetTable, hpet_number) == 52);
static_assert(offsetof(HpetTable, minimum_tick) == 53);
static_assert(offsetof(HpetTable, page_protection) == 55);
static_assert(sizeof(HpetTable) == 56);

// The byte that makes `bytes` sum to zero modulo 256 when added.
std::uint8_t checksum_complement(std::span<const std::uint8_t> bytes) noexcept;

}  // namespace vmm::boot::acpi
