// --fault-inject for vmm-stress: installs the race-point delays in this
// process (in-process loops) and passes them to `vmm run` children through
// VMM_FAULT_INJECT (process loops); reports what was injected.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "tools/vmm-stress/stress.h"

namespace vmm::stress {

// True when this build has fault injection compiled in (VMM_FAULT_INJECTION=ON).
bool fault_injection_available() noexcept;

// Checks the spec; throws std::runtime_error naming the problem (also when
// the build has no fault injection). Sets VMM_FAULT_INJECT for children.
void prepare_fault_injection(const Options& options);

// Installs options.fault_inject in this process, if any (after
// prepare_fault_injection accepted it).
void apply_fault_injection_in_process(const Options& options);

// Adds {"fault_injection": {"spec":..., "points": {name: {hits, delays, slept_us}}}}
// when injection is on in this process.
void add_fault_injection_report(nlohmann::json& report);
// " fault_injection=<spec> fi_delays=N" or "".
std::string fault_injection_text();

}  // namespace vmm::stress
