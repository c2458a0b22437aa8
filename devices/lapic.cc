#include "devices/lapic.h"

#include <algorithm>
#include <bit>
#include <utility>

#include <spdlog/spdlog.h>

#include "devices/apic_bus.h"
#include "devices/rate_limit.h"

namespace vmm::devices {

namespace {

constexpr std::uint32_t kVectorMask = 0xFF;
constexpr unsigned kDeliveryShift = 8;
constexpr std::uint32_t kDeliveryMask = 7u << kDeliveryShift;
constexpr std::uint32_t kLvtPolarity = 1u << 13;
constexpr std::uint32_t kTimerModeMask = 3u << LapicTimer::kModeShift;
constexpr std::uint32_t kTimerModeTscDeadline = 2u << LapicTimer::kModeShift;

constexpr std::uint32_t kIcrLogical = 1u << 11;
constexpr std::uint32_t kIcrAssert = 1u << 14;
constexpr std::uint32_t kIcrLevel = 1u << 15;
constexpr unsigned kIcrShorthandShift = 18;
constexpr std::uint32_t kIcrShorthandMask = 3u << kIcrShorthandShift;
constexpr std::uint32_t kIcrLowWritable =
    kVectorMask | kDeliveryMask | kIcrLogical | kIcrAssert | kIcrLevel | kIcrShorthandMask;
constexpr std::uint32_t kIcrHighXapicMask = 0xFF00'0000;
constexpr std::uint64_t kX2apicIcrReserved = 0xFFF0'0000u | (3u << 16) | (1u << 13);

constexpr std::uint32_t kSvrWritable = 0x3FF;  // vector, enable, focus checking
constexpr std::uint32_t kLdrXapicMask = 0xFF00'0000;
constexpr std::uint32_t kDfrReservedOnes = 0x0FFF'FFFF;
constexpr std::uint32_t kDfrFlat = 0xF, kDfrCluster = 0x0;

// IA32_APIC_BASE: base address (bits 12-51 for a 52-bit physical address
// space), BSP, EXTD, EN; bits 0-7, 9 and 52-63 are reserved.
constexpr std::uint64_t kBaseAddressMask = 0x000F'FFFF'FFFF'F000;
constexpr std::uint64_t kBaseWritable = kBaseAddressMask | Lapic::kBaseBsp | Lapic::kBaseExtd | Lapic::kBaseEnable;

constexpr unsigned kVectorRegisterBytes = 0x80;  // ISR, TMR, IRR: 8 registers each

RateLimit g_access_log;
RateLimit g_msr_log;
RateLimit g_vector_log;
RateLimit g_icr_log;

ApicDelivery delivery_of(std::uint32_t value) { return static_cast<ApicDelivery>((value & kDeliveryMask) >> kDeliveryShift); }

std::uint8_t priority_class(int vector) { return vector < 0 ? 0 : static_cast<std::uint8_t>(vector & 0xF0); }

}  // namespace

int ApicVectorSet::highest() const noexcept {
  for (int i = 3; i >= 0; --i) {
    if (bits_[i] != 0) return i * 64 + 63 - std::countl_zero(bits_[i]);
  }
  return -1;
}

Lapic::Lapic(ApicBus& bus, unsigned index, timers::CyclicSystem& system, timers::EventLoop& loop,
             const Config& config)
    : bus_(bus),
      index_(index),
      config_(config),
      timer_(system, loop, [this](std::uint8_t vector) { on_timer_interrupt(*this, vector); }, config.timer) {
  std::lock_guard lock(mu_);
  base_ = kMmioBase | kBaseEnable | (index == 0 ? kBaseBsp : 0);
  power_on_registers_locked();
}

Lapic::~Lapic() {
  // The timer's handler takes mu_, which is destroyed before the timer.
  timer_.drain_timers();
}

// ------------------------------------------------------------ register state

void Lapic::power_on_registers_locked() noexcept {
  tpr_ = 0;
  ldr_ = 0;
  dfr_ = 0xFFFF'FFFF;
  svr_ = 0xFF;
  irr_.reset();
  isr_.reset();
  tmr_.reset();
  esr_ = 0;
  esr_pending_ = 0;
  error_firing_ = false;
  icr_low_ = 0;
  icr_high_ = 0;
  lvt_.fill(kLvtMasked);
  extint_latched_ = false;
}

std::uint32_t Lapic::ldr_locked() const noexcept {
  // x2APIC logical ID: cluster (ID[19:4]) in bits 31:16, one bit per member.
  if (x2apic_locked()) return ((index_ >> 4) << 16) | (1u << (index_ & 0xF));
  return ldr_;
}

std::uint8_t Lapic::ppr_locked() const noexcept {
  const std::uint8_t isr_class = priority_class(isr_.highest());
  return (tpr_ & 0xF0) >= isr_class ? tpr_ : isr_class;
}

std::uint8_t Lapic::apr_locked() const noexcept {
  const std::uint8_t tpr_class = tpr_ & 0xF0;
  const std::uint8_t isr_class = priority_class(isr_.highest());
  const std::uint8_t irr_class = priority_class(irr_.highest());
  if (tpr_class >= irr_class && tpr_class > isr_class) return tpr_;
  return std::max({tpr_class, isr_class, irr_class});
}

std::uint32_t Lapic::lvt_mask_for(unsigned offset) const noexcept {
  // Delivery status (bit 12) always reads 0 (delivery is immediate); Remote
  // IRR is the APIC's own.
  switch (offset) {
    case kRegLvtThermal:
    case kRegLvtPerf:
      return kVectorMask | kDeliveryMask | kLvtMasked;
    case kRegLvtLint0:
    case kRegLvtLint1:
      return kVectorMask | kDeliveryMask | kLvtPolarity | kLvtLevel | kLvtMasked;
    default:  // error
      return kVectorMask | kLvtMasked;
  }
}

// -------------------------------------------------------------- delivery in

bool Lapic::accept_fixed_locked(std::uint8_t vector, bool level, Work& work) noexcept {
  if (vector < 16) {
    ++stats_.illegal_vectors;
    if (g_vector_log.allow()) {
      spdlog::debug("lapic {}: received illegal vector {} ({} suppressed)", index_, vector,
                    g_vector_log.take_suppressed());
    }
    set_error_locked(kEsrReceiveIllegalVector, work);
    return false;
  }
  if (!sw_enabled_locked()) {
    ++stats_.dropped_disabled;
    return false;
  }
  ++stats_.interrupts;
  if (irr_.test(vector)) {
    ++stats_.coalesced;
  } else {
    irr_.set(vector);
    work.kick = true;
  }
  if (level) {
    tmr_.set(vector);
  } else {
    tmr_.clear(vector);
  }
  return true;
}

void Lapic::set_error_locked(std::uint32_t bits, Work& work) noexcept {
  esr_pending_ |= bits;
  // An error interrupt whose own vector is illegal logs that error too, and
  // must not raise itself again.
  if (error_firing_ || (lvt_[kLvtError] & kLvtMasked)) return;
  error_firing_ = true;
  (void)accept_fixed_locked(static_cast<std::uint8_t>(lvt_[kLvtError] & kVectorMask), false, work);
  error_firing_ = false;
}

void Lapic::on_timer_interrupt(Lapic& self, std::uint8_t vector) noexcept {
  Work work;
  {
    std::lock_guard lock(self.mu_);
    if (!self.hw_enabled_locked()) return;
    (void)self.accept_fixed_locked(vector, false, work);
  }
  self.finish(work);
}

void Lapic::receive(ApicDelivery mode, std::uint8_t vector, bool level_triggered) noexcept {
  Work work;
  {
    std::lock_guard lock(mu_);
    if (!hw_enabled_locked()) return;
    switch (mode) {
      case ApicDelivery::fixed:
      case ApicDelivery::lowest_priority:
        (void)accept_fixed_locked(vector, level_triggered, work);
        break;
      case ApicDelivery::nmi:
        events_.nmi = true;
        work.kick = true;
        break;
      case ApicDelivery::smi:
        events_.smi = true;
        work.kick = true;
        break;
      case ApicDelivery::init:
        work.init = true;
        break;
      case ApicDelivery::startup:
        if (!events_.sipi) events_.sipi = vector;  // a second SIPI finds the AP started
        work.kick = true;
        break;
      case ApicDelivery::extint:
        extint_latched_ = true;
        work.kick = true;
        break;
      case ApicDelivery::reserved3:
        break;
    }
  }
  finish(work);
}

void Lapic::set_lint(unsigned pin, bool level) noexcept {
  if (pin > 1) return;
  Work work;
  {
    std::lock_guard lock(mu_);
    const bool was = lint_level_[pin];
    lint_level_[pin] = level;
    lint_changed_locked(pin, was, work);
  }
  finish(work);
}

void Lapic::lint_changed_locked(unsigned pin, bool was, Work& work) noexcept {
  const bool level = lint_level_[pin];
  const bool rising = level && !was;
  if (!hw_enabled_locked()) {
    // A disabled APIC passes its pins through: LINT0 is INTR, LINT1 NMI.
    if (rising) {
      if (pin == 1) events_.nmi = true;
      work.kick = true;
    }
    return;
  }
  std::uint32_t& lvt = lvt_[kLvtLint0 + pin];
  if (lvt & kLvtMasked) return;
  const auto vector = static_cast<std::uint8_t>(lvt & kVectorMask);
  switch (delivery_of(lvt)) {
    case ApicDelivery::fixed:
      if (lvt & kLvtLevel) {
        // Level: once per assertion, until the EOI clears Remote IRR.
        if (level && !(lvt & kLvtRemoteIrr) && accept_fixed_locked(vector, true, work)) lvt |= kLvtRemoteIrr;
      } else if (rising) {
        (void)accept_fixed_locked(vector, false, work);
      }
      break;
    case ApicDelivery::extint:  // level-sensitive: extint_pending() follows the pin
      if (rising) work.kick = true;
      break;
    case ApicDelivery::nmi:
      if (rising) {
        events_.nmi = true;
        work.kick = true;
      }
      break;
    case ApicDelivery::smi:
      if (rising) {
        events_.smi = true;
        work.kick = true;
      }
      break;
    case ApicDelivery::init:
      if (rising) work.init = true;
      break;
    default:  // lowest priority, start-up and reserved mean nothing on a LINT
      break;
  }
}

void Lapic::eoi_locked(Work& work) noexcept {
  const int vector = isr_.highest();
  if (vector < 0) return;
  const auto v = static_cast<std::uint8_t>(vector);
  isr_.clear(v);
  SPDLOG_TRACE("lapic {}: EOI retires vector {:#x}", index_, v);
  ++stats_.eois;
  if (tmr_.test(v)) {
    work.eoi_broadcast = v;
    ++stats_.eoi_broadcasts;
  }
  for (unsigned pin = 0; pin < 2; ++pin) {
    std::uint32_t& lvt = lvt_[kLvtLint0 + pin];
    if ((lvt & kLvtRemoteIrr) && (lvt & kVectorMask) == v) {
      lvt &= ~kLvtRemoteIrr;
      lint_changed_locked(pin, lint_level_[pin], work);  // still asserted: again
    }
  }
}

void Lapic::init_reset() noexcept {
  {
    std::lock_guard write(write_mu_);
    timer_.power_on();
    std::lock_guard lock(mu_);
    // INIT keeps IA32_APIC_BASE (so the mode) and the ID; the rest powers on.
    power_on_registers_locked();
    events_ = Events{};
    events_.init = true;
    ++stats_.kicks;
  }
  bus_.kick(index_);
}

void Lapic::finish(Work& work) noexcept {
  if (work.init) init_reset();
  if (work.ipi) bus_.deliver(*work.ipi, this);
  if (work.eoi_broadcast) bus_.broadcast_eoi(*work.eoi_broadcast);
  if (work.kick) {
    {
      std::lock_guard lock(mu_);
      ++stats_.kicks;
    }
    bus_.kick(index_);
  }
}

// ------------------------------------------------------------- sending IPIs

void Lapic::send_locked(const ApicMessage& message, Work& work) noexcept {
  switch (message.mode) {
    case ApicDelivery::fixed:
    case ApicDelivery::lowest_priority:
      if (message.vector < 16) {
        ++stats_.illegal_vectors;
        if (g_vector_log.allow()) {
          spdlog::debug("lapic {}: IPI with illegal vector {} not sent ({} suppressed)", index_, message.vector,
                        g_vector_log.take_suppressed());
        }
        set_error_locked(kEsrSendIllegalVector, work);
        return;
      }
      break;
    case ApicDelivery::reserved3:
    case ApicDelivery::extint:
      if (g_icr_log.allow()) {
        spdlog::debug("lapic {}: ICR with reserved delivery mode {} ignored ({} suppressed)", index_,
                      static_cast<unsigned>(message.mode), g_icr_log.take_suppressed());
      }
      return;
    default:
      break;
  }
  ++stats_.ipis_sent;
  work.ipi = message;
}

// ------------------------------------------------------ registers: reads

std::optional<std::uint32_t> Lapic::read_register(unsigned offset, bool x2apic) const noexcept {
  // The timer's registers are the timer's (its lock is taken before mu_).
  switch (offset) {
    case kRegLvtTimer:
      return timer_.read_lvt();
    case kRegTimerInitial:
      return timer_.read_initial_count();
    case kRegTimerCurrent:
      return timer_.read_current_count();
    case kRegTimerDivide:
      return timer_.read_divide_config();
    default:
      break;
  }
  std::lock_guard lock(mu_);
  switch (offset) {
    case kRegId:
      return x2apic ? index_ : index_ << 24;
    case kRegVersion:
      return kVersion;
    case kRegTpr:
      return tpr_;
    case kRegPpr:
      return ppr_locked();
    case kRegLdr:
      return ldr_locked();
    case kRegSvr:
      return svr_;
    case kRegEsr:
      return esr_;
    case kRegIcrLow:
      return icr_low_;
    case kRegLvtThermal:
      return lvt_[kLvtThermal];
    case kRegLvtPerf:
      return lvt_[kLvtPerf];
    case kRegLvtLint0:
      return lvt_[kLvtLint0];
    case kRegLvtLint1:
      return lvt_[kLvtLint1];
    case kRegLvtError:
      return lvt_[kLvtError];
    default:
      break;
  }
  if (offset >= kRegIsr && offset < kRegIsr + kVectorRegisterBytes) return isr_.word((offset - kRegIsr) >> 4);
  if (offset >= kRegTmr && offset < kRegTmr + kVectorRegisterBytes) return tmr_.word((offset - kRegTmr) >> 4);
  if (offset >= kRegIrr && offset < kRegIrr + kVectorRegisterBytes) return irr_.word((offset - kRegIrr) >> 4);
  if (x2apic) return std::nullopt;  // no such MSR, or write-only (EOI, SELF IPI)
  switch (offset) {
    case kRegApr:
      return apr_locked();
    case kRegDfr:
      return dfr_;
    case kRegIcrHigh:
      return icr_high_;
    default:
      return 0;  // EOI, RRD and reserved offsets read 0
  }
}

void Lapic::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  bool usable = offset < kMmioSize && data.size() <= kMmioSize - offset && !data.empty();
  if (usable) {
    std::lock_guard lock(mu_);
    // Disabled, or in x2APIC mode: the window is not decoded.
    usable = hw_enabled_locked() && !x2apic_locked();
    if (!usable) ++stats_.ignored_accesses;
  }
  if (!usable) {
    std::fill(data.begin(), data.end(), std::uint8_t{0xFF});
    if (g_access_log.allow()) {
      spdlog::debug("lapic {}: {}-byte read at {:#x} outside xAPIC mode or the window ({} suppressed)", index_,
                    data.size(), offset, g_access_log.take_suppressed());
    }
    return;
  }
  const std::uint32_t value = read_register(static_cast<unsigned>(offset & ~0xFull), false).value_or(0);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t byte = (offset & 0xF) + i;
    data[i] = byte < 4 ? static_cast<std::uint8_t>(value >> (8 * byte)) : 0;
  }
}

// ----------------------------------------------------- registers: writes

void Lapic::write_timer_lvt(std::uint32_t value) noexcept {
  std::uint32_t kept = value & (kVectorMask | kLvtMasked | kTimerModeMask);
  if (!config_.tsc_deadline) kept &= ~kTimerModeTscDeadline;
  {
    std::lock_guard lock(mu_);
    if (!sw_enabled_locked()) kept |= kLvtMasked;
  }
  timer_.write_lvt(kept);
}

bool Lapic::write_locked(unsigned offset, std::uint64_t value64, bool x2apic, Work& work) noexcept {
  const auto value = static_cast<std::uint32_t>(value64);
  switch (offset) {
    case kRegTpr:
      tpr_ = static_cast<std::uint8_t>(value);
      return true;
    case kRegEoi:
      if (x2apic && value64 != 0) return false;
      eoi_locked(work);
      return true;
    case kRegLdr:
      if (x2apic) return false;  // read-only there
      ldr_ = value & kLdrXapicMask;
      return true;
    case kRegDfr:
      if (x2apic) return false;
      dfr_ = value | kDfrReservedOnes;
      return true;
    case kRegSvr:
      svr_ = value & kSvrWritable;
      if (!sw_enabled_locked()) {
        for (auto& lvt : lvt_) lvt |= kLvtMasked;
      }
      return true;
    case kRegEsr:
      if (x2apic && value64 != 0) return false;
      esr_ = esr_pending_;
      esr_pending_ = 0;
      return true;
    case kRegIcrLow: {
      if (x2apic) {
        if (value64 & kX2apicIcrReserved) return false;
        icr_high_ = static_cast<std::uint32_t>(value64 >> 32);
      }
      icr_low_ = value & kIcrLowWritable;
      // Trigger mode and level matter only to INIT, whose level de-assert
      // form synchronised arbitration IDs on old processors and does
      // nothing now.
      if (delivery_of(icr_low_) == ApicDelivery::init && (icr_low_ & kIcrLevel) && !(icr_low_ & kIcrAssert)) {
        return true;
      }
      ApicMessage message;
      message.vector = static_cast<std::uint8_t>(icr_low_ & kVectorMask);
      message.mode = delivery_of(icr_low_);
      message.logical = (icr_low_ & kIcrLogical) != 0;
      message.shorthand = static_cast<ApicShorthand>((icr_low_ & kIcrShorthandMask) >> kIcrShorthandShift);
      message.destination = x2apic ? icr_high_ : icr_high_ >> 24;
      message.x2apic_destination = x2apic;
      send_locked(message, work);
      return true;
    }
    case kRegIcrHigh:
      if (x2apic) return false;
      icr_high_ = value & kIcrHighXapicMask;
      return true;
    case kRegLvtThermal:
    case kRegLvtPerf:
    case kRegLvtLint0:
    case kRegLvtLint1:
    case kRegLvtError: {
      const unsigned n = (offset - kRegLvtThermal) >> 4;
      std::uint32_t& lvt = lvt_[n];
      lvt = (value & lvt_mask_for(offset)) | (lvt & kLvtRemoteIrr);
      if (!sw_enabled_locked()) lvt |= kLvtMasked;
      // An unmasked level-triggered LINT whose line is asserted delivers now.
      if (n == kLvtLint0 || n == kLvtLint1) {
        const unsigned pin = n - kLvtLint0;
        lint_changed_locked(pin, lint_level_[pin], work);
      }
      return true;
    }
    case kRegSelfIpi: {
      if (!x2apic) break;
      ApicMessage message;
      message.vector = static_cast<std::uint8_t>(value & kVectorMask);
      message.shorthand = ApicShorthand::self;
      send_locked(message, work);
      return true;
    }
    default:
      break;
  }
  // Read-only (ID, version, APR, PPR, RRD, ISR, TMR, IRR) or reserved.
  if (x2apic) return false;
  ++stats_.ignored_accesses;
  if (g_access_log.allow()) {
    spdlog::debug("lapic {}: write of {:#x} to read-only or reserved offset {:#x} ignored ({} suppressed)", index_,
                  value, offset, g_access_log.take_suppressed());
  }
  return true;
}

bool Lapic::write_register(unsigned offset, std::uint64_t value, bool x2apic) noexcept {
  Work work;
  bool ok = true;
  {
    std::lock_guard write(write_mu_);
    const auto value32 = static_cast<std::uint32_t>(value);
    switch (offset) {
      case kRegLvtTimer:
        write_timer_lvt(value32);
        return true;
      case kRegTimerInitial:
        timer_.write_initial_count(value32);
        return true;
      case kRegTimerDivide:
        timer_.write_divide_config(value32);
        return true;
      default:
        break;
    }
    bool now_disabled = false;
    {
      std::lock_guard lock(mu_);
      const bool was_enabled = sw_enabled_locked();
      ok = write_locked(offset, value, x2apic, work);
      now_disabled = was_enabled && !sw_enabled_locked();
    }
    // Software disable masks the timer's LVT too (mu_ released: the timer's
    // lock comes first).
    if (now_disabled) timer_.write_lvt(timer_.read_lvt() | kLvtMasked);
  }
  finish(work);
  return ok;
}

void Lapic::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  bool usable = offset < kMmioSize && data.size() == 4 && (offset & 0xF) == 0;
  {
    std::lock_guard lock(mu_);
    usable = usable && hw_enabled_locked() && !x2apic_locked();
    if (!usable) ++stats_.ignored_accesses;
  }
  if (!usable) {
    if (g_access_log.allow()) {
      spdlog::debug("lapic {}: {}-byte write at {:#x} ignored (registers take aligned 32-bit stores in xAPIC "
                    "mode) ({} suppressed)",
                    index_, data.size(), offset, g_access_log.take_suppressed());
    }
    return;
  }
  (void)write_register(static_cast<unsigned>(offset), load_le(data), false);
}

// ------------------------------------------------------------------- MSRs

bool Lapic::is_apic_msr(std::uint32_t index) noexcept {
  return index == kMsrApicBase || index == kMsrTscDeadline || (index >= kMsrX2apicFirst && index <= kMsrX2apicLast);
}

namespace {

void log_msr_fault(unsigned apic, const char* what, std::uint32_t index, std::uint64_t value) {
  if (g_msr_log.allow()) {
    spdlog::debug("lapic {}: {} of MSR {:#x} (value {:#x}) faults ({} suppressed)", apic, what, index, value,
                  g_msr_log.take_suppressed());
  }
}

}  // namespace

std::optional<std::uint64_t> Lapic::read_msr(std::uint32_t index) noexcept {
  std::optional<std::uint64_t> value;
  if (index == kMsrApicBase) {
    value = apic_base();
  } else if (index == kMsrTscDeadline) {
    if (config_.tsc_deadline) value = timer_.read_tsc_deadline();
  } else if (index >= kMsrX2apicFirst && index <= kMsrX2apicLast && x2apic_mode()) {
    const unsigned offset = (index - kMsrX2apicFirst) << 4;
    if (offset == kRegIcrLow) {
      std::lock_guard lock(mu_);
      value = (std::uint64_t{icr_high_} << 32) | icr_low_;
    } else if (const auto reg = read_register(offset, true)) {
      value = *reg;
    }
  }
  if (!value) {
    {
      std::lock_guard lock(mu_);
      ++stats_.msr_faults;
    }
    log_msr_fault(index_, "read", index, 0);
  }
  return value;
}

bool Lapic::write_msr(std::uint32_t index, std::uint64_t value) noexcept {
  bool ok = false;
  if (index == kMsrApicBase) {
    ok = write_apic_base(value);
  } else if (index == kMsrTscDeadline) {
    if (config_.tsc_deadline) {
      ok = true;
      std::lock_guard write(write_mu_);
      if (enabled()) timer_.write_tsc_deadline(value);
    }
  } else if (index >= kMsrX2apicFirst && index <= kMsrX2apicLast && x2apic_mode()) {
    const unsigned offset = (index - kMsrX2apicFirst) << 4;
    // Bits 63:32 are reserved in every register but the ICR.
    if (offset == kRegIcrLow || (value >> 32) == 0) {
      if (offset == kRegTimerCurrent) {
        ok = false;  // read-only
      } else {
        ok = write_register(offset, value, true);
      }
    }
  }
  if (!ok) {
    {
      std::lock_guard lock(mu_);
      ++stats_.msr_faults;
    }
    log_msr_fault(index_, "write", index, value);
  }
  return ok;
}

bool Lapic::write_apic_base(std::uint64_t value) noexcept {
  const bool enable = (value & kBaseEnable) != 0;
  const bool extd = (value & kBaseExtd) != 0;
  if ((value & ~kBaseWritable) != 0) return false;
  if ((value & kBaseAddressMask) != kMmioBase) {
    if (g_msr_log.allow()) {
      spdlog::info("lapic {}: relocating the APIC to {:#x} is not supported ({} suppressed)", index_,
                   value & kBaseAddressMask, g_msr_log.take_suppressed());
    }
    return false;
  }
  if (extd && (!config_.x2apic || !enable)) return false;  // no x2APIC; or EN=0 EXTD=1, the invalid state

  std::lock_guard write(write_mu_);
  bool disabling = false;
  {
    std::lock_guard lock(mu_);
    const bool was_enabled = hw_enabled_locked();
    const bool was_x2apic = x2apic_locked();
    if (was_x2apic && enable && !extd) return false;  // x2APIC -> xAPIC only through disabled
    if (!was_enabled && extd) return false;           // disabled -> x2APIC only through xAPIC
    disabling = was_enabled && !enable;
    if (!disabling) {
      // Enable, xAPIC -> x2APIC (the logical ID is derived from then on),
      // or only the BSP flag.
      base_ = value;
      return true;
    }
  }
  // Disabling loses every register but the ID: the timer first, so that it
  // cannot raise an interrupt into the cleared state.
  timer_.power_on();
  std::lock_guard lock(mu_);
  base_ = value;
  power_on_registers_locked();
  return true;
}

// ------------------------------------------------------------- injection

std::optional<std::uint8_t> Lapic::next_interrupt() const noexcept {
  std::lock_guard lock(mu_);
  if (!hw_enabled_locked()) return std::nullopt;
  const int vector = irr_.highest();
  if (vector < 0 || priority_class(vector) <= (ppr_locked() & 0xF0)) return std::nullopt;
  return static_cast<std::uint8_t>(vector);
}

bool Lapic::accept(std::uint8_t vector) noexcept {
  std::lock_guard lock(mu_);
  if (!irr_.test(vector)) return false;
  irr_.clear(vector);
  isr_.set(vector);
  SPDLOG_TRACE("lapic {}: vector {:#x} in service", index_, vector);
  return true;
}

bool Lapic::extint_pending() const noexcept {
  std::lock_guard lock(mu_);
  if (extint_latched_) return true;
  if (!hw_enabled_locked()) return lint_level_[0];
  const std::uint32_t lvt = lvt_[kLvtLint0];
  return lint_level_[0] && !(lvt & kLvtMasked) && delivery_of(lvt) == ApicDelivery::extint;
}

void Lapic::extint_accepted() noexcept {
  std::lock_guard lock(mu_);
  extint_latched_ = false;
}

std::uint64_t Lapic::cr8() const noexcept {
  std::lock_guard lock(mu_);
  return tpr_ >> 4;
}

void Lapic::set_cr8(std::uint64_t cr8) noexcept {
  std::lock_guard lock(mu_);
  const auto cls = static_cast<std::uint8_t>((cr8 & 0xF) << 4);
  if ((tpr_ & 0xF0) != cls) tpr_ = cls;
}

Lapic::Events Lapic::take_events() noexcept {
  std::lock_guard lock(mu_);
  return std::exchange(events_, Events{});
}

bool Lapic::events_pending() const noexcept {
  std::lock_guard lock(mu_);
  return events_.init || events_.sipi || events_.nmi || events_.smi;
}

bool Lapic::pending_wakeup() const noexcept {
  return events_pending() || extint_pending() || next_interrupt().has_value();
}

// ------------------------------------------------------- routing queries

bool Lapic::matches(std::uint32_t destination, bool logical, bool x2apic_destination) const noexcept {
  std::lock_guard lock(mu_);
  if (!hw_enabled_locked()) return false;
  const std::uint32_t broadcast = x2apic_destination ? 0xFFFF'FFFFu : 0xFFu;
  if (destination == broadcast) return true;
  if (!logical) return destination == index_;
  if (x2apic_locked()) {
    const std::uint32_t ldr = ldr_locked();
    return (destination >> 16) == (ldr >> 16) && (destination & ldr & 0xFFFF) != 0;
  }
  if (destination > 0xFF) return false;
  const std::uint32_t logical_id = ldr_ >> 24;
  switch (dfr_ >> 28) {
    case kDfrFlat:
      return (destination & logical_id) != 0;
    case kDfrCluster:
      return ((destination >> 4) == (logical_id >> 4) || (destination >> 4) == 0xF) &&
             (destination & logical_id & 0xF) != 0;
    default:
      return false;  // reserved models name nobody
  }
}

bool Lapic::software_enabled() const noexcept {
  std::lock_guard lock(mu_);
  return hw_enabled_locked() && sw_enabled_locked();
}

std::uint8_t Lapic::arbitration_priority() const noexcept {
  std::lock_guard lock(mu_);
  return apr_locked();
}

std::uint64_t Lapic::apic_base() const noexcept {
  std::lock_guard lock(mu_);
  return base_;
}

bool Lapic::enabled() const noexcept {
  std::lock_guard lock(mu_);
  return hw_enabled_locked();
}

bool Lapic::x2apic_mode() const noexcept {
  std::lock_guard lock(mu_);
  return x2apic_locked();
}

bool Lapic::is_bsp() const noexcept {
  std::lock_guard lock(mu_);
  return (base_ & kBaseBsp) != 0;
}

Lapic::Stats Lapic::stats() const noexcept {
  std::lock_guard lock(mu_);
  return stats_;
}

std::string Lapic::describe() const {
  const auto vectors = [](const ApicVectorSet& set) {
    std::string out;
    for (unsigned v = 0; v < 256; ++v) {
      if (set.test(static_cast<std::uint8_t>(v))) out += fmt::format("{}{:#x}", out.empty() ? "" : ",", v);
    }
    return out.empty() ? std::string("-") : out;
  };
  // The timer's lock comes before mu_ (see the header).
  const timers::Nanos deadline = timer_.deadline();
  const LapicTimer::Stats timer = timer_.stats();
  std::lock_guard lock(mu_);
  return fmt::format("lapic {}: tpr {:#x} ppr {:#x} svr {:#x} in service {} requested {}; {} interrupts ({} coalesced), "
                     "{} EOIs, {} IPIs sent, {} MSR faults; timer {} ({} firings)",
                     index_, tpr_, ppr_locked(), svr_, vectors(isr_), vectors(irr_), stats_.interrupts,
                     stats_.coalesced, stats_.eois, stats_.ipis_sent, stats_.msr_faults,
                     deadline != 0 ? fmt::format("due at {} ns", deadline) : std::string("not armed"),
                     timer.handler_runs);
}

// -------------------------------------------------------------- lifecycle

void Lapic::setup_virtual_wire() noexcept {
  (void)write_register(kRegSvr, kSvrEnable | 0xFF, false);
  (void)write_register(kRegLvtLint0, static_cast<std::uint32_t>(ApicDelivery::extint) << kDeliveryShift, false);
  (void)write_register(kRegLvtLint1, static_cast<std::uint32_t>(ApicDelivery::nmi) << kDeliveryShift, false);
}

void Lapic::drain_timers() noexcept { timer_.drain_timers(); }

void Lapic::reset(timers::EventLoop& loop) noexcept {
  timer_.reset(loop);  // drains first: no device lock held here
  std::lock_guard write(write_mu_);
  std::lock_guard lock(mu_);
  base_ = kMmioBase | kBaseEnable | (index_ == 0 ? kBaseBsp : 0);
  power_on_registers_locked();
  events_ = Events{};
}

void Lapic::pause() noexcept { timer_.pause(); }

void Lapic::resume() noexcept { timer_.resume(); }

void Lapic::bind_timers(timers::EventLoop& loop) noexcept { timer_.bind_timers(loop); }

}  // namespace vmm::devices
