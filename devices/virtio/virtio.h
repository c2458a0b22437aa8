// VIRTIO 1.x constants shared by the transport and the devices, and the
// interface between them.
//
// Threading (every virtio device): one mutex per device, owned by its
// transport (VirtioPciFunction::lock()). The transport holds it around every
// call into the VirtioDevice below; the device takes it itself only on its
// asynchronous entry points (its backend's completions). So a device never
// sees two of its entry points at once, and a reset can never run while a
// completion is half done.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>

#include "devices/guest_memory.h"

namespace vmm::devices::virtio {

class SplitQueue;

// Device status (2.1).
inline constexpr std::uint8_t kStatusAcknowledge = 1, kStatusDriver = 2, kStatusDriverOk = 4,
                              kStatusFeaturesOk = 8, kStatusNeedsReset = 64, kStatusFailed = 128;

// Reserved feature bits (6).
inline constexpr unsigned kFeatureIndirectDesc = 28, kFeatureEventIdx = 29, kFeatureVersion1 = 32;
inline constexpr std::uint64_t bit(unsigned feature) { return std::uint64_t{1} << feature; }

// Device types (5).
inline constexpr std::uint16_t kDeviceBlock = 2;

inline constexpr std::uint16_t kNoVector = 0xFFFF;

// What a device may ask of its transport. Called with the device's lock held.
class VirtioTransport {
 public:
  virtual ~VirtioTransport() = default;
  // Interrupt the driver for `queue` (used buffers were added and the queue
  // asked for a signal), or for a configuration change.
  virtual void signal_queue(std::uint16_t queue) noexcept = 0;
  virtual void signal_config() noexcept = 0;
  // The driver broke the protocol beyond recovery for this queue (e.g. an
  // available index that runs ahead by more than the queue size): set
  // DEVICE_NEEDS_RESET and tell the driver.
  virtual void needs_reset() noexcept = 0;
  // The last request still in flight from before a reset has completed.
  virtual void became_idle() noexcept = 0;
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  // ---- Constant after construction; any thread ---------------------------
  virtual std::uint16_t device_type() const noexcept = 0;
  // Every feature offered, VIRTIO_F_VERSION_1 included.
  virtual std::uint64_t device_features() const noexcept = 0;
  virtual std::uint16_t queue_count() const noexcept = 0;
  virtual std::uint16_t max_queue_size() const noexcept = 0;
  virtual std::uint32_t config_size() const noexcept = 0;

  // ---- Called with the device's lock held -----------------------------------
  // Once, before anything else: who to signal and the lock the device takes
  // on its asynchronous entry points.
  virtual void attach(VirtioTransport& transport, std::mutex& lock) noexcept = 0;
  // Device-specific configuration (offset + size <= config_size()).
  virtual void read_config(std::uint32_t offset, std::span<std::uint8_t> data) noexcept = 0;
  virtual void write_config(std::uint32_t offset, std::span<const std::uint8_t> data) noexcept = 0;
  // DRIVER_OK: the negotiated features and the queues (enabled or not, valid
  // until reset()).
  virtual void activate(std::uint64_t features, std::span<SplitQueue> queues) noexcept = 0;
  // The driver notified `queue` (only after activate()).
  virtual void queue_notify(std::uint16_t queue) noexcept = 0;
  // Forget the queues and everything the driver set up. Requests still in
  // flight at the backend complete later without touching the queues or
  // guest memory; returns how many there are (became_idle() is called when
  // the last one is gone).
  virtual std::size_t reset() noexcept = 0;
  virtual std::size_t in_flight() const noexcept = 0;
};

}  // namespace vmm::devices::virtio
