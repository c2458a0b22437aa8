#include "timers/cyclic.h"

#include <sched.h>

#include <array>
#include <limits>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#include "timers/cyclic_slot.h"
#include "timers/event_loop.h"
#include "timers/race_points.h"

namespace vmm::timers {

// Slots live in chunks that are never freed or moved while the system lives,
// so a handle can be turned into a slot without a lock; whether the handle is
// still current is then decided under the owning loop's lock.
struct CyclicSystem::SlotTable {
  static constexpr std::size_t kChunkBits = 12;
  static constexpr std::size_t kChunkSize = std::size_t{1} << kChunkBits;
  static constexpr std::size_t kMaxChunks = 1024;  // 4M cyclics

  std::array<std::atomic<CyclicSlot*>, kMaxChunks> chunks{};
  std::array<std::unique_ptr<CyclicSlot[]>, kMaxChunks> owned;
  std::mutex mu;  // guards free_list, chunk_count; taken after a loop lock, never before
  CyclicSlot* free_list = nullptr;
  std::size_t chunk_count = 0;
  std::atomic<std::size_t> live{0};
};

namespace {

std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

}  // namespace

CyclicSystem::CyclicSystem(const Clock& clock, LoopOptions options)
    : clock_(clock), slots_(std::make_unique<SlotTable>()) {
  if (options.threads && !clock.is_monotonic()) {
    throw std::invalid_argument("timer loops with threads need the monotonic clock; step loops on any other by hand");
  }
  const std::vector<int> cpus = allowed_cpus();
  const std::size_t count = options.loops != 0 ? options.loops : cpus.size();
  int max_cpu = 0;
  for (int cpu : cpus) max_cpu = cpu > max_cpu ? cpu : max_cpu;
  cpu_to_loop_.assign(static_cast<std::size_t>(max_cpu) + 1, -1);

  loops_.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const int cpu = cpus[i % cpus.size()];
    if (cpu_to_loop_[static_cast<std::size_t>(cpu)] < 0) {
      cpu_to_loop_[static_cast<std::size_t>(cpu)] = static_cast<int>(i);
    }
    std::string name = std::string(options.name_prefix) + std::to_string(i);
    if (name.size() > 15) name.resize(15);
    loops_.push_back(std::make_unique<EventLoop>(*this, options.threads ? cpu : -1, std::move(name)));
  }
  if (options.threads) {
    for (auto& loop : loops_) loop->start_thread(options.pin, options.thread_prologue);
  }
}

CyclicSystem::~CyclicSystem() {
  for (auto& loop : loops_) loop->stop();
  loops_.clear();
}

EventLoop& CyclicSystem::loop(std::size_t index) noexcept { return *loops_[index % loops_.size()]; }

EventLoop& CyclicSystem::loop_for_current_cpu() noexcept {
  const int cpu = ::sched_getcpu();
  if (cpu >= 0 && static_cast<std::size_t>(cpu) < cpu_to_loop_.size()) {
    const int index = cpu_to_loop_[static_cast<std::size_t>(cpu)];
    if (index >= 0) return *loops_[static_cast<std::size_t>(index)];
  }
  return *loops_[0];
}

// ------------------------------------------------------------------ slots

CyclicSlot* CyclicSystem::slot_for(CyclicId id) const noexcept {
  if (!id.valid()) return nullptr;
  const std::size_t index = id.index - 1;
  const std::size_t chunk = index >> SlotTable::kChunkBits;
  if (chunk >= SlotTable::kMaxChunks) return nullptr;
  CyclicSlot* base = slots_->chunks[chunk].load(std::memory_order_acquire);
  if (base == nullptr) return nullptr;
  return &base[index & (SlotTable::kChunkSize - 1)];
}

CyclicSlot* CyclicSystem::allocate_slot() {
  std::lock_guard lock(slots_->mu);
  if (slots_->free_list == nullptr) {
    const std::size_t chunk = slots_->chunk_count;
    if (chunk == SlotTable::kMaxChunks) return nullptr;
    auto slots = std::make_unique<CyclicSlot[]>(SlotTable::kChunkSize);
    // Thread the new chunk onto the free list, lowest index first.
    for (std::size_t i = SlotTable::kChunkSize; i-- > 0;) {
      slots[i].index = static_cast<std::uint32_t>((chunk << SlotTable::kChunkBits) + i);
      slots[i].next_free = slots_->free_list;
      slots_->free_list = &slots[i];
    }
    slots_->chunks[chunk].store(slots.get(), std::memory_order_release);
    slots_->owned[chunk] = std::move(slots);
    slots_->chunk_count = chunk + 1;
  }
  CyclicSlot* slot = slots_->free_list;
  slots_->free_list = slot->next_free;
  slot->next_free = nullptr;
  slots_->live.fetch_add(1, std::memory_order_relaxed);
  return slot;
}

void CyclicSystem::release_slot(CyclicSlot* slot) noexcept {
  slot->loop.store(nullptr, std::memory_order_release);
  slot->handler = nullptr;
  slot->arg = nullptr;
  slot->when = kNever;
  slot->heap_pos = kNotInHeap;
  slot->dispatch = Dispatch::idle;
  slot->doomed = false;
  slot->remover_waiting = false;
  std::lock_guard lock(slots_->mu);
  slots_->live.fetch_sub(1, std::memory_order_relaxed);
  // A slot whose generation has reached the top is retired, not reused: its
  // next removal would wrap the generation round to values handed out
  // before, and a handle that old would reach a cyclic it never knew. One
  // slot is lost per four billion removals of it.
  if (slot->generation.load(std::memory_order_relaxed) == std::numeric_limits<std::uint32_t>::max()) return;
  slot->next_free = slots_->free_list;
  slots_->free_list = slot;
}

std::size_t CyclicSystem::live_count() const noexcept {
  return slots_->live.load(std::memory_order_relaxed);
}

// Locks the loop that owns `slot`, whatever cyclic it holds now. Returns an
// unlocked lock when the slot is free. A move may change the owner between
// reading `loop` and locking it, hence the re-check.
std::unique_lock<std::mutex> CyclicSystem::lock_current_owner(CyclicSlot* slot, EventLoop*& owner) {
  for (;;) {
    EventLoop* loop = slot->loop.load(std::memory_order_acquire);
    if (loop == nullptr) return {};
    std::unique_lock lock(loop->mu_);
    if (slot->loop.load(std::memory_order_relaxed) != loop) continue;
    owner = loop;
    return lock;
  }
}

// Locks the loop that owns `slot` and checks that `id` is still current.
// Returns an unlocked lock when the handle is stale.
std::unique_lock<std::mutex> CyclicSystem::lock_owner(CyclicSlot* slot, CyclicId id, EventLoop*& owner) {
  EventLoop* loop = nullptr;
  auto lock = lock_current_owner(slot, loop);
  if (!lock || slot->generation.load(std::memory_order_relaxed) != id.generation) return {};
  owner = loop;
  return lock;
}

namespace {

bool handler_returned(const CyclicSlot& slot) { return !slot.doomed || slot.dispatch != Dispatch::running; }
bool dispatch_idle(const CyclicSlot& slot) { return slot.dispatch == Dispatch::idle; }

}  // namespace

// The wait of every remover and mover that meets a running (or due)
// handler; `lock` holds `loop`'s mutex on entry and on return. Returns false
// at once when the wait would never end:
//  * the caller is the loop's own thread: the handler it would wait for is
//    its own, or further up its stack;
//  * the caller is a handler of another loop, and the handler waited for is
//    itself (through a chain of such waits) waiting for the caller's loop:
//    two loops' handlers removing each other's cyclics. That handler cannot
//    return before this caller does, exactly as if it were its own.
bool CyclicSystem::wait_for_handler(std::unique_lock<std::mutex>& lock, EventLoop& loop, CyclicSlot* slot,
                                    std::uint32_t generation, RacePoint point,
                                    bool (*settled)(const CyclicSlot&)) noexcept {
  if (loop.on_loop_thread()) return false;
  EventLoop* const self = EventLoop::running_handler_of();
  if (self != nullptr) {
    std::lock_guard waits(waits_mu_);
    for (const EventLoop* waiter = &loop; waiter != nullptr; waiter = waiter->waiting_for_) {
      if (waiter == self) return false;
    }
    self->waiting_for_ = &loop;
  }
  // The race point without the lock: a hook that parks here (or a fault
  // injection sleep) must not stop the very handler being waited for.
  lock.unlock();
  race_point(point);
  lock.lock();
  // Meanwhile the cyclic may be gone and its slot reused on another loop,
  // whose lock then guards it: look at the slot's dispatch state only while
  // it is still this cyclic on this loop.
  loop.handler_done_.wait(lock, [&] {
    return slot->loop.load(std::memory_order_relaxed) != &loop ||
           slot->generation.load(std::memory_order_relaxed) != generation || settled(*slot);
  });
  if (self != nullptr) {
    std::lock_guard waits(waits_mu_);
    self->waiting_for_ = nullptr;
  }
  return true;
}

// ------------------------------------------------------------- operations

CyclicId CyclicSystem::add(CyclicHandler handler, void* arg, Nanos when, Nanos interval, EventLoop& loop) {
  if (handler == nullptr || interval <= 0 || (interval != kOneShot && when == kNever)) return {};
  if (&loop.system_ != this) return {};
  CyclicSlot* slot = allocate_slot();
  if (slot == nullptr) return {};
  std::lock_guard lock(loop.mu_);
  slot->handler = handler;
  slot->arg = arg;
  slot->interval = interval;
  slot->when = kNever;
  slot->dispatch = Dispatch::idle;
  slot->loop.store(&loop, std::memory_order_release);
  loop.heap_update(slot, when);
  loop.deadline_changed(when);
  return CyclicId{slot->index + 1, slot->generation.load(std::memory_order_relaxed)};
}

bool CyclicSystem::reprogram(CyclicId id, Nanos when) noexcept {
  CyclicSlot* slot = slot_for(id);
  if (slot == nullptr) return false;
  EventLoop* loop = nullptr;
  auto lock = lock_owner(slot, id, loop);
  if (!lock) return false;  // removed (perhaps while its handler runs): not an error to die of
  loop->heap_update(slot, when);
  loop->deadline_changed(when);
  return true;
}

bool CyclicSystem::remove(CyclicId id) noexcept {
  CyclicSlot* slot = slot_for(id);
  if (slot == nullptr) return false;
  EventLoop* loop = nullptr;
  auto lock = lock_current_owner(slot, loop);
  if (!lock) return false;  // free: nothing is left of that cyclic
  const std::uint32_t removed = id.generation + 1;  // the generation remove() leaves behind
  if (slot->generation.load(std::memory_order_relaxed) != id.generation) {
    // Stale. If it is this very cyclic that another remover is taking out
    // while its handler runs, this caller's promise -- the handler is not
    // running -- holds only once that handler returns, so wait too (a VM
    // reset and a forced stop may drain the same device at once).
    if (slot->generation.load(std::memory_order_relaxed) == removed && !handler_returned(*slot)) {
#if !defined(VMM_MUTANT_SECOND_REMOVER_NO_WAIT)  // mutation-testing hook (tools/mutants)
      wait_for_handler(lock, *loop, slot, removed, RacePoint::cyclic_remove_waiting, &handler_returned);
#endif
    }
    return false;
  }

  // From here on every handle is stale: a racing reprogram returns false.
#if !defined(VMM_MUTANT_NO_GENERATION_BUMP)  // mutation-testing hook (tools/mutants)
  slot->generation.fetch_add(1, std::memory_order_relaxed);
#endif
  loop->heap_update(slot, kNever);

  switch (slot->dispatch) {
    case Dispatch::idle:
      release_slot(slot);
      return true;
    case Dispatch::queued:
      slot->doomed = true;  // the dispatcher skips and frees it
      return true;
    case Dispatch::running:
      slot->doomed = true;
#if defined(VMM_MUTANT_REMOVE_NO_WAIT)
      return true;  // mutation-testing hook (tools/mutants): a remover that does not wait
#endif
      slot->remover_waiting = true;  // the slot stays ours while we wait
      if (!wait_for_handler(lock, *loop, slot, removed, RacePoint::cyclic_remove_waiting, &handler_returned)) {
        slot->remover_waiting = false;  // its own handler: freed when it returns
        return true;
      }
      release_slot(slot);
      return true;
  }
  return true;
}

bool CyclicSystem::move(CyclicId id, EventLoop& to) noexcept {
  if (&to.system_ != this) return false;
  CyclicSlot* slot = slot_for(id);
  if (slot == nullptr) return false;
  for (;;) {
    EventLoop* from = nullptr;
    {
      auto lock = lock_owner(slot, id, from);
      if (!lock) return false;
      if (from == &to) return true;
      if (slot->dispatch != Dispatch::idle) {
        if (!wait_for_handler(lock, *from, slot, id.generation, RacePoint::cyclic_move_waiting, &dispatch_idle)) {
          return false;  // would wait for itself
        }
        continue;  // re-validate from the top
      }
    }
    std::scoped_lock both(from->mu_, to.mu_);
    if (slot->loop.load(std::memory_order_relaxed) != from ||
        slot->generation.load(std::memory_order_relaxed) != id.generation ||
        slot->dispatch != Dispatch::idle) {
      continue;  // changed while no lock was held
    }
    const Nanos when = slot->when;
    from->heap_update(slot, kNever);
    slot->loop.store(&to, std::memory_order_release);
    to.heap_update(slot, when);
    to.deadline_changed(when);
    return true;
  }
}

bool CyclicSystem::move_here(CyclicId id) noexcept { return move(id, loop_for_current_cpu()); }

Nanos CyclicSystem::when(CyclicId id) const noexcept {
  CyclicSlot* slot = slot_for(id);
  if (slot == nullptr) return kNever;
  EventLoop* loop = nullptr;
  auto lock = lock_owner(slot, id, loop);
  return lock ? slot->when : kNever;
}

EventLoop* CyclicSystem::loop_of(CyclicId id) const noexcept {
  CyclicSlot* slot = slot_for(id);
  if (slot == nullptr) return nullptr;
  EventLoop* loop = nullptr;
  auto lock = lock_owner(slot, id, loop);
  return lock ? loop : nullptr;
}

}  // namespace vmm::timers
