#include "tools/vmm-stress/fault_report.h"

#include <cstdlib>
#include <stdexcept>

#include "timers/race_points.h"
#if defined(VMM_FAULT_INJECTION)
#include "timers/fault_injection.h"
#endif

namespace vmm::stress {

bool fault_injection_available() noexcept {
#if defined(VMM_FAULT_INJECTION)
  return true;
#else
  return false;
#endif
}

void prepare_fault_injection(const Options& options) {
  if (options.fault_inject.empty()) return;
#if defined(VMM_FAULT_INJECTION)
  // Parse it here, where a mistake can still be a usage error; the hook
  // itself is installed once the run's threads are about to start.
  const std::string previous = timers::fault_injection_spec();
  std::string error;
  if (!timers::configure_fault_injection(options.fault_inject, &error)) {
    throw std::runtime_error("--fault-inject: " + error);
  }
  timers::configure_fault_injection(previous);
  ::setenv(timers::kFaultInjectEnv, options.fault_inject.c_str(), 1);
#else
  throw std::runtime_error(
      "--fault-inject: this build has no fault injection (configure with -DVMM_FAULT_INJECTION=ON)");
#endif
}

void apply_fault_injection_in_process([[maybe_unused]] const Options& options) {
#if defined(VMM_FAULT_INJECTION)
  if (!options.fault_inject.empty()) timers::configure_fault_injection(options.fault_inject);
#endif
}

void add_fault_injection_report([[maybe_unused]] nlohmann::json& report) {
#if defined(VMM_FAULT_INJECTION)
  const std::string spec = timers::fault_injection_spec();
  if (spec.empty()) return;
  nlohmann::json points = nlohmann::json::object();
  const timers::FaultStats stats = timers::fault_injection_stats();
  for (std::size_t i = 0; i < stats.size(); ++i) {
    if (stats[i].hits == 0) continue;
    points[timers::race_point_name(static_cast<timers::RacePoint>(i))] = {
        {"hits", stats[i].hits}, {"delays", stats[i].delays}, {"slept_us", stats[i].slept_us}};
  }
  report["fault_injection"] = {{"spec", spec}, {"points", points}};
#endif
}

std::string fault_injection_text() {
#if defined(VMM_FAULT_INJECTION)
  const std::string spec = timers::fault_injection_spec();
  if (spec.empty()) return {};
  std::uint64_t delays = 0;
  for (const auto& point : timers::fault_injection_stats()) delays += point.delays;
  return " fault_injection=" + spec + " fi_delays=" + std::to_string(delays);
#else
  return {};
#endif
}

}  // namespace vmm::stress
