// Test helpers for forcing an interleaving on a manual clock: a race hook
// installed for a scope, and stepping a caller-driven loop from deadline to
// deadline.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "tests/common/sync.h"
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

// A manual clock whose now() first runs a hook: a way to park a thread at
// the exact point where a timer operation reads the time (a relative
// Callout::reset reads it before it stores its target), where there is no
// race point. Set the hook before other threads read the clock.
class HookedClock final : public timers::Clock {
 public:
  explicit HookedClock(timers::Nanos start = timers::kSecond) noexcept : time_(start) {}
  timers::Nanos now() const noexcept override {
    if (hook_) hook_();
    return time_.now();
  }
  void set_hook(std::function<void()> hook) { hook_ = std::move(hook); }
  void set(timers::Nanos t) noexcept { time_.set(t); }
  void advance(timers::Nanos delta) noexcept { time_.advance(delta); }

 private:
  timers::ManualClock time_;
  std::function<void()> hook_;
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

// What a remover (remove(), drain(), drain_timers()) promises holds at the
// moment it returns: the handler it met running has returned. To check that
// without a sleep, the handler parks (park()) until every expected remover
// is about to wait for it (race point cyclic_remove_waiting, fed in through
// on_point()) or has returned; a remover that did not wait therefore returns
// while the handler is still parked, and each remover, wrapped in remove(),
// records at its return whether the handler had returned.
class RemovalCheck {
 public:
  static constexpr std::chrono::seconds kPatience{10};

  // `handler_returned` tells, from the remover's thread, whether the parked
  // handler has returned (a flag it sets last, or the loop's handler_calls).
  RemovalCheck(int removers, std::function<bool()> handler_returned)
      : removers_(removers), handler_returned_(std::move(handler_returned)) {}

  // On the handler's thread, at the point the test chose. False when no
  // remover came (the test then fails rather than hangs).
  bool park() {
    parked_.open();
    const bool released = release_.wait_for(kPatience);
    EXPECT_TRUE(released) << "no remover came for the parked handler";
    return released;
  }
  bool wait_parked() { return parked_.wait_for(kPatience); }
  bool parked() { return parked_.is_open(); }

  void on_point(timers::RacePoint point) {
    if (point == timers::RacePoint::cyclic_remove_waiting && waiting_.fetch_add(1) + 1 == removers_) release_.open();
  }

  // Runs one remover's call and records what held when it returned.
  template <typename Remove>
  auto remove(Remove&& call) {
    auto result = call();
    const bool returned = handler_returned_();
    {
      std::lock_guard lock(mu_);
      returned_at_removal_.push_back(returned);
    }
    release_.open();  // a remover that did not wait must not leave it parked
    return result;
  }

  // One entry per remover that returned: whether the handler had returned.
  std::vector<bool> handler_returned_at_each_removal() {
    std::lock_guard lock(mu_);
    return returned_at_removal_;
  }
  int removers_that_waited() const { return waiting_.load(); }

 private:
  const int removers_;
  const std::function<bool()> handler_returned_;
  Gate parked_, release_;
  std::atomic<int> waiting_{0};
  std::mutex mu_;
  std::vector<bool> returned_at_removal_;
};

}  // namespace vmm::testing
