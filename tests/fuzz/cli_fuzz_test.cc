// The command-line fuzz entry point on real command lines and on
// deterministic mutations of them (arguments dropped, repeated, swapped for
// option names and hostile values), in every build. VMM_FUZZ_WRITE_SEEDS=DIR
// writes the unmutated inputs there (how tests/fuzz/corpus/cli/seed-* were
// made).
#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/fuzz/cli_fuzz.h"
#include "tests/fuzz/corpus.h"
#include "vmm/cli.h"

namespace vmm::fuzz {
namespace {

const std::vector<std::vector<std::string>> kCommandLines = {
    {"run", "--kernel", "bzImage", "--initrd", "initramfs.cpio.gz", "--cmdline", "console=ttyS0", "--cpus", "2",
     "--memory", "512M"},
    {"run", "--kernel", "k", "--serial", "file:/tmp/out", "--no-reboot", "--no-hpet", "--log-level", "debug",
     "--control", "/tmp/s", "--irqchip", "userspace"},
    {"run", "--kernel", "k", "--disk", "root.img,readonly,serial=vda", "--disk", "data.img", "--debug-exit"},
    {"ctl", "/tmp/vm.sock", "stop", "--force"},
    {"ctl", "/tmp/vm.sock", "status"},
    {"--help"},
    {"--version"},
    {"run", "--help"},
};

const std::array<std::string, 24> kTokens = {
    "--kernel", "--initrd", "--cmdline", "--cpus", "--memory", "--serial", "--disk", "--control", "--irqchip",
    "--log-level", "0", "-1", "4294967297", "99999999999999999999G", "1T", "0x10", "", "=", ",readonly,,",
    "serial=" + std::string(40, 'x'), "file:", "\xff\xfe", std::string(5000, 'a'), "run"};

TEST(CliFuzz, RealCommandLinesParse) {
  for (const auto& args : kCommandLines) {
    EXPECT_NO_THROW(parse_command_line(args)) << args.front() << " " << (args.size() > 1 ? args[1] : "");
    const std::vector<std::uint8_t> input = cli_input(args);
    EXPECT_EQ(cli_arguments(input.data(), input.size()), args);
    EXPECT_EQ(fuzz_cli(input.data(), input.size()), 0);
  }
  if (const char* dir = std::getenv("VMM_FUZZ_WRITE_SEEDS")) {
    for (std::size_t i = 0; i < kCommandLines.size(); ++i) {
      const std::vector<std::uint8_t> input = cli_input(kCommandLines[i]);
      std::ofstream out(std::filesystem::path(dir) / ("seed-" + std::to_string(i + 1)), std::ios::binary);
      out.write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
    }
  }
}

TEST(CliFuzz, MutatedCommandLinesParseOrFailInOneLine) {
  std::mt19937_64 rng(0x5EED'0C11);
  std::size_t parsed = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::string> args = kCommandLines[rng() % kCommandLines.size()];
    for (int edits = 1 + static_cast<int>(rng() % 3); edits > 0; --edits) {
      const std::size_t at = rng() % (args.size() + 1);
      switch (rng() % 4) {
        case 0:
          if (at < args.size()) args.erase(args.begin() + static_cast<std::ptrdiff_t>(at));
          break;
        case 1:
          args.insert(args.begin() + static_cast<std::ptrdiff_t>(at), kTokens[rng() % kTokens.size()]);
          break;
        case 2:
          if (at < args.size()) args[at] = kTokens[rng() % kTokens.size()];
          break;
        default:
          if (at < args.size()) args.insert(args.begin() + static_cast<std::ptrdiff_t>(at), args[at]);
          break;
      }
    }
    const std::vector<std::uint8_t> input = cli_input(args);
    ASSERT_EQ(fuzz_cli(input.data(), input.size()), 0);
    try {
      parse_command_line(cli_arguments(input.data(), input.size()));
      ++parsed;
    } catch (const UsageError&) {
      ++refused;
    }
  }
  // Both outcomes, or the mutations prove little.
  EXPECT_GT(parsed, 1000u) << refused;
  EXPECT_GT(refused, 1000u) << parsed;
}

TEST(CliFuzz, TheCorpusReplays) {
  const std::vector<CorpusInput> corpus = read_corpus("cli");
  for (const CorpusInput& input : corpus) ASSERT_EQ(fuzz_cli(input.bytes.data(), input.bytes.size()), 0) << input.path;
  EXPECT_GE(corpus.size(), kCommandLines.size()) << "the corpus is missing";
}

}  // namespace
}  // namespace vmm::fuzz
