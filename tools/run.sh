#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the timer-latency
# comparison (our event loop against a raw timerfd and clock_nanosleep) at
# 1 and 10,000 armed timers.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target timer-latency
for n in 1 10000; do
  build/release/tools/timer-latency --timers "$n" "$@"
done
