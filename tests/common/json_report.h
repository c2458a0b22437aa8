// Tools that report with --json print one JSON object as the last line of
// stdout (vmm-stress, tools/bench): that object, or null when there is none.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace vmm::testing {

inline nlohmann::json last_json_line(std::string out) {
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const std::size_t start = out.rfind('\n');
  nlohmann::json report = nlohmann::json::parse(start == std::string::npos ? out : out.substr(start + 1), nullptr, false);
  return report.is_discarded() ? nlohmann::json() : report;
}

}  // namespace vmm::testing
