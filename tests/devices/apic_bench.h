// A VM's local APICs on a ManualClock with caller-driven loops, with every
// kick and EOI broadcast recorded, and the register helpers the APIC tests
// share.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "devices/apic_bus.h"
#include "devices/lapic.h"
#include "tests/common/race_script.h"
#include "timers/event_loop.h"

namespace vmm::testing {

using devices::ApicBus;
using devices::ApicDelivery;
using devices::ApicMessage;
using devices::ApicShorthand;
using devices::Lapic;

inline constexpr unsigned kMaxBenchCpus = 16;

struct ApicBench {
  explicit ApicBench(unsigned cpus = 2, Lapic::Config config = {})
      : bus(system, system.loop(0), ApicBus::Config{.cpus = cpus, .lapic = config},
            [this](unsigned index) { kicks[index].fetch_add(1); },
            [this](std::uint8_t vector) {
              std::lock_guard lock(mu);
              eois.push_back(vector);
            }) {}

  timers::ManualClock clock{timers::kSecond};
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 2, .threads = false}};
  std::array<std::atomic<std::uint64_t>, kMaxBenchCpus> kicks{};
  std::mutex mu;
  std::vector<std::uint8_t> eois;  // guarded by mu
  ApicBus bus;                     // destroyed (drained) before the system

  Lapic& apic(unsigned i) { return bus.lapic(i); }
  std::vector<std::uint8_t> eoi_broadcasts() {
    std::lock_guard lock(mu);
    return eois;
  }
  // Runs loop `n` until `t`, failing instead of spinning.
  void run_until(timers::Nanos t, unsigned n = 0) { run_loop_until(clock, system.loop(n), t, {}, 100'000); }
};

inline std::uint32_t rd(Lapic& apic, unsigned offset) {
  std::array<std::uint8_t, 4> bytes{};
  apic.read(offset, bytes);
  return static_cast<std::uint32_t>(devices::load_le(bytes));
}

inline void wr(Lapic& apic, unsigned offset, std::uint32_t value) {
  std::array<std::uint8_t, 4> bytes{};
  devices::store_le(bytes, value);
  apic.write(offset, bytes);
}

// SVR: software enabled, spurious vector 0xFF.
inline void enable(Lapic& apic) { wr(apic, Lapic::kRegSvr, Lapic::kSvrEnable | 0xFF); }

// Bit `vector` of the 256-bit register at `base` (IRR, ISR, TMR), as the
// guest reads it.
inline bool reg_bit(Lapic& apic, unsigned base, std::uint8_t vector) {
  return (rd(apic, base + 0x10 * (vector / 32)) >> (vector % 32)) & 1;
}

// What the vCPU side does when the window is open: inject and accept the
// next vector, if any.
inline std::optional<std::uint8_t> inject(Lapic& apic) {
  const auto vector = apic.next_interrupt();
  if (vector && !apic.accept(*vector)) return std::nullopt;
  return vector;
}

// ICR fields.
inline constexpr std::uint32_t icr_mode(ApicDelivery mode) { return static_cast<std::uint32_t>(mode) << 8; }
inline constexpr std::uint32_t kIcrLogical = 1u << 11;
inline constexpr std::uint32_t kIcrAssert = 1u << 14;
inline constexpr std::uint32_t kIcrLevel = 1u << 15;
inline constexpr std::uint32_t icr_shorthand(ApicShorthand s) { return static_cast<std::uint32_t>(s) << 18; }

// An IPI through the xAPIC ICR: destination first, then the low half.
inline void send_ipi(Lapic& from, std::uint8_t destination, std::uint32_t low) {
  wr(from, Lapic::kRegIcrHigh, std::uint32_t{destination} << 24);
  wr(from, Lapic::kRegIcrLow, low);
}

inline constexpr std::uint32_t msr_of(unsigned offset) { return Lapic::kMsrX2apicFirst + offset / 16; }

// Switches an APIC into x2APIC mode through IA32_APIC_BASE.
inline bool to_x2apic(Lapic& apic) {
  return apic.write_msr(Lapic::kMsrApicBase, apic.apic_base() | Lapic::kBaseExtd);
}

}  // namespace vmm::testing
