// A faithful model of the semantics the two seed bugs ran on, kept in the
// tests so that every seed-race test is known to be able to fail.
//
//  * OldCyclics: illumos cyclics as bhyve's callout shim used them before
//    illumos 12476. cyclic_remove takes the cyclic out of its heap, marks it
//    free and waits (sema_p) for a pending handler; cyclic_reprogram of a
//    cyclic that is no longer there panics ("attempt to reprogram
//    non-existent cyclic").
//  * OldCallout: the FreeBSD callout shim before illumos 12738. PENDING and
//    ACTIVE flags; the glue clears PENDING with no lock held, then calls the
//    handler; reset sets both flags and then reprograms the cyclic.
//
// A kernel panic is recorded instead of taken, so the test can observe it.
// The flags are atomics only so that ThreadSanitizer does not report the
// model itself: the bug being modelled is the order of the updates (a clear
// that lands after the writer's set), not a torn write, and atomics keep
// exactly that order problem.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "timers/callout.h"
#include "timers/clock.h"
#include "timers/race_points.h"

namespace vmm::seed_model {

using timers::Clock;
using timers::kNever;
using timers::Nanos;
using timers::RacePoint;

class OldCyclics {
 public:
  using Handler = void (*)(void* arg);

  explicit OldCyclics(const Clock& clock) : clock_(clock) {}

  int add(Handler fn, void* arg, Nanos when) {
    std::lock_guard lock(mu_);
    cyclics_.push_back(Cyclic{fn, arg, when, false, 0});
    return static_cast<int>(cyclics_.size() - 1);
  }

  // cyclic_reprogram(): assumes the cyclic exists.
  void reprogram(int id, Nanos when) {
    std::lock_guard lock(mu_);
    Cyclic& c = cyclics_[static_cast<std::size_t>(id)];
    if (c.removed) {
      panic("attempt to reprogram non-existent cyclic");
      return;
    }
    c.when = when;
  }

  // cyclic_remove(): out of the heap, marked free, then wait for the handler.
  void remove(int id) {
    std::unique_lock lock(mu_);
    Cyclic& c = cyclics_[static_cast<std::size_t>(id)];
    c.removed = true;
    c.when = kNever;
    if (c.pending > 0) {
      timers::race_point(RacePoint::cyclic_remove_waiting);
      handler_done_.wait(lock, [&c] { return c.pending == 0; });
    }
  }

  // The cyclic softint: expire (pending++, one-shot parked), run, pending--.
  std::size_t run_due() {
    std::vector<int> due;
    {
      std::lock_guard lock(mu_);
      const Nanos now = clock_.now();
      for (std::size_t i = 0; i < cyclics_.size(); ++i) {
        Cyclic& c = cyclics_[i];
        if (!c.removed && c.when <= now) {
          ++c.pending;
          c.when = kNever;  // callout-shim cyclics are always one-shot
          due.push_back(static_cast<int>(i));
        }
      }
    }
    for (int id : due) {
      Handler fn;
      void* arg;
      {
        std::lock_guard lock(mu_);
        fn = cyclics_[static_cast<std::size_t>(id)].fn;
        arg = cyclics_[static_cast<std::size_t>(id)].arg;
      }
      fn(arg);
      {
        std::lock_guard lock(mu_);
        --cyclics_[static_cast<std::size_t>(id)].pending;
      }
      handler_done_.notify_all();
    }
    return due.size();
  }

  bool panicked() const {
    std::lock_guard lock(mu_);
    return !panic_message_.empty();
  }
  std::string panic_message() const {
    std::lock_guard lock(mu_);
    return panic_message_;
  }
  const Clock& clock() const { return clock_; }

 private:
  struct Cyclic {
    Handler fn;
    void* arg;
    Nanos when;
    bool removed;
    int pending;
  };
  void panic(const std::string& message) { panic_message_ = message; }  // mu_ held

  const Clock& clock_;
  mutable std::mutex mu_;
  std::condition_variable handler_done_;
  std::vector<Cyclic> cyclics_;
  std::string panic_message_;
};

// The FreeBSD callout(9) shim over OldCyclics, with the same method names as
// timers::Callout so one scenario runs against both.
class OldCallout {
 public:
  using Handler = void (*)(void* arg);
  static constexpr int kPending = 1;
  static constexpr int kActive = 2;

  bool init(OldCyclics& cyclics, Handler fn, void* arg) {
    cyclics_ = &cyclics;
    fn_ = fn;
    arg_ = arg;
    id_ = cyclics.add(&OldCallout::glue, this, kNever);
    return true;
  }

  // vmm_glue_callout_reset_sbt(): flags first, then the cyclic.
  bool reset(Nanos when, timers::CalloutTime kind = timers::CalloutTime::relative) {
    const Nanos target = kind == timers::CalloutTime::relative ? cyclics_->clock().now() + when : when;
    flags_.fetch_or(kActive | kPending);
    timers::race_point(RacePoint::callout_reset_stored);
    cyclics_->reprogram(id_, target);
    return true;  // the old shim had no way to report failure
  }
  bool stop() {
    const int old = flags_.fetch_and(~(kActive | kPending));
    cyclics_->reprogram(id_, kNever);
    return (old & kPending) != 0;
  }
  // vmm_glue_callout_drain(): cyclic_remove().
  bool drain() {
    timers::race_point(RacePoint::callout_drain_before_remove);
    cyclics_->remove(id_);
    return true;
  }
  bool pending() const { return (flags_.load() & kPending) != 0; }
  bool active() const { return (flags_.load() & kActive) != 0; }
  void deactivate() { flags_.fetch_and(~kActive); }

 private:
  // vmm_glue_callout_handler(): clears PENDING without the device lock.
  static void glue(void* arg) {
    auto* c = static_cast<OldCallout*>(arg);
    c->flags_.fetch_and(~kPending);
    if (c->flags_.load() & kActive) {
      timers::race_point(RacePoint::callout_glue_before_handler);
      c->fn_(c->arg_);
    }
  }

  OldCyclics* cyclics_ = nullptr;
  int id_ = -1;
  Handler fn_ = nullptr;
  void* arg_ = nullptr;
  std::atomic<int> flags_{0};
};

}  // namespace vmm::seed_model
