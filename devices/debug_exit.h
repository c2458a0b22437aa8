// isa-debug-exit: lets a test guest end the VM with a status of its choice.
// Semantics match QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=4`, so a
// guest runs unchanged under both: a write of value v (any width, any offset
// in the window, zero-extended) asks to exit with status (v << 1) | 1 (an
// exit status is always odd, so a guest can never fake a clean 0). Reads
// return all ones.
//
//   bus.insert(DebugExit::kPort, DebugExit::kSize, debug_exit, "debug-exit");
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "devices/bus.h"

namespace vmm::devices {

class DebugExit final : public BusDevice {
 public:
  static constexpr std::uint64_t kPort = 0xF4;
  static constexpr std::uint64_t kSize = 4;

  // `request_exit` receives the full status, (v << 1) | 1; a process exit
  // code keeps its low 8 bits, as QEMU's does. It runs on the vCPU thread
  // that wrote the port, with no device lock held, and should only ask the
  // VM to stop.
  explicit DebugExit(std::function<void(std::uint64_t status)> request_exit);

  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

  static constexpr std::uint64_t status_for(std::uint64_t value) noexcept { return (value << 1) | 1; }

 private:
  const std::function<void(std::uint64_t)> request_exit_;
};

}  // namespace vmm::devices
