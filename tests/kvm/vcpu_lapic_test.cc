// The vCPU side of a user-space local APIC: what it hands KVM before an
// entry, checked against a real vCPU's run page (no guest runs).
#include "vmm/vcpu_lapic.h"

#include <gtest/gtest.h>
#include <linux/kvm.h>

#include "kvm_fixture.h"
#include "tests/devices/apic_bench.h"
#include "vmm/kvm.h"

namespace vmm::testing {
namespace {

constexpr std::uint8_t kVector = 0x30;

struct UserSpaceApicVcpu {
  ApicBench bench{1};
  Lapic& apic = bench.apic(0);
  KvmVm vm{kvm_system()};  // no in-kernel irqchip: KVM_INTERRUPT queues the vector itself
  KvmVcpu vcpu = vm.create_vcpu(0);
  VcpuSnapshot power_on{};  // only an INIT would restore it
  VcpuLapic vcpu_lapic{apic, bench.system, power_on, nullptr};
  kvm_run* run = vcpu.run_page();

  UserSpaceApicVcpu() { enable(apic); }

  // The exit KVM just reported, with interrupts open in the guest.
  void exited(std::uint32_t reason, bool msr_fault = false) {
    run->exit_reason = reason;
    run->ready_for_interrupt_injection = 1;
    run->if_flag = 1;
    run->request_interrupt_window = 0;
    if (reason == KVM_EXIT_X86_RDMSR || reason == KVM_EXIT_X86_WRMSR) run->msr.error = msr_fault ? 1 : 0;
  }
  bool in_service() { return reg_bit(apic, Lapic::kRegIsr, kVector); }
  bool requested() { return reg_bit(apic, Lapic::kRegIrr, kVector); }
};

// An MSR exit answered with #GP re-enters delivering the fault, and KVM
// drops an interrupt queued for that same entry: the APIC would hold it in
// service forever (Linux under --irqchip=userspace lost its console so,
// IRQ 0 taken in over AMD's DE_CFG probe). The interrupt must wait for the
// window after the fault.
TEST(VcpuLapic, NoInterruptIsQueuedForTheEntryThatDeliversAnMsrFault) {
  SKIP_WITHOUT_KVM();
  for (const std::uint32_t reason : {KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR}) {
    SCOPED_TRACE(reason == KVM_EXIT_X86_RDMSR ? "rdmsr" : "wrmsr");
    UserSpaceApicVcpu v;
    v.apic.receive(ApicDelivery::fixed, kVector, false);
    v.exited(reason, /*msr_fault=*/true);
    EXPECT_EQ(v.vcpu_lapic.before_run(v.vcpu), VcpuInterrupts::Next::run);
    EXPECT_FALSE(v.in_service()) << "taken into service on an entry that delivers a #GP";
    EXPECT_TRUE(v.requested());
    EXPECT_EQ(v.run->request_interrupt_window, 1) << "the window after the fault was not asked for";

    // The window opens once the guest can take it: now it goes in.
    v.exited(KVM_EXIT_IRQ_WINDOW_OPEN);
    v.vcpu_lapic.before_run(v.vcpu);
    EXPECT_TRUE(v.in_service());
    EXPECT_FALSE(v.requested());
  }
}

// The control: an MSR exit that does not fault injects at once.
TEST(VcpuLapic, AnMsrExitWithoutAFaultInjectsAtOnce) {
  SKIP_WITHOUT_KVM();
  UserSpaceApicVcpu v;
  v.apic.receive(ApicDelivery::fixed, kVector, false);
  v.exited(KVM_EXIT_X86_RDMSR, /*msr_fault=*/false);
  v.vcpu_lapic.before_run(v.vcpu);
  EXPECT_TRUE(v.in_service());
  EXPECT_EQ(v.run->request_interrupt_window, 0);
}

}  // namespace
}  // namespace vmm::testing
