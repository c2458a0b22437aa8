// Callouts: what device models use for their timers (the FreeBSD callout(9)
// interface bhyve's devices were written against), on top of one-shot cyclics.
//
// A callout holds two times instead of PENDING/ACTIVE flags (the flag that the
// old glue cleared without a lock is illumos bug 12738):
//   target  when the callout is due; 0 when inactive       active  := target != 0
//   fired   when its cyclic last fired                     pending := target > fired
// A re-arm stores a later target under the device lock, so a firing of the
// old deadline that races with it is seen as pending and ignored, whatever
// the interleaving. Both are atomics; the glue touches nothing else.
//
// Lock rules (the device lock is the lock the handler takes):
//   reset, stop, deactivate:   call with the device lock held.
//   drain:                     call WITHOUT it (it waits for the handler).
//   active, pending:           read under the device lock to act on them.
//
// Handler idiom:
//   lock(device);
//   if (c.pending()) { unlock; return; }   // re-armed meanwhile: not our firing
//   if (!c.active()) { unlock; return; }   // stopped meanwhile
//   c.deactivate();
//   ...work...; if periodic: c.reset(next, absolute);
//   unlock(device);
//
// Teardown and VM reset: stop the vCPUs, drain every callout (a handler may be
// mid-flight and may re-arm: that re-arm fails quietly), then reset or free
// the device. A drained callout is re-armed only after init() again.
#pragma once

#include <atomic>

#include "timers/clock.h"
#include "timers/cyclic.h"

namespace vmm::timers {

class EventLoop;

enum class CalloutTime { relative, absolute };

class Callout {
 public:
  using Handler = void (*)(void* arg);

  Callout() noexcept = default;
  // Drains: the handler is not running and never will again.
  ~Callout();
  Callout(const Callout&) = delete;
  Callout& operator=(const Callout&) = delete;

  // Creates the callout's parked cyclic on `loop` and binds its handler (a
  // callout serves one handler for life, so the unlocked glue never reads a
  // handler being rewritten). Returns false, changing nothing, when `fn` is
  // null or the callout is initialised and not yet drained.
  bool init(CyclicSystem& system, EventLoop& loop, Handler fn, void* arg);
  bool initialized() const noexcept { return system_ != nullptr; }

  // Arms the callout for `when` (relative to now, or absolute); a time in
  // the past fires as soon as the loop runs. Device lock held. Returns false
  // and leaves the callout inactive when it was never initialised, or when a
  // drain has begun or is done (the seed-002 re-arm after a reset lands
  // here, harmlessly): a drained callout is inactive, always.
  bool reset(Nanos when, CalloutTime kind = CalloutTime::relative) noexcept;

  // Deactivates and parks the callout. Device lock held. Returns true when it
  // was active. A firing already under way sees !active() and does nothing.
  bool stop() noexcept;

  // How devices keep one callout aimed at a computed deadline: an absolute
  // `when`, or 0 for none. Stops the callout for 0, leaves an active one
  // already aimed at `when` alone (no cyclic reprogram, and no second firing
  // for a deadline that is due), and otherwise resets it. Device lock held.
  // Returns false only when a reset was refused (see reset()).
  bool set_deadline(Nanos when) noexcept;

  // Stops the callout and removes its cyclic, waiting for a running handler.
  // Device lock NOT held. Returns false when it was never initialised or was
  // already drained; a drain racing another one still waits for the handler.
  bool drain() noexcept;

  bool active() const noexcept { return target_.load(std::memory_order_acquire) != 0; }
  // Meaningful inside the handler: the callout was re-armed after this firing.
  // Out of line so that the one place that decides it can be mutated
  // (tools/mutants) without the headers that inline it.
  bool pending() const noexcept;
  void deactivate() noexcept { target_.store(0, std::memory_order_release); }
  // The handler idiom's opening, device lock held: false when the callout
  // was re-armed (pending) or stopped (inactive) since this firing, which
  // the handler then ignores; otherwise deactivates it and returns true.
  bool claim() noexcept {
    if (pending() || !active()) return false;
    deactivate();
    return true;
  }

  // Moves the callout to the loop of the calling thread's CPU (or to `loop`),
  // keeping its expiry, so a vCPU's timers fire where the vCPU runs. Returns
  // false when not initialised, drained, or called from the loop's own thread
  // while the callout is firing there.
  bool localize() noexcept;
  bool bind(EventLoop& loop) noexcept;

  Nanos target() const noexcept { return target_.load(std::memory_order_acquire); }
  Nanos fired() const noexcept { return fired_.load(std::memory_order_acquire); }
  EventLoop* loop() const noexcept;

 private:
  static void glue(void* arg, const Expiry& expiry);

  std::atomic<Nanos> target_{0};
  std::atomic<Nanos> fired_{0};
  CyclicSystem* system_ = nullptr;
  CyclicId cyclic_;
  Handler fn_ = nullptr;
  void* arg_ = nullptr;
  std::atomic<bool> drained_{false};
};

}  // namespace vmm::timers
