#include "tools/vmm-stress/child.h"
#include "tools/vmm-stress/stress.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace vmm::stress {

namespace {

// posix_spawn's attribute and file-action objects, released on every path.
struct SpawnAttributes {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  SpawnAttributes() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~SpawnAttributes() {
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
  }
  SpawnAttributes(const SpawnAttributes&) = delete;
  SpawnAttributes& operator=(const SpawnAttributes&) = delete;
};

// Fixed storage: read by a signal handler.
constexpr std::size_t kMaxLive = 512;
std::array<std::atomic<pid_t>, kMaxLive> g_live{};

void register_live(pid_t pid) noexcept {
  for (auto& slot : g_live) {
    pid_t empty = 0;
    if (slot.compare_exchange_strong(empty, pid)) return;
  }
}

void unregister_live(pid_t pid) noexcept {
  for (auto& slot : g_live) {
    pid_t expected = pid;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

void on_termination(int sig) {
  kill_live_children();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

void kill_live_children() noexcept {
  for (auto& slot : g_live) {
    if (const pid_t pid = slot.load(); pid > 0) ::kill(pid, SIGKILL);
  }
}

void kill_children_on_termination() {
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    struct sigaction action {};
    action.sa_handler = on_termination;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;
    ::sigaction(sig, &action, nullptr);
  }
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return std::string("killed by SIG") + (name ? name : std::to_string(WTERMSIG(status)).c_str());
  }
  return "wait status " + std::to_string(status);
}

Child::Child(const SpawnSpec& spec) {
  if (spec.argv.empty()) throw std::runtime_error("spawn: empty command");
  int out_pipe[2] = {-1, -1};
  if (spec.capture_stdout && ::pipe2(out_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  }
  timers::UniqueFd out_read(out_pipe[0]);
  timers::UniqueFd out_write(out_pipe[1]);

  SpawnAttributes sa;
  if (spec.capture_stdout) {
    posix_spawn_file_actions_adddup2(&sa.actions, out_write.get(), STDOUT_FILENO);
  } else {
    posix_spawn_file_actions_addopen(&sa.actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_addopen(&sa.actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (spec.stderr_path.empty()) {
    posix_spawn_file_actions_addopen(&sa.actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  } else {
    posix_spawn_file_actions_addopen(&sa.actions, STDERR_FILENO, spec.stderr_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
  }
  // Whatever this process blocks or handles (the vCPU kick signal, for
  // one), the child starts from the defaults.
  sigset_t mask, all;
  sigemptyset(&mask);
  if (spec.block_stop_signals) {
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
  }
  sigfillset(&all);
  posix_spawnattr_setsigmask(&sa.attr, &mask);
  posix_spawnattr_setsigdefault(&sa.attr, &all);
  posix_spawnattr_setflags(&sa.attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> args;
  for (const auto& a : spec.argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // spawnp: a bare name such as qemu-system-x86_64 is looked up in PATH.
  const int rc = ::posix_spawnp(&pid_, args[0], &sa.actions, &sa.attr, args.data(), environ);
  if (rc != 0) throw std::runtime_error("cannot start " + spec.argv[0] + ": " + std::strerror(rc));
  register_live(pid_);
  pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  if (!pidfd_) {
    const int err = errno;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    reaped_ = true;
    unregister_live(pid_);
    throw std::runtime_error(std::string("pidfd_open: ") + std::strerror(err));
  }
  if (spec.capture_stdout) {
    stdout_ = std::move(out_read);
    ::fcntl(stdout_.get(), F_SETFL, O_NONBLOCK);
  }
}

Child::~Child() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    unregister_live(pid_);
  }
}

std::string Child::describe_status() const { return reaped_ ? describe_wait_status(status_) : "still running"; }

void Child::signal(int sig) noexcept {
  // Never after reaping: the pid may belong to someone else by then.
  if (!reaped_) ::kill(pid_, sig);
}

bool Child::try_reap() noexcept {
  if (reaped_) return true;
  int status = 0;
  rusage usage{};
  const pid_t r = ::wait4(pid_, &status, WNOHANG, &usage);
  if (r != pid_) return false;
  // Unregister before anyone could reuse the pid: it is ours until reaped,
  // and a cleanup kill after this point must not reach a stranger.
  reaped_ = true;
  unregister_live(pid_);
  status_ = status;
  max_rss_kib_ = usage.ru_maxrss;
  return true;
}

void Child::read_available(std::string* out) {
  if (!stdout_) return;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(stdout_.get(), buffer, sizeof buffer);
    if (n > 0) {
      if (out) out->append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) stdout_.reset();  // the child (and every copy of the pipe) closed it
    return;
  }
}

bool Child::wait_for(std::chrono::milliseconds timeout, std::string* out) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    read_available(out);
    if (try_reap()) {
      read_available(out);
      return true;
    }
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    pollfd fds[2] = {{pidfd_.get(), POLLIN, 0}, {stdout_ ? stdout_.get() : -1, POLLIN, 0}};
    if (::poll(fds, 2, static_cast<int>(left)) < 0 && errno != EINTR) return false;
  }
}

std::vector<pid_t> leftover_processes(const std::string& marker) {
  std::vector<pid_t> found;
  const pid_t self = ::getpid();
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return found;
  while (dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0' || pid == self) continue;
    const std::string base = std::string("/proc/") + e->d_name;
    const std::string text = read_small_file(base + "/stat", 4096);
    bool ours = false;
    if (const std::size_t close = text.rfind(')'); close != std::string::npos) {
      // ") S <ppid> ..."
      const long ppid = std::strtol(text.c_str() + close + 3, nullptr, 10);
      ours = ppid == self;
    }
    if (!ours && !marker.empty()) {
      const std::string cmdline = read_small_file(base + "/cmdline", 65536);
      ours = cmdline.find(marker) != std::string::npos;
    }
    if (ours) found.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(proc);
  return found;
}

}  // namespace vmm::stress
