// Cyclics: absolute-deadline timers on per-CPU event loops.
//
// Modelled on the illumos cyclic subsystem that bhyve's device timers run on,
// with the races of illumos bugs 12476 and 12738 designed out:
//
//  * reprogram() of a removed cyclic returns false and does nothing, also when
//    the cyclic was removed while its own handler runs (the handler's re-arm
//    after a VM reset is harmless). Nothing here ever aborts on a bad handle.
//  * remove() returns only when the handler is not running and never will
//    again; called from the cyclic's own handler it does not wait.
//  * Handles carry a generation, so a stale handle is detected, never aliased
//    to a newer cyclic that reuses the slot (a slot is retired rather than
//    let its 32-bit generation wrap).
//
// Lock rule (the one way to deadlock this API): remove() and move() called
// from another thread wait for a running handler, so the caller must not hold
// any lock that the handler takes. Device code follows the callout rule
// instead: reset/stop under the device lock, drain without it.
//
// All operations are thread-safe. A cyclic's handler runs on its loop's
// thread, never concurrently with itself, and never before its deadline.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "timers/clock.h"

namespace vmm::timers {

class EventLoop;
struct CyclicSlot;
enum class RacePoint : std::uint8_t;

// A handle to a cyclic. A default-constructed handle refers to nothing.
struct CyclicId {
  std::uint32_t index = 0;       // slot index + 1; 0 means "none"
  std::uint32_t generation = 0;  // must match the slot's current generation

  constexpr bool valid() const noexcept { return index != 0; }
  friend constexpr bool operator==(CyclicId, CyclicId) = default;
};

// What a handler is told about the expiry it serves.
struct Expiry {
  // The latest deadline this call covers (never later than "now").
  Nanos deadline;
  // How many deadlines this call covers: 1, or 1 + missed periods when a
  // periodic cyclic's loop fell behind (overruns are never silently lost).
  std::uint64_t count;
};

using CyclicHandler = void (*)(void* arg, const Expiry& expiry);

// Interval meaning "one-shot": after firing, the cyclic stays parked (still
// allocated, in no heap) until reprogrammed or removed.
inline constexpr Nanos kOneShot = kNever;

struct LoopOptions {
  // Number of loops; 0 means one per CPU in this process's affinity mask.
  std::size_t loops = 0;
  // Start a pinned thread per loop. When false the loops are driven by the
  // caller (EventLoop::run_due / run_once), which is how tests step a
  // ManualClock through an exact interleaving.
  bool threads = true;
  // Pin loop threads to their CPUs (ignored when threads == false).
  bool pin = true;
  // Thread names are "<name_prefix><index>" (at most 15 characters in all).
  const char* name_prefix = "vmm-timer-";
  // Runs first on each loop thread, before it waits for anything: where a
  // program confines its loop threads (vmm run installs their syscall
  // filter). Null: nothing.
  void (*thread_prologue)() noexcept = nullptr;
};

class CyclicSystem {
 public:
  // `clock` must outlive the system. Threaded loops need the monotonic clock
  // (their timerfds wait on CLOCK_MONOTONIC): asked for on any other clock,
  // whose time no timerfd follows, they would sleep through every deadline,
  // so that throws std::invalid_argument. Throws std::system_error when a
  // loop's timerfd, eventfd, io_uring or thread cannot be created.
  explicit CyclicSystem(const Clock& clock = MonotonicClock::instance(),
                        LoopOptions options = {});
  // Stops and joins every loop. Cyclics still allocated are discarded
  // without their handlers running again.
  ~CyclicSystem();
  CyclicSystem(const CyclicSystem&) = delete;
  CyclicSystem& operator=(const CyclicSystem&) = delete;

  const Clock& clock() const noexcept { return clock_; }
  std::size_t loop_count() const noexcept { return loops_.size(); }
  EventLoop& loop(std::size_t index) noexcept;
  // The loop of the CPU the calling thread runs on (loop 0 when that CPU has
  // none), so a vCPU thread's timers can follow it.
  EventLoop& loop_for_current_cpu() noexcept;

  // Adds a cyclic that first fires at `when` (absolute; a time in the past
  // fires as soon as the loop runs) and then every `interval` ns, or once when
  // interval == kOneShot. Returns an invalid CyclicId (valid() == false) when
  // handler is null, interval <= 0, or `when` is kNever for a periodic cyclic.
  CyclicId add(CyclicHandler handler, void* arg, Nanos when, Nanos interval, EventLoop& loop);

  // Moves the next expiry to `when` (absolute; kNever parks it). Keeps the
  // interval. Returns false, doing nothing, when the cyclic was removed (also
  // when it was removed while its own handler runs) or the handle is stale.
  // Never aborts; callable from any thread, including the cyclic's handler.
  [[nodiscard]] bool reprogram(CyclicId id, Nanos when) noexcept;

  // Removes the cyclic. When it returns the handler is not running and will
  // never run again. From another thread it waits for a running handler to
  // finish; from the cyclic's own handler it does not wait, nor from a
  // handler that the running handler is itself waiting for (two loops'
  // handlers removing each other's cyclics: the one that would close the
  // cycle does not wait, and the cyclic's handler finishes after it
  // returns, as its own would). Returns true when
  // this call removed it, false for a stale or already-removed handle -- but
  // a second remove() racing the first, whose handler still runs, waits for
  // that handler too before it returns false: every remover may free what
  // the handler uses once its call returns.
  bool remove(CyclicId id) noexcept;

  // Moves the cyclic to `to`, keeping its next expiry and interval. From
  // another thread it waits until the handler is neither due in a batch nor
  // running. Returns false for a stale handle, or when called on the source
  // loop's own thread while the cyclic is due or running there (its own
  // handler cannot move it; it would have to wait for itself), or from a
  // handler that the cyclic's running handler is waiting for.
  bool move(CyclicId id, EventLoop& to) noexcept;
  // move() to loop_for_current_cpu().
  bool move_here(CyclicId id) noexcept;

  // Introspection, mainly for tests and tools. Stale handles give nullopt-ish
  // values: when() returns kNever and loop_of() returns nullptr.
  Nanos when(CyclicId id) const noexcept;
  EventLoop* loop_of(CyclicId id) const noexcept;
  // Cyclics currently allocated (added and not yet fully removed).
  std::size_t live_count() const noexcept;

 private:
  friend class EventLoop;
  friend class CyclicSystemTestAccess;  // tests only: see cyclic_test.cc

  CyclicSlot* slot_for(CyclicId id) const noexcept;
  CyclicSlot* allocate_slot();
  void release_slot(CyclicSlot* slot) noexcept;  // caller holds the slot's loop lock
  static std::unique_lock<std::mutex> lock_current_owner(CyclicSlot* slot, EventLoop*& owner);
  static std::unique_lock<std::mutex> lock_owner(CyclicSlot* slot, CyclicId id, EventLoop*& owner);
  bool wait_for_handler(std::unique_lock<std::mutex>& lock, EventLoop& loop, CyclicSlot* slot,
                        std::uint32_t generation, RacePoint point, bool (*settled)(const CyclicSlot&)) noexcept;

  const Clock& clock_;
  std::vector<std::unique_ptr<EventLoop>> loops_;
  std::vector<int> cpu_to_loop_;  // index: CPU number; -1 when no loop there
  struct SlotTable;
  std::unique_ptr<SlotTable> slots_;
  // Guards every loop's waiting_for_; taken after a loop lock, never before.
  std::mutex waits_mu_;
};

}  // namespace vmm::timers
