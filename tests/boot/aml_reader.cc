#include "tests/boot/aml_reader.h"

#include <stdexcept>

namespace vmm::boot::test {

namespace {

class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> aml) : aml_(aml) {}

  std::vector<AmlObject> term_list(std::size_t end) {
    std::vector<AmlObject> terms;
    while (pos_ < end) terms.push_back(term(end));
    if (pos_ != end) fail("term list overran its package");
    return terms;
  }

  std::size_t size() const { return aml_.size(); }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("AML offset " + std::to_string(pos_) + ": " + what);
  }

  std::uint8_t byte(std::size_t end) {
    if (pos_ >= end) fail("unexpected end");
    return aml_[pos_++];
  }

  std::uint64_t little_endian(unsigned bytes, std::size_t end) {
    std::uint64_t value = 0;
    for (unsigned i = 0; i < bytes; ++i) value |= std::uint64_t{byte(end)} << (8 * i);
    return value;
  }

  // Returns the end offset of the package that starts at the PkgLength.
  std::size_t pkg_end(std::size_t limit) {
    const std::size_t start = pos_;
    const std::uint8_t lead = byte(limit);
    const unsigned follow = lead >> 6;
    std::size_t length = 0;
    if (follow == 0) {
      length = lead & 0x3F;
    } else {
      if (lead & 0x30) fail("PkgLength lead byte has reserved bits set");
      length = lead & 0x0F;
      for (unsigned i = 0; i < follow; ++i) length |= std::size_t{byte(limit)} << (4 + 8 * i);
    }
    if (start + length > limit) fail("PkgLength runs past its parent");
    if (start + length < pos_) fail("PkgLength shorter than itself");
    return start + length;
  }

  std::string name_seg(std::size_t end) {
    std::string seg;
    for (int i = 0; i < 4; ++i) {
      const char c = static_cast<char>(byte(end));
      const bool ok = (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
      if (!ok) fail(std::string("bad NameSeg character '") + c + "'");
      seg.push_back(c);
    }
    return seg;
  }

  std::string name_string(std::size_t end) {
    std::string path;
    if (pos_ < end && aml_[pos_] == '\\') {
      path.push_back('\\');
      ++pos_;
    }
    while (pos_ < end && aml_[pos_] == '^') {
      path.push_back('^');
      ++pos_;
    }
    const std::uint8_t lead = aml_[pos_];
    unsigned count = 1;
    if (lead == 0x00) {
      ++pos_;
      return path;
    } else if (lead == 0x2E) {
      ++pos_;
      count = 2;
    } else if (lead == 0x2F) {
      ++pos_;
      count = byte(end);
    }
    for (unsigned i = 0; i < count; ++i) {
      if (i) path.push_back('.');
      path += name_seg(end);
    }
    return path;
  }

  AmlObject data_object(std::size_t end) {
    AmlObject object;
    const std::uint8_t op = byte(end);
    switch (op) {
      case 0x00: object.value = 0; return object;
      case 0x01: object.value = 1; return object;
      case 0xFF: object.value = ~std::uint64_t{0}; return object;
      case 0x0A: object.value = little_endian(1, end); return object;
      case 0x0B: object.value = little_endian(2, end); return object;
      case 0x0C: object.value = little_endian(4, end); return object;
      case 0x0E: object.value = little_endian(8, end); return object;
      case 0x0D: {
        object.kind = AmlObject::Kind::string;
        for (char c; (c = static_cast<char>(byte(end))) != 0;) object.text.push_back(c);
        return object;
      }
      case 0x11: {
        object.kind = AmlObject::Kind::buffer;
        const std::size_t package_end = pkg_end(end);
        const AmlObject size = data_object(package_end);
        if (size.kind != AmlObject::Kind::integer) fail("buffer size is not an integer");
        object.data.assign(aml_.begin() + static_cast<std::ptrdiff_t>(pos_),
                           aml_.begin() + static_cast<std::ptrdiff_t>(package_end));
        if (object.data.size() != size.value) fail("buffer size does not match its contents");
        pos_ = package_end;
        return object;
      }
      case 0x12: {
        object.kind = AmlObject::Kind::package;
        const std::size_t package_end = pkg_end(end);
        const std::uint8_t count = byte(package_end);
        while (pos_ < package_end) object.children.push_back(data_object(package_end));
        if (object.children.size() != count) fail("package element count does not match NumElements");
        return object;
      }
      default:
        fail("unexpected data opcode " + std::to_string(op));
    }
  }

  AmlObject term(std::size_t end) {
    AmlObject object;
    const std::uint8_t op = byte(end);
    if (op == 0x08) {
      object.kind = AmlObject::Kind::name;
      object.name = name_string(end);
      object.children.push_back(data_object(end));
      return object;
    }
    if (op == 0x10 || (op == 0x5B && pos_ < end && aml_[pos_] == 0x82)) {
      if (op == 0x5B) ++pos_;
      object.kind = op == 0x10 ? AmlObject::Kind::scope : AmlObject::Kind::device;
      const std::size_t package_end = pkg_end(end);
      object.name = name_string(package_end);
      object.children = term_list(package_end);
      return object;
    }
    if (op == 0x14) {
      object.kind = AmlObject::Kind::method;
      const std::size_t package_end = pkg_end(end);
      object.name = name_string(package_end);
      const std::uint8_t flags = byte(package_end);
      if (flags & 0xF8) fail("method " + object.name + " is serialized or has a sync level");
      object.value = flags & 0x07;
      object.children = term_list(package_end);
      return object;
    }
    if (op == 0x70) {
      object.kind = AmlObject::Kind::store;
      object.children.push_back(operand(end));
      object.children.push_back(operand(end));
      return object;
    }
    if (op == 0xA0) {
      object.kind = AmlObject::Kind::if_;
      const std::size_t package_end = pkg_end(end);
      object.children.push_back(operand(package_end));
      for (AmlObject& statement : term_list(package_end)) object.children.push_back(std::move(statement));
      return object;
    }
    if (op == 0xA4) {
      object.kind = AmlObject::Kind::return_;
      object.children.push_back(operand(end));
      return object;
    }
    fail("unexpected term opcode " + std::to_string(op));
  }

  // A TermArg or SuperName: data, ArgN, or a reference to a named object.
  AmlObject operand(std::size_t end) {
    if (pos_ >= end) fail("unexpected end");
    const std::uint8_t lead = aml_[pos_];
    if (lead >= 0x68 && lead <= 0x6E) {
      ++pos_;
      AmlObject object;
      object.kind = AmlObject::Kind::arg;
      object.value = lead - 0x68u;
      return object;
    }
    const bool name_lead = lead == '\\' || lead == '^' || lead == 0x2E || lead == 0x2F || lead == '_' ||
                           (lead >= 'A' && lead <= 'Z');
    if (name_lead) {
      AmlObject object;
      object.kind = AmlObject::Kind::reference;
      object.name = name_string(end);
      return object;
    }
    return data_object(end);
  }

  std::span<const std::uint8_t> aml_;
  std::size_t pos_ = 0;
};

}  // namespace

std::vector<AmlObject> parse_aml(std::span<const std::uint8_t> aml) {
  Reader reader(aml);
  return reader.term_list(reader.size());
}

const AmlObject* find_name(const std::vector<AmlObject>& terms, const std::string& path) {
  for (const AmlObject& term : terms) {
    if (term.kind == AmlObject::Kind::name && term.name == path) return &term.children.at(0);
  }
  return nullptr;
}

const AmlObject* find_method(const std::vector<AmlObject>& terms, const std::string& path) {
  for (const AmlObject& term : terms) {
    if (term.kind == AmlObject::Kind::method && term.name == path) return &term;
  }
  return nullptr;
}

std::vector<AmlResource> parse_resources(const std::vector<std::uint8_t>& buffer) {
  std::vector<AmlResource> resources;
  std::size_t pos = 0;
  auto need = [&](std::size_t n) {
    if (pos + n > buffer.size()) throw std::runtime_error("resource descriptor runs past the buffer");
  };
  auto le = [&](std::size_t at, unsigned bytes) {
    std::uint32_t v = 0;
    for (unsigned i = 0; i < bytes; ++i) v |= std::uint32_t{buffer[at + i]} << (8 * i);
    return v;
  };
  while (true) {
    need(1);
    const std::uint8_t tag = buffer[pos];
    if (tag & 0x80) {
      need(3);
      const std::uint32_t length = le(pos + 1, 2);
      need(3 + length);
      const unsigned field = (tag == 0x88 && length == 13) ? 2 : (tag == 0x87 && length == 23) ? 4 : 0;
      if (field != 0) {
        AmlResource r{AmlResource::Kind::address_space};
        r.space_type = buffer[pos + 3];
        r.general_flags = buffer[pos + 4];
        r.type_flags = buffer[pos + 5];
        const std::size_t values = pos + 6;  // granularity, min, max, translation, length
        r.base = le(values + field, field);
        r.max = le(values + 2 * field, field);
        if (le(values + 3 * field, field) != 0) throw std::runtime_error("address space with a translation");
        r.length = le(values + 4 * field, field);
        if (r.max < r.base || r.length != r.max - r.base + 1) {
          throw std::runtime_error("address space length does not match its range");
        }
        resources.push_back(r);
        pos += 3 + length;
        continue;
      }
      if ((tag & 0x7F) != 0x06 || length != 9) throw std::runtime_error("unexpected large resource item");
      AmlResource r{AmlResource::Kind::memory32_fixed};
      r.writable = buffer[pos + 3] & 1;
      r.base = le(pos + 4, 4);
      r.length = le(pos + 8, 4);
      resources.push_back(r);
      pos += 3 + length;
      continue;
    }
    const unsigned name = (tag >> 3) & 0xF;
    const unsigned length = tag & 0x7;
    need(1 + length);
    if (name == 0xF) {  // End Tag
      if (length != 1 || pos + 2 != buffer.size()) throw std::runtime_error("End Tag is not the last item");
      return resources;
    }
    if (name == 0x8 && length == 7) {
      AmlResource r{AmlResource::Kind::io};
      r.decode16 = buffer[pos + 1] & 1;
      const std::uint32_t min = le(pos + 2, 2), max = le(pos + 4, 2);
      if (min != max) throw std::runtime_error("I/O descriptor is not fixed");
      r.base = min;
      r.length = buffer[pos + 7];
      resources.push_back(r);
    } else if (name == 0x4 && (length == 2 || length == 3)) {
      AmlResource r{AmlResource::Kind::irq};
      r.irq_mask = static_cast<std::uint16_t>(le(pos + 1, 2));
      resources.push_back(r);
    } else {
      throw std::runtime_error("unexpected small resource item " + std::to_string(name));
    }
    pos += 1 + length;
  }
}

std::string decode_eisa_id(std::uint32_t id) {
  // Stored big-endian in the DWord's bytes.
  const std::uint8_t b0 = id & 0xFF, b1 = (id >> 8) & 0xFF, b2 = (id >> 16) & 0xFF, b3 = (id >> 24) & 0xFF;
  const unsigned vendor = (unsigned{b0} << 8) | b1;
  std::string text;
  text.push_back(static_cast<char>('A' - 1 + ((vendor >> 10) & 0x1F)));
  text.push_back(static_cast<char>('A' - 1 + ((vendor >> 5) & 0x1F)));
  text.push_back(static_cast<char>('A' - 1 + (vendor & 0x1F)));
  const char* hex = "0123456789ABCDEF";
  for (std::uint8_t b : {b2, b3}) {
    text.push_back(hex[b >> 4]);
    text.push_back(hex[b & 0xF]);
  }
  return text;
}

}  // namespace vmm::boot::test
