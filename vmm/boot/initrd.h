// Placing and loading the initial ramdisk; shared by both image formats,
// which differ only in the ceiling they impose.
#pragma once

#include <cstdint>
#include <optional>

#include "devices/guest_memory.h"
#include "vmm/boot/boot_image.h"
#include "vmm/boot/image_file.h"

namespace vmm::boot {

// The highest page-aligned address at or above 1 MiB where `size` bytes end
// at or below `ceiling` (exclusive) without overlapping `kernel`. Going as
// high as possible leaves the space right after the kernel free for it to
// grow into (bss, brk, decompression). nullopt when no such place exists.
std::optional<std::uint64_t> place_initrd(std::uint64_t size, std::uint64_t ceiling, GuestRange kernel) noexcept;

// Places the initrd under `ceiling` and reads it straight into guest RAM.
// Throws vmm::Error naming the file and the sizes when it does not fit.
GuestRange load_initrd(devices::GuestMemory& memory, const ImageFile& initrd, std::uint64_t ceiling,
                       GuestRange kernel);

}  // namespace vmm::boot
