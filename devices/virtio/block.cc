#include "devices/virtio/block.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include <spdlog/spdlog.h>

#include "devices/bus.h"
#include "devices/error.h"
#include "devices/rate_limit.h"
#include "timers/clock.h"

namespace vmm::devices::virtio {

namespace {

RateLimit g_chain_log;
RateLimit g_request_log;

// Appends iovecs for bytes [skip, skip + length) of `spans`; false when
// more than `limit` would be needed.
bool append_iov(std::vector<iovec>& out, std::span<const std::span<std::uint8_t>> spans, std::uint64_t skip,
                std::uint64_t length, std::size_t limit) {
  return for_each_piece(spans, skip, length, [&](std::uint8_t* data, std::uint64_t, std::uint64_t n) {
           if (out.size() == limit) return false;
           out.push_back(iovec{data, n});
           return true;
         }) == length;
}

}  // namespace

VirtioBlock::VirtioBlock(std::unique_ptr<BlockBackend> backend, Options options)
    : backend_(std::move(backend)),
      queue_size_(options.queue_size),
      queue_count_(options.queues),
      coalesce_(options.coalesce),
      coalesce_follows_completions_(options.coalesce_follows_completions),
      clock_(options.clock ? std::move(options.clock) : [] {
        return std::chrono::nanoseconds(timers::MonotonicClock::instance().now());
      }),
      on_hold_(std::move(options.on_hold)),
      on_depth_(std::move(options.on_depth)),
      capacity_(backend_ ? backend_->size() / kSectorSize : 0),
      features_([&] {
        if (!backend_) return std::uint64_t{0};
        std::uint64_t f = bit(kFeatureVersion1) | bit(kFeatureEventIdx) | bit(kFeatureIndirectDesc) |
                          bit(kFeatureSegMax) | bit(kFeatureBlockSize) | bit(kFeatureFlush);
        if (options.queues > 1) f |= bit(kFeatureMq);
        if (backend_->read_only()) {
          f |= bit(kFeatureReadOnly);
        } else {
          if (backend_->supports_discard()) f |= bit(kFeatureDiscard);
          if (backend_->supports_write_zeroes()) f |= bit(kFeatureWriteZeroes);
        }
        return f;
      }()) {
  if (!backend_) throw Error("virtio-blk: no backend");
  if (queue_size_ == 0 || queue_size_ > SplitQueue::kMaxSize || (queue_size_ & (queue_size_ - 1)) != 0) {
    throw Error("virtio-blk: queue size " + std::to_string(queue_size_) + " is not a power of two up to 32768");
  }
  if (queue_count_ == 0 || queue_count_ > kMaxQueues) {
    throw Error("virtio-blk: " + std::to_string(queue_count_) + " queues; between 1 and " +
                std::to_string(kMaxQueues) + " are supported");
  }
  if (options.serial.size() > kIdBytes) {
    throw Error("virtio-blk: serial '" + options.serial + "' is longer than 20 bytes");
  }
  if (capacity_ == 0) throw Error("virtio-blk: the disk is shorter than one 512-byte sector");
  if (coalesce_.count() < 0) throw Error("virtio-blk: a negative interrupt coalescing interval");
  coalescing_.resize(queue_count_);
  queue_in_flight_.resize(queue_count_);
  const std::uint32_t slots = std::min<std::uint32_t>(std::uint32_t{queue_size_} * queue_count_,
                                                      backend_->max_in_flight());
  if (slots == 0) throw Error("virtio-blk: the backend accepts no requests");
  slots_.resize(slots);
  for (std::uint32_t i = slots; i-- > 0;) free_slots_.push_back(i);
  std::memcpy(id_.data(), options.serial.data(), options.serial.size());

  auto put = [this](std::size_t at, std::uint64_t value, std::size_t width) {
    store_le(std::span(config_.data() + at, width), value);
  };
  put(0, capacity_, 8);                                                                // capacity
  put(12, std::clamp<std::uint32_t>(queue_size_ - 2u, 1, kMaxSegments), 4);            // seg_max
  put(20, kSectorSize, 4);                                                             // blk_size
  put(34, queue_count_, 2);                                                            // num_queues
  put(36, kMaxDiscardSectors, 4);                                                      // max_discard_sectors
  put(40, 1, 4);                                                                       // max_discard_seg
  put(44, kDiscardAlignment, 4);                                                       // discard_sector_alignment
  put(48, kMaxDiscardSectors, 4);                                                      // max_write_zeroes_sectors
  put(52, 1, 4);                                                                       // max_write_zeroes_seg
  put(56, 1, 1);                                                                       // write_zeroes_may_unmap
  backend_->set_completion(this);
}

VirtioBlock::~VirtioBlock() {
  // Waits for the backend's requests in flight; it completes none of them.
  backend_->set_completion(nullptr);
}

void VirtioBlock::attach(VirtioTransport& transport, std::mutex& lock) noexcept {
  transport_ = &transport;
  lock_ = &lock;
}

void VirtioBlock::read_config(std::uint32_t offset, std::span<std::uint8_t> data) noexcept {
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = offset + i < config_.size() ? config_[offset + i] : 0;
}

void VirtioBlock::write_config(std::uint32_t, std::span<const std::uint8_t>) noexcept {
  // Nothing is writable: the writeback field exists only with CONFIG_WCE.
}

void VirtioBlock::activate(std::uint64_t features, std::span<SplitQueue> queues) noexcept {
  features_negotiated_ = features;
  queues_ = queues;
  active_ = !queues.empty();
  broken_ = false;
  starved_ = 0;
  forget_coalescing();
}

std::size_t VirtioBlock::reset() noexcept {
  ++epoch_;  // whatever is in flight now completes into nothing
  active_ = false;
  broken_ = false;
  starved_ = 0;
  forget_coalescing();
  std::fill(queue_in_flight_.begin(), queue_in_flight_.end(), 0);
  queues_ = {};
  features_negotiated_ = 0;
  return in_flight_;
}

void VirtioBlock::queue_notify(std::uint16_t queue) noexcept {
  if (queue < queues_.size()) process(queue);
}

void VirtioBlock::process(std::uint16_t index) noexcept {
  if (!active_ || broken_ || index >= queues_.size() || !queues_[index].active()) return;
  SplitQueue& queue = queues_[index];
  starved_ &= ~(std::uint64_t{1} << index);
  ChainError why = ChainError::kNone;
  for (bool more = true; more;) {
    queue.disable_notification();
    bool drained = false;
    while (!drained && !free_slots_.empty() && !broken_) {
      switch (queue.pop(chain_, why)) {
        case SplitQueue::Pop::kEmpty:
          drained = true;
          break;
        case SplitQueue::Pop::kBroken:
          if (g_chain_log.allow()) {
            spdlog::warn("virtio-blk: queue broken: {}; device needs reset ({} suppressed)", to_string(why),
                         g_chain_log.take_suppressed());
          }
          broken_ = true;
          transport_->needs_reset();
          break;
        case SplitQueue::Pop::kBadChain:
          if (g_chain_log.allow()) {
            spdlog::warn("virtio-blk: chain {} refused: {} ({} suppressed)", chain_.head, to_string(why),
                         g_chain_log.take_suppressed());
          }
          queue.push_used(chain_.head, 0);
          break;
        case SplitQueue::Pop::kChain:
          handle(index, chain_);
          break;
      }
    }
    // Out of slots: stop here; the next completion resumes.
    if (!drained && free_slots_.empty()) starved_ |= std::uint64_t{1} << index;
    // A held queue is looked at again when its signal goes, a quiet one at
    // its next completion: the driver need not notify until then.
    more = drained && !held(index) && !quiet(index) && queue.enable_notification();
  }
  backend_->kick();
  answer(index);
}

void VirtioBlock::answer(std::uint16_t index) noexcept {
  SplitQueue& queue = queues_[index];
  if (!queue.has_unsignalled_used() || held(index)) return;
  Coalescing& c = coalescing_[index];
  if (coalesce_.count() == 0 || (!c.at_depth && c.signalled_at_once < kCoalescingProbeEvery)) {
    if (queue.needs_signal()) {
      transport_->signal_queue(index);
      ++c.signalled_at_once;
    }
    c.answered_used = queue.next_used();
    return;
  }
  held_ |= std::uint64_t{1} << index;
  c.release_at = clock_() + hold_interval(c);
  if (on_hold_) on_hold_();
}

std::optional<std::chrono::nanoseconds> VirtioBlock::release_due(std::chrono::nanoseconds now) noexcept {
  // Off, nothing is ever held: the I/O thread asks after every wake-up, and
  // need not take the device's lock for it.
  if (coalesce_.count() == 0) return std::nullopt;
  std::lock_guard lock(*lock_);
  for (std::uint64_t due = held_; due != 0; due &= due - 1) {
    const auto q = static_cast<std::uint16_t>(std::countr_zero(due));
    Coalescing& c = coalescing_[q];
    if (c.release_at > now) continue;
    held_ &= ~(std::uint64_t{1} << q);
    // More than one completion to announce, or chains posted while the
    // interrupt waited: the driver keeps several requests going, and the
    // next completion is held at once.
    c.at_depth = static_cast<std::uint16_t>(queues_[q].next_used() - c.answered_used) > 1 ||
                 queues_[q].available() > 0;
    c.signalled_at_once = 0;
    judge_depth(q, c.at_depth);
    c.answered_used = queues_[q].next_used();
    if (queues_[q].needs_signal()) transport_->signal_queue(q);
    if (c.at_depth && queue_in_flight_[q] > 0) {
      quiet_ |= std::uint64_t{1} << q;
      c.quiet_until = now + hold_interval(c);
    }
    process(q);  // what the driver posted meanwhile, and notifications on again unless quiet
  }
  for (std::uint64_t due = quiet_; due != 0; due &= due - 1) {
    const auto q = static_cast<std::uint16_t>(std::countr_zero(due));
    if (coalescing_[q].quiet_until > now) continue;
    quiet_ &= ~(std::uint64_t{1} << q);
    process(q);  // notifications on again, and what came without one
  }
  std::optional<std::chrono::nanoseconds> next;
  const auto earliest = [&](std::uint64_t queues, std::chrono::nanoseconds Coalescing::*deadline) {
    for (; queues != 0; queues &= queues - 1) {
      const std::chrono::nanoseconds at = coalescing_[std::countr_zero(queues)].*deadline;
      if (!next || at < *next) next = at;
    }
  };
  earliest(held_, &Coalescing::release_at);
  earliest(quiet_, &Coalescing::quiet_until);
  return next;
}

std::chrono::nanoseconds VirtioBlock::hold_interval(const Coalescing& c) const noexcept {
  // No gap measured yet: the ceiling, as a fixed interval would.
  if (!coalesce_follows_completions_ || c.gap.count() == 0) return coalesce_;
  return std::min(coalesce_, c.gap * kCoalescingGapsPerHold);
}

void VirtioBlock::forget_coalescing() noexcept {
  held_ = 0;
  quiet_ = 0;
  // Whoever routed a queue by its depth puts it back as it was at power-on.
  for (std::size_t q = 0; q < coalescing_.size(); ++q) {
    if (coalescing_[q].shallow && on_depth_) on_depth_(static_cast<std::uint16_t>(q), true);
  }
  std::fill(coalescing_.begin(), coalescing_.end(), Coalescing{});
}

void VirtioBlock::judge_depth(std::uint16_t q, bool at_depth) noexcept {
  Coalescing& c = coalescing_[q];
  if (at_depth) {
    c.releases_at_depth_one = 0;
    if (!c.shallow) return;
    c.shallow = false;
  } else {
    if (c.shallow || ++c.releases_at_depth_one < kShallowAfterReleases) return;
    c.shallow = true;
  }
  if (on_depth_) on_depth_(q, at_depth);
}

bool VirtioBlock::in_range(std::uint64_t sector, std::uint64_t sectors) const noexcept {
  return sector <= capacity_ && sectors <= capacity_ - sector;
}

void VirtioBlock::finish(std::uint16_t queue, std::uint16_t head, std::uint8_t* status, std::uint8_t value,
                         std::uint32_t written) noexcept {
  if (status != nullptr) *status = value;
  queues_[queue].push_used(head, written);
}

void VirtioBlock::handle(std::uint16_t queue, const Chain& chain) noexcept {
  auto refuse = [&](const char* why) {
    if (g_request_log.allow()) {
      spdlog::warn("virtio-blk: request {} refused: {} ({} suppressed)", chain.head, why,
                   g_request_log.take_suppressed());
    }
  };
  if (chain.writable_bytes == 0) {
    refuse("no status byte");
    queues_[queue].push_used(chain.head, 0);
    return;
  }
  std::uint8_t* status = &chain.writable.back().back();
  std::array<std::uint8_t, kHeaderSize> header{};
  if (!gather(chain.readable, 0, header)) {
    refuse("header shorter than 16 bytes");
    finish(queue, chain.head, status, kStatusIoErr, 1);
    return;
  }
  const auto type = static_cast<std::uint32_t>(load_le(std::span<const std::uint8_t>(header.data(), 4)));
  const std::uint64_t sector = load_le(std::span<const std::uint8_t>(header.data() + 8, 8));
  const std::uint64_t data_out = chain.readable_bytes - kHeaderSize;
  const std::uint64_t data_in = chain.writable_bytes - 1;
  auto error = [&](std::uint8_t value, const char* why) {
    refuse(why);
    finish(queue, chain.head, status, value, 1);
  };
  const std::uint32_t slot_index = free_slots_.back();
  std::vector<iovec>& iov = slots_[slot_index].iov;
  iov.clear();

  switch (type) {
    case kTypeIn:
    case kTypeOut: {
      const bool in = type == kTypeIn;
      const std::uint64_t bytes = in ? data_in : data_out;
      if (!in && backend_->read_only()) return error(kStatusIoErr, "write to a read-only disk");
      if ((in ? data_out : data_in) != 0) return error(kStatusIoErr, "data buffers in the wrong direction");
      if (bytes % kSectorSize != 0) return error(kStatusIoErr, "length not a multiple of 512");
      if (!in_range(sector, bytes / kSectorSize)) return error(kStatusIoErr, "sectors past the end of the disk");
      if (bytes == 0) return finish(queue, chain.head, status, kStatusOk, 1);
      const bool fits = in ? append_iov(iov, chain.writable, 0, bytes, kMaxSegments)
                           : append_iov(iov, chain.readable, kHeaderSize, bytes, kMaxSegments);
      if (!fits) return error(kStatusIoErr, "too many data buffers");
      BlockRequest request;
      request.op = in ? BlockOp::kRead : BlockOp::kWrite;
      request.offset = sector * kSectorSize;
      submit(request, queue, chain.head, status, static_cast<std::uint32_t>(in ? bytes + 1 : 1));
      return;
    }
    case kTypeFlush: {
      BlockRequest request;
      request.op = BlockOp::kFlush;
      submit(request, queue, chain.head, status, 1);
      return;
    }
    case kTypeGetId: {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kIdBytes, data_in));
      scatter(chain.writable, 0, std::span<const std::uint8_t>(id_.data(), n));
      return finish(queue, chain.head, status, kStatusOk, static_cast<std::uint32_t>(n + 1));
    }
    case kTypeDiscard:
    case kTypeWriteZeroes: {
      const bool discard = type == kTypeDiscard;
      if ((features_negotiated_ & bit(discard ? kFeatureDiscard : kFeatureWriteZeroes)) == 0) {
        return error(kStatusUnsupported, "discard or write-zeroes not negotiated");
      }
      if (backend_->read_only()) return error(kStatusIoErr, "discard or write-zeroes on a read-only disk");
      if (data_in != 0 || data_out != kSegmentSize) return error(kStatusIoErr, "not exactly one range segment");
      std::array<std::uint8_t, kSegmentSize> segment{};
      gather(chain.readable, kHeaderSize, segment);
      const std::uint64_t first = load_le(std::span<const std::uint8_t>(segment.data(), 8));
      const auto count = static_cast<std::uint32_t>(load_le(std::span<const std::uint8_t>(segment.data() + 8, 4)));
      const auto flags = static_cast<std::uint32_t>(load_le(std::span<const std::uint8_t>(segment.data() + 12, 4)));
      if ((flags & ~kSegmentUnmap) != 0 || (discard && (flags & kSegmentUnmap) != 0)) {
        return error(kStatusUnsupported, "unsupported segment flags");
      }
      if (count > kMaxDiscardSectors || !in_range(first, count)) return error(kStatusIoErr, "range past the end");
      if (count == 0) return finish(queue, chain.head, status, kStatusOk, 1);
      BlockRequest request;
      request.op = discard ? BlockOp::kDiscard : BlockOp::kWriteZeroes;
      request.offset = first * kSectorSize;
      request.length = std::uint64_t{count} * kSectorSize;
      submit(request, queue, chain.head, status, 1);
      return;
    }
    default:
      return error(kStatusUnsupported, "unknown request type");
  }
}

void VirtioBlock::submit(BlockRequest request, std::uint16_t queue, std::uint16_t head, std::uint8_t* status,
                         std::uint32_t written) noexcept {
  const std::uint32_t index = free_slots_.back();
  Slot& slot = slots_[index];
  request.iov = slot.iov;
  request.tag = index;
  if (!backend_->submit(request)) {
    if (g_request_log.allow()) {
      spdlog::warn("virtio-blk: backend refused request {} ({} suppressed)", head, g_request_log.take_suppressed());
    }
    finish(queue, head, status, kStatusIoErr, 1);
    return;
  }
  free_slots_.pop_back();
  slot.busy = true;
  slot.epoch = epoch_;
  slot.queue = queue;
  slot.head = head;
  slot.status = status;
  slot.written = written;
  ++in_flight_;
  ++queue_in_flight_[queue];
}

void VirtioBlock::complete(std::span<const BlockDone> batch) noexcept {
  std::lock_guard lock(*lock_);
  std::uint64_t answered = 0;  // bit q: a request of queue q went back to the driver
  for (const BlockDone& done : batch) {
    if (done.tag >= slots_.size() || !slots_[done.tag].busy) continue;  // the backend broke its contract
    Slot& slot = slots_[done.tag];
    slot.busy = false;
    free_slots_.push_back(static_cast<std::uint32_t>(done.tag));
    --in_flight_;
    if (slot.epoch != epoch_) continue;
    // The queue's last request back: nothing left whose completion would
    // take what the driver posts, so it must notify again.
    if (--queue_in_flight_[slot.queue] == 0) quiet_ &= ~(std::uint64_t{1} << slot.queue);
    if (!active_) continue;
    if (done.result < 0 && g_request_log.allow()) {
      spdlog::warn("virtio-blk: request {} failed: {} ({} suppressed)", slot.head,
                   std::strerror(static_cast<int>(-done.result)), g_request_log.take_suppressed());
    }
    finish(slot.queue, slot.head, slot.status, done.result < 0 ? kStatusIoErr : kStatusOk,
           done.result < 0 ? 1 : slot.written);
    answered |= std::uint64_t{1} << slot.queue;
  }
  if (coalesce_follows_completions_ && answered != 0) {
    // One sample per batch: completions that arrive together are one event
    // to the guest, which hears of them in one interrupt anyway.
    const std::chrono::nanoseconds now = clock_();
    for (std::uint64_t q = answered; q != 0; q &= q - 1) {
      Coalescing& c = coalescing_[std::countr_zero(q)];
      if (c.last_completion.count() != 0) {
        const std::chrono::nanoseconds gap = now - c.last_completion;
        c.gap = c.gap.count() == 0 ? gap : c.gap + (gap - c.gap) / kGapAverageWeight;
      }
      c.last_completion = now;
    }
  }
  // Each queue answered takes the chains that waited for a slot and signals
  // the driver once for the whole batch; queues that stopped for want of a
  // slot resume as well.
  for (std::uint64_t waiting = answered | starved_; waiting != 0; waiting &= waiting - 1) {
    process(static_cast<std::uint16_t>(std::countr_zero(waiting)));
  }
  if (in_flight_ == 0) transport_->became_idle();
}

}  // namespace vmm::devices::virtio
