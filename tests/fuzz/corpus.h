// The tree's fuzz corpus (tests/fuzz/corpus/<target>/), for the gtest
// drivers that replay it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>
#include <vector>

namespace vmm::fuzz {

struct CorpusInput {
  std::filesystem::path path;
  std::vector<std::uint8_t> bytes;
};

// Every input of `target`, or none when its folder is missing.
inline std::vector<CorpusInput> read_corpus(std::string_view target) {
  std::vector<CorpusInput> inputs;
  const std::filesystem::path folder = std::filesystem::path(VMM_FUZZ_CORPUS) / target;
  if (!std::filesystem::is_directory(folder)) return inputs;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    std::ifstream in(entry.path(), std::ios::binary);
    inputs.push_back({entry.path(), std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)),
                                                               std::istreambuf_iterator<char>())});
  }
  return inputs;
}

}  // namespace vmm::fuzz
