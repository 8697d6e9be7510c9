// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Error reporting: `tmf::errc`, its `std::error_category`, and `tmf::error`.
#ifndef TMF_ERROR_HPP
#define TMF_ERROR_HPP

#include <stdexcept>
#include <string>
#include <system_error>

namespace tmf {

/// Every condition tmf itself reports. OS failures keep their `std::system_category()` code.
enum class errc {
  not_a_storage = 1,    ///< the file is not a tmf storage (bad magic, empty, garbage)
  incompatible_format,  ///< format version, word size, endianness, page size or user magic differ
  root_mismatch,        ///< the file was created for another Root type (size, alignment or name)
  address_unavailable,  ///< the fixed address range is occupied in this process
  already_open,         ///< the file is already open in this process, or this thread already holds a transaction
  read_only,            ///< a write was requested on a storage opened with open_mode::read_only
  no_writer,            ///< an allocator was needed but this thread has no active writer
  corrupted,            ///< an audit or recovery found inconsistent data
  forked,               ///< the storage was opened by the parent process before fork()
  /// commit() could not tell whether its commit is in the files (its log sync failed, and so
  /// did voiding the record): the next open settles it, the same way for every process. No
  /// write is possible on this storage object until it is reopened.
  commit_unknown,
  /// An I/O error after a commit point left the files in a state this process could not
  /// repair; every commit that returned is durable and a reopen recovers it.
  needs_reopen,
  /// Every block of the storage's reader table (`<path>-lock`) is taken by another process.
  too_many_processes,
};

namespace detail {
class error_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "tmf"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::not_a_storage: return "not a tmf storage";
      case errc::incompatible_format: return "incompatible storage format";
      case errc::root_mismatch: return "the storage holds another Root type";
      case errc::address_unavailable: return "the storage's address range is not available";
      case errc::already_open: return "already open";
      case errc::read_only: return "the storage is open read-only";
      case errc::no_writer: return "no active writer on this thread";
      case errc::corrupted: return "the storage is corrupted";
      case errc::forked: return "the storage was opened before fork()";
      case errc::commit_unknown: return "the commit's outcome is unknown until the storage is reopened";
      case errc::needs_reopen: return "the storage must be reopened after an I/O error";
      case errc::too_many_processes: return "too many processes have the storage open";
    }
    return "unknown tmf error";
  }
};
}  // namespace detail

/// The category of `tmf::errc` codes; its name() is "tmf".
inline const std::error_category& error_category() noexcept {
  static const detail::error_category_impl category;
  return category;
}

/// Makes `std::error_code{e, tmf::error_category()}`; found by ADL.
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// Every failure tmf reports, other than `std::bad_alloc`.
/// `code()` is a `tmf::errc` or the system error that caused it.
class error : public std::system_error {
 public:
  /// what() is `what`, then ": " and the code's message, unless `what` says it already.
  error(std::error_code ec, const std::string& what) : std::system_error(ec, what), m_what(compose(ec, what)) {}
  error(errc e, const std::string& what) : error(make_error_code(e), what) {}
  const char* what() const noexcept override { return m_what.what(); }

 private:
  static std::string compose(std::error_code ec, const std::string& what) {
    const std::string m = ec.message();
    if (what.empty()) return m;
    if (what.find(m) != std::string::npos) return what;  // said once
    return what + ": " + m;
  }
  std::runtime_error m_what;  ///< a reference-counted string: copies never throw
};

namespace detail {
/// Throws `tmf::error` for the system error `ec`: "tmf: <what>: <ec's message>".
[[noreturn]] inline void throw_os(std::error_code ec, const std::string& what) {
  throw error(ec, "tmf: " + what);  // system_error appends ": " + ec.message()
}
}  // namespace detail

}  // namespace tmf

template <>
struct std::is_error_code_enum<tmf::errc> : std::true_type {};

#endif  // TMF_ERROR_HPP
