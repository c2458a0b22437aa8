// virtio-blk (VIRTIO 1.1, 5.2) end to end: a guest driver, the PCI
// transport, the device, and a memory disk that completes only when told.
#include <array>
#include <atomic>
#include <cerrno>
#include <thread>

#include <gtest/gtest.h>

#include "devices/error.h"
#include "tests/common/sync.h"
#include "tests/devices/virtio_rig.h"

namespace vmm::devices::virtio {
namespace {

using testing::BlockRig;
using B = VirtioBlock;
constexpr std::uint16_t kNext = SplitQueue::kDescNext, kWrite = SplitQueue::kDescWrite;

std::uint64_t config64(BlockRig& rig, std::uint32_t offset) {
  return rig.driver.read(VirtioPciFunction::kDeviceOffset + offset, 4) |
         rig.driver.read(VirtioPciFunction::kDeviceOffset + offset + 4, 4) << 32;
}

TEST(VirtioBlock, ConfigurationDescribesTheDisk) {
  BlockRig rig;
  EXPECT_EQ(config64(rig, 0), BlockRig::kDiskBytes / 512) << "capacity in sectors";
  EXPECT_EQ(rig.driver.read(VirtioPciFunction::kDeviceOffset + 12, 4), 62u) << "seg_max";
  EXPECT_EQ(rig.driver.read(VirtioPciFunction::kDeviceOffset + 20, 4), 512u) << "blk_size";
  EXPECT_EQ(rig.driver.read(VirtioPciFunction::kDeviceOffset + 40, 4), 1u) << "max_discard_seg";
  EXPECT_EQ(rig.driver.read(VirtioPciFunction::kDeviceOffset + 52, 4), 1u) << "max_write_zeroes_seg";
  const std::uint64_t f = rig.block.device_features();
  for (unsigned b : {kFeatureVersion1, kFeatureEventIdx, kFeatureIndirectDesc, B::kFeatureFlush, B::kFeatureDiscard,
                     B::kFeatureWriteZeroes, B::kFeatureSegMax, B::kFeatureBlockSize}) {
    EXPECT_TRUE(f & bit(b)) << b;
  }
  EXPECT_FALSE(f & bit(B::kFeatureReadOnly));
  rig.driver.write(VirtioPciFunction::kDeviceOffset, 0xFFFF, 2);
  EXPECT_EQ(config64(rig, 0), BlockRig::kDiskBytes / 512) << "read only";
  EXPECT_EQ(rig.driver.read(VirtioPciFunction::kDeviceOffset + B::kConfigSize, 4), 0u) << "past the end";
}

TEST(VirtioBlock, WriteThenReadBackCompletesOnlyWhenTheBackendDoes) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto w = rig.post(0, B::kTypeOut, 3, 1024, false);
  rig.fill(w.data, 1024, 0x5C);
  rig.driver.kick();
  ASSERT_EQ(rig.backend.queued(), 1u);
  EXPECT_EQ(rig.backend.peek()->offset, 3u * 512);
  EXPECT_EQ(rig.driver.ring().used_idx(), 0) << "not complete before the backend says so";
  EXPECT_EQ(rig.status_of(w), 0xAA);
  rig.backend.complete();
  ASSERT_EQ(rig.driver.ring().used_idx(), 1);
  EXPECT_EQ(rig.driver.ring().used(0).id, w.head);
  EXPECT_EQ(rig.driver.ring().used(0).len, 1u) << "a write writes only the status byte";
  EXPECT_EQ(rig.status_of(w), B::kStatusOk);
  EXPECT_EQ(rig.backend.disk()[3 * 512], 0x5C);
  EXPECT_EQ(rig.backend.disk()[3 * 512 + 1023], 0x5C);
  EXPECT_EQ(rig.backend.disk()[3 * 512 + 1024], 0);

  auto r = rig.post(1, B::kTypeIn, 3, 1024, true);
  rig.driver.kick();
  rig.backend.complete();
  ASSERT_EQ(rig.driver.ring().used_idx(), 2);
  EXPECT_EQ(rig.driver.ring().used(1).len, 1025u) << "data and status";
  EXPECT_EQ(rig.status_of(r), B::kStatusOk);
  EXPECT_EQ(rig.bytes(r.data, 1024), std::vector<std::uint8_t>(1024, 0x5C));
}

TEST(VirtioBlock, OutOfOrderCompletionsAreHandedBackByHead) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto a = rig.post(0, B::kTypeIn, 0, 512, true);
  auto b = rig.post(1, B::kTypeIn, 1, 512, true);
  auto c = rig.post(2, B::kTypeFlush, 0, 0, false);
  rig.driver.kick();
  ASSERT_EQ(rig.backend.queued(), 3u);
  rig.backend.complete(2);
  rig.backend.complete(0);
  rig.backend.complete(0);
  ASSERT_EQ(rig.driver.ring().used_idx(), 3);
  EXPECT_EQ(rig.driver.ring().used(0).id, c.head);
  EXPECT_EQ(rig.driver.ring().used(1).id, a.head);
  EXPECT_EQ(rig.driver.ring().used(2).id, b.head);
}

TEST(VirtioBlock, ReadOnlyDiskRefusesEveryWrite) {
  BlockRig rig(/*read_only=*/true);
  const std::uint64_t f = rig.block.device_features();
  EXPECT_TRUE(f & bit(B::kFeatureReadOnly));
  EXPECT_FALSE(f & bit(B::kFeatureDiscard)) << "nothing to discard on a read-only disk";
  EXPECT_FALSE(f & bit(B::kFeatureWriteZeroes));
  ASSERT_TRUE(rig.driver.init(f));
  auto w = rig.post(0, B::kTypeOut, 0, 512, false);
  rig.fill(w.data, 512, 0xEE);
  rig.driver.kick();
  EXPECT_EQ(rig.backend.queued(), 0u) << "never reaches the disk";
  EXPECT_EQ(rig.status_of(w), B::kStatusIoErr);
  EXPECT_EQ(rig.backend.disk()[0], 0);
  auto z = rig.post(1, B::kTypeWriteZeroes, 0, 16, false);
  rig.driver.kick();
  EXPECT_EQ(rig.status_of(z), B::kStatusUnsupported) << "not negotiated";
  auto r = rig.post(2, B::kTypeIn, 0, 512, true);
  rig.driver.kick();
  rig.backend.complete_all();
  EXPECT_EQ(rig.status_of(r), B::kStatusOk) << "reads still work";
}

TEST(VirtioBlock, RangesAndLengthsAreChecked) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  const std::uint64_t sectors = BlockRig::kDiskBytes / 512;
  struct Case {
    std::uint32_t type;
    std::uint64_t sector;
    std::uint32_t length;
    bool device_writes;
    std::uint8_t status;
  };
  const std::vector<Case> cases = {
      {B::kTypeIn, sectors - 1, 512, true, B::kStatusOk},        // the last sector
      {B::kTypeIn, sectors - 1, 1024, true, B::kStatusIoErr},    // one past it
      {B::kTypeIn, sectors, 512, true, B::kStatusIoErr},
      {B::kTypeIn, ~0ull, 512, true, B::kStatusIoErr},            // sector * 512 would overflow
      {B::kTypeIn, ~0ull / 512 + 1, 512, true, B::kStatusIoErr},
      {B::kTypeOut, 0, 100, false, B::kStatusIoErr},              // not a multiple of 512
      {B::kTypeIn, 0, 512, false, B::kStatusIoErr},               // read with readable data
      {B::kTypeOut, 0, 512, true, B::kStatusIoErr},               // write with writable data
      {B::kTypeIn, sectors, 0, true, B::kStatusOk},               // empty read at the end: fine
      {0x77, 0, 0, false, B::kStatusUnsupported},                 // unknown type
      {10, 0, 512, true, B::kStatusUnsupported},                  // GET_LIFETIME: not offered
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    auto r = rig.post(static_cast<unsigned>(i % 16), c.type, c.sector, c.length, c.device_writes);
    rig.driver.kick();
    rig.backend.complete_all();
    EXPECT_EQ(rig.status_of(r), c.status) << "case " << i;
  }
  EXPECT_EQ(rig.driver.ring().used_idx(), cases.size());
}

TEST(VirtioBlock, FlushGoesToTheBackend) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto f = rig.post(0, B::kTypeFlush, 0, 0, false);
  rig.driver.kick();
  EXPECT_EQ(rig.backend.ops(), (std::vector<BlockOp>{BlockOp::kFlush}));
  EXPECT_EQ(rig.status_of(f), 0xAA);
  rig.backend.complete();
  EXPECT_EQ(rig.status_of(f), B::kStatusOk);
}

TEST(VirtioBlock, GetIdReturnsTheSerialZeroPadded) {
  BlockRig rig(false, 64, "serial-42");
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto r = rig.post(0, B::kTypeGetId, 0, 20, true);
  rig.fill(r.data, 20, 0xFF);
  rig.driver.kick();
  EXPECT_EQ(rig.status_of(r), B::kStatusOk);
  const auto id = rig.bytes(r.data, 20);
  EXPECT_EQ(std::string(id.begin(), id.begin() + 9), "serial-42");
  EXPECT_EQ(id[9], 0);
  EXPECT_EQ(id[19], 0);
  EXPECT_EQ(rig.driver.ring().used(0).len, 21u);
  auto s = rig.post(1, B::kTypeGetId, 0, 4, true);  // a short buffer gets what fits
  rig.driver.kick();
  EXPECT_EQ(rig.status_of(s), B::kStatusOk);
  EXPECT_EQ(rig.driver.ring().used(1).len, 5u);
  EXPECT_THROW(B(std::make_unique<testing::MemoryBackend>(4096), B::Options{std::string(21, 'x')}), Error);
}

TEST(VirtioBlock, DiscardAndWriteZeroesFollowTheirFlags) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  std::fill(rig.backend.disk().begin(), rig.backend.disk().end(), std::uint8_t{0x11});
  auto segment = [&](const BlockRig::Request& r, std::uint64_t sector, std::uint32_t count, std::uint32_t flags) {
    std::array<std::uint8_t, 16> s{};
    store_le(std::span(s.data(), 8), sector);
    store_le(std::span(s.data() + 8, 4), count);
    store_le(std::span(s.data() + 12, 4), flags);
    rig.memory.write(r.data, s);
  };
  struct Case {
    std::uint32_t type;
    std::uint64_t sector;
    std::uint32_t count, flags, length;
    std::uint8_t status;
  };
  const std::vector<Case> cases = {
      {B::kTypeWriteZeroes, 2, 2, 0, 16, B::kStatusOk},
      {B::kTypeWriteZeroes, 8, 1, B::kSegmentUnmap, 16, B::kStatusOk},  // may unmap: still zeroes
      {B::kTypeDiscard, 16, 8, 0, 16, B::kStatusOk},
      {B::kTypeDiscard, 16, 8, B::kSegmentUnmap, 16, B::kStatusUnsupported},
      {B::kTypeWriteZeroes, 16, 8, 4, 16, B::kStatusUnsupported},  // unknown flag
      {B::kTypeDiscard, 2047, 2, 0, 16, B::kStatusIoErr},           // past the end
      {B::kTypeDiscard, 0, 1, 0, 32, B::kStatusIoErr},              // two segments
      {B::kTypeDiscard, 0, 1, 0, 8, B::kStatusIoErr},               // half a segment
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    auto r = rig.build(static_cast<unsigned>(i), c.type, 0, c.length, false);
    segment(r, c.sector, c.count, c.flags);
    rig.driver.ring().publish(r.head);
    rig.driver.kick();
    rig.backend.complete_all();
    EXPECT_EQ(rig.status_of(r), c.status) << "case " << i;
  }
  const auto& disk = rig.backend.disk();
  EXPECT_EQ(disk[2 * 512 - 1], 0x11);
  EXPECT_EQ(disk[2 * 512], 0);
  EXPECT_EQ(disk[4 * 512 - 1], 0);
  EXPECT_EQ(disk[4 * 512], 0x11);
  EXPECT_EQ(disk[8 * 512], 0);
  EXPECT_EQ(disk[9 * 512], 0x11);

  // Not negotiated: UNSUPP.
  ASSERT_TRUE(rig.driver.init(bit(kFeatureVersion1)));
  auto r = rig.build(0, B::kTypeDiscard, 0, 16, false);
  segment(r, 0, 1, 0);
  rig.driver.ring().publish(r.head);
  rig.driver.kick();
  EXPECT_EQ(rig.status_of(r), B::kStatusUnsupported);
}

TEST(VirtioBlock, MalformedRequestsGetAnErrorAndTheDeviceGoesOn) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto& ring = rig.driver.ring();
  // No status byte at all: handed back with nothing written.
  ring.set_desc(0, BlockRig::kHeaders, 16, 0);
  ring.publish(0);
  // A header of 8 bytes: IOERR in the status byte.
  ring.set_desc(3, BlockRig::kHeaders, 8, kNext, 4);
  ring.set_desc(4, BlockRig::kHeaders + 0x20, 1, kWrite);
  rig.memory.write_obj(BlockRig::kHeaders + 0x20, std::uint8_t{0xAA});
  ring.publish(3);
  // A descriptor loop.
  ring.set_desc(6, BlockRig::kHeaders, 16, kNext, 7);
  ring.set_desc(7, BlockRig::kHeaders, 16, kNext, 6);
  ring.publish(6);
  // A data buffer outside guest memory.
  ring.set_desc(9, BlockRig::kHeaders, 16, kNext, 10);
  ring.set_desc(10, 0xFFFF'F000, 512, kWrite | kNext, 11);
  ring.set_desc(11, BlockRig::kHeaders + 0x20, 1, kWrite);
  ring.publish(9);
  rig.driver.kick();
  ASSERT_EQ(ring.used_idx(), 4);
  EXPECT_EQ(ring.used(0).len, 0u);
  EXPECT_EQ(ring.used(1).id, 3u);
  EXPECT_EQ(ring.used(1).len, 1u);
  std::uint8_t status = 0;
  rig.memory.read_obj(BlockRig::kHeaders + 0x20, status);
  EXPECT_EQ(status, B::kStatusIoErr);
  EXPECT_EQ(ring.used(2).id, 6u);
  EXPECT_EQ(ring.used(2).len, 0u);
  EXPECT_EQ(ring.used(3).id, 9u);
  EXPECT_EQ(ring.used(3).len, 0u);
  EXPECT_EQ(rig.backend.queued(), 0u);
  // The device still serves proper requests.
  auto ok = rig.post(5, B::kTypeIn, 0, 512, true);
  rig.driver.kick();
  rig.backend.complete_all();
  EXPECT_EQ(rig.status_of(ok), B::kStatusOk);
  EXPECT_FALSE(rig.driver.status() & kStatusNeedsReset);
}

TEST(VirtioBlock, BackendErrorsBecomeIoErr) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto r = rig.post(0, B::kTypeIn, 0, 512, true);
  rig.driver.kick();
  rig.backend.complete(0, EIO);
  EXPECT_EQ(rig.status_of(r), B::kStatusIoErr);
  EXPECT_EQ(rig.driver.ring().used(0).len, 1u);
}

TEST(VirtioBlock, IndirectAndOddlyFramedRequests) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto& ring = rig.driver.ring();
  rig.backend.disk()[512 * 5] = 0x42;
  rig.backend.disk()[512 * 5 + 511] = 0x43;
  // Header split over two readable descriptors; data and status in one
  // writable descriptor of 513 bytes; all inside an indirect table.
  const std::uint64_t table = 0x60000;
  std::array<std::uint8_t, 16> header{};
  header[0] = B::kTypeIn;
  header[8] = 5;
  rig.memory.write(0x61000, header);
  ring.write_desc(table, 0, 0x61000, 10, kNext, 1);
  ring.write_desc(table, 1, 0x61000 + 10, 6, kNext, 2);
  ring.write_desc(table, 2, 0x62000, 513, kWrite);
  ring.set_desc(0, table, 48, SplitQueue::kDescIndirect);
  ring.publish(0);
  rig.driver.kick();
  rig.backend.complete_all();
  ASSERT_EQ(ring.used_idx(), 1);
  EXPECT_EQ(ring.used(0).len, 513u);
  EXPECT_EQ(rig.bytes(0x62000, 1)[0], 0x42);
  EXPECT_EQ(rig.bytes(0x62000 + 511, 1)[0], 0x43);
  EXPECT_EQ(rig.bytes(0x62000 + 512, 1)[0], B::kStatusOk) << "status is the last writable byte";
}

TEST(VirtioBlock, EventIdxKeepsInterruptsToWhatTheDriverAskedFor) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));  // EVENT_IDX, INTx
  auto& ring = rig.driver.ring();
  ring.set_used_event(2);  // interrupt when the third request is used
  for (unsigned i = 0; i < 4; ++i) rig.post(i, B::kTypeFlush, 0, 0, false);
  rig.driver.kick();
  EXPECT_EQ(ring.avail_event(), 4) << "notify me after the fourth";
  rig.backend.complete();
  rig.backend.complete();
  EXPECT_FALSE(rig.intx.level());
  rig.backend.complete();
  EXPECT_TRUE(rig.intx.level());
  EXPECT_EQ(rig.driver.isr(), VirtioPciFunction::kIsrQueue);
  rig.backend.complete();
  EXPECT_FALSE(rig.intx.level()) << "used_event 2 already passed";
  EXPECT_EQ(ring.used_idx(), 4);
}

TEST(VirtioBlock, ChainsWaitForFreeSlotsAndResumeOnCompletion) {
  BlockRig rig(false, /*max_in_flight=*/2);
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  std::vector<BlockRig::Request> requests;
  for (unsigned i = 0; i < 5; ++i) requests.push_back(rig.post(i, B::kTypeIn, i, 512, true));
  rig.driver.kick();
  EXPECT_EQ(rig.backend.queued(), 2u);
  rig.backend.complete();
  EXPECT_EQ(rig.backend.queued(), 2u) << "the freed slot took the next chain";
  while (rig.backend.complete()) {
  }
  EXPECT_EQ(rig.driver.ring().used_idx(), 5);
  for (const auto& r : requests) EXPECT_EQ(rig.status_of(r), B::kStatusOk);
}

// The queues share the slots: a queue that stopped because another one
// held every slot takes its chains as soon as any request completes.
TEST(VirtioBlock, AQueueStarvedOfSlotsResumesWhenAnotherQueuesRequestCompletes) {
  BlockRig rig(false, /*max_in_flight=*/1, "disk-0", 64, /*queues=*/2);
  auto& d = rig.driver;
  d.set_status(0);
  ASSERT_TRUE(d.negotiate(BlockRig::kFeatures | bit(B::kFeatureMq)));
  d.setup_queue();
  testing::DriverRing second(rig.memory, 64, 0x8000);
  d.setup_queue(1, second, kNoVector);
  d.driver_ok();
  const auto first = rig.post(0, B::kTypeIn, 0, 512, true);
  d.kick(0);
  const auto waiting = rig.post_flush(second, 0, 0x30000);
  d.kick(1);
  ASSERT_EQ(rig.backend.queued(), 1u) << "the only slot is queue 0's";
  rig.backend.complete();
  EXPECT_EQ(rig.status_of(first), B::kStatusOk);
  EXPECT_EQ(rig.backend.queued(), 1u) << "queue 1 took the freed slot without a new notification";
  rig.backend.complete();
  EXPECT_EQ(second.used_idx(), 1);
  EXPECT_EQ(rig.status_of(waiting), B::kStatusOk);
}

TEST(VirtioBlock, ResetWithRequestsInFlightKeepsWhatWasAcknowledgedOnly) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto acked = rig.post(0, B::kTypeOut, 0, 512, false);
  rig.fill(acked.data, 512, 0x77);
  auto late_write = rig.post(1, B::kTypeOut, 1, 512, false);
  rig.fill(late_write.data, 512, 0x88);
  auto late_read = rig.post(2, B::kTypeIn, 0, 512, true);
  rig.fill(late_read.data, 512, 0xCC);
  rig.driver.kick();
  rig.backend.complete();  // the first is acknowledged
  ASSERT_EQ(rig.driver.ring().used_idx(), 1);
  ASSERT_EQ(rig.status_of(acked), B::kStatusOk);
  const std::uint8_t before = rig.driver.status();

  rig.driver.set_status(0);  // reset with two requests in flight
  EXPECT_EQ(rig.block.in_flight(), 2u);
  EXPECT_EQ(rig.driver.status(), before) << "device_status is not 0 until they are gone";
  EXPECT_FALSE(rig.function.wait_idle(std::chrono::milliseconds(0)));
  const auto used_before = rig.bytes(rig.driver.ring().layout().used, 16 + 8 * 64);
  rig.backend.complete();
  EXPECT_NE(rig.driver.status(), 0);
  rig.backend.complete();
  EXPECT_EQ(rig.driver.status(), 0) << "reset finished";
  EXPECT_TRUE(rig.function.wait_idle(std::chrono::milliseconds(0)));
  EXPECT_EQ(rig.bytes(rig.driver.ring().layout().used, 16 + 8 * 64), used_before)
      << "no used entry after the reset";
  EXPECT_EQ(rig.status_of(late_write), 0xAA) << "no status for a request from before the reset";
  EXPECT_EQ(rig.status_of(late_read), 0xAA);
  EXPECT_EQ(rig.status_of(acked), B::kStatusOk);
  EXPECT_EQ(rig.backend.disk()[0], 0x77) << "what was acknowledged is on the disk";
  EXPECT_EQ(rig.intx.level(), false);

  // The driver starts over on the same memory and gets correct answers.
  testing::VirtioDriver fresh(rig.function, rig.memory, 64, 0x20000);
  ASSERT_TRUE(fresh.init(BlockRig::kFeatures));
  EXPECT_EQ(fresh.ring().used_idx(), 0);
}

TEST(VirtioBlock, ADriverThatDoesNotWaitForResetStillGetsNoStaleCompletions) {
  BlockRig rig;
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto stale = rig.post(0, B::kTypeIn, 0, 512, true);
  rig.driver.kick();
  testing::VirtioDriver fresh(rig.function, rig.memory, 64, 0x20000);
  ASSERT_TRUE(fresh.init(BlockRig::kFeatures)) << "re-initialised at once";
  rig.backend.complete();  // the request from before the reset
  EXPECT_EQ(fresh.ring().used_idx(), 0);
  EXPECT_EQ(rig.status_of(stale), 0xAA);
  EXPECT_EQ(rig.block.in_flight(), 0u);
}

// A vCPU thread posts requests and kicks, the device's loop thread completes
// them, and the control thread resets the device now and then: no data race
// (run under TSan), no request completed twice, the device usable after.
TEST(VirtioBlock, ConcurrentNotifyCompleteAndResetAreSafe) {
  BlockRig rig(false, 64, "x", 64);
  std::atomic<bool> stop{false};
  std::thread loop([&] {
    while (!stop.load(std::memory_order_acquire)) {
      if (rig.backend.complete() == false) std::this_thread::yield();
    }
  });
  for (int round = 0; round < 200; ++round) {
    ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
    for (unsigned i = 0; i < 8; ++i) rig.post(i, B::kTypeIn, i, 512, true);
    rig.driver.kick();
    if (round % 2 == 0) {
      // Wait (without sleeping) for all eight, then check them.
      while (rig.driver.ring().used_idx() != 8) std::this_thread::yield();
    }
    rig.function.reset();  // VM reset, maybe with requests in flight
    ASSERT_TRUE(rig.function.wait_idle(std::chrono::seconds(10)));
  }
  stop.store(true, std::memory_order_release);
  loop.join();
  EXPECT_EQ(rig.block.in_flight(), 0u);
  ASSERT_TRUE(rig.driver.init(BlockRig::kFeatures));
  auto r = rig.post(0, B::kTypeFlush, 0, 0, false);
  rig.driver.kick();
  rig.backend.complete_all();
  EXPECT_EQ(rig.status_of(r), B::kStatusOk);
}

}  // namespace
}  // namespace vmm::devices::virtio
