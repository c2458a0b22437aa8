// The front door: load a kernel (bzImage or PVH ELF, told apart by content),
// its initrd and command line, plus the firmware tables, into guest memory,
// and return the vCPU entry state with a summary for the log.
//
// Loading is repeatable: VM reset calls load() again on the same memory
// after GuestMemory::discard(), and every structure is rewritten whole.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "devices/guest_memory.h"
#include "vmm/boot/boot_image.h"

namespace vmm::boot {

struct BootConfig {
  std::filesystem::path kernel;
  std::optional<std::filesystem::path> initrd;
  std::string cmdline;
  unsigned cpus = 1;
  bool hpet = true;
};

// Throws vmm::Error with a message naming the file and the problem for every
// bad input: missing, unreadable, empty or unrecognised kernel; a bzImage
// that is too old or has no 64-bit entry; an ELF without the PVH note or with
// a segment outside guest RAM; a missing or oversized initrd; a command line
// longer than the kernel accepts; an unsupported vCPU count.
BootImage load(devices::GuestMemory& memory, const BootConfig& config);

}  // namespace vmm::boot
