// SIGTERM and SIGINT as requests to the VM: the first asks for a graceful
// stop, a second (of either kind) forces it. Taken through a signalfd on a
// watcher thread, so no signal handler ever runs on a vCPU or timer thread.
#pragma once

#include <functional>
#include <thread>

#include "timers/unique_fd.h"

namespace vmm {

class HostSignals {
 public:
  // Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and ignores
  // SIGPIPE (a closed console must not kill the VMM). Call in main() before
  // any other thread exists: threads inherit the mask, so the signals then
  // reach only the watcher.
  static void block_in_this_thread();

  HostSignals(std::function<void()> stop, std::function<void()> force);
  ~HostSignals();  // stops and joins the watcher
  HostSignals(const HostSignals&) = delete;
  HostSignals& operator=(const HostSignals&) = delete;

 private:
  void watch() noexcept;

  std::function<void()> stop_;
  std::function<void()> force_;
  timers::UniqueFd signals_;
  timers::UniqueFd wake_;
  std::thread thread_;
};

}  // namespace vmm
