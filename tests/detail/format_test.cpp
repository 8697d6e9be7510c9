// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/detail/format.hpp (the data-file header) and detail/checksum.hpp.
#include <tmf/detail/checksum.hpp>
#include <tmf/detail/format.hpp>
#include <tmf/schema.hpp>

#include <gtest/gtest.h>

#include <string>

namespace {

using namespace tmf::detail;

TEST(Checksum, MatchesXxHash64KnownAnswers) {
  // Published XXH64 test vectors (seed 0): the construction is the standard one.
  EXPECT_EQ(checksum("", 0), 0xEF46DB3751D8E999ULL);
  EXPECT_EQ(checksum("a", 1), 0xD24EC4F1A98C6E5BULL);
  EXPECT_EQ(checksum("abc", 3), 0x44BC2CF5AD770999ULL);
  const std::string fox = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(checksum(fox.data(), fox.size()), 0x0B242D361FDA71BCULL);
}

TEST(Checksum, SeedAndEveryByteMatter) {
  std::string s(4096, 'x');
  const auto h = checksum(s.data(), s.size());
  EXPECT_NE(h, checksum(s.data(), s.size(), 1)) << "seed ignored";
  for (std::size_t i : {0u, 31u, 32u, 4000u, 4095u}) {
    std::string t = s;
    t[i] ^= 1;
    EXPECT_NE(checksum(t.data(), t.size()), h) << "flip at byte " << i << " not detected";
  }
}

struct root_a {
  int x;
};
struct root_b {
  int y;
};

file_header make(std::uint64_t magic = 7) {
  file_header h;
  init_header(h, 0x1234, 0x600000000000, std::uint64_t{64} << 30, magic, fingerprint_of<root_a>());
  seal_header(h);
  return h;
}

TEST(Format, FreshHeaderValidates) {
  file_header h = make();
  EXPECT_NO_THROW(validate_header_format(h, "f"));
  EXPECT_NO_THROW(validate_header_identity(h, "f", 7, fingerprint_of<root_a>()));
  EXPECT_EQ(h.arena_size, page_size);
  EXPECT_EQ(h.root, 0u);
}

template <class Mutate>
std::error_code format_error(Mutate m, bool reseal = true) {
  file_header h = make();
  m(h);
  if (reseal) seal_header(h);
  try {
    validate_header_format(h, "f");
  } catch (const tmf::error& e) {
    return e.code();
  }
  return {};
}

TEST(Format, EachIdentityFieldIsChecked) {
  EXPECT_EQ(format_error([](file_header& h) { h.magic[0] = 'x'; }), tmf::errc::not_a_storage);
  EXPECT_EQ(format_error([](file_header& h) { h.version = 99; }), tmf::errc::incompatible_format);
  EXPECT_EQ(format_error([](file_header& h) { h.word_size = 2; }), tmf::errc::incompatible_format);
  EXPECT_EQ(format_error([](file_header& h) { h.page_size = 16384; }), tmf::errc::incompatible_format);
  EXPECT_EQ(format_error([](file_header& h) { h.byte_order = 0x04030201; }), tmf::errc::incompatible_format);
  EXPECT_EQ(format_error([](file_header& h) { h.txn = 5; }, false), tmf::errc::corrupted) << "checksum not checked";
  EXPECT_EQ(format_error([](file_header& h) { h.arena_size = 100; }), tmf::errc::corrupted);
  EXPECT_EQ(format_error([](file_header& h) { h.arena_size = h.max_size + page_size; }), tmf::errc::corrupted);
  EXPECT_EQ(format_error([](file_header& h) { h.address = 0; }), tmf::errc::corrupted) << "address 0 accepted";
  EXPECT_EQ(format_error([](file_header& h) { h.max_size += 100; }), tmf::errc::corrupted)
      << "max_size off the page grid accepted";
  EXPECT_EQ(format_error([](file_header& h) { h.root_align = 3; }), tmf::errc::corrupted);
}

TEST(Format, UserMagicAndRootFingerprintAreChecked) {
  file_header h = make();
  try {
    validate_header_identity(h, "f", 8, fingerprint_of<root_a>());
    ADD_FAILURE() << "wrong user magic accepted";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::incompatible_format);
  }
  try {
    validate_header_identity(h, "f", 7, fingerprint_of<root_b>());
    ADD_FAILURE() << "wrong Root type accepted";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::root_mismatch);
    EXPECT_NE(std::string(e.what()).find("root_a"), std::string::npos) << "message should name the stored type: "
                                                                         << e.what();
  }
  EXPECT_NE(type_name<root_a>(), type_name<root_b>());
  EXPECT_EQ(type_name<root_a>(), type_name<root_a>());
}

TEST(Format, HeaderFitsInOneSector) { EXPECT_LE(sizeof(file_header), 512u); }

}  // namespace
