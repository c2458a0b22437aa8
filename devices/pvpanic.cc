#include "devices/pvpanic.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "devices/rate_limit.h"

namespace vmm::devices {

PvPanic::PvPanic(std::function<void()> panicked) : panicked_(std::move(panicked)) {}

void PvPanic::read(std::uint64_t, std::span<std::uint8_t> data) noexcept {
  std::fill(data.begin(), data.end(), std::uint8_t{0});
  if (!data.empty()) data[0] = kPanicked | kCrashLoaded;
}

void PvPanic::write(std::uint64_t, std::span<const std::uint8_t> data) noexcept {
  if (data.empty()) return;
  const std::uint8_t events = data[0];
  if ((events & kCrashLoaded) != 0) {
    static RateLimit limit;
    if (limit.allow()) {
      spdlog::warn("pvpanic: the guest crashed and is starting its crash kernel ({} suppressed)",
                   limit.take_suppressed());
    }
  }
  if ((events & kPanicked) != 0 && panicked_) panicked_();
}

}  // namespace vmm::devices
