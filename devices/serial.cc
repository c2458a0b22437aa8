#include "devices/serial.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <limits.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "devices/error.h"
#include "devices/rate_limit.h"

namespace vmm::devices {

namespace {

// The modem inputs of a console that is always "connected": carrier, data
// set ready and clear to send asserted, no ring.
constexpr std::uint8_t kConnectedModemInputs = Serial::kMsrDcd | Serial::kMsrDsr | Serial::kMsrCts;

// Power-on divisor is undefined on the chip; 12 (9600 baud from the PC's
// 1.8432 MHz clock) is what firmware usually leaves behind.
constexpr std::uint16_t kResetDivisor = 12;

constexpr std::uint8_t kIerWritable = 0x0F;   // bits 4-7 read as zero on a 16550A
constexpr std::uint8_t kMcrWritable = 0x1F;   // bits 5-7 read as zero on a 16550A
constexpr std::uint8_t kFcrStored = 0xC9;     // enable, DMA mode select, RX trigger

std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds limit) {
  return std::chrono::steady_clock::now() + limit;
}

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

}  // namespace

// ---- FdOutput ----------------------------------------------------------------

FdOutput::FdOutput(int fd, timers::UniqueFd owned, std::chrono::milliseconds stall_limit,
                   std::uint64_t max_bytes) noexcept
    : fd_(fd), owned_(std::move(owned)), stall_limit_(stall_limit), max_bytes_(max_bytes) {}

std::unique_ptr<FdOutput> FdOutput::borrow(int fd, std::chrono::milliseconds stall_limit) {
  if (fd < 0) throw Error("serial output: invalid file descriptor " + std::to_string(fd));
  return std::unique_ptr<FdOutput>(new FdOutput(fd, timers::UniqueFd(), stall_limit, UINT64_MAX));
}

std::unique_ptr<FdOutput> FdOutput::open_file(const std::string& path, std::uint64_t max_bytes,
                                              std::chrono::milliseconds stall_limit) {
  const auto refuse = [&](const std::string& why) { return Error("serial output file " + path + ": " + why); };
  // O_NOFOLLOW: a link planted at PATH must not redirect (and truncate) the
  // write elsewhere. O_NONBLOCK: a FIFO opens at once or fails (ENXIO), it
  // never waits for a reader. No O_TRUNC: nothing is cut before the checks.
  timers::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600));
  if (!fd) {
    const int err = errno;
    if (err == ELOOP) throw refuse("is a symbolic link; refusing to follow it (give the link's target instead)");
    if (err == ENXIO) throw refuse("is not a regular file (a FIFO or socket); use a file, or --serial stdio");
    if (err == EISDIR) throw refuse("is a directory");
    throw refuse(std::string("cannot open: ") + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw refuse(std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw refuse("is not a regular file; use a file, or --serial stdio or null");
  if (st.st_nlink != 1) {
    throw refuse("has " + std::to_string(st.st_nlink) + " hard links; refusing to write through another name");
  }
  if (st.st_uid != ::geteuid()) {
    throw refuse("belongs to uid " + std::to_string(st.st_uid) + ", not to this process's uid " +
                 std::to_string(::geteuid()));
  }
  if (::ftruncate(fd.get(), 0) != 0) throw refuse(std::string("cannot truncate: ") + std::strerror(errno));
  if ((st.st_mode & 07777) != 0600 && ::fchmod(fd.get(), 0600) != 0) {
    throw refuse(std::string("cannot make it private (mode 0600): ") + std::strerror(errno));
  }
  const int raw = fd.get();
  return std::unique_ptr<FdOutput>(new FdOutput(raw, std::move(fd), stall_limit, max_bytes));
}

bool FdOutput::stuck() const noexcept {
  std::lock_guard lock(mu_);
  return stuck_;
}

void FdOutput::write(std::span<const std::uint8_t> full_bytes) noexcept {
  std::lock_guard lock(mu_);
  // written_ only grows under mu_, so it is the file's size here.
  const std::uint64_t room = max_bytes_ - written_.load(std::memory_order_relaxed);
  const std::span<const std::uint8_t> bytes = full_bytes.first(std::min<std::uint64_t>(full_bytes.size(), room));
  if (bytes.size() < full_bytes.size()) {
    dropped_.fetch_add(full_bytes.size() - bytes.size(), std::memory_order_relaxed);
    if (!full_) {
      full_ = true;
      spdlog::warn("serial output reached its limit of {} bytes; the rest of the guest's output is dropped", max_bytes_);
    }
  }
  std::size_t done = 0;
  // A stuck sink gets no grace period: only what fits right now is written.
  const auto deadline = deadline_after(stuck_ ? std::chrono::milliseconds(0) : stall_limit_);
  while (done < bytes.size()) {
    pollfd pfd{fd_, POLLOUT, 0};
    const int ready = ::poll(&pfd, 1, remaining_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0 || (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) break;
    const std::size_t chunk = std::min<std::size_t>(bytes.size() - done, PIPE_BUF);
    const ssize_t n = ::write(fd_, bytes.data() + done, chunk);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      stuck_ = false;
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (remaining_ms(deadline) == 0 && errno != EINTR) break;
      continue;
    }
    break;  // EPIPE, ENOSPC, EBADF...: nothing more will go out now
  }
  written_.fetch_add(done, std::memory_order_relaxed);
  if (done < bytes.size()) {
    const std::size_t lost = bytes.size() - done;
    dropped_.fetch_add(lost, std::memory_order_relaxed);
    if (!stuck_) {
      static RateLimit limit;
      if (limit.allow()) {
        spdlog::warn("serial output fd {} is not accepting data; dropping output ({} bytes so far, {} messages suppressed)",
                     fd_, dropped_.load(std::memory_order_relaxed), limit.take_suppressed());
      }
    }
    stuck_ = true;
  }
}

// ---- Serial ------------------------------------------------------------------

Serial::Serial(IrqLine& irq, SerialOutput& output) noexcept : irq_(irq), output_(output) {
  std::lock_guard lock(mu_);
  reset_locked();
}

void Serial::reset() noexcept {
  std::lock_guard lock(mu_);
  reset_locked();
}

void Serial::reset_locked() noexcept {
  rx_head_ = 0;
  rx_count_ = 0;
  ier_ = 0;
  fcr_ = 0;
  lcr_ = 0;
  mcr_ = 0;
  lsr_errors_ = 0;
  msr_deltas_ = 0;
  msr_inputs_ = kConnectedModemInputs;
  scr_ = 0;
  divisor_ = kResetDivisor;
  thre_pending_ = false;
  update_irq();
}

std::size_t Serial::rx_capacity() const noexcept { return (fcr_ & kFcrEnable) ? kFifoSize : 1; }

std::size_t Serial::rx_trigger_level() const noexcept {
  if (!(fcr_ & kFcrEnable)) return 1;
  static constexpr std::size_t kLevels[4] = {1, 4, 8, 14};
  return kLevels[fcr_ >> 6];
}

std::uint8_t Serial::modem_inputs() const noexcept {
  if (!(mcr_ & kMcrLoop)) return msr_inputs_;
  // Loopback wires the outputs back to the inputs: DTR->DSR, RTS->CTS,
  // OUT1->RI, OUT2->DCD.
  std::uint8_t inputs = 0;
  if (mcr_ & kMcrDtr) inputs |= kMsrDsr;
  if (mcr_ & kMcrRts) inputs |= kMsrCts;
  if (mcr_ & kMcrOut1) inputs |= kMsrRi;
  if (mcr_ & kMcrOut2) inputs |= kMsrDcd;
  return inputs;
}

void Serial::set_mcr(std::uint8_t value) noexcept {
  const std::uint8_t before = modem_inputs();
  mcr_ = value & kMcrWritable;
  const std::uint8_t after = modem_inputs();
  const std::uint8_t changed = before ^ after;
  if (changed & kMsrCts) msr_deltas_ |= kMsrDcts;
  if (changed & kMsrDsr) msr_deltas_ |= kMsrDdsr;
  if (changed & kMsrDcd) msr_deltas_ |= kMsrDdcd;
  if ((before & kMsrRi) && !(after & kMsrRi)) msr_deltas_ |= kMsrTeri;  // trailing edge only
}

void Serial::push_rx(std::uint8_t byte) noexcept {
  if (rx_count_ < rx_capacity()) {
    rx_fifo_[(rx_head_ + rx_count_) % kFifoSize] = byte;
    ++rx_count_;
    return;
  }
  lsr_errors_ |= kLsrOverrun;
  // Without FIFOs the new character overwrites the unread one in RBR; with
  // them it is lost in the shift register and the FIFO is left alone.
  if (!(fcr_ & kFcrEnable)) rx_fifo_[rx_head_] = byte;
}

std::uint8_t Serial::pending_interrupt() const noexcept {
  if ((ier_ & kIerLineStatus) && lsr_errors_) return kIirLineStatus;
  if (ier_ & kIerRxData) {
    if (rx_count_ >= rx_trigger_level()) return kIirRxData;
    if (rx_count_ > 0) return kIirCharTimeout;  // only reachable in FIFO mode
  }
  if ((ier_ & kIerThre) && thre_pending_) return kIirThre;
  if ((ier_ & kIerModemStatus) && msr_deltas_) return kIirModemStatus;
  return kIirNoInterrupt;
}

void Serial::update_irq() noexcept {
  const bool wired = (mcr_ & kMcrOut2) && !(mcr_ & kMcrLoop);
  const bool level = wired && pending_interrupt() != kIirNoInterrupt;
  if (level != irq_level_) {
    irq_level_ = level;
    irq_.set_level(level);
  }
}

std::uint8_t Serial::read_register(std::uint64_t offset) noexcept {
  const bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case kRbrThr: {
      if (dlab) return static_cast<std::uint8_t>(divisor_);
      if (rx_count_ == 0) return 0;
      const std::uint8_t byte = rx_fifo_[rx_head_];
      rx_head_ = (rx_head_ + 1) % kFifoSize;
      --rx_count_;
      return byte;
    }
    case kIer:
      return dlab ? static_cast<std::uint8_t>(divisor_ >> 8) : ier_;
    case kIirFcr: {
      const std::uint8_t source = pending_interrupt();
      if (source == kIirThre) thre_pending_ = false;  // reading IIR acknowledges THRE only
      return static_cast<std::uint8_t>(source | ((fcr_ & kFcrEnable) ? kIirFifoEnabled : 0));
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr: {
      const std::uint8_t value =
          static_cast<std::uint8_t>((rx_count_ ? kLsrDataReady : 0) | lsr_errors_ | kLsrThre | kLsrTemt);
      lsr_errors_ = 0;
      return value;
    }
    case kMsr: {
      const std::uint8_t value = static_cast<std::uint8_t>(modem_inputs() | msr_deltas_);
      msr_deltas_ = 0;
      return value;
    }
    case kScr:
      return scr_;
    default:
      return 0xff;
  }
}

void Serial::write_register(std::uint64_t offset, std::uint8_t value) noexcept {
  const bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case kRbrThr:
      if (dlab) {
        divisor_ = static_cast<std::uint16_t>((divisor_ & 0xff00) | value);
        return;
      }
      if (mcr_ & kMcrLoop) {
        push_rx(value);  // the transmitter feeds the receiver; nothing leaves the chip
      } else {
        output_.write(std::span<const std::uint8_t>(&value, 1));
      }
      // THR was emptied at once, so the write that acknowledged THRE also
      // re-raises it.
      thre_pending_ = (ier_ & kIerThre) != 0;
      return;
    case kIer:
      if (dlab) {
        divisor_ = static_cast<std::uint16_t>((divisor_ & 0x00ff) | (value << 8));
        return;
      }
      value &= kIerWritable;
      if ((value & kIerThre) && !(ier_ & kIerThre)) thre_pending_ = true;  // THR is always empty
      if (!(value & kIerThre)) thre_pending_ = false;
      ier_ = value;
      return;
    case kIirFcr: {
      const bool enable = value & kFcrEnable;
      if (enable != static_cast<bool>(fcr_ & kFcrEnable)) {
        rx_head_ = rx_count_ = 0;  // switching modes empties both FIFOs
      }
      if (!enable) {
        fcr_ = 0;  // the other bits are only taken with FCR0 set
        return;
      }
      if (value & kFcrClearRx) rx_head_ = rx_count_ = 0;
      fcr_ = value & kFcrStored;
      return;
    }
    case kLcr:
      lcr_ = value;
      return;
    case kMcr:
      set_mcr(value);
      return;
    case kLsr:
      return;  // factory test register on the chip; writes have no defined effect
    case kMsr:
      return;
    case kScr:
      scr_ = value;
      return;
    default:
      return;
  }
}

void Serial::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  std::lock_guard lock(mu_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t reg = offset + i;
    data[i] = (reg >= offset && reg < kSize) ? read_register(reg) : std::uint8_t{0xff};
  }
  update_irq();
}

void Serial::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  std::lock_guard lock(mu_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t reg = offset + i;
    if (reg >= offset && reg < kSize) write_register(reg, data[i]);
  }
  update_irq();
}

std::size_t Serial::receive(std::span<const std::uint8_t> bytes) noexcept {
  std::lock_guard lock(mu_);
  // In loopback the serial input pin is disconnected from the receiver.
  if (mcr_ & kMcrLoop) return bytes.size();
  std::size_t lost = 0;
  for (const std::uint8_t byte : bytes) {
    if (rx_count_ >= rx_capacity()) ++lost;
    push_rx(byte);
  }
  update_irq();
  return lost;
}

std::size_t Serial::rx_room() const noexcept {
  std::lock_guard lock(mu_);
  if (mcr_ & kMcrLoop) return 0;
  return rx_capacity() - rx_count_;
}

}  // namespace vmm::devices
