#include "devices/lapic_timer.h"

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "timers/event_loop.h"
#include "timers/race_points.h"

namespace vmm::devices {

using timers::Nanos;

namespace {

// Divide configuration bits 0, 1 and 3 select 2, 4, 8, 16, 32, 64, 128, 1.
std::uint64_t divisor_of(std::uint32_t config) {
  const std::uint32_t code = (config & 3) | ((config >> 1) & 4);
  return code == 7 ? 1 : std::uint64_t{2} << code;
}

}  // namespace

LapicTimer::LapicTimer(timers::CyclicSystem& system, timers::EventLoop& loop, Deliver deliver, Config config)
    : system_(system), clock_(system.clock()), deliver_(std::move(deliver)), config_(config) {
  // As the PIT: a device that cannot keep time must not start silent.
  if (!callout_.init(system_, loop, &LapicTimer::on_timer, this)) {
    throw Error("lapic timer: cannot create its timer");
  }
}

LapicTimer::~LapicTimer() { callout_.drain(); }

Nanos LapicTimer::tick_ns() const {
  // bus_hz is at most 1 GHz in any sane configuration; clamp so a tick is
  // never 0 ns (a zero-length period would spin).
  const std::uint64_t hz = config_.bus_hz == 0 ? 1 : config_.bus_hz;
  const auto ns = static_cast<Nanos>(divisor_of(divide_config_) * 1'000'000'000ull / hz);
  return ns > 0 ? ns : 1;
}

Nanos LapicTimer::period() const {
  return mode() == Mode::periodic ? static_cast<Nanos>(initial_count_) * tick_ns() : 0;
}

Nanos LapicTimer::tsc_to_time(std::uint64_t tsc) const {
  // Inverse of tsc = tsc_at_zero + t * tsc_hz / 1e9, saturating. Signed
  // 128-bit: a deadline near 2^64 is far in the future, not negative.
  const std::uint64_t hz = config_.tsc_hz == 0 ? 1 : config_.tsc_hz;
  const __int128 delta = static_cast<__int128>(tsc) - config_.tsc_at_zero;
  if (delta <= 0) return 1;
  const __int128 ns = delta * 1'000'000'000 / static_cast<__int128>(hz);
  // Never 0: a deadline of 0 means "not armed" here and to the callout.
  if (ns == 0) return 1;
  return ns >= static_cast<__int128>(timers::kNever) ? timers::kNever - 1 : static_cast<Nanos>(ns);
}

Nanos LapicTimer::firing_step(Nanos period) const {
  if (period >= kMinPeriod) return period;
  // Whole periods, so the firings stay on the guest's period grid.
  return (kMinPeriod + period - 1) / period * period;
}

void LapicTimer::arm(Nanos deadline) {
  deadline_ = deadline;
  // Refused only after drain_timers() (a VM reset under way): quietly.
  if (!paused_ && !callout_.set_deadline(deadline)) ++stats_.refused_rearms;
}

void LapicTimer::disarm() {
  deadline_ = 0;
  callout_.stop();
}

void LapicTimer::on_timer(void* arg) {
  auto* self = static_cast<LapicTimer*>(arg);
  std::lock_guard lock(self->mu_);
#if defined(VMM_MUTANT_LAPIC_NO_PENDING_TEST)
  // Mutation-testing hook (tools/mutants): the idiom without its pending test.
  if (!self->callout_.active()) return;
  self->callout_.deactivate();
#else
  if (!self->callout_.claim()) return;  // re-armed or stopped since this firing
#endif
  ++self->stats_.handler_runs;

  const Nanos now = self->clock_.now();
  if (now < self->deadline_) {
    // Impossible with target/fired callouts (it is what illumos 12738's
    // KASSERT caught); re-arm rather than fire early if it ever happens.
    if (self->log_limit_.allow()) spdlog::error("lapic timer fired {} ns early; re-arming", self->deadline_ - now);
    self->arm(self->deadline_);
    return;
  }
  if ((self->lvt_ & kLvtMasked) == 0) {
    self->deliver_(static_cast<std::uint8_t>(self->lvt_ & 0xff));
    ++self->delivered_;
  }
  if (const Nanos period = self->period(); period > 0) {
    // Next deadline = previous + period; a whole period missed restarts the
    // time base at now (TIMERS.md, LAPIC lag policy). A period the loop
    // cannot keep is stepped in whole periods of at least kMinPeriod.
    const Nanos step = self->firing_step(period);
    if (step != period) {
      static RateLimit limit;
      if (limit.allow()) {
        spdlog::warn("lapic timer: period of {} ns is shorter than {} us; interrupts coalesced ({} suppressed)",
                     period, kMinPeriod / timers::kMicrosecond, limit.take_suppressed());
      }
    }
    Nanos next = self->deadline_ + step;
    if (now - self->deadline_ >= step) next = now + step;
    timers::race_point(timers::RacePoint::device_handler_before_rearm);
    self->arm(next);
  } else {
    self->deadline_ = 0;  // fired: current count reads 0, resume won't re-arm
    if (self->mode() == Mode::tsc_deadline) self->tsc_deadline_ = 0;
  }
}

void LapicTimer::write_lvt(std::uint32_t value) noexcept {
  std::lock_guard lock(mu_);
  // Bits 0-7 vector, 16 mask, 17-18 mode; the rest (incl. delivery status)
  // is read-only or reserved. Mode 3 is reserved: treated as one-shot.
  std::uint32_t kept = value & (0xffu | kLvtMasked | (3u << kModeShift));
  if (((kept >> kModeShift) & 3) == 3) kept &= ~(3u << kModeShift);
  const bool mode_changed = ((kept ^ lvt_) >> kModeShift & 3) != 0;
  lvt_ = kept;
  // SDM: a write that changes the timer mode disarms the timer.
  if (mode_changed) {
    initial_count_ = 0;
    tsc_deadline_ = 0;
    disarm();
  }
}

std::uint32_t LapicTimer::read_lvt() const noexcept {
  std::lock_guard lock(mu_);
  return lvt_;
}

void LapicTimer::write_initial_count(std::uint32_t value) noexcept {
  std::lock_guard lock(mu_);
  if (mode() == Mode::tsc_deadline) return;  // ignored in TSC-deadline mode
  initial_count_ = value;
  if (value == 0) {
    disarm();
    return;
  }
  arm(clock_.now() + static_cast<Nanos>(value) * tick_ns());
}

std::uint32_t LapicTimer::read_initial_count() const noexcept {
  std::lock_guard lock(mu_);
  return initial_count_;
}

std::uint32_t LapicTimer::read_current_count() const noexcept {
  std::lock_guard lock(mu_);
  if (mode() == Mode::tsc_deadline || deadline_ == 0 || initial_count_ == 0) return 0;
  const Nanos remaining = deadline_ - clock_.now();
  if (remaining <= 0) return 0;  // due; the handler has not run yet
  const Nanos tick = tick_ns();
  const auto count = static_cast<std::uint64_t>((remaining + tick - 1) / tick);
  if (count <= initial_count_) return static_cast<std::uint32_t>(count);
  // A coalesced periodic timer's deadline is several periods away: the
  // count still runs down period by period, on the same grid.
  if (mode() == Mode::periodic) return static_cast<std::uint32_t>((count - 1) % initial_count_ + 1);
  return initial_count_;
}

void LapicTimer::write_divide_config(std::uint32_t value) noexcept {
  std::lock_guard lock(mu_);
  const std::uint32_t config = value & 0xb;
  if (config == divide_config_) return;
  // Keep the count where it is and let it run at the new rate from now on.
  const Nanos now = clock_.now();
  const Nanos old_tick = tick_ns();
  divide_config_ = config;
  if (mode() != Mode::tsc_deadline && deadline_ > now && initial_count_ != 0) {
    const Nanos remaining_counts = (deadline_ - now + old_tick - 1) / old_tick;
    arm(now + remaining_counts * tick_ns());
  }
}

std::uint32_t LapicTimer::read_divide_config() const noexcept {
  std::lock_guard lock(mu_);
  return divide_config_;
}

void LapicTimer::write_tsc_deadline(std::uint64_t tsc) noexcept {
  std::lock_guard lock(mu_);
  if (mode() != Mode::tsc_deadline) return;  // SDM: ignored outside the mode
  tsc_deadline_ = tsc;
  if (tsc == 0) {
    disarm();
    return;
  }
  arm(tsc_to_time(tsc));
}

std::uint64_t LapicTimer::read_tsc_deadline() const noexcept {
  std::lock_guard lock(mu_);
  return mode() == Mode::tsc_deadline ? tsc_deadline_ : 0;
}

void LapicTimer::drain_timers() noexcept { callout_.drain(); }

void LapicTimer::power_on_locked() {
  lvt_ = kLvtMasked;
  initial_count_ = 0;
  divide_config_ = 0;
  tsc_deadline_ = 0;
  deadline_ = 0;
}

void LapicTimer::power_on() noexcept {
  std::lock_guard lock(mu_);
  power_on_locked();
  callout_.stop();
}

void LapicTimer::reset(timers::EventLoop& loop) noexcept {
  callout_.drain();  // idempotent; a reset is always preceded by a drain
  std::lock_guard lock(mu_);
  power_on_locked();
  paused_ = false;
  if (!callout_.init(system_, loop, &LapicTimer::on_timer, this)) {
    static RateLimit limit;
    if (limit.allow()) spdlog::error("lapic timer: cannot re-create its timer after a reset; it stays silent");
  }
}

void LapicTimer::pause() noexcept {
  std::lock_guard lock(mu_);
  paused_ = true;
  callout_.stop();  // the deadline is kept
}

void LapicTimer::resume() noexcept {
  std::lock_guard lock(mu_);
  paused_ = false;
  if (deadline_ != 0) arm(deadline_);
}

void LapicTimer::bind_timers(timers::EventLoop& loop) noexcept { callout_.bind(loop); }

std::uint64_t LapicTimer::interrupts_delivered() const noexcept {
  std::lock_guard lock(mu_);
  return delivered_;
}

LapicTimer::Stats LapicTimer::stats() const noexcept {
  std::lock_guard lock(mu_);
  return stats_;
}

Nanos LapicTimer::deadline() const noexcept {
  std::lock_guard lock(mu_);
  return deadline_;
}

}  // namespace vmm::devices
