#include "vmm/virtio_disks.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "devices/rate_limit.h"
#include "devices/virtio/block.h"
#include "devices/virtio/pci_transport.h"
#include "timers/clock.h"
#include "vmm/kvm.h"
#include "vmm/platform.h"
#include "vmm/syscall_filter.h"

namespace vmm {

namespace {

using devices::virtio::VirtioBlock;
using devices::virtio::VirtioPciFunction;

// Longer than any healthy request takes; a disk that stalls beyond it is
// logged, and the reset goes on (the requests are forgotten in any case).
constexpr std::chrono::seconds kIdleTimeout{30};
constexpr std::uint32_t kNotifyWidth = 2;  // the driver writes a 16-bit queue index

timers::UniqueFd make_eventfd(const char* what) {
  timers::UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) throw Error(std::string("virtio disks: cannot create an eventfd for ") + what + ": " + std::strerror(errno));
  return fd;
}

void drain_eventfd(int fd) noexcept {
  std::uint64_t counter = 0;
  [[maybe_unused]] const ssize_t n = ::read(fd, &counter, sizeof counter);  // EAGAIN: nothing new
}

// VirtioBlock's default clock, which its coalescing deadlines are on.
std::chrono::nanoseconds monotonic_now() noexcept {
  return std::chrono::nanoseconds(timers::MonotonicClock::instance().now());
}

std::string coalescing_description(const DiskConfig& config) {
  if (config.coalesce_us == 0) return "off";
  if (config.coalesce_follows_completions) return fmt::format("adaptive, up to {} us", config.coalesce_us);
  return fmt::format("{} us", config.coalesce_us);
}

}  // namespace

std::vector<OpenDisk> open_disks(const std::vector<DiskConfig>& disks) {
  if (disks.size() > kMaxDisks) {
    throw Error("at most " + std::to_string(kMaxDisks) + " disks are supported (" + std::to_string(disks.size()) +
                " given)");
  }
  std::vector<OpenDisk> open;
  std::vector<std::pair<dev_t, ino_t>> seen;
  for (const DiskConfig& config : disks) {
    BlockFile::Options options;
    options.read_only = config.read_only;
    OpenDisk disk{config, BlockFile::open(config.path, options)};
    // The lock is per open file description, so the same image twice in one
    // VM would not be refused by it; two writers in one guest corrupt just
    // the same.
    struct stat st {};
    if (::stat(config.path.c_str(), &st) == 0) {
      for (const auto& [dev, ino] : seen) {
        if (dev == st.st_dev && ino == st.st_ino) throw Error("disk image " + config.path + ": given twice");
      }
      seen.emplace_back(st.st_dev, st.st_ino);
    }
    static_assert(kMaxDiskSerial == VirtioBlock::kIdBytes);
    open.push_back(std::move(disk));
  }
  return open;
}

VirtioDisks::VirtioDisks(std::vector<OpenDisk> disks, Platform& platform, const KvmVm& vm,
                         devices::GuestMemory& memory, devices::MsiSink& msi, unsigned vcpus)
    : vm_(vm) {
  wake_ = make_eventfd("the I/O thread");
  unsigned slot = kFirstDiskSlot;
  for (OpenDisk& open : disks) {
    auto disk = std::make_unique<Disk>();
    disk->path = open.config.path;
    disk->file = open.file.get();
    VirtioBlock::Options options;
    options.serial = open.config.serial;
    static_assert(kMaxDiskQueues == VirtioBlock::kMaxQueues);
    // One per vCPU by default: Linux binds queue i's vector to vCPU i, so a
    // request completes where it was sent, without an IPI.
    options.queues = static_cast<std::uint16_t>(
        open.config.queues != 0 ? open.config.queues : std::clamp<unsigned>(vcpus, 1, kMaxDiskQueues));
    options.coalesce = std::chrono::microseconds(open.config.coalesce_us);
    options.coalesce_follows_completions = open.config.coalesce_follows_completions;
    options.on_hold = [this] { wake_serve(); };
    options.on_depth = [this, d = disk.get()](std::uint16_t q, bool at_depth) {
      d->shallow[q] = !at_depth;
      if (at_depth) {
        d->place_ioeventfd(vm_, q);
      } else {
        d->remove_ioeventfd(vm_, q);
      }
    };
    disk->shallow.assign(options.queues, false);
    disk->block = std::make_unique<VirtioBlock>(std::move(open.file), options);
    const Platform::PciIntx intx = platform.pci_intx(slot);
    disk->function = std::make_unique<VirtioPciFunction>(*disk->block, memory, msi, intx.line, intx.gsi);
    for (unsigned q = 0; q < options.queues; ++q) disk->notify.push_back(make_eventfd("a queue notification"));
    disk->notify_address.resize(options.queues);
    disk->function->set_bar_observer(this);
    // Notifications that arrive as MMIO exits, on the vCPU thread: after the
    // chains went to io_uring, what it finished inline is reaped here, so the
    // vCPU enters the guest with the interrupt already pending.
    disk->function->set_notify_handler([d = disk.get()](std::uint16_t q) {
      d->function->notify(q);
      d->file->process_completions();
    });
    platform.pci().add(slot, *disk->function);
    spdlog::info("virtio-blk: {} in PCI slot {} ({} sectors{}, {} queue{}, {} I/O, interrupt coalescing {})",
                 disk->path, slot, disk->block->capacity_sectors(), disk->file->read_only() ? ", read-only" : "",
                 options.queues, options.queues == 1 ? "" : "s", disk->file->direct_io() ? "direct" : "buffered",
                 coalescing_description(open.config));
    disks_.push_back(std::move(disk));
    ++slot;
  }
  thread_ = std::thread([this] { serve(); });
}

VirtioDisks::~VirtioDisks() {
  stop_thread();
  for (auto& disk : disks_) {
    std::lock_guard lock(disk->function->lock());
    disk->remove_ioeventfds(vm_);
  }
  // Each function goes before its device, each device before its file
  // (whose destructor waits for the requests still at io_uring).
  for (auto& disk : disks_) {
    disk->function.reset();
    disk->block.reset();
  }
}

void VirtioDisks::stop_thread() noexcept {
  if (!thread_.joinable()) return;
  stopping_.store(true);
  wake_serve();
  thread_.join();
}

void VirtioDisks::wake_serve() noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

void VirtioDisks::reset() noexcept {
  for (auto& disk : disks_) disk->function->reset();
  // The I/O thread keeps reaping completions meanwhile: that is what makes
  // the functions idle.
  for (auto& disk : disks_) {
    if (!disk->function->wait_idle(kIdleTimeout)) {
      spdlog::error("virtio-blk: {}: requests still in flight {} s after a reset", disk->path,
                    kIdleTimeout.count());
    }
  }
}

void VirtioDisks::Disk::place_ioeventfd(const KvmVm& vm, std::size_t q) noexcept {
  const std::optional<std::uint64_t> bar = function->bar_address();
  if (!bar || shallow[q] || notify_address[q]) return;
  const std::uint64_t at = *bar + VirtioPciFunction::notify_offset(static_cast<std::uint16_t>(q));
  const int r = vm.set_ioeventfd(notify[q].get(), at, kNotifyWidth, true);
  if (r == 0) {
    notify_address[q] = at;
    return;
  }
  static RateLimit limit;
  if (limit.allow()) {
    spdlog::warn("virtio-blk: {}: no ioeventfd at {:#x} ({}); notifications take MMIO exits", path, at,
                 std::strerror(-r));
  }
}

void VirtioDisks::Disk::remove_ioeventfd(const KvmVm& vm, std::size_t q) noexcept {
  if (notify_address[q]) vm.set_ioeventfd(notify[q].get(), *notify_address[q], kNotifyWidth, false);
  notify_address[q].reset();
}

void VirtioDisks::Disk::remove_ioeventfds(const KvmVm& vm) noexcept {
  for (std::size_t q = 0; q < notify.size(); ++q) remove_ioeventfd(vm, q);
}

void VirtioDisks::on_bar_changed(devices::pci::PciFunction& function, unsigned bar,
                                 std::optional<std::uint64_t>, std::uint64_t) noexcept {
  if (bar != 0) return;
  for (auto& disk : disks_) {
    if (disk->function.get() != &function) continue;
    // Called with the function's lock held, which is what serializes the
    // moves of one disk's ioeventfds.
    // The function's BAR 0 already reads as the new address.
    disk->remove_ioeventfds(vm_);
    for (std::size_t q = 0; q < disk->notify.size(); ++q) disk->place_ioeventfd(vm_, q);
    return;
  }
}

void VirtioDisks::serve() noexcept {
  pthread_setname_np(pthread_self(), "virtio-blk");
  syscall_filter::confine_or_exit(ThreadKind::disk_io);
  // [0] wake, then per disk: completions, then each queue's notify.
  struct Source {
    Disk* disk;
    int queue;  // -1: the disk's completions
  };
  std::vector<pollfd> fds;
  std::vector<Source> sources;
  fds.push_back({wake_.get(), POLLIN, 0});
  sources.push_back({nullptr, -1});
  for (auto& disk : disks_) {
    fds.push_back({disk->file->completion_fd(), POLLIN, 0});
    sources.push_back({disk.get(), -1});
    for (std::size_t q = 0; q < disk->notify.size(); ++q) {
      fds.push_back({disk->notify[q].get(), POLLIN, 0});
      sources.push_back({disk.get(), static_cast<int>(q)});
    }
  }
  // When the next interrupt held back by coalescing is due (kNone: none is).
  constexpr std::chrono::nanoseconds kNone = std::chrono::nanoseconds::max();
  std::chrono::nanoseconds next_release = kNone;
  while (!stopping_.load()) {
    timespec wait{};
    if (next_release != kNone) {
      const auto left = std::max(next_release - monotonic_now(), std::chrono::nanoseconds{0});
      wait.tv_sec = static_cast<time_t>(left.count() / 1'000'000'000);
      wait.tv_nsec = static_cast<long>(left.count() % 1'000'000'000);
    }
    const int ready = ::ppoll(fds.data(), fds.size(), next_release != kNone ? &wait : nullptr, nullptr);
    if (ready < 0) {
      if (errno == EINTR) continue;
      spdlog::error("virtio-blk: poll: {}; disks stop answering", std::strerror(errno));
      return;
    }
    if (fds[0].revents != 0) drain_eventfd(wake_.get());  // stopping, or a hold began
    // In order: each disk's completions come before its notifications, as
    // they free slots the new requests may need.
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      const Source& source = sources[i];
      if (source.queue < 0) {
        source.disk->file->process_completions();
      } else {
        drain_eventfd(fds[i].fd);
        source.disk->function->notify(static_cast<std::uint16_t>(source.queue));
      }
    }
    next_release = kNone;
    const std::chrono::nanoseconds now = monotonic_now();
    for (auto& disk : disks_) {
      if (const std::optional<std::chrono::nanoseconds> due = disk->block->release_due(now)) {
        next_release = std::min(next_release, *due);
      }
    }
  }
}

}  // namespace vmm
