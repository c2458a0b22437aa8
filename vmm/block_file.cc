#include "vmm/block_file.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "timers/restricted_ring.h"

namespace vmm {

namespace {

using devices::virtio::BlockOp;

constexpr std::uint64_t kSector = 512;
constexpr std::size_t kZeroChunk = 64 * 1024;
constexpr std::uint32_t kMaxIov = 1024;  // IOV_MAX
alignas(4096) std::uint8_t g_zeroes[kZeroChunk];  // never written

bool unsupported(std::int32_t res) { return res == -EOPNOTSUPP || res == -EINVAL || res == -ENOSYS; }

[[noreturn]] void refuse(const std::string& path, const std::string& what) {
  throw Error("disk image " + path + ": " + what);
}

}  // namespace

std::unique_ptr<BlockFile> BlockFile::open(const std::string& path, const Options& options) {
  if (options.queue_depth == 0 || options.queue_depth > 4096) refuse(path, "queue depth must be 1..4096");
  const int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  timers::UniqueFd fd(::open(path.c_str(), flags));
  if (!fd) {
    const int err = errno;
    switch (err) {
      case ENOENT:
        refuse(path, "no such file");
      case EACCES:
      case EPERM:
        refuse(path, options.read_only ? "permission denied" : "permission denied (add ,readonly if reading is allowed)");
      case EISDIR:
        refuse(path, "not a regular file or block device");
      case EROFS:
        refuse(path, "on a read-only file system (add ,readonly)");
      default:
        refuse(path, std::string("cannot open: ") + std::strerror(err));
    }
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) refuse(path, std::string("cannot stat: ") + std::strerror(errno));
  std::uint64_t size = 0;
  if (S_ISREG(st.st_mode)) {
    size = static_cast<std::uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0) refuse(path, std::string("cannot size: ") + std::strerror(errno));
  } else {
    refuse(path, "not a regular file or block device");
  }
  if (size < kSector) {
    refuse(path, "shorter than one 512-byte sector (" + std::to_string(size) + " bytes)");
  }
  if (size % kSector != 0) {
    spdlog::warn("disk image {}: the last {} bytes (less than a sector) are not visible to the guest", path,
                 size % kSector);
  }

  // Whole-file OFD lock: exclusive to write, shared to read.
  struct flock lock {};
  lock.l_type = options.read_only ? F_RDLCK : F_WRLCK;
  lock.l_whence = SEEK_SET;
  if (::fcntl(fd.get(), F_OFD_SETLK, &lock) != 0) {
    const int err = errno;
    if (err == EAGAIN || err == EACCES) {
      refuse(path, options.read_only ? "in use: another process is writing to it"
                                     : "in use: another process has it open (a second writer is refused)");
    }
    refuse(path, std::string("cannot lock: ") + std::strerror(err));
  }

  timers::UniqueFd direct;
  if (options.direct) {
    direct.reset(::open(path.c_str(), flags | O_DIRECT));
    if (!direct) spdlog::debug("disk image {}: no O_DIRECT here ({}), buffered I/O only", path, std::strerror(errno));
  }

  std::unique_ptr<BlockFile> file(new BlockFile(path, std::move(fd), std::move(direct), size, options.read_only,
                                                options.queue_depth));
  file->event_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!file->event_fd_) refuse(path, std::string("cannot create an eventfd: ") + std::strerror(errno));
  // The ring runs the operations submit() prepares, nothing else.
  const int r = timers::init_restricted_ring(file->ring_, options.queue_depth,
                                             {IORING_OP_NOP, IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_WRITE,
                                              IORING_OP_FSYNC, IORING_OP_FALLOCATE},
                                             file->event_fd_.get());
  if (r < 0) refuse(path, std::string("cannot set up io_uring: ") + std::strerror(-r));
  file->ring_ready_ = true;
  return file;
}

BlockFile::BlockFile(std::string path, timers::UniqueFd fd, timers::UniqueFd direct_fd, std::uint64_t size,
                     bool read_only, std::uint32_t depth)
    : path_(std::move(path)), fd_(std::move(fd)), direct_fd_(std::move(direct_fd)), size_(size), read_only_(read_only) {
  ops_.resize(depth);
  for (std::uint32_t i = depth; i-- > 0;) free_.push_back(i);
}

BlockFile::~BlockFile() {
  std::lock_guard lock(mu_);
  completion_ = nullptr;
  if (!ring_ready_) return;
  // Guest memory may be released right after this: nothing the kernel
  // still reads or writes may outlive it.
  while (in_kernel_ > 0) {
    submit_pending();
    if (unsubmitted_ == in_kernel_ && unsubmitted_ > 0) break;  // the kernel takes nothing: nothing is running
    io_uring_cqe* cqe = nullptr;
    const int r = io_uring_wait_cqe(&ring_, &cqe);
    if (r == -EINTR) continue;
    if (r < 0) break;
    io_uring_cqe_seen(&ring_, cqe);
    --in_kernel_;
  }
  io_uring_queue_exit(&ring_);
}

void BlockFile::set_completion(devices::virtio::BlockCompletion* completion) noexcept {
  std::lock_guard lock(mu_);
  completion_ = completion;
}

std::size_t BlockFile::in_flight() const noexcept {
  std::lock_guard lock(mu_);
  return ops_.size() - free_.size();
}

bool BlockFile::aligned(const Op& op) const noexcept {
  const std::uint64_t a = direct_alignment_;
  if (op.offset % a != 0) return false;
  for (std::size_t i = op.first; i < op.iov.size(); ++i) {
    if (reinterpret_cast<std::uintptr_t>(op.iov[i].iov_base) % a != 0 || op.iov[i].iov_len % a != 0) return false;
  }
  return true;
}

bool BlockFile::submit(const devices::virtio::BlockRequest& request) noexcept {
  std::lock_guard lock(mu_);
  if (free_.empty() || !ring_ready_) return false;
  const std::uint32_t index = free_.back();
  free_.pop_back();
  Op& op = ops_[index];
  op.busy = true;
  op.op = request.op;
  op.tag = request.tag;
  op.offset = request.offset;
  op.first = 0;
  op.stage = 0;
  op.iov.clear();
  op.remaining = 0;
  if (request.op == BlockOp::kRead || request.op == BlockOp::kWrite) {
    op.iov.assign(request.iov.begin(), request.iov.end());
    for (const iovec& v : op.iov) op.remaining += v.iov_len;
  } else {
    op.remaining = request.length;
  }
  op.total = op.remaining;
  op.direct = direct_fd_.valid() && aligned(op);
  if (!prepare(index)) {
    op.busy = false;
    free_.push_back(index);
    return false;
  }
  return true;
}

io_uring_sqe* BlockFile::next_sqe() noexcept {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    submit_pending();
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

bool BlockFile::prepare(std::uint32_t index) noexcept {
  Op& op = ops_[index];
  io_uring_sqe* sqe = next_sqe();
  // With one SQE per operation and as many SQEs as operations this cannot
  // fail; the caller fails the request if it does.
  if (sqe == nullptr) return false;
  const bool data = op.op == BlockOp::kRead || op.op == BlockOp::kWrite;
  if ((data && op.remaining == 0) || (!data && op.op != BlockOp::kFlush && op.remaining == 0)) {
    io_uring_prep_nop(sqe);
  } else {
    switch (op.op) {
      case BlockOp::kRead:
      case BlockOp::kWrite: {
        op.direct = op.direct && aligned(op);
        const int fd = op.direct ? direct_fd_.get() : fd_.get();
        const auto count = static_cast<unsigned>(std::min<std::size_t>(op.iov.size() - op.first, kMaxIov));
        if (op.op == BlockOp::kRead) {
          io_uring_prep_readv(sqe, fd, &op.iov[op.first], count, op.offset);
        } else {
          io_uring_prep_writev(sqe, fd, &op.iov[op.first], count, op.offset);
        }
        break;
      }
      case BlockOp::kFlush:
        io_uring_prep_fsync(sqe, fd_.get(), IORING_FSYNC_DATASYNC);
        break;
      case BlockOp::kDiscard:
        io_uring_prep_fallocate(sqe, fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                static_cast<off_t>(op.offset), static_cast<off_t>(op.remaining));
        break;
      case BlockOp::kWriteZeroes:
        if (op.stage == 0) {
          io_uring_prep_fallocate(sqe, fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                                  static_cast<off_t>(op.offset), static_cast<off_t>(op.remaining));
        } else if (op.stage == 1) {
          io_uring_prep_fallocate(sqe, fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                  static_cast<off_t>(op.offset), static_cast<off_t>(op.remaining));
        } else {
          io_uring_prep_write(sqe, fd_.get(), g_zeroes,
                              static_cast<unsigned>(std::min<std::uint64_t>(op.remaining, kZeroChunk)), op.offset);
        }
        break;
    }
  }
  sqe->user_data = index;
  ++unsubmitted_;
  ++in_kernel_;
  return true;
}

void BlockFile::submit_pending() noexcept {
  if (unsubmitted_ == 0) return;
  const int r = io_uring_submit(&ring_);
  if (r > 0) unsubmitted_ -= std::min<std::uint32_t>(static_cast<std::uint32_t>(r), unsubmitted_);
}

void BlockFile::kick() noexcept {
  std::lock_guard lock(mu_);
  submit_pending();
}

void BlockFile::advance(Op& op, std::uint64_t bytes) noexcept {
  op.offset += bytes;
  op.remaining -= std::min(bytes, op.remaining);
  while (bytes > 0 && op.first < op.iov.size()) {
    iovec& v = op.iov[op.first];
    if (bytes >= v.iov_len) {
      bytes -= v.iov_len;
      ++op.first;
    } else {
      v.iov_base = static_cast<std::uint8_t*>(v.iov_base) + bytes;
      v.iov_len -= bytes;
      bytes = 0;
    }
  }
}

void BlockFile::finish(std::uint32_t index, std::int64_t result, std::vector<Done>& done) noexcept {
  Op& op = ops_[index];
  op.busy = false;
  free_.push_back(index);
  done.push_back({op.tag, result});
}

void BlockFile::retry(std::uint32_t index, std::vector<Done>& done) noexcept {
  if (!prepare(index)) finish(index, -EBUSY, done);
}

void BlockFile::handle(std::uint32_t index, std::int32_t res, std::vector<Done>& done) noexcept {
  if (index >= ops_.size() || !ops_[index].busy) return;
  Op& op = ops_[index];
  if (res == -EAGAIN || res == -EINTR) return retry(index, done);
  switch (op.op) {
    case BlockOp::kRead:
    case BlockOp::kWrite: {
      if (op.remaining == 0) return finish(index, 0, done);
      if (res == -EINVAL && op.direct) {
        // The file system wants more alignment than we assumed: buffered
        // for this one, 4096 (or nothing direct) from now on.
        op.direct = false;
        if (direct_alignment_ < 4096) {
          direct_alignment_ = 4096;
        } else {
          spdlog::warn("disk image {}: O_DIRECT refused even when 4 KiB aligned; buffered I/O from now on", path_);
          direct_fd_.reset();
        }
        return retry(index, done);
      }
      if (res < 0) return finish(index, res, done);
      if (res == 0) return finish(index, -EIO, done);  // the end of a file that shrank
      advance(op, static_cast<std::uint64_t>(res));
      if (op.remaining > 0) return retry(index, done);  // a short transfer: the rest
      return finish(index, static_cast<std::int64_t>(op.total), done);
    }
    case BlockOp::kFlush:
      return finish(index, res < 0 ? res : 0, done);
    case BlockOp::kDiscard:
      // A file system that cannot punch holes discarded nothing, which a
      // discard is allowed to do.
      return finish(index, res < 0 && !unsupported(res) ? res : 0, done);
    case BlockOp::kWriteZeroes:
      if (op.stage < 2) {
        if (res >= 0) return finish(index, 0, done);
        if (!unsupported(res)) return finish(index, res, done);
        ++op.stage;
        return retry(index, done);
      }
      if (res < 0) return finish(index, res, done);
      if (res == 0) return finish(index, -EIO, done);
      advance(op, static_cast<std::uint64_t>(res));
      if (op.remaining > 0) return retry(index, done);
      return finish(index, 0, done);
  }
}

std::size_t BlockFile::process_completions() noexcept {
  std::uint64_t counter = 0;
  [[maybe_unused]] const ssize_t n = ::read(event_fd_.get(), &counter, sizeof counter);  // EAGAIN when none
  std::vector<Done> done;
  devices::virtio::BlockCompletion* completion = nullptr;
  {
    std::lock_guard lock(mu_);
    if (!ring_ready_) return 0;
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      --in_kernel_;
      handle(static_cast<std::uint32_t>(cqe->user_data), cqe->res, done);
    }
    io_uring_cq_advance(&ring_, seen);
    submit_pending();
    completion = completion_;
  }
  if (completion != nullptr && !done.empty()) completion->complete(done);
  return done.size();
}

std::size_t BlockFile::wait_and_process(std::chrono::milliseconds timeout) noexcept {
  pollfd p{event_fd_.get(), POLLIN, 0};
  ::poll(&p, 1, static_cast<int>(timeout.count()));
  return process_completions();
}

}  // namespace vmm
