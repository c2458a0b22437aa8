// Fuzz entry points for every device's register interface, shared by the
// libFuzzer binaries (VMM_FUZZ=ON, one per device) and the gtest driver.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace vmm::fuzz {

enum class FuzzedDevice : std::uint8_t {
  kPit,         // 8254 channels and port 0x61
  kRtc,         // MC146818 index and data ports
  kHpet,        // the HPET's MMIO page, three comparators
  kIoApic,      // IOAPIC MMIO, its pins and EOIs
  kPic,         // the 8259 pair and the ELCR, its inputs and INTA cycles
  kSerial,      // 16550A registers and host input
  kI8042,       // data and command ports
  kAcpiPm,      // PM1 event and control blocks, PM timer, reset register
  kLapic,       // two local APICs: xAPIC MMIO, x2APIC MSRs, the vCPU side
  kBoardPorts,  // debug-exit, boot-progress and pvpanic
  kPci,         // the PCI root (0xCF8/0xCFC, BARs) and a virtio-blk function on it
};

inline constexpr std::array<FuzzedDevice, 11> kFuzzedDevices = {
    FuzzedDevice::kPit,    FuzzedDevice::kRtc,    FuzzedDevice::kHpet,  FuzzedDevice::kIoApic,
    FuzzedDevice::kPic,    FuzzedDevice::kSerial, FuzzedDevice::kI8042, FuzzedDevice::kAcpiPm,
    FuzzedDevice::kLapic,  FuzzedDevice::kBoardPorts, FuzzedDevice::kPci};

// The name used for the libFuzzer binary (<name>_fuzzer) and the corpus
// folder (tests/fuzz/corpus/<name>/).
std::string_view name(FuzzedDevice device) noexcept;

// Builds the device on a ManualClock with a caller-driven timer loop and
// plays `data` against it as a stream of operations, each one opcode byte
// and its operands (missing bytes read as zero):
//   opcode bits 0-2: 0, 1, 6, 7 write; 2 read; 3 time step; 4 device-side
//                    event; 5 lifecycle (drain+reset, pause, resume, rebind)
//          bits 3-4: access width 1, 2, 4 or 8 bytes
//          bits 5-7: which register window of the device
//   access:     2 offset bytes (top bit set: an offset far outside the
//               window, up to 2^64 - 1), then `width` value bytes
//   time step:  1 byte, (b & 63) << (6 * (b >> 6)) ns (up to ~16.5 ms)
//   event, lifecycle: 2 bytes, meaning per device
// After every operation the loop runs what is due and these must hold, or
// the process aborts with the reason (as libFuzzer expects):
//   * no callout is left armed at or before now once the loop has run
//     (a handler re-arming in the past would make a loop thread spin);
//   * the handlers run per operation are bounded by the device's callouts
//     at their floor rate (100 us) plus one per guest action, so no guest
//     can make a timer loop fire faster than its floor;
//   * device-specific register invariants (read-only registers stay put,
//     reserved bits stay zero);
//   * over the whole input, the log lines stay under a fixed bound, however
//     many bad accesses the input makes.
// Returns 0.
int fuzz_device(FuzzedDevice device, const std::uint8_t* data, std::size_t size);

// The log-line bound of one input: 10 lines (a RateLimit burst) for each
// of the rate-limited sites a device can reach, with room to spare.
inline constexpr std::size_t kMaxLogLinesPerInput = 400;

}  // namespace vmm::fuzz
