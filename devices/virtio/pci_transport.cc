#include "devices/virtio/pci_transport.h"

#include <array>
#include <string>

#include <spdlog/spdlog.h>

#include "devices/bus.h"
#include "devices/error.h"
#include "devices/rate_limit.h"

namespace vmm::devices::virtio {

namespace {

RateLimit g_register_log;
RateLimit g_notify_log;

constexpr std::uint8_t kCapVendor = 0x09;
constexpr std::size_t kCapSize = 16;
constexpr std::size_t kPciCfgDataOffset = 16;  // in the PCI-config-access capability

std::uint32_t class_for(std::uint16_t device_type) {
  return device_type == kDeviceBlock ? 0x018000 : 0xFF0000;  // mass storage / unclassified
}

template <std::size_t N>
std::array<std::uint8_t, N> virtio_cap(std::uint8_t type, std::uint32_t offset, std::uint32_t length) {
  std::array<std::uint8_t, N> cap{};
  cap[2] = static_cast<std::uint8_t>(N);  // cap_len
  cap[3] = type;
  cap[4] = 0;  // BAR 0
  for (unsigned i = 0; i < 4; ++i) {
    cap[8 + i] = static_cast<std::uint8_t>(offset >> (8 * i));
    cap[12 + i] = static_cast<std::uint8_t>(length >> (8 * i));
  }
  return cap;
}

template <typename... Args>
void log_guest(RateLimit& limit, fmt::format_string<Args..., std::uint64_t> format, Args&&... args) {
  if (limit.allow()) spdlog::warn(format, std::forward<Args>(args)..., limit.take_suppressed());
}

}  // namespace

VirtioPciFunction::VirtioPciFunction(VirtioDevice& device, GuestMemory& memory, MsiSink& msi, IrqLine* intx,
                                     std::uint8_t interrupt_line)
    : device_(device),
      memory_(memory),
      queue_count_(device.queue_count()),
      device_features_(device.device_features()),
      config_(pci::PciIdentity{kVendor, static_cast<std::uint16_t>(kDeviceBase + device.device_type()), 1,
                               class_for(device.device_type()), kVendor, kSubsystem,
                               static_cast<std::uint8_t>(intx != nullptr ? 1 : 0)}),
      msix_(static_cast<std::uint16_t>(device.queue_count() + 1), msi, 0, kMsixTableOffset, 0, kMsixPbaOffset) {
  if (queue_count_ == 0 || std::uint64_t{queue_count_} * kNotifyMultiplier > kRegionSize ||
      msix_.table_bytes() > kRegionSize) {
    throw Error("virtio-pci: " + std::to_string(queue_count_) + " queues do not fit the BAR layout");
  }
  if (device.max_queue_size() == 0 || device.max_queue_size() > SplitQueue::kMaxSize ||
      (device.max_queue_size() & (device.max_queue_size() - 1)) != 0) {
    throw Error("virtio-pci: maximum queue size must be a power of two up to 32768");
  }
  if (device.config_size() > kRegionSize) throw Error("virtio-pci: device configuration too large");
  if ((device_features_ & bit(kFeatureVersion1)) == 0) throw Error("virtio-pci: device does not offer VERSION_1");

  config_.add_memory_bar(0, kBarSize);
  config_.set_observer(this, nullptr);
  config_.set_intx_line(intx, interrupt_line);
  msix_.add_capability(config_);
  const auto common = virtio_cap<kCapSize>(kCapCommon, kCommonOffset, kCommonSize);
  config_.add_capability(kCapVendor, common);
  auto notify = virtio_cap<kCapSize + 4>(kCapNotify, kNotifyOffset, queue_count_ * kNotifyMultiplier);
  notify[16] = kNotifyMultiplier;
  config_.add_capability(kCapVendor, notify);
  config_.add_capability(kCapVendor, virtio_cap<kCapSize>(kCapIsr, kIsrOffset, 1));
  config_.add_capability(kCapVendor, virtio_cap<kCapSize>(kCapDevice, kDeviceOffset, device.config_size()));
  // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length and the data window are the
  // driver's to write.
  std::array<std::uint8_t, kCapSize + 4> writable{};
  writable[4] = 0xFF;
  for (std::size_t i = 8; i < writable.size(); ++i) writable[i] = 0xFF;
  pci_cfg_cap_ = config_.add_capability(kCapVendor, virtio_cap<kCapSize + 4>(kCapPciCfg, 0, 0), writable);

  queue_registers_.resize(queue_count_);
  queues_.resize(queue_count_);
  for (auto& q : queue_registers_) q.size = device.max_queue_size();
  std::lock_guard lock(mu_);
  device_.attach(*this, mu_);
}

VirtioPciFunction::~VirtioPciFunction() = default;

void VirtioPciFunction::set_notify_handler(std::function<void(std::uint16_t)> handler) {
  notify_handler_ = std::move(handler);
}

std::optional<std::uint64_t> VirtioPciFunction::bar_address() const noexcept { return config_.decoded_base(0); }

// ---- PciFunction ---------------------------------------------------------------

void VirtioPciFunction::config_read(std::uint32_t offset, std::span<std::uint8_t> data) noexcept {
  std::lock_guard lock(mu_);
  const std::uint32_t window = pci_cfg_cap_ + kPciCfgDataOffset;
  if (offset < window + 4 && offset + data.size() > window) pci_cfg_access(false, offset, data.size());
  config_.read(offset, data);
}

void VirtioPciFunction::config_write(std::uint32_t offset, std::span<const std::uint8_t> data) noexcept {
  std::lock_guard lock(mu_);
  config_.write(offset, data);
  msix_.config_written(config_);
  if (msix_.enabled() && config_.intx_pending()) config_.set_intx(false);  // MSI-X replaces INTx
  const std::uint32_t window = pci_cfg_cap_ + kPciCfgDataOffset;
  if (offset < window + 4 && offset + data.size() > window) pci_cfg_access(true, offset, data.size());
}

// The PCI-config-access window: a BAR access of cap.length (1, 2 or 4)
// bytes at cap.offset of cap.bar, through the 4-byte data field.
void VirtioPciFunction::pci_cfg_access(bool write, std::uint32_t, std::size_t) noexcept {
  const std::uint32_t cap = pci_cfg_cap_;
  const std::uint8_t bar = config_.byte(cap + 4);
  const std::uint32_t offset = config_.dword(cap + 8);
  const std::uint32_t length = config_.dword(cap + 12);
  if (bar != 0 || (length != 1 && length != 2 && length != 4) || offset % length != 0 || offset >= kBarSize) return;
  std::array<std::uint8_t, 4> data{};
  if (write) {
    for (std::uint32_t i = 0; i < length; ++i) data[i] = config_.byte(cap + kPciCfgDataOffset + i);
    bar_write_locked(offset, std::span<const std::uint8_t>(data.data(), length));
  } else {
    bar_read_locked(offset, std::span(data.data(), length));
    config_.set_dword(cap + kPciCfgDataOffset, static_cast<std::uint32_t>(load_le(data)));
  }
}

void VirtioPciFunction::bar_read(unsigned bar, std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  if (bar != 0) {
    store_le(data, ~0ull);
    return;
  }
  std::lock_guard lock(mu_);
  bar_read_locked(offset, data);
}

void VirtioPciFunction::bar_write(unsigned bar, std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  if (bar != 0) return;
  if (offset >= kNotifyOffset && offset < kNotifyOffset + kRegionSize) {
    const std::uint64_t at = offset - kNotifyOffset;
    if (at % kNotifyMultiplier != 0 || at / kNotifyMultiplier >= queue_count_) {
      log_guest(g_notify_log, "virtio-pci: notify write at {:#x} names no queue ({} suppressed)", offset);
      return;
    }
    const auto queue = static_cast<std::uint16_t>(at / kNotifyMultiplier);
    if (notify_handler_) {
      notify_handler_(queue);
    } else {
      notify(queue);
    }
    return;
  }
  std::lock_guard lock(mu_);
  bar_write_locked(offset, data);
}

std::optional<pci::BarHit> VirtioPciFunction::decode(std::uint64_t address, std::uint64_t length) const noexcept {
  return config_.decode(address, length);
}

std::uint64_t VirtioPciFunction::bar_size(unsigned bar) const noexcept { return bar == 0 ? kBarSize : 0; }

void VirtioPciFunction::assign_bar(unsigned bar, std::uint64_t address) {
  std::lock_guard lock(mu_);
  config_.assign_bar(bar, address);
}

void VirtioPciFunction::set_bar_observer(pci::PciBarObserver* observer) noexcept {
  std::lock_guard lock(mu_);
  config_.set_observer(this, observer);
}

void VirtioPciFunction::reset() noexcept {
  std::lock_guard lock(mu_);
  reset_device();
  config_.reset();
  msix_.reset();
}

bool VirtioPciFunction::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return idle_.wait_for(lock, timeout, [this] { return device_.in_flight() == 0; });
}

std::uint8_t VirtioPciFunction::device_status() const noexcept {
  std::lock_guard lock(mu_);
  return status_as_read();
}

// ---- BAR 0 -------------------------------------------------------------------------

void VirtioPciFunction::bar_read_locked(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  const std::uint64_t region = offset & ~(kRegionSize - 1);
  const std::uint64_t at = offset - region;
  if (at + data.size() > kRegionSize) {  // straddles two regions
    store_le(data, ~0ull);
    return;
  }
  switch (region) {
    case kCommonOffset:
      common_read(at, data);
      return;
    case kIsrOffset:
      store_le(data, 0);
      if (at == 0 && !data.empty()) {
        data[0] = isr_;
        isr_ = 0;
        config_.set_intx(false);
      }
      return;
    case kDeviceOffset:
      if (at + data.size() <= device_.config_size()) {
        device_.read_config(static_cast<std::uint32_t>(at), data);
      } else {
        store_le(data, 0);
      }
      return;
    case kNotifyOffset:
      store_le(data, 0);
      return;
    case kMsixTableOffset:
      msix_.table_read(at, data);
      return;
    case kMsixPbaOffset:
      msix_.pba_read(at, data);
      return;
    default:
      store_le(data, ~0ull);
  }
}

void VirtioPciFunction::bar_write_locked(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  const std::uint64_t region = offset & ~(kRegionSize - 1);
  const std::uint64_t at = offset - region;
  if (at + data.size() > kRegionSize) return;
  switch (region) {
    case kCommonOffset:
      common_write(at, data);
      return;
    case kDeviceOffset:
      if (at + data.size() <= device_.config_size()) device_.write_config(static_cast<std::uint32_t>(at), data);
      return;
    case kNotifyOffset:
      // Through the PCI-config-access window (bar_write() handles MMIO).
      if (at % kNotifyMultiplier == 0 && at / kNotifyMultiplier < queue_count_) {
        notify_locked(static_cast<std::uint16_t>(at / kNotifyMultiplier));
      }
      return;
    case kMsixTableOffset:
      msix_.table_write(at, data);
      return;
    default:
      return;  // ISR and PBA are read only
  }
}

// ---- Common configuration --------------------------------------------------------------

void VirtioPciFunction::common_read(std::uint64_t offset, std::span<std::uint8_t> data) noexcept {
  std::array<std::uint8_t, 0x40> image{};
  auto put = [&image](std::uint32_t at, std::uint64_t value, std::size_t width) {
    store_le(std::span(image.data() + at, width), value);
  };
  const std::uint64_t shifted =
      device_feature_select_ < 2 ? device_features_ >> (32 * device_feature_select_) : 0;
  const std::uint64_t driver_shifted =
      driver_feature_select_ < 2 ? driver_features_ >> (32 * driver_feature_select_) : 0;
  put(kDeviceFeatureSelect, device_feature_select_, 4);
  put(kDeviceFeature, static_cast<std::uint32_t>(shifted), 4);
  put(kDriverFeatureSelect, driver_feature_select_, 4);
  put(kDriverFeature, static_cast<std::uint32_t>(driver_shifted), 4);
  put(kConfigMsixVector, config_vector_, 2);
  put(kNumQueues, queue_count_, 2);
  put(kDeviceStatus, status_as_read(), 1);
  put(kConfigGeneration, config_generation_, 1);
  put(kQueueSelect, queue_select_, 2);
  if (queue_select_ < queue_count_) {  // an unavailable queue reads as size 0
    const QueueRegisters& q = queue_registers_[queue_select_];
    put(kQueueSize, q.size, 2);
    put(kQueueMsixVector, q.msix_vector, 2);
    put(kQueueEnable, q.enabled ? 1 : 0, 2);
    put(kQueueNotifyOff, queue_select_, 2);
    put(kQueueDesc, q.desc, 8);
    put(kQueueDriver, q.driver, 8);
    put(kQueueDevice, q.device, 8);
  } else {
    put(kQueueMsixVector, kNoVector, 2);
  }
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = offset + i < image.size() ? image[offset + i] : 0;
}

void VirtioPciFunction::common_write(std::uint64_t offset, std::span<const std::uint8_t> data) noexcept {
  const std::uint64_t value = load_le(data);
  const std::size_t width = data.size();
  QueueRegisters* q = queue_select_ < queue_count_ ? &queue_registers_[queue_select_] : nullptr;
  // A 64-bit queue address, whole or either 32-bit half.
  auto address_write = [&](std::uint64_t QueueRegisters::*field, std::uint64_t base) {
    if (q == nullptr || q->enabled) {
      log_guest(g_register_log, "virtio-pci: queue address written while the queue runs ({} suppressed)");
      return;
    }
    std::uint64_t& address = q->*field;
    if (offset == base && width == 8) {
      address = value;
    } else if (offset == base && width == 4) {
      address = (address & 0xFFFF'FFFF'0000'0000ull) | value;
    } else if (offset == base + 4 && width == 4) {
      address = (address & 0xFFFF'FFFFull) | (value << 32);
    }
  };
  switch (offset) {
    case kDeviceFeatureSelect:
      if (width == 4) device_feature_select_ = static_cast<std::uint32_t>(value);
      return;
    case kDriverFeatureSelect:
      if (width == 4) driver_feature_select_ = static_cast<std::uint32_t>(value);
      return;
    case kDriverFeature:
      if (width != 4 || driver_feature_select_ >= 2) return;
      if ((status_ & kStatusDriver) == 0 || (status_ & kStatusFeaturesOk) != 0) {
        log_guest(g_register_log, "virtio-pci: driver features written outside negotiation ({} suppressed)");
        return;
      }
      if (driver_feature_select_ == 0) {
        driver_features_ = (driver_features_ & 0xFFFF'FFFF'0000'0000ull) | value;
      } else {
        driver_features_ = (driver_features_ & 0xFFFF'FFFFull) | (value << 32);
      }
      return;
    case kConfigMsixVector:
      if (width == 2) config_vector_ = checked_vector(static_cast<std::uint16_t>(value));
      return;
    case kDeviceStatus:
      if (width == 1) write_status(static_cast<std::uint8_t>(value));
      return;
    case kQueueSelect:
      if (width == 2) queue_select_ = static_cast<std::uint16_t>(value);
      return;
    case kQueueSize:
      if (width == 2 && q != nullptr && !q->enabled) q->size = static_cast<std::uint16_t>(value);
      return;
    case kQueueMsixVector:
      if (width == 2 && q != nullptr) q->msix_vector = checked_vector(static_cast<std::uint16_t>(value));
      return;
    case kQueueEnable:
      if (width == 2 && value == 1 && q != nullptr) enable_queue(queue_select_);
      return;
    case kQueueDesc:
    case kQueueDesc + 4:
      address_write(&QueueRegisters::desc, kQueueDesc);
      return;
    case kQueueDriver:
    case kQueueDriver + 4:
      address_write(&QueueRegisters::driver, kQueueDriver);
      return;
    case kQueueDevice:
    case kQueueDevice + 4:
      address_write(&QueueRegisters::device, kQueueDevice);
      return;
    default:
      log_guest(g_register_log, "virtio-pci: write to read-only or unknown common register {:#x} ({} suppressed)",
                offset);
  }
}

std::uint16_t VirtioPciFunction::checked_vector(std::uint16_t vector) const noexcept {
  return vector < msix_.vectors() ? vector : kNoVector;
}

void VirtioPciFunction::write_status(std::uint8_t value) noexcept {
  if (value == 0) {
    reset_device();
    return;
  }
  // A driver that did not wait for the reset to finish: requests from before
  // it are still dropped when they complete.
  draining_ = false;
  value &= static_cast<std::uint8_t>(~kStatusNeedsReset);  // the device's bit
  const std::uint8_t current = status_ & static_cast<std::uint8_t>(~kStatusNeedsReset);
  if ((current & ~value) != 0) {
    log_guest(g_register_log, "virtio-pci: driver cleared status bits {:#x} without a reset ({} suppressed)",
              current & ~value);
    return;
  }
  const std::uint8_t added = value & static_cast<std::uint8_t>(~current);
  if ((added & kStatusFeaturesOk) != 0) {
    const bool subset = (driver_features_ & ~device_features_) == 0;
    const bool modern = (driver_features_ & bit(kFeatureVersion1)) != 0;
    if (!subset || !modern || (current & kStatusDriver) == 0) {
      log_guest(g_register_log, "virtio-pci: features {:#x} refused ({} suppressed)", driver_features_);
      value &= static_cast<std::uint8_t>(~kStatusFeaturesOk);
    }
  }
  if ((added & kStatusDriverOk) != 0 && ((value & kStatusFeaturesOk) == 0 || (status_ & kStatusNeedsReset) != 0)) {
    log_guest(g_register_log, "virtio-pci: DRIVER_OK without FEATURES_OK refused ({} suppressed)");
    value &= static_cast<std::uint8_t>(~kStatusDriverOk);
  }
  status_ = value | (status_ & kStatusNeedsReset);
  if ((added & kStatusDriverOk) != 0 && (status_ & kStatusDriverOk) != 0) {
    device_.activate(driver_features_, queues_);
  }
}

void VirtioPciFunction::enable_queue(std::uint16_t queue) noexcept {
  QueueRegisters& q = queue_registers_[queue];
  if (q.enabled) return;
  if ((status_ & kStatusFeaturesOk) == 0 || (status_ & kStatusDriverOk) != 0) {
    log_guest(g_register_log, "virtio-pci: queue {} enabled outside set-up ({} suppressed)", queue);
    return;
  }
  const char* why = nullptr;
  if (q.size > device_.max_queue_size()) {
    why = "queue size above the maximum";
  } else {
    why = queues_[queue].activate(memory_, QueueLayout{q.size, q.desc, q.driver, q.device},
                                  (driver_features_ & bit(kFeatureEventIdx)) != 0,
                                  (driver_features_ & bit(kFeatureIndirectDesc)) != 0);
  }
  if (why != nullptr) {
    log_guest(g_register_log, "virtio-pci: queue {} cannot run: {} ({} suppressed)", queue, why);
    needs_reset();
    return;
  }
  q.enabled = true;
}

void VirtioPciFunction::notify(std::uint16_t queue) noexcept {
  std::lock_guard lock(mu_);
  notify_locked(queue);
}

void VirtioPciFunction::notify_locked(std::uint16_t queue) noexcept {
  if ((status_ & kStatusDriverOk) == 0 || (status_ & kStatusNeedsReset) != 0 || queue >= queue_count_) {
    log_guest(g_notify_log, "virtio-pci: notification for queue {} ignored: device not running ({} suppressed)",
              queue);
    return;
  }
  if (!queue_registers_[queue].enabled) return;
  device_.queue_notify(queue);
}

void VirtioPciFunction::reset_device() noexcept {
  const std::size_t left = device_.reset();
  for (auto& q : queues_) q.deactivate();
  for (auto& q : queue_registers_) q = QueueRegisters{device_.max_queue_size()};
  status_before_reset_ = status_;
  draining_ = left > 0;
  status_ = 0;
  driver_features_ = 0;
  device_feature_select_ = driver_feature_select_ = 0;
  queue_select_ = 0;
  config_vector_ = kNoVector;
  isr_ = 0;
  config_.set_intx(false);
}

std::uint8_t VirtioPciFunction::status_as_read() const noexcept {
  return draining_ ? (status_before_reset_ != 0 ? status_before_reset_ : kStatusNeedsReset) : status_;
}

// ---- VirtioTransport --------------------------------------------------------------------

void VirtioPciFunction::signal(std::uint16_t vector, std::uint8_t isr_bit) noexcept {
  if (msix_.enabled()) {
    if (vector != kNoVector) msix_.signal(vector);
    return;
  }
  isr_ |= isr_bit;
  config_.set_intx(true);
}

void VirtioPciFunction::signal_queue(std::uint16_t queue) noexcept {
  if (queue < queue_count_) signal(queue_registers_[queue].msix_vector, kIsrQueue);
}

void VirtioPciFunction::signal_config() noexcept { signal(config_vector_, kIsrConfig); }

void VirtioPciFunction::needs_reset() noexcept {
  status_ |= kStatusNeedsReset;
  if ((status_ & kStatusDriverOk) != 0) signal_config();
}

void VirtioPciFunction::became_idle() noexcept {
  draining_ = false;
  idle_.notify_all();
}

}  // namespace vmm::devices::virtio
