// A PCI type-0 configuration header (PCI Local Bus 3.0, chapter 6) with a
// capability list, 32-bit memory BARs that answer size probing, the command
// and status registers, and the INTx pin.
//
// What the guest can change: command bits I/O, memory, bus master, parity,
// SERR and INTx disable; cache line size and latency timer (stored, unused);
// interrupt line; the BAR base bits above the BAR's size; and the capability
// bytes each capability's owner declared writable. Everything else is read
// only; the expansion ROM BAR and the extended space (0x100-0xFFF) read as
// zero. Status bit 3 (interrupt status) shows a pending INTx; bit 4 says a
// capability list exists.
//
// A BAR is sized the usual way: write all ones, read back ~(size - 1) with
// the type bits. A BAR decodes when memory space is enabled and its base is
// not zero; each change of that is published to the PciBarObserver and to
// the lock-free decode() the MMIO window uses.
//
// INTx: the pin is asserted while an interrupt is pending and the command
// register's INTx-disable bit is clear, the level tracking both.
//
// Not thread-safe: the owning function holds its lock around every call,
// except decode(), which reads atomics only.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>

#include "devices/interrupts.h"
#include "devices/pci/function.h"

namespace vmm::devices::pci {

// Register offsets and bits of the type-0 header.
inline constexpr std::uint32_t kVendorId = 0x00, kDeviceId = 0x02, kCommand = 0x04, kStatus = 0x06,
                               kRevisionId = 0x08, kClassCode = 0x09, kCacheLineSize = 0x0C,
                               kLatencyTimer = 0x0D, kHeaderType = 0x0E, kBar0 = 0x10,
                               kSubsystemVendorId = 0x2C, kSubsystemId = 0x2E, kRomBar = 0x30,
                               kCapabilityPointer = 0x34, kInterruptLine = 0x3C, kInterruptPin = 0x3D;
inline constexpr std::uint16_t kCommandIo = 1u << 0, kCommandMemory = 1u << 1, kCommandBusMaster = 1u << 2,
                               kCommandParity = 1u << 6, kCommandSerr = 1u << 8,
                               kCommandIntxDisable = 1u << 10;
inline constexpr std::uint16_t kStatusInterrupt = 1u << 3, kStatusCapabilityList = 1u << 4;
inline constexpr std::uint32_t kBarMemoryAddressMask = ~std::uint32_t{0xF};
inline constexpr std::uint32_t kConventionalSize = 256;
inline constexpr std::uint32_t kExtendedSize = 4096;

struct PciIdentity {
  std::uint16_t vendor = 0;
  std::uint16_t device = 0;
  std::uint8_t revision = 0;
  std::uint32_t class_code = 0;  // base class, subclass, programming interface (24 bits)
  std::uint16_t subsystem_vendor = 0;
  std::uint16_t subsystem = 0;
  std::uint8_t interrupt_pin = 0;  // 0 none, 1..4 INTA..INTD
};

class ConfigSpace {
 public:
  explicit ConfigSpace(const PciIdentity& identity) noexcept;
  ConfigSpace(const ConfigSpace&) = delete;
  ConfigSpace& operator=(const ConfigSpace&) = delete;

  // ---- Set-up (throw vmm::Error on a wiring bug) -------------------------
  // A 32-bit non-prefetchable memory BAR of `size` bytes (a power of two,
  // at least 16). Its base is 0 until assign_bar().
  void add_memory_bar(unsigned bar, std::uint32_t size);
  // The power-on base (naturally aligned, below 4 GiB).
  void assign_bar(unsigned bar, std::uint64_t address);
  std::uint64_t bar_size(unsigned bar) const noexcept;
  // Appends a capability of `body.size()` bytes (the first two, ID and next
  // pointer, are filled in here) and returns its offset. `writable` gives the
  // guest-writable bits of each byte (same length as body, or empty).
  std::uint8_t add_capability(std::uint8_t id, std::span<const std::uint8_t> body,
                              std::span<const std::uint8_t> writable = {});
  // The function and observer told about BAR moves.
  void set_observer(PciFunction* function, PciBarObserver* observer) noexcept;
  // The INTx output (not owned) and the power-on interrupt line register
  // (what the firmware would have written: the IRQ the pin is wired to).
  void set_intx_line(IrqLine* line, std::uint8_t interrupt_line) noexcept;

  // ---- Guest access ------------------------------------------------------
  void read(std::uint32_t offset, std::span<std::uint8_t> data) const noexcept;
  void write(std::uint32_t offset, std::span<const std::uint8_t> data) noexcept;

  // ---- The owner's view ----------------------------------------------------
  std::uint8_t byte(std::uint32_t offset) const noexcept { return offset < kConventionalSize ? bytes_[offset] : 0; }
  std::uint16_t word(std::uint32_t offset) const noexcept;
  std::uint32_t dword(std::uint32_t offset) const noexcept;
  // Stores without write masks (capability state the device changes).
  void set_byte(std::uint32_t offset, std::uint8_t value) noexcept;
  void set_word(std::uint32_t offset, std::uint16_t value) noexcept;
  void set_dword(std::uint32_t offset, std::uint32_t value) noexcept;
  std::uint16_t command() const noexcept { return word(kCommand); }

  // INTx pending state (the pin follows it and the INTx-disable bit).
  void set_intx(bool pending) noexcept;
  bool intx_pending() const noexcept { return intx_pending_; }

  // Lock-free: the BAR decoding all of [address, address + length).
  std::optional<BarHit> decode(std::uint64_t address, std::uint64_t length) const noexcept;
  // The base BAR `bar` decodes at now, or nullopt.
  std::optional<std::uint64_t> decoded_base(unsigned bar) const noexcept;

  // Power-on state: every byte as set up, command 0 (no decoding), INTx not
  // pending (the pin deasserted). Observers hear of BARs that stop decoding.
  void reset() noexcept;

 private:
  static constexpr std::uint64_t kNotDecoded = ~std::uint64_t{0};

  void update_decoding() noexcept;
  void update_intx_pin() noexcept;

  std::array<std::uint8_t, kConventionalSize> bytes_{};
  std::array<std::uint8_t, kConventionalSize> power_on_{};
  std::array<std::uint8_t, kConventionalSize> writable_{};
  std::array<std::uint32_t, PciFunction::kBars> bar_sizes_{};
  std::array<std::atomic<std::uint64_t>, PciFunction::kBars> decoded_{};
  std::uint8_t last_capability_ = 0;
  std::uint32_t next_capability_ = 0x40;
  PciFunction* function_ = nullptr;
  PciBarObserver* observer_ = nullptr;
  IrqLine* intx_line_ = nullptr;
  bool intx_pending_ = false;
  bool intx_level_ = false;
};

}  // namespace vmm::devices::pci
