// A child process the stress loops start (`vmm run`, `vmm ctl`, QEMU),
// watched through a pidfd so waits have timeouts and nothing polls.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "timers/unique_fd.h"

namespace vmm::stress {

struct SpawnSpec {
  std::vector<std::string> argv;
  bool capture_stdout = false;  // else /dev/null
  std::string stderr_path;      // "" : /dev/null
  // Start with SIGTERM and SIGINT blocked. `vmm` blocks them as the first
  // thing main() does and takes them through a signalfd; starting blocked
  // closes the window before main() in which a stop request would kill the
  // process outright instead of being handled.
  bool block_stop_signals = false;
};

class Child {
 public:
  // Throws std::runtime_error when the program cannot be started.
  explicit Child(const SpawnSpec& spec);
  // A child still running here is an error path: it is killed (SIGKILL, by
  // its pid, which we still own because it was never reaped) and reaped.
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const noexcept { return pid_; }
  bool exited() const noexcept { return reaped_; }
  // Raw wait(2) status, valid once exited().
  int wait_status() const noexcept { return status_; }
  long max_rss_kib() const noexcept { return max_rss_kib_; }
  // "exit status 8", "killed by SIGTERM"...
  std::string describe_status() const;

  void signal(int sig) noexcept;
  // Waits up to `timeout` for the child to exit, collecting its stdout
  // (when captured) into `out`. True once it has exited and been reaped.
  bool wait_for(std::chrono::milliseconds timeout, std::string* out = nullptr);
  // Stdout that is available now, without waiting.
  void read_available(std::string* out);

 private:
  bool try_reap() noexcept;

  pid_t pid_ = -1;
  timers::UniqueFd pidfd_;
  timers::UniqueFd stdout_;
  bool reaped_ = false;
  int status_ = 0;
  long max_rss_kib_ = 0;
};

// Children not yet reaped, for cleanup when this program must end early (a
// hang, or SIGTERM/SIGINT/SIGHUP to vmm-stress itself): they are killed with
// SIGKILL so that no `vmm` outlives the run. Never used as a "stop".
void kill_live_children() noexcept;
// Installs SIGTERM/SIGINT/SIGHUP handlers that kill_live_children() and then
// die of the signal as usual.
void kill_children_on_termination();

// "killed by SIGKILL" / "exit status N" for a raw wait status.
std::string describe_wait_status(int status);

// Pids of processes that are still our children (/proc/*/stat ppid), and of
// processes whose command line mentions `marker`.
std::vector<pid_t> leftover_processes(const std::string& marker);

}  // namespace vmm::stress
