#include "vmm/syscall_filter.h"

#include <linux/kvm.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

#include "devices/error.h"
#include "vmm/cli.h"

namespace vmm {

const char* to_string(ThreadKind kind) noexcept {
  switch (kind) {
    case ThreadKind::main: return "main";
    case ThreadKind::vcpu: return "vcpu";
    case ThreadKind::timer_loop: return "timer-loop";
    case ThreadKind::control: return "control";
    case ThreadKind::console: return "console";
    case ThreadKind::signals: return "signals";
    case ThreadKind::disk_io: return "disk-io";
  }
  return "unknown";
}

namespace syscall_filter {
namespace {

constexpr std::array kKinds = {ThreadKind::main,    ThreadKind::vcpu,    ThreadKind::timer_loop, ThreadKind::control,
                               ThreadKind::console, ThreadKind::signals, ThreadKind::disk_io};

// Pseudo-names for ioctl allowed only with some request numbers.
constexpr const char* kIoctlKvm = "ioctl(KVM)";
constexpr const char* kIoctlTty = "ioctl(terminal)";
// prctl allowed only for naming a thread and for what loading a filter takes.
constexpr const char* kPrctlSafe = "prctl(name, no_new_privs)";

// What every thread's C and C++ run-time needs once it is running: locks,
// memory, logging to stderr, clocks without a vDSO, closing what it owns,
// and the ways a thread or the process ends: abort() and the fatal-signal
// handlers pass a signal on with rt_sigaction (that cannot switch a filter
// off: a SIGSYS that is ignored or blocked still kills), and the console's
// handler restores the terminal on whichever thread crashed.
#define VMM_COMMON_CALLS                                                                                           \
  "futex", "mmap", "munmap", "mprotect", "madvise", "mremap", "brk", "write", "writev", "clock_gettime",           \
      "clock_nanosleep", "nanosleep", "gettimeofday", "getpid", "gettid", "tgkill", "rt_sigprocmask",              \
      "rt_sigreturn", "sched_yield", "exit", "exit_group", "restart_syscall", "close", "getrandom", "newfstatat", \
      "fstat", "getcpu", "membarrier", "rt_sigaction", kIoctlTty, "getuid", "geteuid", "getgid", "getegid"

// The sanitizers' run-times make their own calls (stack maps, reports,
// their threads' set-up, and LeakSanitizer's check at exit, which stops
// every thread with ptrace from a thread of its own); sanitizer builds add
// them to every list.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define VMM_SANITIZER_CALLS                                                                                      \
  , "sigaltstack", "readlink", "readlinkat", "open", "openat", "read", "pread64", "lseek",         \
      "getrlimit", "prlimit64", "sched_getaffinity", "uname", "getdents", "getdents64", "pipe2", "poll", "ppoll",            \
      "set_robust_list", "rseq", "clone", "clone3", "prctl", "dup", "dup2", "getppid", "access", "mincore", \
      "sched_setaffinity", "rt_sigtimedwait", "rt_sigpending", "kill", "ptrace", "wait4", "waitid"
#else
#define VMM_SANITIZER_CALLS
#endif

// The VM's lifecycle: vCPU threads (created here, so everything they do
// before confining themselves too), reset (KVM state, guest memory, device
// timers, disks), tear-down, the control socket's removal, the terminal's
// restoration, and the filters the new vCPU threads load.
constexpr const char* kMainCalls[] = {VMM_COMMON_CALLS, kIoctlKvm, kPrctlSafe, "clone", "clone3",
                                      "set_robust_list", "rseq", "sigaltstack", "sched_setaffinity",
                                      "sched_getaffinity", "read", "poll", "ppoll", "io_uring_enter",
                                      "timerfd_settime", "eventfd2", "lstat", "unlink", "unlinkat",
                                      "rt_sigtimedwait", "seccomp" VMM_SANITIZER_CALLS};

// KVM_RUN and every exit's device access: KVM ioctls, callouts armed on
// timerfds, virtqueue notifications through io_uring, serial output
// (poll-bounded writes), the kick signal drained.
constexpr const char* kVcpuCalls[] = {VMM_COMMON_CALLS,   kIoctlKvm,        "rt_sigtimedwait", "read", "poll",
                                      "io_uring_enter", "timerfd_settime" VMM_SANITIZER_CALLS};

// Waiting on io_uring, re-arming the timerfd, and running device handlers
// (interrupts through KVM, kicks to vCPU threads, serial output).
constexpr const char* kTimerLoopCalls[] = {VMM_COMMON_CALLS, kIoctlKvm,         "io_uring_enter",
                                           "read",           "timerfd_settime", "poll" VMM_SANITIZER_CALLS};

// Accepting, reading and answering clients; requests are handed to the VM.
constexpr const char* kControlCalls[] = {VMM_COMMON_CALLS, "accept4", "recvfrom", "sendto", "read", "poll",
                                         "ppoll",          "getsockopt" VMM_SANITIZER_CALLS};

// Host keystrokes into COM1, whose interrupt goes through KVM.
constexpr const char* kConsoleCalls[] = {VMM_COMMON_CALLS, kIoctlKvm, "read", "poll", "ppoll" VMM_SANITIZER_CALLS};

// SIGTERM/SIGINT/SIGHUP through a signalfd, handed to the VM.
constexpr const char* kSignalsCalls[] = {VMM_COMMON_CALLS, "read", "poll", "ppoll" VMM_SANITIZER_CALLS};

// Queue notifications in, io_uring completions out, interrupts through KVM.
constexpr const char* kDiskIoCalls[] = {VMM_COMMON_CALLS, kIoctlKvm,      "read", "poll",
                                        "ppoll",          "io_uring_enter" VMM_SANITIZER_CALLS};

#undef VMM_COMMON_CALLS
#undef VMM_SANITIZER_CALLS

std::span<const char* const> calls_of(ThreadKind kind) noexcept {
  switch (kind) {
    case ThreadKind::main: return kMainCalls;
    case ThreadKind::vcpu: return kVcpuCalls;
    case ThreadKind::timer_loop: return kTimerLoopCalls;
    case ThreadKind::control: return kControlCalls;
    case ThreadKind::console: return kConsoleCalls;
    case ThreadKind::signals: return kSignalsCalls;
    case ThreadKind::disk_io: return kDiskIoCalls;
  }
  return {};
}

std::atomic<bool> g_enabled{false};
// -1: no probe; else the ThreadKind whose threads make one forbidden call.
int g_probe = -1;

// Names for the SIGSYS reporter (which may not allocate), from the kernel
// headers at build time (vmm/CMakeLists.txt).
struct SyscallName {
  long number;
  const char* name;
};
constexpr SyscallName kSyscallNames[] = {
#include "syscall_names.inc"
};

const char* syscall_name(long number) noexcept {
  for (const SyscallName& entry : kSyscallNames) {
    if (entry.number == number) return entry.name;
  }
  return "?";
}

// The kind whose list this thread loaded itself, if any.
thread_local std::optional<ThreadKind> t_kind;

// Async-signal-safe line building: no stdio, no allocation.
struct Line {
  char text[256];
  std::size_t size = 0;
  void add(const char* s) noexcept {
    while (*s != '\0' && size < sizeof text - 1) text[size++] = *s++;
  }
  void add(long value) noexcept {
    char digits[24];
    int n = 0;
    unsigned long v = value < 0 ? 0ul - static_cast<unsigned long>(value) : static_cast<unsigned long>(value);
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0 && n < 24);
    if (value < 0) add("-");
    while (n > 0 && size < sizeof text - 1) text[size++] = digits[--n];
  }
};

void report_forbidden_call(int, siginfo_t* info, void*) noexcept {
  const int nr = info->si_syscall;
  Line line;
  line.add("vmm: seccomp: the ");
  line.add(t_kind ? to_string(*t_kind) : "(unconfined)");
  line.add(" thread made the system call ");
  line.add(syscall_name(nr));
  line.add(" (");
  line.add(static_cast<long>(nr));
  line.add("), which its filter forbids; stopping the VMM (exit status ");
  line.add(static_cast<long>(kExitForbiddenSyscall));
  line.add(")\n");
  // Raw system calls: a sanitizer intercepts write() and _exit(), and its
  // exit-time work would make calls of its own from this thread.
  ::syscall(SYS_write, STDERR_FILENO, line.text, line.size);
  ::syscall(SYS_exit_group, kExitForbiddenSyscall);
}

void add_rule(scmp_filter_ctx ctx, ThreadKind kind, std::string_view call, int nr, unsigned count,
              const scmp_arg_cmp* args) {
  const int rc = ::seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, count, args);
  if (rc < 0) {
    throw Error("seccomp: cannot allow " + std::string(call) + " for the " + to_string(kind) +
                " thread: " + std::strerror(-rc));
  }
}

void add_call(scmp_filter_ctx ctx, ThreadKind kind, std::string_view call) {
  if (call == kIoctlKvm) {
    // Every KVM request number has type byte 0xAE (_IO(KVMIO, n)).
    const scmp_arg_cmp kvm{1, SCMP_CMP_MASKED_EQ, 0xff00, static_cast<scmp_datum_t>(KVMIO) << 8};
    add_rule(ctx, kind, call, SCMP_SYS(ioctl), 1, &kvm);
    return;
  }
  if (call == kIoctlTty) {
    for (const unsigned long request : {0ul + TCGETS, 0ul + TCSETS, 0ul + TCSETSW, 0ul + TCSETSF, 0ul + TIOCGWINSZ}) {
      const scmp_arg_cmp tty{1, SCMP_CMP_EQ, request, 0};
      add_rule(ctx, kind, call, SCMP_SYS(ioctl), 1, &tty);
    }
    return;
  }
  if (call == kPrctlSafe) {
    // Naming a thread; no_new_privs, which each filter load sets again.
    for (const int option : {PR_SET_NAME, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS}) {
      const scmp_arg_cmp arg{0, SCMP_CMP_EQ, static_cast<scmp_datum_t>(option), 0};
      add_rule(ctx, kind, call, SCMP_SYS(prctl), 1, &arg);
    }
    return;
  }
  const int nr = ::seccomp_syscall_resolve_name(std::string(call).c_str());
  if (nr == __NR_SCMP_ERROR || nr < 0) return;  // not a call on this architecture
  add_rule(ctx, kind, call, nr, 0, nullptr);
}

}  // namespace

void enable() {
  if (g_enabled.load()) return;
  if (const char* probe = std::getenv("VMM_SECCOMP_PROBE"); probe != nullptr && *probe != '\0') {
    for (const ThreadKind kind : kKinds) {
      if (std::string_view(probe) == to_string(kind)) g_probe = static_cast<int>(kind);
    }
    if (g_probe < 0) throw Error("VMM_SECCOMP_PROBE='" + std::string(probe) + "' names no thread kind");
  }
  // libseccomp probes the kernel's seccomp API once; doing it here keeps
  // those probes out of the filtered threads.
  if (::seccomp_api_get() < 2) throw Error("seccomp: this kernel lacks the seccomp filter API (libseccomp level < 2)");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    throw Error(std::string("seccomp: cannot set no_new_privs: ") + std::strerror(errno));
  }
  struct sigaction action{};
  action.sa_sigaction = report_forbidden_call;
  action.sa_flags = SA_SIGINFO;
  sigfillset(&action.sa_mask);
  if (::sigaction(SIGSYS, &action, nullptr) != 0) {
    throw Error(std::string("seccomp: cannot install the SIGSYS reporter: ") + std::strerror(errno));
  }
  g_enabled.store(true);
}

bool enabled() noexcept { return g_enabled.load(); }

bool this_thread_may_remove_files() noexcept { return !t_kind || *t_kind == ThreadKind::main; }

void confine(ThreadKind kind) {
  if (!g_enabled.load()) return;
  // What a call outside the list gets: SIGSYS, reported and fatal.
  scmp_filter_ctx ctx = ::seccomp_init(SCMP_ACT_TRAP);
  if (ctx == nullptr) throw Error("seccomp: cannot create a filter");
  try {
    for (const char* call : calls_of(kind)) add_call(ctx, kind, call);
    const int rc = ::seccomp_load(ctx);
    if (rc < 0) {
      throw Error(std::string("seccomp: cannot load the ") + to_string(kind) + " thread's filter: " +
                  std::strerror(-rc));
    }
  } catch (...) {
    ::seccomp_release(ctx);
    throw;
  }
  ::seccomp_release(ctx);
  t_kind = kind;
  if (g_probe == static_cast<int>(kind)) {
    // In no list (and harmless if it ran: no such fd): the filter must stop it.
    ::syscall(SYS_setns, -1, 0);
  }
}

void confine_or_exit(ThreadKind kind) noexcept {
  try {
    confine(kind);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm: %s\n", e.what());
    std::fflush(stderr);
    ::_exit(kExitSetup);
  }
}

}  // namespace syscall_filter
}  // namespace vmm
