// The one rule for a test that cannot run here (no usable /dev/kvm, no QEMU,
// one CPU): it skips, loudly — unless VMM_NO_SKIP=1 is set, as tools/test.sh
// and tools/kvm-lab do, where a test that could not run is a failure. A
// skipped KVM test proves nothing, so the project's own test command never
// lets one pass as green.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace vmm::testing {

inline bool skips_are_failures() {
  const char* env = std::getenv("VMM_NO_SKIP");
  return env != nullptr && std::strcmp(env, "1") == 0;
}

// Empty when /dev/kvm opens and answers KVM_GET_API_VERSION; else why not.
inline std::string kvm_unusable_reason() {
  const int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return std::string("/dev/kvm cannot be opened: ") + std::strerror(errno);
  const int version = ::ioctl(fd, KVM_GET_API_VERSION, 0);
  ::close(fd);
  if (version != KVM_API_VERSION) return "/dev/kvm does not answer KVM_GET_API_VERSION with 12";
  return {};
}

inline bool kvm_usable() { return kvm_unusable_reason().empty(); }

}  // namespace vmm::testing

// Skips (or, under VMM_NO_SKIP=1, fails) the current test with `why` unless
// `condition` holds. Usable in a test body and in SetUp.
#define VMM_SKIP_UNLESS(condition, why)                                                                  \
  do {                                                                                                   \
    if (!(condition)) {                                                                                  \
      const std::string vmm_skip_why_ = (why);                                                           \
      if (::vmm::testing::skips_are_failures()) {                                                        \
        GTEST_FAIL() << "cannot run here: " << vmm_skip_why_                                             \
                     << " (VMM_NO_SKIP=1: a test that cannot run is a failure; tools/kvm-lab gives "     \
                        "a /dev/kvm)";                                                                   \
      }                                                                                                  \
      std::fprintf(stderr, "\n*** TEST SKIPPED, NOTHING WAS RUN: %s ***\n\n", vmm_skip_why_.c_str());   \
      GTEST_SKIP() << vmm_skip_why_;                                                                     \
    }                                                                                                    \
  } while (0)

// The test needs a working /dev/kvm.
#define VMM_SKIP_UNLESS_KVM() VMM_SKIP_UNLESS(::vmm::testing::kvm_usable(), ::vmm::testing::kvm_unusable_reason())
