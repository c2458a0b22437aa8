// Fuzz entry point of the command line, shared by libFuzzer (VMM_FUZZ=ON)
// and the gtest driver.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vmm::fuzz {

// Splits `data` at NUL bytes into at most 64 arguments and parses them as
// `vmm`'s command line (parse_command_line), and the first one as a --disk
// and a --memory value. Every outcome must be a result or a UsageError
// with a one-line, non-empty message; a parsed `run` must carry a kernel,
// at least one vCPU and memory. Anything else prints what broke and aborts.
// Returns 0.
int fuzz_cli(const std::uint8_t* data, std::size_t size);

// The arguments an input stands for, and the input for some arguments.
std::vector<std::string> cli_arguments(const std::uint8_t* data, std::size_t size);
std::vector<std::uint8_t> cli_input(const std::vector<std::string>& args);

}  // namespace vmm::fuzz
