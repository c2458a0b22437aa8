// The APICs under concurrent use, as a running VM uses them: IPIs from
// other vCPU threads, MSIs from device threads and timer handlers on loop
// threads, while a vCPU thread injects and EOIs. Meant for ThreadSanitizer
// too; no sleep stands in for an interleaving: every wait is for a
// condition, with a patience after which the test fails instead of hanging.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "devices/apic_bus.h"
#include "tests/devices/apic_bench.h"

namespace vmm::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kPatience = 10s;

// What the vCPU side does with a kick: wake the vCPU thread if it waits.
class Waker {
 public:
  void kick() {
    std::lock_guard lock(mu_);
    kicked_ = true;
    cv_.notify_all();
  }
  // False when no kick came within `patience`.
  bool wait(std::chrono::milliseconds patience) {
    std::unique_lock lock(mu_);
    const bool kicked = cv_.wait_for(lock, patience, [this] { return kicked_; });
    kicked_ = false;
    return kicked;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool kicked_ = false;
};

// Counts, per vector, the interrupts a vCPU took; producers wait on it.
class Taken {
 public:
  void add(std::uint8_t vector) {
    std::lock_guard lock(mu_);
    ++count_[vector];
    cv_.notify_all();
  }
  bool wait_for_count(std::uint8_t vector, int count) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kPatience, [&] { return count_[vector] >= count; });
  }
  int count(std::uint8_t vector) {
    std::lock_guard lock(mu_);
    return count_[vector];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::array<int, 256> count_{};
};

// Four producers on their own threads -- an xAPIC vCPU's ICR, an x2APIC
// vCPU's ICR MSR, an edge MSI and a level MSI (as the IOAPIC sends them) --
// each send a vector to vCPU 0 and wait until it was taken before sending
// it again, while vCPU 0's thread injects whatever is deliverable, EOIs it,
// and otherwise sleeps until kicked. A lost interrupt or a lost kick stalls
// a producer (and fails it after kPatience); a lost or extra EOI broadcast
// shows in the count.
TEST(ApicConcurrency, InterruptsFromOtherThreadsAreNeitherLostNorDoubled) {
  std::array<Waker, 4> wakers;
  std::atomic<int> eoi_broadcasts{0};
  timers::ManualClock clock;
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  ApicBus bus(system, system.loop(0), ApicBus::Config{.cpus = 4}, [&](unsigned i) { wakers[i].kick(); },
              [&](std::uint8_t vector) {
                EXPECT_EQ(vector, 0x74);
                eoi_broadcasts.fetch_add(1);
              });
  for (unsigned i = 0; i < 4; ++i) enable(bus.lapic(i));
  ASSERT_TRUE(to_x2apic(bus.lapic(2)));
  Lapic& target = bus.lapic(0);

  constexpr int kRounds = 2000;
  Taken taken;
  std::atomic<bool> stop{false};
  std::atomic<int> lost_kicks{0};
  std::thread vcpu([&] {
    while (!stop.load()) {
      while (const auto vector = target.next_interrupt()) {
        ASSERT_TRUE(target.accept(*vector)) << "only this thread takes from the IRR";
        taken.add(*vector);
        wr(target, Lapic::kRegEoi, 0);
      }
      if (!wakers[0].wait(kPatience) && !stop.load()) lost_kicks.fetch_add(1);
    }
  });

  const auto producer = [&](std::uint8_t vector, auto send) {
    return std::thread([&, vector, send] {
      for (int round = 1; round <= kRounds; ++round) {
        send();
        if (!taken.wait_for_count(vector, round)) {
          ADD_FAILURE() << "vector " << int{vector} << " round " << round << " was never taken";
          return;
        }
      }
    });
  };
  std::vector<std::thread> producers;
  producers.push_back(producer(0x41, [&] { send_ipi(bus.lapic(1), 0, 0x41); }));
  producers.push_back(
      producer(0x52, [&] { EXPECT_TRUE(bus.lapic(2).write_msr(msr_of(Lapic::kRegIcrLow), 0x52)); }));
  producers.push_back(producer(0x63, [&] { bus.send_msi(devices::MsiMessage{0xFEE0'0000, 0x4063}); }));
  producers.push_back(producer(0x74, [&] { bus.send_msi(devices::MsiMessage{0xFEE0'0000, 0xC074}); }));
  for (auto& thread : producers) thread.join();
  stop.store(true);
  wakers[0].kick();
  vcpu.join();

  for (std::uint8_t vector : {0x41, 0x52, 0x63, 0x74}) {
    EXPECT_EQ(taken.count(vector), kRounds) << "vector " << int{vector};
  }
  EXPECT_EQ(eoi_broadcasts.load(), kRounds) << "one broadcast per level-triggered EOI";
  EXPECT_EQ(lost_kicks.load(), 0);
  EXPECT_FALSE(target.next_interrupt());
  EXPECT_EQ(rd(target, Lapic::kRegIsr + 0x10 * (0x74 / 32)), 0u);
}

// A vCPU thread re-arms and reprograms its APIC timer while it fires on a
// timer thread, moves it between two loops (following "its CPU"), toggles
// software enable and takes interrupts, while another vCPU sends it fixed
// IPIs, INITs and SIPIs and a device thread sends MSIs and drives LINT0.
// Nothing may deadlock or race (ThreadSanitizer), and the APIC must still
// work afterwards.
TEST(ApicConcurrency, TimerReArmsInitsAndLoopMovesRaceSafely) {
  std::array<Waker, 2> wakers;
  timers::CyclicSystem system{timers::MonotonicClock::instance(),
                              timers::LoopOptions{.loops = 2, .threads = true, .pin = false}};
  ApicBus bus(system, system.loop(0), ApicBus::Config{.cpus = 2}, [&](unsigned i) { wakers[i].kick(); }, {});
  Lapic& apic = bus.lapic(1);
  Lapic& other = bus.lapic(0);
  enable(other);
  constexpr int kIterations = 3000;
  std::atomic<bool> done{false};

  std::thread vcpu([&] {
    std::mt19937 rng(1);
    for (int i = 0; i < kIterations; ++i) {
      switch (rng() % 8) {
        case 0:
          enable(apic);
          wr(apic, Lapic::kRegTimerDivide, 0xB);
          wr(apic, Lapic::kRegLvtTimer, 0xE0 | (1u << devices::LapicTimer::kModeShift));
          [[fallthrough]];
        case 1:
          wr(apic, Lapic::kRegTimerInitial, 1 + rng() % 200'000);  // re-arm, maybe while it fires
          break;
        case 2:
          apic.bind_timers(system.loop(rng() % 2));
          break;
        case 3:
          wr(apic, Lapic::kRegSvr, rng() % 2 ? 0x1FF : 0xFF);
          break;
        case 4:
          (void)apic.take_events();
          (void)rd(apic, Lapic::kRegTimerCurrent);
          break;
        default:
          if (const auto v = inject(apic)) wr(apic, Lapic::kRegEoi, 0);
          break;
      }
    }
    done.store(true);
  });
  std::thread sender([&] {
    std::mt19937 rng(2);
    while (!done.load()) {
      const std::uint32_t modes[] = {icr_mode(ApicDelivery::fixed) | 0x50,
                                     icr_mode(ApicDelivery::init) | kIcrLevel | kIcrAssert,
                                     icr_mode(ApicDelivery::startup) | 0x10, icr_mode(ApicDelivery::nmi)};
      send_ipi(other, 1, modes[rng() % 4]);
    }
  });
  std::thread device([&] {
    std::mt19937 rng(3);
    while (!done.load()) {
      bus.send_msi(devices::MsiMessage{0xFEE0'1000, static_cast<std::uint32_t>(0x4060u | (rng() % 16))});
      bus.lint0().set_level(rng() % 2);
    }
  });
  vcpu.join();
  sender.join();
  device.join();

  // Still a working APIC: a one-shot fires and its kick arrives.
  apic.receive(ApicDelivery::init, 0, false);
  (void)apic.take_events();
  while (wakers[1].wait(0ms)) {
  }
  enable(apic);
  while (inject(apic)) wr(apic, Lapic::kRegEoi, 0);
  wr(apic, Lapic::kRegLvtTimer, 0xE1);
  wr(apic, Lapic::kRegTimerInitial, 1000);
  bool fired = false;
  for (auto deadline = std::chrono::steady_clock::now() + kPatience;
       !fired && std::chrono::steady_clock::now() < deadline;) {
    (void)wakers[1].wait(100ms);
    fired = apic.next_interrupt() == 0xE1;
  }
  EXPECT_TRUE(fired) << "the timer no longer works after the storm";
  EXPECT_GT(apic.timer_stats().handler_runs, 0u);
  bus.drain_timers();
}

}  // namespace
}  // namespace vmm::testing
