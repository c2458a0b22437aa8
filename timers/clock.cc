#include "timers/clock.h"

#include <time.h>

namespace vmm::timers {

Nanos MonotonicClock::now() const noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return Nanos{ts.tv_sec} * kSecond + ts.tv_nsec;
}

const MonotonicClock& MonotonicClock::instance() noexcept {
  static const MonotonicClock clock;
  return clock;
}

}  // namespace vmm::timers
