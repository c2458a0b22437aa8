// One local APIC against the SDM: every register's read and write
// semantics, priorities, EOI, ESR, SVR, LVT and LINT pins, INIT/SIPI/NMI,
// IA32_APIC_BASE transitions, the x2APIC MSRs, and its timer on the real
// callouts on a ManualClock.
#include "devices/lapic.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <vector>

#include "tests/devices/apic_bench.h"
#include "tests/devices/fakes.h"

namespace vmm::testing {
namespace {

using timers::kMicrosecond;
using timers::kMillisecond;
using timers::Nanos;

constexpr std::uint32_t kMasked = Lapic::kLvtMasked;
constexpr std::uint32_t kPeriodic = 1u << devices::LapicTimer::kModeShift;
constexpr std::uint32_t kTscDeadline = 2u << devices::LapicTimer::kModeShift;
constexpr std::uint32_t kExtInt = 7u << 8;
constexpr std::uint32_t kNmi = 4u << 8;
constexpr std::array<unsigned, 6> kLvts = {Lapic::kRegLvtTimer, Lapic::kRegLvtThermal, Lapic::kRegLvtPerf,
                                           Lapic::kRegLvtLint0, Lapic::kRegLvtLint1,   Lapic::kRegLvtError};

class LapicTest : public ::testing::Test {
 protected:
  ApicBench bench{2};
  Lapic& bsp = bench.apic(0);
  Lapic& ap = bench.apic(1);

  // A fixed edge interrupt from outside (an MSI, say).
  void raise(Lapic& apic, std::uint8_t vector, bool level = false) {
    apic.receive(ApicDelivery::fixed, vector, level);
  }
};

// ------------------------------------------------------------ power-on state

TEST_F(LapicTest, PowerOnState) {
  EXPECT_EQ(rd(bsp, Lapic::kRegId), 0u);
  EXPECT_EQ(rd(ap, Lapic::kRegId), 1u << 24);
  EXPECT_EQ(rd(bsp, Lapic::kRegVersion), 0x0005'0014u) << "version 0x14, 6 LVT entries, no directed EOI";
  EXPECT_EQ(rd(bsp, Lapic::kRegTpr), 0u);
  EXPECT_EQ(rd(bsp, Lapic::kRegApr), 0u);
  EXPECT_EQ(rd(bsp, Lapic::kRegPpr), 0u);
  EXPECT_EQ(rd(bsp, Lapic::kRegLdr), 0u);
  EXPECT_EQ(rd(bsp, Lapic::kRegDfr), 0xFFFF'FFFFu);
  EXPECT_EQ(rd(bsp, Lapic::kRegSvr), 0xFFu);
  EXPECT_EQ(rd(bsp, Lapic::kRegEsr), 0u);
  EXPECT_EQ(rd(bsp, Lapic::kRegIcrLow), 0u);
  EXPECT_EQ(rd(bsp, Lapic::kRegIcrHigh), 0u);
  for (unsigned lvt : kLvts) EXPECT_EQ(rd(bsp, lvt), kMasked) << std::hex << lvt;
  for (unsigned n = 0; n < 8; ++n) {
    EXPECT_EQ(rd(bsp, Lapic::kRegIsr + 0x10 * n), 0u);
    EXPECT_EQ(rd(bsp, Lapic::kRegTmr + 0x10 * n), 0u);
    EXPECT_EQ(rd(bsp, Lapic::kRegIrr + 0x10 * n), 0u);
  }
  EXPECT_EQ(rd(bsp, Lapic::kRegTimerInitial), 0u);
  EXPECT_EQ(rd(bsp, Lapic::kRegTimerCurrent), 0u);
  EXPECT_EQ(rd(bsp, Lapic::kRegTimerDivide), 0u);
  EXPECT_EQ(bsp.apic_base(), 0xFEE0'0900u) << "enabled, xAPIC, BSP";
  EXPECT_EQ(ap.apic_base(), 0xFEE0'0800u);
  EXPECT_TRUE(bsp.is_bsp());
  EXPECT_FALSE(ap.is_bsp());
  EXPECT_FALSE(bsp.software_enabled());
  EXPECT_FALSE(bsp.next_interrupt());
  EXPECT_FALSE(bsp.extint_pending());
  EXPECT_FALSE(bsp.pending_wakeup());
}

// ------------------------------------------------------ register semantics

TEST_F(LapicTest, ReadOnlyRegistersIgnoreWritesAndCountThem) {
  enable(bsp);
  raise(bsp, 0x41);
  const std::vector<unsigned> read_only = {Lapic::kRegId,  Lapic::kRegVersion, Lapic::kRegApr,
                                           Lapic::kRegPpr, Lapic::kRegRrd,     Lapic::kRegTimerCurrent};
  std::vector<unsigned> all = read_only;
  for (unsigned n = 0; n < 8; ++n) {
    all.push_back(Lapic::kRegIsr + 0x10 * n);
    all.push_back(Lapic::kRegTmr + 0x10 * n);
    all.push_back(Lapic::kRegIrr + 0x10 * n);
  }
  std::vector<std::uint32_t> before;
  for (unsigned offset : all) before.push_back(rd(bsp, offset));
  const auto ignored = bsp.stats().ignored_accesses;
  for (unsigned offset : all) wr(bsp, offset, 0xFFFF'FFFF);
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(rd(bsp, all[i]), before[i]) << std::hex << all[i];
  EXPECT_EQ(bsp.stats().ignored_accesses, ignored + all.size());
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegIrr, 0x41)) << "writing the IRR must not clear it";
}

TEST_F(LapicTest, WritableRegistersKeepOnlyTheirBits) {
  const std::vector<std::pair<unsigned, std::uint32_t>> expected = {
      {Lapic::kRegTpr, 0xFFu},
      {Lapic::kRegLdr, 0xFF00'0000u},
      {Lapic::kRegDfr, 0xFFFF'FFFFu},
      {Lapic::kRegSvr, 0x3FFu},
      {Lapic::kRegIcrHigh, 0xFF00'0000u},
      {Lapic::kRegLvtThermal, 0x107FFu},  // vector, delivery mode, mask
      {Lapic::kRegLvtPerf, 0x107FFu},
      {Lapic::kRegLvtLint0, 0x1A7FFu},  // + polarity, trigger; Remote IRR is read-only
      {Lapic::kRegLvtLint1, 0x1A7FFu},
      {Lapic::kRegLvtError, 0x100FFu},
      {Lapic::kRegLvtTimer, 0x100FFu},  // mode 3 is reserved: one-shot
      {Lapic::kRegTimerDivide, 0xBu},
  };
  for (auto [offset, bits] : expected) {
    wr(bsp, offset, 0xFFFF'FFFF);
    EXPECT_EQ(rd(bsp, offset), bits) << std::hex << offset;
  }
  wr(bsp, Lapic::kRegDfr, 0);
  EXPECT_EQ(rd(bsp, Lapic::kRegDfr), 0x0FFF'FFFFu) << "model bits written, the rest reads as ones";
  wr(bsp, Lapic::kRegTpr, 0x1234'5678);
  EXPECT_EQ(rd(bsp, Lapic::kRegTpr), 0x78u);
  wr(bsp, Lapic::kRegIcrHigh, 0x0312'3456);
  EXPECT_EQ(rd(bsp, Lapic::kRegIcrHigh), 0x0300'0000u);
}

TEST_F(LapicTest, NarrowWideAndMisalignedAccesses) {
  wr(bsp, Lapic::kRegTpr, 0x5A);
  wr(bsp, Lapic::kRegLdr, 0xC300'0000);
  std::array<std::uint8_t, 1> one{};
  bsp.read(Lapic::kRegLdr + 3, one);
  EXPECT_EQ(one[0], 0xC3) << "a byte of the register";
  std::array<std::uint8_t, 2> two{};
  bsp.read(Lapic::kRegTpr, two);
  EXPECT_EQ(devices::load_le(two), 0x5Au);
  bsp.read(Lapic::kRegTpr + 4, one);
  EXPECT_EQ(one[0], 0) << "bytes 4-15 of a slot are reserved";
  std::array<std::uint8_t, 8> eight{};
  bsp.read(Lapic::kRegLdr, eight);
  EXPECT_EQ(devices::load_le(eight), 0xC300'0000u);
  bsp.read(0xFFC, eight);  // runs past the window
  EXPECT_EQ(devices::load_le(eight), ~std::uint64_t{0});
  bsp.read(0x1000, one);
  EXPECT_EQ(one[0], 0xFF);

  const auto ignored = bsp.stats().ignored_accesses;
  const std::uint8_t byte = 0x77;
  bsp.write(Lapic::kRegTpr, std::span<const std::uint8_t>(&byte, 1));
  std::array<std::uint8_t, 4> four{0x66, 0, 0, 0};
  bsp.write(Lapic::kRegTpr + 4, four);
  bsp.write(Lapic::kRegTpr + 1, four);
  std::array<std::uint8_t, 8> wide{0x55};
  bsp.write(Lapic::kRegTpr, wide);
  bsp.write(0x2000, four);
  EXPECT_EQ(rd(bsp, Lapic::kRegTpr), 0x5Au) << "only aligned 32-bit stores write";
  EXPECT_EQ(bsp.stats().ignored_accesses, ignored + 5);

  // Reserved offsets read 0 and take no writes.
  for (unsigned offset : {0x00u, 0x10u, 0x40u, 0x70u, 0x290u, 0x2F0u, 0x3A0u, 0x3F0u, 0xFF0u}) {
    wr(bsp, offset, 0xFFFF'FFFF);
    EXPECT_EQ(rd(bsp, offset), 0u) << std::hex << offset;
  }
}

// -------------------------------------------------------------- priorities

TEST_F(LapicTest, HighestPendingVectorAboveThePprIsNext) {
  enable(bsp);
  raise(bsp, 0x51);
  raise(bsp, 0x61);
  raise(bsp, 0x62);
  EXPECT_EQ(bsp.next_interrupt(), 0x62);
  wr(bsp, Lapic::kRegTpr, 0x60);
  EXPECT_EQ(bsp.next_interrupt(), std::nullopt) << "class 6 is not above TPR class 6";
  wr(bsp, Lapic::kRegTpr, 0x5F);
  EXPECT_EQ(bsp.next_interrupt(), 0x62);
  wr(bsp, Lapic::kRegTpr, 0);

  ASSERT_TRUE(bsp.accept(0x62));
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegIsr, 0x62));
  EXPECT_FALSE(reg_bit(bsp, Lapic::kRegIrr, 0x62));
  EXPECT_EQ(rd(bsp, Lapic::kRegPpr), 0x60u);
  EXPECT_EQ(bsp.next_interrupt(), std::nullopt) << "0x61 is in the class in service";
  raise(bsp, 0x71);
  EXPECT_EQ(inject(bsp), 0x71) << "a higher class nests";
  EXPECT_EQ(rd(bsp, Lapic::kRegPpr), 0x70u);
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(rd(bsp, Lapic::kRegPpr), 0x60u);
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(inject(bsp), 0x61);
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(inject(bsp), 0x51);
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(bsp.next_interrupt(), std::nullopt);
  EXPECT_EQ(bsp.stats().eois, 4u);

  EXPECT_FALSE(bsp.accept(0x90)) << "nothing requested at 0x90";
  EXPECT_FALSE(reg_bit(bsp, Lapic::kRegIsr, 0x90));
}

TEST_F(LapicTest, PprAndAprFollowTheSdmRules) {
  enable(bsp);
  raise(bsp, 0x61);
  ASSERT_TRUE(bsp.accept(0x61));  // ISRV = 0x61
  wr(bsp, Lapic::kRegTpr, 0x6A);
  EXPECT_EQ(rd(bsp, Lapic::kRegPpr), 0x6Au) << "TPR class >= ISRV class: PPR = TPR";
  wr(bsp, Lapic::kRegTpr, 0x5A);
  EXPECT_EQ(rd(bsp, Lapic::kRegPpr), 0x60u) << "else ISRV[7:4]:0";
  // APR: TPR when TPR[7:4] >= IRRV[7:4] and > ISRV[7:4], else the highest class.
  wr(bsp, Lapic::kRegTpr, 0x7A);
  EXPECT_EQ(rd(bsp, Lapic::kRegApr), 0x7Au);
  raise(bsp, 0x81);
  EXPECT_EQ(rd(bsp, Lapic::kRegApr), 0x80u);
  wr(bsp, Lapic::kRegTpr, 0x6A);
  wr(bsp, Lapic::kRegEoi, 0);
  (void)bsp.accept(0x81);
  EXPECT_EQ(rd(bsp, Lapic::kRegApr), 0x80u) << "ISRV class above TPR's";
  EXPECT_EQ(bsp.arbitration_priority(), 0x80u);
}

TEST_F(LapicTest, Cr8IsTheTprClass) {
  enable(bsp);
  wr(bsp, Lapic::kRegTpr, 0x5C);
  EXPECT_EQ(bsp.cr8(), 5u);
  bsp.set_cr8(5);
  EXPECT_EQ(rd(bsp, Lapic::kRegTpr), 0x5Cu) << "an unchanged class keeps the sub-class";
  bsp.set_cr8(0x9);
  EXPECT_EQ(rd(bsp, Lapic::kRegTpr), 0x90u);
  raise(bsp, 0x95);
  EXPECT_EQ(bsp.next_interrupt(), std::nullopt);
  bsp.set_cr8(0x18);  // only bits 3:0 exist
  EXPECT_EQ(bsp.cr8(), 8u);
  EXPECT_EQ(bsp.next_interrupt(), 0x95) << "lowering CR8 lets the blocked vector through";
}

// ----------------------------------------------------------------- EOI

TEST_F(LapicTest, EoiOfALevelTriggeredVectorIsBroadcast) {
  enable(bsp);
  raise(bsp, 0x30, /*level=*/true);
  raise(bsp, 0x40, /*level=*/false);
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegTmr, 0x30));
  EXPECT_FALSE(reg_bit(bsp, Lapic::kRegTmr, 0x40));
  EXPECT_EQ(inject(bsp), 0x40);
  wr(bsp, Lapic::kRegEoi, 0x1234);  // xAPIC: any value
  EXPECT_TRUE(bench.eoi_broadcasts().empty()) << "edge vectors are not broadcast";
  EXPECT_EQ(inject(bsp), 0x30);
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(bench.eoi_broadcasts(), (std::vector<std::uint8_t>{0x30}));
  EXPECT_EQ(bsp.stats().eoi_broadcasts, 1u);
  // An EOI with nothing in service changes nothing and broadcasts nothing.
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(bench.eoi_broadcasts().size(), 1u);
  EXPECT_EQ(bsp.stats().eois, 2u);
  // The same vector edge-triggered later is not broadcast.
  raise(bsp, 0x30, false);
  EXPECT_FALSE(reg_bit(bsp, Lapic::kRegTmr, 0x30));
  EXPECT_EQ(inject(bsp), 0x30);
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(bench.eoi_broadcasts().size(), 1u);
}

TEST_F(LapicTest, RepeatedInterruptsCoalesceAndKickOnce) {
  enable(bsp);
  const auto kicks = bench.kicks[0].load();
  for (int i = 0; i < 1000; ++i) raise(bsp, 0x50);
  EXPECT_EQ(bench.kicks[0].load(), kicks + 1);
  EXPECT_EQ(bsp.stats().interrupts, 1000u);
  EXPECT_EQ(bsp.stats().coalesced, 999u);
  EXPECT_EQ(inject(bsp), 0x50);
  raise(bsp, 0x50);  // in service: one more may wait in the IRR
  EXPECT_EQ(bench.kicks[0].load(), kicks + 2);
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegIsr, 0x50));
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegIrr, 0x50));
  EXPECT_EQ(bsp.next_interrupt(), std::nullopt);
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(inject(bsp), 0x50);
}

// ----------------------------------------------------------------- ESR

TEST_F(LapicTest, EsrLatchesErrorsOnWriteAndRaisesTheErrorInterrupt) {
  enable(bsp);
  wr(bsp, Lapic::kRegIcrLow, 0x05 | icr_shorthand(ApicShorthand::self));  // illegal vector
  EXPECT_EQ(rd(bsp, Lapic::kRegEsr), 0u) << "errors show only after a write to the ESR";
  EXPECT_FALSE(reg_bit(bsp, Lapic::kRegIrr, 0x05)) << "an illegal vector is never requested";
  wr(bsp, Lapic::kRegEsr, 0xFFFF);
  EXPECT_EQ(rd(bsp, Lapic::kRegEsr), Lapic::kEsrSendIllegalVector);
  wr(bsp, Lapic::kRegEsr, 0);
  EXPECT_EQ(rd(bsp, Lapic::kRegEsr), 0u) << "a second write clears it";

  wr(bsp, Lapic::kRegLvtError, 0xFE);  // unmasked
  raise(bsp, 0x0F);
  EXPECT_EQ(bsp.next_interrupt(), 0xFE) << "the error interrupt";
  wr(bsp, Lapic::kRegEsr, 0);
  EXPECT_EQ(rd(bsp, Lapic::kRegEsr), Lapic::kEsrReceiveIllegalVector);
  EXPECT_EQ(bsp.stats().illegal_vectors, 2u);

  // An error LVT with an illegal vector logs that too, and stops there.
  wr(bsp, Lapic::kRegLvtError, 0x02);
  raise(bsp, 0x01);
  wr(bsp, Lapic::kRegEsr, 0);
  EXPECT_EQ(rd(bsp, Lapic::kRegEsr), Lapic::kEsrReceiveIllegalVector);
  EXPECT_EQ(bsp.stats().illegal_vectors, 4u) << "the raised one, and the error interrupt's own";
}

// ----------------------------------------------------------------- SVR

TEST_F(LapicTest, SoftwareDisableMasksEveryLvtDropsFixedInterruptsAndKeepsTheRest) {
  enable(bsp);
  for (unsigned lvt : kLvts) wr(bsp, lvt, 0x40);
  raise(bsp, 0x80);
  ASSERT_TRUE(bsp.accept(0x80));
  raise(bsp, 0x90);
  wr(bsp, Lapic::kRegSvr, 0xFF);  // software disable
  for (unsigned lvt : kLvts) EXPECT_EQ(rd(bsp, lvt) & kMasked, kMasked) << std::hex << lvt;
  wr(bsp, Lapic::kRegLvtLint0, kExtInt);
  EXPECT_EQ(rd(bsp, Lapic::kRegLvtLint0), kExtInt | kMasked) << "the mask cannot be cleared while disabled";
  raise(bsp, 0xA0);
  EXPECT_FALSE(reg_bit(bsp, Lapic::kRegIrr, 0xA0));
  EXPECT_EQ(bsp.stats().dropped_disabled, 1u);
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegIsr, 0x80)) << "held";
  EXPECT_EQ(bsp.next_interrupt(), 0x90) << "what is in the IRR is still handled";
  bsp.receive(ApicDelivery::nmi, 0, false);
  EXPECT_TRUE(bsp.take_events().nmi) << "NMI still arrives";
  enable(bsp);
  for (unsigned lvt : kLvts) EXPECT_EQ(rd(bsp, lvt) & kMasked, kMasked) << "enabling unmasks nothing";
}

// ---------------------------------------------------------- LINT pins

TEST_F(LapicTest, Lint0ExtIntFollowsThe8259Output) {
  bsp.set_lint(0, true);
  EXPECT_FALSE(bsp.extint_pending()) << "LINT0 is masked at power-on";
  const auto kicks = bench.kicks[0].load();
  bsp.setup_virtual_wire();
  EXPECT_EQ(rd(bsp, Lapic::kRegSvr), 0x1FFu);
  EXPECT_EQ(rd(bsp, Lapic::kRegLvtLint0), kExtInt);
  EXPECT_EQ(rd(bsp, Lapic::kRegLvtLint1), kNmi);
  EXPECT_TRUE(bsp.extint_pending()) << "an asserted INTR shows once LINT0 is unmasked";
  bsp.set_lint(0, false);
  EXPECT_FALSE(bsp.extint_pending());
  bsp.set_lint(0, true);
  EXPECT_TRUE(bsp.extint_pending());
  EXPECT_GT(bench.kicks[0].load(), kicks) << "a rising INTR kicks the vCPU";
  EXPECT_TRUE(bsp.pending_wakeup());
  EXPECT_FALSE(bsp.next_interrupt()) << "ExtINT bypasses the IRR";
  bsp.extint_accepted();
  EXPECT_TRUE(bsp.extint_pending()) << "the level is the PIC's to drop";
  bsp.set_lint(0, false);
  wr(bsp, Lapic::kRegLvtLint0, kExtInt | kMasked);
  bsp.set_lint(0, true);
  EXPECT_FALSE(bsp.extint_pending());

  // An ExtINT message (IOAPIC pin in ExtINT mode) is latched until taken.
  bsp.receive(ApicDelivery::extint, 0, false);
  EXPECT_TRUE(bsp.extint_pending());
  bsp.extint_accepted();
  EXPECT_FALSE(bsp.extint_pending());
}

TEST_F(LapicTest, Lint1NmiOnRisingEdgesOnly) {
  bsp.setup_virtual_wire();
  bsp.set_lint(1, true);
  bsp.set_lint(1, true);
  auto events = bsp.take_events();
  EXPECT_TRUE(events.nmi);
  EXPECT_FALSE(events.init);
  EXPECT_FALSE(bsp.take_events().nmi) << "a held level is one NMI";
  bsp.set_lint(1, false);
  bsp.set_lint(1, true);
  bsp.set_lint(1, false);
  bsp.set_lint(1, true);
  EXPECT_TRUE(bsp.take_events().nmi) << "NMIs coalesce while one waits";
  EXPECT_FALSE(bsp.take_events().nmi);
  wr(bsp, Lapic::kRegLvtLint1, kNmi | kMasked);
  bsp.set_lint(1, false);
  bsp.set_lint(1, true);
  EXPECT_FALSE(bsp.take_events().nmi) << "a masked LINT1 delivers nothing";
}

TEST_F(LapicTest, LintFixedLevelTriggeredUsesRemoteIrr) {
  enable(bsp);
  wr(bsp, Lapic::kRegLvtLint1, 0x70 | (1u << 15));  // fixed, level
  bsp.set_lint(1, true);
  EXPECT_EQ(rd(bsp, Lapic::kRegLvtLint1) & Lapic::kLvtRemoteIrr, Lapic::kLvtRemoteIrr);
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegTmr, 0x70));
  EXPECT_EQ(inject(bsp), 0x70);
  bsp.set_lint(1, false);
  bsp.set_lint(1, true);  // Remote IRR still set: no second request
  EXPECT_FALSE(reg_bit(bsp, Lapic::kRegIrr, 0x70));
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(rd(bsp, Lapic::kRegLvtLint1) & Lapic::kLvtRemoteIrr, Lapic::kLvtRemoteIrr) << "re-raised at once";
  EXPECT_EQ(inject(bsp), 0x70) << "still asserted at the EOI: delivered again";
  bsp.set_lint(1, false);
  wr(bsp, Lapic::kRegEoi, 0);
  EXPECT_EQ(rd(bsp, Lapic::kRegLvtLint1) & Lapic::kLvtRemoteIrr, 0u);
  EXPECT_FALSE(bsp.next_interrupt());

  // Edge-triggered fixed: one request per rising edge.
  wr(bsp, Lapic::kRegLvtLint0, 0x71);
  bsp.set_lint(0, true);
  bsp.set_lint(0, true);
  EXPECT_EQ(inject(bsp), 0x71);
  EXPECT_FALSE(bsp.next_interrupt());
}

TEST_F(LapicTest, DisabledApicPassesLintPinsThroughAsIntrAndNmi) {
  ASSERT_TRUE(bsp.write_msr(Lapic::kMsrApicBase, 0xFEE0'0000 | Lapic::kBaseBsp));
  EXPECT_FALSE(bsp.enabled());
  bsp.set_lint(0, true);
  EXPECT_TRUE(bsp.extint_pending()) << "LINT0 is the CPU's INTR";
  bsp.set_lint(1, true);
  EXPECT_TRUE(bsp.take_events().nmi) << "LINT1 is NMI";
  raise(bsp, 0x80);
  EXPECT_FALSE(bsp.next_interrupt()) << "a disabled APIC accepts nothing";
}

// ------------------------------------------------------ INIT, SIPI, NMI

TEST_F(LapicTest, InitResetsTheApicButItsIdAndMode) {
  enable(ap);
  wr(ap, Lapic::kRegTpr, 0x20);
  wr(ap, Lapic::kRegLdr, 0x0100'0000);
  wr(ap, Lapic::kRegLvtTimer, 0x40 | kPeriodic);
  wr(ap, Lapic::kRegTimerInitial, 1'000'000);
  raise(ap, 0x80);
  ap.receive(ApicDelivery::startup, 0x12, false);  // a SIPI before the INIT is lost
  const auto kicks = bench.kicks[1].load();
  ap.receive(ApicDelivery::init, 0, false);
  EXPECT_GT(bench.kicks[1].load(), kicks);
  EXPECT_EQ(rd(ap, Lapic::kRegId), 1u << 24);
  EXPECT_EQ(ap.apic_base(), 0xFEE0'0800u);
  EXPECT_EQ(rd(ap, Lapic::kRegSvr), 0xFFu);
  EXPECT_EQ(rd(ap, Lapic::kRegTpr), 0u);
  EXPECT_EQ(rd(ap, Lapic::kRegLdr), 0u);
  EXPECT_EQ(rd(ap, Lapic::kRegLvtTimer), kMasked);
  EXPECT_EQ(rd(ap, Lapic::kRegTimerInitial), 0u);
  EXPECT_EQ(ap.timer_deadline(), 0) << "the timer is stopped";
  EXPECT_FALSE(reg_bit(ap, Lapic::kRegIrr, 0x80));
  ap.receive(ApicDelivery::startup, 0x9A, false);
  ap.receive(ApicDelivery::startup, 0x9B, false);  // the second SIPI finds the AP started
  const auto events = ap.take_events();
  EXPECT_TRUE(events.init);
  EXPECT_EQ(events.sipi, 0x9A);
  bench.run_until(bench.clock.now() + 10 * kMillisecond);
  EXPECT_EQ(ap.timer_stats().handler_runs, 0u) << "no firing of the timer INIT stopped";
}

TEST_F(LapicTest, SmiAndNmiAreLatchedEvents) {
  bsp.receive(ApicDelivery::smi, 0, false);
  bsp.receive(ApicDelivery::nmi, 0, false);
  EXPECT_TRUE(bsp.pending_wakeup());
  const auto events = bsp.take_events();
  EXPECT_TRUE(events.smi);
  EXPECT_TRUE(events.nmi);
  EXPECT_FALSE(events.init);
  EXPECT_FALSE(events.sipi);
  EXPECT_FALSE(bsp.pending_wakeup());
}

// --------------------------------------------------------- IA32_APIC_BASE

TEST_F(LapicTest, ApicBaseTransitionsFollowTheSdm) {
  const std::uint64_t base = 0xFEE0'0000;
  const std::uint64_t en = Lapic::kBaseEnable, extd = Lapic::kBaseExtd, bsp_flag = Lapic::kBaseBsp;
  EXPECT_FALSE(ap.write_msr(Lapic::kMsrApicBase, base | extd)) << "EN=0 EXTD=1 is the invalid state";
  EXPECT_FALSE(ap.write_msr(Lapic::kMsrApicBase, base | en | 0x1)) << "reserved bit 0";
  EXPECT_FALSE(ap.write_msr(Lapic::kMsrApicBase, base | en | (1u << 9))) << "reserved bit 9";
  EXPECT_FALSE(ap.write_msr(Lapic::kMsrApicBase, (std::uint64_t{1} << 52) | base | en)) << "beyond 52 bits";
  EXPECT_FALSE(ap.write_msr(Lapic::kMsrApicBase, 0xFEB0'0000 | en)) << "relocation is not supported";
  EXPECT_EQ(ap.apic_base(), base | en) << "refused writes change nothing";

  ASSERT_TRUE(ap.write_msr(Lapic::kMsrApicBase, base | en | extd));  // xAPIC -> x2APIC
  EXPECT_TRUE(ap.x2apic_mode());
  EXPECT_FALSE(ap.write_msr(Lapic::kMsrApicBase, base | en)) << "x2APIC -> xAPIC is illegal";
  ASSERT_TRUE(ap.write_msr(Lapic::kMsrApicBase, base));  // x2APIC -> disabled
  EXPECT_FALSE(ap.enabled());
  EXPECT_FALSE(ap.write_msr(Lapic::kMsrApicBase, base | en | extd)) << "disabled -> x2APIC is illegal";
  ASSERT_TRUE(ap.write_msr(Lapic::kMsrApicBase, base | en));  // disabled -> xAPIC
  EXPECT_TRUE(ap.enabled());
  EXPECT_FALSE(ap.x2apic_mode());
  ASSERT_TRUE(ap.write_msr(Lapic::kMsrApicBase, base | en | bsp_flag));
  EXPECT_TRUE(ap.is_bsp()) << "the BSP flag is read/write";
  EXPECT_EQ(ap.read_msr(Lapic::kMsrApicBase), base | en | bsp_flag);
}

TEST_F(LapicTest, DisablingLosesEveryRegisterAndStopsTheTimer) {
  enable(ap);
  wr(ap, Lapic::kRegTpr, 0x30);
  wr(ap, Lapic::kRegLvtTimer, 0x40 | kPeriodic);
  wr(ap, Lapic::kRegTimerInitial, 1'000'000);
  raise(ap, 0x80);
  ASSERT_TRUE(ap.write_msr(Lapic::kMsrApicBase, 0xFEE0'0000));
  EXPECT_EQ(rd(ap, Lapic::kRegTpr), 0xFFFF'FFFFu) << "the window is not decoded while disabled";
  bench.run_until(bench.clock.now() + 10 * kMillisecond);
  EXPECT_EQ(ap.timer_stats().handler_runs, 0u);
  ASSERT_TRUE(ap.write_msr(Lapic::kMsrApicBase, 0xFEE0'0000 | Lapic::kBaseEnable));
  EXPECT_EQ(rd(ap, Lapic::kRegTpr), 0u);
  EXPECT_EQ(rd(ap, Lapic::kRegSvr), 0xFFu);
  EXPECT_EQ(rd(ap, Lapic::kRegLvtTimer), kMasked);
  EXPECT_EQ(rd(ap, Lapic::kRegTimerInitial), 0u);
  EXPECT_FALSE(reg_bit(ap, Lapic::kRegIrr, 0x80));
  EXPECT_EQ(rd(ap, Lapic::kRegId), 1u << 24) << "the ID survives";
}

TEST(LapicConfig, WithoutX2apicOrTscDeadlineThoseFault) {
  ApicBench bench(1, Lapic::Config{.x2apic = false, .tsc_deadline = false});
  Lapic& apic = bench.apic(0);
  EXPECT_FALSE(apic.write_msr(Lapic::kMsrApicBase, apic.apic_base() | Lapic::kBaseExtd));
  EXPECT_FALSE(apic.read_msr(Lapic::kMsrTscDeadline));
  EXPECT_FALSE(apic.write_msr(Lapic::kMsrTscDeadline, 1000));
  wr(apic, Lapic::kRegLvtTimer, 0x40 | kTscDeadline);
  EXPECT_EQ(rd(apic, Lapic::kRegLvtTimer), 0x40u | kMasked) << "mode 2 is reserved: one-shot";
  EXPECT_EQ(apic.stats().msr_faults, 3u);
}

// ---------------------------------------------------------------- x2APIC

TEST_F(LapicTest, X2apicRegistersThroughMsrs) {
  enable(bsp);
  ASSERT_TRUE(to_x2apic(ap));
  EXPECT_EQ(rd(ap, Lapic::kRegId), 0xFFFF'FFFFu) << "no MMIO in x2APIC mode";
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegId)), 1u) << "32-bit ID";
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegVersion)), Lapic::kVersion);
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegLdr)), (0u << 16) | (1u << 1)) << "cluster 0, member bit 1";
  ASSERT_TRUE(ap.write_msr(msr_of(Lapic::kRegSvr), 0x1FF));
  ASSERT_TRUE(ap.write_msr(msr_of(Lapic::kRegTpr), 0x20));
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegTpr)), 0x20u);
  EXPECT_EQ(ap.cr8(), 2u);
  ASSERT_TRUE(ap.write_msr(msr_of(Lapic::kRegSelfIpi), 0x55));
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegIrr) + 2), 1u << (0x55 - 64));
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegPpr)), 0x20u);
  EXPECT_EQ(inject(ap), 0x55);
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegIsr) + 2), 1u << (0x55 - 64));
  ASSERT_TRUE(ap.write_msr(msr_of(Lapic::kRegEoi), 0));
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegIsr) + 2), 0u);
  // 64-bit ICR: destination in bits 63:32, read back whole.
  const std::uint64_t icr = (std::uint64_t{0} << 32) | 0x66;
  ASSERT_TRUE(ap.write_msr(msr_of(Lapic::kRegIcrLow), icr));
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegIcrLow)), icr);
  EXPECT_TRUE(reg_bit(bsp, Lapic::kRegIrr, 0x66)) << "to x2APIC ID 0";
  ASSERT_TRUE(ap.write_msr(msr_of(Lapic::kRegLvtTimer), 0x30 | kPeriodic));
  ASSERT_TRUE(ap.write_msr(msr_of(Lapic::kRegTimerDivide), 0xB));
  ASSERT_TRUE(ap.write_msr(msr_of(Lapic::kRegTimerInitial), 1'000'000));
  bench.clock.advance(250 * kMicrosecond);
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegTimerCurrent)), 750'000u);
  ASSERT_TRUE(ap.write_msr(msr_of(Lapic::kRegEsr), 0));
  EXPECT_EQ(ap.read_msr(msr_of(Lapic::kRegEsr)), 0u);
}

TEST_F(LapicTest, X2apicInvalidAccessesFault) {
  const auto faults = ap.stats().msr_faults;
  EXPECT_FALSE(ap.read_msr(msr_of(Lapic::kRegTpr))) << "x2APIC MSRs fault in xAPIC mode";
  EXPECT_FALSE(ap.write_msr(msr_of(Lapic::kRegTpr), 0));
  ASSERT_TRUE(to_x2apic(ap));
  // Registers that are not there in x2APIC mode, and write-only ones.
  for (unsigned offset : {Lapic::kRegApr, Lapic::kRegEoi, Lapic::kRegRrd, Lapic::kRegDfr, Lapic::kRegCmci,
                          Lapic::kRegIcrHigh, Lapic::kRegSelfIpi, 0x000u, 0x010u, 0x290u, 0x3A0u, 0xFF0u}) {
    EXPECT_FALSE(ap.read_msr(msr_of(offset))) << "read " << std::hex << offset;
  }
  // Read-only ones, and those that do not exist.
  for (unsigned offset : {Lapic::kRegId, Lapic::kRegVersion, Lapic::kRegPpr, Lapic::kRegLdr, Lapic::kRegIsr,
                          Lapic::kRegTmr + 0x70, Lapic::kRegIrr + 0x30, Lapic::kRegTimerCurrent, Lapic::kRegApr,
                          Lapic::kRegRrd, Lapic::kRegDfr, Lapic::kRegCmci, Lapic::kRegIcrHigh, 0x000u, 0xFF0u}) {
    EXPECT_FALSE(ap.write_msr(msr_of(offset), 0)) << "write " << std::hex << offset;
  }
  EXPECT_FALSE(ap.write_msr(msr_of(Lapic::kRegEoi), 1)) << "non-zero EOI";
  EXPECT_FALSE(ap.write_msr(msr_of(Lapic::kRegEsr), 1)) << "non-zero ESR";
  EXPECT_FALSE(ap.write_msr(msr_of(Lapic::kRegTpr), std::uint64_t{1} << 32)) << "bits 63:32";
  for (unsigned bit : {13u, 16u, 17u, 20u, 31u}) {
    EXPECT_FALSE(ap.write_msr(msr_of(Lapic::kRegIcrLow), 0x40 | (std::uint64_t{1} << bit))) << "ICR bit " << bit;
  }
  EXPECT_EQ(ap.stats().ipis_sent, 0u) << "a faulting ICR write sends nothing";
  EXPECT_FALSE(ap.read_msr(0x900));
  EXPECT_FALSE(ap.read_msr(0x7FF));
  EXPECT_FALSE(Lapic::is_apic_msr(0x900));
  EXPECT_TRUE(Lapic::is_apic_msr(0x8FF));
  EXPECT_TRUE(Lapic::is_apic_msr(Lapic::kMsrApicBase));
  EXPECT_TRUE(Lapic::is_apic_msr(Lapic::kMsrTscDeadline));
  EXPECT_EQ(ap.stats().msr_faults, faults + 39u);
}

// ----------------------------------------------------------------- timer

TEST_F(LapicTest, TimerOneShotAndPeriodicRaiseTheirVector) {
  enable(bsp);
  wr(bsp, Lapic::kRegTimerDivide, 0xB);  // 1 ns per count
  wr(bsp, Lapic::kRegLvtTimer, 0xEC);
  const Nanos start = bench.clock.now();
  wr(bsp, Lapic::kRegTimerInitial, 500'000);
  bench.clock.set(start + 100'000);
  EXPECT_EQ(rd(bsp, Lapic::kRegTimerCurrent), 400'000u);
  bench.run_until(start + 499'999);
  EXPECT_FALSE(bsp.next_interrupt());
  bench.run_until(start + 500'000);
  EXPECT_EQ(inject(bsp), 0xEC);
  EXPECT_FALSE(reg_bit(bsp, Lapic::kRegTmr, 0xEC)) << "the timer is edge-triggered";
  wr(bsp, Lapic::kRegEoi, 0);

  wr(bsp, Lapic::kRegLvtTimer, 0xED | kPeriodic);
  const Nanos periodic_start = bench.clock.now();
  wr(bsp, Lapic::kRegTimerInitial, 200'000);
  for (int i = 1; i <= 5; ++i) {
    bench.run_until(periodic_start + i * 200'000);
    EXPECT_EQ(inject(bsp), 0xED) << i;
    wr(bsp, Lapic::kRegEoi, 0);
  }
  EXPECT_EQ(bsp.timer_stats().handler_runs, 6u);
}

TEST_F(LapicTest, TimerTscDeadlineThroughTheMsr) {
  enable(bsp);
  wr(bsp, Lapic::kRegLvtTimer, 0xEE | kTscDeadline);
  const auto tsc_now = static_cast<std::uint64_t>(bench.clock.now());  // 1 GHz TSC from 0
  ASSERT_TRUE(bsp.write_msr(Lapic::kMsrTscDeadline, tsc_now + 300'000));
  EXPECT_EQ(bsp.read_msr(Lapic::kMsrTscDeadline), tsc_now + 300'000);
  bench.run_until(bench.clock.now() + 299'999);
  EXPECT_FALSE(bsp.next_interrupt());
  bench.run_until(bench.clock.now() + 1);
  EXPECT_EQ(inject(bsp), 0xEE);
  EXPECT_EQ(bsp.read_msr(Lapic::kMsrTscDeadline), 0u) << "cleared when it fires";
  wr(bsp, Lapic::kRegEoi, 0);

  ASSERT_TRUE(bsp.write_msr(Lapic::kMsrTscDeadline, 1));  // in the past: fires at once
  bench.system.loop(0).run_due();
  EXPECT_EQ(inject(bsp), 0xEE);
  wr(bsp, Lapic::kRegEoi, 0);

  ASSERT_TRUE(bsp.write_msr(Lapic::kMsrTscDeadline, UINT64_MAX));  // never, in practice
  bench.run_until(bench.clock.now() + timers::kSecond);
  EXPECT_FALSE(bsp.next_interrupt());
  EXPECT_EQ(bsp.read_msr(Lapic::kMsrTscDeadline), UINT64_MAX);

  wr(bsp, Lapic::kRegLvtTimer, 0xEE);  // one-shot: the MSR reads 0 and ignores writes
  EXPECT_TRUE(bsp.write_msr(Lapic::kMsrTscDeadline, 5));
  EXPECT_EQ(bsp.read_msr(Lapic::kMsrTscDeadline), 0u);
}

TEST_F(LapicTest, TimerIsMaskedWhileSoftwareDisabledAndItsIllegalVectorIsAnError) {
  wr(bsp, Lapic::kRegTimerDivide, 0xB);
  wr(bsp, Lapic::kRegLvtTimer, 0x40 | kPeriodic);  // disabled: stays masked
  EXPECT_EQ(rd(bsp, Lapic::kRegLvtTimer), 0x40u | kPeriodic | kMasked);
  wr(bsp, Lapic::kRegTimerInitial, 200'000);
  bench.run_until(bench.clock.now() + kMillisecond);
  EXPECT_GE(bsp.timer_stats().handler_runs, 4u) << "the timer counts while masked";
  EXPECT_FALSE(bsp.next_interrupt());

  enable(bsp);
  wr(bsp, Lapic::kRegLvtTimer, 0x40 | kPeriodic);
  bench.run_until(bench.clock.now() + 200'000);
  EXPECT_EQ(inject(bsp), 0x40);
  wr(bsp, Lapic::kRegEoi, 0);
  wr(bsp, Lapic::kRegSvr, 0xFF);  // software disable masks the running timer
  EXPECT_EQ(rd(bsp, Lapic::kRegLvtTimer) & kMasked, kMasked);
  bench.run_until(bench.clock.now() + kMillisecond);
  EXPECT_FALSE(bsp.next_interrupt());

  enable(bsp);
  wr(bsp, Lapic::kRegLvtTimer, 0x03 | kPeriodic);  // illegal vector
  bench.run_until(bench.clock.now() + 200'000);
  wr(bsp, Lapic::kRegEsr, 0);
  EXPECT_EQ(rd(bsp, Lapic::kRegEsr), Lapic::kEsrReceiveIllegalVector);
  EXPECT_FALSE(bsp.next_interrupt());
}

TEST_F(LapicTest, TimerPeriodOfOneCountCoalescesWithoutSpinning) {
  testing::LogCapture logs;
  enable(bsp);
  wr(bsp, Lapic::kRegTimerDivide, 0xB);
  wr(bsp, Lapic::kRegLvtTimer, 0x40 | kPeriodic);
  wr(bsp, Lapic::kRegTimerInitial, 1);
  const auto kicks = bench.kicks[0].load();
  run_loop_until(bench.clock, bench.system.loop(0), bench.clock.now() + 10 * kMillisecond, {}, 200);
  EXPECT_LE(bsp.timer_stats().handler_runs, 101u);
  EXPECT_EQ(bench.kicks[0].load(), kicks + 1) << "one vector waiting: one kick";
  EXPECT_EQ(inject(bsp), 0x40);
  EXPECT_LE(logs.lines(), 10u);
}

// -------------------------------------------------------------- lifecycle

TEST_F(LapicTest, DrainResetAndPauseResume) {
  enable(ap);
  wr(ap, Lapic::kRegTimerDivide, 0xB);
  wr(ap, Lapic::kRegLvtTimer, 0x40 | kPeriodic);
  wr(ap, Lapic::kRegTimerInitial, 300'000);
  const Nanos deadline = ap.timer_deadline();
  ap.pause();
  bench.run_until(bench.clock.now() + kMillisecond);
  EXPECT_EQ(ap.timer_stats().handler_runs, 0u);
  EXPECT_EQ(ap.timer_deadline(), deadline) << "pause keeps the deadline";
  ap.resume();
  bench.system.loop(0).run_due();
  EXPECT_EQ(ap.timer_stats().handler_runs, 1u) << "the missed deadline fires on resume";

  ASSERT_TRUE(to_x2apic(ap));
  ap.drain_timers();
  bench.run_until(bench.clock.now() + kMillisecond);
  EXPECT_EQ(ap.timer_stats().handler_runs, 1u);
  ap.reset(bench.system.loop(1));
  EXPECT_EQ(ap.apic_base(), 0xFEE0'0800u) << "power-on: xAPIC, enabled, not the BSP";
  EXPECT_EQ(rd(ap, Lapic::kRegSvr), 0xFFu);
  EXPECT_EQ(rd(ap, Lapic::kRegLvtTimer), kMasked);
  EXPECT_FALSE(ap.next_interrupt());
  enable(ap);
  wr(ap, Lapic::kRegLvtTimer, 0x41);
  wr(ap, Lapic::kRegTimerInitial, 100);
  bench.run_until(bench.clock.now() + kMillisecond, 1);
  EXPECT_EQ(inject(ap), 0x41) << "the timer works again, on the loop reset() named";
}

}  // namespace
}  // namespace vmm::testing
