// seccomp-bpf allow-lists, one per kind of thread `vmm run` has.
//
// A guest that finds a bug in a device model runs code in some VMM thread;
// what that code can then ask of the host kernel is what its thread's list
// allows. So each thread, once its own set-up is done and before it serves
// anything the guest or a client sends, confines itself to the calls its
// work needs: a vCPU thread to KVM ioctls and its wake-ups, a timer loop to
// io_uring and timerfds, the control server to its socket. ioctl is allowed
// only with KVM's request numbers (and the terminal's, where a thread
// restores the console). The main thread, which runs the VM's lifecycle
// (reset, tear-down, creating vCPU threads), confines itself last, right
// before the first guest instruction; vCPU threads it creates later run
// under its list and their own.
//
// A call outside a thread's list is not executed: the process ends at once
// with status kExitForbiddenSyscall, after one line on stderr naming the
// thread's kind and the call. Filters are off unless enable() was called
// (tests and tools that embed a Vm run unconfined); `vmm run --seccomp=off`
// leaves them off, for debugging only.
#pragma once

namespace vmm {

// The exit status of a process stopped by its syscall filter.
inline constexpr int kExitForbiddenSyscall = 12;

enum class ThreadKind { main, vcpu, timer_loop, control, console, signals, disk_io };
const char* to_string(ThreadKind kind) noexcept;

namespace syscall_filter {

// Once, early in main(), before any thread is created: sets no_new_privs,
// installs the SIGSYS reporter and turns confine() on. Throws vmm::Error.
// $VMM_SECCOMP_PROBE=KIND makes threads of that kind make one forbidden
// call right after confining themselves (the tests' proof that a filter is
// in force and fatal); unknown kinds are an error.
void enable();
bool enabled() noexcept;

// Installs this thread's allow-list when enabled; otherwise does nothing.
// Throws vmm::Error if the filter cannot be built or loaded.
void confine(ThreadKind kind);

// False on a thread whose own filter forbids unlink (every kind but main):
// for crash handlers, which must not trade the crash for a SIGSYS.
bool this_thread_may_remove_files() noexcept;

// For a thread that cannot throw to anyone: confine(), and on failure one
// line on stderr and the process ends with kExitSetup.
void confine_or_exit(ThreadKind kind) noexcept;

}  // namespace syscall_filter
}  // namespace vmm
