// The control request parser's fuzz entry point on real requests, on
// deterministic mutations of them, and on its corpus, in every build; and
// what the parser makes of the requests the protocol defines.
// VMM_FUZZ_WRITE_SEEDS=DIR writes the real requests there (how
// tests/fuzz/corpus/control/seed-* were made).
#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/fuzz/control_fuzz.h"
#include "tests/fuzz/corpus.h"
#include "vmm/control.h"

namespace vmm::fuzz {
namespace {

const std::vector<std::string> kRequests = {
    R"({"cmd":"status"})",
    R"({"cmd":"pause","id":1})",
    R"({"cmd":"resume","id":"a"})",
    R"({"cmd":"reset"})",
    R"({"cmd":"stop"})",
    R"({"cmd":"stop","force":true,"id":[1,{"x":null}]})",
    "{\"cmd\":\"status\"}\r",
};

TEST(ControlFuzz, TheProtocolsRequestsParse) {
  using Command = ControlRequest::Command;
  const std::array<Command, 7> commands = {Command::status, Command::pause, Command::resume, Command::reset,
                                           Command::stop,   Command::stop,  Command::status};
  for (std::size_t i = 0; i < kRequests.size(); ++i) {
    const ParsedControlRequest parsed = parse_control_request(kRequests[i]);
    ASSERT_TRUE(parsed.request.has_value()) << kRequests[i] << ": " << parsed.error_reply;
    EXPECT_EQ(parsed.request->command, commands[i]) << kRequests[i];
  }
  const ParsedControlRequest forced = parse_control_request(kRequests[5]);
  EXPECT_TRUE(forced.request->force);
  EXPECT_EQ(forced.request->id, R"([1,{"x":null}])");
  if (const char* dir = std::getenv("VMM_FUZZ_WRITE_SEEDS")) {
    for (std::size_t i = 0; i < kRequests.size(); ++i) {
      std::ofstream out(std::filesystem::path(dir) / ("seed-" + std::to_string(i + 1)), std::ios::binary);
      out << kRequests[i];
    }
  }
}

TEST(ControlFuzz, BadRequestsGetOneLineErrorsThatEchoTheId) {
  struct Case {
    std::string line, error_part;
    bool well_formed;
  };
  const std::vector<Case> cases = {
      {"", "empty", false},
      {"{", "parse error", false},
      {"[1]", "JSON object", false},
      {R"({"cmd":"status","extra":1,"id":5})", "unknown field", false},
      {R"({"id":5})", "missing", false},
      {R"({"cmd":7,"id":5})", "must be a string", false},
      {R"({"cmd":"pause","force":true,"id":5})", "applies only to stop", false},
      {R"({"cmd":"stop","force":"yes","id":5})", "true or false", false},
      {R"({"cmd":"reboot","id":5})", "unknown command", true},
  };
  for (const Case& c : cases) {
    const ParsedControlRequest parsed = parse_control_request(c.line);
    EXPECT_FALSE(parsed.request.has_value()) << c.line;
    EXPECT_NE(parsed.error_reply.find(c.error_part), std::string::npos) << c.line << " -> " << parsed.error_reply;
    EXPECT_EQ(parsed.well_formed, c.well_formed) << c.line;
    if (c.line.find("\"id\":5") != std::string::npos) {
      EXPECT_NE(parsed.error_reply.find("\"id\":5"), std::string::npos) << parsed.error_reply;
    }
    EXPECT_EQ(fuzz_control(reinterpret_cast<const std::uint8_t*>(c.line.data()), c.line.size()), 0);
  }
}

TEST(ControlFuzz, MutatedRequests) {
  std::mt19937_64 rng(0x5EED'C7A1);
  const std::string alphabet = "{}[]\":,\\ \t\r\n0123456789-+.eEtruefalsnl\x01\x7f\xc3\xa9\xff";
  std::size_t parsed = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string line = kRequests[rng() % kRequests.size()];
    for (int edits = 1 + static_cast<int>(rng() % 3); edits > 0; --edits) {
      const std::size_t at = rng() % (line.size() + 1);
      switch (rng() % 3) {
        case 0:
          if (at < line.size()) line.erase(at, 1 + rng() % 4);
          break;
        case 1:
          line.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          if (at < line.size()) line[at] = alphabet[rng() % alphabet.size()];
          break;
      }
    }
    ASSERT_EQ(fuzz_control(reinterpret_cast<const std::uint8_t*>(line.data()), line.size()), 0);
    (parse_control_request(line).request ? parsed : refused) += 1;
  }
  // Both outcomes, or the mutations prove little (most edits break the JSON).
  EXPECT_GT(parsed, 300u) << refused;
  EXPECT_GT(refused, 10000u) << parsed;
}

TEST(ControlFuzz, TheCorpusReplays) {
  const std::vector<CorpusInput> corpus = read_corpus("control");
  for (const CorpusInput& input : corpus) {
    ASSERT_EQ(fuzz_control(input.bytes.data(), input.bytes.size()), 0) << input.path;
  }
  EXPECT_GE(corpus.size(), kRequests.size()) << "the corpus is missing";
}

}  // namespace
}  // namespace vmm::fuzz
