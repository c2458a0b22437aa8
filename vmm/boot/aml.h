// A small AML (ACPI Machine Language) encoder: just the terms the DSDT needs
// (names, integers, packages, buffers, scopes, devices, EISA IDs, the
// resource descriptors a legacy device's _CRS uses, and the few statements
// of the _PIC and _PRT methods). Encodings follow the
// ACPI specification, chapter "ACPI Machine Language (AML) Specification".
//
// Every function returns the complete encoding of one term, so terms nest
// by passing one function's result into another's body.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace vmm::boot::aml {

using Bytes = std::vector<std::uint8_t>;

inline constexpr std::uint8_t kZeroOp = 0x00;
inline constexpr std::uint8_t kOneOp = 0x01;
inline constexpr std::uint8_t kNameOp = 0x08;
inline constexpr std::uint8_t kBytePrefix = 0x0A;
inline constexpr std::uint8_t kWordPrefix = 0x0B;
inline constexpr std::uint8_t kDWordPrefix = 0x0C;
inline constexpr std::uint8_t kQWordPrefix = 0x0E;
inline constexpr std::uint8_t kScopeOp = 0x10;
inline constexpr std::uint8_t kMethodOp = 0x14;
inline constexpr std::uint8_t kArg0Op = 0x68;  // Arg1Op-Arg6Op follow it
inline constexpr std::uint8_t kStoreOp = 0x70;
inline constexpr std::uint8_t kIfOp = 0xA0;
inline constexpr std::uint8_t kReturnOp = 0xA4;
inline constexpr std::uint8_t kBufferOp = 0x11;
inline constexpr std::uint8_t kPackageOp = 0x12;
inline constexpr std::uint8_t kDualNamePrefix = 0x2E;
inline constexpr std::uint8_t kMultiNamePrefix = 0x2F;
inline constexpr std::uint8_t kStringPrefix = 0x0D;
inline constexpr std::uint8_t kExtOpPrefix = 0x5B;
inline constexpr std::uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
inline constexpr std::uint8_t kRootChar = '\\';

// The PkgLength that precedes a body of `body_size` bytes. The encoded value
// counts its own bytes too, so the encoding length depends on the result.
// Throws vmm::Error above the 28-bit maximum.
Bytes pkg_length(std::size_t body_size);

// A NameString: "\\_SB.COM1", "_S5", "COM1". Segments shorter than four
// characters are padded with '_'. Throws vmm::Error on an invalid segment.
Bytes name_string(std::string_view path);

// The shortest integer encoding (ZeroOp, OneOp, or a prefixed constant).
Bytes integer(std::uint64_t value);

// A String constant: "QEMU0001" for a _HID that is not an EISA ID.
Bytes string(std::string_view text);

// A compressed EISA ID ("PNP0501") as a DWord constant, the way _HID wants it.
// Throws vmm::Error unless it is three letters and four hex digits.
Bytes eisa_id(std::string_view id);

// Name(path, object)
Bytes name(std::string_view path, const Bytes& object);
// Package(n) { elements... }
Bytes package(const std::vector<Bytes>& elements);
// Buffer(n) { bytes }
Bytes buffer(const Bytes& contents);
// Scope(path) { terms... }
Bytes scope(std::string_view path, const std::vector<Bytes>& terms);
// Device(path) { terms... }
Bytes device(std::string_view path, const std::vector<Bytes>& terms);

// Method(path, args, NotSerialized) { terms... }; args 0-7, else vmm::Error.
Bytes method(std::string_view path, unsigned args, const std::vector<Bytes>& terms);
// ArgN inside a method; n 0-6, else vmm::Error.
Bytes arg(unsigned n);
// Store(value, target): target a named object.
Bytes store(const Bytes& value, std::string_view target);
// If (predicate) { terms... }, without Else.
Bytes if_then(const Bytes& predicate, const std::vector<Bytes>& terms);
// Return(value)
Bytes return_value(const Bytes& value);
// A reference to a named object, as an operand: its NameString.
inline Bytes reference(std::string_view path) { return name_string(path); }

// ResourceTemplate () { ... } as used in _CRS: collects descriptors and
// closes them with an End Tag in buffer().
class ResourceTemplate {
 public:
  // IO (Decode16, base, base, 1, length): a fixed range of I/O ports.
  ResourceTemplate& io(std::uint16_t base, std::uint8_t length);
  // IRQNoFlags () { irq }: edge-triggered, active-high ISA interrupt.
  ResourceTemplate& irq(unsigned irq);
  // Memory32Fixed (ReadWrite, base, length)
  ResourceTemplate& memory32_fixed(std::uint32_t base, std::uint32_t length);

  // The address-space descriptors a PCI host bridge's _CRS uses to hand
  // ranges down to its bus (ResourceProducer, MinFixed, MaxFixed,
  // PosDecode, no translation): WordBusNumber, WordIO (EntireRange) and
  // DWordMemory (NonCacheable, ReadWrite), each covering [min, max].
  ResourceTemplate& word_bus_number(std::uint16_t min, std::uint16_t max);
  ResourceTemplate& word_io(std::uint16_t min, std::uint16_t max);
  ResourceTemplate& dword_memory(std::uint32_t min, std::uint32_t max);

  Bytes buffer() const;

 private:
  Bytes descriptors_;
};

// The concatenation of terms (a TermList).
Bytes concat(const std::vector<Bytes>& terms);

}  // namespace vmm::boot::aml
