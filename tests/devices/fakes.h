// Fakes for device unit tests: an interrupt line and an MSI sink that record
// what a device did to them, a serial output that captures bytes, and a log
// capture that counts what the devices logged. All are thread-safe, so
// concurrent tests can share them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include "devices/interrupts.h"
#include "devices/isa_irq.h"
#include "devices/pic.h"
#include "devices/serial.h"

namespace vmm::testing {

// Records every set_level() call. "Edges" are changes of the level, so a
// repeated set_level(true) is recorded in history() but is not an edge.
class FakeIrqLine final : public devices::IrqLine {
 public:
  void set_level(bool asserted) noexcept override {
    std::lock_guard lock(mu_);
    history_.push_back(asserted);
    if (asserted && !level_) ++rising_edges_;
    if (!asserted && level_) ++falling_edges_;
    level_ = asserted;
  }

  bool level() const {
    std::lock_guard lock(mu_);
    return level_;
  }
  std::uint64_t rising_edges() const {
    std::lock_guard lock(mu_);
    return rising_edges_;
  }
  std::uint64_t falling_edges() const {
    std::lock_guard lock(mu_);
    return falling_edges_;
  }
  // Every level passed to set_level, oldest first.
  std::vector<bool> history() const {
    std::lock_guard lock(mu_);
    return history_;
  }
  // Forgets history and counts; keeps the current level.
  void clear() {
    std::lock_guard lock(mu_);
    history_.clear();
    rising_edges_ = falling_edges_ = 0;
  }

 private:
  mutable std::mutex mu_;
  bool level_ = false;
  std::uint64_t rising_edges_ = 0;
  std::uint64_t falling_edges_ = 0;
  std::vector<bool> history_;
};

class FakeMsiSink final : public devices::MsiSink {
 public:
  void send_msi(const devices::MsiMessage& message) noexcept override {
    std::lock_guard lock(mu_);
    messages_.push_back(message);
  }

  std::vector<devices::MsiMessage> messages() const {
    std::lock_guard lock(mu_);
    return messages_;
  }
  std::size_t count() const {
    std::lock_guard lock(mu_);
    return messages_.size();
  }
  std::optional<devices::MsiMessage> last() const {
    std::lock_guard lock(mu_);
    if (messages_.empty()) return std::nullopt;
    return messages_.back();
  }
  // The vector (data bits 7:0) of each message, oldest first.
  std::vector<std::uint8_t> vectors() const {
    std::lock_guard lock(mu_);
    std::vector<std::uint8_t> out;
    for (const auto& m : messages_) out.push_back(static_cast<std::uint8_t>(m.data & 0xff));
    return out;
  }
  void clear() {
    std::lock_guard lock(mu_);
    messages_.clear();
  }

 private:
  mutable std::mutex mu_;
  std::vector<devices::MsiMessage> messages_;
};

class CaptureOutput final : public devices::SerialOutput {
 public:
  void write(std::span<const std::uint8_t> bytes) noexcept override {
    std::lock_guard lock(mu_);
    bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
    ++calls_;
  }

  std::string text() const {
    std::lock_guard lock(mu_);
    return std::string(bytes_.begin(), bytes_.end());
  }
  std::vector<std::uint8_t> bytes() const {
    std::lock_guard lock(mu_);
    return bytes_;
  }
  std::size_t calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  void clear() {
    std::lock_guard lock(mu_);
    bytes_.clear();
    calls_ = 0;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::uint8_t> bytes_;
  std::size_t calls_ = 0;
};

// While alive, every spdlog line that goes through the default logger, at
// any level down to trace, is counted (and the first kKept are kept) instead
// of printed. Restores the previous default logger when destroyed.
class LogCapture {
 public:
  static constexpr std::size_t kKept = 256;

  LogCapture() : sink_(std::make_shared<Sink>()), previous_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("capture", sink_);
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(std::move(logger));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::size_t lines() const { return sink_->lines(); }
  std::vector<std::string> messages() const { return sink_->messages(); }

 private:
  class Sink final : public spdlog::sinks::base_sink<std::mutex> {
   public:
    std::size_t lines() {
      std::lock_guard lock(this->mutex_);
      return lines_;
    }
    std::vector<std::string> messages() {
      std::lock_guard lock(this->mutex_);
      return messages_;
    }

   protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
      ++lines_;
      if (messages_.size() < kKept) messages_.emplace_back(msg.payload.data(), msg.payload.size());
    }
    void flush_() override {}

   private:
    std::size_t lines_ = 0;
    std::vector<std::string> messages_;
  };

  std::shared_ptr<Sink> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

// Stands in for the IOAPIC's 24 input lines, and records which were looked up.
struct FakeIoApicPins {
  std::array<FakeIrqLine, 24> pins;
  std::vector<unsigned> looked_up;
  devices::IsaIrqRouter::IoApicPins lookup() {
    return [this](unsigned pin) -> devices::IrqLine& {
      looked_up.push_back(pin);
      return pins.at(pin);
    };
  }
};

inline void write_port(devices::BusDevice& device, std::uint64_t offset, std::uint8_t value) {
  device.write(offset, std::span<const std::uint8_t>(&value, 1));
}

// Linux's init_8259A with every input unmasked.
inline void init_pic(devices::Pic& pic) {
  for (const std::uint8_t v : {0x11, 0x30, 0x04, 0x01}) write_port(pic.master(), v == 0x11 ? 0 : 1, v);
  for (const std::uint8_t v : {0x11, 0x38, 0x02, 0x01}) write_port(pic.slave(), v == 0x11 ? 0 : 1, v);
  write_port(pic.master(), 1, 0x00);
  write_port(pic.slave(), 1, 0x00);
}

}  // namespace vmm::testing
