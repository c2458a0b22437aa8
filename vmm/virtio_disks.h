// The VM's virtio-blk disks: one virtio-pci function per `--disk`, each over
// a BlockFile (io_uring), placed on PCI bus 0 from slot 1 on, and the thread
// that serves their queue notifications and I/O completions.
//
// The path of one guest request:
//   vCPU writes the queue's notify address -> KVM matches the ioeventfd and
//   signals it without leaving the kernel -> this object's thread wakes,
//   calls VirtioPciFunction::notify(queue) -> VirtioBlock takes the chains and
//   submits them to io_uring -> the ring's eventfd wakes the same thread ->
//   BlockFile::process_completions() -> the device writes the status byte,
//   pushes the used entry and signals the queue's MSI-X vector
//   (KVM_SIGNAL_MSI) or INTA# (IOAPIC pin, see vmm/boot/acpi.h).
// One thread serves every disk: a notify costs one wake-up, and completions
// arrive in batches, so a thread per disk would buy nothing on this scale.
//
// Notifications: an ioeventfd (KVM_IOEVENTFD, 2-byte writes) sits on each
// queue's notify address in BAR 0 and follows the BAR when the guest moves it
// (PciBarObserver). If KVM refuses one, the writes arrive as MMIO exits
// instead and the transport serves them on the vCPU thread: slower, same
// result.
//
// A queue the device finds at depth 1 (VirtioBlock's depth verdicts, with
// coalescing on) loses its ioeventfd until depth comes back: its
// notifications are MMIO exits, and the notifying vCPU thread takes the
// chains, submits them, and reaps whatever io_uring finished inline (a
// page-cache hit) before it enters the guest again, so the interrupt is
// pending at entry and the guest never halts to wait. At depth the
// ioeventfd and this thread overlap the I/O with the guest instead. Either
// way a notification is one exit; a write that races a move of the
// ioeventfd lands on one side or the other, and both serve it.
//
// Reset (guest reboot, VM end): reset() puts every function back to its
// power-on state and waits until no request is in flight at io_uring any
// more, so guest memory can be reloaded. A request in flight at a reset is
// never completed to the guest; everything completed before was on the file
// (and, for a flush, on stable storage) when the guest saw it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "devices/guest_memory.h"
#include "devices/interrupts.h"
#include "devices/pci/function.h"
#include "timers/unique_fd.h"
#include "vmm/block_file.h"
#include "vmm/disk_config.h"

namespace vmm {

class KvmVm;
class Platform;

namespace devices::virtio {
class VirtioBlock;
class VirtioPciFunction;
}  // namespace devices::virtio

// A disk image opened, checked and locked: what a front end gets before it
// opens /dev/kvm, so that a bad image is reported on any host.
struct OpenDisk {
  DiskConfig config;
  std::unique_ptr<BlockFile> file;
};

inline constexpr unsigned kFirstDiskSlot = 1;

// Opens every image in order. Throws vmm::Error naming the first bad one
// (missing, not permitted, too short, locked by another writer), or two
// entries naming the same file.
std::vector<OpenDisk> open_disks(const std::vector<DiskConfig>& disks);

class VirtioDisks final : private devices::pci::PciBarObserver {
 public:
  // Puts every disk on `platform`'s PCI bus and starts the I/O thread. A
  // disk whose config names no queue count gets one queue per vCPU (up to
  // VirtioBlock::kMaxQueues). The platform, VM, memory and sink must
  // outlive this object. Throws vmm::Error on a set-up failure.
  VirtioDisks(std::vector<OpenDisk> disks, Platform& platform, const KvmVm& vm, devices::GuestMemory& memory,
              devices::MsiSink& msi, unsigned vcpus);
  // Stops the thread, then waits for every request still at io_uring.
  ~VirtioDisks() override;
  VirtioDisks(const VirtioDisks&) = delete;
  VirtioDisks& operator=(const VirtioDisks&) = delete;

  // Every function at power-on; returns once nothing is in flight (or
  // after a generous timeout, logged). vCPUs must be stopped.
  void reset() noexcept;

  std::size_t size() const noexcept { return disks_.size(); }
  devices::virtio::VirtioPciFunction& function(std::size_t i) noexcept { return *disks_[i]->function; }

 private:
  struct Disk {
    std::string path;
    BlockFile* file = nullptr;  // owned by `block`
    std::unique_ptr<devices::virtio::VirtioBlock> block;
    std::unique_ptr<devices::virtio::VirtioPciFunction> function;
    std::vector<timers::UniqueFd> notify;                      // each queue's ioeventfd
    std::vector<std::optional<std::uint64_t>> notify_address;  // where KVM has each now
    // Guarded by the function's lock.
    std::vector<bool> shallow;  // per queue: the vCPU threads serve its notifications
    // Puts queue q's ioeventfd on KVM's bus at BAR 0, unless the BAR is not
    // decoded, the queue is shallow, or it is there already.
    void place_ioeventfd(const KvmVm& vm, std::size_t q) noexcept;
    void remove_ioeventfd(const KvmVm& vm, std::size_t q) noexcept;
    void remove_ioeventfds(const KvmVm& vm) noexcept;
  };

  void on_bar_changed(devices::pci::PciFunction& function, unsigned bar, std::optional<std::uint64_t> address,
                      std::uint64_t size) noexcept override;
  void serve() noexcept;
  void stop_thread() noexcept;
  // Makes serve() look again: at stopping_, or at a new coalescing deadline.
  void wake_serve() noexcept;

  const KvmVm& vm_;
  std::vector<std::unique_ptr<Disk>> disks_;
  timers::UniqueFd wake_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace vmm
