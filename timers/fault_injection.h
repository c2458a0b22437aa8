// Random delays at the race points (timers/race_points.h), to widen the
// windows the seed races live in while a stress loop runs. Compiled in only
// with the CMake option VMM_FAULT_INJECTION=ON (which also defines the macro
// VMM_FAULT_INJECTION=1 for everything that links vmm_timers); otherwise
// none of this exists and the race points keep their empty hook.
//
// Spec: a comma-separated list of `point:probability:max_us`, where point is
// a race point name (race_point_name(): callout_reset_stored,
// callout_glue_before_handler, device_handler_before_rearm,
// callout_drain_before_remove, cyclic_remove_waiting, cyclic_move_waiting,
// vcpu_exit_before_kick_ack) or `all`; probability is in [0, 1]; each hit
// that is chosen sleeps a uniformly random time in [0, max_us] microseconds
// (max_us <= 10,000,000). Later entries override earlier ones, so
// `all:0.01:100,vcpu_exit_before_kick_ack:0.2:2000` is "everything a little,
// the kick window a lot". An empty spec or "off" removes the hook.
//
// Where it comes from: the environment variable VMM_FAULT_INJECT, read once
// at process start by every program linked with vmm_timers (so `vmm run`
// children of a stress driver inherit it), or configure_fault_injection()
// (vmm-stress --fault-inject). Installing it replaces any other race hook:
// do not combine with tests that park threads at race points.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "timers/race_points.h"

#if defined(VMM_FAULT_INJECTION)

namespace vmm::timers {

inline constexpr const char* kFaultInjectEnv = "VMM_FAULT_INJECT";

// Parses `spec` and installs (or removes) the hook. On a bad spec returns
// false with the reason in `error` and leaves the current set-up alone.
bool configure_fault_injection(std::string_view spec, std::string* error = nullptr);

struct FaultPointStats {
  std::uint64_t hits = 0;    // times the point was reached while injection was on
  std::uint64_t delays = 0;  // of which chosen to sleep
  std::uint64_t slept_us = 0;
};
using FaultStats = std::array<FaultPointStats, static_cast<std::size_t>(RacePoint::count_)>;

// Counters since process start (all points; zero where nothing was configured).
FaultStats fault_injection_stats() noexcept;

// The spec in force, normalised ("" when off).
std::string fault_injection_spec();

}  // namespace vmm::timers

#endif  // VMM_FAULT_INJECTION
