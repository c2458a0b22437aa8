// Command-line parsing, without KVM.
#include "vmm/cli.h"

#include <gtest/gtest.h>

namespace vmm {
namespace {

TEST(CliTest, RunWithEveryOption) {
  const Command c = parse_command_line({"run", "--kernel", "k", "--initrd", "i", "--cmdline", "console=ttyS0",
                                        "--cpus", "4", "--memory", "2G", "--serial", "file:/tmp/out",
                                        "--no-reboot", "--no-hpet", "--log-level", "debug", "--control", "/tmp/s",
                                        "--kvm-device", "/dev/kvm2"});
  ASSERT_EQ(c.kind, Command::Kind::run);
  EXPECT_EQ(c.run.kernel, "k");
  EXPECT_EQ(c.run.initrd, "i");
  EXPECT_EQ(c.run.cmdline, "console=ttyS0");
  EXPECT_EQ(c.run.cpus, 4u);
  EXPECT_EQ(c.run.memory, 2ull << 30);
  EXPECT_EQ(c.run.serial, SerialKind::file);
  EXPECT_EQ(c.run.serial_path, "/tmp/out");
  EXPECT_FALSE(c.run.reboot);
  EXPECT_FALSE(c.run.hpet);
  EXPECT_EQ(c.run.log_level, "debug");
  EXPECT_EQ(c.run.control, "/tmp/s");
  EXPECT_EQ(c.run.kvm_device, "/dev/kvm2");
}

TEST(CliTest, Defaults) {
  const Command c = parse_command_line({"run", "--kernel", "k"});
  EXPECT_EQ(c.run.cpus, 1u);
  EXPECT_EQ(c.run.memory, 256ull << 20);
  EXPECT_EQ(c.run.serial, SerialKind::stdio);
  EXPECT_TRUE(c.run.reboot);
  EXPECT_TRUE(c.run.hpet);
  EXPECT_EQ(c.run.kvm_device, "/dev/kvm");
  EXPECT_FALSE(c.run.userspace_irqchip);
  EXPECT_TRUE(c.run.seccomp);
}

TEST(CliTest, SeccompIsOnUnlessTurnedOff) {
  EXPECT_TRUE(parse_command_line({"run", "--kernel", "k", "--seccomp=on"}).run.seccomp);
  EXPECT_FALSE(parse_command_line({"run", "--kernel", "k", "--seccomp=off"}).run.seccomp);
  EXPECT_THROW(parse_command_line({"run", "--kernel", "k", "--seccomp=maybe"}), UsageError);
}

TEST(CliTest, IrqchipModes) {
  EXPECT_FALSE(parse_command_line({"run", "--kernel", "k", "--irqchip", "split"}).run.userspace_irqchip);
  EXPECT_TRUE(parse_command_line({"run", "--kernel", "k", "--irqchip", "userspace"}).run.userspace_irqchip);
  EXPECT_THROW(parse_command_line({"run", "--kernel", "k", "--irqchip", "kernel"}), UsageError);
}

TEST(CliTest, MemorySizes) {
  EXPECT_EQ(parse_memory_size("64"), 64ull << 20);
  EXPECT_EQ(parse_memory_size("64M"), 64ull << 20);
  EXPECT_EQ(parse_memory_size("64MiB"), 64ull << 20);
  EXPECT_EQ(parse_memory_size("65536k"), 64ull << 20);
  EXPECT_EQ(parse_memory_size("1g"), 1ull << 30);
  EXPECT_EQ(parse_memory_size("2T"), 2ull << 40);
  for (const char* bad : {"", "M", "0", "0G", "1.5G", "12Q", "-1", "99999999999999999999", "17179869184T", "5K"}) {
    EXPECT_THROW(parse_memory_size(bad), UsageError) << bad;
  }
}

TEST(CliTest, EveryBadCommandLineIsAUsageError) {
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"run"},
      {"run", "--kernel"},
      {"run", "--kernel", "k", "--cpus", "0"},
      {"run", "--kernel", "k", "--cpus", "many"},
      {"run", "--kernel", "k", "--cpus", "-3"},
      {"run", "--kernel", "k", "--memory", "0"},
      {"run", "--kernel", "k", "--serial", "file:"},
      {"run", "--kernel", "k", "--serial", "pty"},
      {"run", "--kernel", "k", "--log-level", "loud"},
      {"run", "--kernel", "k", "--frobnicate"},
      {"run", "--kernel", "k", "--disk"},
      {"run", "--kernel", "k", "--disk", ""},
      {"run", "--kernel", "k", "--disk", "d,ro"},
      {"run", "--kernel", "k", "--disk", "d,serial="},
      {"run", "--kernel", "k", "--disk", "d,serial=has space"},
      {"run", "--kernel", "k", "--disk", "d,queues="},
      {"run", "--kernel", "k", "--disk", "d,queues=0"},
      {"run", "--kernel", "k", "--disk", "d,queues=65"},
      {"run", "--kernel", "k", "--disk", "d,queues=2x"},
      {"run", "--kernel", "k", "--disk", "d,queues=-1"},
      {"run", "--kernel", "k", "--disk", "d,coalesce-us="},
      {"run", "--kernel", "k", "--disk", "d,coalesce-us=10001"},
      {"run", "--kernel", "k", "--disk", "d,coalesce-us=-5"},
      {"run", "--kernel", "k", "--disk", "d,coalesce-us=1ms"},
      {"run", "--kernel", "k", "--disk", "d,coalesce-us=Auto"},
      {"run", "--kernel", "k", "--disk", "a", "--disk", "b", "--disk", "c", "--disk", "d", "--disk", "e",
       "--disk", "f", "--disk", "g", "--disk", "h", "--disk", "i"},
      {"fly"},
  };
  for (const auto& args : bad) {
    try {
      parse_command_line(args);
      ADD_FAILURE() << "accepted: " << ::testing::PrintToString(args);
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()), "") << ::testing::PrintToString(args);
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
    }
  }
}

TEST(CliTest, Disks) {
  const Command c = parse_command_line({"run", "--kernel", "k", "--disk", "/a.img", "--disk",
                                        "/b.img,readonly,serial=SER-1", "--disk", "/c.img,serial=x,readonly"});
  ASSERT_EQ(c.run.disks.size(), 3u);
  EXPECT_EQ(c.run.disks[0].path, "/a.img");
  EXPECT_FALSE(c.run.disks[0].read_only);
  EXPECT_EQ(c.run.disks[0].serial, "");
  EXPECT_EQ(c.run.disks[1].path, "/b.img");
  EXPECT_TRUE(c.run.disks[1].read_only);
  EXPECT_EQ(c.run.disks[1].serial, "SER-1");
  EXPECT_TRUE(c.run.disks[2].read_only);
  EXPECT_EQ(c.run.disks[2].serial, "x");
  EXPECT_TRUE(parse_command_line({"run", "--kernel", "k"}).run.disks.empty());
  EXPECT_EQ(parse_disk("d,serial=12345678901234567890").serial, "12345678901234567890");
  EXPECT_EQ(c.run.disks[0].queues, 0u) << "one per vCPU unless told";
  EXPECT_EQ(parse_disk("d,queues=1").queues, 1u);
  EXPECT_EQ(parse_disk("d,readonly,queues=64").queues, 64u);
  EXPECT_EQ(c.run.disks[0].coalesce_us, kAutoDiskCoalesceCeilingUs) << "adaptive coalescing unless told";
  EXPECT_TRUE(c.run.disks[0].coalesce_follows_completions);
  EXPECT_EQ(parse_disk("d,coalesce-us=200").coalesce_us, 200u);
  EXPECT_FALSE(parse_disk("d,coalesce-us=200").coalesce_follows_completions) << "a number fixes the interval";
  EXPECT_EQ(parse_disk("d,coalesce-us=10000,queues=2").coalesce_us, 10000u);
  EXPECT_EQ(parse_disk("d,coalesce-us=0").coalesce_us, 0u) << "off";
  const DiskConfig automatic = parse_disk("d,coalesce-us=5,coalesce-us=auto");
  EXPECT_EQ(automatic.coalesce_us, kAutoDiskCoalesceCeilingUs);
  EXPECT_TRUE(automatic.coalesce_follows_completions);
}

TEST(CliTest, HelpAndVersion) {
  EXPECT_EQ(parse_command_line({"--help"}).kind, Command::Kind::help);
  EXPECT_EQ(parse_command_line({"run", "--help"}).kind, Command::Kind::help);
  const Command v = parse_command_line({"--version"});
  EXPECT_EQ(v.kind, Command::Kind::version);
  EXPECT_EQ(v.text.rfind("vmm ", 0), 0u);
}

// Found by the cli fuzz target: a message quoting an argument with a
// newline in it was two lines, and one with ESC could drive the terminal.
TEST(CliTest, UsageErrorsQuoteControlCharactersEscaped) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"run", "--kernel", "k", "--memory", "1\n2"},
        std::vector<std::string>{"run", "--kernel", "k", "--disk", "a,\x1b[2Jserial"},
        std::vector<std::string>{"run", "--kernel", "k", "--no-such\rthing"}}) {
    try {
      parse_command_line(args);
      ADD_FAILURE() << "accepted " << args.back();
    } catch (const UsageError& e) {
      const std::string message = e.what();
      for (const char c : message) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << message;
      EXPECT_TRUE(message.find("\\x0a") != std::string::npos || message.find("\\x1b") != std::string::npos ||
                  message.find("\\x0d") != std::string::npos)
          << message;
    }
  }
}

}  // namespace
}  // namespace vmm
