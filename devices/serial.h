// 16550A UART (the PC's COM ports: 0x3F8/IRQ 4, 0x2F8/IRQ 3; 8 ports wide).
//
// Transmission is instantaneous: a byte written to THR goes straight to the
// SerialOutput and THR/TSR are empty again before the write returns, so LSR
// always shows THRE|TEMT and the transmit FIFO never holds anything. There is
// no baud-rate clock, so the receiver's character-timeout condition is taken
// as already expired: data below the FIFO trigger level is reported as
// "character timeout" (IIR 0xC) at once instead of four character times
// later. Both are invisible to a driver that does what Linux's 8250 does.
//
// Interrupts (16550A priority order, highest first):
//   receiver line status (OE; ELSI)           cleared by reading LSR
//   received data at trigger level (ERBFI)    cleared when below the level
//   character timeout (ERBFI, FIFO mode)      cleared by reading RBR
//   THR empty (ETBEI)                         see below
//   modem status (EDSSI)                      cleared by reading MSR
// THR-empty is what Linux's 8250 driver leans on: it becomes pending when THR
// becomes empty with ETBEI set, and when ETBEI is set (0 -> 1) while THR is
// empty; it stops being pending when IIR is read while it is the reported
// source, when THR is written, or when ETBEI is cleared.
//
// PC wiring: the IRQ pin is driven only while MCR.OUT2 is set (boards gate
// the UART's INTR output with OUT2), and loopback forces the OUT pins
// inactive, so no IRQ reaches the interrupt controller in loopback mode
// (interrupt identification in IIR still works there).
//
// Locking: one mutex per UART. The IrqLine is driven with that mutex held,
// so the line sees level changes in exactly the order the register state
// changed. That is safe because an IrqLine (an IOAPIC pin, a test fake) never
// calls back into a device: the lock order is always device -> interrupt
// controller. SerialOutput::write is also called with the mutex held, which
// keeps the output in program order; FdOutput bounds how long that can take.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "devices/bus.h"
#include "devices/interrupts.h"
#include "timers/unique_fd.h"

namespace vmm::devices {

// Where transmitted bytes go.
class SerialOutput {
 public:
  virtual ~SerialOutput() = default;
  // Called on a vCPU thread with the UART's lock held: must return promptly
  // (never wait indefinitely for a reader) and must not call into the UART.
  virtual void write(std::span<const std::uint8_t> bytes) noexcept = 0;
};

// Discards everything (a UART that exists only so the guest finds it).
class NullOutput final : public SerialOutput {
 public:
  void write(std::span<const std::uint8_t>) noexcept override {}
};

// Writes to a file descriptor: stdout, a file, a pipe or a terminal.
//
// A vCPU must never be held hostage by a reader that stopped reading. Before
// each write the fd is polled for room; bytes are written in chunks of at
// most PIPE_BUF, which a pipe that reported room accepts without blocking.
// If no room appears within `stall_limit`, the rest of the data is dropped
// and counted, and the sink is marked stuck: from then on it only writes
// what fits immediately (poll with a zero timeout) until a write succeeds
// again, so a dead reader costs a poll per byte, not a stall per byte.
// An fd already in O_NONBLOCK mode works the same (EAGAIN means "poll").
// SIGPIPE must be ignored by the process (a closed pipe then reads as EPIPE,
// which drops the data like any other write error).
class FdOutput final : public SerialOutput {
 public:
  static constexpr std::chrono::milliseconds kDefaultStallLimit{100};
  static constexpr std::uint64_t kDefaultFileLimit = 64ull << 20;

  // Writes to `fd` without owning it (the process's stdout).
  static std::unique_ptr<FdOutput> borrow(int fd, std::chrono::milliseconds stall_limit = kDefaultStallLimit);
  // A log file for a guest's console, opened as a careful daemon would: the
  // last path component is never followed if it is a symbolic link; only a
  // regular file is used, with no other hard link and owned by this
  // process's user (never a FIFO, which could block, nor a device); it is
  // created, or truncated and made, mode 0600 whatever the umask (a console
  // shows what the guest prints, passwords included); and it never grows
  // past `max_bytes` (what comes after is dropped, counted and logged once).
  // Throws vmm::Error naming the file and the reason when it cannot.
  static std::unique_ptr<FdOutput> open_file(const std::string& path, std::uint64_t max_bytes = kDefaultFileLimit,
                                             std::chrono::milliseconds stall_limit = kDefaultStallLimit);

  FdOutput(const FdOutput&) = delete;
  FdOutput& operator=(const FdOutput&) = delete;

  void write(std::span<const std::uint8_t> bytes) noexcept override;

  std::uint64_t bytes_written() const noexcept { return written_.load(std::memory_order_relaxed); }
  std::uint64_t bytes_dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  bool stuck() const noexcept;

 private:
  FdOutput(int fd, timers::UniqueFd owned, std::chrono::milliseconds stall_limit, std::uint64_t max_bytes) noexcept;

  const int fd_;
  const timers::UniqueFd owned_;  // invalid when borrowed
  const std::chrono::milliseconds stall_limit_;
  const std::uint64_t max_bytes_;
  mutable std::mutex mu_;  // one writer at a time keeps chunks whole
  bool stuck_ = false;
  bool full_ = false;  // reached max_bytes_ (said once)
  std::atomic<std::uint64_t> written_{0};
  std::atomic<std::uint64_t> dropped_{0};
};

class Serial final : public BusDevice {
 public:
  static constexpr std::uint64_t kCom1Base = 0x3F8;
  static constexpr unsigned kCom1Irq = 4;
  static constexpr std::uint64_t kSize = 8;  // ports the UART decodes
  static constexpr std::size_t kFifoSize = 16;

  // Register offsets (DLAB selects DLL/DLM at offsets 0 and 1).
  static constexpr std::uint64_t kRbrThr = 0, kIer = 1, kIirFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5,
                                 kMsr = 6, kScr = 7;
  static constexpr std::uint64_t kDll = 0, kDlm = 1;

  // Bits guests and tests talk about.
  static constexpr std::uint8_t kIerRxData = 0x01, kIerThre = 0x02, kIerLineStatus = 0x04,
                                kIerModemStatus = 0x08;
  static constexpr std::uint8_t kIirNoInterrupt = 0x01, kIirModemStatus = 0x00, kIirThre = 0x02,
                                kIirRxData = 0x04, kIirLineStatus = 0x06, kIirCharTimeout = 0x0C,
                                kIirFifoEnabled = 0xC0;
  static constexpr std::uint8_t kFcrEnable = 0x01, kFcrClearRx = 0x02, kFcrClearTx = 0x04;
  static constexpr std::uint8_t kLcrDlab = 0x80;
  static constexpr std::uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08,
                                kMcrLoop = 0x10;
  static constexpr std::uint8_t kLsrDataReady = 0x01, kLsrOverrun = 0x02, kLsrThre = 0x20,
                                kLsrTemt = 0x40;
  static constexpr std::uint8_t kMsrDcts = 0x01, kMsrDdsr = 0x02, kMsrTeri = 0x04, kMsrDdcd = 0x08,
                                kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;

  // `irq` and `output` are not owned and must outlive the UART.
  Serial(IrqLine& irq, SerialOutput& output) noexcept;

  Serial(const Serial&) = delete;
  Serial& operator=(const Serial&) = delete;

  // Accesses wider than a byte are split into consecutive byte accesses, as
  // the ISA bus does for an 8-bit device.
  void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

  // Bytes from the host (the VMM's stdin reader). Bytes that find the
  // receiver full overrun it (LSR.OE): in FIFO mode the new byte is lost,
  // in 16450 mode it replaces the unread one, as on the chip. Returns how
  // many bytes were lost that way, so a reader that wants no loss can feed
  // at most rx_room() bytes.
  std::size_t receive(std::span<const std::uint8_t> bytes) noexcept;
  std::size_t rx_room() const noexcept;

  // Power-on state (VM reset). Drives the IRQ line low.
  void reset() noexcept;

 private:
  std::uint8_t read_register(std::uint64_t offset) noexcept;
  void write_register(std::uint64_t offset, std::uint8_t value) noexcept;
  void push_rx(std::uint8_t byte) noexcept;
  void set_mcr(std::uint8_t value) noexcept;
  std::uint8_t pending_interrupt() const noexcept;  // IIR low nibble
  void update_irq() noexcept;
  void reset_locked() noexcept;
  std::size_t rx_capacity() const noexcept;
  std::size_t rx_trigger_level() const noexcept;
  std::uint8_t modem_inputs() const noexcept;

  IrqLine& irq_;
  SerialOutput& output_;
  mutable std::mutex mu_;

  // Register state, guarded by mu_.
  std::uint8_t rx_fifo_[kFifoSize] = {};
  std::size_t rx_head_ = 0;
  std::size_t rx_count_ = 0;
  std::uint8_t ier_ = 0;
  std::uint8_t fcr_ = 0;  // enable bit and trigger level; reset bits are self-clearing
  std::uint8_t lcr_ = 0;
  std::uint8_t mcr_ = 0;
  std::uint8_t lsr_errors_ = 0;  // OE; the data/THR bits are derived
  std::uint8_t msr_deltas_ = 0;  // low nibble of MSR
  std::uint8_t msr_inputs_ = 0;  // high nibble of MSR when not in loopback
  std::uint8_t scr_ = 0;
  std::uint16_t divisor_ = 0;
  bool thre_pending_ = false;
  bool irq_level_ = false;
};

}  // namespace vmm::devices
