// What a virtio-blk device asks of the storage behind it: asynchronous
// reads and writes of guest memory, flush, discard and write-zeroes, each
// reported once through a completion carrying a result. vmm/block_file
// implements it with io_uring on an image file; tests with memory.
//
// Contract:
// * submit() queues one request or returns false when max_in_flight() are
//   already queued (nothing happened then). It never calls the completion
//   itself, so a caller may hold its own lock across it.
// * kick() starts everything queued since the last kick (one system call
//   for a batch).
// * Each accepted request completes exactly once, through the completion
//   set with set_completion(), with the number of bytes transferred (reads
//   and writes: all of them) or -errno; requests that completed together
//   are reported in one call. The completion runs on whichever
//   thread drives the backend (vmm/block_file: its process_completions()),
//   never with the backend's own lock held, and may submit again.
// * The iovec array and the guest memory it points to must stay valid until
//   the request completes; the memory is written (reads) or read (writes)
//   by the backend at any time until then.
// * Destroying the backend waits for every request it started to finish and
//   calls no completion.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>

namespace vmm::devices::virtio {

enum class BlockOp : std::uint8_t { kRead, kWrite, kFlush, kDiscard, kWriteZeroes };

struct BlockRequest {
  BlockOp op = BlockOp::kRead;
  std::uint64_t offset = 0;           // bytes from the start of the disk
  std::uint64_t length = 0;           // discard and write-zeroes; reads and writes use iov
  std::span<const iovec> iov;         // reads and writes
  std::uint64_t tag = 0;              // handed back to the completion
};

// One request's end: its tag and its result (bytes, or -errno).
struct BlockDone {
  std::uint64_t tag = 0;
  std::int64_t result = 0;
};

class BlockCompletion {
 public:
  virtual ~BlockCompletion() = default;
  // The requests that completed together (one pass over the backend's
  // completion queue), so that the device can answer them under one lock
  // and interrupt the driver once for all of them.
  virtual void complete(std::span<const BlockDone> batch) noexcept = 0;
};

class BlockBackend {
 public:
  virtual ~BlockBackend() = default;

  virtual std::uint64_t size() const noexcept = 0;  // bytes
  virtual bool read_only() const noexcept = 0;
  virtual bool supports_discard() const noexcept = 0;
  virtual bool supports_write_zeroes() const noexcept = 0;
  virtual std::uint32_t max_in_flight() const noexcept = 0;

  virtual void set_completion(BlockCompletion* completion) noexcept = 0;
  virtual bool submit(const BlockRequest& request) noexcept = 0;
  virtual void kick() noexcept = 0;
};

}  // namespace vmm::devices::virtio
