// The project's one error type for set-up failures (bad file, bad size,
// failed ioctl). It carries a message a user can act on; the CLI turns it
// into one line and a non-zero exit. Run-time paths (device registers,
// timers, anything a guest can reach) never throw.
//
// It lives in devices/, the lowest layer that has set-up failures to report
// (guest memory), so vmm/ and devices/ share it without devices/ knowing vmm/.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace vmm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// "<what>: <strerror(errno)>", for a failed system call.
[[noreturn]] inline void throw_errno(std::string_view what, int err = errno) {
  throw Error(std::string(what) + ": " + std::strerror(err));
}

}  // namespace vmm
