// The KVM wrappers against the real /dev/kvm: capabilities, set-up errors,
// CPUID as KVM stores it, snapshots.
#include <gtest/gtest.h>

#include <string>

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
  const auto msrs = reset_msr_indices(system);
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

}  // namespace
}  // namespace vmm::testing
