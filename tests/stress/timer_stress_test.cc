// Random concurrent add / reset / stop / drain / reprogram / move from several
// threads against threaded loops on real time, for a bounded time
// (VMM_STRESS_SECONDS, default 3). Checked on every handler call:
//   - a handler never runs after drain/remove returned;
//   - never before its deadline;
//   - never concurrently with itself;
//   - a live periodic cyclic never loses an expiry (the counts handed to its
//     handler add up exactly to the deadlines that passed).
// Meant to run under ThreadSanitizer and AddressSanitizer too.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "timers/callout.h"
#include "timers/cyclic.h"
#include "timers/event_loop.h"

namespace vmm::timers {
namespace {

const Clock& mono = MonotonicClock::instance();

double stress_seconds() {
  const char* env = std::getenv("VMM_STRESS_SECONDS");
  const double value = env ? std::atof(env) : 3.0;
  return value > 0 ? value : 3.0;
}

struct Violations {
  std::atomic<int> after_removal{0};
  std::atomic<int> before_deadline{0};
  std::atomic<int> concurrent{0};
  std::atomic<int> lost_expiry{0};
  std::mutex mu;
  std::string first;
  void record(std::atomic<int>& counter, const std::string& what) {
    if (counter.fetch_add(1) == 0) {
      std::lock_guard lock(mu);
      if (first.empty()) first = what;
    }
  }
  int total() const { return after_removal + before_deadline + concurrent + lost_expiry; }
};

// Guards one object's handler: counts overlapping runs and runs while dead.
class HandlerScope {
 public:
  HandlerScope(std::atomic<int>& in_handler, const std::atomic<bool>& dead, Violations& v, const char* kind)
      : in_handler_(in_handler), dead_(dead), v_(v), kind_(kind) {
    if (in_handler_.fetch_add(1) != 0) v.record(v.concurrent, std::string(kind) + ": handler ran concurrently with itself");
    if (dead.load()) v.record(v.after_removal, std::string(kind) + ": handler ran after drain/remove returned");
  }
  ~HandlerScope() {
    // Linger now and then, so a remove that did not wait would be caught
    // with the handler still running.
    thread_local std::minstd_rand rng(std::random_device{}());
    if (rng() % 32 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
    if (dead_.load()) v_.record(v_.after_removal, std::string(kind_) + ": handler still running at drain/remove");
    in_handler_.fetch_sub(1);
  }

 private:
  std::atomic<int>& in_handler_;
  const std::atomic<bool>& dead_;
  Violations& v_;
  const char* kind_;
};

// Called right after drain/remove returned: the handler must not be running.
void mark_dead(std::atomic<bool>& dead, const std::atomic<int>& in_handler, Violations& v, const char* kind) {
  dead.store(true);
  if (in_handler.load() != 0) v.record(v.after_removal, std::string(kind) + ": drain/remove returned while its handler ran");
}

struct Harness;

// A device on a callout, following the handler idiom.
struct CalloutDevice {
  Harness* h = nullptr;
  std::mutex admin;  // serialises the test's operations on this object
  std::mutex mu;     // the device lock, taken by the handler
  Callout callout;
  Nanos deadline = 0;  // under mu
  bool self_rearm = false;
  std::atomic<bool> dead{false};
  std::atomic<int> in_handler{0};
  std::atomic<long> work{0};
  static void on_timer(void* arg);
};

struct OneShot {
  Harness* h = nullptr;
  std::mutex admin;
  std::atomic<std::uint64_t> id{0};  // packed CyclicId, readable by the handler
  std::atomic<bool> dead{false};
  std::atomic<int> in_handler{0};
  std::atomic<long> runs{0};
  static void on_expiry(void* arg, const Expiry& e);
};

struct Periodic {
  Harness* h = nullptr;
  std::mutex admin;
  CyclicId id;                 // under admin
  std::mutex mu;               // guards the bookkeeping below
  Nanos start = 0;
  Nanos interval = 0;
  std::uint64_t total = 0;
  Nanos last_deadline = 0;
  std::atomic<bool> dead{false};
  std::atomic<int> in_handler{0};
  static void on_expiry(void* arg, const Expiry& e);
};

std::uint64_t pack(CyclicId id) { return (std::uint64_t{id.generation} << 32) | id.index; }
CyclicId unpack(std::uint64_t v) { return CyclicId{static_cast<std::uint32_t>(v), static_cast<std::uint32_t>(v >> 32)}; }

struct Harness {
  CyclicSystem system{mono, LoopOptions{.loops = 3}};
  Violations v;
  std::vector<std::unique_ptr<CalloutDevice>> devices;
  std::vector<std::unique_ptr<OneShot>> oneshots;
  std::vector<std::unique_ptr<Periodic>> periodics;
  std::atomic<long> ops{0};

  EventLoop& random_loop(std::mt19937_64& rng) { return system.loop(rng() % system.loop_count()); }
};

void CalloutDevice::on_timer(void* arg) {
  auto* d = static_cast<CalloutDevice*>(arg);
  HandlerScope scope(d->in_handler, d->dead, d->h->v, "callout");
  std::lock_guard lock(d->mu);
  if (d->callout.pending() || !d->callout.active()) return;
  d->callout.deactivate();
  const Nanos now = mono.now();
  if (now < d->deadline) {
    d->h->v.record(d->h->v.before_deadline, "callout: work at " + std::to_string(now) + " before deadline " +
                                                std::to_string(d->deadline));
  }
  d->work.fetch_add(1);
  if (d->self_rearm) {
    d->deadline = now + 100 * kMicrosecond;
    (void)d->callout.reset(d->deadline, CalloutTime::absolute);  // may be refused mid-drain
  }
}

void OneShot::on_expiry(void* arg, const Expiry& e) {
  auto* o = static_cast<OneShot*>(arg);
  HandlerScope scope(o->in_handler, o->dead, o->h->v, "one-shot");
  if (mono.now() < e.deadline) o->h->v.record(o->h->v.before_deadline, "one-shot ran before its deadline");
  if (o->runs.fetch_add(1) % 3 == 0) {
    // Re-arm itself from its handler, racing the workers' remove/move.
    (void)o->h->system.reprogram(unpack(o->id.load()), mono.now() + 50 * kMicrosecond);
  }
}

void Periodic::on_expiry(void* arg, const Expiry& e) {
  auto* p = static_cast<Periodic*>(arg);
  HandlerScope scope(p->in_handler, p->dead, p->h->v, "periodic");
  if (mono.now() < e.deadline) p->h->v.record(p->h->v.before_deadline, "periodic ran before its deadline");
  std::lock_guard lock(p->mu);
  p->total += e.count;
  const auto expected = static_cast<std::uint64_t>((e.deadline - p->start) / p->interval) + 1;
  if (p->total != expected || (e.deadline - p->start) % p->interval != 0) {
    p->h->v.record(p->h->v.lost_expiry, "periodic: " + std::to_string(p->total) + " expiries handed over, " +
                                            std::to_string(expected) + " deadlines passed");
  }
  p->last_deadline = e.deadline;
}

void add_periodic(Harness& h, Periodic& p, std::mt19937_64& rng) {
  std::lock_guard lock(p.mu);
  p.interval = (200 + static_cast<Nanos>(rng() % 1800)) * kMicrosecond;
  p.start = mono.now() + p.interval;
  p.total = 0;
  p.last_deadline = 0;
  p.id = h.system.add(&Periodic::on_expiry, &p, p.start, p.interval, h.random_loop(rng));
}

void worker(Harness& h, std::uint64_t seed, Nanos until) {
  std::mt19937_64 rng(seed);
  auto delay = [&] { return static_cast<Nanos>(rng() % (2 * kMillisecond)); };
  while (mono.now() < until) {
    h.ops.fetch_add(1);
    const unsigned pick = static_cast<unsigned>(rng() % 100);
    if (pick < 55) {
      CalloutDevice& d = *h.devices[rng() % h.devices.size()];
      std::lock_guard admin(d.admin);
      const unsigned op = static_cast<unsigned>(rng() % 10);
      if (op < 5) {
        std::lock_guard lock(d.mu);
        d.deadline = mono.now() + delay() - kMillisecond / 4;  // sometimes in the past
        (void)d.callout.reset(d.deadline, CalloutTime::absolute);
      } else if (op < 7) {
        std::lock_guard lock(d.mu);
        d.callout.stop();
      } else if (op < 9) {
        d.callout.bind(h.random_loop(rng));
      } else {
        EXPECT_TRUE(d.callout.drain());
        mark_dead(d.dead, d.in_handler, h.v, "callout");  // from here on a handler run is a violation
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
        d.dead.store(false);
        EXPECT_TRUE(d.callout.init(h.system, h.random_loop(rng), &CalloutDevice::on_timer, &d));
      }
    } else if (pick < 85) {
      OneShot& o = *h.oneshots[rng() % h.oneshots.size()];
      std::lock_guard admin(o.admin);
      const CyclicId id = unpack(o.id.load());
      const unsigned op = static_cast<unsigned>(rng() % 10);
      if (op < 6) {
        EXPECT_TRUE(h.system.reprogram(id, mono.now() + delay() - kMillisecond / 4));
      } else if (op < 8) {
        EXPECT_TRUE(h.system.move(id, h.random_loop(rng)));
      } else {
        EXPECT_TRUE(h.system.remove(id));
        mark_dead(o.dead, o.in_handler, h.v, "one-shot");
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
        o.dead.store(false);
        o.id.store(pack(h.system.add(&OneShot::on_expiry, &o, mono.now() + delay(), kOneShot, h.random_loop(rng))));
      }
    } else {
      Periodic& p = *h.periodics[rng() % h.periodics.size()];
      std::lock_guard admin(p.admin);
      if (rng() % 8 != 0) {
        EXPECT_TRUE(h.system.move(p.id, h.random_loop(rng)));
      } else {
        EXPECT_TRUE(h.system.remove(p.id));
        mark_dead(p.dead, p.in_handler, h.v, "periodic");
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
        p.dead.store(false);
        add_periodic(h, p, rng);
      }
    }
    if (rng() % 4 == 0) std::this_thread::yield();
  }
}

TEST(TimerStress, RandomConcurrentOperationsKeepEveryPromise) {
  Harness h;
  std::mt19937_64 rng(20261121);
  for (int i = 0; i < 48; ++i) {
    auto d = std::make_unique<CalloutDevice>();
    d->h = &h;
    d->self_rearm = i % 4 == 0;
    ASSERT_TRUE(d->callout.init(h.system, h.random_loop(rng), &CalloutDevice::on_timer, d.get()));
    h.devices.push_back(std::move(d));
  }
  for (int i = 0; i < 32; ++i) {
    auto o = std::make_unique<OneShot>();
    o->h = &h;
    o->id.store(pack(h.system.add(&OneShot::on_expiry, o.get(), mono.now() + kMillisecond, kOneShot,
                                  h.random_loop(rng))));
    h.oneshots.push_back(std::move(o));
  }
  for (int i = 0; i < 8; ++i) {
    auto p = std::make_unique<Periodic>();
    p->h = &h;
    add_periodic(h, *p, rng);
    h.periodics.push_back(std::move(p));
  }

  const Nanos until = mono.now() + static_cast<Nanos>(stress_seconds() * 1e9);
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t) workers.emplace_back(worker, std::ref(h), 1000 + t, until);
  for (auto& t : workers) t.join();

  // Let the periodics run a little with nobody disturbing them, then check
  // that none stalled: the last deadline served is recent.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const Nanos check_at = mono.now();
  long callout_work = 0, oneshot_runs = 0;
  std::uint64_t periodic_expiries = 0;
  for (auto& p : h.periodics) {
    EXPECT_TRUE(h.system.remove(p->id));
    mark_dead(p->dead, p->in_handler, h.v, "periodic");
    std::lock_guard lock(p->mu);
    periodic_expiries += p->total;
    EXPECT_GT(p->last_deadline, check_at - p->interval - 2 * kSecond) << "a periodic cyclic stalled";
  }
  for (auto& d : h.devices) {
    EXPECT_TRUE(d->callout.drain());
    mark_dead(d->dead, d->in_handler, h.v, "callout");
    callout_work += d->work.load();
  }
  for (auto& o : h.oneshots) {
    EXPECT_TRUE(h.system.remove(unpack(o->id.load())));
    mark_dead(o->dead, o->in_handler, h.v, "one-shot");
    oneshot_runs += o->runs.load();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // any late handler would show now

  EXPECT_EQ(h.v.total(), 0) << h.v.first;
  EXPECT_EQ(h.v.after_removal.load(), 0);
  EXPECT_EQ(h.v.before_deadline.load(), 0);
  EXPECT_EQ(h.v.concurrent.load(), 0);
  EXPECT_EQ(h.v.lost_expiry.load(), 0);
  EXPECT_EQ(h.system.live_count(), 0u);
  // The run must have exercised every kind, or it proves nothing.
  EXPECT_GT(h.ops.load(), 1000);
  EXPECT_GT(callout_work, 100);
  EXPECT_GT(oneshot_runs, 100);
  EXPECT_GT(periodic_expiries, 100u);
  std::printf("ops=%ld callout_work=%ld oneshot_runs=%ld periodic_expiries=%llu\n", h.ops.load(), callout_work,
              oneshot_runs, static_cast<unsigned long long>(periodic_expiries));
}

}  // namespace
}  // namespace vmm::timers
