#include "timers/callout.h"

#include <algorithm>

#include "timers/race_points.h"

namespace vmm::timers {

Callout::~Callout() {
  if (initialized()) drain();
}

bool Callout::init(CyclicSystem& system, EventLoop& loop, Handler fn, void* arg) {
  if (fn == nullptr) return false;
  if (initialized() && !drained_.load(std::memory_order_acquire)) return false;
  fn_ = fn;
  arg_ = arg;
  target_.store(0, std::memory_order_release);
  fired_.store(0, std::memory_order_release);
  // A parked one-shot: armed only by reset().
  const CyclicId id = system.add(&Callout::glue, this, kNever, kOneShot, loop);
  if (!id.valid()) return false;
  cyclic_ = id;
  system_ = &system;
  drained_.store(false, std::memory_order_release);
  return true;
}

void Callout::glue(void* arg, const Expiry& /*expiry*/) {
  // Runs with no lock held, so it touches only the two atomics: it records
  // when the cyclic fired and lets the device handler decide, under its own
  // lock, whether this firing is still the one that was asked for.
  auto* callout = static_cast<Callout*>(arg);
  if (callout->target_.load(std::memory_order_acquire) == 0) return;  // stopped
  Nanos fired = callout->system_->clock().now();
#if defined(VMM_MUTANT_GLUE_CLEARS_PENDING)
  // Mutation-testing hook (tools/mutants): the old shim's unlocked PENDING
  // clear, i.e. "this firing is for whatever target is stored right now".
  fired = std::max(fired, callout->target_.load(std::memory_order_acquire));
#endif
  callout->fired_.store(fired, std::memory_order_release);
  race_point(RacePoint::callout_glue_before_handler);
  callout->fn_(callout->arg_);
}

bool Callout::pending() const noexcept {
#if defined(VMM_MUTANT_PENDING_NEVER)
  return false;  // mutation-testing hook (tools/mutants): no pending test
#else
  return target_.load(std::memory_order_acquire) > fired_.load(std::memory_order_acquire);
#endif
}

bool Callout::reset(Nanos when, CalloutTime kind) noexcept {
  if (!initialized()) return false;
  Nanos deadline = when;
  if (kind == CalloutTime::relative) {
    deadline = add_saturating(system_->clock().now(), when > 0 ? when : 0);
  }
  if (deadline <= 0) deadline = 1;  // target 0 means inactive
  target_.store(deadline, std::memory_order_seq_cst);
  race_point(RacePoint::callout_reset_stored);
  // Refused by the cyclic layer once a drain removed the cyclic, also under
  // this very handler (illumos 12476: a VM reset drains a device whose
  // handler is re-arming).
  bool armed = system_->reprogram(cyclic_, deadline);
  // A drain that has begun but not yet removed the cyclic let that
  // reprogram through; it removes the cyclic next, and its callout must not
  // keep the target stored above. Checked after that store, with drain()'s
  // flag and clearing store in the same total order: either this load sees
  // the flag, or the drain's clearing store comes after ours.
#if !defined(VMM_MUTANT_NO_DRAIN_REFUSAL)  // mutation-testing hook (tools/mutants)
  if (armed && drained_.load(std::memory_order_seq_cst)) armed = false;
#endif
  if (!armed) target_.store(0, std::memory_order_seq_cst);
  return armed;
}

bool Callout::set_deadline(Nanos when) noexcept {
  if (when == 0) {
    if (active()) stop();
    return true;
  }
  if (active() && target() == when) return true;
  return reset(when, CalloutTime::absolute);
}

bool Callout::stop() noexcept {
  if (!initialized()) return false;
  const bool was_active = target_.exchange(0, std::memory_order_acq_rel) != 0;
  if (!drained_.load(std::memory_order_acquire)) (void)system_->reprogram(cyclic_, kNever);
  return was_active;
}

bool Callout::drain() noexcept {
  if (!initialized()) return false;
  const bool first = !drained_.exchange(true, std::memory_order_seq_cst);
  if (first) {
    target_.store(0, std::memory_order_seq_cst);  // paired with reset()'s store and check
    race_point(RacePoint::callout_drain_before_remove);
  }
  // A second drain racing the first (a forced stop during a reset) also
  // returns only once the handler has: remove() waits for it, or removes
  // the cyclic itself when it comes before the first drain does.
  system_->remove(cyclic_);
  return first;
}

bool Callout::localize() noexcept {
  if (!initialized() || drained_.load(std::memory_order_acquire)) return false;
  return system_->move_here(cyclic_);
}

bool Callout::bind(EventLoop& loop) noexcept {
  if (!initialized() || drained_.load(std::memory_order_acquire)) return false;
  return system_->move(cyclic_, loop);
}

EventLoop* Callout::loop() const noexcept {
  if (!initialized()) return nullptr;
  return system_->loop_of(cyclic_);
}

}  // namespace vmm::timers
