// The split virtqueue against the VIRTIO 1.1 rules (2.6), every malformed
// chain the device must survive, and notification suppression both ways.
#include "devices/virtio/virtqueue.h"

#include <array>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "tests/devices/virtio_ring.h"

namespace vmm::devices::virtio {
namespace {

using testing::DriverRing;
using Pop = SplitQueue::Pop;
constexpr std::uint16_t N = SplitQueue::kDescNext, W = SplitQueue::kDescWrite, I = SplitQueue::kDescIndirect;

struct Fixture {
  explicit Fixture(std::uint16_t size = 8, bool event_idx = false, bool indirect = true)
      : memory(GuestMemory::allocate(1 << 20)), ring(memory, size, 0x1000) {
    const char* refused = queue.activate(memory, ring.layout(), event_idx, indirect);
    EXPECT_EQ(refused, nullptr) << refused;
  }
  Pop pop() { return queue.pop(chain, why); }

  GuestMemory memory;
  DriverRing ring;
  SplitQueue queue;
  Chain chain;
  ChainError why = ChainError::kNone;
};

TEST(Virtqueue, ActivationChecksSizeAlignmentAndMemory) {
  GuestMemory memory = GuestMemory::allocate(1 << 20);
  SplitQueue q;
  auto layout = [](std::uint16_t size, std::uint64_t desc, std::uint64_t avail, std::uint64_t used) {
    return QueueLayout{size, desc, avail, used};
  };
  EXPECT_STRNE(q.activate(memory, layout(0, 0x1000, 0x2000, 0x3000), false, false), nullptr);
  EXPECT_STRNE(q.activate(memory, layout(6, 0x1000, 0x2000, 0x3000), false, false), nullptr) << "not a power of two";
  EXPECT_STRNE(q.activate(memory, layout(8, 0x1008, 0x2000, 0x3000), false, false), nullptr);
  EXPECT_STRNE(q.activate(memory, layout(8, 0x1000, 0x2001, 0x3000), false, false), nullptr);
  EXPECT_STRNE(q.activate(memory, layout(8, 0x1000, 0x2000, 0x3002), false, false), nullptr);
  EXPECT_STRNE(q.activate(memory, layout(8, (1 << 20) - 64, 0x2000, 0x3000), false, false), nullptr)
      << "table runs past the end of RAM";
  EXPECT_STRNE(q.activate(memory, layout(8, 0x1000, ~0ull - 1, 0x3000), false, false), nullptr);
  EXPECT_STRNE(q.activate(memory, layout(8, 0x1000, 0x2000, (1 << 20) - 8), false, false), nullptr);
  EXPECT_FALSE(q.active());
  EXPECT_EQ(q.activate(memory, layout(8, 0x1000, 0x2000, 0x3000), false, false), nullptr);
  EXPECT_TRUE(q.active());
}

TEST(Virtqueue, ChainSplitsIntoReadableThenWritableBuffers) {
  Fixture f;
  f.memory.write(0x8000, std::array<std::uint8_t, 4>{1, 2, 3, 4});
  f.ring.set_desc(3, 0x8000, 16, N, 5);
  f.ring.set_desc(5, 0x9000, 512, W | N, 1);
  f.ring.set_desc(1, 0xA000, 1, W);
  EXPECT_EQ(f.pop(), Pop::kEmpty);
  f.ring.publish(3);
  ASSERT_EQ(f.pop(), Pop::kChain) << to_string(f.why);
  EXPECT_EQ(f.chain.head, 3);
  ASSERT_EQ(f.chain.readable.size(), 1u);
  ASSERT_EQ(f.chain.writable.size(), 2u);
  EXPECT_EQ(f.chain.readable[0].data(), f.memory.slice(0x8000, 16)->data());
  EXPECT_EQ(f.chain.readable[0][3], 4);
  EXPECT_EQ(f.chain.readable_bytes, 16u);
  EXPECT_EQ(f.chain.writable_bytes, 513u);
  EXPECT_EQ(f.chain.descriptors, 3u);
  EXPECT_EQ(f.pop(), Pop::kEmpty);

  f.queue.push_used(3, 513);
  EXPECT_EQ(f.ring.used_idx(), 1);
  EXPECT_EQ(f.ring.used(0).id, 3u);
  EXPECT_EQ(f.ring.used(0).len, 513u);
}

TEST(Virtqueue, LoopingChainIsRefusedAndHandedBack) {
  Fixture f;
  f.ring.set_desc(0, 0x8000, 16, N, 1);
  f.ring.set_desc(1, 0x8000, 16, N, 0);
  f.ring.publish(0);
  EXPECT_EQ(f.pop(), Pop::kBadChain);
  EXPECT_EQ(f.why, ChainError::kTooLong);
  EXPECT_EQ(f.chain.head, 0);
  EXPECT_LE(f.chain.descriptors, 9u) << "the walk stops at the queue size";
  // A self-loop too.
  f.ring.set_desc(2, 0x8000, 16, N, 2);
  f.ring.publish(2);
  EXPECT_EQ(f.pop(), Pop::kBadChain);
  EXPECT_EQ(f.why, ChainError::kTooLong);
}

TEST(Virtqueue, IndicesOutOfRangeAreRefused) {
  Fixture f;
  f.ring.set_desc(0, 0x8000, 16, N, 8);  // next == size
  f.ring.publish(0);
  EXPECT_EQ(f.pop(), Pop::kBadChain);
  EXPECT_EQ(f.why, ChainError::kNextOutOfRange);
  f.ring.publish(8);  // head == size
  EXPECT_EQ(f.pop(), Pop::kBroken);
  EXPECT_EQ(f.why, ChainError::kHeadOutOfRange);
  EXPECT_EQ(f.pop(), Pop::kBroken) << "stays broken: nothing can be handed back";
}

TEST(Virtqueue, AvailableIndexRunningAheadBreaksTheQueue) {
  Fixture f;
  f.ring.set_avail_idx(9);  // 9 new entries in a ring of 8
  EXPECT_EQ(f.pop(), Pop::kBroken);
  EXPECT_EQ(f.why, ChainError::kAvailIndexAhead);
}

TEST(Virtqueue, BuffersOutsideGuestMemoryAreRefused) {
  Fixture f;
  const std::uint64_t end = 1 << 20;
  f.ring.set_desc(0, end - 8, 16, 0);  // runs past the end
  f.ring.set_desc(1, ~0ull - 7, 16, 0);  // wraps around 2^64
  f.ring.set_desc(2, end, 1, W);  // starts at the end
  f.ring.set_desc(3, 0x8000, 0xFFFF'FFFF, W);  // huge
  f.ring.set_desc(4, end - 16, 16, W);  // the last 16 bytes: fine
  for (std::uint16_t head = 0; head < 4; ++head) {
    f.ring.publish(head);
    EXPECT_EQ(f.pop(), Pop::kBadChain) << head;
    EXPECT_EQ(f.why, ChainError::kOutsideMemory) << head;
  }
  f.ring.publish(4);
  EXPECT_EQ(f.pop(), Pop::kChain);
}

TEST(Virtqueue, BufferCrossingFromOneRegionToTheNextIsRefused) {
  // Above 3 GiB of RAM the rest starts at 4 GiB: two regions, a hole between.
  GuestMemory memory = GuestMemory::allocate(GuestMemory::kMmioHoleStart + (1 << 20));
  ASSERT_EQ(memory.regions().size(), 2u);
  DriverRing ring(memory, 4, 0x1000);
  SplitQueue q;
  ASSERT_EQ(q.activate(memory, ring.layout(), false, false), nullptr);
  Chain chain;
  ChainError why;
  ring.set_desc(0, GuestMemory::kMmioHoleStart - 8, 16, 0);  // end of low RAM into the hole
  ring.set_desc(1, GuestMemory::kMmioHoleStart - 8, 0x4000'0010, 0);  // across the hole into high RAM
  ring.set_desc(2, GuestMemory::kHighRamStart, 16, 0);  // in high RAM: fine
  for (std::uint16_t head = 0; head < 2; ++head) {
    ring.publish(head);
    EXPECT_EQ(q.pop(chain, why), Pop::kBadChain);
    EXPECT_EQ(why, ChainError::kOutsideMemory);
  }
  ring.publish(2);
  EXPECT_EQ(q.pop(chain, why), Pop::kChain);
}

TEST(Virtqueue, TotalLengthOver4GiBIsRefused) {
  GuestMemory memory = GuestMemory::allocate(GuestMemory::kMmioHoleStart);  // 3 GiB, lazily committed
  DriverRing ring(memory, 4, 0x1000);
  SplitQueue q;
  ASSERT_EQ(q.activate(memory, ring.layout(), false, false), nullptr);
  Chain chain;
  ChainError why;
  ring.set_desc(0, 0x10000, 0x8000'0000, W | N, 1);
  ring.set_desc(1, 0x10000, 0x8000'0000, W);
  ring.publish(0);
  EXPECT_EQ(q.pop(chain, why), Pop::kBadChain);
  EXPECT_EQ(why, ChainError::kLengthOverflow);
  ring.set_desc(2, 0x10000, 0x8000'0000, N, 3);
  ring.set_desc(3, 0x10000, 0x7FFF'FFFF, 0);  // exactly 4 GiB - 1: fine
  ring.publish(2);
  EXPECT_EQ(q.pop(chain, why), Pop::kChain) << to_string(why);
  EXPECT_EQ(chain.readable_bytes, 0xFFFF'FFFFu);
}

TEST(Virtqueue, ReadableAfterWritableIsRefused) {
  Fixture f;
  f.ring.set_desc(0, 0x8000, 16, W | N, 1);
  f.ring.set_desc(1, 0x9000, 16, 0);
  f.ring.publish(0);
  EXPECT_EQ(f.pop(), Pop::kBadChain);
  EXPECT_EQ(f.why, ChainError::kReadableAfterWritable);
  // A zero-length writable buffer still fixes the direction.
  f.ring.set_desc(2, 0x8000, 0, W | N, 3);
  f.ring.set_desc(3, 0x9000, 16, 0);
  f.ring.publish(2);
  EXPECT_EQ(f.pop(), Pop::kBadChain);
  EXPECT_EQ(f.why, ChainError::kReadableAfterWritable);
}

TEST(Virtqueue, IndirectTableIsFollowed) {
  Fixture f;
  const std::uint64_t table = 0x20000;
  f.ring.write_desc(table, 0, 0x8000, 16, N, 2);
  f.ring.write_desc(table, 2, 0x9000, 4096, W | N, 1);
  f.ring.write_desc(table, 1, 0xA000, 1, W);
  f.ring.set_desc(0, 0x7000, 8, N, 1);  // a direct descriptor may precede the indirect one
  f.ring.set_desc(1, table, 3 * 16, I | W);  // WRITE on the indirect descriptor is ignored
  f.ring.publish(0);
  ASSERT_EQ(f.pop(), Pop::kChain) << to_string(f.why);
  EXPECT_EQ(f.chain.readable.size(), 2u);
  EXPECT_EQ(f.chain.readable_bytes, 24u);
  EXPECT_EQ(f.chain.writable.size(), 2u);
  EXPECT_EQ(f.chain.writable_bytes, 4097u);
  EXPECT_EQ(f.chain.writable[1].data(), f.memory.slice(0xA000, 1)->data());
}

TEST(Virtqueue, MalformedIndirectDescriptorsAreRefused) {
  struct Case {
    std::uint64_t address;
    std::uint32_t length;
    std::uint16_t flags;
    ChainError expect;
  };
  const std::uint64_t table = 0x20000;
  const std::vector<Case> cases = {
      {table, 0, I, ChainError::kIndirectBadSize},
      {table, 24, I, ChainError::kIndirectBadSize},
      {table, (SplitQueue::kMaxIndirect + 1) * 16, I, ChainError::kIndirectBadSize},
      {table, 32, I | N, ChainError::kIndirectWithNext},
      {(1 << 20) - 16, 32, I, ChainError::kOutsideMemory},
  };
  for (const Case& c : cases) {
    Fixture f;
    f.ring.set_desc(0, c.address, c.length, c.flags, 1);
    f.ring.set_desc(1, 0x8000, 16, 0);
    f.ring.publish(0);
    EXPECT_EQ(f.pop(), Pop::kBadChain);
    EXPECT_EQ(f.why, c.expect) << to_string(f.why);
  }
  {
    Fixture f(8, false, /*indirect=*/false);
    f.ring.set_desc(0, table, 32, I);
    f.ring.publish(0);
    EXPECT_EQ(f.pop(), Pop::kBadChain);
    EXPECT_EQ(f.why, ChainError::kIndirectNotNegotiated);
  }
  {
    Fixture f;
    f.ring.write_desc(table, 0, table, 32, I);  // nested
    f.ring.set_desc(0, table, 32, I);
    f.ring.publish(0);
    EXPECT_EQ(f.pop(), Pop::kBadChain);
    EXPECT_EQ(f.why, ChainError::kIndirectNested);
  }
  {
    Fixture f;
    f.ring.write_desc(table, 0, 0x8000, 16, N, 1);  // a loop inside the table
    f.ring.write_desc(table, 1, 0x8000, 16, N, 0);
    f.ring.set_desc(0, table, 32, I);
    f.ring.publish(0);
    EXPECT_EQ(f.pop(), Pop::kBadChain);
    EXPECT_EQ(f.why, ChainError::kTooLong);
  }
  {
    Fixture f;
    f.ring.write_desc(table, 0, 0x8000, 16, N, 2);  // next past the table's end
    f.ring.set_desc(0, table, 32, I);
    f.ring.publish(0);
    EXPECT_EQ(f.pop(), Pop::kBadChain);
    EXPECT_EQ(f.why, ChainError::kNextOutOfRange);
  }
}

TEST(Virtqueue, IndicesWrapAround) {
  Fixture f(4);
  f.ring.set_desc(0, 0x8000, 16, 0);
  // Run the device and driver indices through 65535 -> 0.
  for (int i = 0; i < 70000; ++i) {
    f.ring.publish(0);
    ASSERT_EQ(f.pop(), Pop::kChain) << i;
    f.queue.push_used(0, 0);
  }
  EXPECT_EQ(f.queue.next_avail(), static_cast<std::uint16_t>(70000));
  EXPECT_EQ(f.ring.used_idx(), static_cast<std::uint16_t>(70000));
  EXPECT_EQ(f.pop(), Pop::kEmpty);
}

TEST(Virtqueue, WithoutEventIdxTheFlagsSuppressNotifications) {
  Fixture f(8, /*event_idx=*/false);
  f.ring.set_desc(0, 0x8000, 16, 0);
  EXPECT_FALSE(f.queue.needs_signal()) << "nothing used yet";
  f.ring.publish(0);
  ASSERT_EQ(f.pop(), Pop::kChain);
  f.queue.push_used(0, 0);
  EXPECT_TRUE(f.queue.needs_signal());
  EXPECT_FALSE(f.queue.needs_signal()) << "already signalled for that";
  f.ring.set_avail_flags(SplitQueue::kAvailNoInterrupt);
  f.queue.push_used(0, 0);
  EXPECT_FALSE(f.queue.needs_signal()) << "the driver asked for no interrupts";

  f.queue.disable_notification();
  EXPECT_EQ(f.ring.used_flags(), SplitQueue::kUsedNoNotify);
  EXPECT_FALSE(f.queue.enable_notification());
  EXPECT_EQ(f.ring.used_flags(), 0);
  f.ring.publish(0);
  EXPECT_TRUE(f.queue.enable_notification()) << "a buffer arrived while notifications were off";
}

TEST(Virtqueue, EventIdxSignalsOnlyWhenUsedEventIsCrossed) {
  Fixture f(8, /*event_idx=*/true);
  f.ring.set_desc(0, 0x8000, 16, 0);
  auto complete_one = [&] {
    f.ring.publish(0);
    EXPECT_EQ(f.pop(), Pop::kChain);
    f.queue.push_used(0, 0);
  };
  f.ring.set_used_event(0);
  complete_one();  // used index 0 -> 1 crosses event 0
  EXPECT_TRUE(f.queue.needs_signal());
  f.ring.set_used_event(3);  // "interrupt me when entry 3 is used"
  complete_one();            // 1 -> 2
  EXPECT_FALSE(f.queue.needs_signal());
  complete_one();  // 2 -> 3
  EXPECT_FALSE(f.queue.needs_signal());
  complete_one();  // 3 -> 4 crosses 3
  EXPECT_TRUE(f.queue.needs_signal());
  complete_one();
  complete_one();  // 4 -> 6 in one batch, event 3 long gone
  EXPECT_FALSE(f.queue.needs_signal());
  f.ring.set_used_event(6);
  complete_one();
  complete_one();  // 6 -> 8 in one batch crosses 6
  EXPECT_TRUE(f.queue.needs_signal());
  f.ring.set_avail_flags(SplitQueue::kAvailNoInterrupt);  // ignored with EVENT_IDX
  f.ring.set_used_event(8);
  complete_one();
  EXPECT_TRUE(f.queue.needs_signal());
}

TEST(Virtqueue, EventIdxAsksForTheNextNotificationThroughAvailEvent) {
  Fixture f(8, /*event_idx=*/true);
  f.ring.set_desc(0, 0x8000, 16, 0);
  f.queue.disable_notification();
  EXPECT_EQ(f.ring.used_flags(), 0) << "EVENT_IDX never uses NO_NOTIFY";
  f.ring.publish(0);
  f.ring.publish(0);
  EXPECT_EQ(f.pop(), Pop::kChain);
  EXPECT_TRUE(f.queue.enable_notification()) << "one more is waiting";
  EXPECT_EQ(f.ring.avail_event(), 1);
  EXPECT_EQ(f.pop(), Pop::kChain);
  EXPECT_FALSE(f.queue.enable_notification());
  EXPECT_EQ(f.ring.avail_event(), 2) << "notify me when you make entry 2 available";
}

TEST(Virtqueue, GatherAndScatterCrossBufferBoundaries) {
  std::array<std::uint8_t, 3> a{1, 2, 3};
  std::array<std::uint8_t, 2> b{4, 5};
  const std::vector<std::span<std::uint8_t>> spans = {a, b};
  std::array<std::uint8_t, 3> out{};
  EXPECT_TRUE(gather(spans, 2, out));
  EXPECT_EQ(out, (std::array<std::uint8_t, 3>{3, 4, 5}));
  EXPECT_FALSE(gather(spans, 3, out)) << "only two bytes left";
  const std::array<std::uint8_t, 2> in{9, 8};
  EXPECT_TRUE(scatter(spans, 2, in));
  EXPECT_EQ(a[2], 9);
  EXPECT_EQ(b[0], 8);
  EXPECT_FALSE(scatter(spans, 4, in));
  EXPECT_EQ(b[1], 5) << "nothing written when it does not fit";
}

}  // namespace
}  // namespace vmm::devices::virtio
