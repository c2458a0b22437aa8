#include "vmm/boot/page_tables.h"

#include <gtest/gtest.h>

#include <array>

#include "tests/boot/test_support.h"
#include "vmm/boot/layout.h"

namespace vmm::boot {
namespace {

using test::kMiB;

TEST(PageTables, IdentityMapsTheFirstFourGiB) {
  auto memory = devices::GuestMemory::allocate(64 * kMiB);
  const std::uint64_t cr3 = write_identity_page_tables(memory);
  EXPECT_EQ(cr3, layout::kPml4Address);
  for (std::uint64_t address : {0x0ull, 0x7000ull, 0x1234567ull, 0x3FFF'FFFFull, 0x4000'0000ull, 0xBFFF'F000ull,
                                0xFEE0'0000ull, 0xFFFF'FFFFull}) {
    EXPECT_EQ(translate(memory, cr3, address), address) << std::hex << address;
  }
  EXPECT_EQ(translate(memory, cr3, 0x1'0000'0000ull), std::nullopt);
  // Non-canonical addresses never translate.
  EXPECT_EQ(translate(memory, cr3, 0x0000'8000'0000'0000ull), std::nullopt);
}

TEST(PageTables, WalkerHandlesOneGiBAndFourKiBPages) {
  auto memory = devices::GuestMemory::allocate(4 * kMiB);
  // PML4 at 0x10000; slot 511 -> PDPT at 0x11000 (the -512 GiB region).
  // PDPT[510] is a 1 GiB page at 0x4000_0000; PDPT[0] -> PD at 0x12000,
  // PD[1] -> PT at 0x13000, PT[3] maps to 0x20'5000.
  std::array<std::uint64_t, 512> pml4{}, pdpt{}, pd{}, pt{};
  pml4[511] = 0x11000 | 3;
  pdpt[510] = 0x4000'0000 | 0x83;
  pdpt[0] = 0x12000 | 3;
  pd[1] = 0x13000 | 3;
  pt[3] = 0x20'5000 | 3;
  ASSERT_TRUE(memory.write_obj(0x10000, pml4));
  ASSERT_TRUE(memory.write_obj(0x11000, pdpt));
  ASSERT_TRUE(memory.write_obj(0x12000, pd));
  ASSERT_TRUE(memory.write_obj(0x13000, pt));

  const std::uint64_t high_half = 0xFFFF'FF80'0000'0000ull;
  EXPECT_EQ(translate(memory, 0x10000, high_half + 510 * (1ull << 30) + 0x123456), 0x4012'3456u);
  EXPECT_EQ(translate(memory, 0x10000, high_half + (1ull << 21) + 3 * 0x1000 + 0x9A), 0x20'509Au);
  EXPECT_EQ(translate(memory, 0x10000, high_half + (1ull << 21) + 4 * 0x1000), std::nullopt);
  EXPECT_EQ(translate(memory, 0x10000, 0x1000), std::nullopt);
  // Tables outside guest RAM end the walk instead of reading beyond it.
  EXPECT_EQ(translate(memory, 0x7000'0000, 0x1000), std::nullopt);
}

}  // namespace
}  // namespace vmm::boot
