// The virtio-pci modern transport (VIRTIO 1.1, 4.1): one PCI function with
// the common, notify, ISR, device and PCI-config-access capabilities, MSI-X,
// and INTx as the fallback, in front of any VirtioDevice.
//
// ---- BAR 0 (32-bit memory, 32 KiB) ----------------------------------------
//   0x0000  common configuration (struct virtio_pci_common_cfg, 0x38 bytes)
//   0x1000  ISR status (1 byte; reading it clears it and deasserts INTx)
//   0x2000  device-specific configuration
//   0x3000  notifications: queue q at 0x3000 + 4 * q (notify_off_multiplier
//           4, queue_notify_off = q); the driver writes 16 bits there
//   0x4000  MSI-X table (16 bytes a vector)
//   0x5000  MSI-X pending-bit array
// Vectors: queue_count() + 1 (one for configuration changes, one a queue).
//
// ---- Notifications ----------------------------------------------------------
// A write to a queue's notify address is what an ioeventfd stands for: the
// VMM registers one at (BAR 0 base) + notify_offset(q), length 2, and moves
// it when PciBarObserver says BAR 0 moved; the event loop that reads the
// eventfd calls notify(q). A notify write that reaches bar_write() instead
// (no ioeventfd) goes to the handler set with set_notify_handler(), or is
// handled right there on the vCPU thread when none is set. Notifications
// before DRIVER_OK, after DEVICE_NEEDS_RESET or for queues that do not exist
// are ignored (logged at a rate limit).
//
// ---- Interrupts ----------------------------------------------------------------
// With MSI-X enabled, a queue's (or the configuration's) vector is sent
// through the MsiSink (masking and pending bits honoured; VIRTIO_MSI_NO_VECTOR
// or a vector beyond the table means no interrupt; a vector number beyond the
// table reads back as NO_VECTOR, as the spec asks). Without MSI-X, the ISR
// bit is set and the INTx line asserted (level) until the driver reads ISR.
//
// ---- Registers and bad input ------------------------------------------------------
// Every register takes any value at any time without harm: fields are only
// accepted at their own offset and width (64-bit addresses also as two
// 32-bit halves); driver features only between DRIVER and FEATURES_OK;
// FEATURES_OK only for a subset of the device's features that includes
// VERSION_1 (otherwise it does not stick, and the driver sees that); queue
// size and addresses only while the queue is disabled; queue_enable only
// after FEATURES_OK and before DRIVER_OK, and only for a queue whose size is
// a power of two no larger than the maximum and whose areas are aligned and
// inside guest memory (else DEVICE_NEEDS_RESET); DRIVER_OK only with
// FEATURES_OK; clearing status bits other than by writing 0 is ignored.
//
// ---- Reset ----------------------------------------------------------------------------
// Writing 0 to device_status resets the device at once: queues forgotten,
// features and vectors cleared, ISR and INTx cleared. Requests still in
// flight at the backend are never completed to the driver (no used entry,
// no status byte, no interrupt). device_status reads as its old value until
// the last of them has come back from the backend and 0 after that, so a
// driver that waits for 0 (Linux does) knows no more DMA will land in its
// memory. VM reset and force stop: reset() (the PCI function's power-on
// state as well), then wait_idle() before guest memory is reused.
//
// ---- Threading ----------------------------------------------------------------------
// One mutex (lock()) guards the transport, its MSI-X table and config space,
// the queues and the device: vCPU threads (config and BAR access), the
// device's event loop (notify(), backend completions) and the VM's control
// thread (reset()) all take it. The MsiSink, the INTx IrqLine and the
// PciBarObserver are called with it held and must not call back.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "devices/guest_memory.h"
#include "devices/interrupts.h"
#include "devices/pci/config_space.h"
#include "devices/pci/function.h"
#include "devices/pci/msix.h"
#include "devices/virtio/virtio.h"
#include "devices/virtio/virtqueue.h"

namespace vmm::devices::virtio {

class VirtioPciFunction final : public pci::PciFunction, private VirtioTransport {
 public:
  static constexpr std::uint16_t kVendor = 0x1AF4;
  static constexpr std::uint16_t kDeviceBase = 0x1040;  // + device type: modern-only IDs
  static constexpr std::uint16_t kSubsystem = 0x0040;
  static constexpr std::uint32_t kBarSize = 0x8000;
  static constexpr std::uint64_t kCommonOffset = 0x0000, kIsrOffset = 0x1000, kDeviceOffset = 0x2000,
                                 kNotifyOffset = 0x3000, kMsixTableOffset = 0x4000, kMsixPbaOffset = 0x5000;
  static constexpr std::uint64_t kRegionSize = 0x1000;
  static constexpr std::uint32_t kNotifyMultiplier = 4;
  static constexpr std::uint32_t kCommonSize = 0x38;
  // virtio_pci_common_cfg offsets.
  static constexpr std::uint32_t kDeviceFeatureSelect = 0x00, kDeviceFeature = 0x04, kDriverFeatureSelect = 0x08,
                                 kDriverFeature = 0x0C, kConfigMsixVector = 0x10, kNumQueues = 0x12,
                                 kDeviceStatus = 0x14, kConfigGeneration = 0x15, kQueueSelect = 0x16,
                                 kQueueSize = 0x18, kQueueMsixVector = 0x1A, kQueueEnable = 0x1C,
                                 kQueueNotifyOff = 0x1E, kQueueDesc = 0x20, kQueueDriver = 0x28,
                                 kQueueDevice = 0x30;
  // Capability types (virtio_pci_cap.cfg_type).
  static constexpr std::uint8_t kCapCommon = 1, kCapNotify = 2, kCapIsr = 3, kCapDevice = 4, kCapPciCfg = 5;
  static constexpr std::uint8_t kIsrQueue = 1, kIsrConfig = 2;

  // `device`, `memory`, `msi` and `intx` (may be null: no INTx pin) are not
  // owned and must outlive the function. `interrupt_line` is the interrupt
  // line register's power-on value (the IRQ `intx` is wired to). Throws
  // vmm::Error when the device asks for what the transport cannot give.
  VirtioPciFunction(VirtioDevice& device, GuestMemory& memory, MsiSink& msi, IrqLine* intx,
                    std::uint8_t interrupt_line = 0);
  ~VirtioPciFunction() override;
  VirtioPciFunction(const VirtioPciFunction&) = delete;
  VirtioPciFunction& operator=(const VirtioPciFunction&) = delete;

  // Where queue q's notifications land in BAR 0 (add the BAR's base).
  static constexpr std::uint64_t notify_offset(std::uint16_t queue) {
    return kNotifyOffset + std::uint64_t{kNotifyMultiplier} * queue;
  }
  // BAR 0's base now, or nullopt when it does not decode.
  std::optional<std::uint64_t> bar_address() const noexcept;

  // The driver notified `queue` (from an ioeventfd, on the device's loop).
  void notify(std::uint16_t queue) noexcept;
  // Where notify writes that arrive as MMIO exits go (set-up only).
  void set_notify_handler(std::function<void(std::uint16_t queue)> handler);

  // PciFunction.
  void config_read(std::uint32_t offset, std::span<std::uint8_t> data) noexcept override;
  void config_write(std::uint32_t offset, std::span<const std::uint8_t> data) noexcept override;
  void bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void bar_write(unsigned bar, std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;
  std::optional<pci::BarHit> decode(std::uint64_t address, std::uint64_t length) const noexcept override;
  std::uint64_t bar_size(unsigned bar) const noexcept override;
  void assign_bar(unsigned bar, std::uint64_t address) override;
  void set_bar_observer(pci::PciBarObserver* observer) noexcept override;
  // VM reset: the device reset (as a 0 write to device_status) and the PCI
  // function's power-on state (BARs back, decoding off, MSI-X off and
  // masked). Returns at once; wait_idle() waits for requests in flight.
  void reset() noexcept override;

  // Waits until no request is in flight at the backend; false on timeout.
  bool wait_idle(std::chrono::milliseconds timeout);

  std::uint8_t device_status() const noexcept;  // as the driver reads it
  std::mutex& lock() noexcept { return mu_; }

 private:
  struct QueueRegisters {
    std::uint16_t size = 0;
    std::uint16_t msix_vector = kNoVector;
    bool enabled = false;
    std::uint64_t desc = 0, driver = 0, device = 0;
  };

  // VirtioTransport (called by the device with mu_ held).
  void signal_queue(std::uint16_t queue) noexcept override;
  void signal_config() noexcept override;
  void needs_reset() noexcept override;
  void became_idle() noexcept override;

  // All with mu_ held.
  void bar_read_locked(std::uint64_t offset, std::span<std::uint8_t> data) noexcept;
  void bar_write_locked(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept;
  void common_read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept;
  void common_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept;
  void write_status(std::uint8_t value) noexcept;
  void enable_queue(std::uint16_t queue) noexcept;
  void notify_locked(std::uint16_t queue) noexcept;
  void reset_device() noexcept;
  void signal(std::uint16_t vector, std::uint8_t isr_bit) noexcept;
  std::uint16_t checked_vector(std::uint16_t vector) const noexcept;
  std::uint8_t status_as_read() const noexcept;
  void pci_cfg_access(bool write, std::uint32_t offset, std::size_t size) noexcept;

  VirtioDevice& device_;
  GuestMemory& memory_;
  const std::uint16_t queue_count_;
  const std::uint64_t device_features_;
  std::function<void(std::uint16_t)> notify_handler_;

  mutable std::mutex mu_;
  std::condition_variable idle_;
  // Guarded by mu_.
  pci::ConfigSpace config_;
  pci::Msix msix_;
  std::uint8_t pci_cfg_cap_ = 0;
  std::vector<QueueRegisters> queue_registers_;
  std::vector<SplitQueue> queues_;
  std::uint64_t driver_features_ = 0;
  std::uint32_t device_feature_select_ = 0;
  std::uint32_t driver_feature_select_ = 0;
  std::uint16_t queue_select_ = 0;
  std::uint16_t config_vector_ = kNoVector;
  std::uint8_t status_ = 0;
  std::uint8_t status_before_reset_ = 0;  // shown while requests from before the reset drain
  bool draining_ = false;
  std::uint8_t isr_ = 0;
  std::uint8_t config_generation_ = 0;
};

}  // namespace vmm::devices::virtio
