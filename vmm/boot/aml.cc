#include "vmm/boot/aml.h"

#include <cctype>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "devices/error.h"

namespace vmm::boot::aml {

namespace {

// resize + memcpy rather than insert: GCC 12 at -O3 reports a bogus
// stringop-overflow inside vector::insert for byte vectors.
void append(Bytes& out, const Bytes& more) {
  const std::size_t old_size = out.size();
  out.resize(old_size + more.size());
  if (!more.empty()) std::memcpy(out.data() + old_size, more.data(), more.size());
}

void append_le(Bytes& out, std::uint64_t value, unsigned bytes) {
  for (unsigned i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}

bool is_lead_char(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_lead_char(c) || (c >= '0' && c <= '9'); }

Bytes name_seg(std::string_view segment, std::string_view path) {
  if (segment.empty() || segment.size() > 4 || !is_lead_char(segment[0])) {
    throw Error(fmt::format("invalid AML name segment '{}' in '{}'", segment, path));
  }
  Bytes out;
  for (char c : segment) {
    if (!is_name_char(c)) throw Error(fmt::format("invalid AML name segment '{}' in '{}'", segment, path));
    out.push_back(static_cast<std::uint8_t>(c));
  }
  out.resize(4, '_');
  return out;
}

// Opcode, PkgLength, then the body: the shape of every variable-length term.
Bytes with_pkg_length(std::initializer_list<std::uint8_t> opcode, const Bytes& body) {
  Bytes out(opcode);
  append(out, pkg_length(body.size()));
  append(out, body);
  return out;
}

}  // namespace

Bytes pkg_length(std::size_t body_size) {
  // One byte holds 6 bits; with 1, 2 or 3 follow-on bytes the lead byte keeps
  // 4 bits and each follow-on byte adds 8.
  if (body_size + 1 < (1u << 6)) return {static_cast<std::uint8_t>(body_size + 1)};
  for (unsigned extra = 1; extra <= 3; ++extra) {
    const std::uint64_t total = body_size + 1 + extra;
    if (total < (std::uint64_t{1} << (4 + 8 * extra))) {
      Bytes out;
      out.push_back(static_cast<std::uint8_t>((extra << 6) | (total & 0xF)));
      append_le(out, total >> 4, extra);
      return out;
    }
  }
  throw Error(fmt::format("AML package of {} bytes exceeds the 28-bit PkgLength", body_size));
}

Bytes name_string(std::string_view path) {
  Bytes out;
  std::string_view rest = path;
  if (!rest.empty() && rest.front() == kRootChar) {
    out.push_back(kRootChar);
    rest.remove_prefix(1);
  }
  std::vector<Bytes> segments;
  while (!rest.empty()) {
    const std::size_t dot = rest.find('.');
    segments.push_back(name_seg(rest.substr(0, dot), path));
    rest = dot == std::string_view::npos ? std::string_view{} : rest.substr(dot + 1);
  }
  if (segments.empty()) {
    throw Error(fmt::format("empty AML name '{}'", path));
  } else if (segments.size() == 2) {
    out.push_back(kDualNamePrefix);
  } else if (segments.size() > 2) {
    if (segments.size() > 255) throw Error(fmt::format("AML name '{}' has too many segments", path));
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<std::uint8_t>(segments.size()));
  }
  for (const Bytes& segment : segments) append(out, segment);
  return out;
}

Bytes integer(std::uint64_t value) {
  if (value == 0) return {kZeroOp};
  if (value == 1) return {kOneOp};
  Bytes out;
  if (value <= 0xFF) {
    out.push_back(kBytePrefix);
    append_le(out, value, 1);
  } else if (value <= 0xFFFF) {
    out.push_back(kWordPrefix);
    append_le(out, value, 2);
  } else if (value <= 0xFFFF'FFFF) {
    out.push_back(kDWordPrefix);
    append_le(out, value, 4);
  } else {
    out.push_back(kQWordPrefix);
    append_le(out, value, 8);
  }
  return out;
}

Bytes string(std::string_view text) {
  // ASCII 0x01-0x7F only, NUL-terminated (ACPI 6.4, 20.2.3).
  Bytes out{kStringPrefix};
  for (char c : text) {
    const auto byte = static_cast<std::uint8_t>(c);
    if (byte == 0 || byte > 0x7F) throw Error(fmt::format("AML string '{}' holds a byte outside 0x01-0x7F", text));
    out.push_back(byte);
  }
  out.push_back(0);
  return out;
}

Bytes eisa_id(std::string_view id) {
  const bool valid = id.size() == 7 && std::isupper(static_cast<unsigned char>(id[0])) &&
                     std::isupper(static_cast<unsigned char>(id[1])) &&
                     std::isupper(static_cast<unsigned char>(id[2])) &&
                     std::isxdigit(static_cast<unsigned char>(id[3])) &&
                     std::isxdigit(static_cast<unsigned char>(id[4])) &&
                     std::isxdigit(static_cast<unsigned char>(id[5])) &&
                     std::isxdigit(static_cast<unsigned char>(id[6]));
  if (!valid) throw Error(fmt::format("invalid EISA ID '{}': expected three letters and four hex digits", id));
  // Three 5-bit letters ('A' = 1) big-endian in the first 16 bits, then the
  // product number as two big-endian bytes of hex digits.
  auto letter = [&](int i) { return static_cast<unsigned>(id[i] - 'A' + 1); };
  const unsigned vendor = (letter(0) << 10) | (letter(1) << 5) | letter(2);
  const unsigned product = static_cast<unsigned>(std::stoul(std::string(id.substr(3)), nullptr, 16));
  return {kDWordPrefix, static_cast<std::uint8_t>(vendor >> 8), static_cast<std::uint8_t>(vendor),
          static_cast<std::uint8_t>(product >> 8), static_cast<std::uint8_t>(product)};
}

Bytes name(std::string_view path, const Bytes& object) {
  Bytes out{kNameOp};
  append(out, name_string(path));
  append(out, object);
  return out;
}

Bytes package(const std::vector<Bytes>& elements) {
  if (elements.size() > 255) throw Error("AML package with more than 255 elements");
  Bytes body{static_cast<std::uint8_t>(elements.size())};
  for (const Bytes& element : elements) append(body, element);
  return with_pkg_length({kPackageOp}, body);
}

Bytes buffer(const Bytes& contents) {
  Bytes body = integer(contents.size());
  append(body, contents);
  return with_pkg_length({kBufferOp}, body);
}

Bytes scope(std::string_view path, const std::vector<Bytes>& terms) {
  Bytes body = name_string(path);
  for (const Bytes& term : terms) append(body, term);
  return with_pkg_length({kScopeOp}, body);
}

Bytes device(std::string_view path, const std::vector<Bytes>& terms) {
  Bytes body = name_string(path);
  for (const Bytes& term : terms) append(body, term);
  return with_pkg_length({kExtOpPrefix, kDeviceOp}, body);
}

Bytes method(std::string_view path, unsigned args, const std::vector<Bytes>& terms) {
  if (args > 7) throw Error(fmt::format("AML method {} with {} arguments; at most 7", path, args));
  Bytes body = name_string(path);
  body.push_back(static_cast<std::uint8_t>(args));  // MethodFlags: ArgCount, NotSerialized, SyncLevel 0
  for (const Bytes& term : terms) append(body, term);
  return with_pkg_length({kMethodOp}, body);
}

Bytes arg(unsigned n) {
  if (n > 6) throw Error(fmt::format("AML Arg{} does not exist (Arg0-Arg6)", n));
  return {static_cast<std::uint8_t>(kArg0Op + n)};
}

Bytes store(const Bytes& value, std::string_view target) {
  Bytes out{kStoreOp};
  append(out, value);
  append(out, name_string(target));
  return out;
}

Bytes if_then(const Bytes& predicate, const std::vector<Bytes>& terms) {
  Bytes body = predicate;
  for (const Bytes& term : terms) append(body, term);
  return with_pkg_length({kIfOp}, body);
}

Bytes return_value(const Bytes& value) {
  Bytes out{kReturnOp};
  append(out, value);
  return out;
}

Bytes concat(const std::vector<Bytes>& terms) {
  Bytes out;
  for (const Bytes& term : terms) append(out, term);
  return out;
}

// Small resource items carry their tag and length in one byte:
// bits 6:3 item name, bits 2:0 length. Large items have bit 7 set, the name
// in bits 6:0, and a 16-bit length.
ResourceTemplate& ResourceTemplate::io(std::uint16_t base, std::uint8_t length) {
  constexpr std::uint8_t kIoPortDescriptor = (0x08 << 3) | 7;
  constexpr std::uint8_t kDecode16 = 1;
  descriptors_.push_back(kIoPortDescriptor);
  descriptors_.push_back(kDecode16);
  append_le(descriptors_, base, 2);  // minimum base
  append_le(descriptors_, base, 2);  // maximum base
  descriptors_.push_back(1);         // alignment
  descriptors_.push_back(length);
  return *this;
}

ResourceTemplate& ResourceTemplate::irq(unsigned irq) {
  constexpr std::uint8_t kIrqNoFlagsDescriptor = (0x04 << 3) | 2;
  if (irq > 15) throw Error(fmt::format("ISA IRQ {} does not fit an IRQ descriptor", irq));
  descriptors_.push_back(kIrqNoFlagsDescriptor);
  append_le(descriptors_, 1u << irq, 2);
  return *this;
}

ResourceTemplate& ResourceTemplate::memory32_fixed(std::uint32_t base, std::uint32_t length) {
  constexpr std::uint8_t kMemory32FixedDescriptor = 0x80 | 0x06;
  constexpr std::uint8_t kReadWrite = 1;
  descriptors_.push_back(kMemory32FixedDescriptor);
  append_le(descriptors_, 9, 2);
  descriptors_.push_back(kReadWrite);
  append_le(descriptors_, base, 4);
  append_le(descriptors_, length, 4);
  return *this;
}

namespace {

// Resource types and flags of the Word and DWord Address Space Descriptors.
constexpr std::uint8_t kAddressMemory = 0, kAddressIo = 1, kAddressBus = 2;
// General flags: producer (bit 0 clear), positive decode (bit 1 clear),
// minimum and maximum fixed (bits 2 and 3).
constexpr std::uint8_t kProducerFixed = 0x0C;
constexpr std::uint8_t kIoEntireRange = 0x03;
constexpr std::uint8_t kMemoryReadWriteNonCacheable = 0x01;

void address_space(Bytes& out, std::uint8_t descriptor, unsigned field_bytes, std::uint8_t type,
                   std::uint8_t type_flags, std::uint64_t min, std::uint64_t max) {
  out.push_back(descriptor);
  // Type, general flags, type flags, then granularity, minimum, maximum,
  // translation offset and length.
  append_le(out, 3 + 5 * field_bytes, 2);
  out.push_back(type);
  out.push_back(kProducerFixed);
  out.push_back(type_flags);
  append_le(out, 0, field_bytes);
  append_le(out, min, field_bytes);
  append_le(out, max, field_bytes);
  append_le(out, 0, field_bytes);
  append_le(out, max - min + 1, field_bytes);
}

constexpr std::uint8_t kWordAddressDescriptor = 0x88, kDWordAddressDescriptor = 0x87;

}  // namespace

ResourceTemplate& ResourceTemplate::word_bus_number(std::uint16_t min, std::uint16_t max) {
  if (max < min) throw Error(fmt::format("bus number range {}-{} is empty", min, max));
  address_space(descriptors_, kWordAddressDescriptor, 2, kAddressBus, 0, min, max);
  return *this;
}

ResourceTemplate& ResourceTemplate::word_io(std::uint16_t min, std::uint16_t max) {
  if (max < min) throw Error(fmt::format("I/O range {:#x}-{:#x} is empty", min, max));
  address_space(descriptors_, kWordAddressDescriptor, 2, kAddressIo, kIoEntireRange, min, max);
  return *this;
}

ResourceTemplate& ResourceTemplate::dword_memory(std::uint32_t min, std::uint32_t max) {
  if (max < min) throw Error(fmt::format("memory range {:#x}-{:#x} is empty", min, max));
  address_space(descriptors_, kDWordAddressDescriptor, 4, kAddressMemory, kMemoryReadWriteNonCacheable, min, max);
  return *this;
}

Bytes ResourceTemplate::buffer() const {
  // End Tag; a checksum of 0 means "treat the template as checksummed".
  constexpr std::uint8_t kEndTag = (0x0F << 3) | 1;
  Bytes contents = descriptors_;
  contents.push_back(kEndTag);
  contents.push_back(0);
  return aml::buffer(contents);
}

}  // namespace vmm::boot::aml
