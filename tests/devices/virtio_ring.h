// The driver's side of a split virtqueue, for tests: lays the three areas
// out in guest memory, writes descriptors and available entries, reads the
// used ring. Little-endian host assumed, as in devices/virtio.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "devices/guest_memory.h"
#include "devices/virtio/virtqueue.h"

namespace vmm::testing {

class DriverRing {
 public:
  struct Used {
    std::uint32_t id;
    std::uint32_t len;
  };

  // Areas packed from `base` (16-byte aligned): table, driver area, device area.
  DriverRing(devices::GuestMemory& memory, std::uint16_t size, std::uint64_t base) : memory_(memory), size_(size) {
    layout_.size = size;
    layout_.desc = base;
    layout_.avail = base + devices::virtio::SplitQueue::desc_bytes(size);
    layout_.used = (layout_.avail + devices::virtio::SplitQueue::avail_bytes(size) + 3) & ~std::uint64_t{3};
  }

  const devices::virtio::QueueLayout& layout() const { return layout_; }

  // A fresh ring, as a driver sets one up: indices, flags and the used ring
  // zeroed (descriptors are left as they are).
  void reset() {
    avail_idx_ = 0;
    const std::vector<std::uint8_t> zeroes(end() - layout_.avail, 0);
    memory_.write(layout_.avail, zeroes);
  }
  std::uint64_t end() const { return layout_.used + devices::virtio::SplitQueue::used_bytes(size_); }

  void set_desc(std::uint16_t index, std::uint64_t address, std::uint32_t length, std::uint16_t flags,
                std::uint16_t next = 0) {
    write_desc(layout_.desc, index, address, length, flags, next);
  }
  // A descriptor in an indirect table at `table`.
  void write_desc(std::uint64_t table, std::uint32_t index, std::uint64_t address, std::uint32_t length,
                  std::uint16_t flags, std::uint16_t next = 0) {
    std::uint8_t raw[16];
    std::memcpy(raw, &address, 8);
    std::memcpy(raw + 8, &length, 4);
    std::memcpy(raw + 12, &flags, 2);
    std::memcpy(raw + 14, &next, 2);
    memory_.write(table + 16ull * index, raw);
  }

  // Makes `head` available (entry, then index: the release store orders them).
  void publish(std::uint16_t head) {
    memory_.write_obj(layout_.avail + 4 + 2ull * (avail_idx_ % size_), head);
    ++avail_idx_;
    ref16(layout_.avail + 2).store(avail_idx_, std::memory_order_release);
  }
  void set_avail_idx(std::uint16_t idx) {
    avail_idx_ = idx;
    ref16(layout_.avail + 2).store(idx, std::memory_order_release);
  }
  void set_avail_flags(std::uint16_t flags) { ref16(layout_.avail).store(flags); }
  void set_used_event(std::uint16_t event) { ref16(layout_.avail + 4 + 2ull * size_).store(event); }

  std::uint16_t used_idx() { return ref16(layout_.used + 2).load(std::memory_order_acquire); }
  std::uint16_t used_flags() { return ref16(layout_.used).load(); }
  std::uint16_t avail_event() { return ref16(layout_.used + 4 + 8ull * size_).load(); }
  Used used(std::uint16_t i) {
    Used u{};
    memory_.read_obj(layout_.used + 4 + 8ull * (i % size_), u);
    return u;
  }

 private:
  std::atomic_ref<std::uint16_t> ref16(std::uint64_t address) {
    return std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(memory_.slice(address, 2)->data()));
  }

  devices::GuestMemory& memory_;
  std::uint16_t size_;
  devices::virtio::QueueLayout layout_;
  std::uint16_t avail_idx_ = 0;
};

}  // namespace vmm::testing
