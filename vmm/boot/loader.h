// The front door: load a kernel (bzImage or PVH ELF, told apart by content),
// its initrd and command line, plus the firmware tables, into guest memory,
// and return the vCPU entry state with a summary for the log.
//
// Loading is repeatable: VM reset calls load() again on the same memory
// after GuestMemory::discard(), and every structure is rewritten whole, from
// the files as they were read when the VM was created (BootFiles).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "devices/guest_memory.h"
#include "vmm/boot/boot_image.h"
#include "vmm/boot/image_file.h"

namespace vmm::boot {

struct BootConfig {
  std::filesystem::path kernel;
  std::optional<std::filesystem::path> initrd;
  std::string cmdline;
  unsigned cpus = 1;
  bool hpet = true;
};

// The kernel and initrd, read once. Throws vmm::Error naming the file when
// one is missing, unreadable, not a regular file, empty, or larger than
// `memory_bytes` (it could never be loaded; nothing is read then).
struct BootFiles {
  ImageFile kernel;
  std::optional<ImageFile> initrd;

  static BootFiles open(const BootConfig& config, std::uint64_t memory_bytes);
};

// Throws vmm::Error with a message naming the file and the problem for every
// bad input: an unrecognised kernel; a bzImage that is too old or has no
// 64-bit entry; an ELF without the PVH note or with a segment outside guest
// RAM; an initrd that does not fit; a command line longer than the kernel
// accepts; an unsupported vCPU count.
BootImage load(devices::GuestMemory& memory, const BootConfig& config, const BootFiles& files);

// Opens the files, then loads them: for callers that boot once.
BootImage load(devices::GuestMemory& memory, const BootConfig& config);

}  // namespace vmm::boot
