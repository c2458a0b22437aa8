#include "vmm/boot/gdt.h"

#include <fmt/format.h>

#include "devices/error.h"
#include "vmm/boot/layout.h"

namespace vmm::boot::gdt {

namespace {

struct DescriptorFields {
  std::uint32_t base;
  std::uint32_t limit;  // 20-bit raw limit
  std::uint8_t type;
  bool s;
  bool db;
  bool l;
  bool g;
};

constexpr std::uint64_t encode(const DescriptorFields& f) {
  const std::uint64_t access = (1u << 7) /* present */ | (f.s ? 1u << 4 : 0u) | f.type;
  const std::uint64_t flags = (f.g ? 8u : 0u) | (f.db ? 4u : 0u) | (f.l ? 2u : 0u);
  return (f.limit & 0xFFFFull) | ((f.base & 0xFFFFFFull) << 16) | (access << 40) |
         (((f.limit >> 16) & 0xFull) << 48) | (flags << 52) | ((std::uint64_t{f.base} >> 24) << 56);
}

constexpr std::uint32_t kFlatLimit = 0xFFFFF;  // with g = 1: 4 GiB
// The minimal 32-bit TSS size (104 bytes) minus one. Nothing switches tasks
// at boot; the descriptor exists because VM entry wants a usable TR.
constexpr std::uint32_t kTssLimit = 0x67;

}  // namespace

std::array<std::uint64_t, kEntries> boot_descriptors() {
  std::array<std::uint64_t, kEntries> table{};
  table[kCode32Selector / 8] = encode({0, kFlatLimit, kTypeCodeExecuteRead, true, true, false, true});
  table[kCode64Selector / 8] = encode({0, kFlatLimit, kTypeCodeExecuteRead, true, false, true, true});
  table[kDataSelector / 8] = encode({0, kFlatLimit, kTypeDataReadWrite, true, true, false, true});
  // The upper half of the 16-byte system descriptor (base bits 63:32) is 0.
  table[kTssSelector / 8] = encode({0, kTssLimit, kTypeBusyTss, false, false, false, false});
  return table;
}

Segment decode(std::uint64_t descriptor, std::uint16_t selector) {
  Segment segment;
  segment.selector = selector;
  segment.base = ((descriptor >> 16) & 0xFFFFFF) | (((descriptor >> 56) & 0xFF) << 24);
  std::uint32_t limit = static_cast<std::uint32_t>((descriptor & 0xFFFF) | (((descriptor >> 48) & 0xF) << 16));
  segment.type = static_cast<std::uint8_t>((descriptor >> 40) & 0xF);
  segment.s = static_cast<std::uint8_t>((descriptor >> 44) & 1);
  segment.dpl = static_cast<std::uint8_t>((descriptor >> 45) & 3);
  segment.present = static_cast<std::uint8_t>((descriptor >> 47) & 1);
  segment.avl = static_cast<std::uint8_t>((descriptor >> 52) & 1);
  segment.l = static_cast<std::uint8_t>((descriptor >> 53) & 1);
  segment.db = static_cast<std::uint8_t>((descriptor >> 54) & 1);
  segment.g = static_cast<std::uint8_t>((descriptor >> 55) & 1);
  // The hidden limit is in bytes: page granularity fills the low 12 bits.
  segment.limit = segment.g ? (limit << 12) | 0xFFF : limit;
  return segment;
}

void install(devices::GuestMemory& memory, EntryState& state) {
  const auto table = boot_descriptors();
  if (!memory.write_obj(layout::kGdtAddress, table)) {
    throw Error(fmt::format("guest memory does not cover the boot GDT at {:#x}", layout::kGdtAddress));
  }
  const std::uint16_t code = state.mode == EntryMode::linux64 ? kCode64Selector : kCode32Selector;
  state.cs = decode(table[code / 8], code);
  const Segment data = decode(table[kDataSelector / 8], kDataSelector);
  state.ds = state.es = state.fs = state.gs = state.ss = data;
  state.tr = decode(table[kTssSelector / 8], kTssSelector);

  state.ldt = Segment{};
  state.ldt.type = kTypeLdt;
  state.ldt.unusable = 1;

  state.gdt = {layout::kGdtAddress, static_cast<std::uint16_t>(sizeof(table) - 1)};
  // No IDT: interrupts stay off until the guest installs its own.
  state.idt = {0, 0};
}

}  // namespace vmm::boot::gdt
