// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Helpers shared by storage_open_test.cpp and storage_txn_test.cpp: the Root type both use,
/// `throws_code` (expects a tmf::error with a given code) and `make_storage` (a small
/// committed file).
#ifndef TMF_TESTS_STORAGE_TEST_SUPPORT_HPP
#define TMF_TESTS_STORAGE_TEST_SUPPORT_HPP

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <system_error>

namespace tmf_test::storage_tests {

inline constexpr std::size_t page = 4096;

struct basic_root {
  std::uint64_t value = 0;
  tmf::vector<std::uint64_t> items;
  void* block = nullptr;
};

/// Succeeds if `f()` throws a tmf::error whose code equals `expected` (a tmf::errc or a std::errc).
template <class F, class Code>
::testing::AssertionResult throws_code(F&& f, Code expected) {
  using std::make_error_code;
  try {
    f();
  } catch (const tmf::error& e) {
    if (e.code() == expected) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "threw tmf::error " << e.code() << " (" << e.what() << "), expected "
                                         << make_error_code(expected) << " (" << make_error_code(expected).message()
                                         << ")";
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw; expected " << make_error_code(expected);
}

/// Creates a storage at `p` holding `value` and one item, committed; closes it. Returns its address.
inline void* make_storage(const std::filesystem::path& p, std::uint64_t value = 7, const tmf::options& opt = {}) {
  tmf::storage<basic_root> s(p, opt);
  auto w = s.write();
  w->value = value;
  w->items.push_back(value * 10);
  w.commit();
  return s.address();
}

}  // namespace tmf_test::storage_tests

#endif  // TMF_TESTS_STORAGE_TEST_SUPPORT_HPP
