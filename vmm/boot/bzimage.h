// The Linux x86 boot protocol (Documentation/x86/boot.rst), 64-bit entry:
// the protected-mode kernel goes to its preferred address, the zero page
// describes memory, command line and initrd, and the vCPU starts in long
// mode at load address + 0x200 with RSI pointing at the zero page.
#pragma once

#include <cstdint>
#include <span>

#include "devices/guest_memory.h"
#include "vmm/boot/boot_image.h"
#include "vmm/boot/boot_params.h"
#include "vmm/boot/image_file.h"

namespace vmm::boot {

// True when `image` carries the "HdrS" setup header signature; it may still
// be an invalid bzImage (parse_bzimage says why).
bool has_setup_header(std::span<const std::uint8_t> image) noexcept;

struct BzImageHeader {
  linux_abi::SetupHeader header;
  // Bytes of the setup header in the file, from 0x1F1.
  std::uint64_t header_size = 0;
  // Boot sector plus real-mode setup: where the protected-mode kernel starts.
  std::uint64_t setup_size = 0;
  // Bytes of protected-mode kernel in the file.
  std::uint64_t kernel_size = 0;
};

// Validates the setup header and the file's size against it. Throws
// vmm::Error (naming `file`) on anything this loader cannot boot: missing
// signatures, protocol older than 2.12, no 64-bit entry, a zImage, or a
// truncated file.
BzImageHeader parse_bzimage(std::span<const std::uint8_t> image, const ImageFile& file);

// Writes the kernel, zero page, command line, initrd, page tables and GDT.
// Throws vmm::Error when the kernel or initrd does not fit, or the command
// line is longer than the kernel accepts.
BootImage load_bzimage(devices::GuestMemory& memory, const ImageFile& file, std::span<const std::uint8_t> image,
                       const KernelArgs& args);

}  // namespace vmm::boot
