// One event loop per host CPU: a pinned thread that owns a min-heap of
// cyclics and ONE timerfd armed (TFD_TIMER_ABSTIME) at the heap's earliest
// deadline, waiting through io_uring on that timerfd and on an eventfd
// doorbell for work posted by other threads.
//
// Arming policy: the timerfd is re-armed only when the earliest deadline moves
// earlier than what is armed, or after a batch of expiries. A deadline that
// moves later leaves the timerfd early; the spurious wake-up is harmless and
// cheaper than a syscall per reprogram. Operations on the loop's own thread
// (handlers re-arming themselves) never make a syscall: the loop arms once,
// just before it waits.
#pragma once

#include <liburing.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "timers/clock.h"
#include "timers/unique_fd.h"

namespace vmm::timers {

class CyclicSystem;
struct CyclicSlot;

struct LoopStats {
  std::uint64_t timerfd_arms = 0;    // timerfd_settime calls
  std::uint64_t handler_calls = 0;   // cyclic handlers run
};

class EventLoop {
 public:
  EventLoop(CyclicSystem& system, int cpu, std::string name);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  int cpu() const noexcept { return cpu_; }  // -1 when not bound to a CPU

  // Caller-driven loops (LoopOptions::threads == false) are stepped with
  // these, by one thread at a time; the stepping thread becomes the loop's
  // thread. A call from a handler of this loop, from a second thread while
  // one steps it, or on a threaded loop (whose own thread steps it) does
  // nothing and returns 0: a second dispatcher would make on_loop_thread()
  // lie to the first one's handlers, whose remove(self) would then wait for
  // itself.
  // run_due: runs every cyclic due at clock().now(); returns handlers run.
  std::size_t run_due();
  // run_once: arms the timerfd, waits (at most `timeout`, or until a cyclic
  // is due or work is posted), runs posted work and due cyclics.
  std::size_t run_once(Nanos timeout);

  // Stops the loop's thread (joining it; work already posted still runs).
  // Its cyclics stay allocated but never fire again; later posts are refused.
  // Called by ~CyclicSystem; idempotent.
  void stop();

  // Runs `task` on the loop's thread (soon, in FIFO order). Thread-safe.
  // Returns false after the loop was stopped.
  bool post(std::function<void()> task);

  // True on the loop's own thread; for a caller-driven loop, on the thread
  // stepping it (or that stepped it last, or created it).
  bool on_loop_thread() const noexcept;
  // The loop whose cyclic handler the calling thread is running (the
  // innermost one), or nullptr outside handlers.
  static EventLoop* running_handler_of() noexcept;

  // Earliest deadline in the heap (kNever when empty) and what the timerfd
  // is armed at (kNever when disarmed).
  Nanos next_deadline();
  Nanos armed_deadline() const;
  std::size_t heap_size() const;
  LoopStats stats() const;

 private:
  friend class CyclicSystem;

  // Heap of cyclics keyed by absolute deadline; each slot remembers its heap
  // index, so remove and reprogram are O(log n).
  void heap_push(CyclicSlot* slot);
  void heap_erase(CyclicSlot* slot);
  void heap_update(CyclicSlot* slot, Nanos when);  // in or out of the heap
  Nanos earliest();  // the true earliest deadline, correcting lagging keys on top
  void sift_up(std::size_t pos);
  void sift_down(std::size_t pos);
  struct HeapEntry {
    Nanos when;  // a copy of slot->when, kept in step
    CyclicSlot* slot;
  };
  void place(std::size_t pos, HeapEntry entry);

  // Called with mu_ held after a deadline was set to `when`.
  void deadline_changed(Nanos when);
  void arm_locked(Nanos deadline);
  void start_thread(bool pin, void (*prologue)() noexcept);
  void thread_main();
  std::size_t dispatch_due();  // the stepping thread, or the loop's own
  bool begin_step();           // run_due/run_once: may this thread step it?
  void end_step();
  bool wait_for_events(Nanos timeout);  // true when the timerfd fired
  void drain_timerfd();
  bool submit_poll(int fd, std::uint64_t tag);
  std::size_t run_posted();
  void ring_doorbell() noexcept;
  void setup_ring();

  CyclicSystem& system_;
  const int cpu_;
  const std::string name_;
  const bool uses_timerfd_;  // false on a manual clock: nothing to wait for

  mutable std::mutex mu_;
  std::condition_variable handler_done_;  // a running handler finished
  std::vector<HeapEntry> heap_;
  Nanos armed_ = kNever;          // what the timerfd is armed at
  bool arm_pending_ = false;      // arm before the next wait (loop-thread ops)
  // The loop's thread, or for a caller-driven loop the last thread that
  // stepped it (it owns the loop until another thread steps it). Written
  // only by a thread that is about to dispatch, never by one turned away.
  std::atomic<std::thread::id> loop_thread_;
  bool threaded_ = false;         // its own thread steps it; set before that starts
  bool stepping_ = false;         // a caller steps it now (no re-entry, no second stepper)
  // The loop whose running handler one of this loop's handlers waits for
  // (in remove or move). Guarded by the CyclicSystem's waits mutex, and
  // followed to refuse a wait that would close a cycle of handlers.
  EventLoop* waiting_for_ = nullptr;
  std::vector<std::function<void()>> posted_;
  bool stopping_ = false;
  LoopStats stats_;
  std::vector<CyclicSlot*> batch_;  // reused between batches (loop thread only)

  UniqueFd timer_fd_;
  UniqueFd doorbell_fd_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool timer_poll_armed_ = false;
  bool doorbell_poll_armed_ = false;
  // Kernels before 5.13 refuse multishot polls (EINVAL); the loop then falls
  // back to one-shot polls, re-submitted after every completion.
  bool multishot_polls_ = true;
  std::thread thread_;
};

}  // namespace vmm::timers
