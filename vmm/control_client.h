// The client side of the control socket (protocol: vmm/control.h): the
// `vmm ctl PATH COMMAND [--force]` command, and a small connection class that
// supervisors and stress tools use directly.
//
// `vmm ctl` exit statuses:
//   0  the VMM accepted the request; its reply line is printed on stdout
//   1  the VMM refused it (resume while running, stop while stopping...);
//      one line on stderr gives its reason
//   2  bad command line
//   3  no usable answer: the socket is missing or refuses the connection, no
//      reply within the timeout, or a reply that is not the protocol's
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "timers/unique_fd.h"

namespace vmm {

inline constexpr int kExitCtlRefused = 1;
inline constexpr int kExitCtlNoAnswer = 3;

struct CtlOptions {
  std::string path;
  std::string command;  // status, pause, resume, reset, stop
  bool force = false;   // stop only
  std::chrono::milliseconds timeout{5000};
};

// The commands `vmm ctl` knows (the protocol's, see vmm/control.h).
bool is_control_command(std::string_view command) noexcept;

// The request line (without newline) for a command: {"cmd":"stop","force":true}.
std::string control_request_line(std::string_view command, bool force);

class ControlClient {
 public:
  // Connects to the socket at `path`, waiting at most `timeout` (a busy
  // server's backlog). Throws vmm::Error with a message naming the path.
  explicit ControlClient(const std::string& path,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

  // Sends one request line (a newline is added) and returns the reply line
  // (without its newline). Throws vmm::Error when the reply does not arrive
  // within `timeout`, the server closes the connection, or the socket fails.
  std::string request(std::string_view line, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

  int fd() const noexcept { return fd_.get(); }

 private:
  std::string path_;
  timers::UniqueFd fd_;
  std::string buffered_;  // bytes after the last reply line
};

// `vmm ctl`: prints the reply (or one error line) and returns the exit status.
int run_ctl(const CtlOptions& options) noexcept;

}  // namespace vmm
