// The lifecycle every device with timers implements, so that the VM can stop,
// drain, reset, pause and move all of them the same way.
//
// VM reset (guest reboot) and teardown, in this order:
//   1. every vCPU is stopped (no register write can arrive any more);
//   2. drain_timers() on every device: handlers may be running right now and
//      may try to re-arm; those re-arms fail quietly (illumos 12476);
//   3. reset() on every device: power-on register state, callouts initialised
//      again on the given loop (a drained device is usable only after reset).
#pragma once

#include "timers/event_loop.h"

namespace vmm::devices {

class TimerDevice {
 public:
  virtual ~TimerDevice() = default;

  // Drains every callout of the device. Called WITHOUT the device lock (it
  // waits for running handlers, which take it). After it returns no handler
  // of this device runs until reset(). Idempotent.
  virtual void drain_timers() noexcept = 0;

  // Power-on state; callouts (re)initialised on `loop`, none armed.
  virtual void reset(timers::EventLoop& loop) noexcept = 0;

  // pause(): stops every callout but keeps the deadlines. resume(): re-arms
  // every non-zero deadline (one that passed meanwhile fires at once and the
  // device's lag policy applies). A one-shot that fired has deadline 0, so
  // resume can tell "fired" from "pending".
  virtual void pause() noexcept = 0;
  virtual void resume() noexcept = 0;

  // Moves every callout to `loop`, keeping expiries (vCPU 0 moved CPU).
  virtual void bind_timers(timers::EventLoop& loop) noexcept = 0;
};

}  // namespace vmm::devices
