// The two seed races as scripts any layer can be put through: each forces
// the interleaving in which only the fix it names stands between the guest
// and the bug, and leaves the asserting to the caller, which knows what its
// layer promises. Used by the callout-level and device-level seed tests.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "tests/common/race_script.h"
#include "tests/common/sync.h"
#include "timers/event_loop.h"
#include "timers/race_points.h"

namespace vmm::seed {

using testing::Gate;
using testing::RaceScript;
using testing::RemovalCheck;
using timers::RacePoint;

// Where in seed 002's window (illumos 12476) the handler's re-arm meets the
// drain of a VM reset.
enum class DrainWindow {
  // The handler is parked inside its re-arm with its new target stored,
  // past every check the callout makes before the cyclic layer; the drains
  // remove the cyclic and wait for it. Only the cyclic layer's refusal (the
  // generation bump) stops the re-arm of the removed cyclic, and only the
  // removers' wait keeps them from returning while the handler runs.
  cyclic_removed,
  // For a handler that does not re-arm its own callout (the RTC's): parked
  // where it is about to re-arm, while the drains remove and wait.
  handler_running,
  // The drain has flagged the callout and cleared its target but not yet
  // removed the cyclic when the handler re-arms: the reprogram goes
  // through, and only the callout's own refusal (drained_ checked after the
  // reprogram) keeps the drained callout from staying armed.
  callout_draining,
};

struct DrainRace {
  bool handler_parked = false;
  // One entry per drain: had the handler returned when that drain returned?
  std::vector<bool> handler_returned_at_each_drain;
};

// Seed 002: the handler due on `loop` (caller-driven) runs on a timer CPU of
// its own while `drainers` threads each call `drain` (a VM reset, and a
// forced stop at the same time). Whether the handler has returned is read
// from the loop's handler_calls, counted once a handler has returned.
inline DrainRace drain_racing_the_handlers_rearm(timers::EventLoop& loop, DrainWindow window, int drainers,
                                                 const std::function<void()>& drain) {
  const std::uint64_t calls_before = loop.stats().handler_calls;
  RemovalCheck check(window == DrainWindow::callout_draining ? 0 : drainers,
                     [&] { return loop.stats().handler_calls > calls_before; });
  std::atomic<std::thread::id> timer_cpu_id{};
  std::atomic<bool> handler_parked{false}, drain_parked{false};
  Gate drain_at_remove, drain_may_remove, handler_at_rearm, handler_may_rearm;
  const RacePoint handler_point = window == DrainWindow::cyclic_removed ? RacePoint::callout_reset_stored
                                                                        : RacePoint::device_handler_before_rearm;
  DrainRace out;
  {
    RaceScript script([&](RacePoint point) {
      check.on_point(point);
      if (point == handler_point && std::this_thread::get_id() == timer_cpu_id.load() &&
          !handler_parked.exchange(true)) {
        if (window == DrainWindow::callout_draining) {
          handler_at_rearm.open();
          EXPECT_TRUE(handler_may_rearm.wait_for(RemovalCheck::kPatience));
        } else {
          check.park();
        }
      }
      if (window == DrainWindow::callout_draining && point == RacePoint::callout_drain_before_remove &&
          !drain_parked.exchange(true)) {
        drain_at_remove.open();
        EXPECT_TRUE(drain_may_remove.wait_for(RemovalCheck::kPatience));
      }
    });
    std::thread timer_cpu([&] {
      timer_cpu_id.store(std::this_thread::get_id());
      loop.run_due();
    });
    std::vector<std::thread> resets;
    const auto start_drains = [&] {
      for (int i = 0; i < drainers; ++i) {
        resets.emplace_back([&] { check.remove([&] { drain(); return 0; }); });
      }
    };
    if (window == DrainWindow::callout_draining) {
      out.handler_parked = handler_at_rearm.wait_for(RemovalCheck::kPatience);
      start_drains();
      EXPECT_TRUE(drain_at_remove.wait_for(RemovalCheck::kPatience)) << "the drain never reached its removal";
      handler_may_rearm.open();
      timer_cpu.join();
      drain_may_remove.open();
    } else {
      out.handler_parked = check.wait_parked();
      start_drains();
      timer_cpu.join();
    }
    for (auto& reset : resets) reset.join();
  }
  out.handler_returned_at_each_drain = check.handler_returned_at_each_removal();
  return out;
}

// Seed 000 (illumos 12738): `write` -- a guest register write, made on this
// thread as a vCPU would -- re-arms a callout for a later deadline while its
// old deadline is due on `loop` (caller-driven). Parked where the callout has
// stored its new target but not yet reprogrammed its cyclic (device lock
// held), the write lets a timer CPU fire the old deadline: the glue records
// that firing and the device handler queues for the lock. Returns when the
// write and that stale firing are both done; false when the write never got
// there or nothing fired.
inline bool write_racing_the_stale_firing(timers::EventLoop& loop, const std::function<void()>& write) {
  const auto writer = std::this_thread::get_id();
  std::atomic<bool> forced{false};
  Gate glue_ran;
  std::thread timer_cpu;
  {
    RaceScript script([&](RacePoint point) {
      if (point == RacePoint::callout_glue_before_handler) glue_ran.open();
      if (point == RacePoint::callout_reset_stored && std::this_thread::get_id() == writer &&
          !forced.exchange(true)) {
        timer_cpu = std::thread([&] { loop.run_due(); });
        EXPECT_TRUE(glue_ran.wait_for(RemovalCheck::kPatience)) << "the old deadline did not fire";
      }
    });
    write();
    if (timer_cpu.joinable()) timer_cpu.join();
  }
  EXPECT_TRUE(forced.load()) << "the write did not re-arm the callout";
  return forced.load() && glue_ran.is_open();
}

}  // namespace vmm::seed
