#include "devices/i8042.h"

#include <utility>

#include <spdlog/spdlog.h>

#include "devices/rate_limit.h"

namespace vmm::devices {

namespace {

// What the controller looks like without firmware having touched it:
// keyboard interrupt on, system flag set (self-test passed), no translation.
constexpr std::uint8_t kResetCtr = I8042::kCtrKeyboardInt | I8042::kCtrSystemFlag;
constexpr std::uint8_t kResetOutputPort = I8042::kOutPortResetDeasserted | I8042::kOutPortA20;

// The keyboard's own buffer; the controller never holds more than a reply
// or two, the bound only stops a guest that never reads from growing it.
constexpr std::size_t kKeyboardQueueLimit = 16;
constexpr std::size_t kControllerQueueLimit = 16;

// Keyboard identification: MF2 keyboard.
constexpr std::uint8_t kKeyboardId[2] = {0xAB, 0x83};

}  // namespace

I8042::I8042(IrqLine& keyboard_irq, IrqLine& aux_irq, std::function<void()> request_reset)
    : keyboard_irq_(keyboard_irq), aux_irq_(aux_irq), request_reset_(std::move(request_reset)) {
  std::lock_guard lock(mu_);
  reset_locked();
}

void I8042::reset() noexcept {
  std::lock_guard lock(mu_);
  reset_locked();
}

std::uint64_t I8042::reset_requests() const noexcept {
  std::lock_guard lock(mu_);
  return reset_requests_;
}

void I8042::reset_locked() noexcept {
  for (std::uint8_t& byte : ram_) byte = 0;
  ram_[0] = kResetCtr;
  output_port_ = kResetOutputPort;
  last_write_was_command_ = false;
  pending_ = Pending::none;
  pending_index_ = 0;
  has_output_ = false;
  output_ = Byte{};
  controller_queue_.clear();
  keyboard_queue_.clear();
  reset_keyboard();
  keyboard_last_sent_ = 0;
  update_irqs(false);
}

void I8042::reset_keyboard() noexcept {
  keyboard_pending_ = KeyboardPending::none;
  keyboard_scanning_ = true;
  keyboard_set_ = 2;
}

void I8042::Port::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  if (data.empty()) return;
  for (std::uint8_t& byte : data) byte = 0xff;
  if (offset != 0) return;
  data[0] = command_ ? owner_.read_status() : owner_.read_data();
}

void I8042::Port::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  if (data.empty() || offset != 0) return;
  const bool reset = command_ ? owner_.write_command(data[0]) : owner_.write_data(data[0]);
  if (reset) owner_.fire_reset();
}

void I8042::fire_reset() noexcept {
  {
    std::lock_guard lock(mu_);
    ++reset_requests_;
  }
  if (request_reset_) request_reset_();
}

std::uint8_t I8042::read_status() noexcept {
  std::lock_guard lock(mu_);
  std::uint8_t status = kStatusNotInhibited;
  if (has_output_) {
    status |= kStatusOutputFull;
    if (output_.aux) status |= kStatusAuxData;
    if (output_.timeout) status |= kStatusTimeout;
  }
  if (ram_[0] & kCtrSystemFlag) status |= kStatusSystemFlag;
  if (last_write_was_command_) status |= kStatusCommand;
  return status;
}

std::uint8_t I8042::read_data() noexcept {
  std::lock_guard lock(mu_);
  // With nothing new the chip returns whatever the buffer last held.
  if (!has_output_) return output_.value;
  const std::uint8_t value = output_.value;
  has_output_ = false;
  refill();
  update_irqs(true);
  return value;
}

void I8042::reply(std::uint8_t value, bool aux, bool timeout) noexcept {
  if (controller_queue_.size() >= kControllerQueueLimit) return;
  controller_queue_.push_back(Byte{value, aux, timeout});
}

void I8042::keyboard_reply(std::uint8_t value) noexcept {
  keyboard_last_sent_ = value;
  if (keyboard_queue_.size() >= kKeyboardQueueLimit) return;
  keyboard_queue_.push_back(value);
}

void I8042::refill() noexcept {
  if (has_output_) return;
  if (!controller_queue_.empty()) {
    output_ = controller_queue_.front();
    controller_queue_.pop_front();
    has_output_ = true;
  } else if (!(ram_[0] & kCtrKeyboardDisabled) && !keyboard_queue_.empty()) {
    output_ = Byte{keyboard_queue_.front(), false, false};
    keyboard_queue_.pop_front();
    has_output_ = true;
  }
}

void I8042::update_irqs(bool new_edge) noexcept {
  const bool keyboard = has_output_ && !output_.aux && (ram_[0] & kCtrKeyboardInt);
  const bool aux = has_output_ && output_.aux && (ram_[0] & kCtrAuxInt);
  const auto drive = [new_edge](IrqLine& line, bool& current, bool level) {
    if (new_edge && current && level) {
      line.set_level(false);
      current = false;
    }
    if (level != current) {
      line.set_level(level);
      current = level;
    }
  };
  drive(keyboard_irq_, keyboard_irq_level_, keyboard);
  drive(aux_irq_, aux_irq_level_, aux);
}

bool I8042::write_output_port(std::uint8_t value) noexcept {
  // Bits 4 and 5 mirror the output buffer; they are not latched.
  output_port_ = value & static_cast<std::uint8_t>(~(kOutPortKeyboardFull | kOutPortAuxFull));
  return !(value & kOutPortResetDeasserted);
}

bool I8042::write_command(std::uint8_t value) noexcept {
  std::lock_guard lock(mu_);
  last_write_was_command_ = true;
  pending_ = Pending::none;  // a command abandons a parameter still expected
  bool reset = false;
  if (value >= 0x20 && value <= 0x3F) {
    reply(ram_[value & 0x1F]);
  } else if (value >= 0x60 && value <= 0x7F) {
    pending_ = Pending::write_ram;
    pending_index_ = value & 0x1F;
  } else if (value >= 0xF0) {
    // Pulse output-port bits 0-3 low for each clear bit of the command;
    // only bit 0 (CPU reset) has an effect here.
    reset = !(value & 0x01);
  } else {
    switch (value) {
      case 0xA4:  // password installed?
        reply(0xF1);  // no
        break;
      case 0xA7:
        ram_[0] |= kCtrAuxDisabled;
        break;
      case 0xA8:
        ram_[0] &= static_cast<std::uint8_t>(~kCtrAuxDisabled);
        break;
      case 0xA9:  // AUX interface test
      case 0xAB:  // keyboard interface test
        reply(0x00);
        break;
      case 0xAA:  // controller self-test
        ram_[0] |= kCtrSystemFlag;
        reply(0x55);
        break;
      case 0xAD:
        ram_[0] |= kCtrKeyboardDisabled;
        break;
      case 0xAE:
        ram_[0] &= static_cast<std::uint8_t>(~kCtrKeyboardDisabled);
        break;
      case 0xD0: {
        std::uint8_t port = output_port_;
        if (has_output_) port |= output_.aux ? kOutPortAuxFull : kOutPortKeyboardFull;
        reply(port);
        break;
      }
      case 0xD1:
        pending_ = Pending::write_output_port;
        break;
      case 0xD2:
        pending_ = Pending::write_keyboard_ob;
        break;
      case 0xD3:
        pending_ = Pending::write_aux_ob;
        break;
      case 0xD4:
        pending_ = Pending::write_aux_device;
        break;
      case 0xDD:
        output_port_ &= static_cast<std::uint8_t>(~kOutPortA20);
        break;
      case 0xDF:
        output_port_ |= kOutPortA20;
        break;
      case 0xE0:  // read test inputs: clock and data lines low
        reply(0x00);
        break;
      default: {
        static RateLimit limit;
        if (limit.allow()) {
          spdlog::debug("i8042: ignoring unknown controller command {:#04x} ({} suppressed)", value,
                        limit.take_suppressed());
        }
        break;
      }
    }
  }
  refill();
  update_irqs(false);
  return reset;
}

bool I8042::write_data(std::uint8_t value) noexcept {
  std::lock_guard lock(mu_);
  last_write_was_command_ = false;
  const Pending pending = std::exchange(pending_, Pending::none);
  bool reset = false;
  switch (pending) {
    case Pending::write_ram:
      ram_[pending_index_] = value;
      break;
    case Pending::write_output_port:
      reset = write_output_port(value);
      break;
    case Pending::write_keyboard_ob:
      reply(value);
      break;
    case Pending::write_aux_ob:
      reply(value, /*aux=*/true);
      break;
    case Pending::write_aux_device:
      reply(kResend, /*aux=*/true, /*timeout=*/true);  // nothing is plugged in
      break;
    case Pending::none:
      keyboard_command(value);
      break;
  }
  refill();
  update_irqs(false);
  return reset;
}

void I8042::keyboard_command(std::uint8_t value) noexcept {
  const KeyboardPending parameter_for = std::exchange(keyboard_pending_, KeyboardPending::none);
  switch (parameter_for) {
    case KeyboardPending::leds:
    case KeyboardPending::typematic:
      keyboard_reply(kAck);
      return;
    case KeyboardPending::scancode_set:
      if (value == 0) {
        keyboard_reply(kAck);
        keyboard_reply(keyboard_set_);
      } else if (value <= 3) {
        keyboard_set_ = value;
        keyboard_reply(kAck);
      } else {
        keyboard_reply(kResend);
      }
      return;
    case KeyboardPending::none:
      break;
  }
  switch (value) {
    case 0xED:  // set LEDs, parameter follows
      keyboard_reply(kAck);
      keyboard_pending_ = KeyboardPending::leds;
      break;
    case 0xEE:  // echo
      keyboard_reply(0xEE);
      break;
    case 0xF0:  // get/set scan-code set, parameter follows
      keyboard_reply(kAck);
      keyboard_pending_ = KeyboardPending::scancode_set;
      break;
    case 0xF2:  // identify
      keyboard_reply(kAck);
      keyboard_reply(kKeyboardId[0]);
      keyboard_reply(kKeyboardId[1]);
      break;
    case 0xF3:  // typematic rate, parameter follows
      keyboard_reply(kAck);
      keyboard_pending_ = KeyboardPending::typematic;
      break;
    case 0xF4:
      keyboard_scanning_ = true;
      keyboard_reply(kAck);
      break;
    case 0xF5:  // disable scanning and restore defaults
      reset_keyboard();
      keyboard_scanning_ = false;
      keyboard_reply(kAck);
      break;
    case 0xF6:  // restore defaults
      reset_keyboard();
      keyboard_reply(kAck);
      break;
    case 0xF7:
    case 0xF8:
    case 0xF9:
    case 0xFA:
    case 0xFB:
    case 0xFC:
    case 0xFD:  // scan-code set 3 key attributes: accepted and ignored
      keyboard_reply(kAck);
      break;
    case 0xFE:  // resend
      keyboard_reply(keyboard_last_sent_);
      break;
    case 0xFF:  // reset and self-test (BAT)
      reset_keyboard();
      keyboard_reply(kAck);
      keyboard_reply(kSelfTestPassed);
      break;
    default:
      keyboard_reply(kResend);
      break;
  }
}

}  // namespace vmm::devices
