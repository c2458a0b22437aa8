// The control-stream fuzz entry point on hand-made client lives (each
// reaching one of the connection's ways to end), on seeded random streams
// and on its corpus, in every build.
// VMM_FUZZ_WRITE_SEEDS=DIR writes the hand-made lives there (how
// tests/fuzz/corpus/control_stream/seed-* were made).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/fuzz/control_stream_fuzz.h"
#include "tests/fuzz/corpus.h"

namespace vmm::fuzz {
namespace {

std::vector<std::uint8_t> bytes(std::initializer_list<int> values, const std::string& tail = {}) {
  std::vector<std::uint8_t> out;
  for (int v : values) out.push_back(static_cast<std::uint8_t>(v));
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

// Operations (see fuzz_control_stream): 0 receive N bytes, 1 receive N*64
// copies of a byte, 2 time passes (ms, 16 bits), 3 the peer reads (bytes,
// 16 bits), 4 end of input, 5 hang-up, 6 a canned request by index.
std::vector<std::vector<std::uint8_t>> seeds() {
  const std::string pipelined = "{\"cmd\":\"status\"}\n{\"cmd\":\"pause\",\"id\":1}\n{\"cmd\":\"res";
  return {
      bytes({0, 6, 0, 3, 0xff, 0xff}),                                     // one status, replies read
      bytes({0, 0, static_cast<int>(pipelined.size())}, pipelined),        // two and a half requests...
      bytes({0, 0, 8, 'u', 'm', 'e', '"', '}', '\n', '{', '"', 4, 3, 0xff, 0xff}),  // ...the rest, a partial line, EOF
      bytes({0, 1, 70, 'a'}),                                              // a line over the limit
      bytes({1, 6, 5}),                                                    // overflow: a forced stop
      bytes({1, 6, 0}),                                                    // overflow: anything else
      bytes({1, 2, 0xe8, 0x03}),                                           // overflow: silent for its grace
      bytes({0, 2, 0xb8, 0x0b, 3, 0xff, 0xff}),                            // idle for the timeout
      bytes({0, 1, 0xff, '\n'}),                                           // replies back up unread
      bytes({0, 6, 1, 6, 2, 6, 3, 6, 4, 6, 6, 6, 7, 6, 8, 5}),             // every canned line, then a hang-up
  };
}

int play(const std::vector<std::uint8_t>& input) { return fuzz_control_stream(input.data(), input.size()); }

TEST(ControlStreamFuzz, HandMadeLivesPlay) {
  for (const auto& seed : seeds()) ASSERT_EQ(play(seed), 0);
  if (const char* dir = std::getenv("VMM_FUZZ_WRITE_SEEDS")) {
    const auto all = seeds();
    for (std::size_t i = 0; i < all.size(); ++i) {
      std::ofstream out(std::filesystem::path(dir) / ("seed-" + std::to_string(i + 1)), std::ios::binary);
      out.write(reinterpret_cast<const char*>(all[i].data()), static_cast<std::streamsize>(all[i].size()));
    }
  }
}

TEST(ControlStreamFuzz, RandomStreams) {
  std::mt19937_64 rng(0x5EED'57EA);
  // Request-shaped bytes more often than not, so lines form and execute.
  const std::string alphabet = "{}\":,\n\n\n\r cmdstatuspausereumeopforcetrueid0123456789\x01\xff";
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::uint8_t> input(1 + rng() % 160);
    for (std::uint8_t& b : input) {
      b = rng() % 3 == 0 ? static_cast<std::uint8_t>(rng()) : static_cast<std::uint8_t>(alphabet[rng() % alphabet.size()]);
    }
    ASSERT_EQ(play(input), 0);
  }
}

TEST(ControlStreamFuzz, TheCorpusReplays) {
  const std::vector<CorpusInput> corpus = read_corpus("control_stream");
  for (const CorpusInput& input : corpus) {
    ASSERT_EQ(fuzz_control_stream(input.bytes.data(), input.bytes.size()), 0) << input.path;
  }
  EXPECT_GE(corpus.size(), seeds().size()) << "the corpus is missing";
}

}  // namespace
}  // namespace vmm::fuzz
