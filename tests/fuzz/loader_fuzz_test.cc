// The loader fuzz entry point on synthetic bzImage and PVH images that load,
// and on deterministic mutations of them (bytes flipped in the headers and
// anywhere, truncations), in every build. VMM_FUZZ_WRITE_SEEDS=DIR writes the
// unmutated inputs there (how tests/fuzz/corpus/loader/seed-* were made).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/boot/test_support.h"
#include "tests/fuzz/corpus.h"
#include "tests/fuzz/loader_fuzz.h"

namespace vmm::fuzz {
namespace {

using boot::test::Bytes;

std::vector<Bytes> base_inputs() {
  boot::test::BzImageSpec bz;
  const Bytes bzimage = boot::test::make_bzimage(bz);
  boot::test::ElfSpec elf;
  elf.segments.push_back({0x100000, boot::test::pattern(4096, 7), 0x3000});
  elf.segments.push_back({0x104000, boot::test::pattern(512, 9), 512});
  elf.pvh_entry = 0x100000;
  const Bytes pvh = boot::test::make_elf(elf);
  boot::test::ElfSpec elf32 = elf;
  elf32.is_64bit = false;
  const Bytes pvh32 = boot::test::make_elf(elf32);
  const Bytes initrd = boot::test::pattern(8192, 3);
  return {
      loader_input(0, true, "console=ttyS0", bzimage, std::nullopt),
      loader_input(1, true, "console=ttyS0 quiet", bzimage, initrd),
      loader_input(3, false, std::string(2000, 'x'), bzimage, initrd),
      loader_input(0, true, "", pvh, std::nullopt),
      loader_input(2, true, "root=/dev/vda", pvh, initrd),
      loader_input(1, false, "console=ttyS0", pvh32, initrd),
  };
}

TEST(LoaderFuzz, TheSyntheticImagesLoad) {
  const std::vector<Bytes> inputs = base_inputs();
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(load_fuzz_input(inputs[i].data(), inputs[i].size()), LoadOutcome::kLoaded) << "input " << i;
  }
  if (const char* dir = std::getenv("VMM_FUZZ_WRITE_SEEDS")) {
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      std::ofstream out(std::filesystem::path(dir) / ("seed-" + std::to_string(i + 1)), std::ios::binary);
      out.write(reinterpret_cast<const char*>(inputs[i].data()), static_cast<std::streamsize>(inputs[i].size()));
    }
  }
}

TEST(LoaderFuzz, MutationsAreLoadedOrRefusedCleanly) {
  std::mt19937_64 rng(0x5EED'B007);
  std::size_t loaded = 0, refused = 0;
  for (const Bytes& base : base_inputs()) {
    for (int i = 0; i < 500; ++i) {
      Bytes input = base;
      const unsigned shape = static_cast<unsigned>(rng() % 4);
      if (shape == 3) {
        input.resize(rng() % input.size());
      } else {
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
          // Mostly the control bytes and the image headers, where the parsing is.
          const std::size_t reach = shape == 0 ? input.size() : std::min<std::size_t>(input.size(), 2100 + 1024);
          input[rng() % reach] = static_cast<std::uint8_t>(rng());
        }
      }
      (load_fuzz_input(input.data(), input.size()) == LoadOutcome::kLoaded ? loaded : refused) += 1;
    }
  }
  // Both outcomes, or the mutations prove little.
  EXPECT_GT(loaded, 300u) << refused;
  std::printf("loaded %zu, refused %zu\n", loaded, refused);
  EXPECT_GT(refused, 300u) << loaded;
}

TEST(LoaderFuzz, TheCorpusReplays) {
  const std::vector<CorpusInput> corpus = read_corpus("loader");
  for (const CorpusInput& input : corpus) {
    ASSERT_EQ(fuzz_loader(input.bytes.data(), input.bytes.size()), 0) << input.path;
  }
  EXPECT_GE(corpus.size(), 6u) << "the corpus is missing";
}

}  // namespace
}  // namespace vmm::fuzz
