#include "tests/fuzz/cli_fuzz.h"

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "vmm/cli.h"

namespace vmm::fuzz {

namespace {

[[noreturn]] void violated(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "cli fuzz: invariant broken: %s %s\n", what, detail.c_str());
  std::abort();
}

// A usage error is one clear line: the user sees it and nothing else.
void check_message(const UsageError& e) {
  const std::string message = e.what();
  if (message.empty()) violated("an empty usage error");
  if (message.find('\n') != std::string::npos) violated("a usage error of more than one line:", message);
}

}  // namespace

std::vector<std::string> cli_arguments(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> args(1);
  for (std::size_t i = 0; i < size && args.size() <= 64; ++i) {
    if (data[i] == 0) {
      args.emplace_back();
    } else {
      args.back().push_back(static_cast<char>(data[i]));
    }
  }
  if (args.size() > 64) args.pop_back();
  return args;
}

std::vector<std::uint8_t> cli_input(const std::vector<std::string>& args) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (i != 0) out.push_back(0);
    out.insert(out.end(), args[i].begin(), args[i].end());
  }
  return out;
}

int fuzz_cli(const std::uint8_t* data, std::size_t size) {
  const std::vector<std::string> args = cli_arguments(data, size);
  try {
    const Command command = parse_command_line(args);
    if (command.kind == Command::Kind::run) {
      if (command.run.kernel.empty()) violated("a run without a kernel");
      if (command.run.cpus == 0) violated("a run without vCPUs");
      if (command.run.memory == 0) violated("a run without memory");
    }
  } catch (const UsageError& e) {
    check_message(e);
  } catch (const std::exception& e) {
    violated("an exception other than UsageError:", e.what());
  }
  try {
    parse_disk(args.front());
  } catch (const UsageError& e) {
    check_message(e);
  } catch (const std::exception& e) {
    violated("parse_disk threw something other than UsageError:", e.what());
  }
  try {
    if (parse_memory_size(args.front()) == 0) violated("a memory size of 0 accepted");
  } catch (const UsageError& e) {
    check_message(e);
  } catch (const std::exception& e) {
    violated("parse_memory_size threw something other than UsageError:", e.what());
  }
  return 0;
}

}  // namespace vmm::fuzz

#if defined(VMM_FUZZ_ENTRY)
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return vmm::fuzz::fuzz_cli(data, size);
}
#endif
