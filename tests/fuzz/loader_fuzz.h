// Fuzz entry point of the kernel loaders (bzImage, PVH ELF, initrd and
// command line), shared by libFuzzer (VMM_FUZZ=ON) and the gtest driver.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vmm::fuzz {

// Input: byte 0 bits 0-1 the vCPU count (1, 2, 4, 16), bit 2 no HPET, bit 3
// an initrd; bytes 1-2 the command line's length; bytes 3-6 the kernel's
// length; then the command line, the kernel and (the rest) the initrd.
// Loads them into 32 MiB of guest memory through boot::load, as `vmm run`
// does. Every outcome must be a BootImage or a vmm::Error; a loaded image
// must keep its kernel, command line, initrd, boot information and entry
// point inside guest RAM, and its initrd apart from the kernel. Anything
// else prints what broke and aborts. Returns 0.
int fuzz_loader(const std::uint8_t* data, std::size_t size);

// The same, telling which way it went (for tests that must see both).
enum class LoadOutcome { kLoaded, kRefused };
LoadOutcome load_fuzz_input(const std::uint8_t* data, std::size_t size);

// An input in the format above, from its parts.
std::vector<std::uint8_t> loader_input(unsigned cpus_code, bool hpet, const std::string& cmdline,
                                       const std::vector<std::uint8_t>& kernel,
                                       const std::optional<std::vector<std::uint8_t>>& initrd);

}  // namespace vmm::fuzz
