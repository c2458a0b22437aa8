#include "timers/event_loop.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include <cerrno>
#include <system_error>
#include <utility>

#include "timers/cyclic.h"
#include "timers/cyclic_slot.h"
#include "timers/restricted_ring.h"

namespace vmm::timers {

namespace {

// std::this_thread::get_id() is a library call; the hot path asks often.
std::thread::id current_thread() noexcept {
  thread_local const std::thread::id self = std::this_thread::get_id();
  return self;
}

// Set around each handler call, so that a remove() or move() made from a
// handler knows which loop's dispatch it holds up while it waits.
thread_local EventLoop* t_running_handler_of = nullptr;

constexpr std::uint64_t kTimerTag = 1;
constexpr std::uint64_t kDoorbellTag = 2;
constexpr std::size_t kHeapArity = 4;

[[noreturn]] void throw_system_error(const char* what, int err = errno) {
  throw std::system_error(err, std::generic_category(), what);
}

timespec to_timespec(Nanos t) {
  return timespec{static_cast<time_t>(t / kSecond), static_cast<long>(t % kSecond)};
}

}  // namespace

EventLoop::EventLoop(CyclicSystem& system, int cpu, std::string name)
    : system_(system), cpu_(cpu), name_(std::move(name)),
      uses_timerfd_(system.clock().is_monotonic()) {
  timer_fd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer_fd_) throw_system_error("timerfd_create");
  doorbell_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!doorbell_fd_) throw_system_error("eventfd");
  setup_ring();
  loop_thread_ = std::this_thread::get_id();
}

EventLoop::~EventLoop() {
  stop();
  if (ring_ready_) ::io_uring_queue_exit(&ring_);
}

void EventLoop::setup_ring() {
  // Two polls: a small ring is plenty. Polls are all it may ever run
  // (timeouts too, which liburing submits for a timed wait on kernels older
  // than 5.11).
  const int rc = init_restricted_ring(ring_, 16, {IORING_OP_POLL_ADD, IORING_OP_TIMEOUT});
  if (rc < 0) throw_system_error("io_uring_queue_init", -rc);
  ring_ready_ = true;
}

// ---------------------------------------------------------------- the heap

void EventLoop::place(std::size_t pos, HeapEntry entry) {
  heap_[pos] = entry;
  entry.slot->heap_pos = pos;
}

// Keys live in the heap array itself, so sifting compares contiguous memory
// instead of chasing a pointer per comparison (what matters at 100k timers).
void EventLoop::sift_up(std::size_t pos) {
  const HeapEntry entry = heap_[pos];
  while (pos > 0) {
    const std::size_t parent = (pos - 1) / kHeapArity;
    if (heap_[parent].when <= entry.when) break;
    place(pos, heap_[parent]);
    pos = parent;
  }
  place(pos, entry);
}

void EventLoop::sift_down(std::size_t pos) {
  const HeapEntry entry = heap_[pos];
  const std::size_t size = heap_.size();
  for (;;) {
    const std::size_t first = kHeapArity * pos + 1;
    if (first >= size) break;
    std::size_t best;
    if (first + kHeapArity <= size) {
      // All four children: a tournament the compiler turns into cmovs,
      // since which child is earliest is unpredictable.
      const std::size_t a = heap_[first + 1].when < heap_[first].when ? first + 1 : first;
      const std::size_t b = heap_[first + 3].when < heap_[first + 2].when ? first + 3 : first + 2;
      best = heap_[b].when < heap_[a].when ? b : a;
    } else {
      best = first;
      for (std::size_t child = first + 1; child < size; ++child) {
        if (heap_[child].when < heap_[best].when) best = child;
      }
    }
    if (heap_[best].when >= entry.when) break;
    place(pos, heap_[best]);
    pos = best;
  }
  place(pos, entry);
}

void EventLoop::heap_push(CyclicSlot* slot) {
  heap_.push_back(HeapEntry{slot->when, slot});
  sift_up(heap_.size() - 1);
}

void EventLoop::heap_erase(CyclicSlot* slot) {
  const std::size_t pos = slot->heap_pos;
  if (pos == kNotInHeap) return;
  slot->heap_pos = kNotInHeap;
  const HeapEntry last = heap_.back();
  heap_.pop_back();
  if (last.slot == slot) return;
  place(pos, last);
  sift_up(pos);
  sift_down(last.slot->heap_pos);
}

// Keys may lag behind their slots: a deadline moved later leaves its key
// where it was (a lower bound, so heap order still never fires anything
// late), and the key is corrected only if it reaches the top. Pushing a
// timer out, the common re-arm, is then O(1) whatever the heap's size;
// moving one earlier sifts up at once.
void EventLoop::heap_update(CyclicSlot* slot, Nanos when) {
  slot->when = when;
  if (when == kNever) {
    heap_erase(slot);
  } else if (slot->heap_pos == kNotInHeap) {
    heap_push(slot);
  } else if (when < heap_[slot->heap_pos].when) {
    heap_[slot->heap_pos].when = when;
    sift_up(slot->heap_pos);
  }
}

Nanos EventLoop::earliest() {
  while (!heap_.empty()) {
    HeapEntry& top = heap_.front();
    if (top.when == top.slot->when) return top.when;
    top.when = top.slot->when;  // a lagging key reached the top: correct it
    sift_down(0);
  }
  return kNever;
}

// ----------------------------------------------------------- the timerfd

void EventLoop::deadline_changed(Nanos when) {
  if (when >= armed_) return;  // the timerfd fires no later than this already
  if (!uses_timerfd_) return;  // nobody waits on a timerfd for a manual clock
  if (on_loop_thread()) {
    // The loop's own thread arms once, just before it next waits.
    arm_pending_ = true;
    return;
  }
  arm_locked(when);
}

void EventLoop::arm_locked(Nanos deadline) {
  itimerspec spec{};
  if (deadline != kNever) {
    // All-zero disarms a timerfd: a deadline at or before 0 becomes 1 ns,
    // which is in the past and fires at once.
    spec.it_value = to_timespec(deadline > 0 ? deadline : 1);
  }
  ::timerfd_settime(timer_fd_.get(), TFD_TIMER_ABSTIME, &spec, nullptr);
  armed_ = deadline;
  arm_pending_ = false;
  ++stats_.timerfd_arms;
}

// ----------------------------------------------------------- dispatching

bool EventLoop::begin_step() {
  std::lock_guard lock(mu_);
  // Turned away before anything is recorded: the thread already dispatching
  // stays the loop's thread for its handlers.
  if (threaded_ || stepping_) return false;
  stepping_ = true;
  loop_thread_.store(current_thread(), std::memory_order_relaxed);
  return true;
}

void EventLoop::end_step() {
  std::lock_guard lock(mu_);
  stepping_ = false;
}

std::size_t EventLoop::run_due() {
  if (!begin_step()) return 0;
  const std::size_t ran = dispatch_due();
  end_step();
  return ran;
}

std::size_t EventLoop::dispatch_due() {
  const Nanos now = system_.clock().now();
  {
    std::lock_guard lock(mu_);
    // Take every due cyclic out before running any: a handler may add,
    // remove or reprogram anything (itself included), and one that re-arms
    // itself in the past runs again in the next batch, not in a loop here.
    while (earliest() <= now) {
      CyclicSlot* slot = heap_.front().slot;
      if (slot->interval == kOneShot) {
        slot->expiry = Expiry{slot->when, 1};
        heap_update(slot, kNever);  // parked until reprogrammed
      } else {
        // In unsigned arithmetic: how far behind a first deadline far in the
        // past is can exceed what a Nanos holds; the deadline served cannot.
        const std::uint64_t interval = static_cast<std::uint64_t>(slot->interval);
        const std::uint64_t missed =
            (static_cast<std::uint64_t>(now) - static_cast<std::uint64_t>(slot->when)) / interval;
        const auto served = static_cast<Nanos>(static_cast<std::uint64_t>(slot->when) + missed * interval);
        slot->expiry = Expiry{served, missed + 1};
        heap_update(slot, add_saturating(served, slot->interval));
      }
      slot->dispatch = Dispatch::queued;
      batch_.push_back(slot);
    }
  }

  // One critical section between two handlers: the bookkeeping after one
  // and before the next.
  std::size_t ran = 0;
  std::unique_lock lock(mu_);
  for (CyclicSlot* slot : batch_) {
    if (slot->doomed) {  // removed while queued: it never runs
      slot->doomed = false;
      slot->dispatch = Dispatch::idle;
      system_.release_slot(slot);
      continue;
    }
    slot->dispatch = Dispatch::running;
    const CyclicHandler handler = slot->handler;
    void* const arg = slot->arg;
    const Expiry expiry = slot->expiry;
    lock.unlock();
    EventLoop* const outer = t_running_handler_of;
    t_running_handler_of = this;
    handler(arg, expiry);
    t_running_handler_of = outer;
    ++ran;
    lock.lock();
#if defined(VMM_MUTANT_ONESHOT_REARM_LOST)
    // Mutation-testing hook (tools/mutants): a one-shot parked after its
    // handler rather than before, losing a re-arm made while it ran.
    if (slot->interval == kOneShot) heap_update(slot, kNever);
#endif
    slot->dispatch = Dispatch::idle;
    if (slot->doomed) {
      slot->doomed = false;
      if (slot->remover_waiting) {
        slot->remover_waiting = false;  // the waiting remover frees it
      } else {
        system_.release_slot(slot);  // removed by its own handler
      }
    }
    ++stats_.handler_calls;
    // Removers and movers wait for `idle`; wake them.
    handler_done_.notify_all();
  }
  batch_.clear();
  return ran;
}

std::size_t EventLoop::run_posted() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(mu_);
    tasks.swap(posted_);
  }
  for (auto& task : tasks) task();
  return tasks.size();
}

bool EventLoop::post(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    posted_.push_back(std::move(task));
  }
  ring_doorbell();
  return true;
}

void EventLoop::ring_doorbell() noexcept {
  const std::uint64_t one = 1;
  // EAGAIN means the counter is saturated: the loop is already woken.
  [[maybe_unused]] ssize_t n = ::write(doorbell_fd_.get(), &one, sizeof one);
}

// ---------------------------------------------------------------- waiting

bool EventLoop::submit_poll(int fd, std::uint64_t tag) {
  io_uring_sqe* sqe = ::io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The submission queue is full: flush it and try once more.
    ::io_uring_submit(&ring_);
    sqe = ::io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return false;  // retried before the next wait
  }
  if (multishot_polls_) {
    ::io_uring_prep_poll_multishot(sqe, fd, POLLIN);
  } else {
    ::io_uring_prep_poll_add(sqe, fd, POLLIN);
  }
  ::io_uring_sqe_set_data64(sqe, tag);
  return true;
}

bool EventLoop::wait_for_events(Nanos timeout) {
  {
    std::lock_guard lock(mu_);
    // What was armed and has passed has fired, and a fired timerfd is
    // disarmed. Arm at the earliest deadline if it is earlier than what is
    // armed, or if the loop thread deferred an arm.
    if (uses_timerfd_) {
      if (armed_ <= system_.clock().now()) armed_ = kNever;
      const Nanos next = earliest();
      if (arm_pending_ || next < armed_) arm_locked(next);
    }
  }
  // Multishot polls stay armed across completions; re-submit one only after
  // the kernel ended it (no IORING_CQE_F_MORE).
  if (!timer_poll_armed_) timer_poll_armed_ = submit_poll(timer_fd_.get(), kTimerTag);
  if (!doorbell_poll_armed_) doorbell_poll_armed_ = submit_poll(doorbell_fd_.get(), kDoorbellTag);
  io_uring_cqe* cqe = nullptr;
  int rc;
  if (timeout == kNever) {
    rc = ::io_uring_submit_and_wait(&ring_, 1);
  } else {
    __kernel_timespec ts{timeout / kSecond, timeout % kSecond};
    rc = ::io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }
  (void)rc;  // EINTR and ETIME are normal wake-ups; completions say the rest

  bool timer_ready = false;
  bool doorbell_ready = false;
  unsigned head;
  unsigned seen = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    ++seen;
    const std::uint64_t tag = ::io_uring_cqe_get_data64(cqe);
    const bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    // A negative result is a poll that did not happen: nothing is ready, and
    // counting it as a wake-up would spin the loop on a refused poll.
    const bool fired = cqe->res >= 0;
    if (cqe->res == -EINVAL) multishot_polls_ = false;
    if (tag == kTimerTag) {
      timer_ready = timer_ready || fired;
      if (!more) timer_poll_armed_ = false;
    } else if (tag == kDoorbellTag) {
      doorbell_ready = doorbell_ready || fired;
      if (!more) doorbell_poll_armed_ = false;
    }
  }
  ::io_uring_cq_advance(&ring_, seen);

  std::uint64_t count;
  if (doorbell_ready) {
    // Drained before posted work runs: a post that lands after this read
    // rings again, so no wake-up is lost.
    [[maybe_unused]] ssize_t n = ::read(doorbell_fd_.get(), &count, sizeof count);
  }
  return timer_ready;
}

void EventLoop::drain_timerfd() {
  // A plain read(2) after the poll fired, done after the due handlers ran so
  // it is off the wake-up latency path. Nothing is lost by the delay: the
  // next wait treats what was armed and has passed as fired, and settime
  // resets the timerfd.
  std::uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(timer_fd_.get(), &count, sizeof count);
}

std::size_t EventLoop::run_once(Nanos timeout) {
  if (!begin_step()) return 0;
  {
    std::lock_guard lock(mu_);
    if (earliest() <= system_.clock().now()) timeout = 0;
    if (!posted_.empty()) timeout = 0;
  }
  const bool timer_fired = timeout != 0 && wait_for_events(timeout);
  run_posted();
  const std::size_t ran = dispatch_due();
  if (timer_fired) drain_timerfd();
  end_step();
  return ran;
}

void EventLoop::thread_main() {
  loop_thread_.store(current_thread(), std::memory_order_relaxed);
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
    }
    const bool timer_fired = wait_for_events(kNever);
    run_posted();
    dispatch_due();
    if (timer_fired) drain_timerfd();
  }
  run_posted();  // work posted before stop still runs, so no promise is dropped
}

void EventLoop::start_thread(bool pin, void (*prologue)() noexcept) {
  {
    std::lock_guard lock(mu_);
    threaded_ = true;
    // No thread is the loop's until its own says so, first thing.
    loop_thread_.store(std::thread::id(), std::memory_order_relaxed);
  }
  thread_ = std::thread([this, prologue] {
    if (prologue != nullptr) prologue();
    thread_main();
  });
  ::pthread_setname_np(thread_.native_handle(), name_.c_str());
  if (pin && cpu_ >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_, &set);
    // Best effort: a CPU taken away since start-up leaves the thread floating.
    ::pthread_setaffinity_np(thread_.native_handle(), sizeof set, &set);
  }
}

void EventLoop::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) {
    ring_doorbell();
    thread_.join();
  }
}

// ----------------------------------------------------------- introspection

bool EventLoop::on_loop_thread() const noexcept {
  return current_thread() == loop_thread_.load(std::memory_order_relaxed);
}

EventLoop* EventLoop::running_handler_of() noexcept { return t_running_handler_of; }

Nanos EventLoop::next_deadline() {
  std::lock_guard lock(mu_);
  return earliest();
}

Nanos EventLoop::armed_deadline() const {
  std::lock_guard lock(mu_);
  return armed_;
}

std::size_t EventLoop::heap_size() const {
  std::lock_guard lock(mu_);
  return heap_.size();
}

LoopStats EventLoop::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace vmm::timers
