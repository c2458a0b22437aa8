#include "devices/pit.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "devices/error.h"
#include "devices/rate_limit.h"
#include "timers/race_points.h"

namespace vmm::devices {

namespace {

using timers::Nanos;

constexpr std::uint8_t kControlSelectShift = 6;
constexpr std::uint8_t kReadBack = 3;  // select field value of a read-back command
constexpr std::uint8_t kReadBackNoCount = 0x20;
constexpr std::uint8_t kReadBackNoStatus = 0x10;
constexpr std::uint8_t kStatusOut = 0x80;
constexpr std::uint8_t kStatusNullCount = 0x40;
constexpr std::uint8_t kPowerOnControl = 0x36;  // LSB then MSB, mode 3, binary

// BCD digits beyond 9 are counted with their nibble value, like the counting
// element's digit stages would wrap; the result is then reduced mod 10000.
std::uint32_t from_bcd(std::uint16_t raw) noexcept {
  return (raw & 0xFu) + 10u * ((raw >> 4) & 0xFu) + 100u * ((raw >> 8) & 0xFu) + 1000u * ((raw >> 12) & 0xFu);
}

std::uint16_t to_bcd(std::uint32_t value) noexcept {
  value %= 10000;
  return static_cast<std::uint16_t>((value % 10) | ((value / 10 % 10) << 4) | ((value / 100 % 10) << 8) |
                                    ((value / 1000) << 12));
}

std::int64_t positive_mod(std::int64_t value, std::int64_t modulus) noexcept {
  const std::int64_t r = value % modulus;
  return r < 0 ? r + modulus : r;
}

std::int64_t ceil_div(std::int64_t value, std::int64_t divisor) noexcept {
  return value <= 0 ? 0 : (value + divisor - 1) / divisor;
}

std::optional<std::int64_t> at_least(std::int64_t pulse, std::int64_t from) noexcept {
  if (pulse < from) return std::nullopt;
  return pulse;
}

RateLimit g_rate_clamp_log;
RateLimit g_illegal_count_log;

}  // namespace

// ============================================================== Counter

void Pit::Counter::power_on(bool gate) noexcept {
  *this = Counter{};
  gate_ = gate;
  program(0, kPowerOnControl);
  frozen_element_ = 0;
}

std::uint32_t Pit::Counter::effective_count() const noexcept {
  std::uint32_t n = bcd_ ? from_bcd(count_register_) % 10000u : count_register_;
  return n == 0 ? modulus() : n;
}

std::uint16_t Pit::Counter::display(std::uint32_t element) const noexcept {
  return bcd_ ? to_bcd(element) : static_cast<std::uint16_t>(element);
}

std::int64_t Pit::Counter::elapsed(const Run& run, Pulse t) const noexcept {
  if (t < run.load) return 0;
  std::int64_t e = run.counted;
  if (run.resume != kNoPulse && t > run.resume) e += t - run.resume;
  return e;
}

Pit::Pulse Pit::Counter::terminal_pulse(const Run& run) const noexcept {
  if (mode_ == 1 || mode_ == 5) return run.load + run.count;
  if (run.strobe != kNoPulse) return run.strobe;
  if (run.resume == kNoPulse || run.counted >= run.count) return kNoPulse;
  return run.resume + (run.count - run.counted);
}

bool Pit::Counter::run_out(const Run& run, Pulse t) const noexcept {
  const std::int64_t e = elapsed(run, t);
  const std::int64_t n = run.count;
  switch (mode_) {
    case 0:
    case 1:
      return e >= n;
    case 4:
    case 5:
      return t != terminal_pulse(run);
    case 2:
      if (run.resume == kNoPulse || n == 1) return true;
      return e % n != n - 1;
    default: {  // 3
      if (run.resume == kNoPulse || n == 1) return true;
      const std::int64_t high = (n + 1) / 2;
      return (e + (run.starts_low ? high : 0)) % n < high;
    }
  }
}

std::uint32_t Pit::Counter::run_element(const Run& run, Pulse t) const noexcept {
  const std::int64_t e = elapsed(run, t);
  const std::int64_t n = run.count;
  const std::int64_t m = modulus();
  switch (mode_) {
    case 2:
      return static_cast<std::uint32_t>((n - e % n) % m);
    case 3: {
      const std::int64_t high = (n + 1) / 2;
      const std::int64_t phase = (e + (run.starts_low ? high : 0)) % n;
      const std::int64_t step = phase < high ? phase : phase - high;
      return static_cast<std::uint32_t>(positive_mod((n & ~std::int64_t{1}) - 2 * step, m));
    }
    default:  // 0, 1, 4, 5: count down and wrap
      return static_cast<std::uint32_t>(positive_mod(n - e % m, m));
  }
}

std::optional<Pit::Pulse> Pit::Counter::run_rise(const Run& run, Pulse from) const noexcept {
  const std::int64_t n = run.count;
  switch (mode_) {
    case 0:
    case 1: {
      const Pulse tc = terminal_pulse(run);
      if (tc == kNoPulse) return std::nullopt;
      return at_least(tc, from);
    }
    case 4:
    case 5: {
      const Pulse tc = terminal_pulse(run);
      if (tc == kNoPulse) return std::nullopt;
      return at_least(tc + 1, from);
    }
    case 2: {
      if (run.resume == kNoPulse || n == 1) return std::nullopt;
      const std::int64_t periods = std::max<std::int64_t>(1, ceil_div(from - run.load, n));
      return run.load + periods * n;
    }
    default: {  // 3
      if (run.resume == kNoPulse || n == 1) return std::nullopt;
      const std::int64_t first = run.starts_low ? n / 2 : n;
      const Pulse base = run.load + first;
      return base + ceil_div(from - base, n) * n;
    }
  }
}

Pit::Counter::Run Pit::Counter::switched_run() const noexcept {
  Run run;
  run.active = true;
  run.load = switch_->at;
  run.count = switch_->count;
  run.starts_low = switch_->starts_low;
  run.resume = switch_->at;
  return run;
}

Pit::Counter::Run Pit::Counter::run_at(Pulse t) const noexcept {
  if (switch_ && t >= switch_->at) return switched_run();
  return run_;
}

void Pit::Counter::settle(Pulse now) noexcept {
  if (switch_ && switch_->at <= now) {
    run_ = switched_run();
    switch_.reset();
  }
}

void Pit::Counter::freeze(Pulse now) noexcept {
  frozen_element_ = element(now);
  frozen_out_ = out(now);
}

bool Pit::Counter::out(Pulse t) const noexcept {
  const Run run = run_at(t);
  if (!run.active || t < run.load) return frozen_out_;
  return run_out(run, t);
}

std::uint32_t Pit::Counter::element(Pulse t) const noexcept {
  const Run run = run_at(t);
  if (!run.active || t < run.load) return frozen_element_;
  return run_element(run, t);
}

std::optional<Pit::Pulse> Pit::Counter::next_rise(Pulse from) const noexcept {
  if (!run_.active) return std::nullopt;
  std::optional<Pulse> best;
  const auto take = [&](std::optional<Pulse> p) {
    if (p && *p >= from && (!best || *p < *best)) best = p;
  };
  // The load itself can raise OUT (a mode 4 count written during its strobe).
  if (from <= run_.load && !frozen_out_ && run_out(run_, run_.load)) take(run_.load);
  const Pulse after_load = std::max(from, run_.load + 1);
  if (switch_) {
    // Up to and including the switch the old sequence decides (its reload or
    // half-cycle end is the switch); after it the new one does.
    const std::optional<Pulse> old_edge = run_rise(run_, after_load);
    if (old_edge && *old_edge <= switch_->at) take(old_edge);
    take(run_rise(switched_run(), std::max(from, switch_->at + 1)));
  } else {
    take(run_rise(run_, after_load));
  }
  return best;
}

bool Pit::Counter::periodic_faster_than(timers::Nanos interval) const noexcept {
  if ((mode_ != 2 && mode_ != 3) || !run_.active || run_.resume == kNoPulse) return false;
  const auto too_short = [&](std::uint32_t count) {
    return static_cast<__int128>(count) * timers::kSecond < static_cast<__int128>(interval) * kInputHz;
  };
  return too_short(run_.count) || (switch_ && too_short(switch_->count));
}

Pit::Counter::Switch Pit::Counter::next_boundary(Pulse now, std::uint32_t count) const noexcept {
  const std::int64_t n = run_.count;
  const std::int64_t e = now - run_.load;  // running: no pauses in modes 2/3
  if (mode_ == 2 || n == 1) {
    return Switch{run_.load + (e / n + 1) * n, count, false};
  }
  const std::int64_t high = (n + 1) / 2;
  const std::int64_t phase = (e + (run_.starts_low ? high : 0)) % n;
  if (phase < high) return Switch{now + (high - phase), count, true};
  return Switch{now + (n - phase), count, false};
}

void Pit::Counter::program(Pulse now, std::uint8_t control) noexcept {
  settle(now);
  freeze(now);
  control_ = control & 0x3F;
  access_ = (control >> 4) & 3;
  const unsigned mode_bits = (control >> 1) & 7;
  mode_ = mode_bits >= 6 ? mode_bits - 4 : mode_bits;
  bcd_ = (control & 1) != 0;
  run_ = Run{};
  switch_.reset();
  has_count_ = false;
  frozen_out_ = mode_ != 0;
  transfer_ = kNoPulse;
  write_msb_next_ = false;
  read_msb_next_ = false;
  latched_size_ = latched_next_ = 0;
  status_latched_ = false;
}

void Pit::Counter::latch_count(Pulse now) noexcept {
  if (latched_next_ < latched_size_) return;  // the previous latch is still unread
  const std::uint16_t value = display(element(now));
  const auto low = static_cast<std::uint8_t>(value);
  const auto high = static_cast<std::uint8_t>(value >> 8);
  latched_next_ = 0;
  switch (access_) {
    case 1:
      latched_ = {low, 0};
      latched_size_ = 1;
      break;
    case 2:
      latched_ = {high, 0};
      latched_size_ = 1;
      break;
    default:
      latched_ = {low, high};
      latched_size_ = 2;
      break;
  }
}

void Pit::Counter::latch_status(Pulse now) noexcept {
  if (status_latched_) return;
  status_ = static_cast<std::uint8_t>((out(now) ? kStatusOut : 0) | (null_count(now) ? kStatusNullCount : 0) |
                                      control_);
  status_latched_ = true;
}

std::uint8_t Pit::Counter::read(Pulse now) noexcept {
  if (status_latched_) {
    status_latched_ = false;
    return status_;
  }
  if (latched_next_ < latched_size_) return latched_[latched_next_++];
  const std::uint16_t value = display(element(now));
  bool msb = access_ == 2;
  if (access_ == 3) {
    msb = read_msb_next_;
    read_msb_next_ = !read_msb_next_;
  }
  return static_cast<std::uint8_t>(msb ? value >> 8 : value);
}

void Pit::Counter::write(Pulse now, std::uint8_t value) noexcept {
  settle(now);
  switch (access_) {
    case 1:
      count_register_ = value;
      break;
    case 2:
      count_register_ = static_cast<std::uint16_t>(value << 8);
      break;
    default:
      if (!write_msb_next_) {
        written_lsb_ = value;
        write_msb_next_ = true;
        if (mode_ == 0) {
          // Mode 0: the first byte of a two-byte count stops the counter and
          // drops OUT at once; the second byte starts the new count. A load
          // still due from the previous count is dropped (the chip would
          // load half-written bytes; the datasheet leaves it undefined), so
          // NULL COUNT stays set.
          freeze(now);
          if (now < run_.load) transfer_ = kNoPulse;
          run_.active = false;
          switch_.reset();
          frozen_out_ = false;
        }
        return;
      }
      write_msb_next_ = false;
      count_register_ = static_cast<std::uint16_t>(written_lsb_ | (value << 8));
      break;
  }
  count_complete(now);
}

void Pit::Counter::count_complete(Pulse now) noexcept {
  const bool first_count = !has_count_;
  has_count_ = true;
  const std::uint32_t n = effective_count();
  if (n == 1 && (mode_ == 2 || mode_ == 3) && g_illegal_count_log.allow()) {
    spdlog::debug("pit: count 1 is illegal in mode {}; OUT stays high ({} suppressed)", mode_,
                  g_illegal_count_log.take_suppressed());
  }
  const auto start = [&](bool running) {
    freeze(now);
    run_ = Run{};
    run_.active = true;
    run_.load = now + 1;
    run_.count = n;
    run_.resume = running ? run_.load : kNoPulse;
    switch_.reset();
    transfer_ = run_.load;
  };
  switch (mode_) {
    case 0:
      start(gate_);
      frozen_out_ = false;  // OUT drops at once and stays low until terminal count
      break;
    case 4:
      start(gate_);
      break;
    case 1:
    case 5:
      if (run_.active && now < run_.load) {
        run_.count = n;  // triggered, not loaded yet: the load takes the newest count
        transfer_ = run_.load;
      } else {
        transfer_ = kNoPulse;  // the next trigger loads it
      }
      break;
    default:  // 2, 3
      if (first_count) {
        start(gate_);
      } else if (now < run_.load) {
        run_.count = n;  // not loaded yet: the load takes the newest count
        transfer_ = run_.load;
      } else if (run_.resume == kNoPulse) {
        transfer_ = kNoPulse;  // stopped by GATE: the next trigger loads it
      } else {
        if (switch_) {
          switch_->count = n;
        } else {
          switch_ = next_boundary(now, n);
        }
        transfer_ = switch_->at;
      }
      break;
  }
}

void Pit::Counter::set_gate(Pulse now, bool level) noexcept {
  if (level == gate_) return;
  settle(now);
  gate_ = level;
  const auto trigger = [&] {
    freeze(now);
    run_ = Run{};
    run_.active = true;
    run_.load = now + 1;
    run_.count = effective_count();
    run_.resume = run_.load;
    switch_.reset();
    if (transfer_ > now) transfer_ = run_.load;
  };
  switch (mode_) {
    case 0:
    case 4:
      if (!run_.active) return;
      if (level) {
        run_.resume = std::max(now, run_.load);
      } else {
        const Pulse tc = terminal_pulse(run_);
        if (tc != kNoPulse && tc <= now) run_.strobe = tc;
        run_.counted = elapsed(run_, now);
        run_.resume = kNoPulse;
      }
      return;
    case 1:
    case 5:
      if (level && has_count_) trigger();
      return;
    default:  // 2, 3
      if (level) {
        if (has_count_ && run_.active) trigger();
        return;
      }
      if (!run_.active) return;
      run_.counted = elapsed(run_, now);
      run_.resume = kNoPulse;
      if (switch_) {
        switch_.reset();
        transfer_ = kNoPulse;  // the pending count waits for the next trigger
      }
      return;
  }
}

// ============================================================== Pit

Pit::Pit(timers::CyclicSystem& timers, timers::EventLoop& loop, IrqLine& irq0)
    : timers_(timers), clock_(timers.clock()), irq0_(irq0) {
  std::lock_guard lock(mu_);
  power_on_locked();
  if (!callout_.init(timers_, loop, &Pit::on_timer, this)) {
    throw Error("pit: cannot create the channel 0 timer");
  }
}

Pit::~Pit() { callout_.drain(); }

Pit::Pulse Pit::pulse_at(Nanos t) const noexcept {
  if (t <= epoch_) return 0;
  const auto ticks = static_cast<unsigned __int128>(t - epoch_) * kInputHz / timers::kSecond;
  return static_cast<Pulse>(ticks);
}

Nanos Pit::time_of(Pulse pulse) const noexcept {
  if (pulse <= 0) return epoch_;
  const auto ns = (static_cast<unsigned __int128>(pulse) * timers::kSecond + kInputHz - 1) / kInputHz;
  if (ns >= static_cast<unsigned __int128>(timers::kNever - epoch_)) return timers::kNever - 1;
  return epoch_ + static_cast<Nanos>(ns);
}

Pit::Pulse Pit::first_pulse_at_or_after(Nanos t) const noexcept {
  if (t <= epoch_) return 0;
  return pulse_at(t - 1) + 1;
}

void Pit::power_on_locked() noexcept {
  epoch_ = clock_.now();
  // Channels 0 and 1 have GATE tied high; channel 2's follows port 0x61.
  for (unsigned i = 0; i < kChannels; ++i) counters_[i].power_on(/*gate=*/i != 2);
  port61_latches_ = 0;
  output_enabled_ = true;
  paused_ = false;
  irq_edge_ = 0;
  irq_deadline_ = 0;
}

void Pit::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  std::lock_guard lock(mu_);
  const Pulse now = now_pulse();
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t port = offset + i;
    // Port 3 (control word) is write-only; nothing drives the bus.
    data[i] = (port >= offset && port < 3) ? counters_[port].read(now) : 0xff;
  }
}

void Pit::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  std::lock_guard lock(mu_);
  const Pulse now = now_pulse();
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t port = offset + i;
    if (port < offset || port >= kSize) break;
    write_port_locked(now, port, data[i]);
  }
}

void Pit::write_port_locked(Pulse now, std::uint64_t port, std::uint8_t value) noexcept {
  if (port == 3) {
    write_control_locked(now, value);
  } else if (port == 0) {
    change_channel0_locked(now, [&] { counters_[0].write(now, value); });
  } else {
    counters_[port].write(now, value);
  }
}

void Pit::write_control_locked(Pulse now, std::uint8_t value) noexcept {
  const unsigned select = value >> kControlSelectShift;
  if (select == kReadBack) {
    // Bits 3-1 pick channels 2-0; bit 0 is reserved and ignored.
    for (unsigned i = 0; i < kChannels; ++i) {
      if ((value & (2u << i)) == 0) continue;
      if ((value & kReadBackNoCount) == 0) counters_[i].latch_count(now);
      if ((value & kReadBackNoStatus) == 0) counters_[i].latch_status(now);
    }
    return;
  }
  if (((value >> 4) & 3) == 0) {
    counters_[select].latch_count(now);
    return;
  }
  if (select == 0) {
    change_channel0_locked(now, [&] { counters_[0].program(now, value); });
  } else {
    counters_[select].program(now, value);
  }
}

template <typename Change>
void Pit::change_channel0_locked(Pulse now, Change&& change) noexcept {
  // An edge that already happened belongs to the old programming: deliver it
  // before the write changes what OUT0 does (its firing, if still queued,
  // then finds the callout re-armed or stopped and does nothing).
  deliver_due_edge_locked(now);
  const bool was_high = counters_[0].out(now);
  change();
  if (!was_high && counters_[0].out(now) && output_enabled_) irq0_.pulse();
  schedule_irq_locked(now);
}

void Pit::deliver_due_edge_locked(Pulse now) noexcept {
  if (irq_deadline_ == 0 || irq_edge_ > now) return;
  if (output_enabled_) irq0_.pulse();
  irq_deadline_ = 0;
}

void Pit::schedule_irq_locked(Pulse now) noexcept {
  std::optional<Pulse> next;
  if (output_enabled_) next = counters_[0].next_rise(now + 1);
  if (!next) {
    irq_deadline_ = 0;
    callout_.stop();
    return;
  }
  irq_edge_ = *next;
  irq_deadline_ = time_of(*next);
  if (paused_) return;  // resume() arms it
  if (!callout_.set_deadline(irq_deadline_)) {
    irq_deadline_ = 0;  // drained: the VM is being reset
    ++stats_.refused_rearms;
  }
}

void Pit::on_timer(void* arg) { static_cast<Pit*>(arg)->timer_fired(); }

void Pit::timer_fired() noexcept {
  std::lock_guard lock(mu_);
#if defined(VMM_MUTANT_PIT_NO_PENDING_TEST)
  // Mutation-testing hook (tools/mutants): the idiom without its pending test.
  if (!callout_.active()) return;
  callout_.deactivate();
#else
  if (!callout_.claim()) return;  // re-armed or stopped since this firing
#endif
  ++stats_.handler_runs;
  if (irq_deadline_ == 0) return;
  const Pulse now = now_pulse();
  if (irq_edge_ <= now) {
    if (output_enabled_) irq0_.pulse();
    // Lag policy: the next edge is on the channel's own period grid, after
    // now. Rate policy: a period too short for the loop is thinned to one
    // edge per kMinIrqInterval, still on the grid.
    Pulse from = now + 1;
    if (counters_[0].periodic_faster_than(kMinIrqInterval)) {
      from = std::max(from, first_pulse_at_or_after(timers::add_saturating(irq_deadline_, kMinIrqInterval)));
      if (g_rate_clamp_log.allow()) {
        spdlog::warn("pit: channel 0 period is shorter than {} us; interrupts are thinned ({} suppressed)",
                     kMinIrqInterval / timers::kMicrosecond, g_rate_clamp_log.take_suppressed());
      }
    }
    const std::optional<Pulse> next = counters_[0].next_rise(from);
    if (!next) {
      irq_deadline_ = 0;  // one-shot: fired
      return;
    }
    irq_edge_ = *next;
    irq_deadline_ = time_of(*next);
  }
  timers::race_point(timers::RacePoint::device_handler_before_rearm);
  if (!callout_.reset(irq_deadline_, timers::CalloutTime::absolute)) {
    irq_deadline_ = 0;  // drained under this handler (a VM reset): refused, quietly
    ++stats_.refused_rearms;
  }
}

std::uint8_t Pit::read_port61() noexcept {
  std::lock_guard lock(mu_);
  const Pulse now = now_pulse();
  std::uint8_t value = port61_latches_;
  if ((now / kRefreshPulses) & 1) value |= kRefreshToggle;
  if (counters_[2].out(now)) value |= kOut2;
  return value;
}

void Pit::write_port61(std::uint8_t value) noexcept {
  std::lock_guard lock(mu_);
  port61_latches_ = value & (kGate2 | kSpeakerData | kParityCheckDisable | kChannelCheckDisable);
  counters_[2].set_gate(now_pulse(), (value & kGate2) != 0);
}

void Pit::Port61::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = (offset == 0 && i == 0) ? owner_.read_port61() : 0xff;
  }
}

void Pit::Port61::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  if (offset == 0 && !data.empty()) owner_.write_port61(data[0]);
}

void Pit::set_output_enabled(bool enabled) noexcept {
  std::lock_guard lock(mu_);
  if (enabled == output_enabled_) return;
  const Pulse now = now_pulse();
  deliver_due_edge_locked(now);
  output_enabled_ = enabled;
  schedule_irq_locked(now);
}

bool Pit::output_enabled() const noexcept {
  std::lock_guard lock(mu_);
  return output_enabled_;
}

void Pit::drain_timers() noexcept { callout_.drain(); }

void Pit::reset(timers::EventLoop& loop) noexcept {
  callout_.drain();
  std::lock_guard lock(mu_);
  power_on_locked();
  try {
    if (!callout_.init(timers_, loop, &Pit::on_timer, this)) {
      spdlog::error("pit: cannot re-create the channel 0 timer after a reset; IRQ 0 stays silent");
    }
  } catch (const std::exception& e) {
    spdlog::error("pit: cannot re-create the channel 0 timer after a reset: {}", e.what());
  }
}

void Pit::pause() noexcept {
  std::lock_guard lock(mu_);
  paused_ = true;
  callout_.stop();
}

void Pit::resume() noexcept {
  std::lock_guard lock(mu_);
  paused_ = false;
  if (irq_deadline_ != 0 && !callout_.reset(irq_deadline_, timers::CalloutTime::absolute)) {
    irq_deadline_ = 0;
    ++stats_.refused_rearms;
  }
}

void Pit::bind_timers(timers::EventLoop& loop) noexcept { callout_.bind(loop); }

Nanos Pit::irq_deadline() const noexcept {
  std::lock_guard lock(mu_);
  return irq_deadline_;
}

Nanos Pit::epoch() const noexcept {
  std::lock_guard lock(mu_);
  return epoch_;
}

Pit::Stats Pit::stats() const noexcept {
  std::lock_guard lock(mu_);
  return stats_;
}

bool Pit::output(unsigned channel) const noexcept {
  if (channel >= kChannels) return false;
  std::lock_guard lock(mu_);
  return counters_[channel].out(now_pulse());
}

}  // namespace vmm::devices
