// Test helpers for forcing an interleaving on a manual clock: a race hook
// installed for a scope, and stepping a caller-driven loop from deadline to
// deadline.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <utility>

#include "timers/clock.h"
#include "timers/event_loop.h"
#include "timers/race_points.h"

namespace vmm::testing {

// Installs a process-wide race hook for the lifetime of the object; the
// function runs on whichever thread reaches a race point.
class RaceScript {
 public:
  explicit RaceScript(std::function<void(timers::RacePoint)> on_point) : on_point_(std::move(on_point)) {
    timers::set_race_hook(&RaceScript::dispatch, this);
  }
  ~RaceScript() { timers::set_race_hook(nullptr, nullptr); }
  RaceScript(const RaceScript&) = delete;
  RaceScript& operator=(const RaceScript&) = delete;

 private:
  static void dispatch(timers::RacePoint point, void* self) { static_cast<RaceScript*>(self)->on_point_(point); }
  std::function<void(timers::RacePoint)> on_point_;
};

// Steps `clock` from one deadline of `loop` to the next up to `until`,
// running what is due at each and calling `on_fire` after every batch that
// ran something; ends at `until`. A device that re-arms in a tight loop would
// make this run forever: after `max_batches` it fails the test instead.
inline void run_loop_until(timers::ManualClock& clock, timers::EventLoop& loop, timers::Nanos until,
                           const std::function<void()>& on_fire = {}, std::uint64_t max_batches = 1'000'000) {
  for (std::uint64_t batches = 0;; ++batches) {
    const timers::Nanos next = loop.next_deadline();
    if (next > until) break;
    if (batches == max_batches) {
      ADD_FAILURE() << "more than " << max_batches << " timer batches before " << until << ": spinning?";
      break;
    }
    clock.set(std::max(next, clock.now()));
    if (loop.run_due() != 0 && on_fire) on_fire();
  }
  clock.set(until);
  loop.run_due();
}

}  // namespace vmm::testing
