// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The operating-system layer's contract: the portable types and the list of functions that
/// exactly one implementation provides, os_posix.hpp (Linux) or os_win32.hpp (Windows,
/// chosen by `_WIN32`). Only those two headers make system calls, and this is the only place
/// that chooses between them: no other header tests the platform.
///
/// Rules every implementation keeps:
///  - every function returns a `std::error_code`: empty on success, the system's error
///    otherwise; it never throws, never allocates unless it says so, and restarts on EINTR;
///    the errors other layers test for (file_exists, no_such_file_or_directory,
///    resource_unavailable_try_again, timed_out, not_supported, ...) compare equal to their
///    `std::errc` on both systems;
///  - the types are portable: `file` (an owned handle), `buffer` (bytes to write),
///    `file_info`, `lock_kind`, `span`, `written_run`, `fault_handler`; no system header type
///    appears in a signature;
///  - file offsets and sizes are 64-bit on every word size; files are opened close-on-exec
///    (not inherited by child processes);
///  - `lock_byte` without waiting reports a lock held elsewhere as
///    `std::errc::resource_unavailable_try_again`.
///
/// The functions (documented where they are defined; each implementation has all of them):
///  - constants: `map_granularity` (alignment of `map_file` addresses and offsets: the page
///    size on Linux, 64 KiB on Windows); `system_page_size()`;
///  - diagnostics: `write_stderr` (async-signal-safe), `last_error`, `process_id`;
///  - files: `open_file`, `create_file`, `open_or_create_file`, `create_unnamed_file` and
///    `link_file` (not_supported on Windows: the caller renames a named temporary instead),
///    `rename_noreplace`, `remove_file`, `sync_directory` (a no-op on Windows), `stat_file`,
///    `pread_all`, `pwritev_all`, `pwrite_all`, `sync_data`, `allocate`, `punch_hole`
///    (not_supported on Windows), `truncate`;
///  - locks between processes, one byte each: `lock_byte`, `unlock_byte`,
///    `lock_would_succeed`; locks belong to the open file and vanish with the process.
///    Windows: the bytes are locked at 2^62 + k (its locks are mandatory: a locked data byte
///    would block reads), and converting a held lock's kind is not atomic there;
///  - address space: `reserve`, `release`, `map_file` (private copy-on-write view of a file
///    at a fixed address inside a reservation), `map_shared_view`, `map_shared_rw`,
///    `map_anonymous`, `protect`, `discard`, `discard_many`; `shared_view_survives_truncate`
///    says whether a long-lived shared view of a file may stay while the file is cut (false on
///    Windows, which refuses to truncate a file that a view maps);
///  - which pages of a private view were written: `open_pagemap`, `read_pagemap`,
///    `pagemap_is_private` (Linux: /proc/self/pagemap; Windows: QueryWorkingSetEx);
///  - kernel write tracking: `open_write_tracker`, `track_writes`, `write_protect`,
///    `scan_written` (Linux >= 6.7; on Windows `open_write_tracker` reports
///    function_not_supported, so the page-protection tracker is used);
///  - threads and processes: `current_thread`, `fork_generation`,
///    `fork_generation_signal_safe`, `set_fork_child_hook` (Windows has no fork: the
///    generation stays 0 and the hook never runs);
///  - waiting on a 32-bit word, across processes that share its mapping: `wait_on`,
///    `wake_all` (Linux: a futex. Windows: WaitOnAddress works only inside one process, so
///    `wait_on` polls the word in a short sleep loop up to its timeout and `wake_all` does
///    nothing: a waiter notices a change within about a millisecond);
///  - faults: `install_fault_handler` (Linux: SIGSEGV handler chained to the previous one;
///    Windows: a vectored exception handler that passes foreign faults on).
///
/// Test builds (TMF_TESTING_IO_HOOK defined for every file of the binary) can observe or
/// fail every read, write, sync, allocation and truncation of a file through `io_hook`.
#ifndef TMF_DETAIL_OS_HPP
#define TMF_DETAIL_OS_HPP

#include <cstddef>
#include <cstdint>
#include <system_error>

#include "config.hpp"

namespace tmf::detail {
namespace os {

/// An open file, owned: closed by the destructor. Move-only. Defined by the implementation.
class file;

/// Bytes to write, one piece of a gathered write.
struct buffer {
  const void* data;
  std::size_t size;
};

/// What a storage does to its files (reported to the test hook).
enum class io_op { read, write, sync, allocate, truncate, punch };

#if defined(TMF_TESTING_IO_HOOK)
/// If set, called before every read, write, sync, allocate, truncate (offset: the new size)
/// and hole punch of a file with its offset and length (and the bytes of a write); a non-empty return makes the operation
/// fail with that error without doing it. Not thread-safe to change while storages are in
/// use. Exists only where TMF_TESTING_IO_HOOK is defined.
using io_hook_fn = std::error_code (*)(io_op op, const file& f, std::uint64_t offset, std::uint64_t length,
                                       const void* data);
inline io_hook_fn io_hook = nullptr;
#endif

inline std::error_code call_hook([[maybe_unused]] io_op op, [[maybe_unused]] const file& f,
                                 [[maybe_unused]] std::uint64_t off, [[maybe_unused]] std::uint64_t len,
                                 [[maybe_unused]] const void* data) noexcept {
#if defined(TMF_TESTING_IO_HOOK)
  if (io_hook) return io_hook(op, f, off, len, data);
#endif
  return {};
}

enum class access { read_only, read_write };

struct file_info {
  std::uint64_t size = 0;
  std::uint64_t device = 0;      ///< with `inode`: the file's identity (Windows: volume serial, file index)
  std::uint64_t inode = 0;
  std::uint64_t disk_bytes = 0;  ///< space the file occupies on disk (holes excluded)
};

enum class lock_kind { shared, exclusive };

/// Memory of this process, one piece of a batch.
struct span {
  void* data;
  std::size_t size;
};

/// Pages written since the last scan, [begin, end) as addresses: the layout of the kernel's
/// struct page_region.
struct written_run {
  std::uint64_t begin;
  std::uint64_t end;
  std::uint64_t categories;
};

/// Called on an invalid memory access with its address. Runs in a signal handler (Linux) or
/// a vectored exception handler (Windows): only async-signal-safe work. Returns true once
/// the access can succeed (it is retried), false to pass the fault on.
using fault_handler = bool (*)(void* address) noexcept;

}  // namespace os
}  // namespace tmf::detail

#if defined(_WIN32)
#include "os_win32.hpp"
#else
#include "os_posix.hpp"
#endif

namespace tmf::detail {

/// Prints "tmf: <what>" and aborts. For broken invariants and misuse that would corrupt data.
[[noreturn]] inline void fatal(const char* what) noexcept {
  os::write_stderr("tmf: ");
  os::write_stderr(what);
  os::write_stderr("\n");
  std::abort();
}

/// The failure path of TMF_ASSERT (config.hpp).
[[noreturn]] inline void assertion_failed(const char* expr, const char* file, int line) noexcept {
  char num[24];
  os::write_stderr("tmf: internal assertion failed: ");
  os::write_stderr(expr);
  os::write_stderr(" at ");
  os::write_stderr(file);
  os::write_stderr(":");
  os::write_stderr(format_dec(static_cast<std::uint64_t>(line), num));
  os::write_stderr("\n");
  std::abort();
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_OS_HPP
