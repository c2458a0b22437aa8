// The Linux x86 "zero page" (struct boot_params) and its embedded setup
// header, laid out from Documentation/x86/boot.rst and zero-page.rst. Only
// fields this loader reads or writes are named; the rest is opaque padding
// whose size is pinned by the offset checks below.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vmm::boot::linux_abi {

// Offsets inside the bzImage file (the setup header is copied verbatim
// from the file into the zero page, so file and zero-page offsets agree).
inline constexpr std::size_t kSetupHeaderOffset = 0x1F1;
inline constexpr std::size_t kBootFlagOffset = 0x1FE;
inline constexpr std::size_t kJumpOffset = 0x200;
inline constexpr std::size_t kHeaderMagicOffset = 0x202;
inline constexpr std::uint16_t kBootFlag = 0xAA55;
inline constexpr std::uint32_t kHeaderMagic = 0x53726448;  // "HdrS"
inline constexpr std::size_t kSectorSize = 512;
// setup_sects == 0 means 4 (for kernels older than anything we accept, but
// the rule is part of the protocol).
inline constexpr std::uint8_t kDefaultSetupSects = 4;
// Protocol 2.12's fields end with handover_offset; a header whose length
// (given by the jump at 0x200) stops earlier is malformed.
inline constexpr std::size_t kMinimumHeaderEnd = 0x268;
// Beyond this the zero page holds loader-owned fields (edd_mbr_sig_buffer).
inline constexpr std::size_t kMaximumHeaderEnd = 0x290;
// The 64-bit entry point is 0x200 bytes into the protected-mode kernel.
inline constexpr std::uint64_t kEntry64Offset = 0x200;

// Protocol 2.12 introduced xloadflags (and with it the 64-bit entry flag).
inline constexpr std::uint16_t kMinimumProtocol = 0x020C;
// acpi_rsdp_addr in the zero page is honoured from 2.14.
inline constexpr std::uint16_t kAcpiRsdpProtocol = 0x020E;

// loadflags
inline constexpr std::uint8_t kLoadedHigh = 1u << 0;
inline constexpr std::uint8_t kCanUseHeap = 1u << 7;
// xloadflags
inline constexpr std::uint16_t kXlfKernel64 = 1u << 0;
inline constexpr std::uint16_t kXlfCanBeLoadedAbove4G = 1u << 1;

// "Undefined" boot loader ID: we are not one of the registered loaders.
inline constexpr std::uint8_t kLoaderTypeUndefined = 0xFF;
// vid_mode "normal": no video mode switch requested.
inline constexpr std::uint16_t kVidModeNormal = 0xFFFF;
// The real-mode setup never runs with the 64-bit entry, but the protocol asks
// for a heap end when CAN_USE_HEAP is set: the conventional end of a 64 KiB
// setup segment, minus the 0x200 the field is defined relative to.
inline constexpr std::uint16_t kHeapEndPtr = 0xFE00;

inline constexpr std::size_t kE820MaxEntries = 128;

#pragma pack(push, 1)

struct SetupHeader {
  std::uint8_t setup_sects;
  std::uint16_t root_flags;
  std::uint32_t syssize;
  std::uint16_t ram_size;
  std::uint16_t vid_mode;
  std::uint16_t root_dev;
  std::uint16_t boot_flag;
  std::uint16_t jump;
  std::uint32_t header;
  std::uint16_t version;
  std::uint32_t realmode_swtch;
  std::uint16_t start_sys_seg;
  std::uint16_t kernel_version;
  std::uint8_t type_of_loader;
  std::uint8_t loadflags;
  std::uint16_t setup_move_size;
  std::uint32_t code32_start;
  std::uint32_t ramdisk_image;
  std::uint32_t ramdisk_size;
  std::uint32_t bootsect_kludge;
  std::uint16_t heap_end_ptr;
  std::uint8_t ext_loader_ver;
  std::uint8_t ext_loader_type;
  std::uint32_t cmd_line_ptr;
  std::uint32_t initrd_addr_max;
  std::uint32_t kernel_alignment;
  std::uint8_t relocatable_kernel;
  std::uint8_t min_alignment;
  std::uint16_t xloadflags;
  std::uint32_t cmdline_size;
  std::uint32_t hardware_subarch;
  std::uint64_t hardware_subarch_data;
  std::uint32_t payload_offset;
  std::uint32_t payload_length;
  std::uint64_t setup_data;
  std::uint64_t pref_address;
  std::uint32_t init_size;
  std::uint32_t handover_offset;
  std::uint32_t kernel_info_offset;
};

struct E820RawEntry {
  std::uint64_t addr;
  std::uint64_t size;
  std::uint32_t type;
};

struct BootParams {
  std::uint8_t screen_info[0x40];
  std::uint8_t apm_bios_info[0x14];
  std::uint8_t pad_054[0x04];
  std::uint64_t tboot_addr;
  std::uint8_t ist_info[0x10];
  std::uint64_t acpi_rsdp_addr;
  std::uint8_t pad_078[0x08];
  std::uint8_t hd0_info[0x10];
  std::uint8_t hd1_info[0x10];
  std::uint8_t sys_desc_table[0x10];
  std::uint8_t olpc_ofw_header[0x10];
  std::uint32_t ext_ramdisk_image;
  std::uint32_t ext_ramdisk_size;
  std::uint32_t ext_cmd_line_ptr;
  std::uint8_t pad_0cc[0x13C - 0xCC];
  std::uint32_t cc_blob_address;
  std::uint8_t edid_info[0x80];
  std::uint8_t efi_info[0x20];
  std::uint32_t alt_mem_k;
  std::uint32_t scratch;
  std::uint8_t e820_entries;
  std::uint8_t eddbuf_entries;
  std::uint8_t edd_mbr_sig_buf_entries;
  std::uint8_t kbd_status;
  std::uint8_t secure_boot;
  std::uint8_t pad_1ed[0x02];
  // Non-zero tells the kernel the loader did not clear the zero page.
  std::uint8_t sentinel;
  std::uint8_t pad_1f0;
  SetupHeader hdr;
  std::uint8_t pad_26c[0x290 - 0x26C];
  std::uint32_t edd_mbr_sig_buffer[16];
  E820RawEntry e820_table[kE820MaxEntries];
  std::uint8_t pad_cd0[0xD00 - 0xCD0];
  std::uint8_t eddbuf[0x1EC];
  std::uint8_t pad_eec[0x1000 - 0xEEC];
};

#pragma pack(pop)

// Setup header offsets are given relative to the start of the zero page in
// boot.rst; checked here through the BootParams that embeds the header.
static_assert(offsetof(BootParams, hdr) == 0x1F1);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, setup_sects) == 0x1F1);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, syssize) == 0x1F4);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, vid_mode) == 0x1FA);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, boot_flag) == kBootFlagOffset);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, jump) == kJumpOffset);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, header) == kHeaderMagicOffset);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, version) == 0x206);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, type_of_loader) == 0x210);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, loadflags) == 0x211);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, code32_start) == 0x214);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, ramdisk_image) == 0x218);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, ramdisk_size) == 0x21C);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, heap_end_ptr) == 0x224);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, cmd_line_ptr) == 0x228);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, initrd_addr_max) == 0x22C);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, kernel_alignment) == 0x230);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, relocatable_kernel) == 0x234);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, min_alignment) == 0x235);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, xloadflags) == 0x236);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, cmdline_size) == 0x238);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, payload_offset) == 0x248);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, payload_length) == 0x24C);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, pref_address) == 0x258);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, init_size) == 0x260);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, kernel_info_offset) == 0x268);
static_assert(offsetof(BootParams, hdr) + sizeof(SetupHeader) == 0x26C);
static_assert(offsetof(BootParams, hdr) + offsetof(SetupHeader, handover_offset) + 4 == kMinimumHeaderEnd);
static_assert(offsetof(BootParams, edd_mbr_sig_buffer) == kMaximumHeaderEnd);

static_assert(offsetof(BootParams, acpi_rsdp_addr) == 0x070);
static_assert(offsetof(BootParams, ext_ramdisk_image) == 0x0C0);
static_assert(offsetof(BootParams, ext_ramdisk_size) == 0x0C4);
static_assert(offsetof(BootParams, ext_cmd_line_ptr) == 0x0C8);
static_assert(offsetof(BootParams, cc_blob_address) == 0x13C);
static_assert(offsetof(BootParams, e820_entries) == 0x1E8);
static_assert(offsetof(BootParams, sentinel) == 0x1EF);
static_assert(offsetof(BootParams, edd_mbr_sig_buffer) == 0x290);
static_assert(offsetof(BootParams, e820_table) == 0x2D0);
static_assert(sizeof(E820RawEntry) == 20);
static_assert(offsetof(BootParams, eddbuf) == 0xD00);
static_assert(sizeof(BootParams) == 0x1000);

}  // namespace vmm::boot::linux_abi
