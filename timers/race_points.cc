#include "timers/race_points.h"

namespace vmm::timers {

namespace detail {
RaceHookSlot g_race_hook;
}

const char* race_point_name(RacePoint point) noexcept {
  switch (point) {
    case RacePoint::callout_reset_stored: return "callout_reset_stored";
    case RacePoint::callout_glue_before_handler: return "callout_glue_before_handler";
    case RacePoint::device_handler_before_rearm: return "device_handler_before_rearm";
    case RacePoint::callout_drain_before_remove: return "callout_drain_before_remove";
    case RacePoint::cyclic_remove_waiting: return "cyclic_remove_waiting";
    case RacePoint::cyclic_move_waiting: return "cyclic_move_waiting";
    case RacePoint::vcpu_exit_before_kick_ack: return "vcpu_exit_before_kick_ack";
    case RacePoint::count_: break;
  }
  return "unknown";
}

void set_race_hook(RaceHook hook, void* context) noexcept {
  // Context first, so a thread that sees the new hook also sees its context.
  detail::g_race_hook.context.store(context, std::memory_order_release);
  detail::g_race_hook.hook.store(hook, std::memory_order_release);
}

}  // namespace vmm::timers
