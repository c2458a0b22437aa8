// pvpanic: how a guest kernel tells the host it panicked, so that a panic
// ends the VM as such instead of as a reboot (panic=-1) or a silent hang.
// Semantics match QEMU's ISA pvpanic (`-device pvpanic`, port 0x505, ACPI ID
// QEMU0001), which Linux's pvpanic driver knows: a read returns the events
// this device supports, a write reports them (bit 0: the guest panicked;
// bit 1: a crash kernel is loaded and will take over, so the guest goes on).
//
//   bus.insert(PvPanic::kPort, PvPanic::kSize, pvpanic, "pvpanic");
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "devices/bus.h"

namespace vmm::devices {

class PvPanic final : public BusDevice {
 public:
  static constexpr std::uint64_t kPort = 0x505;
  static constexpr std::uint64_t kSize = 1;
  static constexpr std::uint8_t kPanicked = 1u << 0;
  static constexpr std::uint8_t kCrashLoaded = 1u << 1;

  // `panicked` runs on the vCPU thread that wrote the port, with no device
  // lock held, once per write that has bit 0 set; it should only ask the VM
  // to end. A crash-loaded report is only logged: the guest's crash kernel
  // is about to run and must be let run.
  explicit PvPanic(std::function<void()> panicked);

  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

 private:
  const std::function<void()> panicked_;
};

}  // namespace vmm::devices
