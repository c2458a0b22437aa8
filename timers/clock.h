// Time sources for the timer layers.
//
// Every layer takes a Clock so that tests can replace real time with a
// ManualClock and force any interleaving by stepping time by hand.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>

namespace vmm::timers {

// Nanoseconds on CLOCK_MONOTONIC (or on a ManualClock's own time line).
using Nanos = std::int64_t;

// A deadline that never comes: a one-shot cyclic parked at kNever is armed on
// no timerfd and stays in no heap until it is reprogrammed.
inline constexpr Nanos kNever = std::numeric_limits<Nanos>::max();

inline constexpr Nanos kMicrosecond = 1'000;
inline constexpr Nanos kMillisecond = 1'000'000;
inline constexpr Nanos kSecond = 1'000'000'000;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Nanos now() const noexcept = 0;
  // True when this clock is CLOCK_MONOTONIC, so a timerfd can wait for it.
  virtual bool is_monotonic() const noexcept { return false; }
};

// CLOCK_MONOTONIC, the clock timerfds are armed on.
class MonotonicClock final : public Clock {
 public:
  Nanos now() const noexcept override;
  bool is_monotonic() const noexcept override { return true; }
  // The process-wide instance (stateless; shared so loops agree on "now").
  static const MonotonicClock& instance() noexcept;
};

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Nanos start = kSecond) noexcept : now_(start) {}
  Nanos now() const noexcept override { return now_.load(std::memory_order_acquire); }
  void set(Nanos t) noexcept { now_.store(t, std::memory_order_release); }
  void advance(Nanos delta) noexcept { now_.fetch_add(delta, std::memory_order_acq_rel); }

 private:
  std::atomic<Nanos> now_;
};

// Saturating a + b for deadlines: never wraps past kNever.
constexpr Nanos add_saturating(Nanos a, Nanos b) noexcept {
  if (b > 0 && a > kNever - b) return kNever;
  return a + b;
}

}  // namespace vmm::timers
