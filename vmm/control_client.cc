#include "vmm/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "devices/error.h"

namespace vmm {

namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

}  // namespace

bool is_control_command(std::string_view command) noexcept {
  return command == "status" || command == "pause" || command == "resume" || command == "reset" ||
         command == "stop";
}

std::string control_request_line(std::string_view command, bool force) {
  nlohmann::json request = {{"cmd", std::string(command)}};
  if (force) request["force"] = true;
  return request.dump();
}

ControlClient::ControlClient(const std::string& path, std::chrono::milliseconds timeout) : path_(path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof address.sun_path) {
    throw Error("control socket path '" + path + "' must be 1 to " + std::to_string(sizeof address.sun_path - 1) +
                " bytes long");
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd_) throw_errno("socket");
  // A blocking connect to a Unix socket waits only while the server's
  // backlog is full; bound that wait.
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  for (;;) {
    if (::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) break;
    if (errno == EINTR) continue;
    const int err = errno;
    std::string hint;
    if (err == ENOENT || err == ECONNREFUSED) hint = " (is a VMM running with --control " + path + "?)";
    throw Error("cannot connect to the control socket " + path + ": " + std::strerror(err) + hint);
  }
}

std::string ControlClient::request(std::string_view line, std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  std::string out(line);
  out += '\n';
  std::size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n = ::send(fd_.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{fd_.get(), POLLOUT, 0};
      const int left = remaining_ms(deadline);
      if (left == 0 || (::poll(&pfd, 1, left) == 0)) throw Error("control socket " + path_ + ": request timed out");
      continue;
    }
    throw_errno("control socket " + path_ + ": send");
  }
  for (;;) {
    if (const std::size_t newline = buffered_.find('\n'); newline != std::string::npos) {
      std::string reply = buffered_.substr(0, newline);
      buffered_.erase(0, newline + 1);
      return reply;
    }
    pollfd pfd{fd_.get(), POLLIN, 0};
    const int left = remaining_ms(deadline);
    const int ready = left == 0 ? 0 : ::poll(&pfd, 1, left);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throw_errno("control socket " + path_ + ": poll");
    if (ready == 0) {
      throw Error("control socket " + path_ + ": no reply within " + std::to_string(timeout.count()) + " ms");
    }
    char buffer[4096];
    const ssize_t n = ::recv(fd_.get(), buffer, sizeof buffer, MSG_DONTWAIT);
    if (n > 0) {
      if (buffered_.size() > (1u << 20)) throw Error("control socket " + path_ + ": reply line too long");
      buffered_.append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n == 0) throw Error("control socket " + path_ + ": the VMM closed the connection without a reply");
    throw_errno("control socket " + path_ + ": recv");
  }
}

int run_ctl(const CtlOptions& options) noexcept {
  try {
    ControlClient client(options.path, options.timeout);
    const std::string reply = client.request(control_request_line(options.command, options.force), options.timeout);
    nlohmann::json parsed = nlohmann::json::parse(reply, nullptr, false);
    if (!parsed.is_object() || !parsed.contains("ok") || !parsed["ok"].is_boolean()) {
      std::fprintf(stderr, "vmm: ctl: %s: not a control protocol reply: %.200s\n", options.path.c_str(),
                   reply.c_str());
      return kExitCtlNoAnswer;
    }
    if (parsed["ok"].get<bool>()) {
      std::printf("%s\n", reply.c_str());
      std::fflush(stdout);
      return 0;
    }
    std::string error = "refused";
    if (auto it = parsed.find("error"); it != parsed.end() && it->is_string()) error = it->get<std::string>();
    std::fprintf(stderr, "vmm: ctl: %s\n", error.c_str());
    return kExitCtlRefused;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm: ctl: %s\n", e.what());
    return kExitCtlNoAnswer;
  }
}

}  // namespace vmm
