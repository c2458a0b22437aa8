#include "vmm/boot/loader.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "vmm/boot/acpi.h"
#include "vmm/boot/bzimage.h"
#include "vmm/boot/e820.h"
#include "vmm/boot/image_file.h"
#include "vmm/boot/layout.h"
#include "vmm/boot/pvh.h"

namespace vmm::boot {

namespace {

std::string mib(std::uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

// A file bigger than all of guest RAM can never be loaded; refusing it here
// avoids reading hundreds of megabytes only to fail afterwards.
void check_fits(const ImageFile& file, const devices::GuestMemory& memory) {
  if (file.size() > memory.size()) {
    file.fail(fmt::format("{} ({} bytes) is larger than guest memory ({}, {} bytes)", mib(file.size()),
                          file.size(), mib(memory.size()), memory.size()));
  }
}

}  // namespace

BootFiles BootFiles::open(const BootConfig& config, std::uint64_t memory_bytes) {
  const std::string limit = fmt::format("guest memory ({}, {} bytes)", mib(memory_bytes), memory_bytes);
  BootFiles files{ImageFile::open(config.kernel, "kernel", memory_bytes, limit), std::nullopt};
  if (config.initrd) files.initrd = ImageFile::open(*config.initrd, "initrd", memory_bytes, limit);
  return files;
}

BootImage load(devices::GuestMemory& memory, const BootConfig& config) {
  return load(memory, config, BootFiles::open(config, memory.size()));
}

BootImage load(devices::GuestMemory& memory, const BootConfig& config, const BootFiles& files) {
  if (memory.size() < layout::kMinimumGuestMemory) {
    throw Error(fmt::format("guest memory of {} KiB is too small to boot; at least {} MiB is needed",
                            memory.size() >> 10, layout::kMinimumGuestMemory >> 20));
  }
  const ImageFile& kernel = files.kernel;
  check_fits(kernel, memory);
  const ImageFile* initrd = files.initrd ? &*files.initrd : nullptr;
  if (initrd) check_fits(*initrd, memory);
  const std::span<const std::uint8_t> image = kernel.bytes();

  // Tables first: they depend only on the configuration, and the kernel's
  // boot information points at them.
  const acpi::AcpiTables tables = acpi::write_acpi_tables(memory, {config.cpus, config.hpet});
  const std::vector<E820Entry> memory_map = build_e820(memory);
  const KernelArgs args{config.cmdline, initrd, memory_map, tables.rsdp};

  BootImage result;
  if (has_elf_magic(image)) {
    result = load_pvh(memory, kernel, image, args);
  } else if (has_setup_header(image)) {
    result = load_bzimage(memory, kernel, image, args);
  } else {
    kernel.fail("unrecognised format: neither a bzImage (no 'HdrS' setup header at offset 0x202) nor an ELF "
                "(no \\x7fELF magic)");
  }
  result.acpi = tables;
  spdlog::debug("boot: {}", describe(result));
  return result;
}

}  // namespace vmm::boot
