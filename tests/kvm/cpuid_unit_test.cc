// The CPUID transformation on synthetic "supported" lists (no /dev/kvm).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "vmm/cpuid.h"

namespace vmm {
namespace {

kvm_cpuid_entry2 entry(std::uint32_t function, std::uint32_t index, std::uint32_t eax, std::uint32_t ebx,
                       std::uint32_t ecx, std::uint32_t edx, bool indexed = false) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  e.flags = indexed ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
  e.eax = eax;
  e.ebx = ebx;
  e.ecx = ecx;
  e.edx = edx;
  return e;
}

std::uint32_t reg(const char* four) {
  std::uint32_t v;
  std::memcpy(&v, four, 4);
  return v;
}

// Shaped like KVM_GET_SUPPORTED_CPUID on an Intel host: leaf 0xB and 0x1F
// with only sub-leaf 0, four caches in leaf 4.
std::vector<kvm_cpuid_entry2> intel_supported() {
  return {
      entry(0, 0, 0x1f, reg("Genu"), reg("ntel"), reg("ineI")),
      // Leaf 1: EBX has CLFLUSH size 8 and host APIC ID 0x2a / 16 logical;
      // ECX has TSC-deadline (24) and x2APIC (21), no hypervisor bit.
      entry(1, 0, 0x000906ea, 0x2a100800, 0x01200000, 0x178bfbff),
      entry(4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0, true),   // L1d, shared by 2 threads
      entry(4, 1, 0x1c004122, 0x01c0003f, 0x3f, 0, true),   // L1i
      entry(4, 2, 0x1c004143, 0x01c0003f, 0x3ff, 0, true),  // L2
      entry(4, 3, 0x1c03c163, 0x03c0003f, 0x2fff, 6, true), // L3, shared by 16
      entry(4, 4, 0, 0, 0, 0, true),
      entry(7, 0, 0, 0x029c6fbf, 0x40000000, 0xbc000400, true),
      entry(0xb, 0, 1, 2, 0x100, 0x2a, true),
      entry(0x1f, 0, 1, 2, 0x100, 0x2a, true),
      entry(0x40000000, 0, 0x40000001, reg("KVMK"), reg("VMKV"), reg("M\0\0\0")),
      entry(0x40000001, 0, 0x01007afb, 0, 0, 0x1),
      entry(0x80000000, 0, 0x80000008, 0, 0, 0),
      entry(0x80000008, 0, 0x3027, 0, 0, 0),
  };
}

// Shaped like the list this project's AMD-based PVM host returns.
std::vector<kvm_cpuid_entry2> amd_supported() {
  return {
      entry(0, 0, 0x1c, reg("Auth"), reg("cAMD"), reg("enti")),
      entry(1, 0, 0x00a10f11, 0x01020800, 0x81202000, 0x078bfbff),
      entry(4, 0, 0, 0, 0, 0, true),
      entry(0xb, 0, 0, 0, 0, 1, true),
      entry(0x40000000, 0, 0x40000001, reg("KVMK"), reg("VMKV"), reg("M\0\0\0")),
      entry(0x40000001, 0, 0x01007efb, 0, 0, 0),
      entry(0x80000001, 0, 0x00a10f11, 0x40000000, 0x00400393, 0x23d3fbff),
      entry(0x80000008, 0, 0x3030, 0x50020005, 0x7001, 0),
      entry(0x8000001d, 0, 0x121, 0x01c0003f, 0x3f, 0, true),
      entry(0x8000001d, 1, 0x122, 0x01c0003f, 0x3f, 0, true),
      entry(0x8000001d, 2, 0x143, 0x01c0003f, 0x7ff, 2, true),
      entry(0x8000001d, 3, 0x4163, 0x03c0003f, 0x7fff, 1, true),
      entry(0x8000001d, 4, 0, 0, 0, 0, true),
      entry(0x8000001e, 0, 0, 0, 0, 0),
  };
}

const kvm_cpuid_entry2& get(const std::vector<kvm_cpuid_entry2>& t, std::uint32_t f, std::uint32_t i = 0) {
  const kvm_cpuid_entry2* e = find_cpuid(t, f, i);
  if (e == nullptr) throw std::runtime_error("missing leaf " + std::to_string(f) + "." + std::to_string(i));
  return *e;
}

TEST(CpuidTransform, Leaf1CarriesApicIdCountHttAndHypervisor) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 2, .vcpu_count = 4, .tsc_deadline = true});
  const auto& l1 = get(t, 1);
  EXPECT_EQ(l1.ebx >> 24, 2u);
  EXPECT_EQ((l1.ebx >> 16) & 0xff, 4u);
  EXPECT_EQ(l1.ebx & 0xffff, 0x0800u) << "CLFLUSH line size and brand index pass through";
  EXPECT_NE(l1.edx & (1u << 28), 0u) << "HTT: the count field is valid";
  EXPECT_NE(l1.ecx & (1u << 31), 0u) << "hypervisor bit";
  EXPECT_NE(l1.ecx & (1u << 24), 0u) << "TSC-deadline kept";
  EXPECT_NE(l1.ecx & (1u << 21), 0u) << "x2APIC passes through";
  EXPECT_EQ(l1.eax, 0x000906eau);
}

TEST(CpuidTransform, TscDeadlineClearedWithoutInKernelSupport) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 0, .vcpu_count = 1, .tsc_deadline = false});
  EXPECT_EQ(get(t, 1).ecx & (1u << 24), 0u);
}

TEST(CpuidTransform, SingleVcpuHasNoHtt) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 0, .vcpu_count = 1, .tsc_deadline = true});
  const auto& l1 = get(t, 1);
  EXPECT_EQ(l1.ebx >> 24, 0u);
  EXPECT_EQ((l1.ebx >> 16) & 0xff, 1u);
  EXPECT_EQ(l1.edx & (1u << 28), 0u);
  const auto& core = get(t, 0xb, 1);
  EXPECT_EQ(core.eax, 0u);
  EXPECT_EQ(core.ebx, 1u);
}

TEST(CpuidTransform, LogicalCountRoundsUpToAPowerOfTwo) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 2, .vcpu_count = 3, .tsc_deadline = true});
  EXPECT_EQ((get(t, 1).ebx >> 16) & 0xff, 4u);
  EXPECT_EQ(get(t, 0xb, 1).eax, 2u) << "two bits of core ID";
  EXPECT_EQ(get(t, 0xb, 1).ebx, 3u) << "but three logical processors";
}

TEST(CpuidTransform, Leaf4CoreAndSharingCounts) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 1, .vcpu_count = 4, .tsc_deadline = true});
  for (std::uint32_t sub = 0; sub < 3; ++sub) {
    const auto& c = get(t, 4, sub);
    EXPECT_EQ(c.eax >> 26, 3u) << "sub-leaf " << sub << ": cores per package - 1";
    EXPECT_EQ((c.eax >> 14) & 0xfff, 0u) << "sub-leaf " << sub << ": one thread per core";
    EXPECT_EQ(c.eax & 0x3fff, intel_supported()[2 + sub].eax & 0x3fff) << "type/level/etc. pass through";
  }
  const auto& l3 = get(t, 4, 3);
  EXPECT_EQ(l3.eax >> 26, 3u);
  EXPECT_EQ((l3.eax >> 14) & 0xfff, 3u) << "L3 shared by the whole package";
  EXPECT_EQ(get(t, 4, 4).eax, 0u) << "the terminating sub-leaf stays empty";
}

TEST(CpuidTransform, ExtendedTopologyLeavesAreRebuilt) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 5, .vcpu_count = 6, .tsc_deadline = true});
  for (std::uint32_t leaf : {0xbu, 0x1fu}) {
    const auto& smt = get(t, leaf, 0);
    EXPECT_EQ(smt.eax, 0u);
    EXPECT_EQ(smt.ebx, 1u);
    EXPECT_EQ(smt.ecx, 0x100u);
    EXPECT_EQ(smt.edx, 5u);
    const auto& core = get(t, leaf, 1);
    EXPECT_EQ(core.eax, 3u);
    EXPECT_EQ(core.ebx, 6u);
    EXPECT_EQ(core.ecx, 0x201u);
    EXPECT_EQ(core.edx, 5u);
    const auto& end = get(t, leaf, 2);
    EXPECT_EQ(end.ebx, 0u);
    EXPECT_EQ(end.ecx, 2u);
    EXPECT_EQ(end.edx, 5u);
    for (std::uint32_t sub = 0; sub < 3; ++sub) EXPECT_NE(get(t, leaf, sub).flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0u);
  }
  int count_b = 0;
  for (const auto& e : t) count_b += e.function == 0xb;
  EXPECT_EQ(count_b, 3) << "the host's sub-leaf 0 is replaced, not kept";
}

TEST(CpuidTransform, NoTopologyLeafWhenTheHostHasNone) {
  auto supported = intel_supported();
  std::erase_if(supported, [](const kvm_cpuid_entry2& e) { return e.function == 0xb || e.function == 0x1f; });
  const auto t = vcpu_cpuid(supported, {.vcpu_index = 0, .vcpu_count = 2, .tsc_deadline = true});
  EXPECT_EQ(find_cpuid(t, 0xb, 0), nullptr);
  EXPECT_EQ(find_cpuid(t, 0x1f, 0), nullptr);
}

TEST(CpuidTransform, KvmLeaves) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 0, .vcpu_count = 2, .tsc_deadline = true});
  const auto& sig = get(t, 0x40000000);
  EXPECT_EQ(sig.eax, 0x40000001u);
  char name[13] = {};
  std::memcpy(name, &sig.ebx, 4);
  std::memcpy(name + 4, &sig.ecx, 4);
  std::memcpy(name + 8, &sig.edx, 4);
  EXPECT_EQ(std::memcmp(name, "KVMKVMKVM\0\0\0", 12), 0);
  const auto& features = get(t, 0x40000001);
  EXPECT_EQ(features.eax, 0x01007afbu) << "features exactly as supported";
  EXPECT_EQ(features.edx, 0u) << "no 'dedicated host CPU' hint";
}

// --irqchip=userspace: what the guest is told must be what the VMM's own
// LAPIC gives it, not what KVM's would.
TEST(CpuidTransform, UserspaceApicWithoutX2apicMsrsHidesX2apic) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 0, .vcpu_count = 2, .tsc_deadline = false,
                                                .userspace_apic = true, .x2apic = false});
  EXPECT_EQ(get(t, 1).ecx & (1u << 21), 0u) << "x2APIC hidden";
  EXPECT_EQ(get(t, 1).ecx & (1u << 24), 0u) << "TSC-deadline hidden";
}

TEST(CpuidTransform, UserspaceApicWithItsMsrsOffersX2apicAndTscDeadline) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 0, .vcpu_count = 2, .tsc_deadline = true,
                                                .userspace_apic = true, .x2apic = true});
  EXPECT_NE(get(t, 1).ecx & (1u << 21), 0u);
  EXPECT_NE(get(t, 1).ecx & (1u << 24), 0u);
}

TEST(CpuidTransform, UserspaceApicKeepsOnlyPvFeaturesThatNeedNoKernelLapic) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 0, .vcpu_count = 2, .tsc_deadline = true,
                                                .userspace_apic = true});
  // Supported 0x01007afb: clocksource, nop io delay, clocksource2, async
  // PF (4), steal time, PV EOI (6), PV unhalt (7), PV TLB flush (9), async
  // PF vmexit (10), PV IPI (11), poll control (12), stable bit (24).
  EXPECT_EQ(get(t, 0x40000001).eax, 0x0100002bu);
  const auto split = vcpu_cpuid(intel_supported(), {.vcpu_index = 0, .vcpu_count = 2, .tsc_deadline = true});
  EXPECT_EQ(get(split, 0x40000001).eax, 0x01007afbu) << "the split irqchip keeps them all";
}

TEST(CpuidTransform, KvmLeavesAddedWhenMissing) {
  auto supported = intel_supported();
  std::erase_if(supported, [](const kvm_cpuid_entry2& e) { return e.function >= 0x40000000 && e.function < 0x40000100; });
  const auto t = vcpu_cpuid(supported, {.vcpu_index = 0, .vcpu_count = 1, .tsc_deadline = true});
  EXPECT_EQ(get(t, 0x40000000).ebx, reg("KVMK"));
  EXPECT_EQ(get(t, 0x40000001).eax, 0u);
}

TEST(CpuidTransform, OtherLeavesPassThrough) {
  const auto supported = intel_supported();
  const auto t = vcpu_cpuid(supported, {.vcpu_index = 3, .vcpu_count = 4, .tsc_deadline = true});
  for (std::uint32_t f : {0u, 7u, 0x80000000u, 0x80000008u}) {
    const auto& out = get(t, f);
    const auto* in = find_cpuid(supported, f);
    ASSERT_NE(in, nullptr);
    EXPECT_EQ(std::memcmp(&out, in, sizeof out), 0) << "leaf " << std::hex << f;
  }
}

TEST(CpuidTransform, AmdTopologyLeaves) {
  const auto t = vcpu_cpuid(amd_supported(), {.vcpu_index = 2, .vcpu_count = 3, .tsc_deadline = true});
  const auto& sizes = get(t, 0x80000008);
  EXPECT_EQ(sizes.ecx & 0xff, 2u) << "NC = count - 1";
  EXPECT_EQ((sizes.ecx >> 12) & 0xf, 2u) << "APIC ID bits for the core";
  EXPECT_EQ(sizes.eax, 0x3030u);
  const auto& ext = get(t, 0x8000001e);
  EXPECT_EQ(ext.eax, 2u);
  EXPECT_EQ(ext.ebx, 2u) << "core 2, one thread per core";
  EXPECT_EQ(ext.ecx, 0u);
  EXPECT_EQ((get(t, 0x8000001d, 0).eax >> 14) & 0xfff, 0u);
  EXPECT_EQ((get(t, 0x8000001d, 2).eax >> 14) & 0xfff, 0u);
  EXPECT_EQ((get(t, 0x8000001d, 3).eax >> 14) & 0xfff, 2u) << "L3 shared by all three";
  EXPECT_EQ(get(t, 0x8000001d, 4).eax, 0u);
  // The AMD host reports leaf 0xB too; it is rebuilt like on Intel.
  EXPECT_EQ(get(t, 0xb, 1).ebx, 3u);
  EXPECT_EQ(get(t, 0xb, 0).edx, 2u);
}

TEST(CpuidTransform, IntelKeepsAmdOnlyFieldsAlone) {
  const auto t = vcpu_cpuid(intel_supported(), {.vcpu_index = 1, .vcpu_count = 8, .tsc_deadline = true});
  EXPECT_EQ(get(t, 0x80000008).ecx, 0u);
}

TEST(CpuidTransform, CoreIdBits) {
  EXPECT_EQ(core_id_bits(0), 0u);
  EXPECT_EQ(core_id_bits(1), 0u);
  EXPECT_EQ(core_id_bits(2), 1u);
  EXPECT_EQ(core_id_bits(3), 2u);
  EXPECT_EQ(core_id_bits(4), 2u);
  EXPECT_EQ(core_id_bits(5), 3u);
  EXPECT_EQ(core_id_bits(288), 9u);
}

}  // namespace
}  // namespace vmm
