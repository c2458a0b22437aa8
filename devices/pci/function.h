// What a PCI root bus needs from one function: configuration-space access,
// register access through its BARs, a lock-free "which BAR covers this
// address", BAR placement at set-up, and a reset.
//
// Threading: config_* and bar_* run on vCPU threads, concurrently; each
// function guards its own state with its own lock. decode() runs on every
// MMIO access to the PCI window and must not take that lock (it reads atomic
// copies of the decoded BAR bases), so a BAR move never blocks dispatch and
// dispatch never orders itself against a function's lock.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace vmm::devices::pci {

class PciFunction;

struct BarHit {
  unsigned bar = 0;
  std::uint64_t offset = 0;  // from the BAR's base
};

// Told where a function's BAR now decodes, so the VMM can move whatever it
// keeps at absolute guest addresses (ioeventfds on a notify region, KVM
// memory slots). Called with the function's lock held, serialized for one
// function, in the order the changes happened; must not call back into the
// function. `address` is nullopt while the BAR does not decode (memory space
// disabled in the command register, or a base of zero).
class PciBarObserver {
 public:
  virtual ~PciBarObserver() = default;
  virtual void on_bar_changed(PciFunction& function, unsigned bar, std::optional<std::uint64_t> address,
                              std::uint64_t size) noexcept = 0;
};

class PciFunction {
 public:
  static constexpr unsigned kBars = 6;

  virtual ~PciFunction() = default;

  // Configuration space: `offset` < 4096 and offset + data.size() <= 4096,
  // data.size() in {1, 2, 4} (the root bus guarantees both).
  virtual void config_read(std::uint32_t offset, std::span<std::uint8_t> data) noexcept = 0;
  virtual void config_write(std::uint32_t offset, std::span<const std::uint8_t> data) noexcept = 0;

  // Register access inside BAR `bar` (a hit from decode()). The BAR may have
  // moved since decode(); the function serves the access as addressed.
  virtual void bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) noexcept = 0;
  virtual void bar_write(unsigned bar, std::uint64_t offset, std::span<const std::uint8_t> data) noexcept = 0;

  // Which decoding BAR covers all of [address, address + length). Lock-free.
  virtual std::optional<BarHit> decode(std::uint64_t address, std::uint64_t length) const noexcept = 0;

  // Set-up (before vCPUs run): BAR sizes (0 = not implemented), the base the
  // root assigned (the power-on value of the BAR register), and who is told
  // about BAR moves (may be null).
  virtual std::uint64_t bar_size(unsigned bar) const noexcept = 0;
  virtual void assign_bar(unsigned bar, std::uint64_t address) = 0;
  virtual void set_bar_observer(PciBarObserver* observer) noexcept = 0;

  // Power-on state (VM reset): BARs back at their assignment, decoding off.
  virtual void reset() noexcept = 0;
};

}  // namespace vmm::devices::pci
