#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every suite.
#   release: all tests except the benchmarks (unit, seed-race, stress, kvm)
#   asan, tsan: the timer, seed-race and stress suites (vmm-stress's loops
#               included), and the VMM's reboot, reset-path, fuzzing-guest,
#               lifecycle and control-socket tests, under the sanitizers; the
#               tsan build also compiles in fault injection (VMM_FAULT_INJECTION),
#               which its vmm-stress runs switch on
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh

jobs=$(nproc)
echo "== release build"
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs"
echo "== release tests"
ctest --preset release -j "$jobs" -LE bench

# The sanitizer builds do not build the freestanding guest: they boot the
# release build's.
export VMM_TESTGUEST_ELF="$PWD/build/release/guest-images/testguest.elf"
for preset in asan tsan; do
  echo "== $preset build (timers, seed races, stress, the VMM end to end)"
  # Explicit, so that a build folder configured by hand earlier cannot drop
  # vmm-stress or keep fault injection where it does not belong.
  options=(-DVMM_BUILD_TOOLS=ON -DVMM_FAULT_INJECTION=OFF)
  if [ "$preset" = tsan ]; then options=(-DVMM_BUILD_TOOLS=ON -DVMM_FAULT_INJECTION=ON); fi
  cmake --preset "$preset" "${options[@]}" >/dev/null
  cmake --build --preset "$preset" -j "$jobs" --target timers_tests seed_race_tests timer_stress_tests vmm vmm_run_tests \
    vmm-stress vmm_stress_tests vmm_control_tests
  echo "== $preset tests"
  ctest --preset "$preset" -j "$jobs" -L 'unit|seed-race|stress' -R 'Cyclic|Callout|EventLoop|Seed|TimerStress|VmmStress'
  # Reboots with every timer running, every reset path, a register-fuzzing
  # guest, timer localisation and create/stop/destroy cycles, in-process and
  # as separate vmm processes built with the same sanitizer.
  ctest --preset "$preset" -j "$jobs" -L kvm \
    -R 'HundredReboots|EveryTimer|ResetPath|AGuestWriting|VmInProcess|Sigterm|Control'
done
echo "== all tests passed"
