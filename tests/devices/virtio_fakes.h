// Test doubles for virtio devices: a block backend over memory that
// completes only when the test says so, and a driver that talks to a
// VirtioPciFunction through its BAR as a guest would.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "devices/bus.h"
#include "devices/guest_memory.h"
#include "devices/virtio/block_backend.h"
#include "devices/virtio/pci_transport.h"
#include "tests/devices/virtio_ring.h"

namespace vmm::testing {

using devices::virtio::BlockOp;

// A disk in memory. Requests wait in submission order until complete_*()
// carries them out (reads copy into guest memory only then) and reports them.
class MemoryBackend final : public devices::virtio::BlockBackend {
 public:
  struct Pending {
    BlockOp op;
    std::uint64_t offset;
    std::uint64_t length;
    std::vector<iovec> iov;
    std::uint64_t tag;
  };

  explicit MemoryBackend(std::uint64_t bytes, bool read_only = false, std::uint32_t max_in_flight = 64)
      : disk_(bytes), read_only_(read_only), max_in_flight_(max_in_flight) {}

  std::uint64_t size() const noexcept override { return disk_.size(); }
  bool read_only() const noexcept override { return read_only_; }
  bool supports_discard() const noexcept override { return true; }
  bool supports_write_zeroes() const noexcept override { return true; }
  std::uint32_t max_in_flight() const noexcept override { return max_in_flight_; }
  void set_completion(devices::virtio::BlockCompletion* completion) noexcept override {
    std::lock_guard lock(mu_);
    completion_ = completion;
  }
  bool submit(const devices::virtio::BlockRequest& r) noexcept override {
    std::lock_guard lock(mu_);
    if (queued_.size() >= max_in_flight_) return false;
    queued_.push_back({r.op, r.offset, r.length, std::vector<iovec>(r.iov.begin(), r.iov.end()), r.tag});
    ops_.push_back(r.op);
    return true;
  }
  void kick() noexcept override {
    std::lock_guard lock(mu_);
    ++kicks_;
  }

  // Carries out and reports the request at `index` in the queue (0: the
  // oldest); `error` (an errno) fails it instead. False when there is none.
  bool complete(std::size_t index = 0, int error = 0) {
    devices::virtio::BlockCompletion* completion;
    Pending p;
    std::int64_t result = 0;
    {
      std::lock_guard lock(mu_);
      if (index >= queued_.size()) return false;
      p = std::move(queued_[index]);
      queued_.erase(queued_.begin() + static_cast<std::ptrdiff_t>(index));
      result = error != 0 ? -error : execute(p);
      completion = completion_;
    }
    const devices::virtio::BlockDone done{p.tag, result};
    if (completion != nullptr) completion->complete(std::span(&done, 1));
    return true;
  }
  // Carries out every queued request and reports them in one batch, as a
  // backend does with the completions it finds together.
  std::size_t complete_all() {
    devices::virtio::BlockCompletion* completion;
    std::vector<devices::virtio::BlockDone> batch;
    {
      std::lock_guard lock(mu_);
      for (Pending& p : queued_) batch.push_back({p.tag, execute(p)});
      queued_.clear();
      completion = completion_;
    }
    if (completion != nullptr && !batch.empty()) completion->complete(batch);
    return batch.size();
  }

  std::size_t queued() const {
    std::lock_guard lock(mu_);
    return queued_.size();
  }
  std::optional<Pending> peek(std::size_t index = 0) const {
    std::lock_guard lock(mu_);
    if (index >= queued_.size()) return std::nullopt;
    return queued_[index];
  }
  std::vector<BlockOp> ops() const {
    std::lock_guard lock(mu_);
    return ops_;
  }
  std::uint64_t kicks() const {
    std::lock_guard lock(mu_);
    return kicks_;
  }
  // The disk's bytes (tests read and preset them while nothing runs).
  std::vector<std::uint8_t>& disk() { return disk_; }

 private:
  std::int64_t execute(const Pending& p) {
    std::uint64_t at = p.offset;
    std::uint64_t total = 0;
    switch (p.op) {
      case BlockOp::kRead:
      case BlockOp::kWrite:
        for (const iovec& v : p.iov) {
          if (at + v.iov_len > disk_.size()) return -EIO;
          auto* base = static_cast<std::uint8_t*>(v.iov_base);
          if (p.op == BlockOp::kRead) {
            std::memcpy(base, disk_.data() + at, v.iov_len);
          } else {
            std::memcpy(disk_.data() + at, base, v.iov_len);
          }
          at += v.iov_len;
          total += v.iov_len;
        }
        return static_cast<std::int64_t>(total);
      case BlockOp::kDiscard:
      case BlockOp::kWriteZeroes:
        if (p.offset + p.length > disk_.size()) return -EIO;
        std::fill_n(disk_.begin() + static_cast<std::ptrdiff_t>(p.offset), p.length, std::uint8_t{0});
        return 0;
      case BlockOp::kFlush:
        return 0;
    }
    return -EINVAL;
  }

  mutable std::mutex mu_;
  std::vector<std::uint8_t> disk_;
  const bool read_only_;
  const std::uint32_t max_in_flight_;
  devices::virtio::BlockCompletion* completion_ = nullptr;
  std::deque<Pending> queued_;
  std::vector<BlockOp> ops_;
  std::uint64_t kicks_ = 0;
};

// A guest driver for a VirtioPciFunction, speaking through BAR 0 offsets.
class VirtioDriver {
 public:
  using F = devices::virtio::VirtioPciFunction;

  VirtioDriver(F& function, devices::GuestMemory& memory, std::uint16_t queue_size = 16,
               std::uint64_t ring_base = 0x1000)
      : function_(function), ring_(memory, queue_size, ring_base) {}

  std::uint64_t read(std::uint64_t offset, std::size_t width) {
    std::uint8_t data[8] = {};
    function_.bar_read(0, offset, std::span(data, width));
    return devices::load_le(std::span<const std::uint8_t>(data, width));
  }
  void write(std::uint64_t offset, std::uint64_t value, std::size_t width) {
    std::uint8_t data[8] = {};
    devices::store_le(std::span(data, width), value);
    function_.bar_write(0, offset, std::span<const std::uint8_t>(data, width));
  }
  std::uint64_t common(std::uint32_t field, std::size_t width) { return read(F::kCommonOffset + field, width); }
  void set_common(std::uint32_t field, std::uint64_t value, std::size_t width) {
    write(F::kCommonOffset + field, value, width);
  }

  std::uint8_t status() { return static_cast<std::uint8_t>(common(F::kDeviceStatus, 1)); }
  void set_status(std::uint8_t value) { set_common(F::kDeviceStatus, value, 1); }
  std::uint64_t device_features() {
    set_common(F::kDeviceFeatureSelect, 0, 4);
    std::uint64_t f = common(F::kDeviceFeature, 4);
    set_common(F::kDeviceFeatureSelect, 1, 4);
    return f | common(F::kDeviceFeature, 4) << 32;
  }
  void write_features(std::uint64_t features) {
    set_common(F::kDriverFeatureSelect, 0, 4);
    set_common(F::kDriverFeature, features & 0xFFFF'FFFF, 4);
    set_common(F::kDriverFeatureSelect, 1, 4);
    set_common(F::kDriverFeature, features >> 32, 4);
  }
  // ACKNOWLEDGE, DRIVER, features, FEATURES_OK; true when it stuck.
  bool negotiate(std::uint64_t features) {
    set_status(devices::virtio::kStatusAcknowledge);
    set_status(devices::virtio::kStatusAcknowledge | devices::virtio::kStatusDriver);
    write_features(features);
    set_status(devices::virtio::kStatusAcknowledge | devices::virtio::kStatusDriver |
               devices::virtio::kStatusFeaturesOk);
    return (status() & devices::virtio::kStatusFeaturesOk) != 0;
  }
  void setup_queue(std::uint16_t vector = devices::virtio::kNoVector) { setup_queue(0, ring_, vector); }
  // Queue `queue` on `ring`, which the caller keeps (queue 0 has ring()).
  void setup_queue(std::uint16_t queue, DriverRing& ring, std::uint16_t vector) {
    set_common(F::kQueueSelect, queue, 2);
    set_common(F::kQueueSize, ring.layout().size, 2);
    set_common(F::kQueueMsixVector, vector, 2);
    const auto& l = ring.layout();
    for (auto [field, address] : {std::pair{F::kQueueDesc, l.desc}, std::pair{F::kQueueDriver, l.avail},
                                  std::pair{F::kQueueDevice, l.used}}) {
      set_common(field, address & 0xFFFF'FFFF, 4);  // as Linux: low half, then high half
      set_common(field + 4, address >> 32, 4);
    }
    set_common(F::kQueueEnable, 1, 2);
  }
  void driver_ok() { set_status(status() | devices::virtio::kStatusDriverOk); }
  // The whole of Linux's probe; false when any step did not stick.
  bool init(std::uint64_t features, std::uint16_t vector = devices::virtio::kNoVector) {
    set_status(0);
    ring_.reset();
    if (!negotiate(features)) return false;
    setup_queue(vector);
    driver_ok();
    return (status() & devices::virtio::kStatusDriverOk) != 0 && common(F::kQueueEnable, 2) == 1;
  }
  void kick(std::uint16_t queue = 0) { write(F::notify_offset(queue), queue, 2); }
  std::uint8_t isr() { return static_cast<std::uint8_t>(read(F::kIsrOffset, 1)); }

  DriverRing& ring() { return ring_; }

 private:
  F& function_;
  DriverRing ring_;
};

}  // namespace vmm::testing
