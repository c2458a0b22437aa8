#include "devices/virtio/virtqueue.h"

#include <atomic>
#include <bit>
#include <cstring>
#include <limits>

namespace vmm::devices::virtio {

static_assert(std::endian::native == std::endian::little, "virtio rings are little-endian; so is this host");

namespace {

// Ring fields live in guest RAM that the driver writes concurrently: each is
// read and written whole, through atomic_ref (the areas are checked to be
// aligned for it).
std::uint16_t load16(std::uint8_t* at, std::memory_order order = std::memory_order_relaxed) noexcept {
  return std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(at)).load(order);
}
void store16(std::uint8_t* at, std::uint16_t value, std::memory_order order = std::memory_order_relaxed) noexcept {
  std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(at)).store(value, order);
}
// Stores `value` with a full barrier after it: the spec's "memory barrier"
// between publishing something to the driver and reading what the driver
// published. A seq_cst exchange is that barrier (x86: XCHG) and, unlike a
// fence, ThreadSanitizer understands it.
void store16_full_barrier(std::uint8_t* at, std::uint16_t value) noexcept {
  std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(at)).exchange(value, std::memory_order_seq_cst);
}
void store32(std::uint8_t* at, std::uint32_t value) noexcept {
  std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(at)).store(value, std::memory_order_relaxed);
}

struct Descriptor {
  std::uint64_t address;
  std::uint32_t length;
  std::uint16_t flags;
  std::uint16_t next;
};
static_assert(sizeof(Descriptor) == SplitQueue::kDescSize);

Descriptor read_descriptor(const std::uint8_t* table, std::uint32_t index) noexcept {
  Descriptor d;
  std::memcpy(&d, table + std::size_t{index} * SplitQueue::kDescSize, sizeof d);
  return d;
}

// vring_need_event: did the used index pass `event` going from old to now?
bool need_event(std::uint16_t event, std::uint16_t now, std::uint16_t old) noexcept {
  return static_cast<std::uint16_t>(now - event - 1) < static_cast<std::uint16_t>(now - old);
}

}  // namespace

const char* to_string(ChainError error) noexcept {
  switch (error) {
    case ChainError::kNone: return "no error";
    case ChainError::kAvailIndexAhead: return "available index runs ahead by more than the queue size";
    case ChainError::kHeadOutOfRange: return "head index out of range";
    case ChainError::kNextOutOfRange: return "next index out of range";
    case ChainError::kTooLong: return "chain longer than its table (or looping)";
    case ChainError::kOutsideMemory: return "buffer outside guest memory or across a region boundary";
    case ChainError::kReadableAfterWritable: return "device-readable buffer after a device-writable one";
    case ChainError::kLengthOverflow: return "total length over 4 GiB - 1";
    case ChainError::kIndirectNotNegotiated: return "indirect descriptor without VIRTIO_F_INDIRECT_DESC";
    case ChainError::kIndirectNested: return "indirect descriptor inside an indirect table";
    case ChainError::kIndirectWithNext: return "indirect descriptor with NEXT set";
    case ChainError::kIndirectBadSize: return "indirect table length zero, not a multiple of 16, or too long";
  }
  return "unknown error";
}

bool gather(std::span<const std::span<std::uint8_t>> spans, std::uint64_t skip, std::span<std::uint8_t> out) noexcept {
  return for_each_piece(spans, skip, out.size(), [&](std::uint8_t* from, std::uint64_t done, std::uint64_t n) {
           std::memcpy(out.data() + done, from, n);
           return true;
         }) == out.size();
}

bool scatter(std::span<const std::span<std::uint8_t>> spans, std::uint64_t skip, std::span<const std::uint8_t> in) noexcept {
  std::uint64_t room = 0;
  for (const auto& span : spans) room += span.size();
  if (skip > room || in.size() > room - skip) return false;
  for_each_piece(spans, skip, in.size(), [&](std::uint8_t* to, std::uint64_t done, std::uint64_t n) {
    std::memcpy(to, in.data() + done, n);
    return true;
  });
  return true;
}

const char* SplitQueue::activate(GuestMemory& memory, const QueueLayout& layout, bool event_idx, bool indirect) noexcept {
  deactivate();
  const std::uint16_t size = layout.size;
  if (size == 0 || size > kMaxSize || (size & (size - 1)) != 0) return "queue size is not a power of two in 1..32768";
  if (layout.desc % 16 != 0) return "descriptor table not 16-byte aligned";
  if (layout.avail % 2 != 0) return "driver area not 2-byte aligned";
  if (layout.used % 4 != 0) return "device area not 4-byte aligned";
  auto desc = memory.slice(layout.desc, desc_bytes(size));
  if (!desc) return "descriptor table outside guest memory";
  auto avail = memory.slice(layout.avail, avail_bytes(size));
  if (!avail) return "driver area outside guest memory";
  auto used = memory.slice(layout.used, used_bytes(size));
  if (!used) return "device area outside guest memory";
  memory_ = &memory;
  desc_ = desc->data();
  avail_ = avail->data();
  used_ = used->data();
  size_ = size;
  event_idx_ = event_idx;
  indirect_ = indirect;
  next_avail_ = next_used_ = signalled_used_ = 0;
  pushed_ = false;
  return nullptr;
}

void SplitQueue::deactivate() noexcept {
  memory_ = nullptr;
  desc_ = avail_ = used_ = nullptr;
  size_ = 0;
}

std::uint16_t SplitQueue::available() const noexcept {
  if (!active()) return 0;
  return static_cast<std::uint16_t>(load16(avail_ + 2, std::memory_order_acquire) - next_avail_);
}

SplitQueue::Pop SplitQueue::pop(Chain& chain, ChainError& why) noexcept {
  chain.clear();
  why = ChainError::kNone;
  if (!active()) return Pop::kEmpty;
  const std::uint16_t pending = available();  // acquire: the entries below are published
  if (pending == 0) return Pop::kEmpty;
  if (pending > size_) {
    why = ChainError::kAvailIndexAhead;
    return Pop::kBroken;
  }
  const std::uint16_t head = load16(avail_ + 4 + 2 * std::size_t{static_cast<std::uint16_t>(next_avail_ % size_)});
  if (head >= size_) {
    why = ChainError::kHeadOutOfRange;
    return Pop::kBroken;
  }
  ++next_avail_;
  chain.head = head;
  why = walk(head, chain);
  return why == ChainError::kNone ? Pop::kChain : Pop::kBadChain;
}

ChainError SplitQueue::add_buffer(std::uint64_t address, std::uint32_t length, bool writable, Chain& chain) const noexcept {
  auto span = memory_->slice(address, length);
  if (!span) return ChainError::kOutsideMemory;
  if (writable) {
    chain.writable_bytes += length;
    if (chain.writable_bytes > std::numeric_limits<std::uint32_t>::max()) return ChainError::kLengthOverflow;
    if (length != 0) chain.writable.push_back(*span);
  } else {
    if (!chain.writable.empty() || chain.writable_bytes != 0) return ChainError::kReadableAfterWritable;
    chain.readable_bytes += length;
    if (chain.readable_bytes > std::numeric_limits<std::uint32_t>::max()) return ChainError::kLengthOverflow;
    if (length != 0) chain.readable.push_back(*span);
  }
  return ChainError::kNone;
}

ChainError SplitQueue::walk(std::uint16_t head, Chain& chain) const noexcept {
  const std::uint8_t* table = desc_;
  std::uint32_t table_size = size_;
  std::uint32_t index = head;
  std::uint32_t visited = 0;  // in the current table
  bool in_indirect = false;
  bool saw_writable = false;
  for (;;) {
    if (++visited > table_size) return ChainError::kTooLong;
    ++chain.descriptors;
    const Descriptor d = read_descriptor(table, index);
    if ((d.flags & kDescIndirect) != 0) {
      if (!indirect_) return ChainError::kIndirectNotNegotiated;
      if (in_indirect) return ChainError::kIndirectNested;
      if ((d.flags & kDescNext) != 0) return ChainError::kIndirectWithNext;
      if (d.length == 0 || d.length % kDescSize != 0 || d.length / kDescSize > kMaxIndirect) {
        return ChainError::kIndirectBadSize;
      }
      auto indirect = memory_->slice(d.address, d.length);
      if (!indirect) return ChainError::kOutsideMemory;
      table = indirect->data();
      table_size = d.length / kDescSize;
      index = 0;
      visited = 0;
      in_indirect = true;
      continue;
    }
    const bool writable = (d.flags & kDescWrite) != 0;
    if (!writable && saw_writable) return ChainError::kReadableAfterWritable;
    saw_writable |= writable;
    if (const ChainError e = add_buffer(d.address, d.length, writable, chain); e != ChainError::kNone) return e;
    if ((d.flags & kDescNext) == 0) return ChainError::kNone;
    index = d.next;
    if (index >= table_size) return ChainError::kNextOutOfRange;
  }
}

void SplitQueue::push_used(std::uint16_t head, std::uint32_t written) noexcept {
  if (!active()) return;
  std::uint8_t* element = used_ + 4 + 8 * std::size_t{static_cast<std::uint16_t>(next_used_ % size_)};
  store32(element, head);
  store32(element + 4, written);
  ++next_used_;
  store16(used_ + 2, next_used_, std::memory_order_release);
  pushed_ = true;
}

bool SplitQueue::needs_signal() noexcept {
  if (!active() || !pushed_) return false;
  pushed_ = false;
  // The driver must see the new used index before we read what it asked
  // for, or both sides could decide the other one will act.
  store16_full_barrier(used_ + 2, next_used_);
  if (!event_idx_) return (load16(avail_, std::memory_order_seq_cst) & kAvailNoInterrupt) == 0;
  const std::uint16_t used_event = load16(avail_ + 4 + 2 * std::size_t{size_}, std::memory_order_seq_cst);
  const std::uint16_t old = signalled_used_;
  signalled_used_ = next_used_;
  return need_event(used_event, next_used_, old);
}

void SplitQueue::disable_notification() noexcept {
  if (!active() || event_idx_) return;  // with EVENT_IDX, avail_event alone governs
  store16(used_, kUsedNoNotify);
}

bool SplitQueue::enable_notification() noexcept {
  if (!active()) return false;
  // Publish the request for notifications (with a full barrier) before
  // looking for buffers that the driver added without notifying.
  if (event_idx_) {
    store16_full_barrier(used_ + 4 + 8 * std::size_t{size_}, next_avail_);
  } else {
    store16_full_barrier(used_, 0);
  }
  return load16(avail_ + 2, std::memory_order_seq_cst) != next_avail_;
}

}  // namespace vmm::devices::virtio
