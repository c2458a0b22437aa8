#include "vmm/boot/gdt.h"

#include <gtest/gtest.h>

#include <array>

#include "tests/boot/test_support.h"
#include "vmm/boot/layout.h"

namespace vmm::boot {
namespace {

TEST(Gdt, DescriptorsDecodeToFlatSegments) {
  const auto table = gdt::boot_descriptors();
  EXPECT_EQ(table[0], 0u);
  const Segment code32 = gdt::decode(table[1], gdt::kCode32Selector);
  EXPECT_EQ(code32.base, 0u);
  EXPECT_EQ(code32.limit, 0xFFFF'FFFFu);
  EXPECT_EQ(code32.type, gdt::kTypeCodeExecuteRead);
  EXPECT_EQ(code32.db, 1);
  EXPECT_EQ(code32.l, 0);
  EXPECT_EQ(code32.g, 1);
  EXPECT_EQ(code32.s, 1);
  EXPECT_EQ(code32.present, 1);

  const Segment code64 = gdt::decode(table[2], gdt::kCode64Selector);
  EXPECT_EQ(code64.l, 1);
  EXPECT_EQ(code64.db, 0);  // L and D together are reserved
  EXPECT_EQ(code64.type, gdt::kTypeCodeExecuteRead);

  const Segment data = gdt::decode(table[3], gdt::kDataSelector);
  EXPECT_EQ(data.type, gdt::kTypeDataReadWrite);
  EXPECT_EQ(data.limit, 0xFFFF'FFFFu);
  EXPECT_EQ(data.db, 1);

  const Segment tss = gdt::decode(table[4], gdt::kTssSelector);
  EXPECT_EQ(tss.s, 0);
  EXPECT_EQ(tss.type, gdt::kTypeBusyTss);
  EXPECT_EQ(tss.limit, 0x67u);
  EXPECT_EQ(table[5], 0u);  // upper half of the 16-byte TSS descriptor
}

TEST(Gdt, InstallWritesTheTableTheSegmentsCameFrom) {
  auto memory = devices::GuestMemory::allocate(2 * test::kMiB);
  for (EntryMode mode : {EntryMode::pvh32, EntryMode::linux64}) {
    EntryState state;
    state.mode = mode;
    gdt::install(memory, state);
    EXPECT_EQ(state.gdt.base, layout::kGdtAddress);
    EXPECT_EQ(state.gdt.limit, gdt::kEntries * 8 - 1);
    const auto in_guest = test::read_guest<std::array<std::uint64_t, gdt::kEntries>>(memory, layout::kGdtAddress);
    EXPECT_EQ(in_guest, gdt::boot_descriptors());
    EXPECT_EQ(state.cs, gdt::decode(in_guest[state.cs.selector / 8], state.cs.selector));
    for (const Segment* s : {&state.ds, &state.es, &state.fs, &state.gs, &state.ss}) {
      EXPECT_EQ(*s, gdt::decode(in_guest[gdt::kDataSelector / 8], gdt::kDataSelector));
    }
    EXPECT_EQ(state.tr.selector, gdt::kTssSelector);
    EXPECT_EQ(state.ldt.unusable, 1);
  }
}

}  // namespace
}  // namespace vmm::boot
