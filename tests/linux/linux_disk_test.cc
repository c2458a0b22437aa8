// Linux on a virtio-blk disk: Debian's cloud kernel loads virtio_pci and
// virtio_blk from the project's initramfs, mounts an ext4 image built here
// without root (mke2fs -d), reads a file the host put there, writes a
// pattern of its own and a copy of what it read, syncs, unmounts and powers
// off. The host then checks every byte through e2fsprogs (debugfs) and that
// the file system is clean (e2fsck -fn). Then Linux with its root on a disk.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/subprocess.h"
#include "tests/common/temp_dir.h"
#include "tests/linux/linux_fixture.h"

namespace vmm::testing {
namespace {

constexpr const char* kSerial = "vmm-test-disk-0";
constexpr std::size_t kInputBytes = 3 << 20;  // several requests of the largest size Linux sends
constexpr unsigned kPatternLines = 65536;

std::string kernel() { return linux_kernel(KernelFormat::bzimage); }
std::string initramfs() { return linux_initrd(); }


void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// What the guest's awk prints: line i is (i * 2654435761) mod 2^31 in hex,
// eight digits (exact in awk's doubles; busybox awk clamps %x at 2^31).
std::string expected_pattern() {
  std::string text;
  char line[16];
  for (std::uint64_t i = 0; i < kPatternLines; ++i) {
    std::snprintf(line, sizeof line, "%08llx\n", static_cast<unsigned long long>((i * 2654435761ull) % (1ull << 31)));
    text += line;
  }
  return text;
}

std::string tool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/"}) {
    if (::access((dir + name).c_str(), X_OK) == 0) return dir + name;
  }
  return name;
}

// The lines of `out` that start with `prefix`, prefix removed.
std::vector<std::string> lines_with(const std::string& out, const std::string& prefix) {
  std::vector<std::string> found;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto at = line.find(prefix);
    if (at != std::string::npos) found.push_back(line.substr(at + prefix.size()));
  }
  return found;
}

// An ext4 image built without root (mke2fs -d) that holds one script.
ProcessResult make_ext4_with_script(const TempDir& dir, const std::string& name, const std::string& script,
                                    const std::string& image, const char* size) {
  const std::string root = dir.file("root");
  ::mkdir(root.c_str(), 0755);
  write_file(root + "/" + name, script);
  return run_process({tool("mke2fs"), "-q", "-F", "-t", "ext4", "-d", root, image, size}, std::chrono::seconds(60));
}

// How the disk interrupts the guest: MSI-X (Linux's choice), INTx on the
// IOAPIC (`pci=nomsi`), and INTx on the 8259 pair (`noapic` too: Linux
// calls \_PIC(0) and _PRT answers with ISA IRQ 10). Each is named by the
// chip /proc/interrupts shows for the device. The disk has a request queue
// per vCPU. The 8259 case runs one vCPU: once in CI its 2-vCPU boot printed
// nothing for 300 s with both vCPUs in KVM_RUN (not seen again in 8 lab
// runs; an open defect in the README). The disk's defaults coalesce
// interrupts (coalesce-us=auto: at depth, and in one probe of every 32 lone
// requests, an interrupt waits up to 200 us for more completions to share
// it); the last case turns that off, so both paths carry a file system.
struct InterruptPath {
  const char* name;
  const char* cmdline;
  const char* chip;
  unsigned cpus;
  const char* disk_options = "";  // appended to --disk
};

class LinuxDiskInterrupts : public ::testing::TestWithParam<InterruptPath> {};

INSTANTIATE_TEST_SUITE_P(Through, LinuxDiskInterrupts,
                         ::testing::Values(InterruptPath{"msix", "", "PCI-MSI", 2},
                                           InterruptPath{"ioapic_intx", "pci=nomsi ", "IO-APIC", 2},
                                           InterruptPath{"pic_intx", "noapic pci=nomsi ", "XT-PIC", 1},
                                           InterruptPath{"msix_uncoalesced", "", "PCI-MSI", 2, ",coalesce-us=0"}),
                         [](const ::testing::TestParamInfo<InterruptPath>& param) { return param.param.name; });

TEST_P(LinuxDiskInterrupts, Ext4ImageReadWrittenSyncedAndCheckedByTheHost) {
  VMM_REQUIRE_LINUX_GUEST();
  const InterruptPath& path = GetParam();

  TempDir dir("vmm-linux-disk");
  const std::string root = dir.file("root");
  ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);

  // Input: pseudo-random bytes, so that a misplaced or stale sector shows.
  std::vector<std::uint8_t> input(kInputBytes);
  std::mt19937_64 random(15);
  for (auto& byte : input) byte = static_cast<std::uint8_t>(random());
  {
    std::ofstream out(root + "/in.bin", std::ios::binary);
    out.write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
  }
  // Run from the initramfs, not from the disk, so the disk can be unmounted.
  write_file(root + "/check.sh",
             "set -e\n"
             "echo \"VMMDISK serial=$(cat /sys/block/vda/serial)\"\n"
             "echo \"VMMDISK size=$(cat /sys/block/vda/size)\"\n"
             "echo \"VMMDISK md5=$(md5sum /mnt/in.bin | cut -d' ' -f1)\"\n"
             "cp /mnt/in.bin /mnt/copy.bin\n"
             "awk 'BEGIN { for (i = 0; i < 65536; i++) printf \"%08x\\n\", (i * 2654435761) % 2147483648 }'"
             " > /mnt/pattern.txt\n"
             "sync\n"
             "echo VMMDISK written\n"
             "echo \"VMMDISK interrupts=$(grep -m1 virtio0 /proc/interrupts)\"\n"
             "echo \"VMMDISK queues=$(ls /sys/block/vda/mq | wc -l)\"\n"
             // Linux takes the MCFG's ECAM only once it finds it reserved.
             "if dmesg | grep -q 'MMCONFIG at .mem 0xe0000000-0xe00fffff. reserved'; then\n"
             "  echo VMMDISK ecam=accepted; else echo VMMDISK ecam=refused; fi\n");

  const std::string image = dir.file("disk.ext4");
  const std::string cmdline =
      std::string(kLinuxBaseCmdline) + " " + path.cmdline +
      "vmm.run=mkdir,-p,/mnt vmm.run=mount,-t,ext4,/dev/vda,/mnt "
      "vmm.run=cp,/mnt/check.sh,/tmp/check.sh vmm.run=sh,/tmp/check.sh vmm.run=umount,/mnt";
  ProcessResult run;
  for (int attempt = 1;; ++attempt) {
    // The image is made anew for each attempt, so a boot the lab cut short
    // (its guest rebooted halfway through the script) leaves nothing behind.
    const ProcessResult mkfs = run_process(
        {tool("mke2fs"), "-q", "-F", "-t", "ext4", "-L", "vmmtest", "-d", root, image, "32M"}, std::chrono::seconds(60));
    ASSERT_EQ(mkfs.exit_status, 0) << "mke2fs: " << mkfs.err;
    run = run_process({VMM_BINARY, "run", "--kernel", kernel(), "--initrd", initramfs(), "--memory", "512M", "--cpus",
                       std::to_string(path.cpus), "--log-level", "info", "--cmdline", cmdline, "--disk",
                       image + ",serial=" + kSerial + path.disk_options},
                      // A lost interrupt leaves the guest waiting for its disk
                      // forever; a boot takes about 20 s in the lab.
                      std::chrono::seconds(300));
    if (lab_cut_short_first_attempt(run, cmdline, attempt).empty()) break;
  }
  const std::string log = "--- guest console ---\n" + run.out + "\n--- vmm stderr ---\n" + run.err;
  ASSERT_FALSE(run.timed_out) << log;
  ASSERT_EQ(run.exit_status, 0) << log;

  // The guest saw the device as the host described it.
  EXPECT_EQ(lines_with(run.out, "VMMDISK serial="), std::vector<std::string>{kSerial}) << log;
  EXPECT_EQ(lines_with(run.out, "VMMDISK size="), std::vector<std::string>{std::to_string((32u << 20) / 512)})
      << log;
  for (const char* step : {"mount,-t,ext4,/dev/vda,/mnt", "sh,/tmp/check.sh", "umount,/mnt"}) {
    EXPECT_EQ(lines_with(run.out, std::string("VMMCHECK run status=0 cmd=") + step).size(), 1u)
        << "step " << step << " did not succeed\n" << log;
  }
  ASSERT_EQ(lines_with(run.out, "VMMDISK written").size(), 1u) << log;
  EXPECT_EQ(lines_with(run.out, "VMMDISK ecam="), std::vector<std::string>{"accepted"})
      << "Linux did not take the MCFG's ECAM\n" << log;
  EXPECT_EQ(lines_with(run.out, "VMMDISK queues="), std::vector<std::string>{std::to_string(path.cpus)})
      << "a request queue per vCPU\n" << log;
  if (std::string(path.disk_options).find("coalesce-us=500") != std::string::npos) {
    EXPECT_NE(run.err.find("interrupt coalescing 500 us"), std::string::npos) << log;
  }
  const std::vector<std::string> interrupts = lines_with(run.out, "VMMDISK interrupts=");
  ASSERT_EQ(interrupts.size(), 1u) << log;
  EXPECT_NE(interrupts[0].find(path.chip), std::string::npos)
      << "the disk's interrupts came another way: " << interrupts[0] << "\n" << log;

  // Every byte, read back on the host from the image the guest left.
  const std::string copy = dir.file("copy.bin"), pattern = dir.file("pattern.txt");
  const ProcessResult dump = run_process(
      {tool("debugfs"), "-R", "dump /copy.bin " + copy, image}, std::chrono::seconds(60));
  ASSERT_EQ(dump.exit_status, 0) << dump.err;
  const ProcessResult dump2 = run_process(
      {tool("debugfs"), "-R", "dump /pattern.txt " + pattern, image}, std::chrono::seconds(60));
  ASSERT_EQ(dump2.exit_status, 0) << dump2.err;
  const std::vector<std::uint8_t> copied = read_file(copy);
  ASSERT_EQ(copied.size(), input.size()) << "the guest's copy of in.bin has the wrong length";
  EXPECT_TRUE(copied == input) << "the guest's copy of in.bin differs from what the host wrote";
  const std::vector<std::uint8_t> written = read_file(pattern);
  const std::string want = expected_pattern();
  EXPECT_TRUE(std::string(written.begin(), written.end()) == want)
      << "pattern.txt: " << written.size() << " bytes, " << want.size() << " expected";

  // Unmounted cleanly: nothing to replay, nothing to fix.
  const ProcessResult fsck = run_process({tool("e2fsck"), "-fn", image}, std::chrono::seconds(60));
  EXPECT_EQ(fsck.exit_status, 0) << fsck.out << fsck.err;
}

// A reboot (through the keyboard controller) while the guest streams writes
// to a second disk: the VMM resets every function with requests in flight,
// waits for them at io_uring, and the rebooted guest finds all three disks
// working again. The read-only disk is never written.
TEST(LinuxDisk, RebootWithWritesInFlightThenEveryDiskWorksAgain) {
  VMM_REQUIRE_LINUX_GUEST();

  TempDir dir("vmm-linux-reboot");
  const std::string image = dir.file("disk.ext4");
  const ProcessResult mkfs = make_ext4_with_script(
      dir, "boot.sh",
      "set -e\n"
      "echo boot >> /mnt/boots.txt\n"
      "sync\n"
      "echo \"VMMDISK ro=$(cat /sys/block/vdc/ro) md5=$(dd if=/dev/vdc bs=4096 count=16 2>/dev/null | md5sum | "
      "cut -d' ' -f1)\"\n"
      "if dd if=/dev/zero of=/dev/vdc bs=512 count=1 conv=fsync 2>/dev/null; then echo VMMDISK rowrite=ok; "
      "else echo VMMDISK rowrite=refused; fi\n"
      // Still writing when the guest reboots or powers off.
      "(while :; do dd if=/dev/urandom of=/dev/vdb bs=1M count=16 conv=fsync 2>/dev/null; done) &\n"
      "sleep 1\n",
      image, "16M");
  ASSERT_EQ(mkfs.exit_status, 0) << "mke2fs: " << mkfs.err;
  const std::string scratch = dir.create("scratch.img", 32 << 20);
  std::vector<std::uint8_t> ro_bytes(64 << 10);
  std::mt19937_64 random(16);
  for (auto& byte : ro_bytes) byte = static_cast<std::uint8_t>(random());
  const std::string ro_image = dir.file("ro.img");
  write_file(ro_image, std::string(ro_bytes.begin(), ro_bytes.end()));
  const ProcessResult md5 = run_process({"/usr/bin/md5sum", ro_image});
  ASSERT_EQ(md5.exit_status, 0);
  const std::string ro_md5 = md5.out.substr(0, 32);

  const std::string cmdline =
      std::string(kLinuxBaseCmdline) +
      " vmm.run=mkdir,-p,/mnt vmm.run=mount,-t,ext4,/dev/vda,/mnt vmm.run=cp,/mnt/boot.sh,/tmp/boot.sh "
      "vmm.run=sh,/tmp/boot.sh vmm.run=umount,/mnt vmm.reboots=1 vmm.reboot_methods=kbd";
  const ProcessResult run = run_process({VMM_BINARY, "run", "--kernel", kernel(), "--initrd", initramfs(),
                                         "--memory", "512M", "--cpus", "1", "--cmdline", cmdline, "--disk", image,
                                         "--disk", scratch, "--disk", ro_image + ",readonly"},
                                        std::chrono::seconds(900));
  const std::string log = "--- guest console ---\n" + run.out + "\n--- vmm stderr ---\n" + run.err;
  ASSERT_FALSE(run.timed_out) << log;
  ASSERT_EQ(run.exit_status, 0) << log;
  EXPECT_EQ(lines_with(run.out, "VMMCHECK reboot boot=").size(), 2u) << log;
  EXPECT_EQ(lines_with(run.out, "VMMCHECK run status=0 cmd=umount,/mnt").size(), 2u) << "both boots\n" << log;
  EXPECT_EQ(lines_with(run.out, "VMMDISK ro=1 md5=" + ro_md5).size(), 2u) << log;
  EXPECT_EQ(lines_with(run.out, "VMMDISK rowrite=refused").size(), 2u) << log;

  const std::string boots = dir.file("boots.txt");
  const ProcessResult dump = run_process({tool("debugfs"), "-R", "dump /boots.txt " + boots, image});
  ASSERT_EQ(dump.exit_status, 0) << dump.err;
  const std::vector<std::uint8_t> text = read_file(boots);
  EXPECT_EQ(std::string(text.begin(), text.end()), "boot\nboot\n");
  const ProcessResult fsck = run_process({tool("e2fsck"), "-fn", image}, std::chrono::seconds(60));
  EXPECT_EQ(fsck.exit_status, 0) << fsck.out << fsck.err;
  EXPECT_TRUE(read_file(ro_image) == ro_bytes) << "the read-only image changed";
}

// Linux with its root on a disk: the initramfs loads virtio_pci and
// virtio_blk, mounts the image build-guest made as the root and switches to
// it; the /init there writes a line to the disk, reboots (the VMM resets the
// disk with everything else) and, on the second boot, switches again, writes
// again and powers off. The root is remounted read-only before each end, so
// the host finds both lines, nothing in the journal and a clean file system.
TEST(LinuxDisk, RootOnTheDiskAcrossARebootThenCleanAtPowerOff) {
  VMM_REQUIRE_LINUX_GUEST();

  TempDir dir("vmm-linux-root");
  const std::string image = dir.file("rootfs.ext4");
  const ProcessResult copy = run_process({"/bin/cp", "--sparse=always", linux_root_disk(), image});
  ASSERT_EQ(copy.exit_status, 0) << "copying " << linux_root_disk() << ": " << copy.err;

  const std::string cmdline =
      std::string(kLinuxBaseCmdline) + " root=/dev/vda rw vmm.run=echo,boot,>>,/root/boots.txt "
      "vmm.reboots=1 vmm.reboot_methods=acpi";
  const ProcessResult run = run_process({VMM_BINARY, "run", "--kernel", kernel(), "--initrd", initramfs(),
                                         "--memory", "512M", "--cpus", "1", "--cmdline", cmdline, "--disk", image},
                                        std::chrono::seconds(900));
  const std::string log = "--- guest console ---\n" + run.out + "\n--- vmm stderr ---\n" + run.err;
  ASSERT_FALSE(run.timed_out) << log;
  ASSERT_EQ(run.exit_status, 0) << log;
  EXPECT_EQ(lines_with(run.out, "vmm-initramfs: switching root to /dev/vda (rw)").size(), 2u) << log;
  EXPECT_EQ(lines_with(run.out, "VMMCHECK root device=/dev/vda fstype=ext4 mode=rw").size(), 2u) << log;
  EXPECT_EQ(lines_with(run.out, "VMMCHECK reboot boot=").size(), 2u) << log;
  EXPECT_EQ(lines_with(run.out, "VMMCHECK root status=fail").size(), 0u) << log;

  const std::string boots = dir.file("boots.txt");
  const ProcessResult dump = run_process({tool("debugfs"), "-R", "dump /root/boots.txt " + boots, image});
  ASSERT_EQ(dump.exit_status, 0) << dump.err;
  const std::vector<std::uint8_t> text = read_file(boots);
  EXPECT_EQ(std::string(text.begin(), text.end()), "boot\nboot\n") << log;
  // Remounted read-only before the end: nothing left in the journal to
  // replay (a root that was only synced still carries needs_recovery).
  const ProcessResult super = run_process({tool("dumpe2fs"), "-h", image}, std::chrono::seconds(60));
  ASSERT_EQ(super.exit_status, 0) << super.err;
  EXPECT_NE(super.out.find("Filesystem features:"), std::string::npos) << super.out;
  EXPECT_EQ(super.out.find("needs_recovery"), std::string::npos) << "the root was left mounted\n" << super.out;
  const ProcessResult fsck = run_process({tool("e2fsck"), "-fn", image}, std::chrono::seconds(60));
  EXPECT_EQ(fsck.exit_status, 0) << "the root was not left clean\n" << fsck.out << fsck.err;
}

// A root that cannot be mounted is the guest's failure, reported on the
// serial line and through the debug-exit port, not a hang or a panic.
TEST(LinuxDisk, ARootThatCannotBeMountedIsAReportedFailure) {
  VMM_REQUIRE_LINUX_GUEST();

  TempDir dir("vmm-linux-badroot");
  const std::string blank = dir.create("blank.img", 8 << 20);
  const ProcessResult run = run_process({VMM_BINARY, "run", "--kernel", kernel(), "--initrd", initramfs(),
                                         "--memory", "512M", "--cpus", "1", "--debug-exit", "--cmdline",
                                         std::string(kLinuxBaseCmdline) + " root=/dev/vda", "--disk", blank},
                                        std::chrono::seconds(900));
  const std::string log = "--- guest console ---\n" + run.out + "\n--- vmm stderr ---\n" + run.err;
  ASSERT_FALSE(run.timed_out) << log;
  // The init's failure: debug-exit value 1, which vmm reports as (1 << 1) | 1.
  EXPECT_EQ(run.exit_status, 3) << log;
  EXPECT_EQ(lines_with(run.out, "VMMCHECK root status=fail device=/dev/vda").size(), 1u) << log;
  EXPECT_EQ(lines_with(run.out, "vmm-initramfs: switching root").size(), 0u) << log;
}

// Power loss: the guest appends numbered records to a file on an ext4 disk,
// fsyncs after each and only then announces it on the serial line; the host
// stops the VM by force (vmm ctl stop --force) at a random moment of that
// loop, over and over on the same image. After each stop, replaying the
// journal (and nothing else) must leave a file system e2fsck finds clean,
// and every record the guest announced must be in the file, in order: a
// flush completes to the guest only after fdatasync on the host, and a force
// stop waits for what is in flight at io_uring. VMM_POWER_LOSS_CYCLES sets
// how many stops (default 3; the README gives a 100-stop run), and
// VMM_POWER_LOSS_SEED replays a run's moments.
TEST(LinuxDisk, ForcedStopsInAnFsyncLoopLoseNothingTheGuestSawFlushed) {
  VMM_REQUIRE_LINUX_GUEST();
  const char* cycles_env = std::getenv("VMM_POWER_LOSS_CYCLES");
  const unsigned cycles = cycles_env && *cycles_env ? static_cast<unsigned>(std::stoul(cycles_env)) : 3;
  const char* seed_env = std::getenv("VMM_POWER_LOSS_SEED");
  const std::uint64_t seed = seed_env && *seed_env ? std::stoull(seed_env) : std::random_device{}();
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 random(seed);

  TempDir dir("vmm-linux-power-loss");
  const std::string image = dir.file("disk.ext4");
  const ProcessResult mkfs = make_ext4_with_script(
      dir, "writer.sh",
      "c=$1; i=0\n"
      "while :; do\n"
      "  i=$((i + 1))\n"
      "  echo \"c$c r$i\" >> /mnt/log.txt && sync /mnt/log.txt && echo \"VMMFLUSHED c$c r$i\"\n"
      "done\n",
      image, "32M");
  ASSERT_EQ(mkfs.exit_status, 0) << "mke2fs: " << mkfs.err;

  for (unsigned cycle = 1; cycle <= cycles; ++cycle) {
    SCOPED_TRACE("stop " + std::to_string(cycle) + " of " + std::to_string(cycles) + ", seed " +
                 std::to_string(seed));
    const std::string serial = dir.file("serial-" + std::to_string(cycle) + ".txt");
    const std::string socket = dir.file("vm.sock");
    const std::string cmdline = std::string(kLinuxBaseCmdline) +
                                " vmm.run=mkdir,-p,/mnt vmm.run=mount,-t,ext4,/dev/vda,/mnt"
                                " vmm.run=sh,/mnt/writer.sh," + std::to_string(cycle);
    ProcessResult run;
    std::thread runner([&] {
      run = run_process({VMM_BINARY, "run", "--kernel", kernel(), "--initrd", initramfs(), "--memory", "256M",
                         "--cpus", "1", "--serial", "file:" + serial, "--control", socket, "--cmdline", cmdline,
                         "--disk", image},
                        std::chrono::seconds(300));
    });
    // Any announced record (the console ends its lines with \r\n).
    const bool writing =
        wait_for_serial(serial, "VMMFLUSHED c" + std::to_string(cycle) + " r", std::chrono::seconds(240));
    // The random moment of the loop at which the power goes.
    std::this_thread::sleep_for(std::chrono::milliseconds(random() % 2000));
    const ProcessResult stop = run_process({VMM_BINARY, "ctl", socket, "stop", "--force"});
    runner.join();
    const std::string console = read_serial(serial);
    const std::string log = "--- guest console ---\n" + console + "\n--- vmm stderr ---\n" + run.err;
    ASSERT_TRUE(writing) << "the guest never started writing\n" << log;
    ASSERT_EQ(stop.exit_status, 0) << stop.out << stop.err;
    ASSERT_FALSE(run.timed_out) << log;
    ASSERT_EQ(run.exit_status, 8) << "stopped by the host\n" << log;

    // The last record the guest announced complete (a line cut short by the
    // stop does not count).
    unsigned announced = 0;
    const std::string prefix = "VMMFLUSHED c" + std::to_string(cycle) + " r";
    std::istringstream lines(console);
    for (std::string line; std::getline(lines, line);) {
      if (lines.eof()) break;  // no newline after it
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.rfind(prefix, 0) == 0) announced = static_cast<unsigned>(std::stoul(line.substr(prefix.size())));
    }
    ASSERT_GT(announced, 0u) << log;

    // Replay the journal, nothing more; then the file system must be clean.
    const ProcessResult replay = run_process({tool("e2fsck"), "-E", "journal_only", "-y", image},
                                             std::chrono::seconds(60));
    ASSERT_LE(replay.exit_status, 1) << replay.out << replay.err;
    const ProcessResult fsck = run_process({tool("e2fsck"), "-fn", image}, std::chrono::seconds(60));
    ASSERT_EQ(fsck.exit_status, 0) << "not clean after the journal replay\n" << fsck.out << fsck.err;

    // Every announced record of this stop, in order, right after one another;
    // records after them (flushed, not yet announced) may follow.
    const std::string dumped = dir.file("log.txt");
    const ProcessResult dump = run_process({tool("debugfs"), "-R", "dump /log.txt " + dumped, image});
    ASSERT_EQ(dump.exit_status, 0) << dump.err;
    const std::vector<std::uint8_t> file_bytes = read_file(dumped);
    std::vector<std::string> records;
    std::istringstream file(std::string(file_bytes.begin(), file_bytes.end()));
    for (std::string line; std::getline(file, line);) records.push_back(line);
    const std::string mine = "c" + std::to_string(cycle) + " r";
    std::size_t at = 0;
    while (at < records.size() && records[at] != mine + "1") ++at;
    ASSERT_LT(at, records.size()) << "no record of this stop on the disk\n" << log;
    for (unsigned i = 1; i <= announced; ++i, ++at) {
      ASSERT_LT(at, records.size()) << "record " << i << " of " << announced << " announced is lost";
      ASSERT_EQ(records[at], mine + std::to_string(i)) << "record " << i << " of " << announced;
    }
  }
}

}  // namespace
}  // namespace vmm::testing
