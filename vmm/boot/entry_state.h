// The vCPU state a loaded image expects at its first instruction. The loaders
// fill it in; the KVM layer translates it into KVM_SET_SREGS/KVM_SET_REGS for
// the boot vCPU. Kept free of <linux/kvm.h> so that boot/ can be built and
// tested without KVM.
#pragma once

#include <cstdint>

namespace vmm::boot {

// How the image is entered; decides which registers carry meaning.
enum class EntryMode : std::uint8_t {
  pvh32,    // 32-bit protected mode, paging off, EBX = hvm_start_info.
  linux64,  // Long mode on identity-mapped page tables, RSI = boot_params.
};

// One segment register, hidden part included. Field meanings follow the
// architectural descriptor: `type` is the 4-bit type field, `s` is 1 for
// code/data and 0 for system segments, `db` the default-size bit, `l` the
// 64-bit code bit, `g` 4 KiB granularity. `limit` is the expanded byte
// limit (0xFFFFFFFF for a flat segment with g = 1), as KVM expects it.
struct Segment {
  std::uint64_t base = 0;
  std::uint32_t limit = 0;
  std::uint16_t selector = 0;
  std::uint8_t type = 0;
  std::uint8_t present = 0;
  std::uint8_t dpl = 0;
  std::uint8_t db = 0;
  std::uint8_t s = 0;
  std::uint8_t l = 0;
  std::uint8_t g = 0;
  std::uint8_t avl = 0;
  // An unusable segment (a null selector loaded into a data register).
  std::uint8_t unusable = 0;

  friend bool operator==(const Segment&, const Segment&) = default;
};

struct DescriptorTable {
  std::uint64_t base = 0;
  std::uint16_t limit = 0;

  friend bool operator==(const DescriptorTable&, const DescriptorTable&) = default;
};

struct EntryState {
  EntryMode mode = EntryMode::pvh32;

  std::uint64_t rax = 0, rbx = 0, rcx = 0, rdx = 0;
  std::uint64_t rsi = 0, rdi = 0, rsp = 0, rbp = 0;
  std::uint64_t r8 = 0, r9 = 0, r10 = 0, r11 = 0;
  std::uint64_t r12 = 0, r13 = 0, r14 = 0, r15 = 0;
  std::uint64_t rip = 0;
  // Bit 1 is architecturally reserved-as-one; interrupts are off at entry.
  std::uint64_t rflags = 0x2;

  Segment cs, ds, es, fs, gs, ss;
  // The task register must be a busy TSS for a later VM entry to be valid,
  // and LDTR must be usable-or-null; both are filled in by the loaders.
  Segment tr, ldt;
  DescriptorTable gdt, idt;

  std::uint64_t cr0 = 0;
  std::uint64_t cr3 = 0;
  std::uint64_t cr4 = 0;
  std::uint64_t efer = 0;
};

// Architectural bits the loaders set and the tests check.
inline constexpr std::uint64_t kCr0Pe = 1ull << 0;
inline constexpr std::uint64_t kCr0Et = 1ull << 4;
inline constexpr std::uint64_t kCr0Pg = 1ull << 31;
inline constexpr std::uint64_t kCr4Pae = 1ull << 5;
inline constexpr std::uint64_t kEferLme = 1ull << 8;
inline constexpr std::uint64_t kEferLma = 1ull << 10;

}  // namespace vmm::boot
