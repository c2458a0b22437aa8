#include "vmm/cpuid.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace vmm {

namespace {

constexpr std::uint32_t kLeafFeatures = 0x1;
constexpr std::uint32_t kLeafCacheParams = 0x4;
constexpr std::uint32_t kLeafTopology = 0xB;
constexpr std::uint32_t kLeafTopologyV2 = 0x1F;
constexpr std::uint32_t kLeafKvmSignature = 0x4000'0000;
constexpr std::uint32_t kLeafKvmFeatures = 0x4000'0001;
constexpr std::uint32_t kLeafAmdSizes = 0x8000'0008;
constexpr std::uint32_t kLeafAmdCacheTopology = 0x8000'001D;
constexpr std::uint32_t kLeafAmdExtendedApicId = 0x8000'001E;

constexpr std::uint32_t kEcxX2apic = 1u << 21;
constexpr std::uint32_t kEcxTscDeadline = 1u << 24;
// KVM paravirtual features (leaf 0x40000001 EAX) that work without an
// in-kernel LAPIC: kvmclock (both MSR sets and the stable bit), no I/O
// delay, steal time.
constexpr std::uint32_t kKvmFeaturesWithoutKernelLapic = (1u << 0) | (1u << 1) | (1u << 3) | (1u << 5) | (1u << 24);
constexpr std::uint32_t kEcxHypervisor = 1u << 31;
constexpr std::uint32_t kEdxHtt = 1u << 28;

constexpr std::uint32_t kTopologyLevelSmt = 1;
constexpr std::uint32_t kTopologyLevelCore = 2;

std::uint32_t field(std::uint32_t reg, unsigned lo, unsigned width) noexcept {
  return (reg >> lo) & ((1u << width) - 1);
}

std::uint32_t set_field(std::uint32_t reg, unsigned lo, unsigned width, std::uint32_t value) noexcept {
  const std::uint32_t mask = ((1u << width) - 1) << lo;
  return (reg & ~mask) | ((value << lo) & mask);
}

bool is_amd_like(std::span<const kvm_cpuid_entry2> entries) noexcept {
  const kvm_cpuid_entry2* leaf0 = find_cpuid(entries, 0);
  if (leaf0 == nullptr) return false;
  char vendor[12];
  std::memcpy(vendor, &leaf0->ebx, 4);
  std::memcpy(vendor + 4, &leaf0->edx, 4);
  std::memcpy(vendor + 8, &leaf0->ecx, 4);
  return std::memcmp(vendor, "AuthenticAMD", 12) == 0 || std::memcmp(vendor, "HygonGenuine", 12) == 0;
}

kvm_cpuid_entry2 topology_entry(std::uint32_t function, std::uint32_t subleaf, std::uint32_t shift,
                                std::uint32_t processors, std::uint32_t level_type, std::uint32_t x2apic_id) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = subleaf;
  e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  e.eax = shift;
  e.ebx = processors;
  e.ecx = (level_type << 8) | subleaf;
  e.edx = x2apic_id;
  return e;
}

}  // namespace

const kvm_cpuid_entry2* find_cpuid(std::span<const kvm_cpuid_entry2> entries, std::uint32_t function,
                                   std::uint32_t index) noexcept {
  for (const kvm_cpuid_entry2& e : entries) {
    if (e.function != function) continue;
    if ((e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0 && e.index != index) continue;
    return &e;
  }
  return nullptr;
}

unsigned core_id_bits(unsigned count) noexcept {
  return count <= 1 ? 0 : static_cast<unsigned>(std::bit_width(count - 1));
}

std::vector<kvm_cpuid_entry2> vcpu_cpuid(std::span<const kvm_cpuid_entry2> supported, const CpuidOptions& options) {
  const unsigned count = std::max(1u, options.vcpu_count);
  const std::uint32_t apic_id = options.vcpu_index;
  const unsigned bits = core_id_bits(count);
  const std::uint32_t addressable = 1u << bits;  // core IDs the APIC ID layout can hold
  const bool amd = is_amd_like(supported);

  std::vector<kvm_cpuid_entry2> out;
  out.reserve(supported.size() + 8);
  bool has_topology = false, has_topology_v2 = false, has_kvm_features = false;

  for (kvm_cpuid_entry2 e : supported) {
    switch (e.function) {
      case kLeafFeatures:
        e.ebx = set_field(e.ebx, 24, 8, apic_id & 0xFF);
        e.ebx = set_field(e.ebx, 16, 8, count > 1 ? std::min(addressable, 255u) : 1u);
        e.edx = count > 1 ? (e.edx | kEdxHtt) : (e.edx & ~kEdxHtt);
        e.ecx |= kEcxHypervisor;
        e.ecx = options.tsc_deadline ? (e.ecx | kEcxTscDeadline) : (e.ecx & ~kEcxTscDeadline);
        if (options.userspace_apic && !options.x2apic) e.ecx &= ~kEcxX2apic;
        break;
      case kLeafCacheParams:
        if (field(e.eax, 0, 5) != 0) {  // cache type 0 = no more caches
          const std::uint32_t level = field(e.eax, 5, 3);
          e.eax = set_field(e.eax, 26, 6, std::min(addressable, 64u) - 1);
          e.eax = set_field(e.eax, 14, 12, level >= 3 ? std::min(addressable, 4096u) - 1 : 0);
        }
        break;
      case kLeafTopology:
        has_topology = true;
        continue;  // rebuilt below
      case kLeafTopologyV2:
        has_topology_v2 = true;
        continue;
      case kLeafKvmSignature:
        continue;  // rebuilt below
      case kLeafKvmFeatures:
        has_kvm_features = true;
        e.edx = 0;
        if (options.userspace_apic) e.eax &= kKvmFeaturesWithoutKernelLapic;
        break;
      case kLeafAmdSizes:
        if (amd) {
          e.ecx = set_field(e.ecx, 0, 8, count - 1 > 0xFF ? 0xFF : count - 1);
          e.ecx = set_field(e.ecx, 12, 4, bits);
        }
        break;
      case kLeafAmdCacheTopology:
        if (field(e.eax, 0, 5) != 0) {
          const std::uint32_t level = field(e.eax, 5, 3);
          e.eax = set_field(e.eax, 14, 12, level >= 3 ? std::min(count, 4096u) - 1 : 0);
        }
        break;
      case kLeafAmdExtendedApicId:
        e.eax = apic_id;
        e.ebx = apic_id & 0xFF;  // core ID; bits 15:8 = threads per core - 1 = 0
        e.ecx = 0;               // node 0, one node per processor
        e.edx = 0;
        break;
      default:
        break;
    }
    out.push_back(e);
  }

  auto emit_topology = [&](std::uint32_t function) {
    out.push_back(topology_entry(function, 0, 0, 1, kTopologyLevelSmt, apic_id));
    out.push_back(topology_entry(function, 1, bits, count, kTopologyLevelCore, apic_id));
    out.push_back(topology_entry(function, 2, 0, 0, 0, apic_id));
  };
  if (has_topology) emit_topology(kLeafTopology);
  if (has_topology_v2) emit_topology(kLeafTopologyV2);

  kvm_cpuid_entry2 signature{};
  signature.function = kLeafKvmSignature;
  signature.eax = kLeafKvmFeatures;
  std::memcpy(&signature.ebx, "KVMK", 4);
  std::memcpy(&signature.ecx, "VMKV", 4);
  std::memcpy(&signature.edx, "M\0\0\0", 4);
  out.push_back(signature);
  if (!has_kvm_features) {
    kvm_cpuid_entry2 features{};
    features.function = kLeafKvmFeatures;
    out.push_back(features);
  }
  return out;
}

}  // namespace vmm
