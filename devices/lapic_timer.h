// The local APIC timer (Intel SDM vol. 3, 10.5.4): one-shot, periodic and
// TSC-deadline modes, on a callout.
//
// With the split irqchip the LAPIC lives in the kernel, so this device is not
// on the run-time path today; it is the timer of the fully user-space LAPIC
// mode on the roadmap, and the device illumos 12738 was found in: a guest
// writing the initial-count register while the periodic timer fires. Its
// handler follows the callout idiom, so that race is harmless here.
//
// The register interface is the timer's slice of the APIC page; the caller
// (devices/lapic) decodes offsets 0x320/0x380/0x390/0x3E0 and the
// IA32_TSC_DEADLINE MSR and calls the matching method.
//
// Rate: a periodic timer whose period is shorter than kMinPeriod (a count
// of 1 at divide-by-1 is one nanosecond) fires at most once per kMinPeriod,
// on its own period grid, so no guest value makes a loop thread spin. The
// guest sees the interrupts coalesced (as the IRR would coalesce them
// anyway) and the current count still runs down period by period.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>

#include "devices/rate_limit.h"
#include "devices/timer_device.h"
#include "timers/callout.h"

namespace vmm::devices {

class LapicTimer final : public TimerDevice {
 public:
  struct Config {
    // The APIC timer counts at bus_hz / divisor. 1 GHz keeps the arithmetic
    // exact in nanoseconds (KVM's in-kernel LAPIC uses the same rate).
    std::uint64_t bus_hz = 1'000'000'000;
    // TSC rate and the TSC value at clock time 0, for TSC-deadline mode.
    std::uint64_t tsc_hz = 1'000'000'000;
    std::int64_t tsc_at_zero = 0;
  };
  // Raises the timer interrupt (the LVT vector) at the LAPIC. Called with the
  // device lock held; must not call back into this device.
  using Deliver = std::function<void(std::uint8_t vector)>;

  LapicTimer(timers::CyclicSystem& system, timers::EventLoop& loop, Deliver deliver, Config config);
  LapicTimer(timers::CyclicSystem& system, timers::EventLoop& loop, Deliver deliver)
      : LapicTimer(system, loop, std::move(deliver), Config{}) {}
  ~LapicTimer() override;

  // LVT timer register (APIC offset 0x320).
  void write_lvt(std::uint32_t value) noexcept;
  std::uint32_t read_lvt() const noexcept;
  // Initial count (0x380): writing starts a countdown; 0 stops the timer.
  void write_initial_count(std::uint32_t value) noexcept;
  std::uint32_t read_initial_count() const noexcept;
  // Current count (0x390), derived from the deadline and the clock.
  std::uint32_t read_current_count() const noexcept;
  // Divide configuration (0x3E0): bits 0, 1 and 3.
  void write_divide_config(std::uint32_t value) noexcept;
  std::uint32_t read_divide_config() const noexcept;
  // IA32_TSC_DEADLINE (MSR 0x6E0); honoured in TSC-deadline mode only.
  void write_tsc_deadline(std::uint64_t tsc) noexcept;
  std::uint64_t read_tsc_deadline() const noexcept;

  // Power-on register state with the callout stopped, not drained: what an
  // INIT or a disable through IA32_APIC_BASE does to a running APIC. Any
  // thread; the timer stays usable.
  void power_on() noexcept;

  void drain_timers() noexcept override;
  void reset(timers::EventLoop& loop) noexcept override;
  void pause() noexcept override;
  void resume() noexcept override;
  void bind_timers(timers::EventLoop& loop) noexcept override;

  // For tests and statistics.
  std::uint64_t interrupts_delivered() const noexcept;
  timers::Nanos deadline() const noexcept;
  struct Stats {
    std::uint64_t handler_runs = 0;    // callout firings the handler claimed
    std::uint64_t refused_rearms = 0;  // re-arms refused because the callout was drained
  };
  Stats stats() const noexcept;

  static constexpr std::uint32_t kLvtMasked = 1u << 16;
  // Shortest interval between two firings of a periodic timer (as the HPET
  // and PIT: a period the loop can keep).
  static constexpr timers::Nanos kMinPeriod = 100 * timers::kMicrosecond;
  static constexpr std::uint32_t kModeShift = 17;
  enum class Mode : std::uint8_t { one_shot = 0, periodic = 1, tsc_deadline = 2 };

 private:
  static void on_timer(void* arg);
  Mode mode() const { return static_cast<Mode>((lvt_ >> kModeShift) & 3); }
  timers::Nanos tick_ns() const;  // length of one count at the current divisor
  timers::Nanos period() const;   // periodic mode's period at the current divisor; else 0
  timers::Nanos firing_step(timers::Nanos period) const;  // period, or whole periods >= kMinPeriod
  timers::Nanos tsc_to_time(std::uint64_t tsc) const;
  void arm(timers::Nanos deadline);  // lock held
  void disarm();                     // lock held
  void power_on_locked();            // registers only; lock held

  timers::CyclicSystem& system_;
  const timers::Clock& clock_;
  Deliver deliver_;
  const Config config_;

  mutable std::mutex mu_;
  timers::Callout callout_;
  std::uint32_t lvt_ = kLvtMasked;
  std::uint32_t initial_count_ = 0;
  std::uint32_t divide_config_ = 0;
  std::uint64_t tsc_deadline_ = 0;
  timers::Nanos deadline_ = 0;  // 0: not armed (a one-shot that fired is 0 too)
  bool paused_ = false;
  std::uint64_t delivered_ = 0;
  Stats stats_;  // kept across reset()
  RateLimit log_limit_;
};

}  // namespace vmm::devices
