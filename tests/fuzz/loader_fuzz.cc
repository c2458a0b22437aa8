#include "tests/fuzz/loader_fuzz.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "devices/error.h"
#include "devices/guest_memory.h"
#include "vmm/boot/image_file.h"
#include "vmm/boot/loader.h"

namespace vmm::fuzz {

namespace {

constexpr std::uint64_t kGuestMemory = 32ull << 20;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "loader fuzz: invariant broken: %s\n", what);
  std::abort();
}

bool in_ram(const devices::GuestMemory& memory, std::uint64_t address, std::uint64_t size) {
  for (const auto& region : memory.regions()) {
    if (address >= region.guest_address && size <= region.size &&
        address - region.guest_address <= region.size - size) {
      return true;
    }
  }
  return false;
}

}  // namespace

int fuzz_loader(const std::uint8_t* data, std::size_t size) {
  load_fuzz_input(data, size);
  return 0;
}

std::vector<std::uint8_t> loader_input(unsigned cpus_code, bool hpet, const std::string& cmdline,
                                       const std::vector<std::uint8_t>& kernel,
                                       const std::optional<std::vector<std::uint8_t>>& initrd) {
  std::vector<std::uint8_t> out;
  out.push_back(static_cast<std::uint8_t>((cpus_code & 3) | (hpet ? 0 : 4) | (initrd ? 8 : 0)));
  out.push_back(static_cast<std::uint8_t>(cmdline.size()));
  out.push_back(static_cast<std::uint8_t>(cmdline.size() >> 8));
  for (unsigned shift = 0; shift < 32; shift += 8) out.push_back(static_cast<std::uint8_t>(kernel.size() >> shift));
  out.insert(out.end(), cmdline.begin(), cmdline.end());
  out.insert(out.end(), kernel.begin(), kernel.end());
  if (initrd) out.insert(out.end(), initrd->begin(), initrd->end());
  return out;
}

LoadOutcome load_fuzz_input(const std::uint8_t* data, std::size_t size) {
  // Not discarded between inputs: the loaders only write guest memory, so
  // what an earlier input left there cannot change an outcome, and faulting
  // 32 MiB back in for every input would cost most of the run.
  static devices::GuestMemory memory = devices::GuestMemory::allocate(kGuestMemory);
  auto byte = [&](std::size_t i) -> std::uint8_t { return i < size ? data[i] : 0; };
  static constexpr unsigned kCpus[] = {1, 2, 4, 16};
  boot::BootConfig config;
  config.kernel = "fuzz-kernel";
  config.cpus = kCpus[byte(0) & 3];
  config.hpet = (byte(0) & 4) == 0;
  const bool with_initrd = (byte(0) & 8) != 0;
  std::size_t at = 7;
  const std::size_t cmdline_size = std::min<std::size_t>(byte(1) | byte(2) << 8, size > at ? size - at : 0);
  config.cmdline.assign(reinterpret_cast<const char*>(data) + (size > at ? at : 0), cmdline_size);
  at += cmdline_size;
  const std::size_t rest = size > at ? size - at : 0;
  const std::size_t kernel_size =
      std::min<std::size_t>(static_cast<std::size_t>(byte(3) | byte(4) << 8 | byte(5) << 16 | std::uint32_t{byte(6)} << 24),
                            rest);
  std::vector<std::uint8_t> kernel(data + at, data + at + kernel_size);
  at += kernel_size;
  std::vector<std::uint8_t> initrd(data + std::min(at, size), data + size);

  boot::BootFiles files{boot::ImageFile::from_bytes("fuzz-kernel", "kernel", std::move(kernel)), std::nullopt};
  if (with_initrd) {
    config.initrd = "fuzz-initrd";
    files.initrd = boot::ImageFile::from_bytes("fuzz-initrd", "initrd", std::move(initrd));
  }
  std::optional<boot::BootImage> image;
  try {
    image = boot::load(memory, config, files);
  } catch (const Error&) {
    return LoadOutcome::kRefused;  // refused, with a message: the expected outcome for most inputs
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loader fuzz: %s\n", e.what());
    violated("an exception other than vmm::Error");
  }
  if (!in_ram(memory, image->kernel.address, image->kernel.size)) violated("the kernel outside guest RAM");
  if (!in_ram(memory, image->cmdline.address, image->cmdline.size)) violated("the command line outside guest RAM");
  if (image->cmdline.size != config.cmdline.size() + 1) {
    violated("the command line was cut or padded");
  }
  if (!in_ram(memory, image->boot_info, 1)) violated("the boot information outside guest RAM");
  if (!in_ram(memory, image->entry_point, 1)) violated("an entry point outside guest RAM");
  if (with_initrd != image->initrd.has_value()) violated("an initrd lost or invented");
  if (image->initrd) {
    if (!in_ram(memory, image->initrd->address, image->initrd->size)) violated("the initrd outside guest RAM");
    if (image->initrd->overlaps(image->kernel)) violated("the initrd over the kernel");
  }
  return LoadOutcome::kLoaded;
}

}  // namespace vmm::fuzz

#if defined(VMM_FUZZ_ENTRY)
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return vmm::fuzz::fuzz_loader(data, size);
}
#endif
