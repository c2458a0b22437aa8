#include "devices/debug_exit.h"

#include <algorithm>
#include <utility>

namespace vmm::devices {

DebugExit::DebugExit(std::function<void(std::uint64_t status)> request_exit)
    : request_exit_(std::move(request_exit)) {}

void DebugExit::read(std::uint64_t, std::span<std::uint8_t> data) noexcept {
  std::fill(data.begin(), data.end(), std::uint8_t{0xff});
}

void DebugExit::write(std::uint64_t, std::span<const std::uint8_t> data) noexcept {
  if (data.empty()) return;
  if (request_exit_) request_exit_(status_for(load_le(data)));
}

}  // namespace vmm::devices
