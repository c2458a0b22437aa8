// What `--disk PATH[,readonly][,serial=ID][,queues=N][,coalesce-us=N|auto]` asks for: shared by the command
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
// interrupt waits for more completions to share it. By default adaptive
// (coalesce-us=auto): twice the queue's recent gap between completions, at
// most kAutoDiskCoalesceCeilingUs; coalesce-us=N fixes it, 0 turns it off.
inline constexpr unsigned kMaxDiskCoalesceUs = 10'000;
inline constexpr unsigned kAutoDiskCoalesceCeilingUs = 200;

struct DiskConfig {
  std::string path;
  bool read_only = false;
  std::string serial;  // what GET_ID returns; up to 20 bytes
  unsigned queues = 0;  // request queues, 1 to kMaxDiskQueues; 0: one per vCPU
  // The interval, or its ceiling when it follows the completions; 0: every
  // completion the driver asks to hear of is signalled at once.
  unsigned coalesce_us = kAutoDiskCoalesceCeilingUs;
  bool coalesce_follows_completions = true;  // coalesce-us=auto
};

}  // namespace vmm
