// Cyclics on caller-driven loops and a ManualClock: every expiry happens
// exactly when the test says, so each promise of cyclic.h is checked exactly.
#include "timers/cyclic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <atomic>
#include <deque>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "tests/common/race_script.h"
#include "tests/common/sync.h"
#include "timers/cyclic_slot.h"
#include "timers/event_loop.h"
#include "timers/race_points.h"

namespace vmm::timers {

// Reaches into a slot where only a test may: to start a generation where a
// wrap would be four billion removals away.
class CyclicSystemTestAccess {
 public:
  static void set_generation(CyclicSystem& system, CyclicId id, std::uint32_t generation) {
    system.slot_for(id)->generation.store(generation);
  }
};

namespace {

using vmm::testing::Gate;
using namespace std::chrono_literals;

struct Recorder {
  std::vector<Expiry> calls{};
  std::vector<Nanos> seen_at{};
  const Clock* clock = nullptr;
  static void handler(void* arg, const Expiry& expiry) {
    auto* self = static_cast<Recorder*>(arg);
    self->calls.push_back(expiry);
    self->seen_at.push_back(self->clock->now());
  }
};

class CyclicTest : public ::testing::Test {
 protected:
  ManualClock clock{kSecond};
  CyclicSystem system{clock, LoopOptions{.loops = 2, .threads = false}};
  EventLoop& loop0 = system.loop(0);
  EventLoop& loop1 = system.loop(1);
  Recorder rec{.clock = &clock};

  CyclicId add_one_shot(Nanos when, EventLoop* loop = nullptr) {
    return system.add(&Recorder::handler, &rec, when, kOneShot, loop ? *loop : loop0);
  }

  // A cyclic's handler runs on a thread of its own and parks until each of
  // `removers` threads calling remove() waits for it or has returned.
  struct Removal {
    std::vector<bool> handler_returned_at_each_removal;  // what each remover saw as it returned
    int removed = 0;                                     // removers that got true
    int waited = 0;                                      // removers that reached the wait
  };
  Removal remove_while_its_handler_runs(int removers, Nanos interval) {
    struct Handler {
      vmm::testing::RemovalCheck* check = nullptr;
      std::atomic<bool> returned{false};
      static void run(void* arg, const Expiry&) {
        auto* h = static_cast<Handler*>(arg);
        h->check->park();
        h->returned.store(true);
      }
    } h;
    vmm::testing::RemovalCheck check(removers, [&] { return h.returned.load(); });
    vmm::testing::RaceScript script([&](RacePoint point) { check.on_point(point); });
    h.check = &check;
    const CyclicId id = system.add(&Handler::run, &h, clock.now(), interval, loop0);
    std::thread loop_thread([&] { loop0.run_due(); });
    Removal out;
    std::atomic<int> removed{0};
    if (check.wait_parked()) {
      std::vector<std::thread> threads;
      for (int i = 0; i < removers; ++i) {
        threads.emplace_back([&] { removed += check.remove([&] { return system.remove(id); }) ? 1 : 0; });
      }
      for (auto& t : threads) t.join();
    }
    loop_thread.join();
    out.handler_returned_at_each_removal = check.handler_returned_at_each_removal();
    out.removed = removed.load();
    out.waited = check.removers_that_waited();
    return out;
  }
};

TEST_F(CyclicTest, OneShotFiresAtItsDeadlineNotBefore) {
  const Nanos t = clock.now() + 5 * kMillisecond;
  const CyclicId id = add_one_shot(t);
  ASSERT_TRUE(id.valid());
  clock.set(t - 1);
  EXPECT_EQ(loop0.run_due(), 0u);
  clock.set(t);
  EXPECT_EQ(loop0.run_due(), 1u);
  ASSERT_EQ(rec.calls.size(), 1u);
  EXPECT_EQ(rec.calls[0].deadline, t);
  EXPECT_EQ(rec.calls[0].count, 1u);
}

TEST_F(CyclicTest, OneShotStaysParkedUntilReprogrammed) {
  const CyclicId id = add_one_shot(clock.now() + 1);
  clock.advance(10);
  loop0.run_due();
  EXPECT_EQ(system.when(id), kNever);
  EXPECT_EQ(loop0.heap_size(), 0u);
  EXPECT_EQ(system.live_count(), 1u);  // parked, not freed
  clock.advance(kSecond);
  EXPECT_EQ(loop0.run_due(), 0u);
  ASSERT_TRUE(system.reprogram(id, clock.now() + 3));
  clock.advance(3);
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_EQ(rec.calls.size(), 2u);
}

TEST_F(CyclicTest, PeriodicFiresEveryIntervalFromItsFirstDeadline) {
  const Nanos start = clock.now() + kMillisecond;
  const CyclicId id = system.add(&Recorder::handler, &rec, start, kMillisecond, loop0);
  ASSERT_TRUE(id.valid());
  for (int i = 0; i < 5; ++i) {
    clock.set(start + i * kMillisecond);
    EXPECT_EQ(loop0.run_due(), 1u);
    EXPECT_EQ(rec.calls.back().deadline, start + i * kMillisecond);
    EXPECT_EQ(rec.calls.back().count, 1u);
  }
  EXPECT_EQ(system.when(id), start + 5 * kMillisecond);
}

TEST_F(CyclicTest, PeriodicOverrunsAreCountedNotLost) {
  const Nanos start = clock.now() + kMillisecond;
  system.add(&Recorder::handler, &rec, start, kMillisecond, loop0);
  clock.set(start + 3 * kMillisecond + kMillisecond / 2);  // deadlines 0,1,2,3 are due
  EXPECT_EQ(loop0.run_due(), 1u);
  ASSERT_EQ(rec.calls.size(), 1u);
  EXPECT_EQ(rec.calls[0].count, 4u);
  EXPECT_EQ(rec.calls[0].deadline, start + 3 * kMillisecond);
  clock.set(start + 4 * kMillisecond);
  loop0.run_due();
  EXPECT_EQ(rec.calls[1].count, 1u);
}

// A periodic cyclic whose first deadline lies further in the past than a
// Nanos can span (now - first overflows int64): the expiry count and the
// deadline served are exact, with no signed overflow on the way (which
// UndefinedBehaviorSanitizer would report in the asan build).
TEST_F(CyclicTest, PeriodicCatchUpFromAnExtremeFirstDeadlineIsExact) {
  struct Case {
    Nanos first;
    Nanos interval;
  };
  constexpr Nanos kMin = std::numeric_limits<Nanos>::min();
  for (const Case c : {Case{kMin, kSecond}, Case{kMin + 7, 3}, Case{kMin, kNever - 1}, Case{-kNever + 1, kNever / 2}}) {
    SCOPED_TRACE(::testing::Message() << "first " << c.first << " interval " << c.interval);
    rec.calls.clear();
    const CyclicId id = system.add(&Recorder::handler, &rec, c.first, c.interval, loop0);
    ASSERT_TRUE(id.valid());
    ASSERT_EQ(loop0.run_due(), 1u);
    const __int128 span = static_cast<__int128>(clock.now()) - c.first;
    const __int128 missed = span / c.interval;
    ASSERT_EQ(rec.calls.size(), 1u);
    EXPECT_EQ(static_cast<__int128>(rec.calls[0].count), missed + 1);
    EXPECT_EQ(static_cast<__int128>(rec.calls[0].deadline), c.first + missed * c.interval);
    EXPECT_LE(rec.calls[0].deadline, clock.now());
    EXPECT_GT(system.when(id), clock.now());
    EXPECT_TRUE(system.remove(id));
  }
}

TEST_F(CyclicTest, AddRejectsInvalidArguments) {
  EXPECT_FALSE(system.add(nullptr, &rec, clock.now(), kOneShot, loop0).valid());
  EXPECT_FALSE(system.add(&Recorder::handler, &rec, clock.now(), 0, loop0).valid());
  EXPECT_FALSE(system.add(&Recorder::handler, &rec, clock.now(), -5, loop0).valid());
  EXPECT_FALSE(system.add(&Recorder::handler, &rec, kNever, kMillisecond, loop0).valid());
  CyclicSystem other(clock, LoopOptions{.loops = 1, .threads = false});
  EXPECT_FALSE(system.add(&Recorder::handler, &rec, clock.now(), kOneShot, other.loop(0)).valid());
  EXPECT_EQ(system.live_count(), 0u);
}

TEST_F(CyclicTest, AParkedOneShotMayBeAddedAtNever) {
  const CyclicId id = add_one_shot(kNever);
  ASSERT_TRUE(id.valid());
  EXPECT_EQ(loop0.heap_size(), 0u);
  EXPECT_TRUE(system.reprogram(id, clock.now()));
  EXPECT_EQ(loop0.run_due(), 1u);
}

TEST_F(CyclicTest, DeadlinesInThePastFireAtTheNextRun) {
  add_one_shot(0);
  add_one_shot(-kSecond);
  add_one_shot(clock.now() - 1);
  EXPECT_EQ(loop0.run_due(), 3u);
}

TEST_F(CyclicTest, StaleAndBogusHandlesAreRejectedNeverFatal) {
  EXPECT_FALSE(system.reprogram(CyclicId{}, clock.now()));
  EXPECT_FALSE(system.remove(CyclicId{}));
  EXPECT_FALSE(system.reprogram(CyclicId{0xFFFFFFFFu, 1}, clock.now()));
  EXPECT_FALSE(system.remove(CyclicId{0xFFFFFFFFu, 1}));
  EXPECT_FALSE(system.move(CyclicId{12345, 7}, loop1));
  const CyclicId id = add_one_shot(clock.now() + 10);
  EXPECT_FALSE(system.reprogram(CyclicId{id.index, id.generation + 1}, clock.now()));
  EXPECT_EQ(system.when(CyclicId{id.index, id.generation + 1}), kNever);
  EXPECT_EQ(system.loop_of(CyclicId{id.index, id.generation + 1}), nullptr);
}

TEST_F(CyclicTest, ReprogramAndRemoveAfterRemoveReturnFalse) {
  const CyclicId id = add_one_shot(clock.now() + 10);
  EXPECT_TRUE(system.remove(id));
  EXPECT_FALSE(system.remove(id));
  EXPECT_FALSE(system.reprogram(id, clock.now()));
  EXPECT_FALSE(system.move(id, loop1));
  clock.advance(100);
  EXPECT_EQ(loop0.run_due(), 0u);
  EXPECT_EQ(system.live_count(), 0u);
}

TEST_F(CyclicTest, ReusedSlotGetsANewGenerationAndOldHandlesStayStale) {
  const CyclicId first = add_one_shot(clock.now() + 10);
  ASSERT_TRUE(system.remove(first));
  const CyclicId second = add_one_shot(clock.now() + 20);
  EXPECT_EQ(second.index, first.index);  // the slot was reused...
  EXPECT_NE(second.generation, first.generation);
  EXPECT_FALSE(system.reprogram(first, clock.now()));  // ...but never aliased
  EXPECT_FALSE(system.remove(first));
  EXPECT_EQ(system.when(second), clock.now() + 20);
}

// A slot's 32-bit generation, bumped at every removal, must never come
// round to a value a handle was given before: a handle kept that long (a
// drained callout's, say) would then reach a cyclic it never knew. Started
// near the top of the range instead of after four billion removals.
TEST_F(CyclicTest, AGenerationNeverWrapsRoundToAHandleGivenBefore) {
  const CyclicId original = add_one_shot(clock.now() + 10);
  CyclicSystemTestAccess::set_generation(system, original, std::numeric_limits<std::uint32_t>::max() - 1);
  CyclicId current{original.index, std::numeric_limits<std::uint32_t>::max() - 1};
  std::vector<CyclicId> given{original};
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(system.remove(current));
    current = add_one_shot(clock.now() + 10);
    for (const CyclicId old : given) EXPECT_NE(current, old) << "handle " << i << " repeats an earlier one";
    given.push_back(current);
    EXPECT_FALSE(system.reprogram(original, clock.now())) << "the first handle reached cyclic " << i;
  }
  EXPECT_EQ(system.live_count(), 1u);
}

TEST_F(CyclicTest, ReprogramToNeverParks) {
  const CyclicId id = system.add(&Recorder::handler, &rec, clock.now() + 5, kMillisecond, loop0);
  ASSERT_TRUE(system.reprogram(id, kNever));
  clock.advance(kSecond);
  EXPECT_EQ(loop0.run_due(), 0u);
  ASSERT_TRUE(system.reprogram(id, clock.now()));
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_EQ(system.when(id), clock.now() + kMillisecond);  // keeps its interval
}

TEST_F(CyclicTest, ExpiriesRunInDeadlineOrderAcrossAThousandCyclics) {
  std::mt19937_64 rng(42);
  std::vector<Nanos> deadlines;
  for (int i = 0; i < 1000; ++i) {
    const Nanos t = clock.now() + 1 + static_cast<Nanos>(rng() % 1'000'000);
    deadlines.push_back(t);
    add_one_shot(t);
  }
  std::sort(deadlines.begin(), deadlines.end());
  // Step through each distinct deadline so the batch order is observable.
  for (Nanos t : deadlines) {
    clock.set(t);
    loop0.run_due();
  }
  ASSERT_EQ(rec.calls.size(), deadlines.size());
  for (std::size_t i = 0; i < deadlines.size(); ++i) EXPECT_EQ(rec.calls[i].deadline, deadlines[i]);
}

TEST_F(CyclicTest, AHundredThousandCyclicsOnOneLoop) {
  constexpr int kCount = 100'000;
  std::vector<CyclicId> ids;
  ids.reserve(kCount);
  for (int i = 0; i < kCount; ++i) ids.push_back(add_one_shot(clock.now() + 1 + i));
  EXPECT_EQ(loop0.heap_size(), static_cast<std::size_t>(kCount));
  // Reverse every deadline with reprogram, then fire all: the order must follow.
  for (int i = 0; i < kCount; ++i) ASSERT_TRUE(system.reprogram(ids[i], clock.now() + kCount - i));
  EXPECT_EQ(loop0.next_deadline(), clock.now() + 1);
  clock.advance(kCount);
  EXPECT_EQ(loop0.run_due(), static_cast<std::size_t>(kCount));
  EXPECT_TRUE(std::is_sorted(rec.calls.begin(), rec.calls.end(),
                             [](const Expiry& a, const Expiry& b) { return a.deadline < b.deadline; }));
  for (int i = 0; i < kCount; i += 2) ASSERT_TRUE(system.remove(ids[i]));
  EXPECT_EQ(system.live_count(), static_cast<std::size_t>(kCount / 2));
}

TEST_F(CyclicTest, ALaterDeadlineLeavesALaggingKeyThatNeverFiresEarly) {
  const Nanos t = clock.now();
  const CyclicId a = add_one_shot(t + 10);
  add_one_shot(t + 20);
  ASSERT_TRUE(system.reprogram(a, t + 30));  // a's key stays at t+10 in the heap
  EXPECT_EQ(loop0.next_deadline(), t + 20);
  clock.set(t + 20);
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_EQ(rec.calls.back().deadline, t + 20);
  clock.set(t + 29);
  EXPECT_EQ(loop0.run_due(), 0u);
  ASSERT_TRUE(system.reprogram(a, t + 25));  // earlier than its deadline, later than its old key
  EXPECT_EQ(loop0.next_deadline(), t + 25);
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_EQ(rec.calls.back().deadline, t + 25);
}

// Random operations checked against a plain map of what should be armed:
// whatever the heap does internally, exactly the due cyclics fire, each at
// its latest deadline.
TEST_F(CyclicTest, RandomOperationsMatchAReferenceModel) {
  struct Fire {
    std::map<std::uint32_t, Nanos>* fired;
    std::uint32_t key;
  };
  std::map<std::uint32_t, Nanos> fired;
  std::map<std::uint32_t, Nanos> armed;  // reference: key -> deadline
  std::map<std::uint32_t, CyclicId> ids;
  std::deque<Fire> targets;
  std::mt19937_64 rng(99);
  std::uint32_t next_key = 0;
  auto handler = [](void* arg, const Expiry& e) {
    auto* f = static_cast<Fire*>(arg);
    (*f->fired)[f->key] = e.deadline;
  };
  for (int step = 0; step < 20000; ++step) {
    const unsigned op = static_cast<unsigned>(rng() % 100);
    const Nanos when = clock.now() + static_cast<Nanos>(rng() % 10'000);
    if (op < 25 || ids.empty()) {
      targets.push_back(Fire{&fired, next_key});
      ids[next_key] = system.add(handler, &targets.back(), when, kOneShot, loop0);
      armed[next_key++] = when;
    } else {
      auto it = ids.begin();
      std::advance(it, static_cast<long>(rng() % ids.size()));
      if (op < 85) {
        ASSERT_TRUE(system.reprogram(it->second, when));
        armed[it->first] = when;
      } else if (op < 90) {
        ASSERT_TRUE(system.reprogram(it->second, kNever));
        armed.erase(it->first);
      } else {
        ASSERT_TRUE(system.remove(it->second));
        armed.erase(it->first);
        ids.erase(it);
      }
    }
    if (rng() % 10 == 0) {
      clock.advance(static_cast<Nanos>(rng() % 3'000));
      fired.clear();
      loop0.run_due();
      std::map<std::uint32_t, Nanos> due;
      for (auto [key, deadline] : armed) {
        if (deadline <= clock.now()) due[key] = deadline;
      }
      ASSERT_EQ(fired, due) << "at step " << step;
      for (auto& [key, deadline] : due) armed.erase(key);  // one-shots park after firing
      ASSERT_EQ(loop0.next_deadline(), armed.empty() ? kNever
                                                     : std::min_element(armed.begin(), armed.end(),
                                                                        [](auto& x, auto& y) { return x.second < y.second; })
                                                           ->second);
    }
  }
}

// --- handlers acting on the system from inside a batch

struct SelfActing {
  CyclicSystem* system;
  CyclicId self{};
  CyclicId other{};
  int runs = 0;
  bool remove_self = false;
  bool reprogram_result = true;
  bool remove_result = false;
  Nanos rearm_at = kNever;
};

TEST_F(CyclicTest, RemoveFromOwnHandlerDoesNotWaitAndLaterReprogramFails) {
  SelfActing s{.system = &system, .remove_self = true};
  s.self = system.add(
      [](void* arg, const Expiry&) {
        auto* me = static_cast<SelfActing*>(arg);
        ++me->runs;
        me->remove_result = me->system->remove(me->self);  // must not deadlock
        me->reprogram_result = me->system->reprogram(me->self, 0);
      },
      &s, clock.now(), kMillisecond, loop0);
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_TRUE(s.remove_result);
  EXPECT_FALSE(s.reprogram_result);
  EXPECT_EQ(system.live_count(), 0u);  // freed once the handler returned
  clock.advance(kSecond);
  EXPECT_EQ(loop0.run_due(), 0u);
  EXPECT_EQ(s.runs, 1);
}

TEST_F(CyclicTest, HandlerCanReprogramItself) {
  SelfActing s{.system = &system};
  s.self = system.add(
      [](void* arg, const Expiry& e) {
        auto* me = static_cast<SelfActing*>(arg);
        if (++me->runs < 3) me->reprogram_result = me->system->reprogram(me->self, e.deadline + 100);
      },
      &s, clock.now(), kOneShot, loop0);
  for (int i = 0; i < 5; ++i) {
    loop0.run_due();
    clock.advance(100);
  }
  EXPECT_EQ(s.runs, 3);
  EXPECT_TRUE(s.reprogram_result);
}

TEST_F(CyclicTest, AHandlerReArmingItselfInThePastRunsInTheNextBatchNotForever) {
  SelfActing s{.system = &system};
  s.self = system.add(
      [](void* arg, const Expiry&) {
        auto* me = static_cast<SelfActing*>(arg);
        ++me->runs;
        (void)me->system->reprogram(me->self, 0);
      },
      &s, clock.now(), kOneShot, loop0);
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_EQ(s.runs, 2);
}

TEST_F(CyclicTest, RemovingACyclicDueLaterInTheSameBatchStopsIt) {
  SelfActing s{.system = &system};
  // Both due at once; the first (earlier deadline) removes the second.
  s.self = system.add(
      [](void* arg, const Expiry&) {
        auto* me = static_cast<SelfActing*>(arg);
        ++me->runs;
        me->remove_result = me->system->remove(me->other);
      },
      &s, clock.now() - 2, kOneShot, loop0);
  s.other = add_one_shot(clock.now() - 1);
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_TRUE(s.remove_result);
  EXPECT_TRUE(rec.calls.empty());
  EXPECT_EQ(system.live_count(), 1u);
}

TEST_F(CyclicTest, ACyclicAddedByAHandlerRunsInTheNextBatch) {
  struct Adder {
    CyclicSystem* system;
    EventLoop* loop;
    Recorder* rec;
    CyclicId added;
  } adder{&system, &loop0, &rec, {}};
  system.add(
      [](void* arg, const Expiry&) {
        auto* a = static_cast<Adder*>(arg);
        a->added = a->system->add(&Recorder::handler, a->rec, 0, kOneShot, *a->loop);
      },
      &adder, clock.now(), kOneShot, loop0);
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_TRUE(adder.added.valid());
  EXPECT_TRUE(rec.calls.empty());
  EXPECT_EQ(loop0.run_due(), 1u);
  EXPECT_EQ(rec.calls.size(), 1u);
}

TEST_F(CyclicTest, RunDueInsideAHandlerDoesNotReenter) {
  struct Reenter {
    EventLoop* loop;
    std::size_t inner = 99;
  } r{&loop0};
  system.add([](void* arg, const Expiry&) { auto* x = static_cast<Reenter*>(arg); x->inner = x->loop->run_due(); },
             &r, clock.now(), kOneShot, loop0);
  add_one_shot(clock.now());
  EXPECT_EQ(loop0.run_due(), 2u);
  EXPECT_EQ(r.inner, 0u);
}

// A second thread stepping a caller-driven loop while another steps it is
// turned away without becoming the loop's thread: its remove() of the
// running cyclic waits like any remover's, and the handler's remove(self)
// does not wait for itself.
TEST_F(CyclicTest, ASecondStepperIsTurnedAwayAndItsRemoveWaits) {
  struct Handler {
    CyclicSystem* system = nullptr;
    CyclicId self;
    vmm::testing::RemovalCheck* check = nullptr;
    std::atomic<bool> returned{false};
    bool removed_itself = true;
    static void run(void* arg, const Expiry&) {
      auto* h = static_cast<Handler*>(arg);
      h->check->park();
      h->removed_itself = h->system->remove(h->self);  // already removed: false, at once
      h->returned.store(true);
    }
  } h;
  vmm::testing::RemovalCheck check(1, [&] { return h.returned.load(); });
  vmm::testing::RaceScript script([&](RacePoint point) { check.on_point(point); });
  h.system = &system;
  h.check = &check;
  h.self = system.add(&Handler::run, &h, clock.now(), kOneShot, loop0);

  std::thread stepper([&] { EXPECT_EQ(loop0.run_due(), 1u); });
  ASSERT_TRUE(check.wait_parked());
  EXPECT_EQ(loop0.run_due(), 0u) << "a second stepper must be turned away";
  EXPECT_EQ(loop0.run_once(0), 0u);
  EXPECT_FALSE(loop0.on_loop_thread());
  EXPECT_TRUE(check.remove([&] { return system.remove(h.self); }));
  stepper.join();
  EXPECT_EQ(check.handler_returned_at_each_removal(), std::vector<bool>{true})
      << "remove() returned while the handler it removed was running";
  EXPECT_FALSE(h.removed_itself);
  EXPECT_EQ(system.live_count(), 0u);
}

// The race points a remover and a mover pass before they wait are reached
// without the loop's lock: a hook parked there until the running handler
// has re-armed itself (which takes that lock) and returned must not hang.
TEST_F(CyclicTest, RemoveAndMoveReachTheirRacePointsWithoutTheLoopLock) {
  struct Handler {
    CyclicSystem* system = nullptr;
    CyclicId self;
    Gate started, may_rearm, returned;
    bool rearmed = false;
    static void run(void* arg, const Expiry&) {
      auto* h = static_cast<Handler*>(arg);
      h->started.open();
      EXPECT_TRUE(h->may_rearm.wait_for(10s));
      h->rearmed = h->system->reprogram(h->self, kNever);
      h->returned.open();
    }
  };
  for (const RacePoint point : {RacePoint::cyclic_remove_waiting, RacePoint::cyclic_move_waiting}) {
    SCOPED_TRACE(race_point_name(point));
    Handler h;
    h.system = &system;
    vmm::testing::RaceScript script([&](RacePoint reached) {
      if (reached != point) return;
      h.may_rearm.open();
      EXPECT_TRUE(h.returned.wait_for(10s)) << "the hook held a lock the handler needs";
    });
    h.self = system.add(&Handler::run, &h, clock.now(), kOneShot, loop0);
    std::thread stepper([&] { loop0.run_due(); });
    ASSERT_TRUE(h.started.wait_for(10s));
    if (point == RacePoint::cyclic_remove_waiting) {
      EXPECT_TRUE(system.remove(h.self));
      EXPECT_FALSE(h.rearmed) << "removed before the re-arm";
    } else {
      EXPECT_TRUE(system.move(h.self, loop1));
      EXPECT_TRUE(h.rearmed);
      EXPECT_EQ(system.loop_of(h.self), &loop1);
      EXPECT_TRUE(system.remove(h.self));
    }
    stepper.join();
  }
  EXPECT_EQ(system.live_count(), 0u);
}

// A mover that waits for a running handler may wake to find the cyclic
// removed and its slot reused by another loop, whose lock now guards the
// slot. It must not look at the slot under the old loop's lock: forced
// here, and ThreadSanitizer reports such a read.
TEST_F(CyclicTest, AMoverWakingToAReusedSlotDoesNotReadItUnderTheOldLoopsLock) {
  struct Handler {
    Gate started, release;
    static void run(void* arg, const Expiry&) {
      auto* h = static_cast<Handler*>(arg);
      h->started.open();
      EXPECT_TRUE(h->release.wait_for(10s));
    }
  } h;
  Gate mover_waiting, mover_may_wait;
  vmm::testing::RaceScript script([&](RacePoint point) {
    if (point == RacePoint::cyclic_remove_waiting) h.release.open();
    if (point == RacePoint::cyclic_move_waiting) {
      mover_waiting.open();
      EXPECT_TRUE(mover_may_wait.wait_for(10s));
    }
  });
  const CyclicId id = system.add(&Handler::run, &h, clock.now(), kOneShot, loop0);
  std::thread stepper([&] { loop0.run_due(); });
  ASSERT_TRUE(h.started.wait_for(10s));
  bool moved = true;
  std::thread mover([&] { moved = system.move(id, loop1); });
  ASSERT_TRUE(mover_waiting.wait_for(10s));
  EXPECT_TRUE(system.remove(id));
  stepper.join();

  // The mover goes on while the slot is reused on loop 1 and dispatched
  // there; nothing orders its look at the slot after these writes.
  mover_may_wait.open();
  const CyclicId reused = add_one_shot(clock.now(), &loop1);
  EXPECT_EQ(reused.index, id.index) << "the freed slot is the next one handed out";
  EXPECT_EQ(loop1.run_due(), 1u);
  mover.join();
  EXPECT_FALSE(moved) << "the cyclic was removed";
  EXPECT_EQ(system.loop_of(reused), &loop1);
  EXPECT_EQ(rec.calls.size(), 1u);
}

// Two threads remove the same running cyclic (a VM reset and a forced
// stop): the second call finds the handle already stale, and must still
// return only once the handler has, or its caller may free what the
// handler uses.
TEST_F(CyclicTest, ASecondConcurrentRemoveAlsoWaitsForTheRunningHandler) {
  const Removal removal = remove_while_its_handler_runs(2, kOneShot);
  EXPECT_EQ(removal.handler_returned_at_each_removal, (std::vector<bool>{true, true}))
      << "a remover returned while the handler ran";
  EXPECT_EQ(removal.removed, 1) << "exactly one of them removed it";
  EXPECT_EQ(system.live_count(), 0u);
}

// Two loops' handlers remove (or move) each other's cyclics: the first
// waits for the second handler, which must then not wait for the first, or
// neither loop ever runs again. Caller-driven loops on two threads, so a
// deadlock fails the test instead of hanging it.
TEST(CyclicCrossLoopTest, HandlersOfTwoLoopsRemovingEachOthersCyclicsDoNotDeadlock) {
  for (const bool second_moves : {false, true}) {
    SCOPED_TRACE(second_moves ? "the second handler moves" : "the second handler removes");
    ManualClock clock{kSecond};
    auto system = std::make_unique<CyclicSystem>(clock, LoopOptions{.loops = 2, .threads = false});
    struct Handler {
      CyclicSystem* system = nullptr;
      CyclicId other;
      EventLoop* move_to = nullptr;  // move `other` there instead of removing it
      Gate started, go, done;
      bool result = false;
      static void run(void* arg, const Expiry&) {
        auto* h = static_cast<Handler*>(arg);
        h->started.open();
        EXPECT_TRUE(h->go.wait_for(10s));
        h->result = h->move_to != nullptr ? h->system->move(h->other, *h->move_to) : h->system->remove(h->other);
        h->done.open();
      }
    } first, second;
    first.system = second.system = system.get();
    if (second_moves) second.move_to = &system->loop(1);
    vmm::testing::RaceScript script([&](RacePoint point) {
      // The first handler is about to wait for the second: let it go on.
      if (point == RacePoint::cyclic_remove_waiting) second.go.open();
    });
    const CyclicId a = system->add(&Handler::run, &first, clock.now(), kOneShot, system->loop(0));
    const CyclicId b = system->add(&Handler::run, &second, clock.now(), kOneShot, system->loop(1));
    first.other = b;
    second.other = a;
    Gate stepped0, stepped1;
    std::thread loop0([&] { system->loop(0).run_due(); stepped0.open(); });
    std::thread loop1([&] { system->loop(1).run_due(); stepped1.open(); });
    ASSERT_TRUE(first.started.wait_for(10s));
    ASSERT_TRUE(second.started.wait_for(10s));
    first.go.open();
    const bool finished = stepped0.wait_for(10s) && stepped1.wait_for(10s);
    EXPECT_TRUE(finished) << "the two handlers wait for each other";
    if (!finished) {
      // Nothing will wake them: leave them, and what they use, behind.
      loop0.detach();
      loop1.detach();
      (void)system.release();
      return;
    }
    loop0.join();
    loop1.join();
    EXPECT_TRUE(first.result) << "the first remover waited for the second handler and removed its cyclic";
    if (second_moves) {
      EXPECT_FALSE(second.result) << "a move that would wait for its own waiter is refused";
      EXPECT_TRUE(system->remove(a));
    } else {
      EXPECT_TRUE(second.result) << "removed, without waiting for the handler that waits for it";
    }
    EXPECT_EQ(system->live_count(), 0u);
  }
}

// --- moving

TEST_F(CyclicTest, MoveKeepsExpiryAndIntervalAndFiresOnlyOnTheNewLoop) {
  const Nanos start = clock.now() + 50;
  const CyclicId id = system.add(&Recorder::handler, &rec, start, 1000, loop0);
  ASSERT_TRUE(system.move(id, loop1));
  EXPECT_EQ(system.loop_of(id), &loop1);
  EXPECT_EQ(system.when(id), start);
  EXPECT_EQ(loop0.heap_size(), 0u);
  EXPECT_EQ(loop1.heap_size(), 1u);
  clock.set(start);
  EXPECT_EQ(loop0.run_due(), 0u);
  EXPECT_EQ(loop1.run_due(), 1u);
  EXPECT_EQ(system.when(id), start + 1000);
  EXPECT_TRUE(system.move(id, loop1));  // to where it is: a no-op
}

TEST_F(CyclicTest, AHandlerCannotMoveItselfButTheCallIsHarmless) {
  struct Mover {
    CyclicSystem* system;
    EventLoop* to;
    CyclicId self;
    bool result = true;
  } m{&system, &loop1, {}};
  m.self = system.add(
      [](void* arg, const Expiry&) {
        auto* me = static_cast<Mover*>(arg);
        me->result = me->system->move(me->self, *me->to);
      },
      &m, clock.now(), kOneShot, loop0);
  loop0.run_due();
  EXPECT_FALSE(m.result);
  EXPECT_EQ(system.loop_of(m.self), &loop0);
}

TEST_F(CyclicTest, MoveToALoopOfAnotherSystemIsRefused) {
  CyclicSystem other(clock, LoopOptions{.loops = 1, .threads = false});
  const CyclicId id = add_one_shot(clock.now() + 5);
  EXPECT_FALSE(system.move(id, other.loop(0)));
  EXPECT_EQ(system.loop_of(id), &loop0);
}

// --- removal waits for a running handler (other thread)

// The handler stays parked until the remover either waits for it or has
// returned, and the remover checks at its return that the handler had
// returned: a remover that did not wait is caught without any sleep.
TEST_F(CyclicTest, RemoveFromAnotherThreadWaitsForTheRunningHandler) {
  const Removal removal = remove_while_its_handler_runs(1, kMillisecond);
  EXPECT_EQ(removal.waited, 1);
  EXPECT_EQ(removal.handler_returned_at_each_removal, std::vector<bool>{true})
      << "remove() returned while the handler ran";
  EXPECT_EQ(removal.removed, 1);
  EXPECT_EQ(system.live_count(), 0u);
  clock.advance(kSecond);
  EXPECT_EQ(loop0.run_due(), 0u) << "a removed periodic cyclic ran again";
}

}  // namespace
}  // namespace vmm::timers
