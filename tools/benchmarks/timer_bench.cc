// Costs of the timer operations, with timerfd_settime as the syscall
// baseline measured in the same binary and run.
//
// Heap sizes 1, 1k and 100k: the heap holds that many armed cyclics, far in
// the future so nothing fires while measuring.
#include <benchmark/benchmark.h>
#include <sys/timerfd.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <mutex>
#include <random>
#include <vector>

#include "timers/callout.h"
#include "timers/cyclic.h"
#include "timers/event_loop.h"
#include "timers/unique_fd.h"

namespace {

using namespace vmm::timers;

const Clock& mono = MonotonicClock::instance();
constexpr Nanos kFar = 3600 * kSecond;  // an hour ahead: never due while measuring

void noop(void*, const Expiry&) {}

// A loop filled with `size` armed cyclics at random far deadlines.
struct FilledLoop {
  explicit FilledLoop(std::size_t size, bool threads)
      : system(mono, LoopOptions{.loops = 1, .threads = threads}), rng(7) {
    const Nanos base = mono.now() + kFar;
    ids.reserve(size);
    for (std::size_t i = 0; i < size; ++i) {
      ids.push_back(system.add(&noop, nullptr, base + static_cast<Nanos>(rng() % kSecond), kOneShot, system.loop(0)));
    }
    for (std::size_t i = 0; i < 4096; ++i) {
      picks.push_back(ids[rng() % ids.size()]);
      whens.push_back(base + static_cast<Nanos>(rng() % kSecond));
    }
  }
  CyclicSystem system;
  std::mt19937_64 rng;
  std::vector<CyclicId> ids;
  std::vector<CyclicId> picks;  // pre-drawn, so the RNG is not what is measured
  std::vector<Nanos> whens;
};

// Reprogram from the loop's own thread (a handler re-arming, or a caller-
// driven loop's owner): never a syscall; the loop arms once before it waits.
void BM_CyclicReprogram(benchmark::State& state) {
  FilledLoop f(static_cast<std::size_t>(state.range(0)), /*threads=*/false);
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.system.reprogram(f.picks[i & 4095], f.whens[i & 4095]));
    ++i;
  }
  state.counters["arms"] = static_cast<double>(f.system.loop(0).stats().timerfd_arms);
}
BENCHMARK(BM_CyclicReprogram)->Arg(1)->Arg(1000)->Arg(100000);

// Reprogram from another thread (a vCPU) to deadlines later than what is
// armed: the common case of a guest pushing its timer out; no syscall.
void BM_CyclicReprogramCrossThread(benchmark::State& state) {
  FilledLoop f(static_cast<std::size_t>(state.range(0)), /*threads=*/true);
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.system.reprogram(f.picks[i & 4095], f.whens[i & 4095]));
    ++i;
  }
}
BENCHMARK(BM_CyclicReprogramCrossThread)->Arg(1)->Arg(1000)->Arg(100000);

// Reprogram from another thread that makes the cyclic the earliest every
// time: each call must re-arm the loop's timerfd, so this is the worst case
// and costs about one timerfd_settime.
void BM_CyclicReprogramEarliestCrossThread(benchmark::State& state) {
  FilledLoop f(static_cast<std::size_t>(state.range(0)), /*threads=*/true);
  Nanos when = mono.now() + kFar / 2;
  for (auto _ : state) benchmark::DoNotOptimize(f.system.reprogram(f.ids[0], --when));
}
BENCHMARK(BM_CyclicReprogramEarliestCrossThread)->Arg(1)->Arg(1000)->Arg(100000);

void BM_CyclicAdd(benchmark::State& state) {
  FilledLoop f(static_cast<std::size_t>(state.range(0)), /*threads=*/false);
  std::vector<CyclicId> added;
  added.reserve(1024);
  std::size_t i = 0;
  for (auto _ : state) {
    added.push_back(f.system.add(&noop, nullptr, f.whens[i & 4095], kOneShot, f.system.loop(0)));
    if (++i % 1024 == 0) {  // keep the heap at its size; not measured
      state.PauseTiming();
      for (auto id : added) f.system.remove(id);
      added.clear();
      state.ResumeTiming();
    }
  }
}
BENCHMARK(BM_CyclicAdd)->Arg(1)->Arg(1000)->Arg(100000);

void BM_CyclicRemove(benchmark::State& state) {
  FilledLoop f(static_cast<std::size_t>(state.range(0)), /*threads=*/false);
  std::vector<CyclicId> batch;
  std::size_t next = 0;
  for (auto _ : state) {
    if (next == batch.size()) {  // refill; not measured
      state.PauseTiming();
      batch.clear();
      for (std::size_t k = 0; k < 1024; ++k)
        batch.push_back(f.system.add(&noop, nullptr, f.whens[k], kOneShot, f.system.loop(0)));
      next = 0;
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(f.system.remove(batch[next++]));
  }
}
BENCHMARK(BM_CyclicRemove)->Arg(1)->Arg(1000)->Arg(100000);

// What a device does per guest register write: reset under its lock, stop.
void BM_CalloutResetStop(benchmark::State& state) {
  CyclicSystem system(mono, LoopOptions{.loops = 1, .threads = false});
  std::mutex device_lock;
  Callout callout;
  callout.init(system, system.loop(0), [](void*) {}, nullptr);
  for (auto _ : state) {
    std::lock_guard lock(device_lock);
    benchmark::DoNotOptimize(callout.reset(kFar));
    benchmark::DoNotOptimize(callout.stop());
  }
}
BENCHMARK(BM_CalloutResetStop);

// The syscall every reprogram avoids.
void BM_TimerfdSettime(benchmark::State& state) {
  UniqueFd fd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
  Nanos when = mono.now() + kFar;
  for (auto _ : state) {
    itimerspec spec{};
    ++when;
    spec.it_value = timespec{static_cast<time_t>(when / kSecond), static_cast<long>(when % kSecond)};
    benchmark::DoNotOptimize(::timerfd_settime(fd.get(), TFD_TIMER_ABSTIME, &spec, nullptr));
  }
}
BENCHMARK(BM_TimerfdSettime);

// What each timer loop costs a host, for the README's "128 CPUs" line: the
// time to start and stop N threaded loops, and, once, the descriptors,
// threads and resident memory they add. The VMM makes one loop per CPU it
// may run on, so N loops is what an N-CPU affinity costs, whatever the CPUs
// this machine has (loops share them here).
long count_entries(const char* dir) {
  long n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  return n;
}

long resident_kib() {
  long pages = 0, resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

void BM_LoopsStartStop(benchmark::State& state) {
  const auto loops = static_cast<std::size_t>(state.range(0));
  const LoopOptions options{.loops = loops, .threads = true, .pin = true};
  {
    const long fds = count_entries("/proc/self/fd"), threads = count_entries("/proc/self/task");
    const long rss = resident_kib();
    CyclicSystem system(mono, options);
    const auto per_loop = [&](long delta) { return static_cast<double>(delta) / static_cast<double>(loops); };
    state.counters["fds_per_loop"] = per_loop(count_entries("/proc/self/fd") - fds);
    state.counters["threads_per_loop"] = per_loop(count_entries("/proc/self/task") - threads);
    state.counters["rss_kib_per_loop"] = per_loop(resident_kib() - rss);
  }
  for (auto _ : state) {
    CyclicSystem system(mono, options);
    benchmark::DoNotOptimize(system.loop_count());
  }
}
BENCHMARK(BM_LoopsStartStop)->Arg(1)->Arg(16)->Arg(128)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
