// Randomized, seeded tests of the virtqueue parser: arbitrary bytes through
// the same entry point libFuzzer uses, and random descriptor tables over a
// guest memory with two regions and a hole, checked against an independent
// walker written from the spec's rules.
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "devices/guest_memory.h"
#include "devices/virtio/virtqueue.h"
#include "tests/devices/virtio_ring.h"
#include "tests/fuzz/corpus.h"
#include "tests/fuzz/virtqueue_fuzz.h"

namespace vmm::devices::virtio {
namespace {

TEST(VirtqueueFuzz, ArbitraryInputsThroughTheFuzzEntryPoint) {
  std::mt19937_64 rng(0x5EED'0015);
  std::vector<std::uint8_t> input;
  constexpr int kInputs = 20000;
  for (int i = 0; i < kInputs; ++i) {
    input.resize(rng() % (5 + 128 * 18 + 1024));
    for (auto& b : input) b = static_cast<std::uint8_t>(rng());
    if (!input.empty() && i % 2 == 0) input[0] |= 0x20;  // half of them with addresses folded into RAM
    if (input.size() > 2 && i % 3 == 0) input[2] = 0;    // small available indices: more chains
    ASSERT_EQ(fuzz::fuzz_virtqueue(input.data(), input.size()), 0) << "input " << i;
  }
  EXPECT_EQ(fuzz::fuzz_virtqueue(nullptr, 0), 0) << "the empty input";
}

TEST(VirtqueueFuzz, TheCorpusReplays) {
  const std::vector<fuzz::CorpusInput> corpus = fuzz::read_corpus("virtqueue");
  for (const fuzz::CorpusInput& input : corpus) {
    ASSERT_EQ(fuzz::fuzz_virtqueue(input.bytes.data(), input.bytes.size()), 0) << input.path;
  }
  EXPECT_GE(corpus.size(), 20u) << "the corpus is missing";
}

// ---- An independent walker --------------------------------------------------

struct Expected {
  ChainError error = ChainError::kNone;
  std::vector<std::span<std::uint8_t>> readable, writable;
};

struct RawDesc {
  std::uint64_t address;
  std::uint32_t length;
  std::uint16_t flags;
  std::uint16_t next;
};

std::optional<std::span<std::uint8_t>> host_view(const GuestMemory& memory, std::uint64_t address, std::uint32_t length) {
  for (const MemoryRegion& r : memory.regions()) {
    const unsigned __int128 begin = address, end = begin + length;
    if (begin >= r.guest_address && end <= static_cast<unsigned __int128>(r.guest_address) + r.size) {
      return std::span<std::uint8_t>(r.host + (address - r.guest_address), length);
    }
  }
  return std::nullopt;
}

Expected walk(const GuestMemory& memory, const std::vector<RawDesc>& table, std::uint16_t head) {
  Expected out;
  std::uint64_t read_bytes = 0, write_bytes = 0;
  bool writing = false;
  std::uint32_t index = head;
  for (std::size_t visited = 1;; ++visited) {
    if (visited > table.size()) return {ChainError::kTooLong, {}, {}};
    const RawDesc& d = table[index];
    if (d.flags & SplitQueue::kDescIndirect) return {ChainError::kIndirectNotNegotiated, {}, {}};
    const bool w = (d.flags & SplitQueue::kDescWrite) != 0;
    if (!w && writing) return {ChainError::kReadableAfterWritable, {}, {}};
    writing |= w;
    auto view = host_view(memory, d.address, d.length);
    if (!view) return {ChainError::kOutsideMemory, {}, {}};
    (w ? write_bytes : read_bytes) += d.length;
    if (read_bytes > 0xFFFF'FFFFull || write_bytes > 0xFFFF'FFFFull) return {ChainError::kLengthOverflow, {}, {}};
    if (d.length != 0) (w ? out.writable : out.readable).push_back(*view);
    if (!(d.flags & SplitQueue::kDescNext)) return out;
    index = d.next;
    if (index >= table.size()) return {ChainError::kNextOutOfRange, {}, {}};
  }
}

TEST(VirtqueueFuzz, RandomTablesMatchAnIndependentWalker) {
  // Low RAM [0, 3 GiB), the MMIO hole, high RAM [4 GiB, 4 GiB + 64 KiB).
  GuestMemory memory = GuestMemory::allocate(GuestMemory::kMmioHoleStart + 0x10000);
  ASSERT_EQ(memory.regions().size(), 2u);
  const std::uint64_t low_end = GuestMemory::kMmioHoleStart;
  const std::uint64_t high_end = GuestMemory::kHighRamStart + 0x10000;
  const std::array<std::uint64_t, 10> anchors = {0, 0x8000, low_end - 0x10000, low_end - 16, low_end,
                                                 GuestMemory::kHighRamStart - 8, GuestMemory::kHighRamStart,
                                                 high_end - 16, high_end, ~0ull - 15};
  const std::array<std::uint32_t, 8> lengths = {0, 1, 16, 512, 4096, 0x8000'0000, 0xFFFF'FFFF, 24};

  std::mt19937_64 rng(0x5EED'7AB1);
  constexpr std::uint16_t kSize = 16;
  testing::DriverRing ring(memory, kSize, 0x1000);
  std::uint64_t chains = 0, refused = 0;
  for (int round = 0; round < 3000; ++round) {
    std::vector<RawDesc> table(kSize);
    for (std::uint16_t i = 0; i < kSize; ++i) {
      RawDesc& d = table[i];
      d.address = anchors[rng() % anchors.size()] + (rng() % 3 == 0 ? rng() % 64 : 0);
      d.length = rng() % 4 == 0 ? static_cast<std::uint32_t>(rng()) : lengths[rng() % lengths.size()];
      d.flags = static_cast<std::uint16_t>(rng() % 8 == 0 ? SplitQueue::kDescIndirect : rng() % 4);
      d.next = static_cast<std::uint16_t>(rng() % (kSize + 2));
      ring.set_desc(i, d.address, d.length, d.flags, d.next);
    }
    SplitQueue queue;
    ASSERT_EQ(queue.activate(memory, ring.layout(), false, /*indirect=*/false), nullptr);
    ring.set_avail_idx(0);
    std::vector<std::uint16_t> heads;
    for (int i = 0; i < kSize; ++i) {
      heads.push_back(static_cast<std::uint16_t>(rng() % kSize));
      ring.publish(heads.back());
    }
    Chain chain;
    ChainError why;
    for (std::uint16_t head : heads) {
      const SplitQueue::Pop result = queue.pop(chain, why);
      const Expected expected = walk(memory, table, head);
      ASSERT_NE(result, SplitQueue::Pop::kEmpty);
      ASSERT_NE(result, SplitQueue::Pop::kBroken);
      ASSERT_EQ(chain.head, head);
      ASSERT_EQ(why, expected.error) << "round " << round << ": " << to_string(why) << " vs "
                                     << to_string(expected.error);
      if (expected.error != ChainError::kNone) {
        ++refused;
        queue.push_used(head, 0);
        continue;
      }
      ++chains;
      ASSERT_EQ(chain.readable.size(), expected.readable.size());
      ASSERT_EQ(chain.writable.size(), expected.writable.size());
      for (std::size_t i = 0; i < chain.readable.size(); ++i) {
        ASSERT_EQ(chain.readable[i].data(), expected.readable[i].data());
        ASSERT_EQ(chain.readable[i].size(), expected.readable[i].size());
      }
      for (std::size_t i = 0; i < chain.writable.size(); ++i) {
        ASSERT_EQ(chain.writable[i].data(), expected.writable[i].data());
        ASSERT_EQ(chain.writable[i].size(), expected.writable[i].size());
      }
      queue.push_used(head, 0);
    }
    ASSERT_EQ(queue.pop(chain, why), SplitQueue::Pop::kEmpty);
  }
  // The generator must exercise both outcomes, or the comparison proves little.
  EXPECT_GT(chains, 1000u);
  EXPECT_GT(refused, 1000u);
}

}  // namespace
}  // namespace vmm::devices::virtio
