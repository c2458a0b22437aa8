// Each thread kind's filter, loaded for real in a child process (a death
// test): what its list allows still works, and a call outside it ends the
// process with kExitForbiddenSyscall and one line naming the kind and the
// call. That the running VMM's threads carry these filters is checked end
// to end in vmm_run_test.cc.
#include "vmm/syscall_filter.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace vmm::syscall_filter {
namespace {

constexpr ThreadKind kEveryKind[] = {ThreadKind::main,    ThreadKind::vcpu,    ThreadKind::timer_loop,
                                     ThreadKind::control, ThreadKind::console, ThreadKind::signals,
                                     ThreadKind::disk_io};

class SyscallFilterTest : public ::testing::TestWithParam<ThreadKind> {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_P(SyscallFilterTest, ACallOutsideTheListEndsTheProcessNamingKindAndCall) {
  const ThreadKind kind = GetParam();
  const std::string expected =
      std::string("vmm: seccomp: the ") + to_string(kind) + " thread made the system call setns \\([0-9]+\\)";
  EXPECT_EXIT(
      {
        enable();
        confine(kind);
        ::syscall(SYS_setns, -1, 0);
        std::_Exit(0);  // not reached when the filter works
      },
      ::testing::ExitedWithCode(kExitForbiddenSyscall), expected);
}

TEST_P(SyscallFilterTest, WhatEveryThreadNeedsStillWorks) {
  const ThreadKind kind = GetParam();
  EXPECT_EXIT(
      {
        const int event = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        enable();
        confine(kind);
        // Allocation, locking and logging.
        std::string grown(1 << 20, 'x');
        const std::uint64_t one = 1;
        if (::write(event, &one, sizeof one) != sizeof one) std::_Exit(20);
        ::close(event);
        std::_Exit(grown.size() == (1u << 20) ? 0 : 21);
      },
      ::testing::ExitedWithCode(0), "");
}

INSTANTIATE_TEST_SUITE_P(Kinds, SyscallFilterTest, ::testing::ValuesIn(kEveryKind),
                         [](const auto& kind_info) {
                           std::string name = to_string(kind_info.param);
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

TEST(SyscallFilter, IoctlIsKvmsOnlyForAVcpu) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // A KVM request number on a file that is not KVM's: allowed through, and
  // the kernel answers ENOTTY.
  EXPECT_EXIT(
      {
        const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        enable();
        confine(ThreadKind::vcpu);
        const int rc = ::ioctl(fd, KVM_CHECK_EXTENSION, 0);
        std::_Exit(rc < 0 && errno == ENOTTY ? 0 : 30);
      },
      ::testing::ExitedWithCode(0), "");
  // Any other request is refused (only the terminal's few, which the
  // console's crash handler needs on whichever thread crashed, are let by).
  EXPECT_EXIT(
      {
        const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        enable();
        confine(ThreadKind::vcpu);
        int pending = 0;
        ::ioctl(fd, FIONREAD, &pending);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(kExitForbiddenSyscall), "the vcpu thread made the system call ioctl");
}

// Sanitizer run-times create threads of their own from any thread, so
// their builds allow clone everywhere: this holds for release builds.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
TEST(SyscallFilter, OnlyTheMainThreadMayCreateThreads) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        enable();
        confine(ThreadKind::control);
        ::syscall(SYS_clone3, nullptr, 0);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(kExitForbiddenSyscall), "the control thread made the system call clone3");
}
#endif

// The way `vmm run` ends: the main thread, confined, returns and the
// process exits normally (in ASan builds LeakSanitizer then stops the world
// from a tracer of its own, under the main thread's filter).
TEST(SyscallFilter, TheConfinedMainThreadExitsNormally) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        enable();
        confine(ThreadKind::main);
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(SyscallFilter, WithoutEnableConfineChangesNothing) {
  confine(ThreadKind::signals);
  EXPECT_FALSE(enabled());
  // Still free to do what no list allows.
  EXPECT_EQ(::syscall(SYS_getppid), ::getppid());
}

}  // namespace
}  // namespace vmm::syscall_filter
