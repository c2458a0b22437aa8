#include "vmm/host_signals.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>

#include "devices/error.h"
#include "vmm/syscall_filter.h"

namespace vmm {

namespace {

sigset_t watched_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void HostSignals::block_in_this_thread() {
  const sigset_t set = watched_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

HostSignals::HostSignals(std::function<void()> stop, std::function<void()> force)
    : stop_(std::move(stop)), force_(std::move(force)) {
  const sigset_t set = watched_signals();
  signals_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals_) throw_errno("signalfd");
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_) throw_errno("eventfd");
  thread_ = std::thread([this] { watch(); });
}

HostSignals::~HostSignals() {
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void HostSignals::watch() noexcept {
  pthread_setname_np(pthread_self(), "signals");
  syscall_filter::confine_or_exit(ThreadKind::signals);
  int received = 0;
  for (;;) {
    pollfd fds[2] = {{wake_.get(), POLLIN, 0}, {signals_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents != 0) return;
    signalfd_siginfo info{};
    while (::read(signals_.get(), &info, sizeof info) == sizeof info) {
      ++received;
      if (received == 1) {
        spdlog::info("vmm: {}: stopping the guest (again to force)", strsignal(static_cast<int>(info.ssi_signo)));
        if (stop_) stop_();
      } else {
        spdlog::info("vmm: {}: stopping by force", strsignal(static_cast<int>(info.ssi_signo)));
        if (force_) force_();
      }
    }
  }
}

}  // namespace vmm
