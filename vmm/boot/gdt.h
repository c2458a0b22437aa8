// The boot GDT shared by both entry modes, and the matching hidden segment
// state for EntryState. The descriptors in guest memory and the segment
// registers handed to KVM come from the same table, so they cannot disagree
// when the guest reloads a selector.
#pragma once

#include <array>
#include <cstdint>

#include "devices/guest_memory.h"
#include "vmm/boot/entry_state.h"

namespace vmm::boot::gdt {

// The Linux 64-bit boot protocol fixes __BOOT_CS = 0x10 and __BOOT_DS = 0x18;
// PVH leaves the selectors open, so its 32-bit code segment takes slot 1.
inline constexpr std::uint16_t kCode32Selector = 0x08;
inline constexpr std::uint16_t kCode64Selector = 0x10;
inline constexpr std::uint16_t kDataSelector = 0x18;
// A 64-bit TSS descriptor takes two slots (0x20 and 0x28).
inline constexpr std::uint16_t kTssSelector = 0x20;
inline constexpr std::size_t kEntries = 6;

// Descriptor type fields (with the accessed bit set, as a loaded segment has).
inline constexpr std::uint8_t kTypeCodeExecuteRead = 0xB;
inline constexpr std::uint8_t kTypeDataReadWrite = 0x3;
inline constexpr std::uint8_t kTypeBusyTss = 0xB;
inline constexpr std::uint8_t kTypeLdt = 0x2;

// The raw 8-byte descriptors, index = selector / 8.
std::array<std::uint64_t, kEntries> boot_descriptors();

// Decodes one 8-byte code/data/system descriptor into the hidden segment
// state a load of `selector` would produce.
Segment decode(std::uint64_t descriptor, std::uint16_t selector);

// Writes the GDT at layout::kGdtAddress (throws vmm::Error when guest RAM
// does not cover it) and fills the segment registers, GDTR and IDTR of
// `state` for `state.mode`.
void install(devices::GuestMemory& memory, EntryState& state);

}  // namespace vmm::boot::gdt
