#include "devices/boot_progress.h"

#include <algorithm>

#include <spdlog/spdlog.h>


namespace vmm::devices {

std::string_view milestone_name(std::uint32_t code) noexcept {
  switch (static_cast<BootMilestone>(code)) {
    case BootMilestone::entry32:
      return "entry32";
    case BootMilestone::long_mode:
      return "long_mode";
    case BootMilestone::main:
      return "main";
    case BootMilestone::scenario_start:
      return "scenario_start";
    case BootMilestone::scenario_done:
      return "scenario_done";
  }
  return "unknown";
}

BootProgress::BootProgress(const timers::Clock& clock, timers::Nanos start) noexcept
    : clock_(clock), start_(start) {}

void BootProgress::read(std::uint64_t, std::span<std::uint8_t> data) noexcept {
  std::fill(data.begin(), data.end(), std::uint8_t{0xff});
}

void BootProgress::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  if (offset != 0 || data.size() != 4) {
    if (ignored_log_.allow()) {
      spdlog::debug("boot-progress: ignoring {}-byte write at offset {} ({} suppressed)", data.size(), offset,
                    ignored_log_.take_suppressed());
    }
    return;
  }
  const auto code = static_cast<std::uint32_t>(load_le(data));
  const timers::Nanos now = clock_.now();
  timers::Nanos since_start = 0;
  {
    std::lock_guard lock(mu_);
    since_start = now - start_;
    ring_[total_ % kCapacity] = MilestoneRecord{code, since_start};
    ++total_;
  }
  if (milestone_log_.allow()) {
    spdlog::debug("boot-progress: {} ({}) at {:.3f} ms ({} suppressed)", milestone_name(code), code,
                  static_cast<double>(since_start) / 1e6, milestone_log_.take_suppressed());
  }
}

std::vector<MilestoneRecord> BootProgress::milestones() const {
  std::lock_guard lock(mu_);
  const std::uint64_t kept = std::min<std::uint64_t>(total_, kCapacity);
  std::vector<MilestoneRecord> out;
  out.reserve(kept);
  for (std::uint64_t i = total_ - kept; i < total_; ++i) out.push_back(ring_[i % kCapacity]);
  return out;
}

std::uint64_t BootProgress::total_recorded() const noexcept {
  std::lock_guard lock(mu_);
  return total_;
}

void BootProgress::restart(timers::Nanos start) noexcept {
  std::lock_guard lock(mu_);
  start_ = start;
  total_ = 0;
}

}  // namespace vmm::devices
