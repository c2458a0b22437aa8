#include "devices/hpet.h"

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "devices/rate_limit.h"
#include "timers/race_points.h"

namespace vmm::devices {

namespace {

using timers::Nanos;

constexpr std::uint64_t kTimerCaps = (std::uint64_t{Hpet::kRouteCap} << 32) | Hpet::kTimerFsbCap |
                                     Hpet::kTimerSize64Cap | Hpet::kTimerPeriodicCap;
constexpr std::uint64_t kTimerWritable = Hpet::kTimerLevel | Hpet::kTimerIntEnable | Hpet::kTimerPeriodic |
                                         Hpet::kTimerValSet | Hpet::kTimer32Bit | Hpet::kTimerRouteMask |
                                         Hpet::kTimerFsbEnable;
constexpr std::uint64_t kLow32 = 0xFFFF'FFFFu;
constexpr std::uint64_t kTimerBlock = 0x100;
constexpr std::uint64_t kTimerStride = 0x20;

struct Match {
  bool matched = false;
  bool status_rose = false;
};

template <typename Array, typename T>
bool contains(const Array& array, T value) noexcept {
  return std::find(array.begin(), array.end(), value) != array.end();
}

// True when no element before `i` equals array[i] (act once per distinct line).
template <typename Array>
bool first_of_its_kind(const Array& array, std::size_t i) noexcept {
  for (std::size_t j = 0; j < i; ++j) {
    if (array[j] == array[i]) return false;
  }
  return true;
}

}  // namespace

Hpet::Hpet(timers::CyclicSystem& system, timers::EventLoop& loop, const PinLookup& ioapic_pin, IrqLine& isa_irq0,
           IrqLine& isa_irq8, MsiSink& msi, LegacyCallback legacy_changed)
    : system_(system),
      clock_(system.clock()),
      isa_irq0_(isa_irq0),
      isa_irq8_(isa_irq8),
      msi_(msi),
      legacy_changed_(std::move(legacy_changed)) {
  if (ioapic_pin) {
    for (unsigned pin = 0; pin < kIoApicPins; ++pin) {
      if (((kRouteCap >> pin) & 1) != 0) pins_[pin] = &ioapic_pin(pin);
    }
  }
  for (unsigned n = 0; n < kTimers; ++n) {
    callout_args_[n] = CalloutArg{this, n};
    // As the PIT: a device that cannot keep time must not start silent.
    if (!callouts_[n].init(system_, loop, &Hpet::on_callout, &callout_args_[n])) {
      throw Error("hpet: cannot create its comparators' timers");
    }
  }
  std::lock_guard lock(mu_);
  power_on_locked();
}

Hpet::~Hpet() { drain_timers(); }

// ------------------------------------------------------------------ MMIO

void Hpet::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  std::lock_guard lock(mu_);
  const Nanos now = clock_.now();
  std::uint64_t cached_reg = ~std::uint64_t{0};
  std::uint64_t cached = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t address = offset + i;
    if (address >= kSize || address < offset) {
      data[i] = 0xFF;  // past the block
      continue;
    }
    const std::uint64_t reg = address & ~std::uint64_t{7};
    if (reg != cached_reg) {
      cached = read_reg(reg, now);
      cached_reg = reg;
    }
    data[i] = static_cast<std::uint8_t>(cached >> ((address & 7) * 8));
  }
}

void Hpet::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  bool legacy_toggled = false;
  {
    std::lock_guard lock(mu_);
    const Nanos now = clock_.now();
    std::size_t i = 0;
    while (i < data.size()) {
      const std::uint64_t address = offset + i;
      if (address >= kSize || address < offset) break;
      const std::uint64_t reg = address & ~std::uint64_t{7};
      std::uint64_t value = 0, mask = 0;
      for (; i < data.size() && offset + i < kSize && ((offset + i) & ~std::uint64_t{7}) == reg; ++i) {
        const unsigned shift = static_cast<unsigned>((offset + i) & 7) * 8;
        value |= std::uint64_t{data[i]} << shift;
        mask |= std::uint64_t{0xFF} << shift;
      }
      legacy_toggled |= write_reg(reg, value, mask, now);
    }
  }
  if (legacy_toggled) report_legacy();
}

std::uint64_t Hpet::read_reg(std::uint64_t reg, Nanos now) noexcept {
  switch (reg) {
    case kRegCapabilities:
      return kCapabilities;
    case kRegConfig:
      return config_;
    case kRegStatus:
      sync_all(now);
      return status_;
    case kRegCounter:
      return counter_at(now);
    default:
      break;
  }
  if (reg < kTimerBlock || reg >= kTimerBlock + kTimerStride * kTimers) return 0;
  const auto n = static_cast<unsigned>((reg - kTimerBlock) / kTimerStride);
  Timer& t = timers_[n];
  switch ((reg - kTimerBlock) % kTimerStride) {
    case 0x00:
      return t.config | kTimerCaps;
    case 0x08:
      sync(n, now);  // a periodic comparator shows the next match
      return t.comparator;
    case 0x10:
      return t.fsb;
    default:
      return 0;
  }
}

bool Hpet::write_reg(std::uint64_t reg, std::uint64_t value, std::uint64_t mask, Nanos now) noexcept {
  const auto merge = [&](std::uint64_t old) { return (old & ~mask) | (value & mask); };
  switch (reg) {
    case kRegConfig:
      return write_config(merge(config_), now);
    case kRegStatus: {
      sync_all(now);
      const std::uint64_t clear = value & mask & ((std::uint64_t{1} << kTimers) - 1);
      if (clear != 0) {
        status_ &= ~clear;
        refresh_lines();
        rearm_all(now);  // a cleared level comparator's next match is visible again
      }
      return false;
    }
    case kRegCounter:
      if (enabled()) {
        static RateLimit limit;
        if (limit.allow()) {
          spdlog::debug("hpet: main counter write while the counter runs ignored ({} suppressed)",
                        limit.take_suppressed());
        }
        return false;
      }
      counter_ = merge(counter_);
      for (Timer& t : timers_) t.seen = counter_;
      return false;
    default:
      break;
  }
  if (reg < kTimerBlock || reg >= kTimerBlock + kTimerStride * kTimers) return false;
  const auto n = static_cast<unsigned>((reg - kTimerBlock) / kTimerStride);
  Timer& t = timers_[n];
  switch ((reg - kTimerBlock) % kTimerStride) {
    case 0x00:
      write_timer_config(n, merge(t.config), now);
      break;
    case 0x08:
      write_comparator(n, value, mask, now);
      break;
    case 0x10:
      t.fsb = merge(t.fsb);
      break;
    default:
      break;
  }
  return false;
}

bool Hpet::write_config(std::uint64_t value, Nanos now) noexcept {
  value &= kConfigEnable | kConfigLegacy;
  const std::uint64_t old = config_;
  if (value == old) return false;
  sync_all(now);  // matches up to now belong to the old configuration
  if ((old & kConfigEnable) != 0 && (value & kConfigEnable) == 0) {
    counter_ = counter_at(now);
  } else if ((old & kConfigEnable) == 0 && (value & kConfigEnable) != 0) {
    counter_time_ = now;
    for (Timer& t : timers_) t.seen = counter_;
  }
  config_ = value;
  refresh_lines();
  rearm_all(now);
  return ((old ^ value) & kConfigLegacy) != 0;
}

void Hpet::write_timer_config(unsigned n, std::uint64_t value, Nanos now) noexcept {
  sync(n, now);
  Timer& t = timers_[n];
  std::uint64_t next = value & kTimerWritable;
  const auto route = static_cast<unsigned>((next & kTimerRouteMask) >> kTimerRouteShift);
  if (((kRouteCap >> route) & 1) == 0) {
    if ((next & kTimerRouteMask) != (t.config & kTimerRouteMask)) {
      static RateLimit limit;
      if (limit.allow()) {
        spdlog::debug("hpet: comparator {} route to IOAPIC pin {} is outside its capability {:#x}, ignored "
                      "({} suppressed)",
                      n, route, kRouteCap, limit.take_suppressed());
      }
    }
    next = (next & ~kTimerRouteMask) | (t.config & kTimerRouteMask);
  }
  const bool to_32bit = (next & kTimer32Bit) != 0 && (t.config & kTimer32Bit) == 0;
  t.config = next;
  if (to_32bit) {
    t.comparator &= kLow32;
    t.period &= kLow32;
  }
  // The status bit means something only in level mode.
  if ((next & kTimerLevel) == 0) status_ &= ~(std::uint64_t{1} << n);
  refresh_lines();
  rearm(n, now);
}

void Hpet::write_comparator(unsigned n, std::uint64_t value, std::uint64_t mask, Nanos now) noexcept {
  sync(n, now);
  Timer& t = timers_[n];
  if ((t.config & kTimer32Bit) != 0) mask &= kLow32;  // the upper half is not there
  if (mask == 0) return;
  const auto merge = [&](std::uint64_t old) { return (old & ~mask) | (value & mask); };
  const bool periodic = (t.config & kTimerPeriodic) != 0;
  if (!periodic || (t.config & kTimerValSet) != 0) t.comparator = merge(t.comparator);
  if (periodic) t.period = merge(t.period);
  t.config &= ~kTimerValSet;
  rearm(n, now);
}

// ------------------------------------------------------------ comparators

void Hpet::power_on_locked() noexcept {
  paused_ = false;  // power-on is running, even when a paused VM is reset (see Rtc)
  config_ = 0;
  status_ = 0;
  counter_ = 0;
  counter_time_ = clock_.now();
  for (Timer& t : timers_) {
    IrqLine* held = t.held;
    t = Timer{};
    t.held = held;  // refresh_lines() lowers it
  }
  refresh_lines();
  rearm_all(counter_time_);
}

std::uint64_t Hpet::counter_at(Nanos now) const noexcept {
  if (!enabled()) return counter_;
  return counter_ + static_cast<std::uint64_t>(std::max<Nanos>(0, now - counter_time_) / kTickNs);
}

std::uint64_t Hpet::width_mask(const Timer& t) noexcept {
  return (t.config & kTimer32Bit) != 0 ? kLow32 : ~std::uint64_t{0};
}

// Accounts the matches of comparator n while the counter went from t.seen to
// `counter`: the comparator matched if the counter reached it on the way.
bool Hpet::account(unsigned n, std::uint64_t counter) noexcept {
  Timer& t = timers_[n];
  const std::uint64_t mask = width_mask(t);
  const std::uint64_t from = t.seen;
  const std::uint64_t elapsed = counter - from;
  t.seen = counter;
  if (elapsed == 0) return false;
  std::uint64_t distance = (t.comparator - from) & mask;
  if (distance == 0) {
    // Reached at `from`, already accounted: next time round is a wrap away.
    if (mask == ~std::uint64_t{0}) return false;
    distance = mask + 1;
  }
  if (distance > elapsed) return false;
  if ((t.config & kTimerPeriodic) != 0 && t.period != 0) {
    const std::uint64_t since_match = elapsed - distance;
    const std::uint64_t periods = since_match / t.period + 1;  // missed ones skipped
    t.comparator = (t.comparator + periods * t.period) & mask;
  }
  return true;
}

void Hpet::sync(unsigned n, Nanos now) noexcept {
  if (!enabled()) return;
  if (!account(n, counter_at(now))) return;
  bool status_rose = false;
  if ((timers_[n].config & kTimerLevel) != 0) {
    const std::uint64_t bit = std::uint64_t{1} << n;
    status_rose = (status_ & bit) == 0;
    status_ |= bit;
  }
  deliver(n, status_rose);
}

void Hpet::sync_all(Nanos now) noexcept {
  for (unsigned n = 0; n < kTimers; ++n) sync(n, now);
}

void Hpet::deliver(unsigned n, bool status_rose) noexcept {
  const Timer& t = timers_[n];
  if ((t.config & kTimerIntEnable) == 0) return;
  const bool level = (t.config & kTimerLevel) != 0;
  const bool fsb = !(legacy() && n < 2) && (t.config & kTimerFsbEnable) != 0;
  if (fsb) {
    if (!level || status_rose) {
      msi_.send_msi(MsiMessage{t.fsb >> 32, static_cast<std::uint32_t>(t.fsb)});
    }
    return;
  }
  if (level) {
    refresh_lines();
    return;
  }
  IrqLine* line = output_line(n);
  if (line == nullptr) return;  // routed to a pin outside the capability: nowhere
  for (const Timer& other : timers_) {
    if (other.held == line) return;  // held high by a level source: a pulse would drop it
  }
  line->pulse();
}

IrqLine* Hpet::output_line(unsigned n) const noexcept {
  if (legacy() && n == 0) return &isa_irq0_;
  if (legacy() && n == 1) return &isa_irq8_;
  const Timer& t = timers_[n];
  if ((t.config & kTimerFsbEnable) != 0) return nullptr;
  return pins_[(t.config & kTimerRouteMask) >> kTimerRouteShift];
}

// Drives every line from the level comparators' state; a line shared by two
// level comparators stays up while either holds it.
void Hpet::refresh_lines() noexcept {
  std::array<IrqLine*, kTimers> held{}, want{};
  for (unsigned n = 0; n < kTimers; ++n) {
    const Timer& t = timers_[n];
    held[n] = t.held;
    const bool asserted = enabled() && (t.config & kTimerLevel) != 0 && (t.config & kTimerIntEnable) != 0 &&
                          (status_ & (std::uint64_t{1} << n)) != 0;
    want[n] = asserted ? output_line(n) : nullptr;
  }
  for (std::size_t i = 0; i < kTimers; ++i) {
    if (held[i] != nullptr && !contains(want, held[i]) && first_of_its_kind(held, i)) held[i]->set_level(false);
  }
  for (std::size_t i = 0; i < kTimers; ++i) {
    if (want[i] != nullptr && !contains(held, want[i]) && first_of_its_kind(want, i)) want[i]->set_level(true);
  }
  for (unsigned n = 0; n < kTimers; ++n) timers_[n].held = want[n];
}

void Hpet::rearm(unsigned n, Nanos now) noexcept {
  const Timer& t = timers_[n];
  timers::Callout& callout = callouts_[n];
  Nanos deadline = 0;
  const bool level = (t.config & kTimerLevel) != 0;
  // Level: the next match shows as a status bit (even with interrupts off)
  // unless the bit is already set. Edge: only an enabled interrupt shows.
  const bool visible =
      level ? (status_ & (std::uint64_t{1} << n)) == 0 : (t.config & kTimerIntEnable) != 0;
  if (!paused_ && enabled() && visible) {
    const std::uint64_t counter = counter_at(now);
    const std::uint64_t mask = width_mask(t);
    std::uint64_t distance = (t.comparator - counter) & mask;
    if (distance == 0 && mask != ~std::uint64_t{0}) distance = mask + 1;
    // Ticks from counter_time_ to the match, if it comes within the clock's range.
    const std::uint64_t run = counter - counter_;
    const auto limit = static_cast<std::uint64_t>((timers::kNever - 1 - std::max<Nanos>(counter_time_, 0)) / kTickNs);
    if (distance != 0 && run <= limit && distance <= limit - run) {
      deadline = counter_time_ + static_cast<Nanos>((run + distance) * kTickNs);
      if ((t.config & kTimerPeriodic) != 0 && t.last_fire != 0) {
        deadline = std::max(deadline, t.last_fire + kMinRearmInterval);
      }
    }
  }
  // Refused only after drain_timers() (a VM reset under way): quietly.
  if (!callout.set_deadline(deadline)) ++stats_.refused_rearms;
}

void Hpet::rearm_all(Nanos now) noexcept {
  for (unsigned n = 0; n < kTimers; ++n) rearm(n, now);
}

void Hpet::on_callout(void* arg) {
  const auto* self = static_cast<CalloutArg*>(arg);
  self->hpet->on_timer(self->n);
}

void Hpet::on_timer(unsigned n) noexcept {
  std::lock_guard lock(mu_);
  timers::Callout& callout = callouts_[n];
#if defined(VMM_MUTANT_HPET_NO_PENDING_TEST)
  // Mutation-testing hook (tools/mutants): the idiom without its pending test.
  if (!callout.active()) return;
  callout.deactivate();
#else
  if (!callout.claim()) return;  // re-armed or stopped since this firing
#endif
  ++stats_.handler_runs[n];
  const Nanos now = clock_.now();
  sync(n, now);
  timers_[n].last_fire = now;
  // illumos 12476 happened here: a VM reset drained this callout while the
  // handler ran; the re-arm below must then be refused, quietly.
  timers::race_point(timers::RacePoint::device_handler_before_rearm);
  rearm(n, now);
}

void Hpet::report_legacy() noexcept {
  std::lock_guard order(legacy_mu_);
  bool legacy_now = false;
  {
    std::lock_guard lock(mu_);
    legacy_now = legacy();
  }
  if (legacy_now == legacy_reported_) return;
  legacy_reported_ = legacy_now;
  if (legacy_changed_) legacy_changed_(legacy_now);
}

// ------------------------------------------------------------ lifecycle

bool Hpet::legacy_replacement() const noexcept {
  std::lock_guard lock(mu_);
  return legacy();
}

void Hpet::drain_timers() noexcept {
  for (timers::Callout& callout : callouts_) callout.drain();
}

void Hpet::reset(timers::EventLoop& loop) noexcept {
  drain_timers();  // a no-op when the VM already drained, as it should have
  {
    std::lock_guard lock(mu_);
    for (unsigned n = 0; n < kTimers; ++n) {
      if (!callouts_[n].init(system_, loop, &Hpet::on_callout, &callout_args_[n])) {
        static RateLimit limit;
        if (limit.allow()) spdlog::error("hpet: callout {} could not be initialised on reset", n);
      }
    }
    power_on_locked();
  }
  report_legacy();  // legacy replacement is off again: give IRQ 0 and 8 back
}

void Hpet::pause() noexcept {
  std::lock_guard lock(mu_);
  const Nanos now = clock_.now();
  sync_all(now);
  paused_ = true;
  rearm_all(now);
}

void Hpet::resume() noexcept {
  std::lock_guard lock(mu_);
  const Nanos now = clock_.now();
  paused_ = false;
  // A one-shot that came due while paused fires now; periodic comparators
  // skip the periods they missed.
  sync_all(now);
  rearm_all(now);
}

void Hpet::bind_timers(timers::EventLoop& loop) noexcept {
  for (timers::Callout& callout : callouts_) callout.bind(loop);
}

Hpet::Stats Hpet::stats() const noexcept {
  std::lock_guard lock(mu_);
  return stats_;
}

Nanos Hpet::armed(unsigned n) const noexcept {
  if (n >= kTimers) return 0;
  std::lock_guard lock(mu_);
  return callouts_[n].target();
}

}  // namespace vmm::devices
