// Every device's fuzz entry point on seeded random inputs and on its corpus,
// in every build (the sanitizer builds included), so the targets libFuzzer
// runs are also regression tests.
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/fuzz/corpus.h"
#include "tests/fuzz/device_fuzz.h"

namespace vmm::fuzz {
namespace {

class DeviceFuzz : public ::testing::TestWithParam<FuzzedDevice> {};

TEST_P(DeviceFuzz, RandomInputs) {
  std::mt19937_64 rng(0x5EED'0D00 + static_cast<unsigned>(GetParam()));
  std::vector<std::uint8_t> input;
  for (int i = 0; i < 300; ++i) {
    input.resize(rng() % 1500);
    for (auto& b : input) b = static_cast<std::uint8_t>(rng());
    ASSERT_EQ(fuzz_device(GetParam(), input.data(), input.size()), 0) << "input " << i;
  }
  EXPECT_EQ(fuzz_device(GetParam(), nullptr, 0), 0) << "the empty input";
}

TEST_P(DeviceFuzz, TheCorpusReplays) {
  const std::vector<CorpusInput> corpus = read_corpus(name(GetParam()));
  for (const CorpusInput& input : corpus) {
    ASSERT_EQ(fuzz_device(GetParam(), input.bytes.data(), input.bytes.size()), 0) << input.path;
  }
  EXPECT_GT(corpus.size(), 0u) << "tests/fuzz/corpus/" << name(GetParam()) << " is missing or empty";
}

INSTANTIATE_TEST_SUITE_P(EveryDevice, DeviceFuzz, ::testing::ValuesIn(kFuzzedDevices),
                         [](const ::testing::TestParamInfo<FuzzedDevice>& param) {
                           return std::string(name(param.param));
                         });

}  // namespace
}  // namespace vmm::fuzz
