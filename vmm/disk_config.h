// What `--disk PATH[,readonly][,serial=ID]` asks for: shared by the command
// line, which parses it, and the VM, which opens it (vmm/virtio_disks.h).
#pragma once

#include <cstddef>
#include <string>

namespace vmm {

// PCI slots 1-8, so that each disk has an INTA# pin of its own.
inline constexpr unsigned kMaxDisks = 8;
inline constexpr std::size_t kMaxDiskSerial = 20;  // virtio-blk's GET_ID is 20 bytes

struct DiskConfig {
  std::string path;
  bool read_only = false;
  std::string serial;  // what GET_ID returns; up to 20 bytes
};

}  // namespace vmm
