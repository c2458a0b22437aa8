// Runs a program with a timeout and captures what it prints: how the
// end-to-end tests drive the real `vmm` binary (and QEMU, side by side).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace vmm::testing {

struct ProcessResult {
  int exit_status = -1;  // -1 when killed by a signal or timed out
  int signal = 0;
  bool timed_out = false;
  std::string out;
  std::string err;
  double wall_ms = 0;
};

// Starts argv[0] (a path) with default signal dispositions and an empty
// mask, whatever the test process blocked. Returns posix_spawn's error number.
inline int spawn_with_default_signals(const std::vector<std::string>& argv, const posix_spawn_file_actions_t* actions,
                                      pid_t* pid) {
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int rc = ::posix_spawn(pid, args[0], actions, &attr, args.data(), environ);
  posix_spawnattr_destroy(&attr);
  return rc;
}

// What each thread of a live process is doing, from /proc: its name, the
// kernel function it sleeps in, its system call (number and first
// arguments) and its kernel stack where readable. Taken before a hung child
// is killed, it tells a VMM waiting on itself (futexes) from vCPUs that sit
// in KVM_RUN with a guest that no longer runs.
inline std::string describe_threads(pid_t pid) {
  std::ostringstream out;
  const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(tasks, ec)) {
    const auto read = [&](const char* name) {
      std::ifstream in(task.path() / name);
      std::ostringstream content;
      if (in) content << in.rdbuf();
      std::string text = content.str();
      while (!text.empty() && text.back() == '\n') text.pop_back();
      return text;
    };
    out << "thread " << task.path().filename().string() << " " << read("comm") << ": wchan " << read("wchan")
        << ", syscall " << read("syscall").substr(0, 40) << "\n";
    const std::string stack = read("stack");
    if (!stack.empty()) out << stack << "\n";
  }
  return out.str();
}

// Whether child `pid` ended (a zombie, not yet reaped) within `limit`.
inline bool wait_for_exit(pid_t pid, std::chrono::milliseconds limit) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return true;  // no pidfd (a kernel before 5.3): waitpid as before
  pollfd ended = {pidfd, POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&ended, 1, static_cast<int>(limit.count()));
  } while (ready < 0 && errno == EINTR);
  ::close(pidfd);
  return ready != 0;
}

// `started`, when given, is told the child's pid as soon as it exists (so a
// test can signal it from another thread while its output is collected).
// `on_timeout`, when given, is asked what to add to the error output about a
// child that ran out of time, while it still runs.
inline ProcessResult run_process(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(60),
                                 const std::string& stdin_text = {},
                                 const std::function<void(pid_t)>& started = {},
                                 const std::function<std::string(pid_t)>& on_timeout = {}) {
  ProcessResult result;
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0 || ::pipe2(in_pipe, O_CLOEXEC) != 0) {
    result.err = std::string("pipe: ") + std::strerror(errno);
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = -1;
  const int rc = spawn_with_default_signals(argv, &actions, &pid);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::close(in_pipe[0]);
  if (rc != 0) {
    result.err = std::string("posix_spawn ") + argv[0] + ": " + std::strerror(rc);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    ::close(in_pipe[1]);
    return result;
  }
  if (started) started(pid);
  if (!stdin_text.empty()) {
    [[maybe_unused]] ssize_t n = ::write(in_pipe[1], stdin_text.data(), stdin_text.size());
  }
  ::close(in_pipe[1]);

  const auto deadline = start + timeout;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buffer[4096];
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      std::string why;
      if (on_timeout) why += "\n--- timed out:\n" + on_timeout(pid);
      why += "\n--- timed out; the process's threads:\n" + describe_threads(pid);
      // Said now as well: should the child then hang the test, the test
      // runner's own timeout still shows why.
      std::fprintf(stderr, "--- %s (pid %d) ran out of time after %lld ms%s\n", argv[0].c_str(), static_cast<int>(pid),
                   static_cast<long long>(timeout.count()), why.c_str());
      std::fflush(stderr);
      result.err += why;
      ::kill(pid, SIGKILL);
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buffer, static_cast<std::size_t>(n));
      } else {
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  // A child that outlives SIGKILL is stuck in the kernel (a KVM or file
  // system wait that ignores signals); waiting on it for ever would turn a
  // hang into a silent test-runner timeout, so it is waited on for a
  // bounded time and described if it is still there.
  // (A child that closed its output may still be running: it gets its
  // whole timeout again.)
  if (!wait_for_exit(pid, result.timed_out ? std::chrono::seconds(30) : std::chrono::seconds(30) + timeout)) {
    ::kill(pid, SIGKILL);
    if (!wait_for_exit(pid, std::chrono::seconds(30))) {
      const std::string stuck = "\n--- " + argv[0] + " (pid " + std::to_string(pid) +
                                ") is still there 30 s after SIGKILL; its threads:\n" + describe_threads(pid);
      std::fputs(stuck.c_str(), stderr);
      std::fflush(stderr);
      result.err += stuck;
      result.timed_out = true;
      ::close(out_pipe[0]);
      ::close(err_pipe[0]);
      return result;
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  if (WIFEXITED(status)) result.exit_status = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

// How many times `needle` occurs in `text` (overlapping ones too).
inline std::size_t count_occurrences(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

inline std::size_t count_lines(const std::string& text) {
  std::size_t lines = 0;
  for (char c : text) lines += c == '\n';
  return lines;
}

}  // namespace vmm::testing
