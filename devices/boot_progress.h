// Boot-progress port: the test guest writes a milestone code (32-bit OUT to
// port 0x0FF0) as it passes each stage; the device stamps it with the time
// since a start point the VMM chose (typically just before the first
// KVM_RUN), keeps the last 64 for tests and benchmarks, and logs it at debug
// level. Other widths or offsets are ignored; reads return all ones.
//
//   bus.insert(BootProgress::kPort, BootProgress::kSize, progress, "boot-progress");
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "devices/bus.h"
#include "devices/rate_limit.h"
#include "timers/clock.h"

namespace vmm::devices {

// Codes the project's test guest writes.
enum class BootMilestone : std::uint32_t {
  entry32 = 1,         // first instruction of the 32-bit (PVH) entry
  long_mode = 2,       // paging and 64-bit mode enabled
  main = 3,            // C++ main reached
  scenario_start = 4,  // the selected test scenario begins
  scenario_done = 5,   // ... and finished
};

// "entry32", "long_mode", ... or "unknown" for codes outside the enum.
std::string_view milestone_name(std::uint32_t code) noexcept;

struct MilestoneRecord {
  std::uint32_t code;
  timers::Nanos since_start;  // nanoseconds from the start point to the write
};

class BootProgress final : public BusDevice {
 public:
  static constexpr std::uint64_t kPort = 0x0FF0;
  static constexpr std::uint64_t kSize = 4;
  static constexpr std::size_t kCapacity = 64;

  // `clock` is not owned and must outlive the device.
  BootProgress(const timers::Clock& clock, timers::Nanos start) noexcept;

  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

  // The retained records, oldest first.
  std::vector<MilestoneRecord> milestones() const;
  // Every milestone ever written since the last restart, including those the
  // ring has since overwritten.
  std::uint64_t total_recorded() const noexcept;

  // Forget everything and measure from `start` (VM reset).
  void restart(timers::Nanos start) noexcept;

 private:
  const timers::Clock& clock_;
  mutable std::mutex mu_;
  timers::Nanos start_;
  std::array<MilestoneRecord, kCapacity> ring_{};
  std::uint64_t total_ = 0;  // next slot is total_ % kCapacity
  RateLimit milestone_log_;
  RateLimit ignored_log_;
};

}  // namespace vmm::devices
