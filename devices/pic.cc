#include "devices/pic.h"

#include <spdlog/spdlog.h>

#include "devices/rate_limit.h"

namespace vmm::devices {

namespace {

constexpr std::uint8_t kIcw1 = 0x10;
constexpr std::uint8_t kIcw1NeedIcw4 = 0x01;
constexpr std::uint8_t kIcw1Single = 0x02;
constexpr std::uint8_t kIcw1LevelTriggered = 0x08;
constexpr std::uint8_t kIcw4Mode8086 = 0x01;
constexpr std::uint8_t kIcw4AutoEoi = 0x02;
constexpr std::uint8_t kIcw4Buffered = 0x08;
constexpr std::uint8_t kIcw4SpecialFullyNested = 0x10;
constexpr std::uint8_t kOcw3 = 0x08;
constexpr std::uint8_t kOcw3Poll = 0x04;
constexpr std::uint8_t kOcw3ReadRegister = 0x02;
constexpr std::uint8_t kOcw3ReadIsr = 0x01;
constexpr std::uint8_t kOcw3SetSpecialMask = 0x40;
constexpr std::uint8_t kOcw3SpecialMask = 0x20;
constexpr std::uint8_t kPollInterrupt = 0x80;
constexpr std::uint8_t kSpuriousIr = 7;
constexpr std::uint8_t kCascadeBit = 1u << Pic::kCascadeIrq;

RateLimit g_unsupported_log;

void note_unsupported(const char* what) {
  if (g_unsupported_log.allow()) {
    spdlog::info("pic: {} ({} suppressed)", what, g_unsupported_log.take_suppressed());
  }
}

}  // namespace

Pic::Pic(IrqLine& int_output) noexcept : int_output_(int_output) {
  power_on(master_, true);
  power_on(slave_, false);
}

void Pic::power_on(Chip& chip, bool master) noexcept {
  const std::uint8_t levels = chip.levels;
  chip = Chip{};
  chip.is_master = master;
  chip.levels = levels;
  chip.elcr_mask = master ? kMasterElcrMask : kSlaveElcrMask;
  chip.vector_base = master ? kPowerOnMasterBase : kPowerOnSlaveBase;
}

// Priority rank of the best bit in `mask`: 0 is the highest, 8 means none.
unsigned Pic::priority_of(const Chip& chip, std::uint8_t mask) noexcept {
  for (unsigned rank = 0; rank < 8; ++rank) {
    if (mask & (1u << ((rank + chip.highest_priority) & 7))) return rank;
  }
  return 8;
}

// The IR this chip would deliver now, or -1.
int Pic::resolve(const Chip& chip) noexcept {
  const unsigned request = priority_of(chip, static_cast<std::uint8_t>(chip.irr & ~chip.imr));
  if (request == 8) return -1;
  std::uint8_t in_service = chip.isr;
  if (chip.special_mask) in_service &= static_cast<std::uint8_t>(~chip.imr);
  const unsigned current = priority_of(chip, in_service);
  const unsigned irq = (request + chip.highest_priority) & 7;
  if (request < current) return static_cast<int>(irq);
  // Special fully nested: the cascade level in service does not lock out a
  // new (higher-priority, the slave has checked) request from the same slave.
  if (chip.is_master && chip.special_fully_nested && !chip.single && irq == kCascadeIrq && request == current) {
    return static_cast<int>(irq);
  }
  return -1;
}

void Pic::intack(Chip& chip, unsigned irq) noexcept {
  const auto bit = static_cast<std::uint8_t>(1u << irq);
  if (chip.auto_eoi) {
    if (chip.rotate_on_auto_eoi) chip.highest_priority = static_cast<std::uint8_t>((irq + 1) & 7);
  } else {
    chip.isr |= bit;
  }
  const bool cascade = chip.is_master && irq == kCascadeIrq;
  if (cascade || (chip.elcr & bit) == 0) chip.irr &= static_cast<std::uint8_t>(~bit);
}

void Pic::update_locked() noexcept {
  // The slave's INT output is latched by the master's IR2 whenever it is up;
  // the latch is consumed by the acknowledge of IR2.
  if (!master_.single && resolve(slave_) >= 0) master_.irr |= kCascadeBit;
  const bool asserted = resolve(master_) >= 0;
  if (asserted != output_.load(std::memory_order_relaxed)) {
    output_.store(asserted, std::memory_order_release);
    int_output_.set_level(asserted);
  }
}

void Pic::set_irq(unsigned irq, bool level) noexcept {
  if (irq >= kIrqs || irq == kCascadeIrq) return;
  std::lock_guard lock(mu_);
  Chip& c = chip(irq >= 8);
  const auto bit = static_cast<std::uint8_t>(1u << (irq & 7));
  if (c.elcr & bit) {
    c.irr = level ? (c.irr | bit) : (c.irr & ~bit);
  } else if (level && !(c.levels & bit)) {
    c.irr |= bit;
  }
  c.levels = level ? (c.levels | bit) : (c.levels & ~bit);
  update_locked();
}

bool Pic::interrupt_pending() const noexcept { return output_.load(std::memory_order_acquire); }

std::uint8_t Pic::acknowledge() noexcept {
  std::lock_guard lock(mu_);
  std::uint8_t vector;
  const int irq = resolve(master_);
  if (irq < 0) {
    ++spurious_;
    vector = static_cast<std::uint8_t>(master_.vector_base | kSpuriousIr);
  } else if (irq == static_cast<int>(kCascadeIrq) && !master_.single) {
    const int slave_irq = resolve(slave_);
    if (slave_irq >= 0) {
      intack(slave_, static_cast<unsigned>(slave_irq));
      vector = static_cast<std::uint8_t>(slave_.vector_base | slave_irq);
    } else {
      ++spurious_;
      vector = static_cast<std::uint8_t>(slave_.vector_base | kSpuriousIr);
    }
    intack(master_, kCascadeIrq);
  } else {
    intack(master_, static_cast<unsigned>(irq));
    vector = static_cast<std::uint8_t>(master_.vector_base | irq);
  }
  update_locked();
  return vector;
}

std::uint8_t Pic::poll_locked(Chip& c) noexcept {
  const int irq = resolve(c);
  if (irq < 0) return 0;
  intack(c, static_cast<unsigned>(irq));
  update_locked();
  return static_cast<std::uint8_t>(kPollInterrupt | irq);
}

std::uint8_t Pic::read_locked(Chip& c, unsigned a0) noexcept {
  if (c.poll) {
    c.poll = false;
    return poll_locked(c);
  }
  if (a0 != 0) return c.imr;
  return c.read_isr ? c.isr : c.irr;
}

void Pic::write_ocw2_locked(Chip& c, std::uint8_t value) noexcept {
  const unsigned level = value & 7;
  const auto clear = [&](unsigned irq) { c.isr &= static_cast<std::uint8_t>(~(1u << irq)); };
  switch (value >> 5) {
    case 0:  // clear rotate in automatic EOI mode
      c.rotate_on_auto_eoi = false;
      break;
    case 4:  // set rotate in automatic EOI mode
      c.rotate_on_auto_eoi = true;
      break;
    case 1:    // non-specific EOI
    case 5: {  // rotate on non-specific EOI
      const unsigned rank = priority_of(c, c.isr);
      if (rank == 8) break;
      const unsigned irq = (rank + c.highest_priority) & 7;
      clear(irq);
      if ((value >> 5) == 5) c.highest_priority = static_cast<std::uint8_t>((irq + 1) & 7);
      break;
    }
    case 3:  // specific EOI
      clear(level);
      break;
    case 7:  // rotate on specific EOI
      clear(level);
      c.highest_priority = static_cast<std::uint8_t>((level + 1) & 7);
      break;
    case 6:  // set priority: `level` becomes the lowest
      c.highest_priority = static_cast<std::uint8_t>((level + 1) & 7);
      break;
    default:  // 2: no operation
      break;
  }
}

void Pic::write_locked(Chip& c, unsigned a0, std::uint8_t value) noexcept {
  if (a0 == 0) {
    if (value & kIcw1) {
      // Edge latches reset (a line already high needs a new rising edge);
      // level-triggered requests stay as the lines are.
      c.irr &= static_cast<std::uint8_t>(c.elcr & c.levels);
      c.imr = 0;
      c.isr = 0;
      c.highest_priority = 0;
      c.special_mask = false;
      c.read_isr = false;
      c.poll = false;
      c.auto_eoi = false;
      c.rotate_on_auto_eoi = false;
      c.special_fully_nested = false;
      c.buffered = false;
      c.icw4_expected = (value & kIcw1NeedIcw4) != 0;
      c.single = (value & kIcw1Single) != 0;
      c.expecting_icw = 2;
      if (value & kIcw1LevelTriggered) note_unsupported("ICW1 LTIM ignored; the ELCR selects edge or level");
    } else if (value & kOcw3) {
      if (value & kOcw3Poll) c.poll = true;
      if (value & kOcw3ReadRegister) c.read_isr = (value & kOcw3ReadIsr) != 0;
      if (value & kOcw3SetSpecialMask) c.special_mask = (value & kOcw3SpecialMask) != 0;
    } else {
      write_ocw2_locked(c, value);
    }
  } else {
    switch (c.expecting_icw) {
      case 2:
        c.vector_base = value & 0xF8;
        c.expecting_icw = c.single ? (c.icw4_expected ? 4 : 0) : 3;
        break;
      case 3:
        c.icw3 = value;
        c.expecting_icw = c.icw4_expected ? 4 : 0;
        break;
      case 4:
        if ((value & kIcw4Mode8086) == 0) note_unsupported("ICW4 selects 8080/85 mode; behaving as in 8086 mode");
        c.auto_eoi = (value & kIcw4AutoEoi) != 0;
        c.buffered = (value & kIcw4Buffered) != 0;
        c.special_fully_nested = (value & kIcw4SpecialFullyNested) != 0;
        c.expecting_icw = 0;
        break;
      default:
        c.imr = value;
        break;
    }
  }
  if (master_.single) master_.irr &= static_cast<std::uint8_t>(~kCascadeBit);
  update_locked();
}

void Pic::set_elcr_locked(Chip& c, std::uint8_t value) noexcept {
  const auto now_level = static_cast<std::uint8_t>(value & c.elcr_mask & ~c.elcr);
  c.elcr = value & c.elcr_mask;
  // A level-triggered request is the line itself.
  c.irr = static_cast<std::uint8_t>((c.irr & ~now_level) | (c.levels & now_level));
  update_locked();
}

void Pic::reset() noexcept {
  std::lock_guard lock(mu_);
  power_on(master_, true);
  power_on(slave_, false);
  update_locked();
}

Pic::ChipState Pic::chip_state(bool slave) const noexcept {
  std::lock_guard lock(mu_);
  const Chip& c = slave ? slave_ : master_;
  return ChipState{c.irr, c.isr, c.imr, c.elcr, c.vector_base, c.auto_eoi, c.special_mask, c.expecting_icw != 0};
}

std::uint64_t Pic::spurious_count() const noexcept {
  std::lock_guard lock(mu_);
  return spurious_;
}

// Wider accesses act as consecutive byte accesses (out dx, ax to 0x20 writes
// 0x20 then 0x21); bytes past the window read as 0xFF and are not written.
void Pic::ChipPort::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  std::lock_guard lock(owner_.mu_);
  Chip& c = owner_.chip(slave_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t port = offset + i;
    data[i] = (port >= offset && port < kChipSize) ? owner_.read_locked(c, static_cast<unsigned>(port)) : 0xff;
  }
}

void Pic::ChipPort::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  std::lock_guard lock(owner_.mu_);
  Chip& c = owner_.chip(slave_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t port = offset + i;
    if (port < offset || port >= kChipSize) break;
    owner_.write_locked(c, static_cast<unsigned>(port), data[i]);
  }
}

void Pic::ElcrPort::read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  std::lock_guard lock(owner_.mu_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t port = offset + i;
    data[i] = (port >= offset && port < kElcrSize) ? owner_.chip(port == 1).elcr : 0xff;
  }
}

void Pic::ElcrPort::write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  std::lock_guard lock(owner_.mu_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t port = offset + i;
    if (port < offset || port >= kElcrSize) break;
    owner_.set_elcr_locked(owner_.chip(port == 1), data[i]);
  }
}

}  // namespace vmm::devices
