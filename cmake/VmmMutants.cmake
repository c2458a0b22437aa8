# Mutation testing of the seed-race fixes.
#
# Each entry names one fix that a seed-race test must guard, the one file
# that holds it, and what the build does without it: `name|file|what`. With
# -DVMM_MUTANT=<name> that file is compiled with VMM_MUTANT_<NAME> defined,
# which its `#if` at the fix site turns into the code without the fix.
# Nothing else changes, and a normal build (VMM_MUTANT empty) defines
# nothing. tools/mutants builds the seed-race tests once per entry and fails
# unless every such build fails at least one of them.
set(VMM_MUTANTS
  "no_generation_bump|timers/cyclic.cc|remove() leaves the generation alone, so a handler's re-arm of its removed cyclic is taken (illumos 12476)"
  "remove_no_wait|timers/cyclic.cc|remove() returns while the handler it removed still runs"
  "second_remover_no_wait|timers/cyclic.cc|a second remove() racing the first returns before the handler has"
  "oneshot_rearm_lost|timers/event_loop.cc|a one-shot is parked after its handler, losing a re-arm made while it ran"
  "pending_never|timers/callout.cc|Callout::pending() is always false: no pending test (illumos 12738)"
  "glue_clears_pending|timers/callout.cc|the glue takes each firing for the target stored now, as the old shim's unlocked PENDING clear did (illumos 12738)"
  "no_drain_refusal|timers/callout.cc|reset() takes a re-arm that got through while a drain was under way"
  "lapic_no_pending_test|devices/lapic_timer.cc|the LAPIC timer's handler checks active but not pending"
  "pit_no_pending_test|devices/pit.cc|the PIT's handler checks active but not pending"
  "hpet_no_pending_test|devices/hpet.cc|the HPET's handler checks active but not pending"
  "rtc_no_pending_test|devices/rtc.cc|the RTC's handler checks active but not pending"
)

set(VMM_MUTANT "" CACHE STRING "Mutation testing only: build without one seed-race fix (see cmake/VmmMutants.cmake)")
if(VMM_MUTANT)
  set(_vmm_mutant_file "")
  foreach(_entry IN LISTS VMM_MUTANTS)
    string(REPLACE "|" ";" _parts "${_entry}")
    list(GET _parts 0 _name)
    if(_name STREQUAL VMM_MUTANT)
      list(GET _parts 1 _vmm_mutant_file)
    endif()
  endforeach()
  if(NOT _vmm_mutant_file)
    message(FATAL_ERROR "VMM_MUTANT=${VMM_MUTANT} names no mutant in cmake/VmmMutants.cmake")
  endif()
  string(TOUPPER "${VMM_MUTANT}" _upper)
  get_filename_component(_dir "${_vmm_mutant_file}" DIRECTORY)
  # Only that file: switching mutants in one build folder recompiles two
  # files, not the libraries.
  set_property(SOURCE "${PROJECT_SOURCE_DIR}/${_vmm_mutant_file}" DIRECTORY "${PROJECT_SOURCE_DIR}/${_dir}"
               APPEND PROPERTY COMPILE_DEFINITIONS "VMM_MUTANT_${_upper}")
  message(WARNING "MUTANT BUILD (VMM_MUTANT=${VMM_MUTANT}): ${_vmm_mutant_file} is built without a seed-race fix; for tools/mutants only")
endif()
