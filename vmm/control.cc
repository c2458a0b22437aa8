#include "vmm/control.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "devices/error.h"
#include "devices/rate_limit.h"
#include "vmm/syscall_filter.h"
#include "vmm/vm.h"

namespace vmm {

namespace {

using nlohmann::json;

RateLimit g_client_log;

// --------------------------------------------------------------- replies

std::string dump(const json& value) {
  // Replace, not throw: an error message may quote bytes the client sent,
  // and those need not be UTF-8.
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ------------------------------------------------- socket file, and its removal

// Paths to unlink if the process dies of a fatal signal or calls exit()
// while a server is alive. Fixed storage: the signal handler may only read.
struct Registered {
  std::atomic<bool> used{false};
  char path[sizeof(sockaddr_un{}.sun_path)] = {};
};
std::array<Registered, 8> g_registered;
std::mutex g_register_mu;
struct sigaction g_previous[32];
constexpr int kFatalSignals[] = {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL};

void unlink_registered() noexcept {
  for (Registered& r : g_registered) {
    if (r.used.load(std::memory_order_acquire)) ::unlink(r.path);
  }
}

// A thread whose filter forbids unlink (every one but main) cannot remove
// the socket itself, and the kernel may hand even a kill(2) of the process
// to any thread. It asks the main thread to do it: sets this flag, sends
// main the same signal, and waits a bounded time for the answer before
// dying of its own signal, so the crash is still reported on the thread
// that had it.
std::atomic<bool> g_unlink_requested{false};
std::atomic<bool> g_unlink_done{false};

void ask_main_thread_to_unlink(int sig) noexcept {
  g_unlink_done.store(false, std::memory_order_relaxed);
  g_unlink_requested.store(true, std::memory_order_release);
  const pid_t main_thread = ::getpid();
  if (::syscall(SYS_tgkill, main_thread, main_thread, sig) != 0) return;
  const timespec step{0, 1'000'000};
  for (int waited_ms = 0; waited_ms < 1000 && !g_unlink_done.load(std::memory_order_acquire); ++waited_ms) {
    ::nanosleep(&step, nullptr);
  }
}

void on_fatal_signal(int sig) {
  if (!syscall_filter::this_thread_may_remove_files()) {
    ask_main_thread_to_unlink(sig);
  } else {
    unlink_registered();
    if (g_unlink_requested.exchange(false, std::memory_order_acq_rel)) {
      // Sent by a confined thread that is dying of this signal itself:
      // answer it and carry on, so the report names the thread that crashed.
      g_unlink_done.store(true, std::memory_order_release);
      return;
    }
  }
  // Hand the signal on to whoever had it before (the console's terminal
  // restore, a sanitizer, or the default action): it is blocked while this
  // handler runs, so it arrives as soon as we return.
  ::sigaction(sig, &g_previous[sig], nullptr);
  ::raise(sig);
}

void install_exit_hooks_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::atexit(unlink_registered);
    for (int sig : kFatalSignals) {
      struct sigaction action {};
      action.sa_handler = on_fatal_signal;
      // The main thread may be interrupted only to unlink for another
      // thread (above); what it was waiting in goes on.
      action.sa_flags = SA_RESTART;
      sigemptyset(&action.sa_mask);
      ::sigaction(sig, &action, &g_previous[sig]);
    }
  });
}

Registered* register_path(const std::string& path) noexcept {
  std::lock_guard lock(g_register_mu);
  for (Registered& r : g_registered) {
    if (r.used.load(std::memory_order_relaxed)) continue;
    std::snprintf(r.path, sizeof r.path, "%s", path.c_str());
    r.used.store(true, std::memory_order_release);
    return &r;
  }
  return nullptr;  // more live servers than slots: only the destructor unlinks
}

void unregister_path(const std::string& path) noexcept {
  std::lock_guard lock(g_register_mu);
  for (Registered& r : g_registered) {
    if (r.used.load(std::memory_order_relaxed) && path == r.path) {
      r.used.store(false, std::memory_order_release);
      return;
    }
  }
}

bool fill_address(const std::string& path, sockaddr_un& address) {
  address = sockaddr_un{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof address.sun_path) return false;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return true;
}

// Removes a socket at `path` that nobody listens on; throws if something
// answers there or if it is not a socket.
void clear_stale_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw_errno("control socket '" + path + "'");
  }
  if (!S_ISSOCK(st.st_mode)) {
    throw Error("control socket '" + path + "': refusing to replace a file that is not a socket");
  }
  timers::UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe) throw_errno("control socket: socket");
  sockaddr_un address;
  fill_address(path, address);
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) {
    throw Error("control socket '" + path + "' is in use by a running process");
  }
  if (errno != ECONNREFUSED) throw_errno("control socket '" + path + "': cannot check the existing socket");
  // Stale (its VMM was killed). Unlink only the file we just probed.
  struct stat again {};
  if (::lstat(path.c_str(), &again) == 0 && again.st_ino == st.st_ino && again.st_dev == st.st_dev) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("control socket '" + path + "': removing a stale socket");
    spdlog::info("control: removed the stale socket {}", path);
  }
}

// A private directory next to the socket, removed on every way out.
class TempDir {
 public:
  explicit TempDir(const std::string& parent) {
    std::string pattern = parent + "/.vmm-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw_errno("control socket: cannot create a directory in '" + parent + "'");
    path_ = pattern;
  }
  ~TempDir() {
    if (!file_.empty()) ::unlink(file_.c_str());
    ::rmdir(path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const char* name) {
    file_ = path_ + "/" + name;
    return file_;
  }

 private:
  std::string path_;
  std::string file_;
};

std::string parent_directory(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Binds a listening socket at `path` with mode 0600 that was never
// reachable with wider permissions: it is bound inside a fresh 0700
// directory, chmod'ed, then hard-linked into place (link fails rather than
// replace anything that appeared at `path` meanwhile).
timers::UniqueFd create_listening_socket(const std::string& path) {
  sockaddr_un address;
  if (!fill_address(path, address)) {
    throw Error("control socket path '" + path + "' must be 1 to " + std::to_string(sizeof address.sun_path - 1) +
                " bytes long");
  }
  clear_stale_socket(path);

  TempDir dir(parent_directory(path));
  const std::string temporary = dir.file("s");
  sockaddr_un temporary_address;
  if (!fill_address(temporary, temporary_address)) {
    throw Error("control socket path '" + path + "': the directory name is too long for a Unix socket");
  }
  timers::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("control socket: socket");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&temporary_address), sizeof temporary_address) != 0) {
    throw_errno("control socket '" + path + "': bind");
  }
  if (::chmod(temporary.c_str(), 0600) != 0) throw_errno("control socket '" + path + "': chmod");
  if (::listen(fd.get(), 64) != 0) throw_errno("control socket '" + path + "': listen");
  // Registered for removal before it appears: a fatal signal the moment
  // after would otherwise leave the socket behind.
  register_path(path);
  if (::link(temporary.c_str(), path.c_str()) != 0) {
    const int err = errno;
    if (err == EEXIST) {
      unregister_path(path);
      throw Error("control socket '" + path + "' appeared while it was being created; not replaced");
    }
    // Filesystems without hard links: an atomic rename that also refuses
    // to replace anything.
    if (::renameat2(AT_FDCWD, temporary.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
      unregister_path(path);
      throw_errno("control socket '" + path + "'", errno == EINVAL ? err : errno);
    }
  }
  return fd;
}

// ----------------------------------------------------------------- clients

// A client: its socket and its byte stream's state.
struct Client {
  timers::UniqueFd fd;
  ControlConnection connection;
};

bool peer_allowed(int fd, std::string* why) {
  ucred cred{};
  socklen_t size = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &size) != 0) {
    *why = std::string("cannot read the peer's credentials: ") + std::strerror(errno);
    return false;
  }
  const uid_t owner = ::geteuid();
  if (cred.uid == owner || cred.uid == 0) return true;
  *why = "permission denied: uid " + std::to_string(cred.uid) + " is not the VMM's owner (uid " +
         std::to_string(owner) + ")";
  return false;
}

// One non-blocking attempt to send what is pending; false when the peer is gone.
bool flush(Client& client) noexcept {
  while (!client.connection.output().empty()) {
    const std::string& out = client.connection.output();
    const ssize_t n = ::send(client.fd.get(), out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      client.connection.consume(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;
  }
  return true;
}

// Sends one line to a connection we are about to close anyway.
void send_and_close(timers::UniqueFd fd, const std::string& reply) noexcept {
  const std::string line = reply + "\n";
  [[maybe_unused]] ssize_t n = ::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

// ------------------------------------------------------------------ requests

namespace {

// How long a `vcpus` request waits for the VM's thread, which may be busy
// with a reset; the client's own timeout is longer.
constexpr std::chrono::milliseconds kVcpuSampleTimeout{1000};

// As control_handle_request; sets *forced_stop when the line was a valid
// forced stop (carried out). With `only_forced_stop`, any other valid
// request is left undone (*forced_stop stays false).
std::string handle_request(Vm& vm, std::string_view line, bool only_forced_stop, bool* forced_stop) noexcept {
  using Command = ControlRequest::Command;
  *forced_stop = false;
  const ParsedControlRequest parsed = parse_control_request(line);
  const bool is_forced_stop = parsed.request && parsed.request->command == Command::stop && parsed.request->force;
  if (only_forced_stop && parsed.well_formed && !is_forced_stop) return {};
  if (!parsed.request) return parsed.error_reply;
  const ControlRequest& request = *parsed.request;
  try {
    json reply = {{"ok", true}};
    std::string why;
    bool ok = true;
    switch (request.command) {
      case Command::status: {
        const VmStatus s = vm.status();
        reply["state"] = to_string(s.state);
        reply["reboots"] = s.reboots;
        reply["boot_generation"] = s.boot_generation;
        reply["uptime_ms"] = std::round(static_cast<double>(s.uptime_ns) / 1e3) / 1e3;
        reply["vcpus"] = vm.vcpu_count();
        reply["pid"] = ::getpid();
        break;
      }
      case Command::vcpus: {
        // One reading (each running vCPU paused for as long as it takes),
        // answered by the VM's own thread; a busy one makes this an error.
        const Vm::VcpuSamples sample = vm.sample_vcpus(1, std::chrono::milliseconds(0), kVcpuSampleTimeout);
        if (!sample.missing.empty()) {
          ok = false;
          why = sample.missing;
          break;
        }
        json lines = json::array();
        std::istringstream in(sample.taken);
        for (std::string text_line; std::getline(in, text_line);) lines.push_back(text_line);
        reply["vcpus"] = std::move(lines);
        break;
      }
      case Command::pause:
        ok = vm.pause(&why);
        break;
      case Command::resume:
        ok = vm.resume(&why);
        break;
      case Command::reset:
        ok = vm.reset(&why);
        break;
      case Command::stop:
        if (request.force) {
          vm.force_stop();
          *forced_stop = true;
        } else {
          ok = vm.stop(&why);
        }
        break;
    }
    if (!ok) return control_error_reply(std::string(to_string(request.command)) + ": " + why, request.id);
    if (!request.id.empty()) reply["id"] = json::parse(request.id);
    return dump(reply);
  } catch (...) {
    return R"({"ok":false,"error":"internal error"})";
  }
}

}  // namespace

std::string control_handle_request(Vm& vm, std::string_view line) noexcept {
  bool forced_stop = false;
  return handle_request(vm, line, false, &forced_stop);
}

// -------------------------------------------------------------------- server

ControlServer::ControlServer(const std::string& path, Vm& vm, std::chrono::milliseconds idle_timeout)
    : path_(path), vm_(vm), idle_timeout_(idle_timeout) {
  install_exit_hooks_once();
  listen_ = create_listening_socket(path_);
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  try {
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) throw_errno("control socket: eventfd");
    thread_ = std::thread([this] { serve(); });
  } catch (...) {
    unlink_socket();
    throw;
  }
  spdlog::info("control: listening on {}", path_);
}

ControlServer::~ControlServer() {
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  unlink_socket();
}

void ControlServer::unlink_socket() noexcept {
  unregister_path(path_);
  // Only the file this server created: never a socket another VMM put
  // there after ours was removed by hand.
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) ::unlink(path_.c_str());
}

void ControlServer::serve() noexcept {
  pthread_setname_np(pthread_self(), "control");
  syscall_filter::confine_or_exit(ThreadKind::control);
  std::vector<std::unique_ptr<Client>> clients;
  std::vector<pollfd> fds;
  char buffer[kControlMaxLine];

  auto log_client = [](const char* what) {
    if (g_client_log.allow()) spdlog::debug("control: {} ({} similar suppressed)", what, g_client_log.take_suppressed());
  };
  const ControlRequestHandler handle = [this](std::string_view line, bool only_forced_stop, bool* forced_stop) {
    return handle_request(vm_, line, only_forced_stop, forced_stop);
  };

  auto accept_clients = [&] {
    for (;;) {
      timers::UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) log_client("accept failed");
        return;
      }
      std::string why;
      if (!peer_allowed(fd.get(), &why)) {
        log_client("refused a client that is not the owner");
        send_and_close(std::move(fd), control_error_reply(why));
        continue;
      }
      const auto regular =
          std::count_if(clients.begin(), clients.end(), [](const auto& c) { return !c->connection.overflow(); });
      const bool overflow = static_cast<std::size_t>(regular) >= kControlMaxClients;
      if (overflow) {
        // Full: instead of a refusal at once, a short chance to send a
        // forced stop, so that no set of clients can lock it out. Overflow
        // slots are bounded too: the oldest makes room and is refused.
        Client* oldest = nullptr;
        std::size_t overflowing = 0;
        for (const auto& c : clients) {
          if (!c->connection.overflow() || c->connection.dropped()) continue;
          ++overflowing;
          if (oldest == nullptr || c->connection.last_heard() < oldest->connection.last_heard()) oldest = c.get();
        }
        if (overflowing >= kControlMaxClients) {
          log_client("refused a client: too many");
          send_and_close(std::move(oldest->fd), control_too_many_clients_reply());
          oldest->connection.drop();
        }
      }
      clients.push_back(std::make_unique<Client>(
          Client{std::move(fd), ControlConnection(std::chrono::steady_clock::now(), idle_timeout_, overflow, log_client)}));
    }
  };

  auto read_client = [&](Client& client) {
    // At most a few buffers per round, so one chatty client cannot starve
    // the others (or the shutdown request).
    for (int reads = 0; reads < 4 && client.connection.reading(); ++reads) {
      const ssize_t n = ::recv(client.fd.get(), buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0) {
        client.connection.receive(std::string_view(buffer, static_cast<std::size_t>(n)),
                                  std::chrono::steady_clock::now(), handle);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n == 0) {
        client.connection.end_of_input(std::chrono::steady_clock::now());
        return;
      }
      client.connection.drop();  // ECONNRESET and the like
      return;
    }
  };

  for (;;) {
    fds.clear();
    fds.push_back({wake_.get(), POLLIN, 0});
    fds.push_back({listen_.get(), POLLIN, 0});
    int timeout_ms = -1;
    const auto now = std::chrono::steady_clock::now();
    for (const auto& client : clients) {
      short events = client->connection.closing() ? 0 : POLLIN;
      if (!client->connection.output().empty()) events |= POLLOUT;
      fds.push_back({client->fd.get(), events, 0});
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(client->connection.deadline() - now).count();
      const int ms = left < 0 ? 0 : static_cast<int>(std::min<decltype(left)>(left, INT_MAX));
      if (timeout_ms < 0 || ms < timeout_ms) timeout_ms = ms;
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("control: poll: {}; the control socket stops serving", std::strerror(errno));
      break;
    }
    if (fds[0].revents != 0) break;
    // Clients first: the ones accepted below are not in `fds` yet.
    for (std::size_t i = 0; i < clients.size(); ++i) {
      Client& client = *clients[i];
      ControlConnection& connection = client.connection;
      const short revents = fds[i + 2].revents;
      if (revents & POLLNVAL) {
        connection.drop();
        continue;
      }
      if (connection.reading() && (revents & (POLLIN | POLLHUP | POLLERR))) read_client(client);
      connection.check_deadline(std::chrono::steady_clock::now());
      if (!connection.dropped() && !connection.output().empty() && !flush(client)) connection.drop();
      connection.settle(std::chrono::steady_clock::now(), (revents & (POLLHUP | POLLERR)) != 0);
    }
    std::erase_if(clients, [](const std::unique_ptr<Client>& c) { return c->connection.dropped(); });
    if (fds[1].revents & POLLIN) accept_clients();
  }

  // Shutting down (the VM has ended): replies already computed, such as the
  // {"ok":true} to a forced stop, get one last chance.
  for (auto& client : clients) flush(*client);
}

}  // namespace vmm
