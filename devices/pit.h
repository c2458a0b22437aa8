// Intel 8254 programmable interval timer (the PC's PIT) at ports 0x40-0x43,
// plus the PC's NMI status and control port 0x61, whose bits 0 and 5 are
// channel 2's GATE input and OUT output.
//
// Wiring (what the VMM does):
//   Pit pit(timers, timers.loop(0), isa_irqs.line(0));
//   bus.insert(Pit::kBase, Pit::kSize, pit, "pit");
//   bus.insert(Pit::kPort61, Pit::kPort61Size, pit.port61(), "nmi status/control");
//   hpet legacy-replacement callback -> pit.set_output_enabled(!legacy)
// A BusDevice maps one range, and 0x61 is not next to 0x40-0x43 (0x60 and
// 0x64 belong to the i8042), so port 0x61 is a second one-port BusDevice owned
// by the Pit.
//
// ---- Time model ------------------------------------------------------------
// The input clock runs at 1.193182 MHz from `epoch()` (construction or
// reset): pulse k happens at epoch + ceil(k * 1e9 / 1193182) ns. Nothing
// counts down in the background: every count, OUT level and status bit is
// derived, when the guest looks, from the pulses elapsed since the count was
// loaded. Register writes and gate changes land between two pulses (after the
// last one that has happened), exactly as on the chip.
//
// ---- Behaviour (8254 datasheet) -------------------------------------------
// * A count written by the CPU reaches the counting element on the next
//   pulse (modes 0, 4, and the first count of modes 2/3), at the next gate
//   trigger (modes 1, 5), or at the end of the current period (mode 2) or
//   half-cycle (mode 3) when those are already counting. NULL COUNT is set
//   from the write until that transfer.
// * Mode 0: OUT low from the control word (and from the first byte of a
//   two-byte count) until terminal count, N pulses after the load; the
//   counter then keeps wrapping with OUT high. Mode 1: a GATE rising edge
//   loads N, OUT is low for N pulses. Mode 2: OUT is low for the one pulse
//   at which the count is 1, then N is reloaded. Mode 3: OUT high for
//   ceil(N/2) and low for floor(N/2) pulses; the element is loaded with N
//   (N-1 for odd N) and steps by two, so odd counts read down to 0 in the
//   high half. Mode 4: OUT low for the one pulse at terminal count. Mode 5:
//   as mode 4, triggered by a GATE rising edge. Modes 6 and 7 are modes 2
//   and 3 (the status byte still shows the bits as written).
// * GATE low pauses modes 0 and 4, forces OUT high and stops modes 2 and 3
//   (a rising edge reloads them on the next pulse), and only its rising edge
//   matters in modes 1 and 5. Channels 0 and 1 have GATE tied high; channel
//   2's GATE is port 0x61 bit 0.
// * Count 0 means 65536 (10000 in BCD). Counts 1 in modes 2 and 3 are
//   illegal on the chip; here OUT simply stays high (no interrupts). Where
//   the datasheet leaves the counting element undefined (after a control
//   word, before a load) it keeps its last value; a mode 0 first byte that
//   arrives before the previous count was loaded cancels that load.
// * Counter latch and read-back (count and/or status, any set of channels);
//   a latch is held until read or until the channel is reprogrammed; status
//   is returned before a latched count. LSB/MSB/word access with separate
//   read and write flip-flops. Reading port 0x43 returns 0xFF (the chip does
//   not drive the bus). Accesses wider than a byte act as consecutive byte
//   accesses (an `in ax, 0x40` reads 0x40 then 0x41).
// * Port 0x61: bit 0 channel-2 GATE, bit 1 speaker data enable (no sound is
//   produced), bits 2-3 NMI enables (stored, no NMIs are generated), bit 4 the
//   DRAM refresh toggle (flips every 18 input pulses, 15.09 us, as channel 1
//   programmed by a PC BIOS would make it), bit 5 channel 2's OUT, bits 6-7
//   (NMI sources) read 0.
// * Power-on: every channel as if just programmed for mode 3, LSB then MSB,
//   binary, with no count yet (idle, OUT high, NULL COUNT set); port 0x61 = 0,
//   so channel 2's GATE is low.
//
// ---- IRQ 0 ---------------------------------------------------------------
// Channel 0's OUT drives ISA IRQ 0, which both interrupt controllers take as
// edge-triggered, so the IrqLine is pulsed (raised and lowered) at each
// rising edge of OUT0: at terminal count in mode 0, at each reload in mode 2,
// at each period start in mode 3, one pulse after terminal count in mode 4.
// A rising edge caused by a register write (e.g. a control word taking OUT0
// from low to high) is pulsed at once, as the wire would carry it.
// Edges are scheduled on a callout at absolute times computed from the load
// pulse, so periodic interrupts never drift. If the handler runs late, the
// missed edges are skipped and the next deadline is the first period
// boundary after now, so the phase is kept. A periodic mode whose period is
// shorter than kMinIrqInterval (a count below 120) is thinned to at most one
// interrupt per kMinIrqInterval, still on period boundaries, so a guest
// cannot make the timer loop spin; one-shot edges are never thinned (each
// needs a guest write). One-shot modes clear their deadline after firing.
// set_output_enabled(false) (HPET legacy replacement) disconnects OUT0 from
// the line: the channel keeps counting, no edge is delivered or scheduled.
//
// ---- Locking ---------------------------------------------------------------
// One mutex guards all state. The IrqLine is pulsed with it held (so the line
// sees edges in order); it must never call back into the Pit (an ISA router,
// a PIC, an IOAPIC do not). Lock order: caller's lock (e.g. the HPET's, for
// set_output_enabled) -> Pit -> interrupt controllers. The channel-0 callout
// follows callout.h: reset/stop under the lock, drain without it. The
// TimerDevice calls come from the one thread that runs the VM's lifecycle,
// one at a time (drain_timers and bind_timers take no lock and wait for a
// running handler); register accesses, set_output_enabled and timer
// firings may race with each other and with pause/resume.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>

#include "devices/bus.h"
#include "devices/interrupts.h"
#include "devices/timer_device.h"
#include "timers/callout.h"
#include "timers/clock.h"
#include "timers/cyclic.h"
#include "timers/event_loop.h"

namespace vmm::devices {

class Pit final : public BusDevice, public TimerDevice {
 public:
  static constexpr std::uint64_t kBase = 0x40;
  static constexpr std::uint64_t kSize = 4;  // channel 0, 1, 2 data; control word at 3
  static constexpr std::uint64_t kPort61 = 0x61;
  static constexpr std::uint64_t kPort61Size = 1;
  static constexpr unsigned kChannels = 3;
  static constexpr std::int64_t kInputHz = 1'193'182;
  static constexpr timers::Nanos kMinIrqInterval = 100 * timers::kMicrosecond;

  // Port 0x61 bits.
  static constexpr std::uint8_t kGate2 = 0x01, kSpeakerData = 0x02, kParityCheckDisable = 0x04,
                                kChannelCheckDisable = 0x08, kRefreshToggle = 0x10, kOut2 = 0x20;
  static constexpr std::int64_t kRefreshPulses = 18;

  // `timers` and `irq0` are not owned and must outlive the Pit. Channel 0's
  // callout is created on `loop`. Throws vmm::Error when the callout cannot
  // be created (a set-up failure).
  Pit(timers::CyclicSystem& timers, timers::EventLoop& loop, IrqLine& irq0);
  // Drains the channel-0 callout.
  ~Pit() override;
  Pit(const Pit&) = delete;
  Pit& operator=(const Pit&) = delete;

  // Ports 0x40-0x43 (offsets 0-3).
  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

  // Port 0x61 (offset 0 of this device).
  BusDevice& port61() noexcept { return port61_; }

  // Connects (true, the power-on state) or disconnects OUT0 from IRQ 0.
  // Thread-safe; may be called with the caller's own device lock held.
  void set_output_enabled(bool enabled) noexcept;
  bool output_enabled() const noexcept;

  // TimerDevice (see timer_device.h). reset() also reconnects OUT0.
  void drain_timers() noexcept override;
  void reset(timers::EventLoop& loop) noexcept override;
  void pause() noexcept override;
  void resume() noexcept override;
  void bind_timers(timers::EventLoop& loop) noexcept override;

  // Introspection for tests and tools.
  // When the next IRQ 0 edge is due (absolute), or 0 when none is scheduled.
  timers::Nanos irq_deadline() const noexcept;
  // The time of input pulse 0.
  timers::Nanos epoch() const noexcept;
  // Channel's OUT level now; false for a channel that does not exist.
  bool output(unsigned channel) const noexcept;
  struct Stats {
    std::uint64_t handler_runs = 0;    // channel-0 callout firings the handler claimed
    std::uint64_t refused_rearms = 0;  // re-arms refused because the callout was drained
  };
  Stats stats() const noexcept;

 private:
  using Pulse = std::int64_t;
  static constexpr Pulse kNoPulse = INT64_MAX;

  // One counter: control word, count register, latches and the counting
  // element, derived from the pulse index `now` given to every call.
  class Counter {
   public:
    void power_on(bool gate) noexcept;
    void program(Pulse now, std::uint8_t control) noexcept;  // control word with RW != 0
    void latch_count(Pulse now) noexcept;
    void latch_status(Pulse now) noexcept;
    void write(Pulse now, std::uint8_t value) noexcept;
    std::uint8_t read(Pulse now) noexcept;
    void set_gate(Pulse now, bool level) noexcept;

    bool out(Pulse t) const noexcept;
    // The counting element as a binary number in [0, modulus).
    std::uint32_t element(Pulse t) const noexcept;
    bool null_count(Pulse t) const noexcept { return t < transfer_; }
    // The first pulse >= `from` at which OUT rises; `from` must be later
    // than the pulse of the last call that changed the counter.
    std::optional<Pulse> next_rise(Pulse from) const noexcept;
    // A periodic mode (2, 3) counting with a period, now or after a pending
    // new count, shorter than `interval`.
    bool periodic_faster_than(timers::Nanos interval) const noexcept;

   private:
    // What the counting element does from pulse `load` on: it holds `count`
    // (1..modulus) there and then follows the mode. `counted` pulses were
    // counted before `resume`, and every pulse after `resume` counts, unless
    // `resume` is kNoPulse (halted by GATE). `strobe` remembers the terminal
    // count pulse of modes 4/5 once a pause has hidden it from the formula.
    struct Run {
      bool active = false;
      Pulse load = 0;
      std::uint32_t count = 1;
      bool starts_low = false;  // mode 3 only: begins with the low half
      std::int64_t counted = 0;
      Pulse resume = kNoPulse;
      Pulse strobe = kNoPulse;
    };
    // A count written while modes 2/3 count: it takes over at `at`.
    struct Switch {
      Pulse at;
      std::uint32_t count;
      bool starts_low;
    };

    std::uint32_t modulus() const noexcept { return bcd_ ? 10000u : 65536u; }
    std::uint32_t effective_count() const noexcept;
    std::uint16_t display(std::uint32_t element) const noexcept;
    void settle(Pulse now) noexcept;
    void freeze(Pulse now) noexcept;
    void count_complete(Pulse now) noexcept;
    Run run_at(Pulse t) const noexcept;
    Run switched_run() const noexcept;
    Switch next_boundary(Pulse now, std::uint32_t count) const noexcept;
    std::int64_t elapsed(const Run& run, Pulse t) const noexcept;
    Pulse terminal_pulse(const Run& run) const noexcept;
    bool run_out(const Run& run, Pulse t) const noexcept;
    std::uint32_t run_element(const Run& run, Pulse t) const noexcept;
    std::optional<Pulse> run_rise(const Run& run, Pulse from) const noexcept;

    // Programming.
    std::uint8_t control_ = 0;  // bits 5-0 of the last control word, for status
    unsigned mode_ = 0;         // 0-5
    unsigned access_ = 3;       // 1 LSB, 2 MSB, 3 LSB then MSB
    bool bcd_ = false;
    bool gate_ = true;
    // Write side.
    bool write_msb_next_ = false;
    std::uint8_t written_lsb_ = 0;
    std::uint16_t count_register_ = 0;
    bool has_count_ = false;  // a complete count written since the control word
    // Read side.
    bool read_msb_next_ = false;
    std::array<std::uint8_t, 2> latched_{};
    unsigned latched_size_ = 0;
    unsigned latched_next_ = 0;
    bool status_latched_ = false;
    std::uint8_t status_ = 0;
    // Counting element.
    Run run_;
    std::optional<Switch> switch_;
    std::uint32_t frozen_element_ = 0;  // before run_.load, or with no run
    bool frozen_out_ = true;
    Pulse transfer_ = kNoPulse;  // NULL COUNT until this pulse
  };

  class Port61 final : public BusDevice {
   public:
    explicit Port61(Pit& owner) noexcept : owner_(owner) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

   private:
    Pit& owner_;
  };

  static void on_timer(void* arg);
  void timer_fired() noexcept;

  Pulse pulse_at(timers::Nanos t) const noexcept;
  timers::Nanos time_of(Pulse pulse) const noexcept;
  Pulse first_pulse_at_or_after(timers::Nanos t) const noexcept;
  Pulse now_pulse() const noexcept { return pulse_at(clock_.now()); }

  void power_on_locked() noexcept;
  void write_port_locked(Pulse now, std::uint64_t port, std::uint8_t value) noexcept;
  void write_control_locked(Pulse now, std::uint8_t value) noexcept;
  template <typename Change>
  void change_channel0_locked(Pulse now, Change&& change) noexcept;
  void deliver_due_edge_locked(Pulse now) noexcept;
  void schedule_irq_locked(Pulse now) noexcept;
  std::uint8_t read_port61() noexcept;
  void write_port61(std::uint8_t value) noexcept;

  timers::CyclicSystem& timers_;
  const timers::Clock& clock_;
  IrqLine& irq0_;
  Port61 port61_{*this};

  mutable std::mutex mu_;
  // Guarded by mu_.
  timers::Nanos epoch_ = 0;
  std::array<Counter, kChannels> counters_;
  std::uint8_t port61_latches_ = 0;  // bits 0-3 as written
  bool output_enabled_ = true;
  bool paused_ = false;
  Pulse irq_edge_ = 0;                // the OUT0 rising edge irq_deadline_ is for
  timers::Nanos irq_deadline_ = 0;    // 0: none
  Stats stats_;                       // kept across reset()
  // Last: drained first when the Pit goes away (see ~Pit).
  timers::Callout callout_;
};

}  // namespace vmm::devices
