#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every suite.
#   release: all tests except the benchmarks (unit, seed-race, stress, kvm)
#   asan, tsan: the timer, seed-race and stress suites under the sanitizers
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

for preset in asan tsan; do
  echo "== $preset build (timers, seed races, stress)"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs" --target timers_tests seed_race_tests timer_stress_tests
  echo "== $preset tests"
  ctest --preset "$preset" -j "$jobs" -L 'unit|seed-race|stress' -R 'Cyclic|Callout|EventLoop|Seed|TimerStress'
done
echo "== all tests passed"
