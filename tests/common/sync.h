// Small synchronisation helpers for tests that force an interleaving.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace vmm::testing {

// A one-way gate: wait() blocks until open() was called (before or after).
class Gate {
 public:
  // Notifies under the lock: a waiter may destroy the gate as soon as it
  // sees it open, which must not happen while notify_all still runs.
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return open_; });
  }
  // False on timeout, so a test that would hang fails instead.
  bool wait_for(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return open_; });
  }
  bool is_open() {
    std::lock_guard lock(mu_);
    return open_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

}  // namespace vmm::testing
