// The two seed races at the cyclic and callout layers, each forced at the
// interleaving in which only the fix it names stands between the guest and
// the bug, and run twice where the old semantics had that layer: on the
// model of them (old_model.h), where it must go wrong as it did on
// production hosts, and on this project's timers, where it must not. Each
// project-side test fails when its fix is removed (tools/mutants checks
// that; the mutants are listed in cmake/VmmMutants.cmake).
//
// Interleavings are forced with race points (timers/race_points.h): a hook
// parks the thread that reaches a point until the test lets it go, and a
// ManualClock makes "the timer is due" a decision of the test. What a
// remover promises is checked at the moment it returns (RemovalCheck).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/race_script.h"
#include "tests/common/sync.h"
#include "tests/seed_race/old_model.h"
#include "tests/seed_race/seed_scripts.h"
#include "timers/callout.h"
#include "timers/cyclic.h"
#include "timers/event_loop.h"
#include "timers/race_points.h"

namespace vmm {
namespace {

using namespace std::chrono_literals;
using testing::Gate;
using testing::RaceScript;
using testing::RemovalCheck;
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
  bool remove(Handle h) {
    cyclics.remove(h);
    return true;
  }
  std::size_t run_due() { return cyclics.run_due(); }
  std::optional<std::string> panic() const {
    if (cyclics.panicked()) return cyclics.panic_message();
    return std::nullopt;
  }
  std::size_t heap_size() const { return 0; }  // the model keeps no heap
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
  bool remove(Handle h) { return system.remove(h); }
  std::size_t run_due() { return system.loop(0).run_due(); }
  std::optional<std::string> panic() const { return std::nullopt; }  // nothing here can panic
  std::size_t heap_size() { return system.loop(0).heap_size(); }
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
  std::vector<bool> handler_returned_at_each_removal;
  int runs = 0;
  int runs_after_reset = 0;
  std::size_t heap_after_reset = 0;
};

// At the cyclic layer: the handler has computed and stored its next
// deadline and is about to reprogram its cyclic when the remover takes the
// cyclic out and waits for it (cyclic_remove -> sema_p, the handler goes on
// and reprograms). Only the cyclic layer can refuse that reprogram.
template <typename Env>
Seed002Outcome seed002_at_cyclic_layer() {
  Env env;
  SCOPED_TRACE(Env::kName);
  struct Device {
    Env* env = nullptr;
    typename Env::Handle handle{};
    RemovalCheck* check = nullptr;
    Nanos next = 0;
    int runs = 0;
    bool rearm_accepted = true;
    std::atomic<bool> returned{false};
  } dev;
  dev.env = &env;
  RemovalCheck check(1, [&] { return dev.returned.load(); });
  dev.check = &check;
  RaceScript script([&](RacePoint point) { check.on_point(point); });

  dev.handle = env.add(
      [](void* arg) {
        auto* d = static_cast<Device*>(arg);
        ++d->runs;
        d->next = d->env->clock.now() + kMillisecond;
        d->check->park();  // the remover takes the cyclic out and waits
        d->rearm_accepted = d->env->reprogram(d->handle, d->next);
        d->returned.store(true);
      },
      &dev, env.clock.now() + kMillisecond);

  env.clock.advance(kMillisecond);
  TimerCpu<Env> cpu(env);
  cpu.fire_due_timers();
  EXPECT_TRUE(check.wait_parked());
  std::thread reset_thread([&] { EXPECT_TRUE(check.remove([&] { return env.remove(dev.handle); })); });
  reset_thread.join();
  cpu.join();

  Seed002Outcome out;
  const int runs_at_reset = dev.runs;
  out.heap_after_reset = env.heap_size();
  env.clock.advance(10 * kMillisecond);
  env.run_due();
  out.panic = env.panic();
  out.rearm_accepted = dev.rearm_accepted;
  out.handler_returned_at_each_removal = check.handler_returned_at_each_removal();
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
  EXPECT_EQ(now.handler_returned_at_each_removal, std::vector<bool>{true})
      << "remove() returned while the handler it removed was running";
  EXPECT_EQ(now.heap_after_reset, 0u) << "the removed cyclic went back into its loop's heap";
  EXPECT_EQ(now.runs, 1);
  EXPECT_EQ(now.runs_after_reset, 0);
}

// At the callout layer, shaped like vhpet/vatpit: the device handler (lock,
// pending/active, work, re-arm) is parked inside its re-arm with the new
// target stored -- past every check Callout::reset makes before it asks the
// cyclic layer -- while a VM reset and a forced stop drain the callout
// (device lock not held) and wait for it.
template <typename Env>
Seed002Outcome seed002_at_callout_layer() {
  Env env;
  SCOPED_TRACE(Env::kName);
  struct Hpet {
    Env* env = nullptr;
    std::mutex mu;
    typename Env::Callout callout;
    Nanos period = kMillisecond;
    Nanos comparator = 0;
    int runs = 0;
    bool rearm_accepted = true;
    std::atomic<bool> in_handler{false}, returned{false};
  } hpet;
  hpet.env = &env;
  RemovalCheck check(2, [&] { return hpet.returned.load(); });
  RaceScript script([&](RacePoint point) {
    check.on_point(point);
    if (point == RacePoint::callout_reset_stored && hpet.in_handler.exchange(false)) check.park();
  });

  env.init(hpet.callout, [](void* arg) {
    auto* h = static_cast<Hpet*>(arg);
    {
      std::lock_guard lock(h->mu);
      if (h->callout.pending() || !h->callout.active()) return;
      h->callout.deactivate();
      ++h->runs;  // the interrupt would be raised here
      h->comparator += h->period;
      h->in_handler.store(true);
      h->rearm_accepted = h->callout.reset(h->comparator, CalloutTime::absolute);
    }
    h->returned.store(true);
  }, &hpet);
  {
    std::lock_guard lock(hpet.mu);
    hpet.comparator = env.clock.now() + hpet.period;
    hpet.callout.reset(hpet.comparator, CalloutTime::absolute);
  }

  env.clock.advance(hpet.period);
  TimerCpu<Env> cpu(env);
  cpu.fire_due_timers();
  EXPECT_TRUE(check.wait_parked());
  // vhpet_cleanup -> callout_drain, device lock not held; twice at once.
  std::thread vm_reset([&] { check.remove([&] { return hpet.callout.drain(); }); });
  std::thread force_stop([&] { check.remove([&] { return hpet.callout.drain(); }); });
  vm_reset.join();
  force_stop.join();
  cpu.join();

  Seed002Outcome out;
  const int runs_at_reset = hpet.runs;
  out.heap_after_reset = env.heap_size();
  env.clock.advance(10 * hpet.period);
  env.run_due();
  out.panic = env.panic();
  out.rearm_accepted = hpet.rearm_accepted;
  out.handler_returned_at_each_removal = check.handler_returned_at_each_removal();
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
  EXPECT_EQ(now.handler_returned_at_each_removal, (std::vector<bool>{true, true}))
      << "a drain returned while the handler it drained was running";
  EXPECT_EQ(now.heap_after_reset, 0u) << "the cyclic layer took the re-arm of the removed cyclic";
  EXPECT_EQ(now.runs, 1);
  EXPECT_EQ(now.runs_after_reset, 0) << "a drained callout's handler ran again";
}

// The other end of that window: the drain has flagged the callout and
// cleared its target but not yet removed the cyclic when the handler
// re-arms. The reprogram goes through (the cyclic is still there); the
// callout itself must refuse the re-arm, or the drained callout keeps the
// target. (The old shim had no such check to model: its drain was the
// remove.)
TEST(Seed002ReprogramAfterRemove, CalloutLayerReArmWhileTheDrainIsUnderWay) {
  timers::ManualClock clock{timers::kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  struct Device {
    std::mutex mu;
    timers::Callout callout;
    int runs = 0;
    bool rearm_accepted = true;
    static void on_timer(void* arg) {
      auto* d = static_cast<Device*>(arg);
      std::lock_guard lock(d->mu);
      if (!d->callout.claim()) return;
      ++d->runs;
      timers::race_point(RacePoint::device_handler_before_rearm);
      d->rearm_accepted = d->callout.reset(kMillisecond, CalloutTime::relative);
    }
  } dev;
  ASSERT_TRUE(dev.callout.init(system, system.loop(0), &Device::on_timer, &dev));
  {
    std::lock_guard lock(dev.mu);
    ASSERT_TRUE(dev.callout.reset(kMillisecond, CalloutTime::relative));
  }
  clock.advance(kMillisecond);
  const seed::DrainRace race = seed::drain_racing_the_handlers_rearm(
      system.loop(0), seed::DrainWindow::callout_draining, 1, [&] { EXPECT_TRUE(dev.callout.drain()); });
  ASSERT_TRUE(race.handler_parked);
  EXPECT_FALSE(dev.rearm_accepted) << "a re-arm made while the drain was under way must be refused";
  EXPECT_FALSE(dev.callout.active()) << "drained, yet armed";
  EXPECT_EQ(system.loop(0).heap_size(), 0u);
  clock.advance(timers::kSecond);
  EXPECT_EQ(system.loop(0).run_due(), 0u);
  EXPECT_EQ(dev.runs, 1);
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

// At the cyclic layer, which has no PENDING: a device on a raw one-shot
// cyclic keeps its own deadline and reads the deadline each firing serves
// from its Expiry. The guest's re-arm stores the new deadline under the
// device lock, and the old deadline fires before the re-arm reprograms the
// cyclic; that reprogram lands while the stale firing's handler waits for
// the lock. The cyclic layer must keep it (a one-shot is parked before its
// handler runs, not after) and tell the stale firing by its deadline.
TEST(Seed000PendingClearedWithoutLock, CyclicLayerStaleFiringDuringARearm) {
  timers::ManualClock clock{timers::kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  struct Device {
    std::mutex mu;
    Nanos deadline = 0;
    std::vector<Nanos> stale, ticks;
    Gate firing;
    static void on_expiry(void* arg, const timers::Expiry& expiry) {
      auto* d = static_cast<Device*>(arg);
      d->firing.open();
      std::lock_guard lock(d->mu);
      if (expiry.deadline < d->deadline) {
        d->stale.push_back(expiry.deadline);
        return;
      }
      d->ticks.push_back(expiry.deadline);
    }
  } dev;
  const Nanos old_deadline = clock.now() + kMillisecond;
  dev.deadline = old_deadline;
  const timers::CyclicId id = system.add(&Device::on_expiry, &dev, old_deadline, timers::kOneShot, system.loop(0));
  clock.set(old_deadline);
  const Nanos new_deadline = old_deadline + kMillisecond;
  std::thread timer_cpu;
  {
    std::lock_guard lock(dev.mu);  // the guest's write
    dev.deadline = new_deadline;
    timer_cpu = std::thread([&] { system.loop(0).run_due(); });
    ASSERT_TRUE(dev.firing.wait_for(kPatience));
    EXPECT_TRUE(system.reprogram(id, new_deadline));
  }
  timer_cpu.join();
  EXPECT_EQ(dev.stale, std::vector<Nanos>{old_deadline}) << "the stale firing must be told by its deadline";
  EXPECT_TRUE(dev.ticks.empty());
  clock.set(new_deadline);
  EXPECT_EQ(system.loop(0).run_due(), 1u) << "the re-arm that raced the firing was lost";
  EXPECT_EQ(dev.ticks, std::vector<Nanos>{new_deadline});
}

// The vlapic timer as bhyve wrote it (vlapic_callout_handler and
// vlapic_icrtmr_write_handler), periodic mode, on either callout. It has
// no second line of defence: a stale firing it takes for the new deadline
// trips its KASSERT.
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

// At the callout layer: the guest's initial-count write has stored the new
// deadline (PENDING set / target stored) and not yet reprogrammed the
// cyclic when the old deadline fires on the timer CPU and its handler
// queues for the timer lock the write holds.
template <typename Env>
Seed000Outcome seed000_vlapic_rearm_races_firing() {
  Env env;
  SCOPED_TRACE(Env::kName);
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
  EXPECT_TRUE(forced);

  // Time reaches the new deadline: exactly one tick must follow.
  env.clock.advance(period);
  env.run_due();
  return vlapic.out;
}

TEST(Seed000PendingClearedWithoutLock, CalloutLayerVlapicReArmRacesFiring) {
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

}  // namespace
}  // namespace vmm
