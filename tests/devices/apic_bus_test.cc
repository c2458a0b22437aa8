// The APICs of a VM together: IPI routing for every delivery and
// destination mode, MSIs from the real IOAPIC and HPET, the 8259's virtual
// wire, and the bad input a guest can throw at them (IPIs to nobody,
// self-IPI storms, random writes to every register and MSR).
#include "devices/apic_bus.h"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "devices/hpet.h"
#include "devices/ioapic.h"
#include "devices/pic.h"
#include "tests/devices/apic_bench.h"
#include "tests/devices/fakes.h"

namespace vmm::testing {
namespace {

using devices::MsiMessage;
using timers::kMillisecond;

constexpr std::uint32_t kFixed = 0;

class ApicBusTest : public ::testing::Test {
 protected:
  explicit ApicBusTest(unsigned cpus = 4) : bench(cpus) {
    for (unsigned i = 0; i < cpus; ++i) enable(bench.apic(i));
  }
  ApicBench bench;
  // Which APICs have `vector` requested.
  std::vector<unsigned> requested(std::uint8_t vector) {
    std::vector<unsigned> out;
    for (unsigned i = 0; i < bench.bus.size(); ++i) {
      if (!bench.apic(i).enabled()) continue;  // nothing to read, and it accepts nothing
      if (bench.apic(i).x2apic_mode() ? (*bench.apic(i).read_msr(msr_of(Lapic::kRegIrr) + vector / 32) >>
                                         (vector % 32)) & 1
                                      : reg_bit(bench.apic(i), Lapic::kRegIrr, vector)) {
        out.push_back(i);
      }
    }
    return out;
  }
  static MsiMessage msi(std::uint8_t destination, std::uint8_t vector, std::uint32_t mode = kFixed,
                        bool logical = false, bool rh = false, bool level = false) {
    return MsiMessage{0xFEE0'0000u | (std::uint64_t{destination} << 12) | (logical ? 4u : 0u) | (rh ? 8u : 0u),
                      vector | (mode << 8) | (1u << 14) | (level ? 1u << 15 : 0u)};
  }
};

using V = std::vector<unsigned>;

// ------------------------------------------------------------ destinations

TEST_F(ApicBusTest, PhysicalDestinationsAndBroadcast) {
  Lapic& bsp = bench.apic(0);
  const auto kicks = bench.kicks[2].load();
  send_ipi(bsp, 2, 0x40);
  EXPECT_EQ(requested(0x40), V{2});
  EXPECT_EQ(bench.kicks[2].load(), kicks + 1) << "the target's vCPU is kicked";
  send_ipi(bsp, 0, 0x41);
  EXPECT_EQ(requested(0x41), V{0}) << "a physical IPI may name its sender";
  send_ipi(bsp, 0xFF, 0x42);
  EXPECT_EQ(requested(0x42), (V{0, 1, 2, 3})) << "0xFF is everyone";
  EXPECT_EQ(bsp.stats().ipis_sent, 3u);
}

TEST_F(ApicBusTest, Shorthands) {
  Lapic& sender = bench.apic(1);
  wr(sender, Lapic::kRegIcrHigh, 3u << 24);  // ignored with a shorthand
  wr(sender, Lapic::kRegIcrLow, 0x50 | icr_shorthand(ApicShorthand::self));
  EXPECT_EQ(requested(0x50), V{1});
  wr(sender, Lapic::kRegIcrLow, 0x51 | icr_shorthand(ApicShorthand::all_including_self));
  EXPECT_EQ(requested(0x51), (V{0, 1, 2, 3}));
  wr(sender, Lapic::kRegIcrLow, 0x52 | icr_shorthand(ApicShorthand::all_excluding_self));
  EXPECT_EQ(requested(0x52), (V{0, 2, 3}));
  // A disabled APIC receives nothing, even from a broadcast.
  ASSERT_TRUE(bench.apic(3).write_msr(Lapic::kMsrApicBase, 0xFEE0'0000));
  wr(sender, Lapic::kRegIcrLow, 0x53 | icr_shorthand(ApicShorthand::all_excluding_self));
  EXPECT_EQ(requested(0x53), (V{0, 2}));
}

TEST_F(ApicBusTest, LogicalFlatAndCluster) {
  Lapic& bsp = bench.apic(0);
  for (unsigned i = 0; i < 4; ++i) wr(bench.apic(i), Lapic::kRegLdr, (1u << i) << 24);
  send_ipi(bsp, 0x06, 0x60 | kIcrLogical);
  EXPECT_EQ(requested(0x60), (V{1, 2}));
  send_ipi(bsp, 0xFF, 0x61 | kIcrLogical);
  EXPECT_EQ(requested(0x61), (V{0, 1, 2, 3}));
  send_ipi(bsp, 0x30, 0x62 | kIcrLogical);
  EXPECT_EQ(requested(0x62), V{}) << "no APIC has logical ID bits 4-5";

  // Cluster model: cluster in LDR[31:28], members in LDR[27:24].
  const std::array<std::uint32_t, 4> ldr = {0x11, 0x12, 0x21, 0x22};
  for (unsigned i = 0; i < 4; ++i) {
    wr(bench.apic(i), Lapic::kRegDfr, 0x0FFF'FFFF);
    wr(bench.apic(i), Lapic::kRegLdr, ldr[i] << 24);
  }
  send_ipi(bsp, 0x13, 0x63 | kIcrLogical);
  EXPECT_EQ(requested(0x63), (V{0, 1}));
  send_ipi(bsp, 0x22, 0x64 | kIcrLogical);
  EXPECT_EQ(requested(0x64), V{3});
  send_ipi(bsp, 0xF1, 0x65 | kIcrLogical);
  EXPECT_EQ(requested(0x65), (V{0, 2})) << "cluster 0xF: member 1 of every cluster";
  send_ipi(bsp, 0x31, 0x66 | kIcrLogical);
  EXPECT_EQ(requested(0x66), V{});
  // A reserved model names nobody.
  wr(bench.apic(1), Lapic::kRegDfr, 0x5FFF'FFFF);
  send_ipi(bsp, 0x13, 0x67 | kIcrLogical);
  EXPECT_EQ(requested(0x67), V{0});
}

TEST_F(ApicBusTest, X2apicPhysicalAndClusterDestinations) {
  for (unsigned i = 0; i < 4; ++i) ASSERT_TRUE(to_x2apic(bench.apic(i)));
  Lapic& sender = bench.apic(0);
  const auto icr = [&](std::uint32_t destination, std::uint32_t low) {
    EXPECT_TRUE(sender.write_msr(msr_of(Lapic::kRegIcrLow), (std::uint64_t{destination} << 32) | low));
  };
  icr(3, 0x70);
  EXPECT_EQ(requested(0x70), V{3});
  icr(0x0000'000A, 0x71 | kIcrLogical);  // cluster 0, members 1 and 3
  EXPECT_EQ(requested(0x71), (V{1, 3}));
  icr(0x0001'000A, 0x72 | kIcrLogical);  // cluster 1: nobody here
  EXPECT_EQ(requested(0x72), V{});
  icr(0xFFFF'FFFF, 0x73);
  EXPECT_EQ(requested(0x73), (V{0, 1, 2, 3}));
  icr(0xFF, 0x74);
  EXPECT_EQ(requested(0x74), V{}) << "0xFF is an ID like any other in x2APIC mode";
  // MSIs keep the 8-bit format, where 0xFF is still everyone.
  bench.bus.send_msi(msi(0xFF, 0x75));
  EXPECT_EQ(requested(0x75), (V{0, 1, 2, 3}));
  bench.bus.send_msi(msi(2, 0x76));
  EXPECT_EQ(requested(0x76), V{2});
}

TEST_F(ApicBusTest, LowestPriorityGoesToTheLowestAprAndSpreadsTies) {
  const std::array<std::uint32_t, 4> tpr = {0x30, 0x20, 0x20, 0x50};
  for (unsigned i = 0; i < 4; ++i) wr(bench.apic(i), Lapic::kRegTpr, tpr[i]);
  Lapic& sender = bench.apic(3);
  const std::uint32_t lowest = icr_mode(ApicDelivery::lowest_priority);
  // Vectors of class 2 leave an APR of TPR 0x20 where it is, so 1 and 2 stay tied.
  send_ipi(sender, 0xFF, 0x20 | lowest);
  send_ipi(sender, 0xFF, 0x21 | lowest);
  EXPECT_EQ(requested(0x20), V{1}) << "tie between 1 and 2: vector 0x20 takes the first";
  EXPECT_EQ(requested(0x21), V{2}) << "...and 0x21 the second";
  wr(bench.apic(2), Lapic::kRegTpr, 0x00);
  wr(bench.apic(2), Lapic::kRegSvr, 0xFF);  // software disabled: not a candidate
  send_ipi(sender, 0xFF, 0x22 | lowest);
  EXPECT_EQ(requested(0x22), V{1});
  send_ipi(sender, 0x09, 0x23 | lowest | kIcrLogical);  // no LDR set: nobody
  EXPECT_EQ(requested(0x23), V{});
  // An MSI with the redirection hint arbitrates the same way.
  bench.bus.send_msi(msi(0xFF, 0x24, kFixed, false, /*rh=*/true));
  EXPECT_EQ(requested(0x24), V{1});
  // A request in a higher class raises the APR.
  bench.apic(1).receive(ApicDelivery::fixed, 0xE0, false);
  EXPECT_EQ(bench.apic(1).arbitration_priority(), 0xE0);
  bench.bus.send_msi(msi(0xFF, 0x25, 1));
  EXPECT_EQ(requested(0x25), V{0});
}

// ------------------------------------------------------------ delivery modes

TEST_F(ApicBusTest, InitSipiSipiAsLinuxWakesAnAp) {
  Lapic& bsp = bench.apic(0);
  Lapic& ap = bench.apic(2);
  wr(ap, Lapic::kRegTpr, 0x40);
  send_ipi(bsp, 2, icr_mode(ApicDelivery::init) | kIcrLevel | kIcrAssert);
  send_ipi(bsp, 2, icr_mode(ApicDelivery::init) | kIcrLevel);  // de-assert: nothing
  send_ipi(bsp, 2, icr_mode(ApicDelivery::startup) | 0x9F);
  send_ipi(bsp, 2, icr_mode(ApicDelivery::startup) | 0x9F);
  EXPECT_EQ(bsp.stats().ipis_sent, 3u) << "the INIT de-assert is not sent";
  EXPECT_EQ(rd(ap, Lapic::kRegTpr), 0u) << "INIT reset the AP's APIC";
  const auto events = ap.take_events();
  EXPECT_TRUE(events.init);
  EXPECT_EQ(events.sipi, 0x9F);
  EXPECT_FALSE(events.nmi);
  EXPECT_FALSE(bench.apic(1).take_events().init) << "only the AP named";
  EXPECT_EQ(rd(bsp, Lapic::kRegIcrLow) & (1u << 12), 0u) << "delivery status: idle";

  // All-but-self INIT, as firmware does it.
  wr(bsp, Lapic::kRegIcrLow, icr_mode(ApicDelivery::init) | kIcrLevel | kIcrAssert |
                                 icr_shorthand(ApicShorthand::all_excluding_self));
  for (unsigned i = 1; i < 4; ++i) EXPECT_TRUE(bench.apic(i).take_events().init) << i;
  EXPECT_FALSE(bsp.take_events().init);
}

TEST_F(ApicBusTest, NmiSmiAndExtIntMessages) {
  Lapic& bsp = bench.apic(0);
  send_ipi(bsp, 1, icr_mode(ApicDelivery::nmi) | 0x33);  // the vector means nothing to an NMI
  send_ipi(bsp, 3, icr_mode(ApicDelivery::smi));
  EXPECT_TRUE(bench.apic(1).take_events().nmi);
  EXPECT_TRUE(bench.apic(3).take_events().smi);
  EXPECT_EQ(requested(0x33), V{});
  // ICR modes 3 and 7 are reserved: nothing leaves the APIC.
  send_ipi(bsp, 1, icr_mode(ApicDelivery::reserved3) | 0x34);
  send_ipi(bsp, 1, icr_mode(ApicDelivery::extint) | 0x34);
  EXPECT_EQ(bsp.stats().ipis_sent, 2u);
  EXPECT_FALSE(bench.apic(1).extint_pending());
  // An MSI may carry ExtINT (an IOAPIC pin in ExtINT mode).
  bench.bus.send_msi(msi(1, 0, 7));
  EXPECT_TRUE(bench.apic(1).extint_pending());
  bench.bus.send_msi(msi(2, 0, 4));
  EXPECT_TRUE(bench.apic(2).take_events().nmi);
  bench.bus.send_msi(msi(2, 0, 5));
  EXPECT_TRUE(bench.apic(2).take_events().init);
}

TEST_F(ApicBusTest, MsiDecoding) {
  const auto ok = ApicBus::decode_msi(MsiMessage{0xFEE0'300Cu, 0xC000u | (1u << 8) | 0x45});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->destination, 3u);
  EXPECT_TRUE(ok->logical);
  EXPECT_TRUE(ok->redirection_hint);
  EXPECT_EQ(ok->vector, 0x45);
  EXPECT_EQ(ok->mode, ApicDelivery::lowest_priority);
  EXPECT_TRUE(ok->level_triggered);
  EXPECT_TRUE(ok->asserted);
  EXPECT_FALSE(ApicBus::decode_msi(MsiMessage{0xFED0'0000u, 0x45})) << "not the interrupt range";
  EXPECT_FALSE(ApicBus::decode_msi(MsiMessage{0x1'FEE0'0000ull, 0x45})) << "above 4 GiB";
  EXPECT_FALSE(ApicBus::decode_msi(MsiMessage{0xFEE0'0000u, 0x345})) << "mode 3 is reserved";
  EXPECT_FALSE(ApicBus::decode_msi(MsiMessage{0xFEE0'0000u, 0x645})) << "start-up is not an MSI mode";

  const auto invalid = bench.bus.stats().invalid;
  bench.bus.send_msi(MsiMessage{0xFED0'0000u, 0x45});
  EXPECT_EQ(bench.bus.stats().invalid, invalid + 1);
  bench.bus.send_msi(MsiMessage{0xFEE0'1000u, 0x8046});  // level, de-asserted
  EXPECT_EQ(requested(0x46), V{}) << "a de-assert message delivers nothing";
}

// --------------------------------------------------- IOAPIC, HPET and PIC

TEST(ApicBusWiring, IoApicDeliversAndLevelEoisComeBack) {
  timers::ManualClock clock;
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  std::unique_ptr<devices::IoApic> ioapic;
  ApicBus bus(system, system.loop(0), ApicBus::Config{.cpus = 2}, {},
              [&](std::uint8_t vector) { ioapic->end_of_interrupt(vector); });
  ioapic = std::make_unique<devices::IoApic>(bus);
  for (unsigned i = 0; i < 2; ++i) enable(bus.lapic(i));
  const auto set_entry = [&](unsigned pin, std::uint64_t entry) {
    for (unsigned half = 0; half < 2; ++half) {
      const std::uint8_t select = static_cast<std::uint8_t>(0x10 + 2 * pin + half);
      ioapic->write(devices::IoApic::kRegisterSelect, std::span<const std::uint8_t>(&select, 1));
      std::array<std::uint8_t, 4> value{};
      devices::store_le(value, entry >> (32 * half));
      ioapic->write(devices::IoApic::kWindow, value);
    }
  };
  Lapic& bsp = bus.lapic(0);
  Lapic& ap = bus.lapic(1);

  set_entry(4, 0x34 | (std::uint64_t{1} << 56));  // edge, to APIC 1
  ioapic->pin(4).pulse();
  EXPECT_TRUE(reg_bit(ap, Lapic::kRegIrr, 0x34));
  EXPECT_FALSE(reg_bit(ap, Lapic::kRegTmr, 0x34));

  set_entry(9, 0x39 | devices::IoApic::kLevelTriggered);  // level, to APIC 0
  ioapic->pin(9).set_level(true);
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegTmr, 0x39));
  EXPECT_NE(ioapic->redirection_entry(9) & devices::IoApic::kRemoteIrr, 0u);
  ASSERT_EQ(inject(bsp), 0x39);
  wr(bsp, Lapic::kRegEoi, 0);  // still asserted: the IOAPIC delivers again
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegIrr, 0x39));
  ioapic->pin(9).set_level(false);
  ASSERT_EQ(inject(bsp), 0x39);
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(ioapic->redirection_entry(9) & devices::IoApic::kRemoteIrr, 0u) << "the EOI reached the IOAPIC";
  EXPECT_FALSE(bsp.next_interrupt());

  // Logical flat, lowest priority, as Linux programs IOAPIC entries in flat mode.
  wr(bsp, Lapic::kRegLdr, 0x0100'0000);
  wr(ap, Lapic::kRegLdr, 0x0200'0000);
  wr(bsp, Lapic::kRegTpr, 0x40);  // the AP's APR is 0x30 (0x34 requested)
  set_entry(5, 0x35 | (1u << 8) | devices::IoApic::kDestinationLogical | (std::uint64_t{0x03} << 56));
  ioapic->pin(5).pulse();
  EXPECT_TRUE(reg_bit(ap, Lapic::kRegIrr, 0x35));
  EXPECT_FALSE(reg_bit(bsp, Lapic::kRegIrr, 0x35));
}

TEST(ApicBusWiring, HpetFsbInterruptsArriveAsMsis) {
  timers::ManualClock clock;
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  ApicBus bus(system, system.loop(0), ApicBus::Config{.cpus = 2}, {}, {});
  enable(bus.lapic(1));
  FakeIrqLine pins[devices::Hpet::kIoApicPins], isa0, isa8;
  devices::Hpet hpet(system, system.loop(0), [&](unsigned pin) -> devices::IrqLine& { return pins[pin]; }, isa0,
                     isa8, bus);
  const auto wr64 = [&](std::uint64_t offset, std::uint64_t value) {
    std::array<std::uint8_t, 8> bytes{};
    devices::store_le(bytes, value);
    hpet.write(offset, bytes);
  };
  wr64(devices::Hpet::timer_fsb_reg(0), (std::uint64_t{0xFEE0'1000} << 32) | 0x4A);
  wr64(devices::Hpet::timer_config_reg(0), devices::Hpet::kTimerIntEnable | devices::Hpet::kTimerFsbEnable);
  wr64(devices::Hpet::timer_comparator_reg(0), 1000);  // 10 us
  wr64(devices::Hpet::kRegConfig, devices::Hpet::kConfigEnable);
  run_loop_until(clock, system.loop(0), clock.now() + kMillisecond);
  EXPECT_EQ(bus.lapic(1).next_interrupt(), 0x4A);
}

TEST(ApicBusWiring, The8259ReachesTheBspThroughLint0) {
  timers::ManualClock clock;
  timers::CyclicSystem system{clock, timers::LoopOptions{.loops = 1, .threads = false}};
  std::array<std::atomic<int>, 2> kicks{};
  ApicBus bus(system, system.loop(0), ApicBus::Config{.cpus = 2}, [&](unsigned i) { ++kicks[i]; }, {});
  devices::Pic pic(bus.lint0());
  const auto out = [&](std::uint64_t offset, std::uint8_t value) {
    pic.master().write(offset, std::span<const std::uint8_t>(&value, 1));
  };
  out(0, 0x11);  // ICW1: ICW4 needed
  out(1, 0x20);  // ICW2: vectors 0x20-0x27
  out(1, 0x04);  // ICW3: slave on IR2
  out(1, 0x01);  // ICW4: 8086 mode
  out(1, 0xFE);  // only IRQ 0
  bus.lapic(0).setup_virtual_wire();  // firmware, on the BSP only
  pic.set_irq(0, true);
  EXPECT_TRUE(bus.lapic(0).extint_pending());
  EXPECT_FALSE(bus.lapic(1).extint_pending()) << "the AP's LINT0 is masked";
  EXPECT_GE(kicks[0].load(), 1);
  // The vCPU side's INTA:
  EXPECT_EQ(pic.acknowledge(), 0x20);
  bus.lapic(0).extint_accepted();
  EXPECT_FALSE(bus.lapic(0).extint_pending()) << "the 8259 dropped INT once the request was taken";
  pic.set_irq(0, false);
}

// -------------------------------------------------------------- bad input

TEST_F(ApicBusTest, IpisToAbsentApicsAreDroppedWithBoundedLogging) {
  LogCapture logs;
  Lapic& bsp = bench.apic(0);
  const auto before = bench.bus.stats().no_destination;
  for (int i = 0; i < 10'000; ++i) {
    send_ipi(bsp, static_cast<std::uint8_t>(4 + i % 200), 0x40);  // IDs 4-203: absent
    bench.bus.send_msi(msi(static_cast<std::uint8_t>(4 + i % 200), 0x41));
  }
  ASSERT_TRUE(to_x2apic(bsp));
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(bsp.write_msr(msr_of(Lapic::kRegIcrLow), (0x1234ull << 32) | 0x42));
  EXPECT_EQ(bench.bus.stats().no_destination, before + 21'000);
  EXPECT_EQ(requested(0x40), V{});
  EXPECT_EQ(requested(0x41), V{});
  EXPECT_LE(logs.lines(), 2 * 10u) << "one rate-limited site, at most two 5 s windows in this test";
}

TEST_F(ApicBusTest, SelfIpiStormCoalescesAndKicksBoundedly) {
  LogCapture logs;
  Lapic& apic = bench.apic(1);
  const auto kicks = bench.kicks[1].load();
  for (int i = 0; i < 100'000; ++i) wr(apic, Lapic::kRegIcrLow, 0x40 | icr_shorthand(ApicShorthand::self));
  EXPECT_EQ(bench.kicks[1].load(), kicks + 1) << "one vector waiting, one kick";
  EXPECT_EQ(requested(0x40), V{1});
  EXPECT_EQ(apic.stats().coalesced, 99'999u);
  // Every vector, round and round: at most one kick per vector.
  for (int round = 0; round < 100; ++round) {
    for (unsigned v = 0; v < 256; ++v) wr(apic, Lapic::kRegIcrLow, v | icr_shorthand(ApicShorthand::self));
  }
  EXPECT_LE(bench.kicks[1].load(), kicks + 240);
  for (unsigned v = 16; v < 256; ++v) EXPECT_TRUE(reg_bit(apic, Lapic::kRegIrr, static_cast<std::uint8_t>(v)));
  for (unsigned v = 0; v < 16; ++v) EXPECT_FALSE(reg_bit(apic, Lapic::kRegIrr, static_cast<std::uint8_t>(v)));
  EXPECT_EQ(apic.stats().illegal_vectors, 1600u);
  EXPECT_LE(logs.lines(), 2 * 10u) << "1600 illegal vectors, one rate-limited line site";
  // Through the x2APIC SELF IPI register too.
  ASSERT_TRUE(to_x2apic(apic));
  for (int i = 0; i < 10'000; ++i) ASSERT_TRUE(apic.write_msr(msr_of(Lapic::kRegSelfIpi), 0x40));
  EXPECT_LE(bench.kicks[1].load(), kicks + 240);
}

// Random values at every width to every APIC offset and every APIC MSR,
// random IPIs, MSIs and LINT levels, with the timers running: nothing
// crashes or spins, read-only facts stay put, logging stays bounded, and a
// reset brings everything back.
TEST(ApicFuzz, RandomRegistersMsrsAndMessages) {
  LogCapture logs;
  spdlog::warn("capture check");
  ASSERT_EQ(logs.lines(), 1u);
  ApicBench bench(3);
  std::mt19937_64 rng(0xA91C'5EED);
  constexpr std::array<std::size_t, 4> kWidths = {1, 2, 4, 8};
  const auto start = std::chrono::steady_clock::now();
  std::uint64_t msr_faults_seen = 0;
  for (int op = 0; op < 200'000; ++op) {
    Lapic& apic = bench.apic(static_cast<unsigned>(rng() % 3));
    const std::uint64_t value = rng() >> (rng() % 64);
    switch (rng() % 10) {
      case 0:
      case 1:
      case 2: {  // MMIO, mostly at register offsets
        std::uint64_t offset = rng() % 3 ? (rng() % 0x40) * 0x10 : rng() % 0x1010;
        std::array<std::uint8_t, 8> bytes{};
        const std::size_t width = rng() % 2 ? 4 : kWidths[rng() % kWidths.size()];
        devices::store_le(bytes, value);
        if (rng() % 2) {
          apic.write(offset, std::span<const std::uint8_t>(bytes.data(), width));
        } else {
          apic.read(offset, std::span<std::uint8_t>(bytes.data(), width));
        }
        break;
      }
      case 3:
      case 4:
      case 5: {  // MSRs: the APIC's, and some that are not
        const std::uint32_t index = rng() % 8 == 0   ? Lapic::kMsrApicBase
                                    : rng() % 8 == 0 ? Lapic::kMsrTscDeadline
                                    : rng() % 8 == 0 ? static_cast<std::uint32_t>(rng())
                                                     : 0x800 + static_cast<std::uint32_t>(rng() % 0x100);
        const std::uint64_t msr_value =
            index == Lapic::kMsrApicBase && rng() % 2 ? (0xFEE0'0000 | (value & 0xD00)) : value;
        const bool ok = rng() % 2 ? apic.write_msr(index, msr_value) : apic.read_msr(index).has_value();
        if (!ok) ++msr_faults_seen;
        break;
      }
      case 6: {
        MsiMessage message{0xFEE0'0000u | ((rng() % 8) << 12) | (rng() % 16), static_cast<std::uint32_t>(value)};
        if (rng() % 8 == 0) message.address = rng();
        bench.bus.send_msi(message);
        break;
      }
      case 7:
        (rng() % 2 ? bench.bus.lint0() : bench.bus.lint1()).set_level(rng() & 1);
        break;
      case 8: {  // the vCPU side
        (void)apic.take_events();
        if (apic.extint_pending()) apic.extint_accepted();
        (void)inject(apic);
        apic.set_cr8(rng() % 16);
        break;
      }
      default:
        run_loop_until(bench.clock, bench.system.loop(0),
                       bench.clock.now() + static_cast<timers::Nanos>(rng() % kMillisecond), {}, 1000);
        break;
    }
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  for (unsigned i = 0; i < 3; ++i) {
    Lapic& apic = bench.apic(i);
    if (apic.x2apic_mode()) {
      EXPECT_EQ(apic.read_msr(msr_of(Lapic::kRegVersion)), Lapic::kVersion);
      EXPECT_EQ(apic.read_msr(msr_of(Lapic::kRegId)), i);
    } else if (apic.enabled()) {
      EXPECT_EQ(rd(apic, Lapic::kRegVersion), Lapic::kVersion);
      EXPECT_EQ(rd(apic, Lapic::kRegId), i << 24);
      EXPECT_EQ(rd(apic, Lapic::kRegDfr) & 0x0FFF'FFFFu, 0x0FFF'FFFFu);
    }
    EXPECT_EQ(apic.apic_base() & ~std::uint64_t{0xD00}, 0xFEE0'0000u) << "only EN, EXTD and BSP ever change";
  }
  EXPECT_GT(msr_faults_seen, 1000u) << "the fuzz should have hit invalid MSRs";
  EXPECT_GT(bench.bus.stats().messages, 1000u);

  // Seven rate-limited sites can log here (APIC accesses, MSRs, illegal
  // vectors, reserved ICR modes, dropped messages, the timer's coalescing
  // and relocation shares the MSR site), each 10 lines per 5 s.
  const auto windows = 1 + std::chrono::duration_cast<std::chrono::seconds>(elapsed).count() / 5;
  EXPECT_LE(logs.lines(), 1 + 7 * 10 * static_cast<std::size_t>(windows + 1));

  // A VM reset brings every APIC back to power-on, working.
  bench.bus.drain_timers();
  bench.bus.reset(bench.system.loop(0));
  for (unsigned i = 0; i < 3; ++i) {
    Lapic& apic = bench.apic(i);
    EXPECT_EQ(apic.apic_base(), 0xFEE0'0800u | (i == 0 ? Lapic::kBaseBsp : 0));
    EXPECT_EQ(rd(apic, Lapic::kRegSvr), 0xFFu);
    (void)apic.take_events();
    apic.extint_accepted();
    enable(apic);
  }
  bench.bus.lint0().set_level(false);
  send_ipi(bench.apic(0), 2, 0x77);
  EXPECT_EQ(inject(bench.apic(2)), 0x77);
}

// Every offset of the window at every width, and every x2APIC MSR, with
// the values a fuzzer tries first, in both modes: each access either does
// what the SDM says or is refused, nothing spins, and the log stays bounded.
TEST(ApicFuzz, EveryOffsetAndEveryMsrWithExtremeValues) {
  LogCapture logs;
  ApicBench bench(2);
  constexpr std::array<std::uint64_t, 5> kValues = {0, 1, 0x8000'0000, 0xFFFF'FFFF, ~std::uint64_t{0}};
  const auto start = std::chrono::steady_clock::now();
  for (bool x2apic : {false, true}) {
    Lapic& apic = bench.apic(1);
    enable(apic);
    if (x2apic) {
      ASSERT_TRUE(to_x2apic(apic));
    }
    std::uint64_t faults = 0, accepted = 0;
    for (std::uint64_t offset = 0; offset < Lapic::kMmioSize + 0x10; ++offset) {
      for (std::size_t width : {1u, 2u, 4u, 8u}) {
        for (std::uint64_t value : kValues) {
          std::array<std::uint8_t, 8> bytes{};
          devices::store_le(bytes, value);
          apic.write(offset, std::span<const std::uint8_t>(bytes.data(), width));
          apic.read(offset, std::span<std::uint8_t>(bytes.data(), width));
          if (x2apic) {
            for (std::uint8_t byte : std::span<std::uint8_t>(bytes.data(), width)) ASSERT_EQ(byte, 0xFF);
          }
        }
      }
      if (offset % 0x100 == 0) {
        run_loop_until(bench.clock, bench.system.loop(0), bench.clock.now() + kMillisecond, {}, 1000);
      }
    }
    for (std::uint32_t index = Lapic::kMsrX2apicFirst; index <= Lapic::kMsrX2apicLast; ++index) {
      for (std::uint64_t value : kValues) {
        (apic.write_msr(index, value) ? accepted : faults)++;
        (apic.read_msr(index) ? accepted : faults)++;
        ASSERT_EQ(apic.x2apic_mode(), x2apic) << "an x2APIC register write changed the mode";
      }
      run_loop_until(bench.clock, bench.system.loop(0), bench.clock.now() + 100 * timers::kMicrosecond, {}, 1000);
    }
    if (x2apic) {
      EXPECT_GT(accepted, 0u);
      EXPECT_GT(faults, accepted) << "most of the range is reserved";
      EXPECT_EQ(apic.read_msr(msr_of(Lapic::kRegVersion)), Lapic::kVersion);
      EXPECT_EQ(apic.read_msr(msr_of(Lapic::kRegId)), 1u);
    } else {
      EXPECT_EQ(faults, 256u * kValues.size() * 2) << "every x2APIC MSR faults in xAPIC mode";
      EXPECT_EQ(rd(apic, Lapic::kRegVersion), Lapic::kVersion);
      EXPECT_EQ(rd(apic, Lapic::kRegId), 1u << 24);
    }
    (void)apic.take_events();
    apic.receive(ApicDelivery::init, 0, false);  // back to a known state for the next round
    if (x2apic) {
      ASSERT_TRUE(apic.write_msr(Lapic::kMsrApicBase, 0xFEE0'0000));
      ASSERT_TRUE(apic.write_msr(Lapic::kMsrApicBase, 0xFEE0'0000 | Lapic::kBaseEnable));
    }
  }
  const auto windows = 1 + std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                                            start)
                               .count() /
                               5;
  EXPECT_LE(logs.lines(), 7 * 10 * static_cast<std::size_t>(windows + 1));
}

}  // namespace
}  // namespace vmm::testing
