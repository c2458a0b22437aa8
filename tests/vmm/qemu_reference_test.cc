// The same guest file under QEMU, the reference: whatever the guest expects of
// a PC (its timer rates, its reboots) must hold there too, or the guest — not
// our VMM — would be the thing under test. QEMU is installed by tools/setup.sh;
// where it is absent these checks say so loudly and skip.
#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>
#include <string>

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

// QEMU's own HPET can fire early when the guest re-arms a comparator while
// it fires (seen in the nested lab: "hpet early=1"), the race this project
// exists to close, so here an early HPET interrupt is QEMU's and only noted.
// For the LAPIC and the PIT the guest's own bound holds: fewer than one gap
// in ten under half a period. A short gap alone is delivery jitter in the
// lab (an interrupt held back behind the guest's other handler, the next
// one on time: QEMU's PIT showed min_gap_us=3829 with a 17.5 ms period, once
// in 17), so demanding none would test the lab's scheduler, not the guest.
TEST(QemuReference, RetimerOnPc) {
  VMM_REQUIRE_QEMU();
  const ProcessResult r = run_qemu("pc", "test=retimer seconds=2");
  ASSERT_TRUE(r.exit_status == kGuestOk || r.exit_status == kGuestFailed) << r.out << r.err;
  // "testguest: retimer PAIR+lapic: KIND irqs=N hz=... early=N"
  const auto field = [](const std::string& line, const std::string& key) {
    const std::size_t at = line.find(" " + key + "=");
    if (at == std::string::npos) return std::string();
    const std::size_t from = at + key.size() + 2;
    return line.substr(from, line.find(' ', from) - from);
  };
  int pairs = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const std::size_t pair_end = line.find("+lapic: ");
    if (line.find("testguest: retimer ") != 0 || pair_end == std::string::npos) continue;
    const std::string rest = line.substr(pair_end + 8);
    const std::string kind = rest.substr(0, rest.find(' '));
    const std::string irqs = field(line, "irqs"), early = field(line, "early");
    if (irqs.empty() || early.empty()) continue;  // the "out of bounds" lines
    pairs += kind == "lapic";
    EXPECT_GT(std::stoi(irqs), 0) << line << "\n" << r.out;
    if (kind == "hpet") {
      if (early != "0") std::printf("[ info ] QEMU's HPET fired early: %s\n", line.c_str());
    } else {
      // The guest's own bound (retimer.c): two short gaps, or 10% of them.
      EXPECT_TRUE(std::stoi(early) <= 2 || std::stoi(early) * 10 <= std::stoi(irqs)) << line << "\n" << r.out;
    }
  }
  EXPECT_EQ(pairs, 4) << "pit, hpet0, hpet1 and hpet2, each beside the LAPIC timer\n" << r.out;
  if (r.exit_status != kGuestOk) {
    // A failure may only be QEMU's early HPET.
    EXPECT_NE(r.out.find("hpet out of bounds"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("lapic out of bounds"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("pit out of bounds"), std::string::npos) << r.out;
  }
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
