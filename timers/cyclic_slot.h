// Internal to timers/: the record behind a CyclicId.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "timers/cyclic.h"

namespace vmm::timers {

inline constexpr std::size_t kNotInHeap = std::numeric_limits<std::size_t>::max();

// Where a cyclic is in its loop's dispatch. A slot that is queued or running
// is never freed or moved by another thread: remove marks it doomed and the
// dispatcher (or the waiting remover) frees it when the handler is done.
enum class Dispatch : std::uint8_t { idle, queued, running };

// Cache-line aligned, hot fields first: a reprogram touches one line.
struct alignas(64) CyclicSlot {
  // The loop whose mutex guards every field below except `generation`'s
  // lock-free reads. Null while the slot is free. Written with both the old
  // and new loop locks held (move), or the owner's lock (add, free).
  std::atomic<EventLoop*> loop{nullptr};
  // Bumped (under the owner's lock) when the cyclic is removed, so every
  // handle to it is stale from that moment on, even while its handler runs.
  std::atomic<std::uint32_t> generation{1};
  std::uint32_t index = 0;

  std::size_t heap_pos = kNotInHeap;
  Nanos when = kNever;
  Nanos interval = kOneShot;
  CyclicHandler handler = nullptr;
  void* arg = nullptr;
  Dispatch dispatch = Dispatch::idle;
  bool doomed = false;           // removed while queued or running
  bool remover_waiting = false;  // a remover on another thread frees it
  Expiry expiry{};               // what the queued call will be told

  CyclicSlot* next_free = nullptr;  // guarded by the slot table's mutex
};

}  // namespace vmm::timers
