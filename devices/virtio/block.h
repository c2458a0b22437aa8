// virtio-blk (VIRTIO 1.1, 5.2) over a BlockBackend: one or more request
// queues; IN, OUT, FLUSH, GET_ID, DISCARD and WRITE_ZEROES.
//
// Offered features: VERSION_1, EVENT_IDX, INDIRECT_DESC, SEG_MAX, BLK_SIZE
// (512), FLUSH; MQ with more than one queue; RO for a read-only disk;
// DISCARD and WRITE_ZEROES (one segment each) when the disk is writable and
// the backend can do them.
//
// Several queues let a guest give each vCPU its own (Linux does, with the
// queue's MSI-X vector bound to that vCPU), so a request completes on the
// vCPU that sent it without an IPI between them. A request completes on the
// queue it came from. The queues share one pool of request slots.
//
// A request is header (16 bytes: type, reserved, sector; device-readable),
// data, status (the last device-writable byte), laid out over descriptors in
// any way (no framing assumed). What the driver gets back:
//   * no status byte (nothing writable) or a header short of 16 bytes: the
//     chain comes back with nothing written (status IOERR where a status
//     byte exists); logged at a rate limit;
//   * data in the wrong direction (readable data for IN, writable data for
//     OUT), a length that is not a multiple of 512, a range past the end of
//     the disk (overflow-safe), more than kMaxSegments data buffers, a bad
//     segment count: IOERR;
//   * OUT, DISCARD or WRITE_ZEROES on a read-only disk: IOERR, nothing
//     written;
//   * DISCARD or WRITE_ZEROES not negotiated, unknown segment flags, DISCARD
//     with the unmap flag, unknown request types: UNSUPP;
//   * the backend's error: IOERR.
// A request completes to the driver (status byte, used entry, interrupt)
// only when the backend reports it complete, and only if no reset came in
// between: a request that was in flight at a reset is forgotten when it
// completes (its slot is freed, nothing in guest memory is touched).
// Completions may arrive in any order; each is handed back by its head.
//
// Threading: see devices/virtio/virtio.h. The backend's completions take
// the transport's lock. Requests in flight are bounded by the queue size
// times the number of queues and by the backend's max_in_flight(); when
// full, the device stops taking chains, and every queue that stopped
// resumes on the next completion.
//
// Interrupt coalescing (Options::coalesce, off by default), adaptive. A
// held interrupt waits one interval after the completion that began it, so
// that the completions of the interval share it; the driver's
// notifications of that queue stay off meanwhile, and when the interval
// ends (release_due()) the queue is signalled and the chains posted
// meanwhile are taken in one go. Every interrupt and every notification is
// a VM exit; at depth the guest then hears of many completions, and posts
// many requests, per exit. A queue holds while its last held interrupt
// announced more than one completion, or found chains posted while it
// waited (either way the driver keeps several requests going);
// otherwise it signals at once, and holds one interrupt in every
// kCoalescingProbeEvery to find out whether depth came back. The device
// cannot tell depth from the rings alone: a backend that completes before
// the guest posts its next request looks the same at depth 1 and 32.
// The interval is fixed, or (coalesce_follows_completions) twice the
// queue's recent gap between completions with Options::coalesce as its
// ceiling: where completions come every few microseconds a hold lasts a
// few microseconds, and it only grows to the ceiling where they are slow,
// where each saved exit is worth the most.
// Depth verdicts (Options::on_depth, needs coalescing): a queue whose
// probing holds found depth 1 kShallowAfterReleases times in a row is
// reported shallow; the first hold that finds it at depth again reports it
// deep, and so do activate() and reset() for every queue reported shallow.
// The VMM routes notifications by it (vmm/virtio_disks.h: at depth 1 the
// notifying vCPU thread serves them itself).
// At depth the driver's notifications stay off between holds as well: a
// queue released at depth with requests still in flight goes quiet, and
// each completion takes what the driver posted meanwhile (the completions
// are the polling, and they come at least as often as the interrupts the
// driver answers by posting). Quiet ends one hold interval after the
// release, or when the queue's last request in flight completes, and then
// notifications are on again (looking once more for chains posted
// without one), so a chain never waits longer than that interval.
#pragma once

#include <sys/uio.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "devices/virtio/block_backend.h"
#include "devices/virtio/virtio.h"
#include "devices/virtio/virtqueue.h"

namespace vmm::devices::virtio {

class VirtioBlock final : public VirtioDevice, private BlockCompletion {
 public:
  // Request types and status values (5.2.6).
  static constexpr std::uint32_t kTypeIn = 0, kTypeOut = 1, kTypeFlush = 4, kTypeGetId = 8, kTypeDiscard = 11,
                                 kTypeWriteZeroes = 13;
  static constexpr std::uint8_t kStatusOk = 0, kStatusIoErr = 1, kStatusUnsupported = 2;
  // Feature bits (5.2.3).
  static constexpr unsigned kFeatureSegMax = 2, kFeatureReadOnly = 5, kFeatureBlockSize = 6, kFeatureFlush = 9,
                            kFeatureMq = 12, kFeatureDiscard = 13, kFeatureWriteZeroes = 14;
  static constexpr std::uint16_t kMaxQueues = 64;
  static constexpr std::uint32_t kSectorSize = 512;
  static constexpr std::size_t kHeaderSize = 16;
  static constexpr std::size_t kIdBytes = 20;
  static constexpr std::size_t kSegmentSize = 16;  // discard / write-zeroes range
  static constexpr std::uint32_t kSegmentUnmap = 1;
  static constexpr std::size_t kMaxSegments = 1024;  // data buffers in one request (IOV_MAX)
  static constexpr std::uint32_t kMaxDiscardSectors = 0x3F'FFFF;  // 2 GiB - 512 in one request
  static constexpr std::uint32_t kDiscardAlignment = 8;           // sectors (4 KiB)
  static constexpr std::uint32_t kConfigSize = 60;
  // Interrupts sent at once between two probing holds (coalescing).
  static constexpr std::uint32_t kCoalescingProbeEvery = 32;
  // An adaptive hold lasts this many recent gaps between completions: long
  // enough to gather a second completion at depth, and short where the
  // disk is fast (a hold delays a completion by at most this many gaps).
  static constexpr int kCoalescingGapsPerHold = 2;
  // Weight of the newest gap in the running average: 1/kGapAverageWeight.
  static constexpr int kGapAverageWeight = 8;
  // Probing holds in a row that found depth 1 before a queue is reported
  // shallow (at one probe in kCoalescingProbeEvery interrupts: 128 requests).
  static constexpr std::uint8_t kShallowAfterReleases = 4;

  struct Options {
    std::string serial;               // GET_ID: up to 20 bytes, zero padded
    std::uint16_t queue_size = 256;   // a power of two
    std::uint16_t queues = 1;         // 1 to kMaxQueues
    std::chrono::nanoseconds coalesce{0};  // the coalescing interval (its ceiling if adaptive); 0: none
    // Monotonic time for coalescing (timers::MonotonicClock when empty).
    std::function<std::chrono::nanoseconds()> clock{};
    // Called, with the device's lock held, when a queue's signal starts to
    // wait: whoever calls release_due() must look again (a hold can begin
    // on any thread that notifies).
    std::function<void()> on_hold{};
    // The interval follows the queue: kCoalescingGapsPerHold times the recent
    // gap between its completions, never more than `coalesce`.
    bool coalesce_follows_completions = false;
    // Called, with the device's lock held, when a queue's depth verdict
    // changes: at_depth false once it is seen at depth 1, true when depth
    // comes back or the queues are set up again (see above).
    std::function<void(std::uint16_t queue, bool at_depth)> on_depth{};
  };

  // Takes the backend (destroyed first in ~VirtioBlock, which waits for
  // requests in flight there). Throws vmm::Error on a bad option.
  VirtioBlock(std::unique_ptr<BlockBackend> backend, Options options);
  ~VirtioBlock() override;
  VirtioBlock(const VirtioBlock&) = delete;
  VirtioBlock& operator=(const VirtioBlock&) = delete;

  BlockBackend& backend() noexcept { return *backend_; }
  std::uint64_t capacity_sectors() const noexcept { return capacity_; }

  // VirtioDevice.
  std::uint16_t device_type() const noexcept override { return kDeviceBlock; }
  std::uint64_t device_features() const noexcept override { return features_; }
  std::uint16_t queue_count() const noexcept override { return queue_count_; }
  std::uint16_t max_queue_size() const noexcept override { return queue_size_; }
  std::uint32_t config_size() const noexcept override { return kConfigSize; }
  void attach(VirtioTransport& transport, std::mutex& lock) noexcept override;
  void read_config(std::uint32_t offset, std::span<std::uint8_t> data) noexcept override;
  void write_config(std::uint32_t offset, std::span<const std::uint8_t> data) noexcept override;
  void activate(std::uint64_t features, std::span<SplitQueue> queues) noexcept override;
  void queue_notify(std::uint16_t queue) noexcept override;
  std::size_t reset() noexcept override;
  std::size_t in_flight() const noexcept override { return in_flight_; }

  // Coalescing: signals each queue whose held interrupt is due at `now`
  // (and takes the chains posted to it meanwhile); returns when the next
  // held one is due, if any. Takes the device's lock.
  std::optional<std::chrono::nanoseconds> release_due(std::chrono::nanoseconds now) noexcept;

 private:
  struct Slot {
    bool busy = false;
    std::uint64_t epoch = 0;
    std::uint16_t queue = 0;
    std::uint16_t head = 0;
    std::uint8_t* status = nullptr;  // in guest RAM
    std::uint32_t written = 0;       // used length on success
    std::vector<iovec> iov;
  };

  struct Coalescing {
    std::chrono::nanoseconds release_at{0};  // while held
    std::uint16_t answered_used = 0;         // the used index when last signalled or released
    std::uint32_t signalled_at_once = 0;     // since the last hold
    bool at_depth = false;                   // the last interval gathered more than one
    std::chrono::nanoseconds last_completion{0};  // adaptive: when a batch last completed here
    std::chrono::nanoseconds gap{0};              // adaptive: running average between batches; 0: none yet
    std::chrono::nanoseconds quiet_until{0};      // while quiet
    bool shallow = false;                         // reported at depth 1 through on_depth
    std::uint8_t releases_at_depth_one = 0;       // holds in a row that found depth 1
  };

  void complete(std::span<const BlockDone> batch) noexcept override;
  void forget_coalescing() noexcept;
  // After a release found queue `q` at depth (`at_depth`) or not: updates
  // its verdict and reports a change.
  void judge_depth(std::uint16_t q, bool at_depth) noexcept;
  // How long a hold of the queue whose state is `c` lasts: the fixed
  // interval, or kCoalescingGapsPerHold gaps up to it (adaptive).
  std::chrono::nanoseconds hold_interval(const Coalescing& c) const noexcept;
  // After `queue` handed chains back: signals it now, or holds the signal
  // (coalescing).
  void answer(std::uint16_t queue) noexcept;
  bool held(std::uint16_t queue) const noexcept { return (held_ >> queue & 1) != 0; }
  bool quiet(std::uint16_t queue) const noexcept { return (quiet_ >> queue & 1) != 0; }
  // Takes the chains of `queue` while slots are free, then answers it.
  void process(std::uint16_t queue) noexcept;
  // Handles one chain of `queue`: finished at once (status written, used
  // pushed) or handed to the backend.
  void handle(std::uint16_t queue, const Chain& chain) noexcept;
  void finish(std::uint16_t queue, std::uint16_t head, std::uint8_t* status, std::uint8_t value,
              std::uint32_t written) noexcept;
  bool in_range(std::uint64_t sector, std::uint64_t sectors) const noexcept;
  // Hands `request` (its iovecs already in the last free slot) to the
  // backend, or finishes it with IOERR when the backend refuses.
  void submit(BlockRequest request, std::uint16_t queue, std::uint16_t head, std::uint8_t* status,
              std::uint32_t written) noexcept;

  std::unique_ptr<BlockBackend> backend_;
  const std::uint16_t queue_size_;
  const std::uint16_t queue_count_;
  const std::chrono::nanoseconds coalesce_;
  const bool coalesce_follows_completions_;
  const std::function<std::chrono::nanoseconds()> clock_;
  const std::function<void()> on_hold_;
  const std::function<void(std::uint16_t, bool)> on_depth_;
  const std::uint64_t capacity_;  // sectors
  const std::uint64_t features_;
  std::array<std::uint8_t, kConfigSize> config_{};
  std::array<std::uint8_t, kIdBytes> id_{};

  VirtioTransport* transport_ = nullptr;
  std::mutex* lock_ = nullptr;
  // Guarded by *lock_.
  std::span<SplitQueue> queues_;
  std::uint64_t features_negotiated_ = 0;
  bool active_ = false;
  bool broken_ = false;
  std::uint64_t held_ = 0;   // bit q: queue q's interrupt waits for its release_at
  std::uint64_t quiet_ = 0;  // bit q: queue q's notifications stay off until its quiet_until
  std::vector<Coalescing> coalescing_;  // per queue
  std::vector<std::uint32_t> queue_in_flight_;  // per queue: its requests at the backend, this epoch
  std::uint64_t epoch_ = 0;
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_slots_;
  std::uint64_t starved_ = 0;  // bit q: queue q stopped for want of a slot
  std::size_t in_flight_ = 0;
  Chain chain_;  // reused
};

}  // namespace vmm::devices::virtio
