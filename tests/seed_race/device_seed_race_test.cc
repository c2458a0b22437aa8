// The two seed races against the real device code -- the LAPIC timer (where
// illumos 12738 was found), alone and inside the user-space local APIC
// driven through its registers, the PIT and HPET (where 12476 was), and the
// RTC -- each at the interleaving where only the fix it names stands between
// the guest and the bug, and each checked on what the fix guarantees, not
// on an outcome a device's second line of defence would produce anyway:
//  * seed 000: the stale firing is not claimed (the device's handler_runs
//    does not move), and the new deadline fires once;
//  * seed 002: every drain_timers() returns only after the handler has, the
//    handler's re-arm is refused, the removed cyclic does not go back into
//    its loop's heap, and nothing of the device runs again.
// tools/mutants checks that each fails without its fix.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include "devices/apic_bus.h"
#include "devices/bus.h"
#include "devices/hpet.h"
#include "devices/lapic.h"
#include "devices/lapic_timer.h"
#include "devices/pit.h"
#include "devices/rtc.h"
#include "tests/devices/fakes.h"
#include "tests/seed_race/seed_scripts.h"
#include "timers/cyclic.h"
#include "timers/event_loop.h"

namespace vmm {
namespace {

using testing::FakeIrqLine;
using timers::kMillisecond;
using timers::kSecond;
using timers::Nanos;

// Each device under test: its periodic interrupt started, the guest write
// that re-arms it for a later deadline while the old one is due (seed 000),
// and what it counts. One callout of each is armed, on loop 0.

struct Lapic {
  static constexpr seed::DrainWindow kHandlerWindow = seed::DrainWindow::cyclic_removed;
  Lapic(timers::ManualClock&, timers::CyclicSystem& system)
      : timer(system, system.loop(0), [this](std::uint8_t) { irqs.fetch_add(1); }) {}
  void start() {
    timer.write_lvt(0x30 | (1u << devices::LapicTimer::kModeShift));  // periodic
    timer.write_divide_config(0xb);                                   // 1 ns per count
    timer.write_initial_count(1'000'000);
  }
  void guest_rearm() { timer.write_initial_count(1'000'000); }  // vlapic_icrtmr_write_handler
  std::uint64_t handler_runs() { return timer.stats().handler_runs; }
  std::uint64_t refused_rearms() { return timer.stats().refused_rearms; }
  std::uint64_t interrupts() { return irqs.load(); }
  devices::TimerDevice& device() { return timer; }

  std::atomic<std::uint64_t> irqs{0};
  devices::LapicTimer timer;
};

// The whole user-space local APIC (what --irqchip=userspace runs), driven
// as a guest drives it: MMIO writes to its timer registers, interrupts into
// its IRR. `Periodic` picks the LVT timer mode. The VM has two vCPUs; the
// one under test is vCPU 0, which a VM reset drains first (the drain-window
// scripts stop the first drain they meet).
template <bool Periodic>
struct VlapicOf {
  static constexpr seed::DrainWindow kHandlerWindow = seed::DrainWindow::cyclic_removed;
  static constexpr unsigned kVcpu = 0;
  VlapicOf(timers::ManualClock&, timers::CyclicSystem& system)
      : bus(system, system.loop(0), devices::ApicBus::Config{.cpus = 2}, {}, {}) {}
  void wr(unsigned offset, std::uint32_t value) {
    std::array<std::uint8_t, 4> bytes{};
    devices::store_le(bytes, value);
    apic().write(offset, bytes);
  }
  void start() {
    using L = devices::Lapic;
    wr(L::kRegSvr, L::kSvrEnable | 0xFF);
    wr(L::kRegTimerDivide, 0xB);  // 1 ns per count
    wr(L::kRegLvtTimer, 0x30 | (Periodic ? 1u << devices::LapicTimer::kModeShift : 0));
    wr(L::kRegTimerInitial, 1'000'000);
  }
  // vlapic_icrtmr_write_handler: a one-shot is pushed out to a later deadline.
  void guest_rearm() { wr(devices::Lapic::kRegTimerInitial, Periodic ? 1'000'000 : 2'000'000); }
  devices::Lapic& apic() { return bus.lapic(kVcpu); }
  std::uint64_t handler_runs() { return apic().timer_stats().handler_runs; }
  std::uint64_t refused_rearms() { return apic().timer_stats().refused_rearms; }
  std::uint64_t interrupts() { return apic().stats().interrupts; }
  devices::TimerDevice& device() { return bus; }

  devices::ApicBus bus;
};
using Vlapic = VlapicOf<true>;
using VlapicOneShot = VlapicOf<false>;

struct Pit {
  static constexpr seed::DrainWindow kHandlerWindow = seed::DrainWindow::cyclic_removed;
  Pit(timers::ManualClock&, timers::CyclicSystem& system) : pit(system, system.loop(0), irq0) {}
  void out(std::uint64_t port, std::uint8_t value) { pit.write(port, std::span<const std::uint8_t>(&value, 1)); }
  void write_count(std::uint16_t count) {
    out(0, static_cast<std::uint8_t>(count));
    out(0, static_cast<std::uint8_t>(count >> 8));
  }
  void start() {
    out(3, 0x34);  // channel 0, lobyte/hibyte, mode 2 (rate generator)
    write_count(1193);
  }
  void guest_rearm() { write_count(2000); }
  std::uint64_t handler_runs() { return pit.stats().handler_runs; }
  std::uint64_t refused_rearms() { return pit.stats().refused_rearms; }
  std::uint64_t interrupts() { return irq0.rising_edges(); }
  devices::TimerDevice& device() { return pit; }

  FakeIrqLine irq0;
  devices::Pit pit;
};

struct Hpet {
  static constexpr seed::DrainWindow kHandlerWindow = seed::DrainWindow::cyclic_removed;
  static constexpr unsigned kPin = 20;
  Hpet(timers::ManualClock&, timers::CyclicSystem& system)
      : hpet(system, system.loop(0), [this](unsigned pin) -> devices::IrqLine& { return pins[pin]; }, isa0, isa8,
             msi) {}
  void wr(std::uint64_t offset, std::uint64_t value) {
    std::array<std::uint8_t, 8> bytes{};
    devices::store_le(bytes, value);
    hpet.write(offset, bytes);
  }
  void start() {
    using H = devices::Hpet;
    wr(H::kRegConfig, H::kConfigEnable);
    wr(H::timer_config_reg(0), H::kTimerIntEnable | H::kTimerPeriodic | H::kTimerValSet |
                                   (std::uint64_t{kPin} << H::kTimerRouteShift));
    wr(H::timer_comparator_reg(0), 100'000);  // first match at 1 ms (10 ns ticks)...
    wr(H::timer_comparator_reg(0), 100'000);  // ...and every 1 ms after
  }
  // Linux's periodic set-up writes the comparator: here a new period.
  void guest_rearm() { wr(devices::Hpet::timer_comparator_reg(0), 200'000); }
  std::uint64_t handler_runs() { return hpet.stats().handler_runs[0]; }
  std::uint64_t refused_rearms() { return hpet.stats().refused_rearms; }
  std::uint64_t interrupts() { return pins[kPin].rising_edges(); }
  devices::TimerDevice& device() { return hpet; }

  std::array<FakeIrqLine, devices::Hpet::kIoApicPins> pins;
  FakeIrqLine isa0, isa8;
  testing::FakeMsiSink msi;
  devices::Hpet hpet;
};

struct Rtc {
  // Its handler never re-arms the callout that fired (the interrupt flag
  // stays set until the guest reads register C): for seed 002 it is parked
  // running, before the re-arm of its other callouts.
  static constexpr seed::DrainWindow kHandlerWindow = seed::DrainWindow::handler_running;
  Rtc(timers::ManualClock& clock, timers::CyclicSystem& system)
      : rtc(system, system.loop(0), irq8, [&clock] { return 1'700'000'000 * kSecond + clock.now(); }) {}
  void set(std::uint8_t index, std::uint8_t value) {
    rtc.write(0, std::span<const std::uint8_t>(&index, 1));
    rtc.write(1, std::span<const std::uint8_t>(&value, 1));
  }
  std::uint8_t get(std::uint8_t index) {
    rtc.write(0, std::span<const std::uint8_t>(&index, 1));
    std::uint8_t value = 0;
    rtc.read(1, std::span<std::uint8_t>(&value, 1));
    return value;
  }
  void start() {
    using R = devices::Rtc;
    set(R::kRegA, R::kRegADv32k | 6);  // 1024 Hz periodic interrupt
    set(R::kRegB, R::kRegB24h | R::kRegBPie);
  }
  // Linux's RTC interrupt handler reads register C, which re-arms the
  // periodic interrupt for the next edge.
  void guest_rearm() { (void)get(devices::Rtc::kRegC); }
  std::uint64_t handler_runs() { return rtc.stats().handler_runs; }
  std::uint64_t refused_rearms() { return rtc.stats().refused_rearms; }
  std::uint64_t interrupts() { return irq8.rising_edges(); }
  devices::TimerDevice& device() { return rtc; }

  FakeIrqLine irq8;
  devices::Rtc rtc;
};

// A device on a ManualClock and a caller-driven loop of its own.
template <typename Device>
struct Bench {
  timers::ManualClock clock{kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  timers::EventLoop& loop = system.loop(0);
  Device dev{clock, system};  // destroyed (drained) before the system

  // Starts the device's periodic interrupt and makes its first deadline due.
  Nanos start_and_make_due() {
    dev.start();
    const Nanos due = loop.next_deadline();
    EXPECT_NE(due, timers::kNever) << "the device armed nothing";
    clock.set(due);
    return due;
  }
  // After a drain: nothing of the device is left on the loop, and nothing runs.
  void expect_nothing_left() {
    EXPECT_EQ(loop.heap_size(), 0u) << "a removed cyclic went back into its loop's heap";
    EXPECT_EQ(system.live_count(), 0u);
    const auto runs = dev.handler_runs();
    const auto irqs = dev.interrupts();
    clock.advance(kSecond);
    EXPECT_EQ(loop.run_due(), 0u);
    EXPECT_EQ(dev.handler_runs(), runs) << "a drained device's handler ran";
    EXPECT_EQ(dev.interrupts(), irqs) << "a drained device interrupted";
  }
};

// Seed 000: the guest's re-arm has stored its callout's new target and not
// yet reprogrammed the cyclic when the old deadline fires; the handler
// queues for the device lock the write holds.
template <typename Device>
void stale_firing_during_a_guest_rearm_is_not_claimed() {
  Bench<Device> b;
  const Nanos old_deadline = b.start_and_make_due();
  const auto runs = b.dev.handler_runs();
  ASSERT_TRUE(seed::write_racing_the_stale_firing(b.loop, [&] { b.dev.guest_rearm(); }));
  EXPECT_EQ(b.dev.handler_runs(), runs) << "the stale firing was taken for the new deadline";
  const Nanos new_deadline = b.loop.next_deadline();
  ASSERT_NE(new_deadline, timers::kNever) << "the re-arm that raced the firing was lost";
  EXPECT_GT(new_deadline, old_deadline);
  const auto irqs = b.dev.interrupts();
  b.clock.set(new_deadline);
  EXPECT_EQ(b.loop.run_due(), 1u);
  EXPECT_EQ(b.dev.handler_runs(), runs + 1) << "one firing claimed, at the new deadline";
  EXPECT_EQ(b.dev.interrupts(), irqs + 1);
}

TEST(Seed000StaleFiringDuringAGuestRearm, Lapic) { stale_firing_during_a_guest_rearm_is_not_claimed<Lapic>(); }
TEST(Seed000StaleFiringDuringAGuestRearm, Vlapic) { stale_firing_during_a_guest_rearm_is_not_claimed<Vlapic>(); }
TEST(Seed000StaleFiringDuringAGuestRearm, VlapicOneShot) {
  stale_firing_during_a_guest_rearm_is_not_claimed<VlapicOneShot>();
}
TEST(Seed000StaleFiringDuringAGuestRearm, Pit) { stale_firing_during_a_guest_rearm_is_not_claimed<Pit>(); }
TEST(Seed000StaleFiringDuringAGuestRearm, Hpet) { stale_firing_during_a_guest_rearm_is_not_claimed<Hpet>(); }
TEST(Seed000StaleFiringDuringAGuestRearm, Rtc) { stale_firing_during_a_guest_rearm_is_not_claimed<Rtc>(); }

// Seed 000 with two vCPUs' APIC timers due in one batch of one loop (each
// vCPU's timer runs where the vCPU runs; two vCPUs on one CPU share its
// loop): the one whose guest re-arms it meanwhile ignores its stale firing,
// the other vCPU's firing is its own and is taken.
TEST(Seed000StaleFiringDuringAGuestRearm, VlapicTwoVcpusOnOneLoop) {
  using L = devices::Lapic;
  Bench<Vlapic> b;
  devices::Lapic& other = b.dev.bus.lapic(1);
  const auto other_wr = [&](unsigned offset, std::uint32_t value) {
    std::array<std::uint8_t, 4> bytes{};
    devices::store_le(bytes, value);
    other.write(offset, bytes);
  };
  other_wr(L::kRegSvr, L::kSvrEnable | 0xFF);
  other_wr(L::kRegTimerDivide, 0xB);
  other_wr(L::kRegLvtTimer, 0x31 | (1u << devices::LapicTimer::kModeShift));
  other_wr(L::kRegTimerInitial, 1'000'000);  // the same deadline as vCPU 1's
  const Nanos old_deadline = b.start_and_make_due();
  ASSERT_EQ(other.timer_deadline(), old_deadline);
  const auto runs = b.dev.handler_runs();
  const auto other_runs = other.timer_stats().handler_runs;
  ASSERT_TRUE(seed::write_racing_the_stale_firing(b.loop, [&] { b.dev.guest_rearm(); }));
  EXPECT_EQ(b.dev.handler_runs(), runs) << "the stale firing was taken for the new deadline";
  EXPECT_FALSE(b.dev.apic().next_interrupt()) << "an interrupt for the stale firing (vCPU 0)";
  EXPECT_EQ(other.timer_stats().handler_runs, other_runs + 1);
  EXPECT_EQ(other.next_interrupt(), 0x31) << "the other vCPU's timer fired in the same batch";
  const Nanos new_deadline = b.dev.apic().timer_deadline();
  ASSERT_GT(new_deadline, old_deadline);
  b.clock.set(new_deadline);
  b.loop.run_due();
  EXPECT_EQ(b.dev.handler_runs(), runs + 1) << "one firing claimed, at the new deadline";
  EXPECT_EQ(b.dev.apic().next_interrupt(), 0x30);
}

// Seed 002: a VM reset and a forced stop drain the device while its handler
// runs; where the handler re-arms, it is parked inside the re-arm with the
// new target stored, so the cyclic layer alone can refuse it.
template <typename Device>
void drains_wait_for_the_handler_and_refuse_its_rearm() {
  Bench<Device> b;
  b.start_and_make_due();
  const auto runs = b.dev.handler_runs();
  const auto refused = b.dev.refused_rearms();
  const seed::DrainRace race = seed::drain_racing_the_handlers_rearm(
      b.loop, Device::kHandlerWindow, 2, [&] { b.dev.device().drain_timers(); });
  ASSERT_TRUE(race.handler_parked);
  EXPECT_EQ(race.handler_returned_at_each_drain, (std::vector<bool>{true, true}))
      << "drain_timers() returned while the device's handler was running";
  EXPECT_EQ(b.dev.handler_runs(), runs + 1);
  if (Device::kHandlerWindow == seed::DrainWindow::cyclic_removed) {
    EXPECT_EQ(b.dev.refused_rearms(), refused + 1) << "the handler's re-arm after the drain must be refused";
  }
  b.expect_nothing_left();
  // A reset brings the device back.
  b.dev.device().reset(b.loop);
  b.start_and_make_due();
  EXPECT_EQ(b.loop.run_due(), 1u);
  EXPECT_EQ(b.dev.handler_runs(), runs + 2);
}

TEST(Seed002DrainsDuringTheHandlersRearm, Lapic) { drains_wait_for_the_handler_and_refuse_its_rearm<Lapic>(); }
TEST(Seed002DrainsDuringTheHandlersRearm, Vlapic) { drains_wait_for_the_handler_and_refuse_its_rearm<Vlapic>(); }
TEST(Seed002DrainsDuringTheHandlersRearm, Pit) { drains_wait_for_the_handler_and_refuse_its_rearm<Pit>(); }
TEST(Seed002DrainsDuringTheHandlersRearm, Hpet) { drains_wait_for_the_handler_and_refuse_its_rearm<Hpet>(); }
TEST(Seed002DrainsDuringTheHandlersRearm, Rtc) { drains_wait_for_the_handler_and_refuse_its_rearm<Rtc>(); }

// Seed 002, the other end of the window: the drain has begun (callout
// flagged, target cleared) but not removed the cyclic when the handler
// re-arms, so the reprogram goes through; the callout must refuse it. (Not
// the RTC: its handler does not re-arm the callout that fired.)
template <typename Device>
void rearm_while_a_drain_is_under_way_is_refused() {
  Bench<Device> b;
  b.start_and_make_due();
  const auto refused = b.dev.refused_rearms();
  const seed::DrainRace race = seed::drain_racing_the_handlers_rearm(
      b.loop, seed::DrainWindow::callout_draining, 1, [&] { b.dev.device().drain_timers(); });
  ASSERT_TRUE(race.handler_parked);
  EXPECT_EQ(b.dev.refused_rearms(), refused + 1) << "a re-arm made while the drain was under way was taken";
  b.expect_nothing_left();
}

TEST(Seed002RearmWhileADrainIsUnderWay, Lapic) { rearm_while_a_drain_is_under_way_is_refused<Lapic>(); }
TEST(Seed002RearmWhileADrainIsUnderWay, Vlapic) { rearm_while_a_drain_is_under_way_is_refused<Vlapic>(); }
TEST(Seed002RearmWhileADrainIsUnderWay, Pit) { rearm_while_a_drain_is_under_way_is_refused<Pit>(); }
TEST(Seed002RearmWhileADrainIsUnderWay, Hpet) { rearm_while_a_drain_is_under_way_is_refused<Hpet>(); }

}  // namespace
}  // namespace vmm
