// The ring a confined thread keeps must not be a way around its syscall
// filter: it runs the opcodes it was given and refuses every other one, and
// takes no io_uring_register call once sealed.
#include "timers/restricted_ring.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "timers/unique_fd.h"

namespace vmm::timers {
namespace {

class RestrictedRingTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (ready_) ::io_uring_queue_exit(&ring_);
  }
  void init(std::initializer_list<io_uring_op> ops, int eventfd = -1) {
    ASSERT_EQ(init_restricted_ring(ring_, 8, ops, eventfd), 0);
    ready_ = true;
  }
  // Submits what prepare() puts in one SQE and returns its completion's result.
  template <typename Prepare>
  int complete_one(Prepare prepare) {
    io_uring_sqe* sqe = ::io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return -ENOSPC;
    prepare(sqe);
    if (::io_uring_submit_and_wait(&ring_, 1) < 0) return -EIO;
    io_uring_cqe* cqe = nullptr;
    if (::io_uring_peek_cqe(&ring_, &cqe) != 0) return -EIO;
    const int res = cqe->res;
    ::io_uring_cqe_seen(&ring_, cqe);
    return res;
  }

  io_uring ring_{};
  bool ready_ = false;
};

TEST_F(RestrictedRingTest, RunsAnAllowedOpcode) {
  init({IORING_OP_POLL_ADD});
  UniqueFd event(::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_TRUE(event);
  EXPECT_EQ(complete_one([&](io_uring_sqe* sqe) { ::io_uring_prep_poll_add(sqe, event.get(), POLLIN); }), POLLIN);
}

TEST_F(RestrictedRingTest, RefusesEveryOtherOpcode) {
  init({IORING_OP_POLL_ADD});
  EXPECT_EQ(complete_one([](io_uring_sqe* sqe) { ::io_uring_prep_nop(sqe); }), -EACCES);
  // What a filter-confined thread would want from a ring: a file or a socket.
  EXPECT_EQ(complete_one([](io_uring_sqe* sqe) { ::io_uring_prep_openat(sqe, AT_FDCWD, "/etc/hostname", 0, 0); }),
            -EACCES);
  EXPECT_EQ(complete_one([](io_uring_sqe* sqe) { ::io_uring_prep_socket(sqe, AF_UNIX, SOCK_STREAM, 0, 0); }),
            -EACCES);
}

TEST_F(RestrictedRingTest, RefusesAnAllowedOpcodeWithSqeFlags) {
  init({IORING_OP_POLL_ADD});
  UniqueFd event(::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_TRUE(event);
  EXPECT_EQ(complete_one([&](io_uring_sqe* sqe) {
              ::io_uring_prep_poll_add(sqe, event.get(), POLLIN);
              sqe->flags |= IOSQE_ASYNC;
            }),
            -EACCES);
}

TEST_F(RestrictedRingTest, TakesNoRegistrationOnceSealed) {
  UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_TRUE(event);
  init({IORING_OP_NOP}, event.get());
  // The eventfd registered before sealing works: a completion bumps it.
  EXPECT_EQ(complete_one([](io_uring_sqe* sqe) { ::io_uring_prep_nop(sqe); }), 0);
  std::uint64_t count = 0;
  EXPECT_EQ(::read(event.get(), &count, sizeof count), static_cast<ssize_t>(sizeof count));
  EXPECT_GE(count, 1u);
  // Registering files (which fixed-file operations would use) is refused.
  const int fds[1] = {event.get()};
  const long rc = ::syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_FILES, fds, 1);
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(errno, EACCES);
}

}  // namespace
}  // namespace vmm::timers
