#include "tests/fuzz/control_fuzz.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "vmm/control.h"

namespace vmm::fuzz {

namespace {

[[noreturn]] void violated(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "control fuzz: invariant broken: %s %.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

}  // namespace

int fuzz_control(const std::uint8_t* data, std::size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  const ParsedControlRequest parsed = parse_control_request(line);
  if (parsed.request) {
    if (!parsed.error_reply.empty()) violated("a request and an error reply at once");
    if (!parsed.well_formed) violated("a request that is not well formed");
    const ControlRequest& request = *parsed.request;
    if (request.force && request.command != ControlRequest::Command::stop) violated("force on", to_string(request.command));
    if (!request.id.empty() && !nlohmann::json::accept(request.id)) violated("an id that is not JSON:", request.id);
    return 0;
  }
  const std::string& reply = parsed.error_reply;
  if (reply.empty()) violated("neither a request nor an error reply");
  if (reply.find('\n') != std::string::npos) violated("an error reply of more than one line:", reply);
  const nlohmann::json json = nlohmann::json::parse(reply, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) violated("an error reply that is not a JSON object:", reply);
  const auto ok = json.find("ok");
  if (ok == json.end() || *ok != false) violated("an error reply without \"ok\":false:", reply);
  const auto error = json.find("error");
  if (error == json.end() || !error->is_string() || error->get<std::string>().empty()) {
    violated("an error reply without an error message:", reply);
  }
  return 0;
}

}  // namespace vmm::fuzz

#if defined(VMM_FUZZ_ENTRY)
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return vmm::fuzz::fuzz_control(data, size);
}
#endif
