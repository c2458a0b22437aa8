// Log lines a guest can trigger go through a RateLimit, so no guest can flood
// the log (or slow the vCPU thread down with logging).
//
//   static RateLimit limit;   // one per call site
//   if (limit.allow()) spdlog::warn("... ({} suppressed)", limit.take_suppressed());
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace vmm {

class RateLimit {
 public:
  // At most `burst` lines per `period`.
  explicit constexpr RateLimit(std::uint32_t burst = 10,
                               std::chrono::nanoseconds period = std::chrono::seconds(5)) noexcept
      : burst_(burst), period_ns_(period.count()) {}

  // True when this call may log. Lock-free; any thread.
  bool allow() noexcept {
    const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    std::int64_t start = window_start_.load(std::memory_order_relaxed);
    if (now - start >= period_ns_ &&
        window_start_.compare_exchange_strong(start, now, std::memory_order_relaxed)) {
      used_.store(0, std::memory_order_relaxed);
    }
    if (used_.fetch_add(1, std::memory_order_relaxed) < burst_) return true;
    suppressed_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  // Lines dropped since the last call (to say so in the next line logged).
  std::uint64_t take_suppressed() noexcept { return suppressed_.exchange(0, std::memory_order_relaxed); }

 private:
  const std::uint32_t burst_;
  const std::int64_t period_ns_;
  std::atomic<std::int64_t> window_start_{-(std::int64_t{1} << 62)};
  std::atomic<std::uint32_t> used_{0};
  std::atomic<std::uint64_t> suppressed_{0};
};

}  // namespace vmm
