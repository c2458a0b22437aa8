#include "vmm/boot/boot_image.h"

#include <string>

#include <fmt/format.h>

namespace vmm::boot {

namespace {

std::string mib(std::uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace

std::string describe(const BootImage& image) {
  std::string text;
  if (image.format == KernelFormat::bzimage) {
    text = fmt::format("bzImage (boot protocol {}.{:02}), 64-bit entry {:#x}", image.boot_protocol >> 8,
                       image.boot_protocol & 0xFF, image.entry_point);
  } else {
    text = fmt::format("ELF via PVH, 32-bit entry {:#x}", image.entry_point);
  }
  text += fmt::format(", kernel [{:#x}, {:#x}), {} at {:#x}, command line at {:#x} ({} bytes)",
                      image.kernel.address, image.kernel.end(),
                      image.format == KernelFormat::bzimage ? "zero page" : "start_info", image.boot_info,
                      image.cmdline.address, image.cmdline.size > 0 ? image.cmdline.size - 1 : 0);
  if (image.initrd) {
    text += fmt::format(", initrd [{:#x}, {:#x}) ({})", image.initrd->address, image.initrd->end(),
                        mib(image.initrd->size));
  } else {
    text += ", no initrd";
  }
  text += fmt::format(", ACPI RSDP at {:#x}{}, {} memory map entries", image.acpi.rsdp,
                      image.acpi.hpet ? " (with HPET)" : "", image.memory_map.size());
  return text;
}

}  // namespace vmm::boot
