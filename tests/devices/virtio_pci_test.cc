// The virtio-pci modern transport (VIRTIO 1.1, 4.1): what Linux's
// virtio_pci_modern probe finds, feature negotiation, queue set-up rules,
// interrupts both ways, reset, and registers under random abuse.
#include <chrono>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "devices/error.h"
#include "tests/devices/virtio_rig.h"

namespace vmm::devices::virtio {
namespace {

using testing::BlockRig;
using F = VirtioPciFunction;
constexpr std::uint8_t kAck = kStatusAcknowledge, kDrv = kStatusDriver, kFOk = kStatusFeaturesOk,
                       kDOk = kStatusDriverOk;

std::uint32_t cfg(F& f, std::uint32_t offset, std::size_t width = 4) {
  std::array<std::uint8_t, 4> data{};
  f.config_read(offset, std::span(data.data(), width));
  return static_cast<std::uint32_t>(load_le(std::span<const std::uint8_t>(data.data(), width)));
}
void set_cfg(F& f, std::uint32_t offset, std::uint32_t value, std::size_t width = 4) {
  std::array<std::uint8_t, 4> data{};
  store_le(data, value);
  f.config_write(offset, std::span<const std::uint8_t>(data.data(), width));
}

TEST(VirtioPci, IdentityAndTheCapabilitiesLinuxLooksFor) {
  BlockRig rig;
  EXPECT_EQ(cfg(rig.function, pci::kVendorId), 0x1042'1AF4u) << "modern-only virtio-blk";
  EXPECT_EQ(cfg(rig.function, pci::kRevisionId) & 0xFF, 1u);
  EXPECT_GE(cfg(rig.function, pci::kSubsystemId, 2), 0x40u);
  EXPECT_EQ(cfg(rig.function, pci::kInterruptPin, 1), 1u);
  EXPECT_EQ(cfg(rig.function, pci::kInterruptLine, 1), 11u);
  EXPECT_EQ(rig.function.bar_size(0), F::kBarSize);

  std::map<std::uint8_t, std::uint32_t> virtio;  // cfg_type -> capability offset
  bool msix = false;
  for (std::uint32_t at = cfg(rig.function, pci::kCapabilityPointer, 1), guard = 0; at != 0 && guard < 48; ++guard) {
    const std::uint8_t id = static_cast<std::uint8_t>(cfg(rig.function, at, 1));
    if (id == 0x09) virtio[static_cast<std::uint8_t>(cfg(rig.function, at + 3, 1))] = at;
    msix |= id == pci::Msix::kCapabilityId;
    at = cfg(rig.function, at + 1, 1);
  }
  EXPECT_TRUE(msix);
  ASSERT_EQ(virtio.size(), 5u) << "common, notify, ISR, device, PCI config access";
  struct Expect {
    std::uint8_t type;
    std::uint32_t offset, length;
  };
  for (const Expect& e : {Expect{F::kCapCommon, 0x0000, 0x38}, Expect{F::kCapNotify, 0x3000, 4},
                          Expect{F::kCapIsr, 0x1000, 1}, Expect{F::kCapDevice, 0x2000, VirtioBlock::kConfigSize}}) {
    const std::uint32_t at = virtio[e.type];
    EXPECT_EQ(cfg(rig.function, at + 4, 1), 0u) << "BAR 0";
    EXPECT_EQ(cfg(rig.function, at + 8), e.offset) << int{e.type};
    EXPECT_EQ(cfg(rig.function, at + 12), e.length) << int{e.type};
  }
  EXPECT_EQ(cfg(rig.function, virtio[F::kCapNotify] + 2, 1), 20u) << "cap_len";
  EXPECT_EQ(cfg(rig.function, virtio[F::kCapNotify] + 16), F::kNotifyMultiplier);
}

TEST(VirtioPci, FeaturesNegotiateOnlyAsASubsetWithVersion1) {
  BlockRig rig;
  auto& d = rig.driver;
  const std::uint64_t offered = d.device_features();
  EXPECT_EQ(offered, rig.block.device_features());
  EXPECT_TRUE(offered & bit(kFeatureVersion1));
  d.set_common(F::kDeviceFeatureSelect, 7, 4);
  EXPECT_EQ(d.common(F::kDeviceFeature, 4), 0u) << "selects past 1 read zero";

  EXPECT_FALSE(d.negotiate(offered & ~bit(kFeatureVersion1))) << "VERSION_1 is required";
  EXPECT_FALSE(d.negotiate(offered | bit(40))) << "not offered";
  EXPECT_TRUE(d.negotiate(bit(kFeatureVersion1)));
  d.write_features(offered);
  d.set_common(F::kDriverFeatureSelect, 0, 4);
  EXPECT_EQ(d.common(F::kDriverFeature, 4), 0u) << "features are frozen after FEATURES_OK";

  d.set_status(0);
  d.write_features(offered);  // before DRIVER: ignored
  d.set_status(kAck | kDrv);
  d.set_common(F::kDriverFeatureSelect, 1, 4);
  EXPECT_EQ(d.common(F::kDriverFeature, 4), 0u);
}

TEST(VirtioPci, StatusCannotGoBackwardsOrSkipFeaturesOk) {
  BlockRig rig;
  auto& d = rig.driver;
  d.set_status(kAck | kDrv);
  d.set_status(kAck | kDrv | kDOk);
  EXPECT_EQ(d.status(), kAck | kDrv) << "DRIVER_OK without FEATURES_OK";
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures));
  d.set_status(kAck | kFOk);
  EXPECT_EQ(d.status(), kAck | kDrv | kFOk) << "clearing a bit without a reset is ignored";
  d.set_status(kAck | kDrv | kFOk | kStatusNeedsReset);
  EXPECT_EQ(d.status() & kStatusNeedsReset, 0) << "the driver cannot set DEVICE_NEEDS_RESET";
}

TEST(VirtioPci, QueueSetUpIsValidatedAndFrozenWhileEnabled) {
  BlockRig rig;
  auto& d = rig.driver;
  EXPECT_EQ(d.common(F::kNumQueues, 2), 1u);
  EXPECT_EQ(d.common(F::kQueueSize, 2), 64u) << "the maximum until the driver writes less";
  d.set_common(F::kQueueSelect, 1, 2);
  EXPECT_EQ(d.common(F::kQueueSize, 2), 0u) << "no such queue";
  d.set_common(F::kQueueEnable, 1, 2);  // harmless
  d.set_common(F::kQueueSelect, 0, 2);

  d.setup_queue();
  EXPECT_EQ(d.common(F::kQueueEnable, 2), 0u) << "enable before FEATURES_OK is ignored";
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures));
  d.set_common(F::kQueueSize, 24, 2);
  d.set_common(F::kQueueEnable, 1, 2);
  EXPECT_EQ(d.common(F::kQueueEnable, 2), 0u) << "24 is not a power of two";
  EXPECT_TRUE(d.status() & kStatusNeedsReset);

  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures));  // negotiate() resets from ACK
  d.set_status(0);
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures));
  EXPECT_FALSE(d.status() & kStatusNeedsReset) << "a reset clears DEVICE_NEEDS_RESET";
  d.set_common(F::kQueueSize, 128, 2);
  d.set_common(F::kQueueEnable, 1, 2);
  EXPECT_EQ(d.common(F::kQueueEnable, 2), 0u) << "above the maximum";

  d.set_status(0);
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures));
  d.setup_queue();
  d.set_common(F::kQueueDesc, 0xFFFF'0000, 4);  // out of RAM
  d.set_common(F::kQueueEnable, 1, 2);
  EXPECT_EQ(d.common(F::kQueueEnable, 2), 1u) << "already enabled: addresses changed too late do not count";
  EXPECT_EQ(d.common(F::kQueueDesc, 8), d.ring().layout().desc);
  d.set_common(F::kQueueSize, 8, 2);
  EXPECT_EQ(d.common(F::kQueueSize, 2), 64u) << "size frozen while enabled";

  d.set_status(0);
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures));
  d.set_common(F::kQueueSize, 16, 2);
  d.set_common(F::kQueueDesc, 0xFFFF'0000, 8);
  d.set_common(F::kQueueEnable, 1, 2);
  EXPECT_EQ(d.common(F::kQueueEnable, 2), 0u) << "descriptor table outside guest memory";
  EXPECT_TRUE(d.status() & kStatusNeedsReset);
}

TEST(VirtioPci, VectorsBeyondTheTableReadBackAsNoVector) {
  BlockRig rig;
  auto& d = rig.driver;
  d.set_common(F::kConfigMsixVector, 1, 2);
  EXPECT_EQ(d.common(F::kConfigMsixVector, 2), 1u);
  d.set_common(F::kConfigMsixVector, 2, 2);  // two vectors: 0 and 1
  EXPECT_EQ(d.common(F::kConfigMsixVector, 2), kNoVector);
  d.set_common(F::kQueueMsixVector, 0x1234, 2);
  EXPECT_EQ(d.common(F::kQueueMsixVector, 2), kNoVector);
}

TEST(VirtioPci, NotificationsBeforeDriverOkAreIgnored) {
  BlockRig rig;
  auto& d = rig.driver;
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures));
  d.setup_queue();
  rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick();
  rig.function.notify(0);
  EXPECT_EQ(rig.backend.queued(), 0u) << "not DRIVER_OK yet";
  d.kick(5);  // no such queue: ignored
  d.driver_ok();
  d.kick();
  EXPECT_EQ(rig.backend.queued(), 1u);
}

TEST(VirtioPci, IntxWithoutMsixAndIsrReadClears) {
  BlockRig rig;
  auto& d = rig.driver;
  ASSERT_TRUE(d.init(BlockRig::kFeatures & ~bit(kFeatureEventIdx)));
  rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick();
  EXPECT_FALSE(rig.intx.level()) << "nothing completed yet";
  rig.backend.complete_all();
  EXPECT_TRUE(rig.intx.level());
  EXPECT_EQ(d.isr(), F::kIsrQueue);
  EXPECT_FALSE(rig.intx.level()) << "reading ISR deasserts";
  EXPECT_EQ(d.isr(), 0);
  EXPECT_EQ(rig.msi.count(), 0u);
}

// Enables MSI-X in config space and programs `vectors` vectors (vector v
// sends 0x40 + v to APIC 0), as Linux does.
void enable_msix(BlockRig& rig, unsigned vectors) {
  const std::uint32_t cap = cfg(rig.function, pci::kCapabilityPointer, 1);
  ASSERT_EQ(cfg(rig.function, cap, 1), pci::Msix::kCapabilityId);
  set_cfg(rig.function, pci::kCommand, pci::kCommandMemory | pci::kCommandBusMaster, 2);
  set_cfg(rig.function, cap + 2, pci::Msix::kControlEnable, 2);
  for (unsigned v = 0; v < vectors; ++v) {
    rig.driver.write(F::kMsixTableOffset + 16 * v, 0xFEE0'0000, 4);
    rig.driver.write(F::kMsixTableOffset + 16 * v + 8, 0x40 + v, 4);
    rig.driver.write(F::kMsixTableOffset + 16 * v + 12, 0, 4);
  }
}

// Requests that the backend reports together go back to the driver with one
// interrupt, not one each: the driver reaps the whole used ring per
// interrupt anyway, and each interrupt costs the guest a VM exit or more.
TEST(VirtioPci, CompletionsReportedTogetherInterruptOnce) {
  BlockRig rig;
  auto& d = rig.driver;
  enable_msix(rig, 2);
  d.set_status(0);
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures & ~bit(kFeatureEventIdx)));  // an interrupt for every used entry asked
  d.set_common(F::kConfigMsixVector, 0, 2);
  d.setup_queue(/*vector=*/1);
  d.driver_ok();
  for (unsigned i = 0; i < 4; ++i) rig.post(i, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick();
  ASSERT_EQ(rig.backend.complete_all(), 4u);
  EXPECT_EQ(d.ring().used_idx(), 4);
  EXPECT_EQ(rig.msi.vectors(), (std::vector<std::uint8_t>{0x41}));
  for (unsigned i = 0; i < 2; ++i) rig.post(i, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick();
  rig.backend.complete();
  rig.backend.complete();
  EXPECT_EQ(rig.msi.vectors(), (std::vector<std::uint8_t>{0x41, 0x41, 0x41})) << "reported apart: one each";
}

// Coalescing (--disk ...,coalesce-us=N). A held interrupt waits one
// interval from the completion that began it; everything that completes
// within it shares it, the driver is not asked to notify meanwhile, and what
// it posted silently is taken when the interrupt goes. Lone requests are
// signalled at once, with one probing hold in every kCoalescingProbeEvery;
// a hold that gathered more than one completion keeps the queue holding.
struct CoalescingRig {
  static constexpr std::chrono::microseconds kInterval{100};
  std::chrono::nanoseconds now{std::chrono::seconds(7)};
  std::chrono::nanoseconds step{std::chrono::microseconds(500)};  // between lone requests
  unsigned holds = 0;
  std::vector<std::pair<std::uint16_t, bool>> verdicts;  // on_depth: (queue, at depth)
  BlockRig rig;

  explicit CoalescingRig(bool follows_completions = false)
      : rig(VirtioBlock::Options{"disk-0", 64, 1, kInterval, [this] { return now; }, [this] { ++holds; },
                                 follows_completions,
                                 [this](std::uint16_t q, bool at_depth) { verdicts.emplace_back(q, at_depth); }}) {
    enable_msix(rig, 2);
    rig.driver.set_status(0);
    EXPECT_TRUE(rig.driver.negotiate(BlockRig::kFeatures));
    rig.driver.set_common(F::kConfigMsixVector, 0, 2);
    rig.driver.setup_queue(/*vector=*/1);
    rig.driver.driver_ok();
  }
  // The driver took everything and asks to hear of the next completion.
  void rearm() { rig.driver.ring().set_used_event(rig.driver.ring().used_idx()); }
  std::size_t interrupts() { return rig.msi.vectors().size(); }
  // One request at a time, each signalled at once, up to the probe.
  void lone_requests(unsigned n) {
    for (unsigned i = 0; i < n; ++i) {
      rig.post(i % 16, VirtioBlock::kTypeFlush, 0, 0, false);
      rig.driver.kick();
      const std::size_t before = interrupts();
      ASSERT_EQ(rig.backend.complete(), 1u);
      ASSERT_EQ(interrupts(), before + 1) << "lone request " << i << " is signalled at once";
      rearm();
      now += step;
    }
  }
  // The next lone request's completion begins a probing hold.
  void probe() {
    rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
    rig.driver.kick();
    const unsigned before = holds;
    ASSERT_EQ(rig.backend.complete(), 1u);
    ASSERT_EQ(holds, before + 1) << "the probe";
  }  // A whole probing round at depth 1: lone requests, the probe, its release.
  void round_at_depth_one() {
    lone_requests(VirtioBlock::kCoalescingProbeEvery);
    probe();
    now += kInterval;
    ASSERT_EQ(rig.block.release_due(now), std::nullopt);
    rearm();
  }
};

// Adaptive (the default, coalesce-us=auto): a hold lasts twice the recent
// gap between the queue's completions, with the interval as its ceiling,
// so that a fast disk is held for microseconds, not for the ceiling.
TEST(VirtioCoalescing, AnAdaptiveHoldLastsTwoRecentGapsBetweenCompletionsAtMostTheCeiling) {
  CoalescingRig fast(/*follows_completions=*/true);
  fast.step = std::chrono::microseconds(10);
  fast.lone_requests(VirtioBlock::kCoalescingProbeEvery);
  const auto began = fast.now;
  fast.probe();
  EXPECT_EQ(fast.rig.block.release_due(began), began + std::chrono::microseconds(20));
  EXPECT_EQ(fast.interrupts(), VirtioBlock::kCoalescingProbeEvery);
  EXPECT_EQ(fast.rig.block.release_due(began + std::chrono::microseconds(20)), std::nullopt);
  EXPECT_EQ(fast.interrupts(), VirtioBlock::kCoalescingProbeEvery + 1u) << "released after two gaps";

  CoalescingRig slow(/*follows_completions=*/true);
  slow.lone_requests(VirtioBlock::kCoalescingProbeEvery);  // 500 us apart: two gaps exceed the ceiling
  slow.probe();
  EXPECT_EQ(slow.rig.block.release_due(slow.now), slow.now + CoalescingRig::kInterval);

  CoalescingRig fixed;  // coalesce-us=N: the interval, whatever the gaps
  fixed.step = std::chrono::microseconds(10);
  fixed.lone_requests(VirtioBlock::kCoalescingProbeEvery);
  fixed.probe();
  EXPECT_EQ(fixed.rig.block.release_due(fixed.now), fixed.now + CoalescingRig::kInterval);
}

TEST(VirtioCoalescing, LoneRequestsAreSignalledAtOnceAndOneInThirtyTwoProbes) {
  CoalescingRig c;
  c.lone_requests(VirtioBlock::kCoalescingProbeEvery);
  EXPECT_EQ(c.holds, 0u);
  const auto probe = c.rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
  c.rig.driver.kick();
  ASSERT_EQ(c.rig.backend.complete(), 1u);
  EXPECT_EQ(c.holds, 1u) << "the probe";
  EXPECT_EQ(c.interrupts(), VirtioBlock::kCoalescingProbeEvery);
  EXPECT_EQ(c.rig.status_of(probe), VirtioBlock::kStatusOk) << "done, and in the used ring";
  EXPECT_EQ(c.rig.block.release_due(c.now + CoalescingRig::kInterval), std::nullopt);
  EXPECT_EQ(c.interrupts(), VirtioBlock::kCoalescingProbeEvery + 1u);
  c.rearm();
  c.lone_requests(VirtioBlock::kCoalescingProbeEvery);  // one completion in the probe: no depth, at once again
  EXPECT_EQ(c.holds, 1u);

  // The next probe finds a chain the driver posted while it waited: depth.
  c.rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
  c.rig.driver.kick();
  ASSERT_EQ(c.rig.backend.complete(), 1u);
  EXPECT_EQ(c.holds, 2u);
  const auto silent = c.rig.post(1, VirtioBlock::kTypeFlush, 0, 0, false);
  EXPECT_EQ(c.rig.block.release_due(c.now + CoalescingRig::kInterval), std::nullopt);
  c.rearm();
  ASSERT_EQ(c.rig.backend.complete(), 1u) << "taken at the release";
  EXPECT_EQ(c.rig.status_of(silent), VirtioBlock::kStatusOk);
  EXPECT_EQ(c.holds, 3u) << "held at once: the driver keeps requests going";
}

TEST(VirtioCoalescing, AtDepthCompletionsOfTheIntervalShareOneInterruptAtItsEnd) {
  CoalescingRig c;
  auto& d = c.rig.driver;
  auto& backend = c.rig.backend;
  c.lone_requests(VirtioBlock::kCoalescingProbeEvery);
  const std::uint16_t base = d.ring().used_idx();
  const auto started = c.now;
  c.rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
  c.rig.post(1, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick();
  const std::uint16_t armed = d.ring().avail_event();
  c.now += std::chrono::microseconds(10);
  ASSERT_EQ(backend.complete(), 1u);
  EXPECT_EQ(d.ring().used_idx(), base + 1) << "the driver can see it at once";
  EXPECT_EQ(c.interrupts(), VirtioBlock::kCoalescingProbeEvery) << "but is not interrupted yet";
  EXPECT_EQ(c.holds, 1u);
  c.now += std::chrono::microseconds(50);
  EXPECT_EQ(c.rig.block.release_due(c.now), started + std::chrono::microseconds(110));

  // Posted without a notification, as a driver does when avail_event says
  // the device will look anyway; the next completion takes it.
  const auto third = c.rig.post(2, VirtioBlock::kTypeFlush, 0, 0, false);
  ASSERT_EQ(backend.complete(), 1u);
  EXPECT_EQ(c.holds, 1u) << "one interval for both";
  EXPECT_EQ(d.ring().avail_event(), armed) << "notifications stay off while the interrupt waits";
  const auto fourth = c.rig.post(3, VirtioBlock::kTypeFlush, 0, 0, false);

  c.now = started + std::chrono::microseconds(110);
  EXPECT_EQ(c.rig.block.release_due(c.now), c.now + CoalescingRig::kInterval) << "quiet until then";
  EXPECT_EQ(c.interrupts(), VirtioBlock::kCoalescingProbeEvery + 1u) << "one interrupt for both";
  EXPECT_EQ(d.ring().avail_event(), armed) << "the release took the fourth; at depth, still no notifications";
  c.rearm();
  ASSERT_EQ(backend.complete_all(), 2u) << "the third and the fourth";
  EXPECT_EQ(c.rig.status_of(third), VirtioBlock::kStatusOk);
  EXPECT_EQ(c.rig.status_of(fourth), VirtioBlock::kStatusOk);
  EXPECT_EQ(d.ring().avail_event(), armed + 2) << "nothing left in flight: the driver must notify again";
  EXPECT_EQ(c.holds, 2u) << "at depth: their completion is held at once";
  EXPECT_EQ(c.interrupts(), VirtioBlock::kCoalescingProbeEvery + 1u);
  c.now += CoalescingRig::kInterval;
  EXPECT_EQ(c.rig.block.release_due(c.now), std::nullopt);
  EXPECT_EQ(c.interrupts(), VirtioBlock::kCoalescingProbeEvery + 2u);
  EXPECT_EQ(d.ring().used_idx(), base + 4);
  c.rearm();

  // Still at depth (that interrupt announced two), so a lone request waits
  // once; announcing one, it ends the holding.
  c.rig.post(4, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick();
  ASSERT_EQ(backend.complete(), 1u);
  EXPECT_EQ(c.holds, 3u);
  c.now += CoalescingRig::kInterval;
  EXPECT_EQ(c.rig.block.release_due(c.now), std::nullopt);
  c.rearm();
  c.lone_requests(2);
  EXPECT_EQ(c.holds, 3u);
}

// Between holds at depth, the driver is not asked to notify either: the
// next completion takes what it posted. Quiet lasts one hold interval from
// the release (then what came meanwhile is taken, and the driver must
// notify again), or until the queue has nothing in flight.
TEST(VirtioCoalescing, AtDepthTheDriverIsNotAskedToNotifyBetweenHoldsForOneInterval) {
  CoalescingRig c;
  auto& d = c.rig.driver;
  auto& backend = c.rig.backend;
  c.lone_requests(VirtioBlock::kCoalescingProbeEvery);
  for (std::uint16_t i = 0; i < 4; ++i) c.rig.post(i, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick();
  const std::uint16_t armed = d.ring().avail_event();
  ASSERT_EQ(backend.complete(), 1u);
  ASSERT_EQ(backend.complete(), 1u);
  ASSERT_EQ(c.holds, 1u);
  c.rig.post(4, VirtioBlock::kTypeFlush, 0, 0, false);  // while the interrupt waits: no notification
  c.now += CoalescingRig::kInterval;
  const auto released = c.now;
  EXPECT_EQ(c.rig.block.release_due(c.now), released + CoalescingRig::kInterval) << "three in flight: quiet";
  EXPECT_EQ(c.interrupts(), VirtioBlock::kCoalescingProbeEvery + 1u);
  EXPECT_EQ(backend.queued(), 3u) << "the release took the one posted during the hold";
  EXPECT_EQ(d.ring().avail_event(), armed) << "but does not ask the driver to notify";
  c.rearm();

  const auto sixth = c.rig.post(5, VirtioBlock::kTypeFlush, 0, 0, false);  // no notification
  c.now += std::chrono::microseconds(50);
  EXPECT_EQ(c.rig.block.release_due(c.now), released + CoalescingRig::kInterval);
  EXPECT_EQ(backend.queued(), 3u);
  c.now = released + CoalescingRig::kInterval;
  EXPECT_EQ(c.rig.block.release_due(c.now), std::nullopt);
  EXPECT_EQ(backend.queued(), 4u) << "the sixth, taken when quiet ended";
  EXPECT_EQ(d.ring().avail_event(), armed + 2) << "and the driver must notify again";
  ASSERT_EQ(backend.complete_all(), 4u);
  EXPECT_EQ(c.rig.status_of(sixth), VirtioBlock::kStatusOk);
}

TEST(VirtioCoalescing, AResetForgetsTheInterruptThatWaited) {
  CoalescingRig c;
  c.lone_requests(VirtioBlock::kCoalescingProbeEvery);
  c.rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
  c.rig.driver.kick();
  ASSERT_EQ(c.rig.backend.complete(), 1u);
  ASSERT_EQ(c.holds, 1u);
  c.rig.driver.set_status(0);
  c.now += std::chrono::seconds(1);
  EXPECT_EQ(c.rig.block.release_due(c.now), std::nullopt);
  EXPECT_EQ(c.interrupts(), VirtioBlock::kCoalescingProbeEvery) << "no interrupt from a device the driver reset";
}

// Depth verdicts (vmm/virtio_disks routes a shallow queue's notifications
// to the notifying vCPU thread): shallow after kShallowAfterReleases probes
// in a row found depth 1, deep again at the first hold that finds depth,
// and deep again at a reset.
TEST(VirtioCoalescing, AQueueIsReportedShallowAfterProbesFindDepthOneAndDeepWhenDepthComesBack) {
  using Verdicts = std::vector<std::pair<std::uint16_t, bool>>;
  CoalescingRig c;
  for (unsigned round = 1; round < VirtioBlock::kShallowAfterReleases; ++round) c.round_at_depth_one();
  EXPECT_EQ(c.verdicts, Verdicts{}) << "one probe short";
  c.round_at_depth_one();
  EXPECT_EQ(c.verdicts, (Verdicts{{0, false}}));
  c.round_at_depth_one();
  EXPECT_EQ(c.verdicts, (Verdicts{{0, false}})) << "reported once";

  // The next probe finds a chain the driver posted while it waited.
  c.lone_requests(VirtioBlock::kCoalescingProbeEvery);
  c.probe();
  c.rig.post(1, VirtioBlock::kTypeFlush, 0, 0, false);
  c.now += CoalescingRig::kInterval;
  c.rig.block.release_due(c.now);
  EXPECT_EQ(c.verdicts, (Verdicts{{0, false}, {0, true}}));
  ASSERT_EQ(c.rig.backend.complete_all(), 1u);
}

TEST(VirtioCoalescing, DepthBetweenProbesStartsTheCountAgain) {
  using Verdicts = std::vector<std::pair<std::uint16_t, bool>>;
  CoalescingRig c;
  for (unsigned round = 1; round < VirtioBlock::kShallowAfterReleases; ++round) c.round_at_depth_one();
  // A probe that finds a chain posted while it waited: depth.
  c.lone_requests(VirtioBlock::kCoalescingProbeEvery);
  c.probe();
  c.rig.post(1, VirtioBlock::kTypeFlush, 0, 0, false);
  c.now += CoalescingRig::kInterval;
  c.rig.block.release_due(c.now);
  c.rearm();
  // At depth the next completion is held at once; its release announces
  // one: depth 1 again, the first of a new count.
  ASSERT_EQ(c.rig.backend.complete(), 1u);
  c.now += CoalescingRig::kInterval;
  EXPECT_EQ(c.rig.block.release_due(c.now), std::nullopt);
  EXPECT_EQ(c.verdicts, Verdicts{}) << "not shallow: the count started again at the depth it saw";
}

TEST(VirtioCoalescing, AResetReportsAShallowQueueDeepAgain) {
  using Verdicts = std::vector<std::pair<std::uint16_t, bool>>;
  CoalescingRig c;
  for (unsigned round = 0; round < VirtioBlock::kShallowAfterReleases; ++round) c.round_at_depth_one();
  ASSERT_EQ(c.verdicts, (Verdicts{{0, false}}));
  c.rig.driver.set_status(0);
  EXPECT_EQ(c.verdicts, (Verdicts{{0, false}, {0, true}})) << "back to the power-on route";
  c.rig.driver.set_status(0);
  EXPECT_EQ(c.verdicts.size(), 2u) << "a queue that was not shallow is not reported";
}

// Two request queues (VIRTIO_BLK_F_MQ): each request completes on the ring
// it came from and raises that queue's own MSI-X vector, which is what lets
// a guest finish a request on the vCPU that sent it.
TEST(VirtioPci, EachQueueCompletesOnItsOwnRingAndVector) {
  BlockRig rig(false, 64, "disk-0", 64, /*queues=*/2);
  auto& d = rig.driver;
  EXPECT_TRUE(rig.block.device_features() & bit(VirtioBlock::kFeatureMq));
  EXPECT_EQ(d.read(F::kDeviceOffset + 34, 2), 2u) << "num_queues";
  EXPECT_EQ(d.common(F::kNumQueues, 2), 2u);
  const std::uint32_t cap = cfg(rig.function, pci::kCapabilityPointer, 1);
  EXPECT_EQ((cfg(rig.function, cap + 2, 2) & 0x7FF) + 1, 3u) << "a vector per queue and one for configuration";
  enable_msix(rig, 3);
  d.set_status(0);
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures | bit(VirtioBlock::kFeatureMq)));
  d.set_common(F::kConfigMsixVector, 0, 2);
  d.setup_queue(/*vector=*/1);
  testing::DriverRing second(rig.memory, 64, 0x8000);
  d.setup_queue(1, second, /*vector=*/2);
  d.driver_ok();
  ASSERT_TRUE(d.status() & kStatusDriverOk);

  const auto on_second = rig.post_flush(second, 0, 0x30000);
  d.kick(1);
  rig.backend.complete_all();
  EXPECT_EQ(second.used_idx(), 1);
  EXPECT_EQ(second.used(0).id, on_second.head);
  EXPECT_EQ(rig.status_of(on_second), VirtioBlock::kStatusOk);
  EXPECT_EQ(d.ring().used_idx(), 0) << "nothing on queue 0's ring";
  EXPECT_EQ(rig.msi.vectors(), (std::vector<std::uint8_t>{0x42})) << "queue 1's vector";

  rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick(0);
  rig.backend.complete_all();
  EXPECT_EQ(d.ring().used_idx(), 1);
  EXPECT_EQ(second.used_idx(), 1);
  EXPECT_EQ(rig.msi.vectors(), (std::vector<std::uint8_t>{0x42, 0x41})) << "then queue 0's";
}

TEST(VirtioPci, OneQueueOffersNoMultiqueue) {
  BlockRig rig;
  EXPECT_FALSE(rig.block.device_features() & bit(VirtioBlock::kFeatureMq));
  EXPECT_EQ(rig.driver.read(F::kDeviceOffset + 34, 2), 1u) << "num_queues";
  for (std::uint16_t queues : {std::uint16_t{0}, std::uint16_t{VirtioBlock::kMaxQueues + 1}}) {
    EXPECT_THROW(BlockRig(false, 64, "d", 64, queues), vmm::Error) << queues << " queues";
  }
}

TEST(VirtioPci, MsixDeliversTheQueueVectorAndReplacesIntx) {
  BlockRig rig;
  auto& d = rig.driver;
  enable_msix(rig, 2);
  d.set_status(0);
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures & ~bit(kFeatureEventIdx)));
  d.set_common(F::kConfigMsixVector, 0, 2);
  d.setup_queue(/*vector=*/1);
  d.driver_ok();
  rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick();
  rig.backend.complete_all();
  EXPECT_EQ(rig.msi.vectors(), (std::vector<std::uint8_t>{0x41}));
  EXPECT_FALSE(rig.intx.level()) << "no INTx with MSI-X on";
  EXPECT_EQ(d.isr(), 0);

  // The queue's vector masked: the interrupt waits in the PBA.
  d.write(F::kMsixTableOffset + 16 + 12, 1, 4);
  rig.post(1, VirtioBlock::kTypeFlush, 0, 0, false);
  d.kick();
  rig.backend.complete_all();
  EXPECT_EQ(rig.msi.count(), 1u);
  EXPECT_EQ(d.read(F::kMsixPbaOffset, 8), 2u);
  d.write(F::kMsixTableOffset + 16 + 12, 0, 4);
  EXPECT_EQ(rig.msi.vectors(), (std::vector<std::uint8_t>{0x41, 0x41}));

  // A broken queue sends the configuration vector with DEVICE_NEEDS_RESET.
  d.ring().publish(200);  // head beyond the queue
  d.kick();
  EXPECT_TRUE(d.status() & kStatusNeedsReset);
  EXPECT_EQ(rig.msi.vectors().back(), 0x40);
}

TEST(VirtioPci, PciConfigAccessWindowReachesTheBar) {
  BlockRig rig;
  std::uint32_t window = 0;
  for (std::uint32_t at = cfg(rig.function, pci::kCapabilityPointer, 1); at != 0; at = cfg(rig.function, at + 1, 1)) {
    if (cfg(rig.function, at, 1) == 0x09 && cfg(rig.function, at + 3, 1) == F::kCapPciCfg) window = at;
  }
  ASSERT_NE(window, 0u);
  set_cfg(rig.function, window + 4, 0, 1);  // BAR 0
  set_cfg(rig.function, window + 8, F::kDeviceFeature);
  set_cfg(rig.function, window + 12, 4);
  EXPECT_EQ(cfg(rig.function, window + 16), static_cast<std::uint32_t>(rig.block.device_features()));
  // A write through it: device_status = ACKNOWLEDGE.
  set_cfg(rig.function, window + 8, F::kDeviceStatus);
  set_cfg(rig.function, window + 12, 1);
  set_cfg(rig.function, window + 16, kAck, 1);
  EXPECT_EQ(rig.driver.status(), kAck);
  // Nonsense lengths and offsets do nothing.
  set_cfg(rig.function, window + 12, 3);
  set_cfg(rig.function, window + 16, 0);
  set_cfg(rig.function, window + 12, 4);
  set_cfg(rig.function, window + 8, 0xFFFF'FFF0);
  EXPECT_EQ(rig.driver.status(), kAck);
}

TEST(VirtioPci, NotifyFollowsTheBarAndCanBeRedirected) {
  BlockRig rig;
  pci::PciRoot root;
  root.add(rig.function);
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  set_cfg(rig.function, pci::kCommand, pci::kCommandMemory, 2);
  const std::uint64_t base = *rig.function.bar_address();
  std::vector<std::uint16_t> redirected;
  rig.function.set_notify_handler([&](std::uint16_t q) { redirected.push_back(q); });
  const std::array<std::uint8_t, 2> zero{};
  root.mmio_window().write(base + F::notify_offset(0) - pci::PciRoot::kMmioWindowBase, zero);
  EXPECT_EQ(redirected, (std::vector<std::uint16_t>{0}));
  set_cfg(rig.function, pci::kBar0, 0xD000'0000);
  EXPECT_EQ(rig.function.bar_address(), 0xD000'0000u);
  root.mmio_window().write(0xD000'0000 + F::notify_offset(0) - pci::PciRoot::kMmioWindowBase, zero);
  root.mmio_window().write(base + F::notify_offset(0) - pci::PciRoot::kMmioWindowBase, zero);
  EXPECT_EQ(redirected.size(), 2u) << "the old address no longer notifies";
}

TEST(VirtioPci, VmResetRestoresPowerOnState) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  set_cfg(rig.function, pci::kCommand, pci::kCommandMemory, 2);
  set_cfg(rig.function, pci::kBar0, 0xD000'0000);
  rig.function.reset();
  EXPECT_EQ(rig.driver.status(), 0);
  EXPECT_EQ(rig.driver.common(F::kQueueEnable, 2), 0u);
  EXPECT_EQ(rig.driver.common(F::kQueueSize, 2), 64u);
  EXPECT_EQ(cfg(rig.function, pci::kCommand, 2), 0u);
  EXPECT_FALSE(rig.function.bar_address());
  EXPECT_TRUE(rig.function.wait_idle(std::chrono::milliseconds(0)));
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures)) << "a fresh probe works after a VM reset";
}

TEST(VirtioPci, RandomRegisterAbuseLeavesTheDeviceUsable) {
  testing::LogCapture logs;
  BlockRig rig;
  std::mt19937_64 rng(0x5EED'0B1C);
  constexpr std::array<std::size_t, 4> kWidths = {1, 2, 4, 8};
  for (int i = 0; i < 200000; ++i) {
    if (i % 2000 == 0) {
      // Bring the device up properly now and then and hand it random chains,
      // so the abuse also lands on a running queue.
      rig.driver.init(BlockRig::kFeatures);
      for (std::uint16_t d = 0; d < 64; ++d) {
        const std::uint64_t address = rng() % 2 ? BlockRig::kHeaders + rng() % 0x1000 : rng();
        rig.driver.ring().set_desc(d, address, static_cast<std::uint32_t>(rng() % 4 ? rng() % 1024 : rng()),
                                   static_cast<std::uint16_t>(rng() % 8), static_cast<std::uint16_t>(rng() % 70));
      }
      for (int n = 0; n < 8; ++n) rig.driver.ring().publish(static_cast<std::uint16_t>(rng() % 64));
      rig.driver.kick();
    }
    const std::size_t width = kWidths[rng() % kWidths.size()];
    std::array<std::uint8_t, 8> data{};
    store_le(data, rng() % 4 == 0 ? ~0ull : rng());
    const std::uint64_t offset = rng() % 2 ? rng() % 0x40 : rng() % (F::kBarSize + 0x100);
    switch (rng() % 5) {
      case 0:
        rig.function.bar_read(0, offset, std::span(data.data(), width));
        break;
      case 1:
      case 2:
        rig.function.bar_write(0, offset, std::span<const std::uint8_t>(data.data(), width));
        break;
      case 3: {
        const std::size_t w = std::min<std::size_t>(width, 4);
        rig.function.config_write(static_cast<std::uint32_t>(rng() % 256 & ~(w - 1)),
                                  std::span<const std::uint8_t>(data.data(), w));
        break;
      }
      default:
        rig.backend.complete_all();
    }
  }
  rig.backend.complete_all();
  EXPECT_LT(logs.lines(), 2000u) << "logging is rate limited";
  // A real driver can still bring the device up and use it.
  rig.function.reset();
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto r = rig.post(0, VirtioBlock::kTypeFlush, 0, 0, false);
  rig.driver.kick();
  rig.backend.complete_all();
  EXPECT_EQ(rig.status_of(r), VirtioBlock::kStatusOk);
}

}  // namespace
}  // namespace vmm::devices::virtio
