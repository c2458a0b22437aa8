#include "tests/boot/test_support.h"

#include <elf.h>
#include <stdlib.h>

#include <cstring>
#include <fstream>

#include "vmm/boot/boot_params.h"

namespace vmm::boot::test {

Bytes pattern(std::size_t size, std::uint8_t seed) {
  Bytes bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>((i * 131 + (i >> 8) * 7 + seed) & 0xFF);
  return bytes;
}

Bytes make_bzimage(const BzImageSpec& spec) {
  namespace abi = linux_abi;
  const std::size_t setup_sects = spec.setup_sects == 0 ? 4 : spec.setup_sects;
  const std::size_t setup_size = (setup_sects + 1) * 512;
  Bytes image(setup_size, 0);
  abi::SetupHeader h{};
  h.setup_sects = spec.setup_sects;
  h.syssize = (spec.syssize_bytes.value_or(static_cast<std::uint32_t>(spec.kernel_bytes)) + 15) / 16;
  h.boot_flag = spec.boot_flag;
  // A short jump over the header, as the real setup code starts with.
  h.jump = static_cast<std::uint16_t>(0xEB | (spec.jump_offset << 8));
  h.header = spec.magic;
  h.version = spec.version;
  h.loadflags = spec.loadflags;
  h.code32_start = 0x100000;
  h.initrd_addr_max = spec.initrd_addr_max;
  h.kernel_alignment = spec.kernel_alignment;
  h.relocatable_kernel = spec.relocatable;
  h.min_alignment = spec.min_alignment;
  h.xloadflags = spec.xloadflags;
  h.cmdline_size = spec.cmdline_size;
  h.pref_address = spec.pref_address;
  h.init_size = spec.init_size;
  h.kernel_version = 0x1234;  // a field the loader must carry over untouched
  std::memcpy(image.data() + abi::kSetupHeaderOffset, &h, sizeof(h));
  const Bytes kernel = pattern(spec.kernel_bytes, 0x5A);
  image.insert(image.end(), kernel.begin(), kernel.end());
  return image;
}

namespace {

void put_note(Bytes& out, std::string_view name, std::uint32_t type, const Bytes& desc) {
  auto put32 = [&](std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  };
  put32(static_cast<std::uint32_t>(name.size() + 1));
  put32(static_cast<std::uint32_t>(desc.size()));
  put32(type);
  out.insert(out.end(), name.begin(), name.end());
  out.push_back(0);
  while (out.size() % 4) out.push_back(0);
  out.insert(out.end(), desc.begin(), desc.end());
  while (out.size() % 4) out.push_back(0);
}

template <typename Ehdr, typename Phdr>
Bytes build_elf(const ElfSpec& spec, unsigned char elf_class, std::uint16_t default_machine) {
  Bytes notes;
  if (spec.leading_note) put_note(notes, "GNU", 3, Bytes(20, 0xAB));
  if (spec.pvh_entry) {
    Bytes desc(spec.pvh_desc_size, 0);
    for (unsigned i = 0; i < spec.pvh_desc_size && i < 8; ++i) {
      desc[i] = static_cast<std::uint8_t>(*spec.pvh_entry >> (8 * i));
    }
    put_note(notes, "Xen", 18, desc);
  }
  const std::size_t phnum = spec.segments.size() + 1;
  const std::size_t notes_offset = sizeof(Ehdr) + phnum * sizeof(Phdr);
  std::size_t data_offset = (notes_offset + notes.size() + 15) & ~std::size_t{15};

  Ehdr ehdr{};
  std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
  ehdr.e_ident[EI_CLASS] = elf_class;
  ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
  ehdr.e_ident[EI_VERSION] = EV_CURRENT;
  ehdr.e_type = spec.type;
  ehdr.e_machine = spec.machine ? spec.machine : default_machine;
  ehdr.e_version = EV_CURRENT;
  ehdr.e_entry = 0xDEAD'0000;  // not the PVH entry: the loader must use the note
  ehdr.e_phoff = sizeof(Ehdr);
  ehdr.e_ehsize = sizeof(Ehdr);
  ehdr.e_phentsize = sizeof(Phdr);
  ehdr.e_phnum = static_cast<std::uint16_t>(phnum);

  std::vector<Phdr> phdrs;
  Phdr note{};
  note.p_type = PT_NOTE;
  note.p_offset = notes_offset;
  note.p_filesz = notes.size();
  note.p_memsz = notes.size();
  note.p_align = 4;
  phdrs.push_back(note);
  Bytes data;
  for (const ElfSegmentSpec& segment : spec.segments) {
    Phdr load{};
    load.p_type = PT_LOAD;
    load.p_offset = data_offset + data.size();
    load.p_vaddr = segment.paddr + 0xFFFF'8000'0000'0000ull * (elf_class == ELFCLASS64);
    load.p_paddr = segment.paddr;
    load.p_filesz = segment.data.size();
    load.p_memsz = segment.memsz;
    load.p_align = 16;
    phdrs.push_back(load);
    data.insert(data.end(), segment.data.begin(), segment.data.end());
    while (data.size() % 16) data.push_back(0);
  }

  Bytes out(data_offset, 0);
  std::memcpy(out.data(), &ehdr, sizeof(ehdr));
  std::memcpy(out.data() + sizeof(Ehdr), phdrs.data(), phdrs.size() * sizeof(Phdr));
  std::memcpy(out.data() + notes_offset, notes.data(), notes.size());
  out.insert(out.end(), data.begin(), data.end());
  out.resize(out.size() - std::min(spec.truncate_by, out.size()));
  return out;
}

}  // namespace

Bytes make_elf(const ElfSpec& spec) {
  if (spec.is_64bit) return build_elf<Elf64_Ehdr, Elf64_Phdr>(spec, ELFCLASS64, EM_X86_64);
  return build_elf<Elf32_Ehdr, Elf32_Phdr>(spec, ELFCLASS32, EM_386);
}

Bytes read_guest_bytes(const devices::GuestMemory& memory, std::uint64_t address, std::size_t size) {
  // GuestMemory::read hands an empty span's null data() to memcpy.
  if (size == 0) return {};
  Bytes bytes(size);
  EXPECT_TRUE(memory.read(address, bytes)) << "guest read at 0x" << std::hex << address;
  return bytes;
}

std::string read_guest_string(const devices::GuestMemory& memory, std::uint64_t address) {
  std::string text;
  for (std::uint64_t a = address;; ++a) {
    std::uint8_t c = 0;
    if (!memory.read_obj(a, c) || c == 0) break;
    text.push_back(static_cast<char>(c));
  }
  return text;
}

void expect_error(const std::function<void()>& action, const std::vector<std::string>& fragments) {
  try {
    action();
    ADD_FAILURE() << "expected vmm::Error mentioning '" << (fragments.empty() ? "" : fragments.front())
                  << "', nothing was thrown";
  } catch (const vmm::Error& error) {
    const std::string message = error.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "message '" << message << "' lacks '" << fragment << "'";
    }
  }
}

}  // namespace vmm::boot::test
