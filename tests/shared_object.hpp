// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// An object in a file beside the test's storage, mapped shared by the test and its child
/// processes. A Windows child is a new program, not a fork: it maps the file by name
/// (attach_shared<T>(path())), so anonymous shared memory would not reach it.
#ifndef TMF_TESTS_SHARED_OBJECT_HPP
#define TMF_TESTS_SHARED_OBJECT_HPP

#include <filesystem>
#include <new>
#include <string>
#include <string_view>
#include <system_error>

#include <tmf/detail/os.hpp>

#include "test_support.hpp"

namespace tmf_test {

/// Maps the file of a shared_object<T> in a child; the mapping lasts as long as the process.
template <class T>
T& attach_shared(const std::filesystem::path& p) {
  namespace os = tmf::detail::os;
  os::file f;
  void* m = nullptr;
  if (auto ec = os::open_file(p, os::access::read_write, f)) throw std::system_error(ec, "open " + p.string());
  if (auto ec = os::map_shared_rw(f, sizeof(T), m)) throw std::system_error(ec, "map " + p.string());
  return *static_cast<T*>(m);
}

/// The test's T, value-initialised in a new file named after the test and `tag`.
template <class T>
class shared_object {
 public:
  explicit shared_object(std::string_view tag = "shared") : m_path(test_path(tag)) {
    namespace os = tmf::detail::os;
    remove_file(m_path);
    os::file f;
    void* m = nullptr;
    if (auto ec = os::create_file(m_path, f)) throw std::system_error(ec, "create " + m_path.string());
    // A POSIX shared mapping does not extend the file: its bytes must exist.
    if (auto ec = os::allocate(f, 0, sizeof(T))) throw std::system_error(ec, "size " + m_path.string());
    if (auto ec = os::map_shared_rw(f, sizeof(T), m)) throw std::system_error(ec, "map " + m_path.string());
    m_object = ::new (m) T{};
  }
  ~shared_object() {
    tmf::detail::os::release(m_object, sizeof(T));
    remove_file(m_path);
  }
  shared_object(const shared_object&) = delete;
  shared_object& operator=(const shared_object&) = delete;
  T* operator->() const noexcept { return m_object; }
  T& operator*() const noexcept { return *m_object; }
  /// For a child: attach_shared<T>(path()).
  child_path path() const { return m_path; }

 private:
  std::filesystem::path m_path;
  T* m_object;
};

}  // namespace tmf_test

#endif  // TMF_TESTS_SHARED_OBJECT_HPP
