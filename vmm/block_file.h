// A disk image file (or block device) behind a virtio-blk device, with I/O
// on io_uring: the host side of devices::virtio::BlockBackend.
//
// Opening checks everything a user can get wrong and says so in one line
// (vmm::Error): the image missing, not permitted, not a regular file or
// block device, shorter than one 512-byte sector, or in use. Images are
// locked with an open-file-description lock on the whole file: a writable
// open takes it exclusively, a read-only open shared, so a second writer is
// refused, and so is a reader while someone writes (and a writer while
// someone reads); read-only opens share.
//
// I/O: readv / writev go through an O_DIRECT descriptor when the file system
// allows O_DIRECT and the request's offset, lengths and buffer addresses are
// aligned to 512 bytes; otherwise, or when the kernel refuses a direct
// request (EINVAL: then 4096-byte alignment is required from then on),
// through the ordinary descriptor. Flush is fdatasync. Discard punches a
// hole (FALLOC_FL_PUNCH_HOLE | KEEP_SIZE; a file system that cannot is
// taken as having discarded nothing, which a discard allows); write-zeroes
// tries FALLOC_FL_ZERO_RANGE, then a punched hole, then writes zeroes.
// Short reads and writes are continued where they stopped; EAGAIN and EINTR
// are retried; a read that meets the end of a file that shrank meanwhile
// fails with EIO. A request is reported complete only once its last CQE has
// arrived, with the full length or -errno.
//
// Driving it: completion_fd() is an eventfd that becomes readable when CQEs
// are waiting; the thread that owns the device's event loop polls it and
// calls process_completions(), which reports finished requests through the
// BlockCompletion (outside this object's lock). wait_and_process() does
// both with a timeout, for simple loops and tests.
//
// Threading: submit() and kick() may come from any thread (the device calls
// them under its own lock); so may process_completions(), also at once from
// several (the I/O thread, and a vCPU thread reaping after a notification it
// served): each reports the completions it took off the ring. Lock order:
// the device's lock -> this object's lock; completions are called with
// neither held by this object.
#pragma once

#include <liburing.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/virtio/block_backend.h"
#include "timers/unique_fd.h"

namespace vmm {

class BlockFile final : public devices::virtio::BlockBackend {
 public:
  struct Options {
    bool read_only = false;
    bool direct = true;             // use O_DIRECT where the file system allows it
    std::uint32_t queue_depth = 128;  // requests in flight at once (1..4096)
  };

  // Throws vmm::Error with a one-line message naming `path`.
  static std::unique_ptr<BlockFile> open(const std::string& path, const Options& options);
  // Waits for every request in flight; reports none of them.
  ~BlockFile() override;
  BlockFile(const BlockFile&) = delete;
  BlockFile& operator=(const BlockFile&) = delete;

  // BlockBackend.
  std::uint64_t size() const noexcept override { return size_; }
  bool read_only() const noexcept override { return read_only_; }
  bool supports_discard() const noexcept override { return !read_only_; }
  bool supports_write_zeroes() const noexcept override { return !read_only_; }
  std::uint32_t max_in_flight() const noexcept override { return static_cast<std::uint32_t>(ops_.size()); }
  void set_completion(devices::virtio::BlockCompletion* completion) noexcept override;
  bool submit(const devices::virtio::BlockRequest& request) noexcept override;
  void kick() noexcept override;

  int completion_fd() const noexcept { return event_fd_.get(); }
  // Reaps every CQE that has arrived and reports the requests they finish.
  // Returns how many were reported. Never blocks.
  std::size_t process_completions() noexcept;
  // Waits up to `timeout` for completion_fd() to be readable, then
  // process_completions().
  std::size_t wait_and_process(std::chrono::milliseconds timeout) noexcept;

  bool direct_io() const noexcept { return direct_fd_.valid(); }
  const std::string& path() const noexcept { return path_; }
  std::size_t in_flight() const noexcept;

 private:
  struct Op {
    bool busy = false;
    devices::virtio::BlockOp op = devices::virtio::BlockOp::kRead;
    std::uint64_t tag = 0;
    std::uint64_t offset = 0;    // where the next part goes
    std::uint64_t remaining = 0; // bytes still to transfer (reads, writes, zero writes)
    std::uint64_t total = 0;     // what the request asked for
    std::vector<iovec> iov;      // what is left of the caller's iovecs
    std::size_t first = 0;       // iov[first] is the next to transfer
    bool direct = false;
    int stage = 0;               // write-zeroes: 0 zero range, 1 punch hole, 2 write zeroes
  };
  using Done = devices::virtio::BlockDone;

  BlockFile(std::string path, timers::UniqueFd fd, timers::UniqueFd direct_fd, std::uint64_t size, bool read_only,
            std::uint32_t depth);
  // With mu_ held.
  bool aligned(const Op& op) const noexcept;
  bool prepare(std::uint32_t index) noexcept;  // false: no SQE to be had
  void retry(std::uint32_t index, std::vector<Done>& done) noexcept;
  void handle(std::uint32_t index, std::int32_t res, std::vector<Done>& done) noexcept;
  void finish(std::uint32_t index, std::int64_t result, std::vector<Done>& done) noexcept;
  void advance(Op& op, std::uint64_t bytes) noexcept;
  io_uring_sqe* next_sqe() noexcept;
  void submit_pending() noexcept;

  const std::string path_;
  const timers::UniqueFd fd_;
  timers::UniqueFd direct_fd_;
  const std::uint64_t size_;
  const bool read_only_;
  timers::UniqueFd event_fd_;

  mutable std::mutex mu_;
  io_uring ring_{};
  bool ring_ready_ = false;
  devices::virtio::BlockCompletion* completion_ = nullptr;
  std::vector<Op> ops_;
  std::vector<std::uint32_t> free_;
  std::uint32_t unsubmitted_ = 0;  // SQEs prepared, not yet handed to the kernel
  std::uint32_t in_kernel_ = 0;    // SQEs submitted or prepared whose CQE has not been reaped
  std::uint64_t direct_alignment_ = 512;
};

}  // namespace vmm
