// An AML decoder written independently of the encoder, for the subset of AML
// the DSDT uses. Tests use it to prove the DSDT is well formed (every
// PkgLength consistent, nothing left over) and to look inside it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace vmm::boot::test {

struct AmlObject {
  // Data, the named objects, and the statements of a method: Store,
  // If (children: the predicate, then the terms), Return, ArgN (value: N)
  // and a reference to a named object (name: its path).
  enum class Kind { integer, string, buffer, package, name, scope, device, method, store, if_, return_, arg, reference };
  Kind kind = Kind::integer;
  std::string name;                // name/scope/device/method/reference: decoded path, e.g. "\\_SB_" or "COM1"
  std::uint64_t value = 0;         // integer; a method's argument count; an ArgN's N
  std::string text;                // string
  std::vector<std::uint8_t> data;  // buffer contents
  std::vector<AmlObject> children; // package elements, scope/device/method terms, a name's object,
                                   // Store's value and target, Return's value
};

// Throws std::runtime_error on anything malformed or unexpected.
std::vector<AmlObject> parse_aml(std::span<const std::uint8_t> aml);

// The object bound by Name(path) among `terms` (not recursive).
const AmlObject* find_name(const std::vector<AmlObject>& terms, const std::string& path);
// Method(path) among `terms` (not recursive).
const AmlObject* find_method(const std::vector<AmlObject>& terms, const std::string& path);

struct AmlResource {
  enum class Kind { io, irq, memory32_fixed, address_space };
  Kind kind;
  // address_space (Word or DWord Address Space Descriptor): the resource
  // type (0 memory, 1 I/O, 2 bus numbers), the general and type-specific
  // flags, and [base, base + length) in `base` / `length`.
  std::uint8_t space_type = 0;
  std::uint8_t general_flags = 0;
  std::uint8_t type_flags = 0;
  std::uint32_t max = 0;
  std::uint32_t base = 0;
  std::uint32_t length = 0;
  std::uint16_t irq_mask = 0;
  bool decode16 = false;
  bool writable = false;
};
// Parses a _CRS buffer; throws unless it ends in exactly one End Tag.
std::vector<AmlResource> parse_resources(const std::vector<std::uint8_t>& buffer);

// DWord EISA ID back to "PNP0501".
std::string decode_eisa_id(std::uint32_t id);

}  // namespace vmm::boot::test
