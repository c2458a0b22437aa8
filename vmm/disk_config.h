// What `--disk PATH[,readonly][,serial=ID][,queues=N][,coalesce-us=N]` asks for: shared by the command
// line, which parses it, and the VM, which opens it (vmm/virtio_disks.h).
#pragma once

#include <cstddef>
#include <string>

namespace vmm {

// In PCI slots 1-8.
inline constexpr unsigned kMaxDisks = 8;
// Request queues of one disk (devices/virtio/block.h's kMaxQueues).
inline constexpr unsigned kMaxDiskQueues = 64;
inline constexpr std::size_t kMaxDiskSerial = 20;  // virtio-blk's GET_ID is 20 bytes
// Interrupt coalescing (devices/virtio/block.h): how long a queue's
// interrupt waits for more completions to share it; off unless asked for,
// as it adds up to that much to every request.
inline constexpr unsigned kMaxDiskCoalesceUs = 10'000;

struct DiskConfig {
  std::string path;
  bool read_only = false;
  std::string serial;  // what GET_ID returns; up to 20 bytes
  unsigned queues = 0;  // request queues, 1 to kMaxDiskQueues; 0: one per vCPU
  unsigned coalesce_us = 0;  // 0: every completion the driver asks to hear of is signalled at once
};

}  // namespace vmm
