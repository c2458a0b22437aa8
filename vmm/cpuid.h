// The CPUID table each vCPU sees, derived from KVM_GET_SUPPORTED_CPUID.
//
// Topology presented to the guest: one package, one core per vCPU, one
// thread per core, no NUMA. vCPU i has APIC ID (and x2APIC ID) i, which is
// also its KVM vCPU id, so the MADT the loader writes and what CPUID reports
// agree by construction.
//
// What changes relative to the supported list (everything else passes
// through untouched, because KVM only reports what it can virtualize):
//
//   leaf 1        EBX[31:24] = APIC ID; EBX[23:16] = addressable logical
//                 processor IDs in the package (power of two >= count, at
//                 most 255); EDX.HTT (bit 28) set when there is more than one
//                 vCPU, telling the guest that field is valid; ECX.hypervisor
//                 (bit 31) set so guests look for the KVM leaves; ECX.TSC-
//                 deadline (bit 24) set exactly when the LAPIC implements
//                 it (`tsc_deadline`), else cleared; x2APIC (bit 21)
//                 cleared when a user-space LAPIC cannot offer it.
//   leaf 4        (Intel cache topology) EAX[31:26] = addressable core IDs - 1;
//                 EAX[25:14] = 0 for per-core caches (L1, L2: one thread per
//                 core), addressable core IDs - 1 for L3 (shared package-wide).
//   leaves 0xB,   (extended topology) rebuilt: sub-leaf 0 is the SMT level
//   0x1F          (shift 0, 1 thread), sub-leaf 1 the core level (shift =
//                 bits needed for the core count, count = vCPU count),
//                 sub-leaf 2 terminates; EDX = x2APIC ID everywhere. Only
//                 emitted when the supported list has the leaf.
//   0x80000008    (AMD, Hygon) ECX[7:0] = vCPU count - 1, ECX[15:12] = APIC ID
//                 bits for the core, matching leaf 0xB.
//   0x8000001D    (AMD cache topology) EAX[25:14]: 0 below L3, count - 1 for L3.
//   0x8000001E    (AMD, with TOPOEXT) EAX = extended APIC ID, EBX = core ID
//                 (one thread per core), ECX = node 0 of 1.
//   0x40000000    "KVMKVMKVM\0\0\0", EAX = 0x40000001 (highest KVM leaf).
//   0x40000001    KVM paravirtual features exactly as KVM supports them (the
//                 in-kernel LAPIC makes PV EOI, PV IPI and PV unhalt work);
//                 EDX (hints) = 0: vCPUs are not pinned to dedicated host CPUs.
//
// With more than 255 vCPUs the 8-bit APIC ID in leaf 1 wraps; such guests
// need x2APIC (leaf 0xB carries the full ID) and KVM_CAP_X2APIC_API.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

namespace vmm {

struct CpuidOptions {
  unsigned vcpu_index = 0;
  unsigned vcpu_count = 1;
  // KvmSystem::has_tsc_deadline_timer(): only true with an in-kernel LAPIC.
  bool tsc_deadline = false;
  // The local APIC is the VMM's (--irqchip=userspace): x2APIC (leaf 1
  // ECX[21]) only when `x2apic` (its MSRs reach user space), and of the KVM
  // paravirtual features only those that need no in-kernel LAPIC (the
  // clocks, steal time, no I/O delay): PV EOI, PV unhalt, PV IPIs, async
  // page faults and the rest would talk to a LAPIC KVM does not have.
  bool userspace_apic = false;
  bool x2apic = true;
};

// The table for one vCPU. Pure function: no KVM access, unit-testable.
std::vector<kvm_cpuid_entry2> vcpu_cpuid(std::span<const kvm_cpuid_entry2> supported, const CpuidOptions& options);

// Lookup helper: the entry for (function, index), or nullptr.
const kvm_cpuid_entry2* find_cpuid(std::span<const kvm_cpuid_entry2> entries, std::uint32_t function,
                                   std::uint32_t index = 0) noexcept;

// Bits of the APIC ID that hold the core number for `count` cores.
unsigned core_id_bits(unsigned count) noexcept;

}  // namespace vmm
