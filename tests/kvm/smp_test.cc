// A second vCPU started by the guest with INIT-SIPI-SIPI through the
// in-kernel LAPIC, and the CPUID topology each vCPU sees.
#include <gtest/gtest.h>

#include "kvm_fixture.h"

namespace vmm::testing {
namespace {

TEST(Smp, ApplicationProcessorStartsOnInitSipi) {
  SKIP_WITHOUT_KVM();
  TestMachine m({.vcpus = 2});
  m.load(GUEST_IMAGE(smp));
  m.enter_flat32(0);
  ASSERT_EQ(m.vcpu(1).vcpu().mp_state().mp_state, static_cast<std::uint32_t>(KVM_MP_STATE_UNINITIALIZED));

  // The AP's thread enters KVM_RUN first and must wait there for the SIPI.
  m.vcpu(1).start();
  ASSERT_FALSE(m.reports.wait_count(PORT_AP_REPORT8, 1, std::chrono::milliseconds(50)))
      << "the AP ran before anyone sent it a SIPI";
  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_DONE, 1)) << m.describe();

  const auto bsp_id = m.reports.writes_to(PORT_REPORT8);
  const auto ap_id = m.reports.writes_to(PORT_AP_REPORT8);
  const auto ap_x2apic = m.reports.writes_to(PORT_AP_REPORT32);
  ASSERT_EQ(bsp_id.size(), 1u);
  ASSERT_EQ(ap_id.size(), 1u);
  ASSERT_EQ(ap_x2apic.size(), 1u);
  EXPECT_EQ(bsp_id[0].value, 0u) << "CPUID.1:EBX[31:24] on the BSP";
  EXPECT_EQ(ap_id[0].value, 1u) << "CPUID.1:EBX[31:24] on the AP";
  EXPECT_EQ(ap_x2apic[0].value, 1u) << "CPUID.0xB:EDX on the AP";

  // Both halted with interrupts off: stopping them must still work.
  m.vcpu(0).stop();
  m.vcpu(1).stop();
  EXPECT_EQ(m.vcpu(1).last_exit(), VcpuExit::stopped);
  EXPECT_EQ(m.vcpu(0).stats().rekicks + m.vcpu(1).stats().rekicks, 0u);
  EXPECT_TRUE(m.events.events().empty());
}

TEST(Smp, AnApWaitingForSipiCanBePausedAndStopped) {
  SKIP_WITHOUT_KVM();
  TestMachine m({.vcpus = 2});
  m.vcpu(1).start();
  EXPECT_TRUE(m.vcpu(1).pause());
  EXPECT_EQ(m.vcpu(1).state(), VcpuState::paused);
  m.vcpu(1).resume();
  m.vcpu(1).stop();
  EXPECT_EQ(m.vcpu(1).state(), VcpuState::exited);
  EXPECT_EQ(m.vcpu(1).stats().rekicks, 0u);
}

}  // namespace
}  // namespace vmm::testing
