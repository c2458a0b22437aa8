// The two seed races, each forced deterministically at its exact
// interleaving, and each run twice: on the model of the old semantics
// (old_model.h), where it must go wrong as it did on production hosts, and on
// this project's timers, where it must not.
//
// Interleavings are forced with race points (timers/race_points.h): a hook
// parks the thread that reaches a point until the test lets it go, and a
// ManualClock makes "the timer is due" a decision of the test.
#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "tests/common/race_script.h"
#include "tests/common/sync.h"
#include "tests/seed_race/old_model.h"
#include "timers/callout.h"
#include "timers/cyclic.h"
#include "timers/event_loop.h"
#include "timers/race_points.h"

namespace vmm {
namespace {

using namespace std::chrono_literals;
using testing::RaceScript;
using testing::Gate;
using timers::CalloutTime;
using timers::kMillisecond;
using timers::Nanos;
using timers::RacePoint;

constexpr auto kPatience = 10s;  // a forced interleaving that hangs fails instead


// Two environments with one interface: the old model and the project.
struct OldEnv {
  static constexpr const char* kName = "old illumos semantics";
  timers::ManualClock clock{timers::kSecond};
  seed_model::OldCyclics cyclics{clock};
  using Callout = seed_model::OldCallout;
  using Handle = int;

  void init(Callout& c, void (*fn)(void*), void* arg) { c.init(cyclics, fn, arg); }
  Handle add(void (*fn)(void*), void* arg, Nanos when) { return cyclics.add(fn, arg, when); }
  bool reprogram(Handle h, Nanos when) {
    cyclics.reprogram(h, when);
    return !cyclics.panicked();
  }
  void remove(Handle h) { cyclics.remove(h); }
  std::size_t run_due() { return cyclics.run_due(); }
  std::optional<std::string> panic() const {
    if (cyclics.panicked()) return cyclics.panic_message();
    return std::nullopt;
  }
};

struct ProjectEnv {
  static constexpr const char* kName = "project semantics";
  timers::ManualClock clock{timers::kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  using Callout = timers::Callout;
  using Handle = timers::CyclicId;

  struct Target {
    void (*fn)(void*);
    void* arg;
  };
  std::deque<Target> targets;  // stable addresses for the trampolines below

  void init(Callout& c, void (*fn)(void*), void* arg) { ASSERT_TRUE(c.init(system, system.loop(0), fn, arg)); }
  Handle add(void (*fn)(void*), void* arg, Nanos when) {
    targets.push_back({fn, arg});
    return system.add(
        [](void* t, const timers::Expiry&) {
          auto* target = static_cast<Target*>(t);
          target->fn(target->arg);
        },
        &targets.back(), when, timers::kOneShot, system.loop(0));
  }
  bool reprogram(Handle h, Nanos when) { return system.reprogram(h, when); }
  void remove(Handle h) { EXPECT_TRUE(system.remove(h)); }
  std::size_t run_due() { return system.loop(0).run_due(); }
  std::optional<std::string> panic() const { return std::nullopt; }  // nothing here can panic
};

// Runs env.run_due() on a thread of its own: the "CPU" where timers fire.
template <typename Env>
class TimerCpu {
 public:
  explicit TimerCpu(Env& env) : env_(env) {}
  ~TimerCpu() { join(); }
  void fire_due_timers() {
    join();
    thread_ = std::thread([this] { env_.run_due(); });
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  Env& env_;
  std::thread thread_;
};

// ===================================================================
// Seed 002 (illumos 12476): a timer handler re-arms its own timer while a
// VM reset on another CPU removes it and waits for that handler.
// ===================================================================

struct Seed002Outcome {
  std::optional<std::string> panic;
  bool rearm_accepted = true;
  int runs = 0;
  int runs_after_reset = 0;
  bool remover_returned = false;
};

// At the cyclic layer: a raw handler reprograms its cyclic after the remover
// took it out (cyclic_remove -> sema_p, handler continues, reprogram).
template <typename Env>
Seed002Outcome seed002_at_cyclic_layer() {
  Env env;
  struct Device {
    Env* env = nullptr;
    typename Env::Handle handle{};
    Gate started, may_rearm;
    int runs = 0;
    bool rearm_accepted = true;
  } dev;
  dev.env = &env;

  RaceScript script([&](RacePoint point) {
    // The remover is about to wait for the running handler: let it re-arm.
    if (point == RacePoint::cyclic_remove_waiting) dev.may_rearm.open();
  });

  dev.handle = env.add(
      [](void* arg) {
        auto* d = static_cast<Device*>(arg);
        ++d->runs;
        d->started.open();
        EXPECT_TRUE(d->may_rearm.wait_for(kPatience));
        d->rearm_accepted = d->env->reprogram(d->handle, d->env->clock.now() + kMillisecond);
      },
      &dev, env.clock.now() + kMillisecond);

  env.clock.advance(kMillisecond);
  TimerCpu<Env> cpu(env);
  cpu.fire_due_timers();
  EXPECT_TRUE(dev.started.wait_for(kPatience));

  Seed002Outcome out;
  std::thread reset_thread([&] {
    env.remove(dev.handle);  // vm_reinit -> ... -> cyclic_remove
    out.remover_returned = true;
  });
  reset_thread.join();
  cpu.join();

  const int runs_at_reset = dev.runs;
  env.clock.advance(10 * kMillisecond);
  env.run_due();
  out.panic = env.panic();
  out.rearm_accepted = dev.rearm_accepted;
  out.runs = dev.runs;
  out.runs_after_reset = dev.runs - runs_at_reset;
  return out;
}

TEST(Seed002ReprogramAfterRemove, CyclicLayer) {
  const Seed002Outcome old = seed002_at_cyclic_layer<OldEnv>();
  ASSERT_TRUE(old.panic.has_value()) << "the model of the old semantics must reproduce the panic";
  EXPECT_EQ(*old.panic, "attempt to reprogram non-existent cyclic");

  const Seed002Outcome now = seed002_at_cyclic_layer<ProjectEnv>();
  EXPECT_FALSE(now.panic.has_value());
  EXPECT_FALSE(now.rearm_accepted) << "reprogram of a cyclic removed under its handler must report failure";
  EXPECT_TRUE(now.remover_returned);
  EXPECT_EQ(now.runs, 1);
  EXPECT_EQ(now.runs_after_reset, 0);
}

// At the callout layer, shaped like vhpet/vatpit: the device handler (lock,
// pending/active, work, re-arm) runs while the reset path drains.
template <typename Env>
Seed002Outcome seed002_at_callout_layer() {
  Env env;
  struct Hpet {
    Env* env = nullptr;
    std::mutex mu;
    typename Env::Callout callout;
    Nanos period = kMillisecond;
    Nanos comparator = 0;
    int runs = 0;
    bool rearm_accepted = true;
    Gate at_rearm, may_rearm;
  } hpet;
  hpet.env = &env;

  RaceScript script([&](RacePoint point) {
    if (point == RacePoint::device_handler_before_rearm) {
      hpet.at_rearm.open();
      EXPECT_TRUE(hpet.may_rearm.wait_for(kPatience));
    }
    if (point == RacePoint::cyclic_remove_waiting) hpet.may_rearm.open();
  });

  env.init(hpet.callout, [](void* arg) {
    auto* h = static_cast<Hpet*>(arg);
    std::lock_guard lock(h->mu);
    if (h->callout.pending() || !h->callout.active()) return;
    h->callout.deactivate();
    ++h->runs;  // the interrupt would be raised here
    timers::race_point(RacePoint::device_handler_before_rearm);
    h->comparator += h->period;
    h->rearm_accepted = h->callout.reset(h->comparator, CalloutTime::absolute);
  }, &hpet);
  {
    std::lock_guard lock(hpet.mu);
    hpet.comparator = env.clock.now() + hpet.period;
    hpet.callout.reset(hpet.comparator, CalloutTime::absolute);
  }

  env.clock.advance(hpet.period);
  TimerCpu<Env> cpu(env);
  cpu.fire_due_timers();
  EXPECT_TRUE(hpet.at_rearm.wait_for(kPatience));

  Seed002Outcome out;
  std::thread reset_thread([&] {
    hpet.callout.drain();  // vhpet_cleanup -> callout_drain, device lock not held
    out.remover_returned = true;
  });
  reset_thread.join();
  cpu.join();

  const int runs_at_reset = hpet.runs;
  env.clock.advance(10 * hpet.period);
  env.run_due();
  out.panic = env.panic();
  out.rearm_accepted = hpet.rearm_accepted;
  out.runs = hpet.runs;
  out.runs_after_reset = hpet.runs - runs_at_reset;
  return out;
}

TEST(Seed002ReprogramAfterRemove, CalloutLayerHpetStyleDevice) {
  const Seed002Outcome old = seed002_at_callout_layer<OldEnv>();
  ASSERT_TRUE(old.panic.has_value()) << "the model of the old semantics must reproduce the panic";
  EXPECT_EQ(*old.panic, "attempt to reprogram non-existent cyclic");

  const Seed002Outcome now = seed002_at_callout_layer<ProjectEnv>();
  EXPECT_FALSE(now.panic.has_value());
  EXPECT_FALSE(now.rearm_accepted);
  EXPECT_TRUE(now.remover_returned);
  EXPECT_EQ(now.runs, 1);
  EXPECT_EQ(now.runs_after_reset, 0) << "a drained callout's handler ran again";
}

// ===================================================================
// Seed 000 (illumos 12738): the guest re-arms a periodic vlapic timer (new
// deadline stored, PENDING set, cyclic not yet reprogrammed) exactly as the
// old deadline fires; the unlocked glue clears PENDING behind the writer's
// back, and the handler takes the stale firing for the new deadline.
// ===================================================================

struct Seed000Outcome {
  std::optional<std::string> assertion;  // the KASSERT that panicked hosts
  int stale_firings_ignored = 0;
  int ticks = 0;
  std::vector<Nanos> tick_times;
};

// The vlapic timer as bhyve wrote it (vlapic_callout_handler and
// vlapic_icrtmr_write_handler), periodic mode, on either callout.
template <typename Env>
struct Vlapic {
  Env* env = nullptr;
  std::mutex timer_mu;
  typename Env::Callout callout;
  Nanos timer_fire = 0;
  Nanos period = 0;
  Seed000Outcome out;
  Gate handler_entered;

  static void callout_handler(void* arg) {
    auto* v = static_cast<Vlapic*>(arg);
    v->handler_entered.open();
    std::lock_guard lock(v->timer_mu);
    if (v->callout.pending()) {  // callout was reset
      ++v->out.stale_firings_ignored;
      return;
    }
    if (!v->callout.active()) return;  // callout was stopped
    v->callout.deactivate();
    const Nanos now = v->env->clock.now();
    if (now < v->timer_fire) {
      v->out.assertion = "vlapic callout at " + std::to_string(now) + ", expected at " +
                         std::to_string(v->timer_fire);
      return;  // the kernel panicked here
    }
    ++v->out.ticks;  // vlapic_fire_timer
    v->out.tick_times.push_back(now);
    Nanos lag = now - v->timer_fire;
    Nanos rem = v->period;
    if (lag < v->period) {
      rem -= lag;
    } else {
      v->timer_fire = now;
    }
    v->timer_fire += v->period;
    v->callout.reset(rem, CalloutTime::relative);
  }

  void icrtmr_write(Nanos new_period) {
    std::lock_guard lock(timer_mu);
    period = new_period;
    timer_fire = env->clock.now() + period;
    callout.reset(period, CalloutTime::relative);
  }
};

template <typename Env>
Seed000Outcome seed000_vlapic_rearm_races_firing() {
  Env env;
  Vlapic<Env> vlapic;
  vlapic.env = &env;
  env.init(vlapic.callout, &Vlapic<Env>::callout_handler, &vlapic);
  const Nanos period = kMillisecond;
  vlapic.icrtmr_write(period);  // at t0; the timer is due at t0 + period

  env.clock.advance(period);  // the old deadline is due...
  TimerCpu<Env> cpu(env);
  bool forced = false;
  RaceScript script([&](RacePoint point) {
    // ...and the guest re-arms right now: after the new deadline and
    // PENDING/target were stored, before the cyclic is reprogrammed, the
    // old deadline fires on the timer CPU and its handler starts.
    if (point == RacePoint::callout_reset_stored && !forced) {
      forced = true;
      cpu.fire_due_timers();
      EXPECT_TRUE(vlapic.handler_entered.wait_for(kPatience));
    }
  });
  vlapic.icrtmr_write(period);  // the vCPU's write, racing the firing
  cpu.join();

  // Time reaches the new deadline: exactly one tick must follow.
  env.clock.advance(period);
  env.run_due();
  return vlapic.out;
}

TEST(Seed000PendingClearedWithoutLock, VlapicReArmRacesFiring) {
  const Seed000Outcome old = seed000_vlapic_rearm_races_firing<OldEnv>();
  ASSERT_TRUE(old.assertion.has_value()) << "the model of the old semantics must hit the KASSERT";
  EXPECT_NE(old.assertion->find("vlapic callout at"), std::string::npos);
  EXPECT_EQ(old.stale_firings_ignored, 0);

  const Seed000Outcome now = seed000_vlapic_rearm_races_firing<ProjectEnv>();
  EXPECT_FALSE(now.assertion.has_value()) << *now.assertion;
  EXPECT_EQ(now.stale_firings_ignored, 1) << "the stale firing must be seen as pending";
  ASSERT_EQ(now.ticks, 1);
  EXPECT_EQ(now.tick_times[0], timers::kSecond + 2 * kMillisecond) << "tick at the re-armed deadline";
}

// The same race, with the stale firing arriving after the writer finished
// (the other order): both semantics must survive it; the project's must not
// lose or duplicate the tick.
template <typename Env>
Seed000Outcome seed000_firing_after_rearm_completed() {
  Env env;
  Vlapic<Env> vlapic;
  vlapic.env = &env;
  env.init(vlapic.callout, &Vlapic<Env>::callout_handler, &vlapic);
  vlapic.icrtmr_write(kMillisecond);
  env.clock.advance(kMillisecond);
  vlapic.icrtmr_write(kMillisecond);  // re-armed before the loop noticed
  env.run_due();
  env.clock.advance(kMillisecond);
  env.run_due();
  return vlapic.out;
}

TEST(Seed000PendingClearedWithoutLock, RearmBeforeTheLoopRunsIsFineEitherWay) {
  const Seed000Outcome old = seed000_firing_after_rearm_completed<OldEnv>();
  EXPECT_FALSE(old.assertion.has_value());
  const Seed000Outcome now = seed000_firing_after_rearm_completed<ProjectEnv>();
  EXPECT_FALSE(now.assertion.has_value());
  EXPECT_EQ(now.ticks, 1);
}

}  // namespace
}  // namespace vmm
