// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/schema.hpp and the Root check at open: the structural fingerprint
// (stable across compilers, different after each kind of layout change, equal where the
// layout is the same), the refusal of a changed nested type with the file untouched (two
// programs, tests/schema/program.cpp, whose `inner` differs while the Root's name and size
// do not), readable messages, and files of an older format version refused.
// The compile-time refusals are ctest entries schema_refuses.* (tests/schema/refuse.cpp).
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <unistd.h>

#include "test_support.hpp"

namespace schema_test_types {

// A fixed type whose fingerprint is a constant: the same with GCC and Clang (both builds run
// this test), so a file written by one opens with the other.
struct point {
  std::int32_t x;
  std::int32_t y;
};
struct stable_root {
  std::uint32_t a = 0;
  std::uint64_t b = 0;
  tmf::vector<point> points;
  std::array<std::int16_t, 3> c{};
  tmf::map<tmf::string, tmf::vector<std::uint8_t>> index;
};

// Kinds of change, each against `base` (a Root) or `nested_base` (the same change one level
// down, inside a tmf::vector's element type).
struct base {
  std::int32_t x;
  std::int32_t y;
  double z;
};
struct same_as_base {  // another name, the same layout: an aggregate is known by its members
  std::int32_t a;
  std::int32_t b;
  double c;
};
struct member_added {
  std::int32_t x;
  std::int32_t y;
  double z;
  std::int32_t w;
};
struct member_removed {
  std::int32_t x;
  double z;
};
struct member_reordered {
  double z;
  std::int32_t x;
  std::int32_t y;
};
struct member_retyped_same_size {
  std::int32_t x;
  float y;
  double z;
};
struct member_retyped_wider {
  std::int32_t x;
  std::int64_t y;
  double z;
};
struct member_realigned {
  std::int32_t x;
  alignas(16) std::int32_t y;
  double z;
};
struct member_array_longer {
  std::int32_t x[2];
  std::int32_t y;
  double z;
};
struct member_array_shorter {
  std::int32_t x[1];
  std::int32_t y;
  double z;
};
struct names_swapped {  // x and y swapped: same types at the same offsets
  std::int32_t y;
  std::int32_t x;
  double z;
};

template <class Inner>
struct in_vector {
  tmf::vector<Inner> v;
};
template <class Inner>
struct in_map_value {
  tmf::map<std::uint32_t, Inner> m;
};
template <class Inner>
struct in_aggregate {
  std::uint64_t n;
  Inner inner;
};
template <class Inner>
struct in_array {
  std::array<Inner, 2> a;
};
template <class Inner>
struct in_pair_tuple_optional {
  std::pair<int, Inner> p;
  std::tuple<Inner, char> t;
  std::optional<Inner> o;
};

/// A class that is not an aggregate: seen by name, size and alignment only.
class opaque {
 public:
  opaque() = default;
  int value() const { return m_v; }

 private:
  int m_v = 0;
};
struct holds_opaque {
  tmf::vector<opaque> items;
};

struct versioned {
  std::int32_t x;
};
struct holds_versioned {
  tmf::vector<versioned> items;
};

struct phantom_tag;  // never defined
template <class Tag>
class strong_id {
 public:
  strong_id() = default;
  std::uint64_t value = 0;
};
struct holds_phantom {
  strong_id<phantom_tag> id;
  tmf::vector<strong_id<phantom_tag>> ids;
};

struct tree {
  std::int32_t value = 0;
  tmf::vector<tree> children;
  tree* parent = nullptr;
};

}  // namespace schema_test_types

namespace {

using namespace schema_test_types;  // NOLINT(google-build-using-namespace)
using tmf::detail::structure_hash;
using tmf_test::scoped_path;

std::string hex(std::uint64_t v) { return tmf::detail::fingerprint_hex(v); }

TEST(SchemaFingerprint, StableConstantAcrossCompilers) {
  // If this changes, files written by earlier builds are refused: bump format_version or
  // keep the walk's encoding.
#if defined(_WIN32)
  // LLP64: std::uint64_t is "unsigned long long" there, and the walk encodes fundamental types
  // by name: a Root with such members has another fingerprint than on Linux (README, "Windows").
  constexpr std::uint64_t expected = 0x5f25fc1082a75facULL;  // x86-64 Windows, mingw-w64 GCC 12
#elif UINTPTR_MAX > 0xffffffffu
  constexpr std::uint64_t expected = 0x51976ed7aea6319cULL;  // x86-64, GCC 12 and Clang 14
#else
  constexpr std::uint64_t expected = 0x89d17a90992ea968ULL;  // x86 (-m32), GCC 12 and Clang 14
#endif
  EXPECT_EQ(hex(tmf::schema_fingerprint<stable_root>()), hex(expected))
      << "the fingerprint of a fixed type changed (compiler: " << __VERSION__ << "); its layout is "
      << tmf::schema_layout<stable_root>();
}

TEST(SchemaFingerprint, SameLayoutSameFingerprint) {
  EXPECT_EQ(hex(structure_hash<base>()), hex(structure_hash<same_as_base>()))
      << "aggregates with the same members under other names must have the same structure";
  EXPECT_EQ(hex(structure_hash<in_vector<base>>()), hex(structure_hash<in_vector<base>>()));
  EXPECT_EQ(hex(tmf::schema_fingerprint<stable_root>()), hex(tmf::schema_fingerprint<stable_root>()));
  EXPECT_NE(hex(tmf::schema_fingerprint<base>()), hex(tmf::schema_fingerprint<same_as_base>()))
      << "the Root's own name is part of the stored fingerprint";
}

template <template <class> class Wrap>
void expect_each_change_detected(const char* where) {
  SCOPED_TRACE(where);
  const std::uint64_t b = structure_hash<Wrap<base>>();
  ASSERT_EQ(hex(b), hex(structure_hash<Wrap<same_as_base>>())) << "the control: same layout, same hash";
  struct change {
    const char* what;
    std::uint64_t hash;
  };
  const change changes[] = {
      {"member added", structure_hash<Wrap<member_added>>()},
      {"member removed", structure_hash<Wrap<member_removed>>()},
      {"members reordered", structure_hash<Wrap<member_reordered>>()},
      {"member retyped, same size (int32 -> float)", structure_hash<Wrap<member_retyped_same_size>>()},
      {"member retyped, wider (int32 -> int64)", structure_hash<Wrap<member_retyped_wider>>()},
      {"member realigned (alignas(16))", structure_hash<Wrap<member_realigned>>()},
      {"C array member longer", structure_hash<Wrap<member_array_longer>>()},
      {"C array member shorter", structure_hash<Wrap<member_array_shorter>>()},
  };
  for (const change& c : changes) EXPECT_NE(hex(c.hash), hex(b)) << c.what << " not detected " << where;
  for (std::size_t i = 0; i < std::size(changes); ++i)
    for (std::size_t j = i + 1; j < std::size(changes); ++j)
      EXPECT_NE(hex(changes[i].hash), hex(changes[j].hash)) << changes[i].what << " vs " << changes[j].what;
}

template <class T>
using itself = T;

TEST(SchemaFingerprint, EachKindOfChangeInRoot) { expect_each_change_detected<itself>("in Root"); }
TEST(SchemaFingerprint, EachKindOfChangeInVectorElement) { expect_each_change_detected<in_vector>("in tmf::vector<T>"); }
TEST(SchemaFingerprint, EachKindOfChangeInMapValue) { expect_each_change_detected<in_map_value>("in tmf::map<K, T>"); }
TEST(SchemaFingerprint, EachKindOfChangeInNestedAggregate) {
  expect_each_change_detected<in_aggregate>("in a member aggregate");
}
TEST(SchemaFingerprint, EachKindOfChangeInStdArray) { expect_each_change_detected<in_array>("in std::array<T, 2>"); }
TEST(SchemaFingerprint, EachKindOfChangeInPairTupleOptional) {
  expect_each_change_detected<in_pair_tuple_optional>("in std::pair, std::tuple, std::optional");
}

TEST(SchemaFingerprint, WhatItCannotSee) {
  // Documented limits (README, "Changing your Root"): swapping two members of the same type
  // keeps the layout; a class that is not an aggregate is seen by name, size and alignment.
  EXPECT_EQ(hex(structure_hash<base>()), hex(structure_hash<names_swapped>()));
}

}  // namespace

template <>
struct tmf::schema_version<schema_test_types::versioned> : std::integral_constant<std::uint32_t, 1> {};
template <>
struct tmf::schema_version<schema_test_types::opaque> : std::integral_constant<std::uint32_t, 7> {};

namespace {

TEST(SchemaFingerprint, SchemaVersionIsPartOfIt) {
  // `versioned` and `same_layout` (below) differ only by tmf::schema_version.
  struct same_layout {
    std::int32_t x;
  };
  EXPECT_NE(hex(structure_hash<versioned>()), hex(structure_hash<same_layout>()))
      << "a specialised tmf::schema_version must change the fingerprint";
  EXPECT_NE(hex(structure_hash<tmf::vector<versioned>>()), hex(structure_hash<tmf::vector<same_layout>>()));
  EXPECT_NE(tmf::schema_layout<holds_opaque>().find("version 7"), std::string::npos)
      << "the layout text shows the version: " << tmf::schema_layout<holds_opaque>();
}

TEST(SchemaFingerprint, RecursiveTypesTerminate) {
  const std::string layout = tmf::schema_layout<tree>();
  EXPECT_NE(layout.find("(recursive)"), std::string::npos) << layout;
  EXPECT_NE(structure_hash<tree>(), 0u);
}

TEST(SchemaFingerprint, IncompleteTemplateArgumentsAreSeenByName) {
  const std::string layout = tmf::schema_layout<holds_phantom>();
  EXPECT_NE(layout.find("schema_test_types::strong_id<schema_test_types::phantom_tag> (8 B)"), std::string::npos)
      << layout;
}

TEST(SchemaFingerprint, LayoutTextIsDemangled) {
  const std::string layout = tmf::schema_layout<in_vector<base>>();
  EXPECT_NE(layout.find("schema_test_types::in_vector<schema_test_types::base>"), std::string::npos) << layout;
  EXPECT_NE(layout.find("@8 double"), std::string::npos) << "members with their offsets: " << layout;
}

// -- at open ---------------------------------------------------------------------------------

/// The directory of this test executable, where tests/CMakeLists.txt puts schema_program_v*.
std::filesystem::path program(const char* name) {
#if defined(_WIN32)
  wchar_t exe[4096];
  const DWORD n = ::GetModuleFileNameW(nullptr, exe, 4096);
  return std::filesystem::path(std::wstring(exe, n)).parent_path() / (std::string(name) + ".exe");
#else
  return std::filesystem::read_symlink("/proc/self/exe").parent_path() / name;
#endif
}

/// Runs `cmd`, returns its exit code and puts its standard output in `out`.
int run(const std::string& cmd, std::string& out) {
  out.clear();
#if defined(_WIN32)
  FILE* f = ::_popen(cmd.c_str(), "rb");
#else
  FILE* f = ::popen(cmd.c_str(), "r");
#endif
  if (f == nullptr) return -1;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, f)) out.append(buf, n);
#if defined(_WIN32)
  std::erase(out, '\r');  // the programs' stdout is in text mode: "\r\n" line ends
  return ::_pclose(f);  // the exit code
#else
  const int status = ::pclose(f);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
#endif
}

TEST(SchemaAtOpen, NestedFieldAddedIsRefusedAndFileUntouched) {
  scoped_path p;
  const std::string v1 = program("schema_program_v1").string(), v2 = program("schema_program_v2").string();
  ASSERT_TRUE(std::filesystem::exists(v1)) << v1;
  ASSERT_TRUE(std::filesystem::exists(v2)) << v2;
  std::string out, fp1, fp2;
  ASSERT_EQ(run(v1 + " fingerprint", fp1), 0);
  ASSERT_EQ(run(v2 + " fingerprint", fp2), 0);
  ASSERT_NE(fp1, fp2) << "inner gained a member: the fingerprints must differ";
  ASSERT_EQ(run(v1 + " create " + p.path().string(), out), 0) << out;
  const std::vector<char> data = tmf_test::read_bytes(p.path()), log = tmf_test::read_bytes(p.log());

  EXPECT_EQ(run(v2 + " open " + p.path().string(), out), 3)
      << "the program with the changed nested type must get root_mismatch; it printed: " << out;
  EXPECT_NE(out.find("schema_program::docs_root"), std::string::npos) << "the demangled Root name: " << out;
  EXPECT_EQ(out.find("N14schema_program"), std::string::npos) << "no mangled names: " << out;
  EXPECT_NE(out.find("0x" + fp1.substr(0, 16)), std::string::npos) << "the stored fingerprint " << fp1 << ": " << out;
  EXPECT_NE(out.find("0x" + fp2.substr(0, 16)), std::string::npos) << "the expected fingerprint " << fp2 << ": " << out;
  EXPECT_NE(out.find("@8 unsigned long"), std::string::npos) << "the program's layout, new member included: " << out;
  EXPECT_TRUE(data == tmf_test::read_bytes(p.path())) << "the refused open modified the data file";
  EXPECT_TRUE(log == tmf_test::read_bytes(p.log())) << "the refused open modified the log";

  EXPECT_EQ(run(v1 + " open " + p.path().string(), out), 0) << out;  // the right program still opens it
  EXPECT_EQ(out, "3\n");
}

TEST(SchemaAtOpen, OtherRootTypeNamedDemangled) {
  scoped_path p;
  {
    tmf::storage<in_vector<base>> s(p.path());
  }
  const std::vector<char> before = tmf_test::read_bytes(p.path());
  try {
    tmf::storage<in_vector<member_added>> s(p.path());
    ADD_FAILURE() << "a Root whose vector element gained a member was accepted";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::root_mismatch) << e.what();
    const std::string m = e.what();
    EXPECT_NE(m.find("'schema_test_types::in_vector<schema_test_types::base>'"), std::string::npos) << m;
    EXPECT_NE(m.find("'schema_test_types::in_vector<schema_test_types::member_added>'"), std::string::npos) << m;
    EXPECT_NE(m.find(hex(tmf::schema_fingerprint<in_vector<base>>())), std::string::npos) << m;
    EXPECT_NE(m.find(hex(tmf::schema_fingerprint<in_vector<member_added>>())), std::string::npos) << m;
  }
  EXPECT_TRUE(before == tmf_test::read_bytes(p.path())) << "the refused open modified the file";
  EXPECT_NO_THROW(tmf::storage<in_vector<base>> s(p.path()));
}

TEST(SchemaAtOpen, OlderFormatVersionFilesRefusedClearly) {
  scoped_path p;
  {
    tmf::storage<base> s(p.path());
  }
  {
    std::vector<char> bytes = tmf_test::read_bytes(p.path());
    tmf::detail::file_header h;
    std::memcpy(&h, bytes.data(), sizeof h);
    h.version = 3;  // before the heap's size-class runs
    tmf::detail::seal_header(h);
    std::memcpy(bytes.data(), &h, sizeof h);
    std::FILE* f = std::fopen(p.path().string().c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
    std::fclose(f);
  }
  try {
    tmf::storage<base> s(p.path());
    ADD_FAILURE() << "a format version 3 file was accepted";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::incompatible_format) << e.what();
    EXPECT_NE(std::string(e.what()).find("format version 3, this build reads version " +
                                             std::to_string(tmf::detail::format_version)), std::string::npos)
        << e.what();
  }
}

}  // namespace
