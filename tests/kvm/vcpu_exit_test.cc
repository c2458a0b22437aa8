// vCPU exits handled by VcpuThread, with tiny guests on the real /dev/kvm.
#include <gtest/gtest.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include <string>
#include <thread>
#include <tuple>

#include "kvm_fixture.h"

namespace vmm::testing {
namespace {

using namespace std::chrono_literals;

std::vector<std::uint64_t> values(const std::vector<Access>& accesses) {
  std::vector<std::uint64_t> out;
  for (const Access& a : accesses) out.push_back(a.value);
  return out;
}

// (address, width, value) of the first `count` accesses, to compare a whole
// sequence at once (and see all of it when it differs).
using AccessShape = std::tuple<std::uint64_t, std::size_t, std::uint64_t>;
std::vector<AccessShape> first_shapes(const std::vector<Access>& accesses, std::size_t count) {
  std::vector<AccessShape> out;
  for (std::size_t i = 0; i < count && i < accesses.size(); ++i) {
    out.emplace_back(accesses[i].address, accesses[i].size, accesses[i].value);
  }
  return out;
}

TEST(VcpuExits, PortIoOfEachWidthAndStringIo) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  m.load(GUEST_IMAGE(pio));
  m.enter_real_mode(0);
  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_DONE, 1)) << "guest did not finish; state " << to_string(m.vcpu(0).state());

  // Writes of each width reach the device with their width.
  const auto w = m.pio_device.writes();
  ASSERT_GE(w.size(), 3u);
  EXPECT_EQ(first_shapes(w, 3), (std::vector<AccessShape>{{PORT_PIO_BASE + 0u, 1u, 0x11u},
                                                          {PORT_PIO_BASE + 2u, 2u, 0x2233u},
                                                          {PORT_PIO_BASE + 4u, 4u, 0x44556677u}}));

  // Reads of each width return what the device put in each byte.
  EXPECT_EQ(values(m.reports.writes_to(PORT_REPORT8)).at(0), 0x10u);
  EXPECT_EQ(values(m.reports.writes_to(PORT_REPORT16)).at(0), 0x1312u);
  EXPECT_EQ(values(m.reports.writes_to(PORT_REPORT32)).at(0), 0x17161514u);

  // rep outsb: five byte writes, in order.
  std::string hello;
  for (const Access& a : m.pio_device.writes_to(PORT_PIO_BASE + 8)) {
    EXPECT_EQ(a.size, 1u);
    hello += static_cast<char>(a.value);
  }
  EXPECT_EQ(hello, "hello");
  // rep insb from a counting source, echoed with rep outsw.
  EXPECT_EQ(values(m.pio_device.writes_to(PORT_PIO_BASE + 10)),
            (std::vector<std::uint64_t>{0xa1a0, 0xa3a2, 0xa5a4}));

  // The unclaimed port read as all ones, at both widths; the VMM went on.
  EXPECT_EQ(values(m.reports.writes_to(PORT_REPORT8)).at(1), 0xffu);
  EXPECT_EQ(values(m.reports.writes_to(PORT_REPORT32)).at(1), 0xffffffffu);
  const VcpuStats stats = m.vcpu(0).stats();
  EXPECT_EQ(stats.unhandled_io, 3u);
  std::printf("[ info ] %llu I/O exits for 29 port accesses\n", static_cast<unsigned long long>(stats.io_exits));
  EXPECT_LT(stats.io_exits, 29u) << "KVM batches rep ins/outs into exits with count > 1; that path must have run";

  EXPECT_EQ(m.vcpu(0).state(), VcpuState::running);
  m.vcpu(0).stop();
  EXPECT_EQ(m.vcpu(0).state(), VcpuState::exited);
  EXPECT_EQ(m.vcpu(0).last_exit(), VcpuExit::stopped);
  EXPECT_TRUE(m.events.events().empty());
}

TEST(VcpuExits, MmioToNothingReadsAllOnesAndToADeviceWorks) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  m.load(GUEST_IMAGE(mmio));
  m.enter_flat32(0);
  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_DONE, 1)) << "guest did not finish; state " << to_string(m.vcpu(0).state());

  const auto r32 = values(m.reports.writes_to(PORT_REPORT32));
  const auto r16 = values(m.reports.writes_to(PORT_REPORT16));
  const auto r8 = values(m.reports.writes_to(PORT_REPORT8));
  ASSERT_EQ(r32.size(), 2u);
  ASSERT_EQ(r16.size(), 1u);
  ASSERT_EQ(r8.size(), 2u);
  EXPECT_EQ(r32[0], 0xffffffffu) << "unmapped dword read";
  EXPECT_EQ(r8[0], 0xffu) << "unmapped byte read after a dropped write";

  const auto w = m.mmio_device.writes();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(first_shapes(w, 3), (std::vector<AccessShape>{{MMIO_DEVICE + 0u, 1u, 0xabu},
                                                          {MMIO_DEVICE + 2u, 2u, 0xcdefu},
                                                          {MMIO_DEVICE + 4u, 4u, 0x01020304u}}));
  EXPECT_EQ(r8[1], 0x81u);
  EXPECT_EQ(r16[0], 0x8382u);
  EXPECT_EQ(r32[1], 0x87868584u);

  const VcpuStats stats = m.vcpu(0).stats();
  EXPECT_EQ(stats.unhandled_io, 3u);
  EXPECT_EQ(stats.mmio_exits, 9u);
  EXPECT_EQ(m.vcpu(0).state(), VcpuState::running) << "the VMM keeps running";
  EXPECT_TRUE(m.events.events().empty());
}

TEST(VcpuExits, HaltWithInKernelLapicStaysInTheKernel) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  m.load(GUEST_IMAGE(hlt));
  m.enter_flat32(0);
  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_MARK, 1));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(m.vcpu(0).stats().hlt_exits, 0u) << "the in-kernel LAPIC handles HLT";
  EXPECT_EQ(m.vcpu(0).state(), VcpuState::running);
  EXPECT_EQ(m.reports.count(PORT_MARK), 1u);
}

TEST(VcpuExits, HaltWithoutIrqchipExitsAndParks) {
  SKIP_WITHOUT_KVM();
  TestMachine m({.split_irqchip = false});
  m.load(GUEST_IMAGE(hlt));
  m.enter_flat32(0);
  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_MARK, 1));
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (m.vcpu(0).stats().hlt_exits == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(m.vcpu(0).stats().hlt_exits, 1u);
  const std::uint64_t runs = m.vcpu(0).stats().runs;
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(m.vcpu(0).stats().runs, runs) << "parked, not spinning on KVM_RUN";

  // A halted vCPU can be paused; resuming it continues after the HLT.
  EXPECT_TRUE(m.vcpu(0).pause());
  EXPECT_EQ(m.vcpu(0).state(), VcpuState::paused);
  m.vcpu(0).resume();
  ASSERT_TRUE(m.reports.wait_count(PORT_MARK, 2));
  m.vcpu(0).stop();
  EXPECT_EQ(m.vcpu(0).last_exit(), VcpuExit::stopped);
  EXPECT_EQ(m.vcpu(0).stats().rekicks, 0u);
}

TEST(VcpuExits, TripleFaultIsAResetRequestAndTheVcpuCanRunAgain) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  const VcpuSnapshot power_on = m.vcpu(0).vcpu().snapshot(reset_msr_indices(kvm_system(), m.vcpu(0).vcpu()));
  m.load(GUEST_IMAGE(triple));
  m.enter_flat32(0);
  m.vcpu(0).start();
  ASSERT_TRUE(m.events.wait_count(1)) << "no event; state " << to_string(m.vcpu(0).state());
  auto events = m.events.events();
  EXPECT_EQ(events[0].kind, "reset");
  EXPECT_EQ(events[0].vcpu, 0u);
  EXPECT_NE(events[0].reason.find("triple fault"), std::string::npos) << events[0].reason;
  m.vcpu(0).stop();  // joins the thread that already left
  EXPECT_EQ(m.vcpu(0).state(), VcpuState::exited);
  EXPECT_EQ(m.vcpu(0).last_exit(), VcpuExit::reset);

  // What the VM lifecycle does on reset: power-on state, entry state, start.
  m.vcpu(0).vcpu().restore(power_on);
  EXPECT_EQ(m.vcpu(0).vcpu().sregs().cr0, power_on.sregs.cr0);
  m.enter_flat32(0);
  m.vcpu(0).start();
  ASSERT_TRUE(m.events.wait_count(2));
  EXPECT_EQ(m.events.events()[1].kind, "reset");
  EXPECT_EQ(m.reports.count(PORT_MARK), 2u);
}

// An MSR that KVM hands to user space and nobody here claims (the split
// irqchip has no user-space MSRs) raises #GP in the guest, as on hardware:
// this guest has no IDT, so it ends in a triple fault, a reset.
TEST(VcpuExits, AnUnclaimedMsrRaisesGeneralProtectionInTheGuest) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  if (m.vm.check_extension(KVM_CAP_X86_USER_SPACE_MSR) <= 0) {
    GTEST_FAIL() << "this KVM cannot forward MSR accesses to user space";
  }
  const std::uint64_t reasons = KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN;
  m.vm.enable_cap(KVM_CAP_X86_USER_SPACE_MSR, std::span(&reasons, 1), "KVM_CAP_X86_USER_SPACE_MSR");
  m.load(GUEST_IMAGE(msr));
  m.enter_flat32(0);
  m.vcpu(0).start();
  ASSERT_TRUE(m.events.wait_count(1));
  const auto events = m.events.events();
  EXPECT_EQ(events[0].kind, "reset");
  EXPECT_NE(events[0].reason.find("triple fault"), std::string::npos) << events[0].reason;
  m.vcpu(0).stop();
  EXPECT_EQ(m.reports.count(PORT_DONE), 0u) << "the RDMSR must not have completed";
}

// An exit the VMM never asks for (single-stepping, turned on behind its
// back) ends the vCPU as fatal, named, instead of being resumed blindly.
TEST(VcpuExits, UnexpectedExitIsFatalAndReported) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  m.load(GUEST_IMAGE(hlt));
  m.enter_flat32(0);
  kvm_guest_debug debug{};
  debug.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
  ASSERT_EQ(::ioctl(m.vcpu(0).vcpu().fd(), KVM_SET_GUEST_DEBUG, &debug), 0) << std::strerror(errno);
  m.vcpu(0).start();
  ASSERT_TRUE(m.events.wait_count(1));
  const auto events = m.events.events();
  EXPECT_EQ(events[0].kind, "fatal");
  EXPECT_NE(events[0].reason.find("unexpected KVM exit"), std::string::npos) << events[0].reason;
  m.vcpu(0).stop();
  EXPECT_EQ(m.vcpu(0).last_exit(), VcpuExit::fatal);
}

TEST(VcpuExits, LongModeEntryStateFromTheLoader) {
  SKIP_WITHOUT_KVM();
  TestMachine m;
  m.load(GUEST_IMAGE(long));
  m.enter_long64(0, 0x7000);
  m.vcpu(0).start();
  ASSERT_TRUE(m.reports.wait_count(PORT_DONE, 1)) << "state " << to_string(m.vcpu(0).state());
  EXPECT_EQ(values(m.reports.writes_to(PORT_REPORT32)),
            (std::vector<std::uint64_t>{0x55667788, 0x11223344, 0x7000}));
  m.vcpu(0).stop();
  EXPECT_NE(m.vcpu(0).vcpu().sregs().efer & (1u << 10), 0u) << "EFER.LMA";
}

}  // namespace
}  // namespace vmm::testing
