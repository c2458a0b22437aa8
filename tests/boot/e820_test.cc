#include "vmm/boot/e820.h"

#include <gtest/gtest.h>

#include "tests/boot/test_support.h"
#include "vmm/boot/layout.h"

namespace vmm::boot {
namespace {

using test::kMiB;
constexpr std::uint64_t kGiB = 1ull << 30;
// PCI ECAM (devices/pci/pci_root.h): Linux uses it only when it is reserved.
constexpr E820Entry kEcam{0xE000'0000, kMiB, E820Type::reserved};

TEST(E820, SmallGuestHasLowRamFirmwareHoleAndHighRam) {
  const auto memory = devices::GuestMemory::allocate(64 * kMiB);
  const std::vector<E820Entry> expected = {
      {0, 0x9FC00, E820Type::ram},
      {0x9FC00, 0x100000 - 0x9FC00, E820Type::reserved},
      {0x100000, 63 * kMiB, E820Type::ram},
      kEcam,
  };
  EXPECT_EQ(build_e820(memory), expected);
  EXPECT_EQ(low_ram_end(memory), 64 * kMiB);
}

TEST(E820, LargeGuestContinuesAboveFourGiB) {
  const auto memory = devices::GuestMemory::allocate(4 * kGiB);
  const std::vector<E820Entry> expected = {
      {0, 0x9FC00, E820Type::ram},
      {0x9FC00, 0x100000 - 0x9FC00, E820Type::reserved},
      {0x100000, 3 * kGiB - kMiB, E820Type::ram},
      kEcam,
      {4 * kGiB, kGiB, E820Type::ram},
  };
  EXPECT_EQ(build_e820(memory), expected);
  EXPECT_EQ(low_ram_end(memory), 3 * kGiB);
}

TEST(E820, GuestEndingInsideTheFirmwareAreaStillReservesIt) {
  const auto memory = devices::GuestMemory::allocate(0x80000);
  const std::vector<E820Entry> expected = {
      {0, 0x80000, E820Type::ram},
      {0x9FC00, 0x100000 - 0x9FC00, E820Type::reserved},
      kEcam,
  };
  EXPECT_EQ(build_e820(memory), expected);
}

TEST(E820, EntriesAreSortedAndDisjoint) {
  const auto memory = devices::GuestMemory::allocate(3 * kGiB + 16 * kMiB);
  const auto map = build_e820(memory);
  for (std::size_t i = 1; i < map.size(); ++i) EXPECT_LE(map[i - 1].end(), map[i].address);
  for (const E820Entry& entry : map) EXPECT_GT(entry.size, 0u);
}

}  // namespace
}  // namespace vmm::boot
