// Helpers shared by the boot tests: temporary files, synthetic bzImage and
// ELF images, and typed reads of guest memory.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "devices/error.h"
#include "devices/guest_memory.h"
#include "tests/common/temp_dir.h"

namespace vmm::boot::test {

using Bytes = std::vector<std::uint8_t>;

inline constexpr std::uint64_t kMiB = 1ull << 20;

using TempDir = vmm::testing::TempDir;

// Deterministic, position-dependent filler, so a misplaced copy shows.
Bytes pattern(std::size_t size, std::uint8_t seed);

struct BzImageSpec {
  std::uint16_t version = 0x020F;
  std::uint16_t xloadflags = 0x1 | 0x2;  // 64-bit entry, may load above 4 GiB
  std::uint8_t loadflags = 0x1;          // LOADED_HIGH
  std::uint8_t setup_sects = 4;
  std::size_t kernel_bytes = 64 * 1024;
  std::uint64_t pref_address = 0x100'0000;
  std::uint32_t init_size = 0x40'0000;
  std::uint32_t cmdline_size = 2047;
  std::uint32_t initrd_addr_max = 0x7FFF'FFFF;
  std::uint32_t kernel_alignment = 0x20'0000;
  std::uint8_t min_alignment = 21;
  std::uint8_t relocatable = 1;
  std::uint16_t boot_flag = 0xAA55;
  std::uint32_t magic = 0x53726448;  // "HdrS"
  // The short jump's offset at 0x201, which gives the header's length.
  std::uint8_t jump_offset = 0x26C - 0x202;
  // Declared size of the protected-mode kernel; default: kernel_bytes.
  std::optional<std::uint32_t> syssize_bytes;
};
Bytes make_bzimage(const BzImageSpec& spec);

struct ElfSegmentSpec {
  std::uint64_t paddr;
  Bytes data;
  std::uint64_t memsz;  // >= data.size() for a valid segment
};

struct ElfSpec {
  bool is_64bit = true;
  std::uint16_t machine = 0;  // 0: the right one for the class
  std::uint16_t type = 2;     // ET_EXEC
  std::vector<ElfSegmentSpec> segments;
  std::optional<std::uint64_t> pvh_entry;
  unsigned pvh_desc_size = 4;
  // Puts an unrelated note ahead of the Xen one, as real kernels do.
  bool leading_note = true;
  // Cuts the file this many bytes short at the end.
  std::size_t truncate_by = 0;
};
Bytes make_elf(const ElfSpec& spec);

// Loads a field of a packed struct into a plain value. gtest's macros take
// their arguments by reference, and a reference to a misaligned member is
// undefined behaviour (UBSan reports it).
template <typename T>
T by_value(T value) {
  return value;
}

template <typename T>
T read_guest(const devices::GuestMemory& memory, std::uint64_t address) {
  T value{};
  EXPECT_TRUE(memory.read_obj(address, value)) << "guest read at 0x" << std::hex << address;
  return value;
}

Bytes read_guest_bytes(const devices::GuestMemory& memory, std::uint64_t address, std::size_t size);
std::string read_guest_string(const devices::GuestMemory& memory, std::uint64_t address);

// Runs `action` and checks that it throws vmm::Error whose message holds
// every fragment.
void expect_error(const std::function<void()>& action, const std::vector<std::string>& fragments);

}  // namespace vmm::boot::test
