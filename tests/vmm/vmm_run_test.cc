// The real `vmm` binary on this host's /dev/kvm, running the project's test
// guest: boots, SMP, every timer, re-arm storms, reboots through every reset
// path with all timers running, power-off, a register-fuzzing guest, and the
// host-side ways a run ends.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "tests/common/temp_dir.h"
#include "tests/vmm/vmm_fixture.h"

namespace vmm::testing {
namespace {

TEST(VmmRun, BootsTheTestGuestWithOneVcpu) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=boot");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: boot ok")) << r.out;
  EXPECT_TRUE(r.err.empty()) << "a clean boot logs nothing at the default level:\n" << r.err;
}

class VmmSmp : public ::testing::TestWithParam<int> {};

TEST_P(VmmSmp, StartsEveryVcpuThroughInitSipi) {
  VMM_REQUIRE_KVM();
  const int cpus = GetParam();
  const ProcessResult r = run_guest("test=smp", {"--cpus", std::to_string(cpus)});
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: smp ok cpus=" + std::to_string(cpus))) << r.out;
}
INSTANTIATE_TEST_SUITE_P(Vcpus, VmmSmp, ::testing::Values(1, 2, 4));

// Every timer at the fastest rate a guest can program (PIT count 2, RTC
// 8192 Hz, HPET period of one tick, LAPIC count 1), all at once: our devices
// deliver no faster than their 100 us floor (10,000/s), the VMM answers its
// control socket throughout, and the guest ends normally.
TEST(VmmRun, EveryTimerAtItsFastestStaysAtItsFloorAndTheVmmAnswers) {
  VMM_REQUIRE_KVM();
  TempDir dir("vmm-fastest");
  const std::string socket = (dir.path() / "control.sock").string();
  int answered = 0;
  const ProcessResult r = run_process(
      {vmm_binary(), "run", "--kernel", test_guest(), "--memory", "64M", "--debug-exit", "--control", socket,
       "--cmdline", "test=fastest seconds=4"},
      std::chrono::seconds(120), {}, [&](pid_t) {
        // While the storm runs: three status requests, each answered.
        for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
             answered < 3 && std::chrono::steady_clock::now() < deadline;) {
          const ProcessResult status =
              run_process({vmm_binary(), "ctl", socket, "status", "--timeout-ms", "5000"}, std::chrono::seconds(10));
          if (status.exit_status == 0 && contains(status.out, "\"state\":\"running\"")) {
            ++answered;
          } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));  // not up yet
          }
        }
      });
  EXPECT_EQ(answered, 3) << "the control socket did not answer while every timer ran at its fastest\n" << r.err;
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: fastest ok")) << r.out;
  // "testguest: fastest: per second: pit=N rtc=N hpet0=N hpet1=N hpet2=N lapic=N"
  const std::size_t at = r.out.find("per second: ");
  ASSERT_NE(at, std::string::npos) << r.out;
  std::istringstream fields(r.out.substr(at + 12, r.out.find('\n', at) - at - 12));
  for (std::string field; fields >> field;) {
    const std::string name = field.substr(0, field.find('='));
    const long rate = std::stol(field.substr(field.find('=') + 1));
    if (name == "lapic") continue;  // KVM's timer in split mode
    EXPECT_GT(rate, 0) << field;
    EXPECT_LE(rate, 11000) << field << ": faster than the 100 us floor";
  }
}

TEST(VmmRun, EveryTimerDeliversAtItsRate) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=timers");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  // One line per timer, in the guest's fixed format:
  // "timer NAME hz=... late_p50_us=... late_p99_us=... count=..."
  std::set<std::string> seen;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string word, name, hz, p50, p99, count;
    if (fields >> word >> name >> hz >> p50 >> p99 >> count && word == "timer" && hz.rfind("hz=", 0) == 0 &&
        p50.rfind("late_p50_us=", 0) == 0 && p99.rfind("late_p99_us=", 0) == 0 && count.rfind("count=", 0) == 0) {
      seen.insert(name);
    }
  }
  for (const char* name : {"pit", "rtc", "hpet0-periodic", "hpet0-oneshot", "hpet1-periodic", "hpet1-oneshot",
                           "hpet2-periodic", "hpet2-oneshot", "lapic-periodic", "lapic-oneshot",
                           "lapic-tscdeadline"}) {
    EXPECT_TRUE(seen.count(name)) << "no line for timer " << name << "\n" << r.out;
  }
}

// A guest on the 8259s alone (virtual-wire LINT0): every PIT tick must
// reach it as an ExtINT that vCPU 0 injects with KVM_INTERRUPT.
TEST(VmmRun, The8259PairDeliversThroughExtInt) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=pic");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: pic ok")) << r.out;
}

TEST(VmmRun, GuestReArmingPeriodicTimersWhileTheyFireKeepsThemRunning) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=retimer seconds=2");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: retimer ok")) << r.out;
}

// What to look at when the guest's boot count and the VMM's reset count part:
// each boot the guest began more than once (the console line it prints
// first), with the VMM's reset lines for the boots around it, which say why
// and how far into its boot each reset came.
std::string describe_cut_short_boots(const ProcessResult& r) {
  std::map<unsigned, unsigned> starts;  // guest boot number -> times begun
  std::istringstream out(r.out);
  for (std::string line; std::getline(out, line);) {
    unsigned boot = 0;
    if (std::sscanf(line.c_str(), "testguest: reboot: boot %u of", &boot) == 1) ++starts[boot];
  }
  std::vector<std::string> resets;  // resets[g]: the VMM's line for the reset that ended boot g
  std::istringstream err(r.err);
  for (std::string line; std::getline(err, line);) {
    if (contains(line, "vm: reset (")) resets.push_back(line);
  }
  std::string report;
  for (const auto& [boot, times] : starts) {
    if (times < 2) continue;
    report += "the guest began its boot " + std::to_string(boot) + " " + std::to_string(times) + " times\n";
  }
  // The resets unlike the others: another cause, or a boot cut short (under
  // half the median number of vCPU 0 entries).
  auto entries = [](const std::string& line) {
    const std::size_t at = line.find(" ms and ");
    return at == std::string::npos ? 0ul : std::strtoul(line.c_str() + at + 8, nullptr, 10);
  };
  std::vector<unsigned long> counts;
  for (const std::string& line : resets) counts.push_back(entries(line));
  std::sort(counts.begin(), counts.end());
  const unsigned long median = counts.empty() ? 0 : counts[counts.size() / 2];
  for (const std::string& line : resets) {
    if (!contains(line, "i8042 reset line") || entries(line) < median / 2) report += line + "\n";
  }
  if (report.empty()) report = "no boot was begun twice and every reset came from the i8042\n";
  return report;
}

TEST(VmmRun, HundredRebootsWithEveryTimerRunning) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=reboot count=100", {"--log-level", "info"});
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out.substr(r.out.size() > 2000 ? r.out.size() - 2000 : 0) << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: reboot ok boots=100"));
  EXPECT_TRUE(contains(r.err, "99 reboots")) << describe_cut_short_boots(r)
                                             << r.err.substr(r.err.size() > 500 ? r.err.size() - 500 : 0);
}

class VmmResetPath : public ::testing::TestWithParam<const char*> {};

TEST_P(VmmResetPath, RebootsWithTimersRunning) {
  VMM_REQUIRE_KVM();
  const std::string via = GetParam();
  const ProcessResult r = run_guest("test=reboot count=5 via=" + via, {"--log-level", "info"});
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "testguest: reboot ok boots=5")) << r.out;
  EXPECT_TRUE(contains(r.err, "4 reboots")) << r.err;
}
INSTANTIATE_TEST_SUITE_P(Via, VmmResetPath, ::testing::Values("kbd", "triple", "acpi", "cf9"));

TEST(VmmRun, NoRebootTurnsAGuestResetIntoExitZero) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=reboot count=5", {"--no-reboot", "--log-level", "info"});
  EXPECT_EQ(r.exit_status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "--no-reboot")) << r.err;
  EXPECT_FALSE(contains(r.out, "boot 2 of 5")) << "the guest must not boot a second time";
}

TEST(VmmRun, TripleFaultIsReportedNotACrash) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=fault kind=triple", {"--no-reboot", "--log-level", "info"});
  EXPECT_EQ(r.exit_status, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "triple fault")) << r.err;
}

TEST(VmmRun, AcpiPowerOffExitsWithZero) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=poweroff");
  EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "S5")) << r.out;
}

TEST(VmmRun, GuestExceptionReachesTheDebugExitStatus) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=fault kind=ud");
  EXPECT_EQ(r.exit_status, kGuestException) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "vector=6")) << r.out;
}

// The test guest as a virtio-blk driver with nothing else around it: PCI
// configuration through the ports, the virtio-pci capabilities, a polled
// queue; GET_ID, a write, a flush, a read back and a read past the end, each
// status checked by the guest. The host then finds the guest's pattern in
// the image's sector 5 and nothing anywhere else.
TEST(VmmRun, TheTestGuestWritesAndReadsASectorThroughVirtioBlk) {
  VMM_REQUIRE_KVM();
  TempDir dir("vmm-testguest-disk");
  const std::string image = dir.create("disk.img", 1 << 20);
  const ProcessResult r = run_guest("test=disk sector=5 serial=tg-disk-7", {"--disk", image + ",serial=tg-disk-7"});
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "id=tg-disk-7 capacity=2048 sectors")) << r.out;
  const std::vector<std::uint8_t> bytes = read_file(image);
  ASSERT_EQ(bytes.size(), 1u << 20);
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    const bool in_sector = at / 512 == 5;
    // The guest's pattern (guest-images/testguest/disk.c): i * 7 + sector * 13 + 1.
    const std::uint8_t want = in_sector ? static_cast<std::uint8_t>(at % 512 * 7 + 5 * 13 + 1) : 0;
    ASSERT_EQ(bytes[at], want) << "byte " << at << " of the image";
  }
}

// A read-only disk: the guest must see VIRTIO_BLK_F_RO, its write must fail
// with IOERR, and the image must be left as it was.
TEST(VmmRun, AReadOnlyDiskRefusesTheTestGuestsWrite) {
  VMM_REQUIRE_KVM();
  TempDir dir("vmm-testguest-rodisk");
  const std::string image = dir.create("disk.img", 64 << 10);
  const ProcessResult r = run_guest("test=disk readonly", {"--disk", image + ",readonly"});
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "refused the write and read back unchanged")) << r.out;
  EXPECT_TRUE(read_file(image) == std::vector<std::uint8_t>(64 << 10, 0)) << "the read-only image changed";
}

// What KVM cannot run (here: instructions fetched from device MMIO) ends
// the VM with the guest-error status and one line saying why, not two
// (the vCPU thread and main used to both report it).
TEST(VmmRun, AGuestKvmCannotRunEndsWithOneErrorLine) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=fault kind=exec-mmio");
  EXPECT_EQ(r.exit_status, 6) << "the guest-error status (README)\n" << r.out << r.err;
  // On a software-only /dev/kvm a second line names that (hint).
  const std::size_t hint = contains(r.err, "software-only") ? 1 : 0;
  EXPECT_EQ(count_occurrences(r.err, "vmm: error:"), 1 + hint) << r.err;
  EXPECT_TRUE(contains(r.err, "vcpu 0")) << r.err;
}

// Random values at every width to every device register and to stray
// addresses: the VMM stays up, the guest finishes, the log stays bounded.
TEST(VmmRun, AGuestWritingAnythingAnywhereLeavesTheVmmRunning) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=chaos ops=5000");
  EXPECT_EQ(r.exit_status, kGuestOk) << r.err.substr(0, 3000);
  EXPECT_TRUE(contains(r.out, "testguest: chaos ok")) << r.out.substr(r.out.size() > 500 ? r.out.size() - 500 : 0);
  EXPECT_LT(count_lines(r.err), 200u) << "the log must be rate-limited:\n" << r.err.substr(0, 3000);
}

// --irqchip=userspace: the same scenarios with KVM holding no irqchip and
// every local APIC ours: MMIO and MSR exits into devices/lapic, injection
// through KVM_INTERRUPT, HLT and INIT/SIPI waited out in the VMM, the LAPIC
// timers on our callouts, the 8259 through LINT0 and the IOAPIC through the
// APIC bus.
struct UserspaceScenario {
  const char* name;
  const char* cmdline;
  std::vector<std::string> extra;
  const char* expect_out;
  const char* expect_err = nullptr;
};

void PrintTo(const UserspaceScenario& s, std::ostream* os) { *os << s.name; }

class VmmUserspaceIrqchip : public ::testing::TestWithParam<UserspaceScenario> {};

TEST_P(VmmUserspaceIrqchip, RunsTheScenario) {
  VMM_REQUIRE_KVM();
  const UserspaceScenario& s = GetParam();
  std::vector<std::string> extra = {"--irqchip", "userspace", "--log-level", "info"};
  extra.insert(extra.end(), s.extra.begin(), s.extra.end());
  const ProcessResult r = run_guest(s.cmdline, extra);
  const std::string tail_out = r.out.substr(r.out.size() > 3000 ? r.out.size() - 3000 : 0);
  const std::string tail_err = r.err.substr(r.err.size() > 3000 ? r.err.size() - 3000 : 0);
  EXPECT_EQ(r.exit_status, kGuestOk) << tail_out << tail_err;
  EXPECT_TRUE(contains(r.out, s.expect_out)) << tail_out;
  if (s.expect_err != nullptr) {
    EXPECT_TRUE(contains(r.err, s.expect_err)) << tail_err;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Scenarios, VmmUserspaceIrqchip,
    ::testing::Values(UserspaceScenario{"boot", "test=boot", {}, "testguest: boot ok"},
                      UserspaceScenario{"smp1", "test=smp", {"--cpus", "1"}, "testguest: smp ok cpus=1"},
                      UserspaceScenario{"smp2", "test=smp", {"--cpus", "2"}, "testguest: smp ok cpus=2"},
                      UserspaceScenario{"smp4", "test=smp", {"--cpus", "4"}, "testguest: smp ok cpus=4"},
                      UserspaceScenario{"timers", "test=timers", {}, "timer lapic-tscdeadline"},
                      UserspaceScenario{"pic", "test=pic", {}, "testguest: pic ok"},
                      UserspaceScenario{"retimer", "test=retimer seconds=2", {}, "testguest: retimer ok"},
                      UserspaceScenario{"fastest", "test=fastest seconds=2", {"--cpus", "2"}, "testguest: fastest ok"},
                      UserspaceScenario{"reboot_kbd", "test=reboot count=5 via=kbd", {}, "reboot ok boots=5",
                                        "4 reboots"},
                      UserspaceScenario{"reboot_triple", "test=reboot count=5 via=triple", {},
                                        "reboot ok boots=5", "4 reboots"},
                      UserspaceScenario{"reboot_acpi", "test=reboot count=5 via=acpi", {}, "reboot ok boots=5",
                                        "4 reboots"},
                      UserspaceScenario{"reboot_cf9", "test=reboot count=5 via=cf9", {}, "reboot ok boots=5",
                                        "4 reboots"},
                      UserspaceScenario{"chaos", "test=chaos ops=5000", {}, "testguest: chaos ok"}),
    [](const ::testing::TestParamInfo<UserspaceScenario>& scenario) { return std::string(scenario.param.name); });

// Bad input at the local APIC (IPIs to absent IDs, a self-IPI storm, a
// one-count periodic timer, TSC deadlines in the past and at the maximum,
// garbage at every reserved and read-only offset): the guest finds its APIC
// still working and the log stays bounded, whoever models the APIC.
class VmmApicStorm : public ::testing::TestWithParam<const char*> {};

TEST_P(VmmApicStorm, LeavesTheVmmAndTheApicWorking) {
  VMM_REQUIRE_KVM();
  const ProcessResult r = run_guest("test=apicstorm", {"--irqchip", GetParam()});
  EXPECT_EQ(r.exit_status, kGuestOk) << r.out << r.err.substr(0, 3000);
  EXPECT_TRUE(contains(r.out, "testguest: apicstorm ok")) << r.out;
  EXPECT_LT(count_lines(r.err), 200u) << "the log must be rate-limited:\n" << r.err.substr(0, 3000);
}
INSTANTIATE_TEST_SUITE_P(Irqchip, VmmApicStorm, ::testing::Values("split", "userspace"));

TEST(VmmRun, SerialToAFileAndToNull) {
  VMM_REQUIRE_KVM();
  const auto path = std::filesystem::temp_directory_path() / ("vmm-serial-" + std::to_string(::getpid()));
  const ProcessResult to_file = run_guest("test=boot", {"--serial", "file:" + path.string()});
  EXPECT_EQ(to_file.exit_status, kGuestOk) << to_file.err;
  EXPECT_TRUE(to_file.out.empty());
  std::ifstream in(path);
  std::stringstream written_stream;
  written_stream << in.rdbuf();
  const std::string written = written_stream.str();
  EXPECT_TRUE(contains(written, "testguest: boot ok")) << written;
  std::filesystem::remove(path);

  const ProcessResult to_null = run_guest("test=boot", {"--serial", "null"});
  EXPECT_EQ(to_null.exit_status, kGuestOk);
  EXPECT_TRUE(to_null.out.empty());
}

TEST(VmmRun, SigtermTwiceStopsByForce) {
  VMM_REQUIRE_KVM();
  // A guest that runs until stopped, with timers re-armed as they fire, and
  // that neither answers the power button nor reboots (a reset while
  // stopping would end the VM on its own). The control socket is only there to tell when the VMM is up (it blocks
  // its signals before it creates the socket) and when it has taken the
  // first SIGTERM: no sleep has to guess either.
  const std::string socket =
      (std::filesystem::temp_directory_path() / ("vmm-sigterm-" + std::to_string(::getpid()) + ".sock")).string();
  std::atomic<pid_t> child{0};
  ProcessResult r;
  std::thread runner([&] {
    r = run_process({vmm_binary(), "run", "--kernel", test_guest(), "--memory", "64M", "--cmdline",
                     "test=retimer seconds=3600", "--control", socket},
                    std::chrono::seconds(60), {}, [&](pid_t pid) { child.store(pid); });
  });
  const auto state = [&] {
    const ProcessResult status = run_process({vmm_binary(), "ctl", socket, "status"}, std::chrono::seconds(10));
    const auto at = status.out.find("\"state\":\"");
    return at == std::string::npos ? std::string() : status.out.substr(at + 9, status.out.find('"', at + 9) - at - 9);
  };
  const auto wait_for_state = [&](const std::string& want) {
    for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
         std::chrono::steady_clock::now() < deadline;) {
      if (state() == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  const bool up = wait_for_state("running");
  EXPECT_TRUE(up) << "the VMM never reported running";
  // This guest has no ACPI driver, so the power button the first SIGTERM
  // presses goes unanswered; the second one stops it by force, long before
  // the 5 s a graceful stop waits.
  ::kill(child.load(), SIGTERM);
  EXPECT_TRUE(up && wait_for_state("stopping")) << "the first SIGTERM did not start a graceful stop";
  const auto second = std::chrono::steady_clock::now();
  ::kill(child.load(), SIGTERM);
  runner.join();
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.exit_status, 8) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - second, std::chrono::seconds(4))
      << "the second SIGTERM did not force the stop: the graceful timeout ended it";
}

}  // namespace
}  // namespace vmm::testing
