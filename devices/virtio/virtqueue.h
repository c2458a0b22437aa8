// The split virtqueue (VIRTIO 1.1, 2.6): descriptor table, available ring,
// used ring, notification suppression both ways with VIRTIO_F_EVENT_IDX,
// and indirect descriptors — the device's side, against guest memory.
//
// Everything in the rings is guest-written and untrusted. The ring areas are
// checked once, when the queue is activated (size a power of two, each area
// aligned as the spec says and inside one guest memory region), and kept as
// host pointers into guest RAM. A descriptor is copied out of guest memory
// once and then only its copy is used, so a guest rewriting it meanwhile
// cannot make the device act on two different values. Every buffer is
// looked up with GuestMemory::slice, so a span handed out lies inside one
// region of guest RAM: nothing outside guest memory is ever touched.
//
// A chain that breaks a rule is refused (pop() says bad_chain with the
// reason; the device hands it back with zero bytes written):
//   * a descriptor index (next, or inside an indirect table) out of range;
//   * more descriptors than the queue size in the direct part, or than the
//     indirect table holds in the indirect part (this is also what ends a
//     loop: a looping chain runs into the limit);
//   * a buffer not inside one guest memory region (outside RAM, wrapping
//     around 2^64, or crossing from one region to the next);
//   * a device-readable buffer after a device-writable one;
//   * more than 4 GiB - 1 in one direction (a used length is 32 bits);
//   * an indirect descriptor when VIRTIO_F_INDIRECT_DESC was not
//     negotiated, inside an indirect table, with NEXT set, or with a length
//     that is zero, not a multiple of 16 or over kMaxIndirect entries.
// A head index out of range, or an available index more than the queue size
// ahead of the device, cannot be answered through the used ring: pop() says
// broken and the device asks for a reset (DEVICE_NEEDS_RESET).
//
// Memory ordering: the available index is read with acquire semantics before
// the entries it publishes; the used index is written with release
// semantics after the used entries; a full barrier (a seq_cst exchange)
// separates publishing used entries (or re-enabling notifications) from
// reading the driver's suppression fields, as the spec's "memory barrier"
// asks.
//
// Not thread-safe: the owning device holds its lock around every call.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "devices/guest_memory.h"

namespace vmm::devices::virtio {

enum class ChainError : std::uint8_t {
  kNone,
  kAvailIndexAhead,
  kHeadOutOfRange,
  kNextOutOfRange,
  kTooLong,
  kOutsideMemory,
  kReadableAfterWritable,
  kLengthOverflow,
  kIndirectNotNegotiated,
  kIndirectNested,
  kIndirectWithNext,
  kIndirectBadSize,
};
const char* to_string(ChainError error) noexcept;

// One descriptor chain as the device sees it: the guest buffers to read
// from, then the guest buffers to write to, in chain order.
struct Chain {
  std::uint16_t head = 0;
  std::vector<std::span<std::uint8_t>> readable;
  std::vector<std::span<std::uint8_t>> writable;
  std::uint64_t readable_bytes = 0;
  std::uint64_t writable_bytes = 0;
  std::uint32_t descriptors = 0;  // descriptors visited (indirect ones included)

  void clear() noexcept {
    readable.clear();
    writable.clear();
    readable_bytes = writable_bytes = 0;
    descriptors = 0;
  }
};

// Calls piece(data, done, n) for each contiguous piece of bytes [skip,
// skip + length) of the concatenation of `spans`, in order (`done` bytes
// came before it); stops early when piece returns false. Returns the bytes
// covered.
template <typename Piece>
std::uint64_t for_each_piece(std::span<const std::span<std::uint8_t>> spans, std::uint64_t skip, std::uint64_t length,
                             Piece piece) noexcept {
  std::uint64_t done = 0;
  for (const auto& span : spans) {
    if (done == length) break;
    if (skip >= span.size()) {
      skip -= span.size();
      continue;
    }
    const std::uint64_t n = std::min<std::uint64_t>(span.size() - skip, length - done);
    if (!piece(span.data() + skip, done, n)) break;
    done += n;
    skip = 0;
  }
  return done;
}

// Copies bytes [skip, skip + out.size()) of the concatenation of `spans`
// into `out`; false (and nothing defined in `out`) when they hold fewer.
bool gather(std::span<const std::span<std::uint8_t>> spans, std::uint64_t skip, std::span<std::uint8_t> out) noexcept;
// Copies `in` into the concatenation of `spans` from byte `skip`; false when
// it does not fit (then nothing was written).
bool scatter(std::span<const std::span<std::uint8_t>> spans, std::uint64_t skip, std::span<const std::uint8_t> in) noexcept;

struct QueueLayout {
  std::uint16_t size = 0;
  std::uint64_t desc = 0;   // descriptor table (16-byte aligned)
  std::uint64_t avail = 0;  // driver area (2-byte aligned)
  std::uint64_t used = 0;   // device area (4-byte aligned)
};

class SplitQueue {
 public:
  static constexpr std::uint16_t kMaxSize = 32768;
  static constexpr std::uint32_t kMaxIndirect = 1024;  // entries in one indirect table
  static constexpr std::uint16_t kDescNext = 1, kDescWrite = 2, kDescIndirect = 4;
  static constexpr std::uint16_t kAvailNoInterrupt = 1, kUsedNoNotify = 1;
  static constexpr std::uint64_t kDescSize = 16;

  // Bytes each area takes for `size` entries (event fields included).
  static constexpr std::uint64_t desc_bytes(std::uint16_t size) { return kDescSize * size; }
  static constexpr std::uint64_t avail_bytes(std::uint16_t size) { return 6 + 2 * std::uint64_t{size}; }
  static constexpr std::uint64_t used_bytes(std::uint16_t size) { return 6 + 8 * std::uint64_t{size}; }

  // Checks `layout` against `memory` and starts the queue at index 0.
  // Returns nullptr when it runs, else why it cannot (the queue stays
  // inactive). `memory` must outlive the activation.
  const char* activate(GuestMemory& memory, const QueueLayout& layout, bool event_idx, bool indirect) noexcept;
  void deactivate() noexcept;
  bool active() const noexcept { return memory_ != nullptr; }
  std::uint16_t size() const noexcept { return size_; }

  enum class Pop { kEmpty, kChain, kBadChain, kBroken };
  // The next available chain. kChain: `chain` holds it. kBadChain: `why`
  // says what is wrong, chain.head is valid and must be handed back with
  // push_used(head, 0). kBroken: nothing can be handed back; the queue
  // stays where it is (every later pop says kBroken again).
  Pop pop(Chain& chain, ChainError& why) noexcept;

  // Hands a chain back with `written` bytes written into its buffers.
  void push_used(std::uint16_t head, std::uint32_t written) noexcept;
  // After push_used: does the driver want an interrupt now? (EVENT_IDX:
  // used_event was crossed since the last signal; else NO_INTERRUPT clear.)
  // Answers false when nothing was pushed since the last true.
  bool needs_signal() noexcept;
  // Chains handed back since needs_signal() last looked (the driver can
  // see them, but has not been told).
  bool has_unsignalled_used() const noexcept { return pushed_; }

  // Notification suppression toward the driver: disable while the device is
  // draining the ring; enable when it stops, which answers whether buffers
  // arrived meanwhile (then drain again, or one would be missed).
  void disable_notification() noexcept;
  bool enable_notification() noexcept;

  // Chains in the available ring the device has not taken.
  std::uint16_t available() const noexcept;
  std::uint16_t next_avail() const noexcept { return next_avail_; }
  std::uint16_t next_used() const noexcept { return next_used_; }

 private:
  ChainError walk(std::uint16_t head, Chain& chain) const noexcept;
  ChainError add_buffer(std::uint64_t address, std::uint32_t length, bool writable, Chain& chain) const noexcept;

  GuestMemory* memory_ = nullptr;
  std::uint8_t* desc_ = nullptr;
  std::uint8_t* avail_ = nullptr;
  std::uint8_t* used_ = nullptr;
  std::uint16_t size_ = 0;
  bool event_idx_ = false;
  bool indirect_ = false;
  std::uint16_t next_avail_ = 0;
  std::uint16_t next_used_ = 0;
  std::uint16_t signalled_used_ = 0;  // next_used_ when needs_signal() last looked
  bool pushed_ = false;  // push_used since the last needs_signal()
};

}  // namespace vmm::devices::virtio
