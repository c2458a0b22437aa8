// An io_uring that can do only what its owner submits: the ring is created
// disabled, told which submission opcodes it may ever run, and only then
// enabled (IORING_REGISTER_RESTRICTIONS). A thread confined by a syscall
// filter still has io_uring_enter; without this, any operation io_uring
// offers (open, connect, send...) would step around that filter. Once
// enabled, no further io_uring_register call is accepted either.
#pragma once

#include <liburing.h>

#include <initializer_list>

namespace vmm::timers {

// Initialises `ring` with `entries` slots. `eventfd` >= 0 is registered for
// completion notifications before the ring is sealed. Returns 0 or a
// negative errno (the ring is left uninitialised on failure).
int init_restricted_ring(io_uring& ring, unsigned entries, std::initializer_list<io_uring_op> allowed_ops,
                         int eventfd = -1) noexcept;

}  // namespace vmm::timers
