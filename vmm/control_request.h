// The control socket's requests (one JSON object a line; vmm/control.h has
// the protocol): reading one line into a request or an error reply. No VM
// and no socket here, so that what a client can send is tested (and
// fuzzed) on its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace vmm {

// What a well-formed request asks for.
struct ControlRequest {
  enum class Command : std::uint8_t { status, vcpus, pause, resume, reset, stop };
  Command command = Command::status;
  bool force = false;
  std::string id;  // the request's "id" as JSON text, echoed in the reply; empty when absent
};
struct ParsedControlRequest {
  std::optional<ControlRequest> request;
  // Without a request: the reply line to send (one line, a JSON object with
  // "ok":false and an "error" string).
  std::string error_reply;
  // The line was a well-formed request object; only its "cmd" is unknown
  // (or it parsed). A full server answers nothing but a forced stop, and
  // stays silent on well-formed requests it does not serve.
  bool well_formed = false;
};
// Reads one request line (without its newline; a trailing CR is ignored).
ParsedControlRequest parse_control_request(std::string_view line) noexcept;
const char* to_string(ControlRequest::Command command) noexcept;

// {"ok":false,"error":message} with the request's id (JSON text) when it
// had one: one line, whatever bytes the message quotes.
std::string control_error_reply(std::string_view message, std::string_view id_json = {});

}  // namespace vmm
