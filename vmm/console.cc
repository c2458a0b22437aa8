#include "vmm/console.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "devices/error.h"
#include "vmm/syscall_filter.h"

namespace vmm {

namespace {

// One saved terminal state per process: what every exit path restores.
struct SavedTerminal {
  std::atomic<bool> saved{false};
  int fd = -1;
  termios state{};
};
SavedTerminal g_saved;

void restore_terminal() noexcept {
  if (g_saved.saved.exchange(false)) ::tcsetattr(g_saved.fd, TCSANOW, &g_saved.state);
}

void restore_and_reraise(int sig) {
  restore_terminal();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

constexpr std::uint8_t kEscape = 0x01;  // Ctrl-A

}  // namespace

TerminalRawMode::TerminalRawMode(int fd) {
  if (!::isatty(fd) || g_saved.saved.load()) return;
  termios state{};
  if (::tcgetattr(fd, &state) != 0) return;
  g_saved.fd = fd;
  g_saved.state = state;
  g_saved.saved.store(true);
  static bool hooks_installed = false;
  if (!hooks_installed) {
    hooks_installed = true;
    std::atexit(restore_terminal);
    for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) {
      struct sigaction action {};
      action.sa_handler = restore_and_reraise;
      sigemptyset(&action.sa_mask);
      action.sa_flags = SA_RESETHAND;
      ::sigaction(sig, &action, nullptr);
    }
  }
  ::cfmakeraw(&state);
  state.c_oflag |= OPOST | ONLCR;  // keep the VMM's own log lines readable
  if (::tcsetattr(fd, TCSANOW, &state) == 0) active_ = true;
}

TerminalRawMode::~TerminalRawMode() {
  if (active_) restore_terminal();
}

ConsoleInput::ConsoleInput(int fd, devices::Serial& serial, std::function<void()> escape_stop)
    : fd_(fd), serial_(serial), escape_stop_(std::move(escape_stop)) {
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_) throw Error("console: eventfd: " + std::string(std::strerror(errno)));
  thread_ = std::thread([this] { pump(); });
}

ConsoleInput::~ConsoleInput() {
  stopping_.store(true);
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void ConsoleInput::deliver(const std::uint8_t* data, std::size_t size) noexcept {
  for (std::size_t i = 0; i < size; ++i) {
    const std::uint8_t byte = data[i];
    if (escape_pending_) {
      escape_pending_ = false;
      if (byte == 'x' || byte == 'X') {
        if (escape_stop_) escape_stop_();
        continue;
      }
      if (byte != kEscape) {
        const std::uint8_t esc = kEscape;
        serial_.receive(std::span(&esc, 1));
      }
    } else if (byte == kEscape) {
      escape_pending_ = true;
      continue;
    }
    serial_.receive(std::span(&byte, 1));
  }
}

void ConsoleInput::pump() noexcept {
  pthread_setname_np(pthread_self(), "console");
  syscall_filter::confine_or_exit(ThreadKind::console);
  std::uint8_t buffer[64];
  while (!stopping_.load()) {
    // Read only what the UART can take now; the rest waits in the host's
    // tty or pipe buffer instead of being dropped as an overrun.
    const std::size_t room = serial_.rx_room();
    pollfd fds[2] = {{wake_.get(), POLLIN, 0}, {fd_, static_cast<short>(room > 0 ? POLLIN : 0), 0}};
    const int ready = ::poll(fds, 2, room > 0 ? -1 : 10);
    if (ready < 0 && errno != EINTR) return;
    if (fds[0].revents != 0) return;
    if (room == 0 || (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
    const ssize_t n = ::read(fd_, buffer, room < sizeof buffer ? room : sizeof buffer);
    if (n == 0) return;  // end of input: the guest simply gets no more
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno != EBADF) spdlog::debug("console: stdin: {}", std::strerror(errno));
      return;
    }
    deliver(buffer, static_cast<std::size_t>(n));
  }
}

}  // namespace vmm
