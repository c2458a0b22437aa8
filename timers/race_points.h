// Named points inside the race windows the seed bugs describe.
//
// Tests install a hook to park a thread at an exact point (so a seed race is
// forced, not hoped for); stress builds with VMM_FAULT_INJECTION install a hook
// that sleeps at random, widening the windows. With no hook installed a point
// costs one relaxed atomic load and a predictable branch.
#pragma once

#include <atomic>
#include <cstdint>

namespace vmm::timers {

enum class RacePoint : std::uint8_t {
  // Callout::reset stored the new target, the cyclic is not reprogrammed yet
  // (seed 000: the guest's re-arm of a periodic timer).
  callout_reset_stored,
  // The callout glue recorded `fired` and is about to call the device handler.
  callout_glue_before_handler,
  // A device handler did its work and is about to re-arm its callout
  // (seed 002: the handler's re-arm racing a VM reset).
  device_handler_before_rearm,
  // Callout::drain stopped the callout and is about to remove its cyclic.
  callout_drain_before_remove,
  // A cyclic remove took the cyclic out and is about to wait for its handler.
  // Reached without the loop's lock, as is every point here: a hook may park
  // the thread while the rest of the loop goes on.
  cyclic_remove_waiting,
  // A cyclic move found the cyclic due or running and is about to wait for
  // its handler (meanwhile the cyclic may be removed and its slot reused).
  cyclic_move_waiting,
  // A vCPU thread returned from KVM_RUN and has not yet acknowledged a kick.
  vcpu_exit_before_kick_ack,
  count_,
};

const char* race_point_name(RacePoint point) noexcept;

using RaceHook = void (*)(RacePoint point, void* context);

// Installs (or, with nullptr, removes) the process-wide hook.
void set_race_hook(RaceHook hook, void* context) noexcept;

namespace detail {
struct RaceHookSlot {
  std::atomic<RaceHook> hook{nullptr};
  std::atomic<void*> context{nullptr};
};
extern RaceHookSlot g_race_hook;
}  // namespace detail

inline void race_point(RacePoint point) noexcept {
  RaceHook hook = detail::g_race_hook.hook.load(std::memory_order_acquire);
  if (hook != nullptr) [[unlikely]] {
    hook(point, detail::g_race_hook.context.load(std::memory_order_acquire));
  }
}

}  // namespace vmm::timers
