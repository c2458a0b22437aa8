// The KVM wrappers against the real /dev/kvm: capabilities, set-up errors,
// CPUID as KVM stores it, snapshots.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "devices/error.h"
#include "kvm_fixture.h"
#include "vmm/cpuid.h"
#include "vmm/kvm.h"

namespace vmm::testing {
namespace {

TEST(KvmSystem, OpensAndReportsWhatTheVmmNeeds) {
  SKIP_WITHOUT_KVM();
  KvmSystem& system = kvm_system();
  EXPECT_GE(system.vcpu_mmap_size(), sizeof(kvm_run));
  EXPECT_GE(system.max_vcpus(), system.recommended_vcpus());
  EXPECT_GE(system.max_vcpus(), 1u);
  EXPECT_GT(system.check_extension(KVM_CAP_SPLIT_IRQCHIP), 0);
  EXPECT_GT(system.supported_cpuid().size(), 10u);
  EXPECT_FALSE(system.msr_index_list().empty());
  std::printf("[ info ] KVM: max vCPUs %u, recommended %u, vcpu mmap %zu bytes, TSC-deadline %s, %zu CPUID "
              "entries\n",
              system.max_vcpus(), system.recommended_vcpus(), system.vcpu_mmap_size(),
              system.has_tsc_deadline_timer() ? "yes" : "no", system.supported_cpuid().size());
}

TEST(KvmSystem, TooManyVcpusNamesTheLimit) {
  SKIP_WITHOUT_KVM();
  KvmSystem& system = kvm_system();
  EXPECT_NO_THROW(system.check_vcpu_count(1));
  EXPECT_NO_THROW(system.check_vcpu_count(system.max_vcpus()));
  const unsigned too_many = system.max_vcpus() + 12;
  try {
    system.check_vcpu_count(too_many);
    FAIL() << "no exception";
  } catch (const Error& e) {
    const std::string expected = "--cpus " + std::to_string(too_many) + " exceeds the " +
                                 std::to_string(system.max_vcpus()) + " this host's KVM allows";
    EXPECT_EQ(std::string(e.what()), expected);
  }
  EXPECT_THROW(system.check_vcpu_count(0), Error);
  KvmVm vm(system);
  EXPECT_THROW(vm.create_vcpu(system.max_vcpus()), Error);
}

TEST(KvmVm, SplitIrqchipMustPrecedeVcpus) {
  SKIP_WITHOUT_KVM();
  KvmVm vm(kvm_system());
  KvmVcpu vcpu = vm.create_vcpu(0);
  EXPECT_FALSE(vcpu.has_lapic());
  try {
    vm.enable_split_irqchip(24);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("before the first vCPU"), std::string::npos) << e.what();
  }
}

TEST(KvmVm, OverlappingMemoryIsRefusedWithAMessage) {
  SKIP_WITHOUT_KVM();
  KvmVm vm(kvm_system());
  auto memory = devices::GuestMemory::allocate(1 << 20);
  auto other = devices::GuestMemory::allocate(1 << 20);
  vm.set_memory(memory);
  try {
    vm.set_memory(other);  // same guest addresses, next slot
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KVM refused guest memory slot 1"), std::string::npos) << e.what();
  }
}

TEST(KvmVm, MemoryAboveTheHoleTakesASecondSlot) {
  SKIP_WITHOUT_KVM();
  KvmVm vm(kvm_system());
  // 3 GiB + 4 MiB: two regions, lazily committed, so this costs nothing.
  auto memory = devices::GuestMemory::allocate(devices::GuestMemory::kMmioHoleStart + (4 << 20));
  ASSERT_EQ(memory.regions().size(), 2u);
  EXPECT_NO_THROW(vm.set_memory(memory));
}

TEST(KvmVcpu, CpuidIsStoredPerVcpu) {
  SKIP_WITHOUT_KVM();
  KvmSystem& system = kvm_system();
  KvmVm vm(system);
  vm.enable_split_irqchip(24);
  for (unsigned i = 0; i < 2; ++i) {
    KvmVcpu vcpu = vm.create_vcpu(i);
    const auto table =
        vcpu_cpuid(system.supported_cpuid(), {.vcpu_index = i, .vcpu_count = 2, .tsc_deadline = true});
    vcpu.set_cpuid(table);
    const auto stored = vcpu.cpuid();
    const kvm_cpuid_entry2* leaf1 = find_cpuid(stored, 1);
    ASSERT_NE(leaf1, nullptr);
    EXPECT_EQ(leaf1->ebx >> 24, i);
    EXPECT_NE(leaf1->ecx & (1u << 31), 0u);
    const kvm_cpuid_entry2* sig = find_cpuid(stored, 0x40000000);
    ASSERT_NE(sig, nullptr);
    EXPECT_EQ(sig->ebx, 0x4b4d564bu);  // "KVMK"
    if (find_cpuid(system.supported_cpuid(), 0xb, 0) != nullptr) {
      const kvm_cpuid_entry2* core = find_cpuid(stored, 0xb, 1);
      ASSERT_NE(core, nullptr);
      EXPECT_EQ(core->ebx, 2u);
      EXPECT_EQ(core->edx, i);
    }
  }
}

TEST(KvmVcpu, ApplicationProcessorsStartUninitialized) {
  SKIP_WITHOUT_KVM();
  KvmVm vm(kvm_system());
  vm.enable_split_irqchip(24);
  KvmVcpu bsp = vm.create_vcpu(0);
  KvmVcpu ap = vm.create_vcpu(1);
  EXPECT_EQ(bsp.mp_state().mp_state, static_cast<std::uint32_t>(KVM_MP_STATE_RUNNABLE));
  EXPECT_EQ(ap.mp_state().mp_state, static_cast<std::uint32_t>(KVM_MP_STATE_UNINITIALIZED));
}

// KVM's APIC-ID map must know every vCPU as soon as it exists, or INIT and
// SIPI sent to a fresh AP vanish (KVM_SIGNAL_MSI answers 0: nobody took it).
TEST(KvmVcpu, AFreshApplicationProcessorAcceptsInit) {
  SKIP_WITHOUT_KVM();
  KvmVm vm(kvm_system());
  vm.enable_split_irqchip(24);
  KvmVcpu bsp = vm.create_vcpu(0);
  KvmVcpu ap = vm.create_vcpu(1);
  constexpr std::uint32_t kInitAssert = 0x4500;
  EXPECT_EQ(vm.signal_msi({0xfee00000 | (1u << 12), kInitAssert}), 1);
  EXPECT_EQ(ap.mp_state().mp_state, static_cast<std::uint32_t>(KVM_MP_STATE_INIT_RECEIVED));
  EXPECT_EQ(bsp.mp_state().mp_state, static_cast<std::uint32_t>(KVM_MP_STATE_RUNNABLE));
}

TEST(KvmVcpu, BootLapicLooksLikeFirmwareLeftIt) {
  SKIP_WITHOUT_KVM();
  KvmVm vm(kvm_system());
  vm.enable_split_irqchip(24);
  KvmVcpu vcpu = vm.create_vcpu(0);
  vcpu.setup_boot_lapic();
  const kvm_lapic_state lapic = vcpu.lapic();
  EXPECT_EQ(lapic_reg(lapic, 0xf0), 0x1ffu) << "software-enabled, spurious vector 0xff";
  EXPECT_EQ(lapic_reg(lapic, 0x350), 0x700u) << "LINT0 ExtINT, unmasked";
  EXPECT_EQ(lapic_reg(lapic, 0x360), 0x400u) << "LINT1 NMI, unmasked";
  EXPECT_EQ(lapic_reg(lapic, 0x20) >> 24, 0u) << "APIC ID 0";
}

TEST(KvmVcpu, SnapshotRestoresTheResetState) {
  SKIP_WITHOUT_KVM();
  KvmSystem& system = kvm_system();
  KvmVm vm(system);
  vm.enable_split_irqchip(24);
  KvmVcpu vcpu = vm.create_vcpu(0);
  const auto msrs = reset_msr_indices(system, vcpu);
  const VcpuSnapshot reset = vcpu.snapshot(msrs);

  kvm_regs r = vcpu.regs();
  r.rax = 0x1234;
  r.rip = 0x5678;
  vcpu.set_regs(r);
  kvm_sregs s = vcpu.sregs();
  s.cr0 |= 1;  // protected mode
  vcpu.set_sregs(s);
  vcpu.setup_boot_lapic();

  vcpu.restore(reset);
  EXPECT_EQ(vcpu.regs().rip, reset.regs.rip);
  EXPECT_EQ(vcpu.regs().rax, reset.regs.rax);
  EXPECT_EQ(vcpu.sregs().cr0, reset.sregs.cr0);
  EXPECT_EQ(lapic_reg(vcpu.lapic(), 0xf0), lapic_reg(reset.lapic, 0xf0));
  EXPECT_EQ(vcpu.mp_state().mp_state, reset.mp_state.mp_state);
  std::printf("[ info ] reset snapshot covers %zu MSRs\n", msrs.size());
}

std::uint64_t read_msr(const KvmVcpu& vcpu, std::uint32_t index) {
  return vcpu.msrs(std::span(&index, 1)).at(0).data;
}

// A guest's breakpoints, vector registers and MSRs must not outlive a
// reboot: the next boot (or the next kernel) starts from power-on state.
TEST(KvmVcpu, SnapshotRestoresDebugRegistersExtendedStateAndMsrs) {
  SKIP_WITHOUT_KVM();
  KvmSystem& system = kvm_system();
  KvmVm vm(system);
  vm.enable_split_irqchip(24);
  KvmVcpu vcpu = vm.create_vcpu(0);
  vcpu.set_cpuid(vcpu_cpuid(system.supported_cpuid(), {.vcpu_index = 0, .vcpu_count = 1, .tsc_deadline = true}));
  const auto msrs = reset_msr_indices(system, vcpu);
  const VcpuSnapshot power_on = vcpu.snapshot(msrs);

  // A hardware breakpoint armed on an address.
  kvm_debugregs d = vcpu.debugregs();
  d.db[0] = 0xffffffff81000000ull;
  d.dr7 = 0x403;  // L0 and G0 enabled, execute breakpoint
  vcpu.set_debugregs(d);
  ASSERT_EQ(vcpu.debugregs().db[0], d.db[0]);

  // Extended state: the upper half of YMM0 (XSAVE component 2, at offset
  // 576 of the standard format), where the CPU has AVX.
  const kvm_cpuid_entry2* leaf_d = find_cpuid(vcpu.cpuid(), 0xd, 0);
  const bool has_avx = leaf_d != nullptr && (leaf_d->eax & 4) != 0 && !power_on.xsave.empty();
  constexpr std::size_t kYmm0High = 576;
  constexpr std::size_t kXstateBv = 512;
  if (has_avx) {
    std::vector<std::uint8_t> x = vcpu.xsave();
    std::fill_n(x.begin() + kYmm0High, 16, 0xA5);
    x[kXstateBv] |= 4;
    vcpu.set_xsave(x);
    ASSERT_EQ(vcpu.xsave()[kYmm0High], 0xA5);
  }

  // An MSR beyond the syscall set: IA32_MISC_ENABLE's "limit CPUID maxval"
  // bit, which would hide most CPUID leaves from the next boot.
  constexpr std::uint32_t kMiscEnable = 0x1A0;
  constexpr std::uint64_t kLimitCpuidMaxval = 1ull << 22;
  const std::vector<std::uint32_t> listed = system.msr_index_list();
  const bool has_misc_enable = std::find(listed.begin(), listed.end(), kMiscEnable) != listed.end();
  const std::uint64_t misc_at_power_on = has_misc_enable ? read_msr(vcpu, kMiscEnable) : 0;
  if (has_misc_enable) {
    const kvm_msr_entry e{.index = kMiscEnable, .reserved = 0, .data = misc_at_power_on ^ kLimitCpuidMaxval};
    vcpu.set_msrs(std::span(&e, 1));
    ASSERT_EQ(read_msr(vcpu, kMiscEnable), misc_at_power_on ^ kLimitCpuidMaxval);
  }

  vcpu.restore(power_on);
  EXPECT_EQ(vcpu.debugregs().db[0], power_on.debugregs.db[0]);
  EXPECT_EQ(vcpu.debugregs().dr7, power_on.debugregs.dr7);
  if (has_avx) {
    const std::vector<std::uint8_t> x = vcpu.xsave();
    EXPECT_EQ(std::vector<std::uint8_t>(x.begin() + kYmm0High, x.begin() + kYmm0High + 16),
              std::vector<std::uint8_t>(power_on.xsave.begin() + kYmm0High, power_on.xsave.begin() + kYmm0High + 16));
  }
  if (has_misc_enable) {
    EXPECT_EQ(read_msr(vcpu, kMiscEnable), misc_at_power_on);
  }
  std::printf("[ info ] reset covers %zu MSRs; AVX state %s; IA32_MISC_ENABLE %s\n", msrs.size(),
              has_avx ? "checked" : "absent", has_misc_enable ? "checked" : "absent");
}

}  // namespace
}  // namespace vmm::testing
