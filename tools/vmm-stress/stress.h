// vmm-stress: the pieces its loops share. See main.cc for the commands.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace vmm::stress {

using Clock = std::chrono::steady_clock;

enum class GuestKind { test, linux_initramfs };

struct Options {
  std::string kernel;
  GuestKind guest = GuestKind::test;
  std::string initrd;             // the Linux guest's initramfs (guest-images/linux)
  unsigned cpus = 1;
  std::string ready;              // a line the guest prints once it is up (default per guest)
  std::uint64_t cycles = 100;
  bool process = false;           // separate `vmm run` processes instead of the in-process Vm API
  unsigned jitter_min_ms = 0;     // stop-force: wait in [min, max] ms before the stop
  unsigned jitter_max_ms = 50;
  unsigned vms = 1;               // VMs at once
  bool json = false;
  std::chrono::milliseconds hang_timeout{20000};  // no progress for this long in one cycle: a hang
  std::uint64_t warmup = 0;       // cycles before the resource baseline (0: automatic)
  std::uint64_t seed = 0;         // 0: random
  std::string memory = "64M";
  std::string cmdline;            // guest command line (default per loop)
  std::uint64_t reboots_per_vm = 500;
  std::string vmm_binary;         // process mode; default: ../vmm/vmm next to this program
  std::string fault_inject;       // VMM_FAULT_INJECT spec
  std::int64_t rss_limit_kib = 16384;  // RSS growth above this is a leak
  double max_stop_ms = 0;         // > 0: a forced stop slower than this is a failure
  bool progress = true;           // progress bar (only on a terminal anyway)
  // qemu-start-kill
  std::string qemu = "qemu-system-x86_64";
  std::string machine = "microvm";
  std::string kill_signal = "term";  // term | kill
  std::string peers = "both";        // both | vmm | qemu
};

// What the loops need to know about the guest they boot: the project's test
// guest (test=reboot, results through the debug-exit port) or Linux with the
// project's initramfs (guest-images/linux/init: vmm.reboots=N, results on
// its console, powers off at the end).
struct GuestProfile {
  bool is_linux = false;
  std::string ready;  // printed once per boot, when the guest is up
  // The command line of a VM that reboots `reboots` times, then ends.
  std::string reboot_cmdline(const std::string& base, std::uint64_t reboots) const;
  // Printed by its last boot when every reboot happened.
  std::string reboot_success(std::uint64_t reboots) const;
  std::string default_reboot_base() const;
  std::string default_stop_force_cmdline() const;
  int ended_ok_status() const { return is_linux ? 0 : 1; }  // power-off, or debug-exit 0
};
GuestProfile guest_profile(const Options& options);

// Counts a line in a stream written in arbitrary pieces (a serial port's
// bytes, a pipe's reads), wherever the pieces split it.
class LineCounter {
 public:
  explicit LineCounter(std::string needle) : needle_(std::move(needle)) {}
  void feed(std::string_view bytes);
  std::uint64_t count() const noexcept { return count_; }

 private:
  std::string needle_;
  std::string carry_;  // the end of what came before: a match may start in it
  std::uint64_t count_ = 0;
};

// /proc/self figures, after malloc_trim so that allocator caches do not
// count as growth.
struct Resources {
  long fds = 0;
  long threads = 0;
  long maps = 0;
  long rss_kib = 0;
};
Resources measure_resources();

// Up to `max` bytes of a file ("" when it cannot be read); for /proc files
// and logs.
std::string read_small_file(const std::string& path, std::size_t max = 1 << 20);

// Every thread of `pid` (0: this process): tid, name, state, wait channel.
std::string describe_threads(pid_t pid = 0);

// Percentiles of a sample (copied, so the caller's order is kept).
double percentile(std::vector<double> values, double p);

// Counters the workers update and the supervisor reads.
struct Tally {
  std::atomic<std::uint64_t> cycles{0};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> hangs{0};
  std::atomic<std::uint64_t> ended_early{0};  // the guest finished before the stop landed
  mutable std::mutex mu;                      // guards the vectors below
  std::vector<double> stop_ms;              // forced stop: request to resources freed
  std::vector<double> teardown_ms;          // of which: destroying the ended VM (in-process)
  std::vector<std::string> failure_notes;   // the first few, for the report
  void fail(std::string note);
  void add_stop_ms(double ms);
};

// What one worker is doing, for the watchdog: a heartbeat (0: idle), and
// what to say about it when it stops beating.
struct WorkerSlot {
  std::atomic<std::int64_t> heartbeat_ns{0};
  std::mutex mu;
  std::string activity;
  std::function<std::string()> describe;  // current VM's status; called under mu
  pid_t child = 0;                        // process mode: the `vmm` (or QEMU) being driven

  void beat() noexcept;
  void set(std::string what, std::function<std::string()> describe_vm = {}, pid_t pid = 0);
  void idle();
};

std::int64_t now_ns() noexcept;

// The supervisor: runs `work(worker_index)` on `workers` threads, draws the
// progress bar, and declares a hang when a slot's heartbeat is older than
// the timeout: it prints every thread's state and each VM's status, calls
// `on_hang` (kill children), prints the final line and exits the process.
class Supervisor {
 public:
  Supervisor(const Options& options, Tally& tally, std::uint64_t total_cycles, std::string what);
  void run_phase(unsigned workers, const std::function<void(unsigned worker, WorkerSlot& slot)>& work);
  void set_on_hang(std::function<void()> on_hang) { on_hang_ = std::move(on_hang); }
  void set_final_report(std::function<void()> report) { final_report_ = std::move(report); }
  double elapsed_s() const;
  void clear_progress();

 private:
  [[noreturn]] void declare_hang(unsigned worker, WorkerSlot& slot, double silent_ms);
  void draw_progress();

  const Options& options_;
  Tally& tally_;
  std::uint64_t total_;
  std::string what_;
  Clock::time_point start_;
  bool tty_;
  std::function<void()> on_hang_;
  std::function<void()> final_report_;
  std::vector<std::unique_ptr<WorkerSlot>> slots_;
};

// The summary every loop prints: an info line, then exactly
//   cycles=N failures=F hangs=H fd_leak=D rss_growth_kib=R rate_per_s=X
// (or, with --json, one JSON object with those fields and the details).
struct Summary {
  std::string mode;
  std::uint64_t cycles = 0, failures = 0, hangs = 0;
  long fd_leak = 0;
  long rss_growth_kib = 0;
  double rate_per_s = 0;
  long thread_leak = 0;
  long maps_growth = 0;
  std::string extra_json;  // a JSON object whose members are merged in
  std::string extra_text;  // appended to the info line
};
// Copies the tally's counts into `summary`, with the rate over `elapsed_s`.
void set_counts(Summary& summary, const Tally& tally, double elapsed_s);

// Prints the summary; returns the exit status (0 only if nothing failed,
// hung or leaked).
int print_summary(const Options& options, const Summary& summary, const Tally& tally);

// A reboot loop's work: its cycles cut into chunks of at most `per_vm`
// reboots, one chunk per VM (or vmm process) the workers run.
class RebootChunks {
 public:
  explicit RebootChunks(std::uint64_t per_vm) : per_vm_(per_vm) {}
  void add(std::uint64_t reboots);
  std::uint64_t take();  // 0 once none is left

 private:
  const std::uint64_t per_vm_;
  std::mutex mu_;
  std::deque<std::uint64_t> chunks_;
};

// The vmm that process mode runs: --vmm, else the one built alongside.
std::string default_vmm_binary(const Options& options);

// A uniformly random duration in [min_ms, max_ms].
std::chrono::microseconds jitter(std::mt19937_64& rng, unsigned min_ms, unsigned max_ms);

std::uint64_t automatic_warmup(std::uint64_t cycles);

// Entry points.
int run_reboot_in_process(const Options& options);
int run_stop_force_in_process(const Options& options);
int run_reboot_process(const Options& options);
int run_stop_force_process(const Options& options);
int run_qemu_start_kill(const Options& options);

}  // namespace vmm::stress
