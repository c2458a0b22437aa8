// i8042 keyboard controller with a keyboard attached and an empty AUX
// (mouse) port: enough for Linux's i8042/atkbd/psmouse probing to finish
// quickly and quietly, and for the classic reboot (command 0xFE on port 0x64,
// or an output-port write with bit 0 clear).
//
// The controller decodes two ports that are not adjacent (0x60 data, 0x64
// status/command) and the port between them (0x61) belongs to the PIT/speaker
// logic, so it exposes two one-port BusDevices instead of one window:
//   bus.insert(I8042::kDataPort, 1, i8042.data_port(), "i8042 data");
//   bus.insert(I8042::kCommandPort, 1, i8042.command_port(), "i8042 command");
//
// Model: a one-byte output buffer (OBF) fed, whenever it is empty, from the
// controller's own replies first (including the bytes 0xD2/0xD3/0xD4
// produce), then from the keyboard's 16-byte queue while the keyboard
// interface is enabled (CTR bit 4 clear). IRQ1 is driven while the buffer
// holds keyboard or controller data and CTR bit 0 is set; IRQ12 while it
// holds AUX data and CTR bit 1 is set.
// When reading port 0x60 uncovers another byte, the line is dropped and
// raised again, because the ISA IRQs are edge-triggered at the interrupt
// controller and each byte needs its own edge (on the chip the line drops
// while the next byte is shifted in). The input buffer is consumed at once,
// so status IBF is never set.
//
// Nothing is attached to the AUX port: a byte sent to it (0xD4) is answered
// with 0xFE and the status timeout bit, which is how a controller reports a
// missing device and what makes psmouse give up at once. No key input is
// modelled, so scan-code translation (CTR bit 6) is stored but unused. The
// loop-back command 0xD3 and IRQ12 work, so Linux's AUX detection succeeds
// without its 250 ms IRQ-test timeout. Pass `i8042.noaux` to skip that probing.
//
// Locking: one mutex. The IRQ lines are driven with it held (so each line
// sees changes in state order; IrqLines never call back into devices). The
// reset callback is called after the mutex is released.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>

#include "devices/bus.h"
#include "devices/interrupts.h"

namespace vmm::devices {

class I8042 {
 public:
  static constexpr std::uint64_t kDataPort = 0x60;
  static constexpr std::uint64_t kCommandPort = 0x64;  // status on read
  static constexpr unsigned kKeyboardIrq = 1;
  static constexpr unsigned kAuxIrq = 12;

  // Status register bits.
  static constexpr std::uint8_t kStatusOutputFull = 0x01, kStatusInputFull = 0x02,
                                kStatusSystemFlag = 0x04, kStatusCommand = 0x08,
                                kStatusNotInhibited = 0x10, kStatusAuxData = 0x20,
                                kStatusTimeout = 0x40, kStatusParity = 0x80;
  // Controller command byte (CTR) bits.
  static constexpr std::uint8_t kCtrKeyboardInt = 0x01, kCtrAuxInt = 0x02, kCtrSystemFlag = 0x04,
                                kCtrKeyboardDisabled = 0x10, kCtrAuxDisabled = 0x20,
                                kCtrTranslate = 0x40;
  // Output port bits.
  static constexpr std::uint8_t kOutPortResetDeasserted = 0x01, kOutPortA20 = 0x02,
                                kOutPortKeyboardFull = 0x10, kOutPortAuxFull = 0x20;

  // Replies of the keyboard.
  static constexpr std::uint8_t kAck = 0xFA, kResend = 0xFE, kSelfTestPassed = 0xAA;

  // `keyboard_irq` and `aux_irq` are not owned and must outlive the
  // controller. `request_reset` is called (without any device lock held) when
  // the guest pulses the CPU reset line; it should only ask the VM to reset,
  // not reset it synchronously on the calling vCPU thread.
  I8042(IrqLine& keyboard_irq, IrqLine& aux_irq, std::function<void()> request_reset);

  I8042(const I8042&) = delete;
  I8042& operator=(const I8042&) = delete;

  BusDevice& data_port() noexcept { return data_port_; }
  BusDevice& command_port() noexcept { return command_port_; }

  // Power-on state (VM reset). Drives both IRQ lines low.
  void reset() noexcept;

  // How many times the guest asked for a CPU reset (tests, statistics).
  std::uint64_t reset_requests() const noexcept;

 private:
  struct Byte {
    std::uint8_t value;
    bool aux;
    bool timeout;
  };
  enum class Pending : std::uint8_t {
    none,
    write_ram,          // 0x60-0x7F: next data byte goes to RAM[pending_index_]
    write_output_port,  // 0xD1
    write_keyboard_ob,  // 0xD2
    write_aux_ob,       // 0xD3
    write_aux_device,   // 0xD4
  };
  enum class KeyboardPending : std::uint8_t { none, leds, typematic, scancode_set };

  class Port final : public BusDevice {
   public:
    Port(I8042& owner, bool command) noexcept : owner_(owner), command_(command) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept override;

   private:
    I8042& owner_;
    const bool command_;
  };

  std::uint8_t read_data() noexcept;
  std::uint8_t read_status() noexcept;
  // Both return true when the guest asked for a CPU reset.
  bool write_data(std::uint8_t value) noexcept;
  bool write_command(std::uint8_t value) noexcept;
  void keyboard_command(std::uint8_t value) noexcept;
  void reset_keyboard() noexcept;
  void reply(std::uint8_t value, bool aux = false, bool timeout = false) noexcept;
  void keyboard_reply(std::uint8_t value) noexcept;
  bool write_output_port(std::uint8_t value) noexcept;
  void refill() noexcept;
  void update_irqs(bool new_edge) noexcept;
  void reset_locked() noexcept;
  void fire_reset() noexcept;

  IrqLine& keyboard_irq_;
  IrqLine& aux_irq_;
  const std::function<void()> request_reset_;
  Port data_port_{*this, false};
  Port command_port_{*this, true};

  mutable std::mutex mu_;
  // Guarded by mu_.
  std::uint8_t ram_[32] = {};  // RAM[0] is the CTR
  std::uint8_t output_port_ = 0;
  bool last_write_was_command_ = false;
  Pending pending_ = Pending::none;
  std::uint8_t pending_index_ = 0;
  bool has_output_ = false;
  Byte output_{};
  std::deque<Byte> controller_queue_;
  std::deque<std::uint8_t> keyboard_queue_;
  KeyboardPending keyboard_pending_ = KeyboardPending::none;
  bool keyboard_scanning_ = true;
  std::uint8_t keyboard_set_ = 2;
  std::uint8_t keyboard_last_sent_ = 0;
  bool keyboard_irq_level_ = false;
  bool aux_irq_level_ = false;
  std::uint64_t reset_requests_ = 0;
};

}  // namespace vmm::devices
