// timer-latency: how late do timers fire, cyclictest-style.
//
// Three contenders serve the SAME stream of absolute deadlines (one every
// `spacing` ns) and record now - deadline for each:
//   loop       this project's event loop holding N periodic cyclics, staggered
//              so that together they produce the stream;
//   timerfd    one thread, one plain timerfd re-armed (ABSTIME) per deadline;
//   nanosleep  one thread sleeping with clock_nanosleep(TIMER_ABSTIME).
// Rounds alternate between contenders so that drift in the host's load hits
// all of them alike; every contender runs on the same pinned CPU.
#include <CLI/CLI.hpp>
#include <pthread.h>
#include <sched.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "tools/common/latency_stats.h"
#include "timers/cyclic.h"
#include "timers/event_loop.h"
#include "timers/unique_fd.h"

namespace {

using vmm::timers::Nanos;
using vmm::tools::LatencySummary;
namespace timers = vmm::timers;

struct Options {
  std::size_t timers = 1;
  double interval_us = 1000;
  double min_spacing_us = 20;
  int rounds = 6;
  double round_seconds = 0.5;
  int cpu = -1;
  int fifo_priority = 0;
  bool json = false;
  std::string histogram;
};

Nanos now_ns() { return timers::MonotonicClock::instance().now(); }

struct Stream {
  Nanos spacing;  // between consecutive deadlines of the whole stream
  Nanos period;   // of each of the N timers
};

Stream make_stream(const Options& o) {
  // Each timer fires every `period`; N timers staggered across it make one
  // deadline every period / N. The period grows with N so the stream never
  // asks for more than one deadline every min_spacing (at most 50k/s by
  // default): beyond that every contender only measures its own backlog.
  const auto interval = static_cast<Nanos>(o.interval_us * 1000);
  const auto min_spacing = static_cast<Nanos>(o.min_spacing_us * 1000);
  const auto n = static_cast<Nanos>(o.timers);
  const Nanos period = std::max(interval, n * min_spacing);
  return Stream{period / n, period};
}

void set_fifo(int priority) {
  if (priority <= 0) return;
  sched_param param{};
  param.sched_priority = priority;
  if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) != 0) {
    std::fprintf(stderr, "timer-latency: cannot use SCHED_FIFO %d (need CAP_SYS_NICE); continuing with SCHED_OTHER\n",
                 priority);
  }
}

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// --- the loop contender -----------------------------------------------------

struct LoopRound {
  std::vector<std::int64_t>* samples;
  Nanos end;
  Nanos period;
};

void on_loop_expiry(void* arg, const timers::Expiry& expiry) {
  const Nanos now = now_ns();
  auto* round = static_cast<LoopRound*>(arg);
  // Overruns count as samples too: each missed deadline was that late.
  for (std::uint64_t i = 0; i < expiry.count; ++i) {
    const Nanos deadline = expiry.deadline - static_cast<Nanos>(expiry.count - 1 - i) * round->period;
    if (deadline < round->end) round->samples->push_back(now - deadline);
  }
}

void run_loop_round(timers::CyclicSystem& system, timers::EventLoop& loop, const Options& o, const Stream& s,
                    std::vector<std::int64_t>& samples) {
  std::vector<timers::CyclicId> ids(o.timers);
  const Nanos round_ns = static_cast<Nanos>(o.round_seconds * 1e9);
  // Lead-in long enough to add every timer before the first deadline.
  const Nanos t0 = now_ns() + 20 * timers::kMillisecond + static_cast<Nanos>(o.timers) * 2 * timers::kMicrosecond;
  LoopRound round{&samples, t0 + round_ns, s.period};
  for (std::size_t i = 0; i < o.timers; ++i) {
    ids[i] = system.add(&on_loop_expiry, &round, t0 + static_cast<Nanos>(i) * s.spacing, s.period, loop);
  }
  std::this_thread::sleep_until(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(round.end)) +
                                std::chrono::milliseconds(5));
  // Removing synchronises with the loop: after it, `samples` is ours to read.
  for (auto id : ids) system.remove(id);
}

// --- the raw contenders -----------------------------------------------------

template <typename WaitUntil>
void serve_stream(const Options& o, const Stream& s, std::vector<std::int64_t>& samples, WaitUntil wait_until) {
  const Nanos round_ns = static_cast<Nanos>(o.round_seconds * 1e9);
  const Nanos t0 = now_ns() + 20 * timers::kMillisecond;
  const Nanos end = t0 + round_ns;
  Nanos next = t0;
  while (next < end) {
    wait_until(next);
    const Nanos now = now_ns();
    while (next <= now && next < end) {
      samples.push_back(now - next);
      next += s.spacing;
    }
  }
}

void run_timerfd_round(const Options& o, const Stream& s, std::vector<std::int64_t>& samples) {
  std::thread worker([&] {
    if (o.cpu >= 0) pin_to(o.cpu);
    set_fifo(o.fifo_priority);
    timers::UniqueFd fd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
    serve_stream(o, s, samples, [&](Nanos deadline) {
      itimerspec spec{};
      spec.it_value = timespec{static_cast<time_t>(deadline / timers::kSecond),
                               static_cast<long>(deadline % timers::kSecond)};
      ::timerfd_settime(fd.get(), TFD_TIMER_ABSTIME, &spec, nullptr);
      std::uint64_t expirations;
      [[maybe_unused]] ssize_t n = ::read(fd.get(), &expirations, sizeof expirations);
    });
  });
  worker.join();
}

void run_nanosleep_round(const Options& o, const Stream& s, std::vector<std::int64_t>& samples) {
  std::thread worker([&] {
    if (o.cpu >= 0) pin_to(o.cpu);
    set_fifo(o.fifo_priority);
    serve_stream(o, s, samples, [](Nanos deadline) {
      timespec ts{static_cast<time_t>(deadline / timers::kSecond), static_cast<long>(deadline % timers::kSecond)};
      while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
      }
    });
  });
  worker.join();
}

// --- output ------------------------------------------------------------------

void write_histogram(const std::string& path, const std::vector<std::vector<std::int64_t>*>& sets) {
  // Log-spaced buckets, 10 per decade from 0.1 us to 1 s: a log-log plot of
  // these columns shows body and tail alike.
  std::vector<double> edges;
  for (double e = -1; e <= 6.0001; e += 0.1) edges.push_back(std::pow(10.0, e));
  std::ofstream out(path);
  out << "# upper_us loop timerfd nanosleep\n";
  std::vector<std::vector<std::size_t>> counts(sets.size(), std::vector<std::size_t>(edges.size(), 0));
  for (std::size_t s = 0; s < sets.size(); ++s) {
    for (auto ns : *sets[s]) {
      const double us = static_cast<double>(ns) / 1000.0;
      auto it = std::lower_bound(edges.begin(), edges.end(), us);
      if (it == edges.end()) --it;
      ++counts[s][static_cast<std::size_t>(it - edges.begin())];
    }
  }
  for (std::size_t b = 0; b < edges.size(); ++b) {
    out << edges[b];
    for (auto& c : counts) out << ' ' << c[b];
    out << '\n';
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Timer wake-up latency: this project's event loop against a raw timerfd and clock_nanosleep,\n"
               "serving the same stream of absolute deadlines, interleaved round by round."};
  app.add_option("--timers", o.timers, "Timers armed on the loop (the stream is shared by all of them)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}));
  app.add_option("--interval-us", o.interval_us, "Period of each timer when N is small")->check(CLI::PositiveNumber);
  app.add_option("--min-spacing-us", o.min_spacing_us, "Closest two deadlines of the stream may be")
      ->check(CLI::PositiveNumber);
  app.add_option("--rounds", o.rounds, "Rounds per contender (alternating)")->check(CLI::Range(1, 1000));
  app.add_option("--round-seconds", o.round_seconds, "Length of one round")->check(CLI::Range(0.01, 600.0));
  app.add_option("--cpu", o.cpu, "CPU every contender runs on (default: the last allowed CPU)");
  app.add_option("--fifo", o.fifo_priority, "Run contenders with SCHED_FIFO at this priority")->check(CLI::Range(0, 99));
  app.add_flag("--json", o.json, "Print one JSON line instead of the table");
  app.add_option("--histogram", o.histogram, "Write log-spaced histogram data (for gnuplot) to this file");
  CLI11_PARSE(app, argc, argv);

  if (o.cpu < 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof set, &set);
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) o.cpu = c;
  }
  const Stream stream = make_stream(o);

  timers::CyclicSystem system;
  pin_to(o.cpu);
  timers::EventLoop& loop = system.loop_for_current_cpu();
  if (o.fifo_priority > 0) {
    std::promise<void> done;
    loop.post([&] {
      set_fifo(o.fifo_priority);
      done.set_value();
    });
    done.get_future().wait();
  }

  std::vector<std::int64_t> loop_ns, timerfd_ns, nanosleep_ns;
  const auto expected = static_cast<std::size_t>(o.round_seconds * 1e9 / static_cast<double>(stream.spacing)) + 16;
  loop_ns.reserve(expected * static_cast<std::size_t>(o.rounds));
  timerfd_ns.reserve(expected * static_cast<std::size_t>(o.rounds));
  nanosleep_ns.reserve(expected * static_cast<std::size_t>(o.rounds));
  for (int r = 0; r < o.rounds; ++r) {
    // Rotate the order too, so no contender always follows the same one.
    for (int k = 0; k < 3; ++k) {
      switch ((r + k) % 3) {
        case 0: run_loop_round(system, loop, o, stream, loop_ns); break;
        case 1: run_timerfd_round(o, stream, timerfd_ns); break;
        case 2: run_nanosleep_round(o, stream, nanosleep_ns); break;
      }
    }
  }
  if (!o.histogram.empty()) write_histogram(o.histogram, {&loop_ns, &timerfd_ns, &nanosleep_ns});

  const LatencySummary l = vmm::tools::summarize(loop_ns);
  const LatencySummary t = vmm::tools::summarize(timerfd_ns);
  const LatencySummary n = vmm::tools::summarize(nanosleep_ns);
  const double spacing_us = static_cast<double>(stream.spacing) / 1000.0;
  const double period_us = static_cast<double>(stream.period) / 1000.0;
  if (o.json) {
    std::printf("{\"timers\":%zu,\"period_us\":%.1f,\"spacing_us\":%.2f,\"cpu\":%d,\"fifo\":%d,"
                "\"loop\":%s,\"timerfd\":%s,\"nanosleep\":%s}\n",
                o.timers, period_us, spacing_us, o.cpu, o.fifo_priority, vmm::tools::to_json(l).c_str(),
                vmm::tools::to_json(t).c_str(), vmm::tools::to_json(n).c_str());
    return 0;
  }
  std::printf("timer-latency: %zu timer(s) on one loop, each every %.0f us (a deadline every %.2f us), %d rounds x %.2f s "
              "per contender, CPU %d, %s\n",
              o.timers, period_us, spacing_us, o.rounds, o.round_seconds, o.cpu,
              o.fifo_priority > 0 ? "SCHED_FIFO" : "SCHED_OTHER");
  std::printf("%-10s %9s %9s %9s %9s %9s %9s   (microseconds late)\n", "contender", "samples", "min", "p50", "p99",
              "p99.9", "max");
  for (auto [name, s] : {std::pair{"loop", l}, std::pair{"timerfd", t}, std::pair{"nanosleep", n}}) {
    std::printf("%-10s %9zu %9.1f %9.1f %9.1f %9.1f %9.1f\n", name, s.samples, s.min_us, s.p50_us, s.p99_us,
                s.p999_us, s.max_us);
  }
  if (t.p50_us > 0 && t.p99_us > 0) {
    std::printf("loop / timerfd: p50 %.2fx, p99 %.2fx\n", l.p50_us / t.p50_us, l.p99_us / t.p99_us);
  }
  return 0;
}
