// What a load produced: the vCPU entry state plus where everything went, for
// the KVM layer (entry) and for logging (the rest).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/boot/acpi.h"
#include "vmm/boot/e820.h"
#include "vmm/boot/entry_state.h"

namespace vmm::boot {

class ImageFile;

enum class KernelFormat : std::uint8_t { bzimage, pvh_elf };

struct GuestRange {
  std::uint64_t address = 0;
  std::uint64_t size = 0;

  std::uint64_t end() const noexcept { return address + size; }
  bool overlaps(const GuestRange& other) const noexcept {
    return address < other.end() && other.address < end();
  }
  friend bool operator==(const GuestRange&, const GuestRange&) = default;
};

struct BootImage {
  KernelFormat format = KernelFormat::bzimage;
  EntryState entry;
  std::uint64_t entry_point = 0;
  // Guest RAM the kernel owns from the start: load address to load address +
  // init_size for a bzImage, lowest to highest PT_LOAD byte for an ELF.
  GuestRange kernel;
  // bzImage only: the setup header's protocol version (0x020F = 2.15).
  std::uint16_t boot_protocol = 0;
  // The zero page (bzImage) or hvm_start_info (PVH).
  std::uint64_t boot_info = 0;
  // Includes the terminating NUL.
  GuestRange cmdline;
  std::optional<GuestRange> initrd;
  acpi::AcpiTables acpi;
  std::vector<E820Entry> memory_map;
};

// One line for the log: format, entry, and where each piece went.
std::string describe(const BootImage& image);

// What the front door hands to either image loader.
struct KernelArgs {
  std::string_view cmdline;
  const ImageFile* initrd = nullptr;
  std::span<const E820Entry> memory_map;
  std::uint64_t rsdp = 0;
};

}  // namespace vmm::boot
