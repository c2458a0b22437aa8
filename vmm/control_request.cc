#include "vmm/control_request.h"

#include <exception>
#include <nlohmann/json.hpp>

namespace vmm {

namespace {

using nlohmann::json;

std::string dump(const json& value) {
  // Replace, not throw: an error message may quote bytes the client sent,
  // and those need not be UTF-8.
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string error_reply(std::string_view message, const json* id = nullptr) {
  json reply = {{"ok", false}, {"error", std::string(message)}};
  if (id != nullptr) reply["id"] = *id;
  return dump(reply);
}

std::string parse_error_text(const std::exception& e) {
  // "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
  std::string text = e.what();
  if (const std::size_t close = text.find("] "); text.rfind("[json.exception", 0) == 0 && close != std::string::npos) {
    text.erase(0, close + 2);
  }
  if (text.size() > 200) text.resize(200);
  return "invalid JSON: " + text;
}

std::optional<ControlRequest::Command> command_named(std::string_view name) {
  using Command = ControlRequest::Command;
  for (Command c : {Command::status, Command::vcpus, Command::pause, Command::resume, Command::reset, Command::stop}) {
    if (name == to_string(c)) return c;
  }
  return std::nullopt;
}

}  // namespace

std::string control_error_reply(std::string_view message, std::string_view id_json) {
  if (id_json.empty()) return error_reply(message);
  const json id = json::parse(id_json, nullptr, /*allow_exceptions=*/false);
  return error_reply(message, id.is_discarded() ? nullptr : &id);
}

const char* to_string(ControlRequest::Command command) noexcept {
  switch (command) {
    case ControlRequest::Command::status: return "status";
    case ControlRequest::Command::vcpus: return "vcpus";
    case ControlRequest::Command::pause: return "pause";
    case ControlRequest::Command::resume: return "resume";
    case ControlRequest::Command::reset: return "reset";
    case ControlRequest::Command::stop: return "stop";
  }
  return "unknown";
}

ParsedControlRequest parse_control_request(std::string_view line) noexcept {
  ParsedControlRequest out;
  try {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      out.error_reply = error_reply("empty request line");
      return out;
    }
    json request;
    try {
      request = json::parse(line);
    } catch (const json::parse_error& e) {
      out.error_reply = error_reply(parse_error_text(e));
      return out;
    }
    if (!request.is_object()) {
      out.error_reply = error_reply("a request must be a JSON object, such as {\"cmd\":\"status\"}");
      return out;
    }
    const json* id = nullptr;
    if (auto it = request.find("id"); it != request.end()) id = &*it;
    auto refuse = [&](const std::string& why) {
      out.error_reply = error_reply(why, id);
      return out;
    };
    for (const auto& [key, value] : request.items()) {
      if (key != "cmd" && key != "force" && key != "id") return refuse("unknown field \"" + key + "\"");
    }
    const auto cmd_it = request.find("cmd");
    if (cmd_it == request.end()) return refuse("missing \"cmd\"");
    if (!cmd_it->is_string()) return refuse("\"cmd\" must be a string");
    const std::string cmd = cmd_it->get<std::string>();
    ControlRequest parsed;
    if (auto it = request.find("force"); it != request.end()) {
      if (!it->is_boolean()) return refuse("\"force\" must be true or false");
      if (cmd != "stop") return refuse("\"force\" applies only to stop");
      parsed.force = it->get<bool>();
    }
    out.well_formed = true;
    const std::optional<ControlRequest::Command> command = command_named(cmd);
    if (!command) return refuse("unknown command \"" + cmd + "\" (known: status, pause, resume, reset, stop)");
    parsed.command = *command;
    if (id != nullptr) parsed.id = dump(*id);
    out.request = parsed;
  } catch (...) {
    out.request.reset();
    out.error_reply = R"({"ok":false,"error":"internal error"})";
  }
  return out;
}

}  // namespace vmm
