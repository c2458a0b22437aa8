// The same guest file under QEMU, the reference: whatever the guest expects of
// a PC (its timer rates, its reboots) must hold there too, or the guest — not
// our VMM — would be the thing under test. QEMU is installed by tools/setup.sh;
// where it is absent these checks say so loudly and skip.
#include <gtest/gtest.h>

#include "tests/vmm/vmm_fixture.h"

namespace vmm::testing {
namespace {

bool have_qemu() {
  const ProcessResult r = run_process({"/bin/sh", "-c", "command -v qemu-system-x86_64"});
  return r.exit_status == 0;
}

#define VMM_REQUIRE_QEMU()                                                                                 \
  do {                                                                                                     \
    VMM_REQUIRE_KVM();                                                                                     \
    VMM_SKIP_UNLESS(have_qemu(), "qemu-system-x86_64 is not installed (tools/setup.sh installs it)");     \
  } while (0)

// The QEMU command lines used for every comparison in this project.
ProcessResult run_qemu(const std::string& machine, const std::string& cmdline, int cpus = 1, bool reboot = false,
                       std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  std::vector<std::string> argv = {"/usr/bin/env", "qemu-system-x86_64"};
  if (machine == "microvm") {
    argv.insert(argv.end(), {"-M", "microvm,accel=kvm,kernel-irqchip=split,pit=off,pic=off,rtc=off,isa-serial=on",
                             "-nodefaults", "-no-user-config"});
  } else {
    argv.insert(argv.end(), {"-M", "pc,accel=kvm,kernel-irqchip=split"});
  }
  argv.insert(argv.end(), {"-cpu", "qemu64,+tsc-deadline", "-smp", std::to_string(cpus), "-m", "64", "-display",
                           "none", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel",
                           test_guest(), "-append", cmdline});
  if (!reboot) argv.push_back("-no-reboot");
  return run_process(argv, timeout);
}

TEST(QemuReference, BootAndSmpOnMicrovm) {
  VMM_REQUIRE_QEMU();
  const ProcessResult boot = run_qemu("microvm", "test=boot");
  EXPECT_EQ(boot.exit_status, kGuestOk) << boot.out << boot.err;
  EXPECT_TRUE(contains(boot.out, "testguest: boot ok"));
  const ProcessResult smp = run_qemu("microvm", "test=smp", 4);
  EXPECT_EQ(smp.exit_status, kGuestOk) << smp.out << smp.err;
  EXPECT_TRUE(contains(smp.out, "testguest: smp ok cpus=4"));
}

TEST(QemuReference, EveryTimerOnPc) {
  VMM_REQUIRE_QEMU();
  const ProcessResult r = run_qemu("pc", "test=timers");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: timers ok missing=0")) << r.out;
}

TEST(QemuReference, The8259PairOnPc) {
  VMM_REQUIRE_QEMU();
  const ProcessResult r = run_qemu("pc", "test=pic");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
}

TEST(QemuReference, RetimerOnPc) {
  VMM_REQUIRE_QEMU();
  const ProcessResult r = run_qemu("pc", "test=retimer seconds=2");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
}

TEST(QemuReference, RebootThroughTheI8042OnPc) {
  VMM_REQUIRE_QEMU();
  const ProcessResult r = run_qemu("pc", "test=reboot count=3", 1, /*reboot=*/true);
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: reboot ok boots=3"));
}

TEST(QemuReference, PowerOffOnPc) {
  VMM_REQUIRE_QEMU();
  const ProcessResult r = run_qemu("pc", "test=poweroff");
  EXPECT_EQ(r.exit_status, 0) << "QEMU exits 0 when the guest enters S5\n" << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "S5"));
}

TEST(QemuReference, SameDebugExitStatusUnderBoth) {
  VMM_REQUIRE_QEMU();
  for (const char* cmdline : {"test=boot", "test=fault kind=ud", "test=nosuchtest"}) {
    const ProcessResult qemu = run_qemu("microvm", cmdline);
    const ProcessResult ours = run_guest(cmdline);
    EXPECT_EQ(ours.exit_status, qemu.exit_status) << cmdline;
  }
}

}  // namespace
}  // namespace vmm::testing
