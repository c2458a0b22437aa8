#include "timers/restricted_ring.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace vmm::timers {

namespace {

// Debian's liburing 2.3 declares io_uring_register_restrictions() and
// io_uring_enable_rings() but its shared library does not export them.
int register_ring(const io_uring& ring, unsigned opcode, const void* arg, unsigned nr_args) noexcept {
  const long rc = ::syscall(__NR_io_uring_register, ring.ring_fd, opcode, arg, nr_args);
  return rc < 0 ? -errno : 0;
}

}  // namespace

int init_restricted_ring(io_uring& ring, unsigned entries, std::initializer_list<io_uring_op> allowed_ops,
                         int eventfd) noexcept {
  io_uring_params params{};
  params.flags = IORING_SETUP_R_DISABLED;
  int rc = ::io_uring_queue_init_params(entries, &ring, &params);
  if (rc < 0) return rc;
  if (eventfd >= 0) rc = ::io_uring_register_eventfd(&ring, eventfd);
  if (rc >= 0) {
    // Fixed-size: allocation may throw, and there are never many opcodes.
    io_uring_restriction restrictions[IORING_OP_LAST] = {};
    unsigned count = 0;
    for (const io_uring_op op : allowed_ops) {
      if (count == IORING_OP_LAST) break;
      restrictions[count].opcode = IORING_RESTRICTION_SQE_OP;
      restrictions[count].sqe_op = static_cast<__u8>(op);
      ++count;
    }
    // No SQE flag is allowed (IOSQE_*: fixed files, links, buffer
    // selection): none is used, and each widens what a request can do.
    rc = register_ring(ring, IORING_REGISTER_RESTRICTIONS, restrictions, count);
  }
  if (rc >= 0) rc = register_ring(ring, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
  if (rc < 0) {
    ::io_uring_queue_exit(&ring);
    return rc;
  }
  return 0;
}

}  // namespace vmm::timers
