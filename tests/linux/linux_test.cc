// Debian's Linux 6.1 cloud kernel under the real vmm binary, as a user runs
// it: the bzImage and the PVH vmlinux of the same kernel, at 1, 2 and 4
// vCPUs, with its tick and clocksource on each of our timer devices; the
// RTC and HPET through their Linux drivers; every reboot method in one
// process; power-off, the power button and a panic. The guest reports what
// it measured in "VMMCHECK" lines (guest-images/linux/init).
//
// Rate checks hold in the nested lab (software emulation): a tick that
// should come at HZ must come at between half and one and a quarter of
// that, per busy CPU. The strict figures are the device tests'.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/linux/linux_fixture.h"

namespace vmm::testing {
namespace {

using namespace std::chrono_literals;

constexpr double kHz = 250;  // Debian's cloud kernel: CONFIG_HZ=250

// ------------------------------------------------------------ boot + tick

struct TimerCase {
  const char* name;
  KernelFormat format;
  unsigned cpus;
  const char* cmdline;      // what selects the device
  const char* clocksource;  // what the guest must be using
  const char* tick_irq;     // the /proc/interrupts line the tick is counted on
  bool userspace_irqchip = false;  // every local APIC, and so the LAPIC tick, ours
};

void PrintTo(const TimerCase& c, std::ostream* os) { *os << c.name; }

class LinuxTimers : public ::testing::TestWithParam<TimerCase> {};

// Boots, checks the guest saw every CPU, its memory and its command line,
// then counts its tick for 2 s while one CPU spins (an idle CPU stops its
// tick: NO_HZ).
TEST_P(LinuxTimers, BootsAndTicksAtHz) {
  VMM_REQUIRE_LINUX_GUEST();
  const TimerCase& c = GetParam();
  const std::string marker = "vmm.marker=" + std::to_string(::getpid()) + "-" + c.name;
  const LinuxRun run = boot_linux(
      c.format, c.cpus,
      std::string(c.cmdline) + " " + marker + " vmm.run=yes,>/dev/null,& vmm.run=vmmcheck,ticks," + c.tick_irq + ",2",
      c.userspace_irqchip ? std::vector<std::string>{"--irqchip=userspace"} : std::vector<std::string>{});
  ASSERT_EQ(run.process.exit_status, 0) << run.transcript();
  EXPECT_EQ(run.count("vmm-initramfs: ready"), 1u) << run.transcript();

  const auto boot = run.first("boot");
  ASSERT_TRUE(boot) << run.transcript();
  EXPECT_EQ(boot->number("cpus_online"), c.cpus) << run.transcript();
  EXPECT_EQ(boot->get("cpus_possible"), c.cpus == 1 ? "0" : "0-" + std::to_string(c.cpus - 1));
  // 256 MiB of RAM, less what the kernel and firmware keep.
  EXPECT_GT(boot->number("memtotal_kib"), 200 * 1024) << run.transcript();
  EXPECT_LE(boot->number("memtotal_kib"), 256 * 1024) << run.transcript();
  EXPECT_EQ(boot->get("clocksource"), c.clocksource) << run.transcript();
  EXPECT_NE(run.process.out.find(marker), std::string::npos) << "the command line did not reach the guest";

  const auto ticks = run.first("ticks");
  ASSERT_TRUE(ticks) << run.transcript();
  EXPECT_TRUE(ticks->get("error").empty()) << run.transcript();
  const double hz = ticks->number("measured_hz");
  EXPECT_GE(hz, kHz * 0.5) << c.tick_irq << " interrupts did not come at HZ\n" << run.transcript();
  EXPECT_LE(hz, kHz * 1.25 * c.cpus) << c.tick_irq << " interrupts came faster than HZ\n" << run.transcript();
}

// Both images of the kernel with each way Linux can keep time here, and
// every CPU count. On a CPU with the TSC-deadline timer Linux ignores
// nolapic_timer (and never starts the PIT), so the HPET and PIT cases
// hide it with lapic=notscdeadline.
INSTANTIATE_TEST_SUITE_P(
    Devices, LinuxTimers,
    ::testing::Values(
        TimerCase{"bzImage_1cpu_lapic", KernelFormat::bzimage, 1, "", "kvm-clock", "LOC"},
        TimerCase{"pvh_2cpu_lapic", KernelFormat::pvh, 2, "", "kvm-clock", "LOC"},
        TimerCase{"bzImage_2cpu_hpet_tick", KernelFormat::bzimage, 2, "nolapic_timer lapic=notscdeadline",
                  "kvm-clock", "timer"},
        TimerCase{"pvh_1cpu_hpet_tick", KernelFormat::pvh, 1, "nolapic_timer", "kvm-clock", "timer"},
        TimerCase{"bzImage_1cpu_pit_tick", KernelFormat::bzimage, 1,
                  "hpet=disable nolapic_timer lapic=notscdeadline", "kvm-clock", "timer"},
        TimerCase{"pvh_4cpu_pit_tick", KernelFormat::pvh, 4, "hpet=disable nolapic_timer lapic=notscdeadline",
                  "kvm-clock", "timer"},
        TimerCase{"bzImage_4cpu_hpet_clocksource", KernelFormat::bzimage, 4, "clocksource=hpet", "hpet", "LOC"},
        TimerCase{"pvh_2cpu_hpet_clocksource", KernelFormat::pvh, 2, "clocksource=hpet", "hpet", "LOC"},
        TimerCase{"bzImage_2cpu_acpi_pm_clocksource", KernelFormat::bzimage, 2, "clocksource=acpi_pm", "acpi_pm",
                  "LOC"},
        TimerCase{"pvh_1cpu_acpi_pm_clocksource", KernelFormat::pvh, 1, "clocksource=acpi_pm", "acpi_pm", "LOC"},
        // --irqchip=userspace: the LAPIC tick (TSC-deadline) on our callouts,
        // IPIs and every IOAPIC interrupt through our APICs, at 1, 2 and 4
        // vCPUs, in the default, nolapic_timer and clocksource=hpet variants.
        // In the lab these VMMs run on one lab CPU (boot_linux): spread over
        // two, their kicks killed the lab's kernel (2 deaths in 10 boots, 3 in 3
        // tries at 4 vCPUs); on one, 30 of 30 boots passed.
        TimerCase{"bzImage_1cpu_lapic_userspace_irqchip", KernelFormat::bzimage, 1, "", "kvm-clock", "LOC", true},
        TimerCase{"bzImage_2cpu_hpet_tick_userspace_irqchip", KernelFormat::bzimage, 2,
                  "nolapic_timer lapic=notscdeadline", "kvm-clock", "timer", true},
        TimerCase{"pvh_2cpu_lapic_userspace_irqchip", KernelFormat::pvh, 2, "", "kvm-clock", "LOC", true},
        TimerCase{"pvh_2cpu_hpet_clocksource_userspace_irqchip", KernelFormat::pvh, 2, "clocksource=hpet", "hpet",
                  "LOC", true},
        TimerCase{"bzImage_4cpu_hpet_clocksource_userspace_irqchip", KernelFormat::bzimage, 4, "clocksource=hpet",
                  "hpet", "LOC", true}),

    [](const ::testing::TestParamInfo<TimerCase>& param_info) { return std::string(param_info.param.name); });

// ------------------------------------------------------- RTC and HPET

TEST(LinuxDevices, RtcAndHpetThroughTheirLinuxDrivers) {
  VMM_REQUIRE_LINUX_GUEST();
  const std::time_t before = std::time(nullptr);
  const LinuxRun run = boot_linux(KernelFormat::bzimage, 1,
                                  "vmm.run=vmmcheck,rtc-time vmm.run=vmmcheck,rtc-periodic,2,5 "
                                  "vmm.run=vmmcheck,rtc-periodic,64,64 vmm.run=vmmcheck,rtc-periodic,1024,1024 "
                                  "vmm.run=vmmcheck,rtc-alarm,2 vmm.run=vmmcheck,hpet,2,5 "
                                  "vmm.run=vmmcheck,hpet,64,64");
  const std::time_t after = std::time(nullptr);
  ASSERT_EQ(run.process.exit_status, 0) << run.transcript();

  // hwclock's time against the host's, within 2 s of the run's span.
  const auto rtc_time = run.first("rtc-time");
  ASSERT_TRUE(rtc_time) << run.transcript();
  EXPECT_GE(rtc_time->number("epoch"), static_cast<double>(before - 2)) << run.transcript();
  EXPECT_LE(rtc_time->number("epoch"), static_cast<double>(after + 2)) << run.transcript();

  for (const char* hz : {"2", "64", "1024"}) {
    const auto periodic = run.first("rtc-periodic", "hz", hz);
    ASSERT_TRUE(periodic) << "no rtc-periodic at " << hz << " Hz\n" << run.transcript();
    const double want = std::atof(hz);
    EXPECT_NEAR(periodic->number("measured_hz"), want, want * 0.1) << run.transcript();
  }
  const auto alarm = run.first("rtc-alarm");
  ASSERT_TRUE(alarm) << run.transcript();
  EXPECT_EQ(alarm->get("alarm_irq"), "1") << run.transcript();
  // Two seconds ahead at one-second resolution: between one and three.
  EXPECT_GE(alarm->number("rang_after"), 0.9) << run.transcript();
  EXPECT_LE(alarm->number("rang_after"), 3.1) << run.transcript();

  // Linux's /dev/hpet driver runs its comparator as a one-shot, level
  // triggered, and re-arms it in each interrupt at the next multiple of the
  // period after the counter it just read: a late interrupt (the lab's
  // software emulation under load) skips periods, so the rate counted can
  // be low but never high. At 1024 Hz it is not tested here: in the lab an
  // MMIO exit can outlast the driver's margin between reading the counter
  // and writing the comparator, which then lies in the past and, as on any
  // HPET, matches only after the 32-bit counter wraps (43 s). Measured with
  // the comparator's writes traced; the driver takes that risk knowingly.
  for (const char* hz : {"2", "64"}) {
    const auto hpet = run.first("hpet", "hz", hz);
    ASSERT_TRUE(hpet) << "no /dev/hpet figure at " << hz << " Hz\n" << run.transcript();
    const double want = std::atof(hz);
    EXPECT_LE(hpet->number("measured_hz"), want * 1.1) << run.transcript();
    EXPECT_GE(hpet->number("measured_hz"), want * 0.4) << run.transcript();
  }
}

// ------------------------------------------------------- reboots, the end

class LinuxLifecycle : public ::testing::TestWithParam<KernelFormat> {};

// kbd: the i8042's reset line; triple: a triple fault; acpi: the FADT's
// reset register; pci: port 0xCF9. The guest counts its boots in CMOS
// NVRAM, which survives a reboot, and powers off after the fourth. The tick
// is the default one, the local APIC's TSC-deadline timer: on AMD hosts the
// boot after the triple fault used to run on a vCPU whose TSC had lost its
// offset, so every deadline fired as late as the host had been up (RCU
// stalls, then a hang), until the VMM put the offset back.
TEST_P(LinuxLifecycle, EveryRebootMethodRestartsTheGuestInTheSameProcess) {
  VMM_REQUIRE_LINUX_GUEST();
  const LinuxRun run = boot_linux(GetParam(), 2, "vmm.reboots=4 vmm.reboot_methods=kbd,triple,acpi,pci", {},
                                  std::chrono::seconds(180));
  ASSERT_EQ(run.process.exit_status, 0) << run.transcript();
  EXPECT_EQ(run.count("vmm-initramfs: ready"), 5u) << run.transcript();
  std::vector<std::string> methods;
  for (const Check& c : run.all("reboot")) {
    if (!c.get("method").empty()) methods.push_back(c.get("method"));
  }
  EXPECT_EQ(methods, (std::vector<std::string>{"kbd", "triple", "acpi", "pci"})) << run.transcript();
  const auto last = run.all("reboot").back();
  EXPECT_EQ(last.get("boot"), "4") << run.transcript();
  // Each boot reaches user space within seconds of its own start; a clock
  // that leapt by the host's uptime (the lost TSC offset) reads minutes.
  for (const Check& boot : run.all("boot")) {
    EXPECT_LT(boot.number("uptime"), 60.0) << run.transcript();
  }
}

TEST_P(LinuxLifecycle, AKernelPanicEndsTheVmWithStatus10) {
  VMM_REQUIRE_LINUX_GUEST();
  const LinuxRun run = boot_linux(GetParam(), 1, "vmm.then=panic");
  EXPECT_EQ(run.process.exit_status, 10) << run.transcript();
  EXPECT_NE(run.process.out.find("Kernel panic - not syncing: sysrq triggered crash"), std::string::npos)
      << run.transcript();
  EXPECT_NE(run.process.err.find("the guest kernel panicked"), std::string::npos) << run.transcript();
}

// SIGTERM presses the ACPI power button; the guest's acpid powers it off at
// once, long before the 5 s after which the VMM would stop it by force.
TEST_P(LinuxLifecycle, SigtermPowersTheGuestOffThroughItsPowerButton) {
  VMM_REQUIRE_LINUX_GUEST();
  const auto serial = std::filesystem::temp_directory_path() /
                      ("vmm-linux-serial-" + std::to_string(::getpid()) + "-" + to_string(GetParam()));
  std::filesystem::remove(serial);
  std::atomic<pid_t> child{0};
  LinuxRun run;
  std::thread runner([&] {
    run = boot_linux(GetParam(), 1, "vmm.run=sleep,600", {"--serial", "file:" + serial.string()}, 240s,
                     [&](pid_t pid) { child.store(pid); });
  });
  // Ready once acpid runs: the guest prints its ready line after starting it.
  const bool ready = wait_for_serial(serial.string(), "vmm-initramfs: running: sleep 600", 180s);
  const auto pressed = std::chrono::steady_clock::now();
  if (child.load() != 0) ::kill(child.load(), SIGTERM);
  runner.join();
  ASSERT_TRUE(ready) << "the guest never got to its command";
  EXPECT_EQ(run.process.exit_status, 0) << "powered off by the guest, not stopped by force\n" << run.transcript();
  EXPECT_LT(std::chrono::steady_clock::now() - pressed, 4s);
  const std::string text = read_serial(serial.string());
  EXPECT_NE(text.find("power button: powering off"), std::string::npos) << text;
  std::filesystem::remove(serial);
}

INSTANTIATE_TEST_SUITE_P(Both, LinuxLifecycle, ::testing::Values(KernelFormat::bzimage, KernelFormat::pvh),
                         [](const ::testing::TestParamInfo<KernelFormat>& param_info) {
                           return std::string(to_string(param_info.param));
                         });

// ------------------------------------------------------------- bad input

// What only the guest can notice ends as the guest says: an initrd that is
// not an archive leaves the kernel without /init and it panics. Its
// pvpanic driver is a module in that very initramfs, so the panic is seen
// as panic=-1's reset: with --no-reboot that ends the VM (status 0), where
// it would otherwise boot into the same panic again and again.
// Only in the lab, and only for a reset the VM made for a triple fault the
// test did not ask for, is a boot run again: anywhere else, or for any other
// ending, it stands.
TEST(LinuxFixture, OnlyATripleFaultInTheLabThatTheTestDidNotAskForIsBootedAgain) {
  const char* saved = std::getenv("KVM_LAB");
  const std::string was = saved ? saved : "";
  const std::string fault_reset =
      "vmm: info: vm: reset (vcpu 3: triple fault (KVM_EXIT_SHUTDOWN) at rip 0xfff0 (the reset vector: registers "
      "already reset by KVM, as on AMD)) 12742.1 ms and 6400 vCPU 0 entries into boot 0";
  ProcessResult faulted;
  faulted.err = "vmm: info: vcpu 3: reset requested: triple fault (KVM_EXIT_SHUTDOWN) at rip 0xfff0\n" + fault_reset +
                "\nvmm: info: vm: ended: guest powered off (ACPI S5) (exit status 0, 1 reboots)\n";
  ProcessResult fault_not_acted_on;  // merged into a power-off: the boot was not cut short
  fault_not_acted_on.err = "vmm: info: vcpu 3: reset requested: triple fault (KVM_EXIT_SHUTDOWN) at rip 0xfff0\n"
                           "vmm: info: vm: ended: guest powered off (ACPI S5) (exit status 0, 0 reboots)\n";
  ProcessResult rebooted;
  rebooted.err = "vmm: info: vm: reset (vcpu 0: i8042 reset line) 900.0 ms and 10 vCPU 0 entries into boot 0\n";

  ::setenv("KVM_LAB", "1", 1);
  EXPECT_EQ(cut_short_by_the_lab(faulted, "clocksource=hpet"), fault_reset + "\n");
  EXPECT_EQ(cut_short_by_the_lab(faulted, "vmm.reboots=4 vmm.reboot_methods=kbd,triple,acpi,pci"), "");
  EXPECT_EQ(cut_short_by_the_lab(fault_not_acted_on, "clocksource=hpet"), "");
  EXPECT_EQ(cut_short_by_the_lab(rebooted, "clocksource=hpet"), "");
  ::unsetenv("KVM_LAB");
  EXPECT_EQ(cut_short_by_the_lab(faulted, "clocksource=hpet"), "");
  if (saved) ::setenv("KVM_LAB", was.c_str(), 1);
}

// A failure's transcript leads with the VMM's log and, for a guest that
// booted again, the console lines before that later boot.
TEST(LinuxFixture, ATranscriptShowsWhatCameBeforeALaterBoot) {
  LinuxRun run;
  run.process.err = "vmm: info: vm: reset (vcpu 3: triple fault)\n";
  run.process.out = "vmm-initramfs: Linux up\nVMMCHECK ticks ir\nvmm-initramfs: Linux up\nlast\n";
  const std::string text = run.transcript();
  EXPECT_EQ(text.find("--- vmm:\nvmm: info: vm: reset"), 0u) << text;
  const std::size_t before = text.find("--- console before a later boot:\n");
  ASSERT_NE(before, std::string::npos) << text;
  EXPECT_LT(text.find("VMMCHECK ticks ir", before), text.find("--- console:\n")) << text;
  EXPECT_EQ(text.find("--- console before"), text.rfind("--- console before")) << "one later boot, one excerpt";

  run.process.out = "vmm-initramfs: Linux up\nready\n";
  EXPECT_EQ(run.transcript().find("--- console before"), std::string::npos);
}

TEST(LinuxBadInput, AnInitrdThatIsNotAnArchiveEndsInAReportedPanic) {
  VMM_REQUIRE_LINUX_GUEST();
  const auto garbage = std::filesystem::temp_directory_path() / ("vmm-bad-initrd-" + std::to_string(::getpid()));
  {
    std::ofstream out(garbage, std::ios::binary);
    for (int i = 0; i < 65536; ++i) out.put(static_cast<char>((i * 7919) & 0xff));
  }
  std::vector<std::string> argv = {VMM_BINARY, "run", "--kernel", linux_kernel(KernelFormat::bzimage),
                                   "--initrd", garbage.string(), "--memory", "256M", "--no-reboot", "--log-level", "info", "--cmdline",
                                   kLinuxBaseCmdline};
  const ProcessResult r = run_process(argv, 240s);
  std::filesystem::remove(garbage);
  EXPECT_EQ(r.exit_status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("Initramfs unpacking failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Kernel panic"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("guest reset"), std::string::npos) << "ended by the guest's reset: " << r.err;
}

}  // namespace
}  // namespace vmm::testing
