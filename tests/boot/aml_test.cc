#include "vmm/boot/aml.h"

#include <gtest/gtest.h>

#include "tests/boot/aml_reader.h"
#include "tests/boot/test_support.h"

namespace vmm::boot::aml {
namespace {

using test::expect_error;

TEST(AmlPkgLength, OneByteUpTo62BytesOfBody) {
  EXPECT_EQ(pkg_length(0), Bytes({0x01}));
  EXPECT_EQ(pkg_length(10), Bytes({0x0B}));
  EXPECT_EQ(pkg_length(62), Bytes({0x3F}));
}

TEST(AmlPkgLength, TwoBytesCountThemselves) {
  // 63 bytes of body + 2 bytes of PkgLength = 65 = 0x41.
  EXPECT_EQ(pkg_length(63), Bytes({0x41, 0x04}));
  // The largest two-byte value is 0xFFF.
  EXPECT_EQ(pkg_length(0xFFF - 2), Bytes({0x4F, 0xFF}));
}

TEST(AmlPkgLength, ThreeAndFourBytes) {
  // 0xFFE + 3 = 0x1001.
  EXPECT_EQ(pkg_length(0xFFE), Bytes({0x81, 0x00, 0x01}));
  // 0xFFFFF - 3 + 3 = 0xFFFFF still fits three bytes; one more needs four.
  EXPECT_EQ(pkg_length(0xFFFFF - 3), Bytes({0x8F, 0xFF, 0xFF}));
  EXPECT_EQ(pkg_length(0xFFFFF - 2), Bytes({0xC1, 0x00, 0x00, 0x01}));
  expect_error([] { pkg_length(0x1000'0000); }, {"28-bit"});
}

// The encodings of the ACPI specification's grammar (MethodOp 0x14 with its
// flags byte, StoreOp 0x70, Arg0Op 0x68, IfOp 0xA0, ReturnOp 0xA4), by hand.
TEST(AmlMethod, StatementsEncodeAsTheGrammarSays) {
  EXPECT_EQ(method("\\_PIC", 1, {store(arg(0), "\\PICM")}),
            Bytes({0x14, 0x0E, '\\', '_', 'P', 'I', 'C', 0x01, 0x70, 0x68, '\\', 'P', 'I', 'C', 'M'}));
  EXPECT_EQ(if_then(reference("PICM"), {return_value(reference("PRTA"))}),
            Bytes({0xA0, 0x0A, 'P', 'I', 'C', 'M', 0xA4, 'P', 'R', 'T', 'A'}));
  EXPECT_EQ(arg(6), Bytes({0x6E}));
  expect_error([] { arg(7); }, {"Arg7"});
  expect_error([] { method("M", 8, {}); }, {"8 arguments"});
}

TEST(AmlMethod, TheIndependentReaderDecodesWhatWasBuilt) {
  const Bytes aml = concat({name("\\PICM", integer(0)), method("\\_PIC", 1, {store(arg(0), "\\PICM")}),
                            method("_PRT", 0, {if_then(reference("\\PICM"), {return_value(reference("PRTA"))}),
                                               return_value(integer(7))})});
  const auto terms = test::parse_aml(aml);
  ASSERT_EQ(terms.size(), 3u);
  const test::AmlObject* pic = test::find_method(terms, "\\_PIC");
  ASSERT_NE(pic, nullptr);
  EXPECT_EQ(pic->value, 1u) << "one argument";
  ASSERT_EQ(pic->children.size(), 1u);
  EXPECT_EQ(pic->children[0].kind, test::AmlObject::Kind::store);
  EXPECT_EQ(pic->children[0].children.at(0).kind, test::AmlObject::Kind::arg);
  EXPECT_EQ(pic->children[0].children.at(1).name, "\\PICM");
  const test::AmlObject* prt = test::find_method(terms, "_PRT");
  ASSERT_NE(prt, nullptr);
  ASSERT_EQ(prt->children.size(), 2u);
  const test::AmlObject& if_statement = prt->children[0];
  EXPECT_EQ(if_statement.kind, test::AmlObject::Kind::if_);
  ASSERT_EQ(if_statement.children.size(), 2u) << "predicate, then one statement";
  EXPECT_EQ(if_statement.children[0].name, "\\PICM");
  EXPECT_EQ(if_statement.children[1].children.at(0).name, "PRTA");
  EXPECT_EQ(prt->children[1].kind, test::AmlObject::Kind::return_);
  EXPECT_EQ(prt->children[1].children.at(0).value, 7u);
}

TEST(AmlNameString, SegmentsArePaddedAndPrefixed) {
  EXPECT_EQ(name_string("_S5"), Bytes({'_', 'S', '5', '_'}));
  EXPECT_EQ(name_string("\\_SB"), Bytes({'\\', '_', 'S', 'B', '_'}));
  EXPECT_EQ(name_string("\\_SB.COM1"), Bytes({'\\', 0x2E, '_', 'S', 'B', '_', 'C', 'O', 'M', '1'}));
  EXPECT_EQ(name_string("A.B.C"), Bytes({0x2F, 3, 'A', '_', '_', '_', 'B', '_', '_', '_', 'C', '_', '_', '_'}));
}

TEST(AmlNameString, RejectsInvalidNames) {
  expect_error([] { name_string("1ABC"); }, {"invalid AML name segment"});
  expect_error([] { name_string("TOOLONG"); }, {"invalid AML name segment"});
  expect_error([] { name_string("ab"); }, {"invalid AML name segment"});
  expect_error([] { name_string(""); }, {"empty AML name"});
  expect_error([] { name_string("\\_SB..X"); }, {"invalid AML name segment"});
}

TEST(AmlInteger, ShortestEncoding) {
  EXPECT_EQ(integer(0), Bytes({0x00}));
  EXPECT_EQ(integer(1), Bytes({0x01}));
  EXPECT_EQ(integer(5), Bytes({0x0A, 0x05}));
  EXPECT_EQ(integer(0x3F8), Bytes({0x0B, 0xF8, 0x03}));
  EXPECT_EQ(integer(0xFED00000), Bytes({0x0C, 0x00, 0x00, 0xD0, 0xFE}));
  EXPECT_EQ(integer(0x1'0000'0000), Bytes({0x0E, 0, 0, 0, 0, 1, 0, 0, 0}));
}

TEST(AmlString, NulTerminatedAsciiOnly) {
  EXPECT_EQ(string("QEMU0001"), Bytes({0x0D, 'Q', 'E', 'M', 'U', '0', '0', '0', '1', 0}));
  EXPECT_EQ(string(""), Bytes({0x0D, 0}));
  EXPECT_THROW(string(std::string("a\0b", 3)), Error);
  EXPECT_THROW(string("\xC3\xA9"), Error);
}

TEST(AmlEisaId, CompressesVendorAndProduct) {
  EXPECT_EQ(eisa_id("PNP0501"), Bytes({0x0C, 0x41, 0xD0, 0x05, 0x01}));
  EXPECT_EQ(eisa_id("PNP0B00"), Bytes({0x0C, 0x41, 0xD0, 0x0B, 0x00}));
  EXPECT_EQ(test::decode_eisa_id(0x0301D041), "PNP0103");
  expect_error([] { eisa_id("pnp0501"); }, {"invalid EISA ID"});
  expect_error([] { eisa_id("PNP05"); }, {"invalid EISA ID"});
  expect_error([] { eisa_id("PNP05G1"); }, {"invalid EISA ID"});
}

TEST(AmlTerms, NamePackageEncoding) {
  // Name (_S5, Package (4) {5, 5, 0, 0}) as a compiler would emit it.
  const Bytes s5 = name("_S5", package({integer(5), integer(5), integer(0), integer(0)}));
  EXPECT_EQ(s5, Bytes({0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00}));
}

TEST(AmlTerms, ResourceTemplateDescriptors) {
  const Bytes crs = ResourceTemplate().io(0x3F8, 8).irq(4).buffer();
  EXPECT_EQ(crs, Bytes({0x11, 0x10, 0x0A, 0x0D,                          // Buffer, PkgLength, size 13
                        0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08,  // IO (Decode16, 0x3F8, 0x3F8, 1, 8)
                        0x22, 0x10, 0x00,                                // IRQNoFlags () {4}
                        0x79, 0x00}));                                   // End Tag
  const Bytes mem = ResourceTemplate().memory32_fixed(0xFED00000, 0x400).buffer();
  const auto objects = test::parse_aml(name("_CRS", mem));
  const auto resources = test::parse_resources(objects.at(0).children.at(0).data);
  ASSERT_EQ(resources.size(), 1u);
  EXPECT_EQ(resources[0].kind, test::AmlResource::Kind::memory32_fixed);
  EXPECT_EQ(resources[0].base, 0xFED00000u);
  EXPECT_EQ(resources[0].length, 0x400u);
  expect_error([] { ResourceTemplate().irq(16); }, {"IRQ 16"});
}

TEST(AmlTerms, NestedDeviceRoundTripsThroughAnIndependentDecoder) {
  // Enough devices to push the scope past the one-byte PkgLength limit.
  std::vector<Bytes> devices;
  for (int i = 0; i < 20; ++i) {
    devices.push_back(device("DV" + std::to_string(10 + i),
                             {name("_HID", eisa_id("PNP0C02")), name("_UID", integer(static_cast<unsigned>(i)))}));
  }
  const Bytes aml = scope("\\_SB", devices);
  const auto terms = test::parse_aml(aml);
  ASSERT_EQ(terms.size(), 1u);
  EXPECT_EQ(terms[0].kind, test::AmlObject::Kind::scope);
  EXPECT_EQ(terms[0].name, "\\_SB_");
  ASSERT_EQ(terms[0].children.size(), 20u);
  EXPECT_EQ(terms[0].children[19].name, "DV29");
  const test::AmlObject* uid = test::find_name(terms[0].children[19].children, "_UID");
  ASSERT_NE(uid, nullptr);
  EXPECT_EQ(uid->value, 19u);
}

}  // namespace
}  // namespace vmm::boot::aml
