// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of <tmf/error.hpp>: tmf::errc, its error category, tmf::error.

#include <tmf/allocator.hpp>
#include <tmf/error.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace {

constexpr std::pair<tmf::errc, const char*> all_codes[] = {
    {tmf::errc::not_a_storage, "not a tmf storage"},
    {tmf::errc::incompatible_format, "incompatible storage format"},
    {tmf::errc::root_mismatch, "the storage holds another Root type"},
    {tmf::errc::address_unavailable, "the storage's address range is not available"},
    {tmf::errc::already_open, "already open"},
    {tmf::errc::read_only, "the storage is open read-only"},
    {tmf::errc::no_writer, "no active writer on this thread"},
    {tmf::errc::corrupted, "the storage is corrupted"},
    {tmf::errc::forked, "the storage was opened before fork()"},
    {tmf::errc::commit_unknown, "the commit's outcome is unknown until the storage is reopened"},
    {tmf::errc::needs_reopen, "the storage must be reopened after an I/O error"},
    {tmf::errc::too_many_processes, "too many processes have the storage open"},
};

TEST(ErrorCategory, NameIsTmf) { EXPECT_STREQ(tmf::error_category().name(), "tmf"); }

TEST(ErrorCategory, IsASingleton) { EXPECT_EQ(&tmf::error_category(), &tmf::error_category()); }

TEST(ErrorCategory, MessageOfEveryCode) {
  for (const auto& [code, text] : all_codes) {
    SCOPED_TRACE(static_cast<int>(code));
    EXPECT_EQ(tmf::error_category().message(static_cast<int>(code)), text);
    EXPECT_EQ(tmf::make_error_code(code).message(), text);
  }
}

TEST(ErrorCategory, MessagesAreDistinct) {
  for (const auto& [a, text_a] : all_codes) {
    for (const auto& [b, text_b] : all_codes) {
      if (a != b) {
        EXPECT_NE(tmf::make_error_code(a).message(), tmf::make_error_code(b).message());
      }
    }
  }
}

TEST(ErrorCategory, UnknownValue) {
  EXPECT_EQ(tmf::error_category().message(0), "unknown tmf error");
  EXPECT_EQ(tmf::error_category().message(9999), "unknown tmf error");
}

TEST(Errc, ValuesStartAtOne) {
  // 0 means "no error" for std::error_code: no tmf::errc may have it.
  EXPECT_EQ(static_cast<int>(tmf::errc::not_a_storage), 1);
  EXPECT_EQ(static_cast<int>(tmf::errc::forked), 9);
  EXPECT_EQ(static_cast<int>(tmf::errc::needs_reopen), 11);
  EXPECT_EQ(static_cast<int>(tmf::errc::too_many_processes), 12);
  EXPECT_TRUE(tmf::make_error_code(tmf::errc::not_a_storage));
}

TEST(Errc, IsAnErrorCodeEnum) {
  static_assert(std::is_error_code_enum_v<tmf::errc>);
  static_assert(std::is_error_code_enum<tmf::errc>::value);
  static_assert(!std::is_error_condition_enum_v<tmf::errc>);
  // The implicit conversion that is_error_code_enum enables.
  static_assert(std::is_convertible_v<tmf::errc, std::error_code>);
  const std::error_code ec = tmf::errc::read_only;
  EXPECT_EQ(ec.value(), static_cast<int>(tmf::errc::read_only));
  EXPECT_EQ(&ec.category(), &tmf::error_category());
}

TEST(Errc, MakeErrorCode) {
  static_assert(noexcept(tmf::make_error_code(tmf::errc::corrupted)));
  const std::error_code ec = tmf::make_error_code(tmf::errc::corrupted);
  EXPECT_EQ(ec.value(), static_cast<int>(tmf::errc::corrupted));
  EXPECT_EQ(ec.category(), tmf::error_category());
  // Found by argument-dependent lookup, as std::error_code's constructor does.
  EXPECT_EQ(make_error_code(tmf::errc::corrupted), ec);
}

TEST(Errc, Comparison) {
  const std::error_code ec = tmf::make_error_code(tmf::errc::no_writer);
  EXPECT_TRUE(ec == tmf::errc::no_writer);
  EXPECT_TRUE(tmf::errc::no_writer == ec);
  EXPECT_FALSE(ec == tmf::errc::forked);
  EXPECT_TRUE(ec != tmf::errc::forked);
  // Same value, other category: not equal.
  const std::error_code generic(static_cast<int>(tmf::errc::no_writer), std::generic_category());
  EXPECT_FALSE(generic == tmf::errc::no_writer);
  const std::error_code system(static_cast<int>(tmf::errc::no_writer), std::system_category());
  EXPECT_FALSE(system == tmf::errc::no_writer);
  // A default (success) code is no tmf error.
  EXPECT_FALSE(std::error_code() == tmf::errc::not_a_storage);
}

TEST(Error, IsASystemError) {
  static_assert(std::is_base_of_v<std::system_error, tmf::error>);
  static_assert(std::is_base_of_v<std::runtime_error, tmf::error>);
  try {
    throw tmf::error(tmf::errc::root_mismatch, "opening data.tmf");
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), tmf::errc::root_mismatch);
    EXPECT_EQ(&e.code().category(), &tmf::error_category());
    const std::string what = e.what();
    EXPECT_NE(what.find("opening data.tmf"), std::string::npos) << what;
    EXPECT_NE(what.find("the storage holds another Root type"), std::string::npos) << what;
    return;
  }
  FAIL() << "tmf::error was not caught as std::system_error";
}

TEST(Error, FromErrc) {
  const tmf::error e(tmf::errc::already_open, "some/file.tmf");
  EXPECT_EQ(e.code(), tmf::make_error_code(tmf::errc::already_open));
  EXPECT_NE(std::string(e.what()).find("some/file.tmf"), std::string::npos) << e.what();
}

TEST(Error, CarriesSystemErrors) {
  // OS failures keep their system code.
  const tmf::error e(std::error_code(ENOSPC, std::system_category()), "commit");
  EXPECT_EQ(e.code().value(), ENOSPC);
  EXPECT_EQ(e.code().category(), std::system_category());
#if !defined(_WIN32)  // on Windows errno values are not system (Win32) codes
  EXPECT_TRUE(e.code() == std::errc::no_space_on_device);
#endif
  EXPECT_FALSE(e.code() == tmf::errc::corrupted);
  EXPECT_NE(std::string(e.what()).find("commit"), std::string::npos) << e.what();
}

TEST(Error, CopyKeepsCodeAndMessage) {
  const tmf::error original(tmf::errc::corrupted, "free tree: block 0x1000 overlaps its neighbour");
  const tmf::error copy = original;  // NOLINT(performance-unnecessary-copy-initialization)
  EXPECT_EQ(copy.code(), original.code());
  EXPECT_STREQ(copy.what(), original.what());
}

// A message that already says what the code means does not get it appended again.
TEST(Error, SaysItOnce) {
  const tmf::error e(tmf::errc::no_writer, "tmf: something needs a writer: no active writer on this thread");
  const std::string what = e.what();
  const std::string m = tmf::make_error_code(tmf::errc::no_writer).message();
  ASSERT_NE(what.find(m), std::string::npos) << what;
  EXPECT_EQ(what.find(m), what.rfind(m)) << what;
  const tmf::error empty(tmf::errc::corrupted, "");
  EXPECT_EQ(std::string(empty.what()), tmf::make_error_code(tmf::errc::corrupted).message());
}

// The library's own refusal of an allocator without a writer says it once.
TEST(Error, LibraryMessagesSayItOnce) {
  const auto once = [](const tmf::error& e) {
    const std::string what = e.what();
    const std::string m = e.code().message();
    return what.find(m) != std::string::npos && what.find(m) == what.rfind(m);
  };
  try {
    tmf::allocator<int> a;
    FAIL() << "an allocator without a writer was constructed";
  } catch (const tmf::error& e) {
    EXPECT_TRUE(once(e)) << e.what();
  }
}

}  // namespace
