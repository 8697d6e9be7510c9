// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The Windows implementation of the operating-system layer's contract (os.hpp). Include
/// os.hpp, never this file: it relies on the portable types declared there.
///
/// How the contract maps onto Win32:
///  - a reservation is `VirtualAlloc(MEM_RESERVE)`; `map_file` releases the reservation,
///    maps copy-on-write views (`FILE_MAP_COPY`) at fixed addresses and reserves the rest
///    again (the fallback that PostgreSQL also uses: another thread's allocation could take
///    the range in between; then `map_file` fails and the reservation is restored where it
///    can be). Placeholders (`VirtualAlloc2`/`MapViewOfFile3`, Windows 10 1803+) would close
///    that window; Wine 8 lacks them and they are not used yet;
///  - views are at most `view_size` (2 MiB, aligned in the file) long: protection changes are
///    split at view boundaries (one VirtualProtect cannot span two views), and `discard`,
///    which on Windows can only drop private copies by unmapping and remapping a view, costs
///    one view rather than the whole arena. Private copies of pages outside the discarded
///    range are saved and written back (they stay private), other threads touching the view
///    meanwhile wait in the exception handler;
///  - the bookkeeping of reservations and views is a fixed table guarded by an SRW lock;
///  - `wait_on` polls (WaitOnAddress does not work across processes) and `wake_all` does
///    nothing; there is no fork, no userfaultfd, no pagemap: those report not_supported.
#ifndef TMF_DETAIL_OS_WIN32_HPP
#define TMF_DETAIL_OS_WIN32_HPP

#ifndef NOMINMAX
#define NOMINMAX
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef PSAPI_VERSION
#define PSAPI_VERSION 2  // QueryWorkingSetEx from kernel32 (K32QueryWorkingSetEx): no psapi.lib
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include <windows.h>
#include <psapi.h>

#include "sanitizer.hpp"

namespace tmf::detail {
namespace os {

namespace impl {
/// Win32 errors as the portable `std::errc` the other layers compare with.
inline std::error_code from_win32(DWORD e) noexcept {
  std::errc c;
  switch (e) {
    case ERROR_FILE_EXISTS:
    case ERROR_ALREADY_EXISTS: c = std::errc::file_exists; break;
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND: c = std::errc::no_such_file_or_directory; break;
    case ERROR_ACCESS_DENIED:
    case ERROR_SHARING_VIOLATION: c = std::errc::permission_denied; break;
    case ERROR_LOCK_VIOLATION: c = std::errc::resource_unavailable_try_again; break;
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL: c = std::errc::no_space_on_device; break;
    case ERROR_NOT_SUPPORTED:
    case ERROR_CALL_NOT_IMPLEMENTED: c = std::errc::not_supported; break;
    case ERROR_INVALID_PARAMETER: c = std::errc::invalid_argument; break;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
    case ERROR_COMMITMENT_LIMIT: c = std::errc::not_enough_memory; break;
    case ERROR_INVALID_ADDRESS: c = std::errc::file_exists; break;  // the range is in use
    case ERROR_TOO_MANY_OPEN_FILES: c = std::errc::too_many_files_open; break;
    case ERROR_WRITE_PROTECT: c = std::errc::read_only_file_system; break;
    case ERROR_HANDLE_EOF: c = std::errc::io_error; break;
    default: return {static_cast<int>(e), std::system_category()};
  }
  return std::make_error_code(c);
}
}  // namespace impl

inline std::error_code last_error() noexcept { return impl::from_win32(::GetLastError()); }

/// Writes a message to stderr (safe in an exception handler: no allocation, no lock).
inline void write_stderr(const char* s) noexcept {
  HANDLE h = ::GetStdHandle(STD_ERROR_HANDLE);
  std::size_t n = std::strlen(s);
  while (n > 0 && h && h != INVALID_HANDLE_VALUE) {
    DWORD w = 0;
    if (!::WriteFile(h, s, static_cast<DWORD>(n), &w, nullptr) || w == 0) return;
    s += w;
    n -= w;
  }
}

// ---------------------------------------------------------------------------------------
// Files.

namespace impl {
inline void forget_locks(HANDLE h) noexcept;
}  // namespace impl

/// An open file, owned: closed by the destructor. Move-only.
class file {
 public:
  file() noexcept = default;
  explicit file(HANDLE h) noexcept : m_h(h) {}
  file(file&& o) noexcept : m_h(std::exchange(o.m_h, INVALID_HANDLE_VALUE)) {}
  file& operator=(file&& o) noexcept {
    if (this != &o) {
      close();
      m_h = std::exchange(o.m_h, INVALID_HANDLE_VALUE);
    }
    return *this;
  }
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  ~file() { close(); }

  bool is_open() const noexcept { return m_h != INVALID_HANDLE_VALUE; }
  /// Closes the file (its locks go with it).
  void close() noexcept {
    if (m_h != INVALID_HANDLE_VALUE) {
      impl::forget_locks(m_h);
      ::CloseHandle(m_h);
    }
    m_h = INVALID_HANDLE_VALUE;
  }
  /// The system's handle (for tests and diagnostics).
  HANDLE native() const noexcept { return m_h; }

 private:
  HANDLE m_h = INVALID_HANDLE_VALUE;
};

namespace impl {
// FILE_SHARE_DELETE: an open file can be renamed into place and removed, as on POSIX. The
// handles are not inheritable (the default security attributes): "close-on-exec".
inline std::error_code open_disposition(const std::filesystem::path& p, DWORD access, DWORD disposition,
                                        file& out) noexcept {
  HANDLE h = ::CreateFileW(p.c_str(), access, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                           disposition, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (h == INVALID_HANDLE_VALUE) return last_error();
  out = file(h);
  return {};
}
inline OVERLAPPED at(std::uint64_t off) noexcept {
  OVERLAPPED o{};
  o.Offset = static_cast<DWORD>(off);
  o.OffsetHigh = static_cast<DWORD>(off >> 32);
  return o;
}
}  // namespace impl

/// Opens an existing file.
inline std::error_code open_file(const std::filesystem::path& p, access a, file& out) noexcept {
  return impl::open_disposition(p, a == access::read_only ? GENERIC_READ : GENERIC_READ | GENERIC_WRITE,
                                OPEN_EXISTING, out);
}

/// Creates a new file (file_exists if it exists).
inline std::error_code create_file(const std::filesystem::path& p, file& out) noexcept {
  return impl::open_disposition(p, GENERIC_READ | GENERIC_WRITE, CREATE_NEW, out);
}

/// Opens a file read-write, creating it if missing.
inline std::error_code open_or_create_file(const std::filesystem::path& p, file& out) noexcept {
  return impl::open_disposition(p, GENERIC_READ | GENERIC_WRITE, OPEN_ALWAYS, out);
}

/// Windows has no unnamed files: not_supported (the caller renames a named temporary).
inline std::error_code create_unnamed_file(const std::filesystem::path&, file&) noexcept {
  return std::make_error_code(std::errc::not_supported);
}

inline std::error_code link_file(const file&, const std::filesystem::path&) noexcept {
  return std::make_error_code(std::errc::not_supported);
}

/// Atomically renames `from` to `to`; file_exists if `to` exists (MoveFileEx without
/// MOVEFILE_REPLACE_EXISTING).
inline std::error_code rename_noreplace(const std::filesystem::path& from, const std::filesystem::path& to) noexcept {
  return ::MoveFileExW(from.c_str(), to.c_str(), MOVEFILE_WRITE_THROUGH) ? std::error_code{} : last_error();
}

inline std::error_code remove_file(const std::filesystem::path& p) noexcept {
  return ::DeleteFileW(p.c_str()) ? std::error_code{} : last_error();
}

/// A no-op: NTFS journals its directory changes (and a directory handle cannot be flushed
/// without backup privileges).
inline std::error_code sync_directory(const std::filesystem::path&) noexcept { return {}; }

inline std::error_code stat_file(const file& f, file_info& info) noexcept {
  BY_HANDLE_FILE_INFORMATION bh;
  if (!::GetFileInformationByHandle(f.native(), &bh)) return last_error();
  info.size = (std::uint64_t{bh.nFileSizeHigh} << 32) | bh.nFileSizeLow;
  info.device = bh.dwVolumeSerialNumber;
  if (info.device == 0) {
    // Wine gives serial 0 for a handle whose file was renamed since it was opened (a created
    // storage: temporary file, then MoveFileExW): it looks the volume up by the handle's old
    // name. The volume of the handle's path is the same; without this, the registry would
    // not see that a created file is the one opened again (errc::already_open).
    wchar_t name[1024], volume[1024];
    const DWORD n = ::GetFinalPathNameByHandleW(f.native(), name, 1024, FILE_NAME_NORMALIZED | VOLUME_NAME_DOS);
    DWORD serial = 0;
    if (n > 0 && n < 1024 && ::GetVolumePathNameW(name, volume, 1024) &&
        ::GetVolumeInformationW(volume, nullptr, 0, &serial, nullptr, nullptr, nullptr, 0))
      info.device = serial;
  }
  info.inode = (std::uint64_t{bh.nFileIndexHigh} << 32) | bh.nFileIndexLow;
  FILE_STANDARD_INFO si;
  if (::GetFileInformationByHandleEx(f.native(), FileStandardInfo, &si, sizeof si))
    info.disk_bytes = static_cast<std::uint64_t>(si.AllocationSize.QuadPart);
  else
    info.disk_bytes = info.size;
  return {};
}

/// Reads exactly `n` bytes at `off`; a short file gives `got` < n and no error.
inline std::error_code pread_all(const file& f, void* buf, std::size_t n, std::uint64_t off,
                                 std::size_t& got) noexcept {
  got = 0;
  if (auto ec = call_hook(io_op::read, f, off, n, nullptr)) return ec;
  auto* p = static_cast<char*>(buf);
  while (got < n) {
    OVERLAPPED o = impl::at(off + got);
    const DWORD want = static_cast<DWORD>(n - got < (DWORD{1} << 30) ? n - got : (DWORD{1} << 30));
    DWORD r = 0;
    if (!::ReadFile(f.native(), p + got, want, &r, &o)) {
      if (::GetLastError() == ERROR_HANDLE_EOF) break;
      return last_error();
    }
    if (r == 0) break;
    got += r;
  }
  return {};
}

/// Writes the buffers back to back at `off` (one WriteFile per buffer).
inline std::error_code pwritev_all(const file& f, const buffer* bufs, std::size_t count, std::uint64_t off) noexcept {
  for (std::size_t i = 0, at = 0; i < count; at += bufs[i].size, ++i)  // the hook sees the real bytes
    if (auto ec = call_hook(io_op::write, f, off + at, bufs[i].size, bufs[i].data)) return ec;
  for (std::size_t i = 0; i < count; ++i) {
    const char* p = static_cast<const char*>(bufs[i].data);
    std::size_t left = bufs[i].size;
    while (left > 0) {
      OVERLAPPED o = impl::at(off);
      const DWORD want = static_cast<DWORD>(left < (DWORD{1} << 30) ? left : (DWORD{1} << 30));
      DWORD w = 0;
      if (!::WriteFile(f.native(), p, want, &w, &o)) return last_error();
      if (w == 0) return std::make_error_code(std::errc::io_error);
      p += w;
      left -= w;
      off += w;
    }
  }
  return {};
}

/// Writes exactly `n` bytes at `off`.
inline std::error_code pwrite_all(const file& f, const void* data, std::size_t n, std::uint64_t off) noexcept {
  const buffer b{data, n};
  return pwritev_all(f, &b, 1, off);
}

/// FlushFileBuffers: the file's data and metadata reach the disk.
inline std::error_code sync_data(const file& f) noexcept {
  if (auto ec = call_hook(io_op::sync, f, 0, 0, nullptr)) return ec;
  return ::FlushFileBuffers(f.native()) ? std::error_code{} : last_error();
}

namespace impl {
inline std::error_code set_size(const file& f, std::uint64_t size) noexcept {
  FILE_END_OF_FILE_INFO e;
  e.EndOfFile.QuadPart = static_cast<LONGLONG>(size);
  return ::SetFileInformationByHandle(f.native(), FileEndOfFileInfo, &e, sizeof e) ? std::error_code{} : last_error();
}
inline std::atomic<std::size_t> g_cut_views{0};
inline std::error_code fit_views(const file& f, std::uint64_t size, bool cut) noexcept;
}  // namespace impl

/// Makes the file at least `off + len` bytes. Files are not sparse on Windows: extending
/// the end allocates the clusters, so a full disk is reported here.
inline std::error_code allocate(const file& f, std::uint64_t off, std::uint64_t len) noexcept {
  if (len == 0) return {};
  if (auto ec = call_hook(io_op::allocate, f, off, len, nullptr)) return ec;
  file_info fi;
  if (auto ec = stat_file(f, fi)) return ec;
  if (fi.size >= off + len) return {};
  if (auto ec = impl::set_size(f, off + len)) return ec;
  // Views cut short by an earlier truncation reach as far as the file again.
  return impl::g_cut_views.load() != 0 ? impl::fit_views(f, off + len, false) : std::error_code{};
}

/// not supported on Windows (files are not sparse): nothing changes.
inline std::error_code punch_hole(const file&, std::uint64_t, std::uint64_t) noexcept {
  return std::make_error_code(std::errc::operation_not_supported);
}

/// Sets the file's size. Windows refuses to cut a file under a view (ERROR_USER_MAPPED_FILE;
/// Wine refuses any change of a mapped file's size): this process's views of the file are
/// then unmapped, the size set, and the views mapped again at their addresses as far as the
/// file reaches, their private pages kept (as a POSIX mapping stays, with its part past the
/// end inaccessible until the file grows back: `allocate` and `truncate` map it again). Views
/// of other processes still block the cut: the error is then returned and the size unchanged.
inline std::error_code truncate(const file& f, std::uint64_t size) noexcept {
  if (auto ec = call_hook(io_op::truncate, f, size, 0, nullptr)) return ec;
  FILE_END_OF_FILE_INFO e;
  e.EndOfFile.QuadPart = static_cast<LONGLONG>(size);
  if (::SetFileInformationByHandle(f.native(), FileEndOfFileInfo, &e, sizeof e))
    return impl::g_cut_views.load() != 0 ? impl::fit_views(f, size, false) : std::error_code{};
  const DWORD err = ::GetLastError();
  if (err != ERROR_USER_MAPPED_FILE) return impl::from_win32(err);
  return impl::fit_views(f, size, true);
}

/// The page size of the running system.
inline std::size_t system_page_size() noexcept {
  SYSTEM_INFO si;
  ::GetSystemInfo(&si);
  return si.dwPageSize;
}

/// Addresses and file offsets of `map_file` are multiples of this: the allocation
/// granularity of views.
inline constexpr std::size_t map_granularity = std::size_t{64} << 10;
/// Longest view `map_file` makes (views are aligned to it in the file): the unit `discard`
/// remaps.
inline constexpr std::size_t view_size = std::size_t{2} << 20;

// ---------------------------------------------------------------------------------------
// Locks: LockFileEx on one byte each, at 2^62 + k, far past any data: Windows locks are
// mandatory, a locked data byte would block other handles' reads and writes. Windows locks
// belong to the handle but, unlike POSIX open-file-description locks, do not convert and
// stack when taken twice: a table of the locks this process holds gives OFD semantics
// (taking a held lock again is a no-op; changing its kind releases it first: not atomic).

namespace impl {
inline constexpr std::uint64_t lock_base = std::uint64_t{1} << 62;
struct held_lock {
  HANDLE h;
  std::uint64_t which;
  int kind;  ///< 1 shared, 2 exclusive; 0 free slot
};
inline constexpr std::size_t max_held_locks = 1024;
inline held_lock g_locks[max_held_locks];
inline SRWLOCK g_locks_lock = SRWLOCK_INIT;

inline int held(HANDLE h, std::uint64_t which) noexcept {
  ::AcquireSRWLockShared(&g_locks_lock);
  int k = 0;
  for (auto& l : g_locks)
    if (l.kind && l.h == h && l.which == which) k = l.kind;
  ::ReleaseSRWLockShared(&g_locks_lock);
  return k;
}
inline void set_held(HANDLE h, std::uint64_t which, int kind) noexcept {
  ::AcquireSRWLockExclusive(&g_locks_lock);
  held_lock* freeslot = nullptr;
  bool done = false;
  for (auto& l : g_locks) {
    if (l.kind && l.h == h && l.which == which) {
      l.kind = kind;
      done = true;
      break;
    }
    if (!l.kind && !freeslot) freeslot = &l;
  }
  if (!done && kind && freeslot) *freeslot = {h, which, kind};
  ::ReleaseSRWLockExclusive(&g_locks_lock);
}
inline void forget_locks(HANDLE h) noexcept {
  ::AcquireSRWLockExclusive(&g_locks_lock);
  for (auto& l : g_locks)
    if (l.h == h) l.kind = 0;
  ::ReleaseSRWLockExclusive(&g_locks_lock);
}
inline bool raw_lock(HANDLE h, std::uint64_t which, int kind, bool wait, DWORD& err) noexcept {
  OVERLAPPED o = at(lock_base + which);
  DWORD flags = (kind == 2 ? LOCKFILE_EXCLUSIVE_LOCK : 0) | (wait ? 0 : LOCKFILE_FAIL_IMMEDIATELY);
  if (::LockFileEx(h, flags, 0, 1, 0, &o)) return true;
  err = ::GetLastError();
  return false;
}
inline void raw_unlock(HANDLE h, std::uint64_t which) noexcept {
  OVERLAPPED o = at(lock_base + which);
  ::UnlockFileEx(h, 0, 1, 0, &o);
}
}  // namespace impl

/// Locks byte `which` of `f`. With `wait`, blocks; without, a conflicting lock held through
/// another open file gives `std::errc::resource_unavailable_try_again`.
inline std::error_code lock_byte(const file& f, std::uint64_t which, lock_kind kind, bool wait) noexcept {
  const int k = kind == lock_kind::shared ? 1 : 2;
  const int had = impl::held(f.native(), which);
  if (had == k) return {};
  if (had) impl::raw_unlock(f.native(), which);
  DWORD err = 0;
  if (impl::raw_lock(f.native(), which, k, wait, err)) {
    impl::set_held(f.native(), which, k);
    return {};
  }
  if (had && !impl::raw_lock(f.native(), which, had, false, err)) impl::set_held(f.native(), which, 0);
  if (err == ERROR_LOCK_VIOLATION || err == ERROR_IO_PENDING)
    return std::make_error_code(std::errc::resource_unavailable_try_again);
  return impl::from_win32(err);
}

/// Releases byte `which` of `f` (held or not).
inline std::error_code unlock_byte(const file& f, std::uint64_t which) noexcept {
  if (impl::held(f.native(), which)) {
    impl::raw_unlock(f.native(), which);
    impl::set_held(f.native(), which, 0);
  }
  return {};
}

/// Whether a lock of `kind` on byte `which` could be taken now (no other open file holds a
/// conflicting one), without keeping it. Works on read-only files.
inline std::error_code lock_would_succeed(const file& f, std::uint64_t which, lock_kind kind, bool& free) noexcept {
  const int k = kind == lock_kind::shared ? 1 : 2;
  const int had = impl::held(f.native(), which);
  if (had == 2 || (had == 1 && k == 1)) {
    free = true;  // this file's own lock excludes every conflicting one
    return {};
  }
  if (had) impl::raw_unlock(f.native(), which);
  DWORD err = 0;
  free = impl::raw_lock(f.native(), which, k, false, err);
  if (free) impl::raw_unlock(f.native(), which);
  if (had && !impl::raw_lock(f.native(), which, had, false, err)) impl::set_held(f.native(), which, 0);
  if (!free && err != ERROR_LOCK_VIOLATION && err != ERROR_IO_PENDING) return impl::from_win32(err);
  return {};
}

// ---------------------------------------------------------------------------------------
// Address space: a table of what this layer reserved and mapped.

namespace impl {
enum class region_kind : unsigned char { none, reserved, view, shared, anonymous };
struct region {
  std::uintptr_t begin = 0, end = 0;  ///< end: the end of the bytes mapped or reserved
  region_kind kind = region_kind::none;
  HANDLE section = nullptr;  ///< view: its file mapping, kept to remap it
  std::uint64_t offset = 0;  ///< view: its offset in the file
  // For `truncate` and `allocate` (a file cannot shrink under a view: see truncate):
  std::uint64_t file_id = 0;     ///< view, shared, cut: the file's index (0: not a file's)
  std::uintptr_t want_end = 0;   ///< view, shared, cut: the end it has while the file is long enough
  region_kind was = region_kind::none;  ///< cut: what it was (view or shared)
  bool writable = false;         ///< shared: read-write
  bool tail = false;             ///< cut: only the reserved rest of a shortened view
};
inline constexpr std::size_t max_regions = 16384;
inline region g_regions[max_regions];
inline SRWLOCK g_regions_lock = SRWLOCK_INIT;
/// The view being remapped by `discard` ([begin, end)), and a count of finished remaps:
/// a fault inside it waits for the remap to end instead of being reported.
inline std::atomic<std::uintptr_t> g_remap_begin{0}, g_remap_end{0};

/// The file's index on its volume: what the regions of its views remember it by (a handle
/// value can be reused by another file).
inline std::uint64_t file_index(HANDLE h) noexcept {
  BY_HANDLE_FILE_INFORMATION bi;
  if (!::GetFileInformationByHandle(h, &bi)) return 0;
  return (std::uint64_t{bi.nFileIndexHigh} << 32 | bi.nFileIndexLow) + 1;  // never 0
}

inline std::uintptr_t round_up(std::uintptr_t v, std::uintptr_t g) noexcept { return (v + g - 1) / g * g; }

inline region* add_region(const region& r) noexcept {
  for (auto& s : g_regions)
    if (s.kind == region_kind::none) {
      s = r;
      return &s;
    }
  return nullptr;
}
inline region* find_region(std::uintptr_t a) noexcept {
  for (auto& s : g_regions)
    if (s.kind != region_kind::none && a >= s.begin && a < s.end) return &s;
  return nullptr;
}
inline bool reserve_at(std::uintptr_t begin, std::uintptr_t end) noexcept {
  if (begin >= end) return true;
  void* p = ::VirtualAlloc(reinterpret_cast<void*>(begin), end - begin, MEM_RESERVE, PAGE_NOACCESS);
  if (p != reinterpret_cast<void*>(begin)) {
    if (p) ::VirtualFree(p, 0, MEM_RELEASE);
    return false;
  }
  return add_region({begin, end, region_kind::reserved, nullptr, 0}) != nullptr;
}
inline void free_region(region& r) noexcept {
  if (r.kind == region_kind::reserved && r.file_id != 0) --g_cut_views;  // a cut view or its reserved rest
  switch (r.kind) {
    case region_kind::reserved:
    case region_kind::anonymous: ::VirtualFree(reinterpret_cast<void*>(r.begin), 0, MEM_RELEASE); break;
    case region_kind::view:
    case region_kind::shared:
      ::UnmapViewOfFile(reinterpret_cast<void*>(r.begin));
      if (r.section) ::CloseHandle(r.section);
      break;
    case region_kind::none: break;
  }
  r = region{};
}
}  // namespace impl

/// Reserves `size` bytes of inaccessible address space. With `fixed`, exactly at `addr`
/// (a multiple of map_granularity; file_exists if any of it is in use); otherwise wherever
/// the system chooses. No memory is committed.
inline std::error_code reserve(void* addr, std::size_t size, bool fixed, void*& out) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  if (fixed && a % map_granularity != 0) return std::make_error_code(std::errc::invalid_argument);
  void* p = ::VirtualAlloc(fixed ? addr : nullptr, size, MEM_RESERVE, PAGE_NOACCESS);
  if (!p) return fixed ? std::make_error_code(std::errc::file_exists) : last_error();
  if (fixed && p != addr) {
    ::VirtualFree(p, 0, MEM_RELEASE);
    return std::make_error_code(std::errc::file_exists);
  }
  ::AcquireSRWLockExclusive(&impl::g_regions_lock);
  const auto b = reinterpret_cast<std::uintptr_t>(p);
  const bool ok = impl::add_region({b, b + size, impl::region_kind::reserved, nullptr, 0}) != nullptr;
  ::ReleaseSRWLockExclusive(&impl::g_regions_lock);
  if (!ok) {
    ::VirtualFree(p, 0, MEM_RELEASE);
    return std::make_error_code(std::errc::not_enough_memory);
  }
  out = p;
  return {};
}

/// Gives back address space obtained from `reserve` or `map_*` (and whatever is mapped in it).
inline std::error_code release(void* addr, std::size_t size) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  ::AcquireSRWLockExclusive(&impl::g_regions_lock);
  bool any = false;
  for (auto& r : impl::g_regions)
    if (r.kind != impl::region_kind::none && r.begin < a + size && r.end > a) {
      impl::free_region(r);
      any = true;
    }
  ::ReleaseSRWLockExclusive(&impl::g_regions_lock);
  return any ? std::error_code{} : std::make_error_code(std::errc::invalid_argument);
}

/// Maps `size` bytes of `f` from `offset` at `addr`, private (copy-on-write) and read-only,
/// replacing part of a reservation made by `reserve`. `addr` and `offset` are multiples of
/// map_granularity; the bytes must exist in the file. Made of views of at most `view_size`.
inline std::error_code map_file(void* addr, std::size_t size, const file& f, std::uint64_t offset) noexcept {
  using namespace impl;
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  if (a % map_granularity != 0 || offset % map_granularity != 0 || size == 0)
    return std::make_error_code(std::errc::invalid_argument);
  ::AcquireSRWLockExclusive(&g_regions_lock);
  region* r = find_region(a);
  if (!r || r->kind != region_kind::reserved || r->end < a + size) {
    ::ReleaseSRWLockExclusive(&g_regions_lock);
    return std::make_error_code(std::errc::invalid_argument);
  }
  const std::uintptr_t rb = r->begin, re = r->end;
  const std::uint64_t id = file_index(f.native());
  *r = region{};
  ::VirtualFree(reinterpret_cast<void*>(rb), 0, MEM_RELEASE);
  std::error_code ec;
  std::uintptr_t at = a;
  std::uint64_t off = offset;
  const std::uintptr_t end = a + size;
  while (at < end && !ec) {
    const std::uint64_t view_end = (off / view_size + 1) * view_size;  // aligned in the file
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(view_end - off, end - at));
    // The section ends where the view does: a section pins the file's size against truncation.
    const std::uint64_t section_end = off + n;
    HANDLE s = ::CreateFileMappingW(f.native(), nullptr, PAGE_READONLY, static_cast<DWORD>(section_end >> 32),
                                    static_cast<DWORD>(section_end), nullptr);
    void* v = s ? ::MapViewOfFileEx(s, FILE_MAP_COPY, static_cast<DWORD>(off >> 32), static_cast<DWORD>(off), n,
                                    reinterpret_cast<void*>(at))
                : nullptr;
    if (v != reinterpret_cast<void*>(at)) {
      ec = last_error();
      if (!ec) ec = std::make_error_code(std::errc::file_exists);
      if (v) ::UnmapViewOfFile(v);
      if (s) ::CloseHandle(s);
      break;
    }
    DWORD old;
    ::VirtualProtect(v, n, PAGE_READONLY, &old);
    if (region* v2 = add_region({at, at + n, region_kind::view, s, off})) {
      v2->file_id = id;
      v2->want_end = at + n;
    }
    at += round_up(n, map_granularity);
    off += n;
  }
  if (ec) {  // back to reserved: the views made so far go
    for (auto& v : g_regions)
      if (v.kind == region_kind::view && v.begin >= a && v.begin < end) free_region(v);
    reserve_at(rb, re);
  } else {
    reserve_at(rb, a);
    reserve_at(round_up(end, map_granularity), re);
  }
  ::ReleaseSRWLockExclusive(&g_regions_lock);
  return ec;
}

namespace impl {
inline std::error_code map_whole(const file& f, std::size_t size, bool writable, void*& out) noexcept {
  // A read-only section cannot be longer than the file: map what exists (a shorter file
  // reads as zeros to the end of its last page, as on POSIX).
  file_info fi;
  if (auto ec = stat_file(f, fi)) return ec;
  std::size_t n = size;
  if (!writable && fi.size < size) n = static_cast<std::size_t>(fi.size);
  if (n == 0) return std::make_error_code(std::errc::invalid_argument);
  const std::uint64_t max = n;  // a section pins the file's size against truncation: no longer than the view
  HANDLE s = ::CreateFileMappingW(f.native(), nullptr, writable ? PAGE_READWRITE : PAGE_READONLY,
                                  static_cast<DWORD>(max >> 32), static_cast<DWORD>(max), nullptr);
  if (!s) return last_error();
  void* v = ::MapViewOfFile(s, writable ? FILE_MAP_WRITE : FILE_MAP_READ, 0, 0, n);
  if (!v) {
    const std::error_code ec = last_error();
    ::CloseHandle(s);
    return ec;
  }
  const auto b = reinterpret_cast<std::uintptr_t>(v);
  const std::uint64_t id = file_index(f.native());
  ::AcquireSRWLockExclusive(&g_regions_lock);
  if (region* r = add_region({b, b + n, region_kind::shared, s, 0})) {
    r->file_id = id;
    r->want_end = b + n;
    r->writable = writable;
  }
  ::ReleaseSRWLockExclusive(&g_regions_lock);
  out = v;
  return {};
}
}  // namespace impl

/// Windows refuses to cut a file that a view maps: no long-lived shared view of the data file.
inline constexpr bool shared_view_survives_truncate = false;

/// Maps `size` bytes of `f` from offset 0, shared and read-only, wherever the system
/// chooses: a window on the file's cache that shows other processes' writes at once.
inline std::error_code map_shared_view(const file& f, std::size_t size, const void*& out) noexcept {
  void* p = nullptr;
  if (auto ec = impl::map_whole(f, size, false, p)) return ec;
  out = p;
  return {};
}

/// Maps `size` bytes of `f` from offset 0, shared and read-write (the file grows to `size`
/// if shorter): stores reach every process that maps the file. Undo with `release`.
inline std::error_code map_shared_rw(const file& f, std::size_t size, void*& out) noexcept {
  return impl::map_whole(f, size, true, out);
}

/// Changes the protection of whole pages of `map_file` views: read-only, or read-write
/// (copy-on-write: the first store makes the page a private copy). Split at view boundaries.
inline std::error_code protect(void* addr, std::size_t size, bool writable) noexcept {
  using namespace impl;
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  const std::uintptr_t end = a + size;
  std::error_code ec;
  ::AcquireSRWLockShared(&g_regions_lock);
  for (std::uintptr_t at = a; at < end && !ec;) {
    const region* r = find_region(at);
    if (r && r->kind == region_kind::reserved && r->file_id != 0) {
      at = std::min(end, r->end);  // a view cut off by a truncation: past the file's end, nothing to protect
      continue;
    }
    if (!r || (r->kind != region_kind::view && r->kind != region_kind::anonymous)) {
      ec = std::make_error_code(std::errc::invalid_argument);
      break;
    }
    const std::uintptr_t stop = std::min(end, r->end);
    DWORD old;
    const DWORD prot = writable ? (r->kind == region_kind::view ? PAGE_WRITECOPY : PAGE_READWRITE) : PAGE_READONLY;
    if (!::VirtualProtect(reinterpret_cast<void*>(at), stop - at, prot, &old)) ec = last_error();
    at = stop;
    if (at < end && !find_region(at)) at = round_up(at, map_granularity);  // the gap after a short view
  }
  ::ReleaseSRWLockShared(&g_regions_lock);
  return ec;
}

namespace impl {
/// The private pages of a view that survive its remap: their index, protection (0: only
/// made writable, still shared with the file) and bytes.
struct saved_pages {
  std::vector<std::size_t> keep;
  std::vector<DWORD> prot;
  std::vector<unsigned char> bytes;
};

/// Saves the private pages of view `r` but those flagged in `drop` (one flag per page; null:
/// none dropped).
inline std::error_code save_pages(const region& r, const unsigned char* drop, saved_pages& out) noexcept {
  const std::size_t pages = (r.end - r.begin) / page_size;
  std::vector<PSAPI_WORKING_SET_EX_INFORMATION> ws;
  try {
    ws.resize(pages);
    for (std::size_t i = 0; i < pages; ++i) ws[i].VirtualAddress = reinterpret_cast<void*>(r.begin + i * page_size);
    const bool known = ::QueryWorkingSetEx(::GetCurrentProcess(), ws.data(), static_cast<DWORD>(pages * sizeof ws[0]));
    for (std::size_t i = 0; i < pages; ++i) {
      if (drop && drop[i]) continue;
      MEMORY_BASIC_INFORMATION mi;
      if (!::VirtualQuery(reinterpret_cast<void*>(r.begin + i * page_size), &mi, sizeof mi)) continue;
      const bool copied = mi.Protect == PAGE_READWRITE;  // a written copy-on-write page
      const bool priv = copied || !known || (ws[i].VirtualAttributes.Valid && !ws[i].VirtualAttributes.Shared);
      if (mi.Protect == PAGE_WRITECOPY && !priv) {
        out.keep.push_back(i);  // writable, still shared with the file: only its protection
        out.prot.push_back(0);
        continue;
      }
      if (!priv) continue;
      out.keep.push_back(i);
      out.prot.push_back(mi.Protect == PAGE_READONLY ? PAGE_READONLY : PAGE_WRITECOPY);
      const std::size_t at = out.bytes.size();
      out.bytes.resize(at + page_size);
      std::memcpy(out.bytes.data() + at, reinterpret_cast<const void*>(r.begin + i * page_size), page_size);
    }
  } catch (...) {
    return std::make_error_code(std::errc::not_enough_memory);
  }
  return {};
}

/// Gives the pages saved by save_pages back to a view mapped again at `begin`, read-only
/// and `length` bytes long (pages past it are gone).
inline void restore_pages(std::uintptr_t begin, std::size_t length, const saved_pages& s) noexcept {
  DWORD old;
  for (std::size_t k = 0, at = 0; k < s.keep.size(); ++k) {
    void* page = reinterpret_cast<void*>(begin + s.keep[k] * page_size);
    const bool inside = (s.keep[k] + 1) * page_size <= length;
    if (inside) ::VirtualProtect(page, page_size, PAGE_WRITECOPY, &old);
    if (s.prot[k] == 0) continue;
    if (inside) std::memcpy(page, s.bytes.data() + at, page_size);
    at += page_size;
    if (inside && s.prot[k] == PAGE_READONLY) ::VirtualProtect(page, page_size, PAGE_READONLY, &old);
  }
}

/// Remaps view `r` (exclusive table lock held): the pages in `drop` (one flag per page) lose
/// their private copies; the other private pages keep their bytes and protection.
inline std::error_code remap_view(region& r, const std::vector<unsigned char>& drop) noexcept {
  saved_pages saved;
  if (auto ec = save_pages(r, drop.data(), saved)) return ec;
  g_remap_end.store(r.end, std::memory_order_relaxed);
  g_remap_begin.store(r.begin, std::memory_order_seq_cst);
  ::UnmapViewOfFile(reinterpret_cast<void*>(r.begin));
  void* v = ::MapViewOfFileEx(r.section, FILE_MAP_COPY, static_cast<DWORD>(r.offset >> 32),
                              static_cast<DWORD>(r.offset), r.end - r.begin, reinterpret_cast<void*>(r.begin));
  if (v != reinterpret_cast<void*>(r.begin)) {
    // The view's pages are gone and the storage's arena has a hole: nothing can go on.
    write_stderr("tmf: cannot remap a view of a storage (another allocation took its address)\n");
    std::abort();
  }
  DWORD old;
  ::VirtualProtect(v, r.end - r.begin, PAGE_READONLY, &old);
  restore_pages(r.begin, r.end - r.begin, saved);
  g_remap_begin.store(0, std::memory_order_seq_cst);
  return {};
}

/// Unmaps view or shared region `r` (exclusive table lock held), its private pages saved in
/// `saved`, and reserves its whole extent in its place: `r` becomes a cut region.
inline void cut_region(region& r, saved_pages& saved) noexcept {
  if (r.kind == region_kind::view) save_pages(r, nullptr, saved);  // without memory: written pages lost, as on a crash
  const std::uintptr_t extent = round_up(r.want_end, map_granularity);
  for (auto& t : g_regions)  // the reserved rest of a view shortened before
    if (t.kind == region_kind::reserved && t.tail && t.file_id == r.file_id && t.begin >= r.begin && t.begin < extent) {
      ::VirtualFree(reinterpret_cast<void*>(t.begin), 0, MEM_RELEASE);
      t = region{};
      --g_cut_views;
    }
  ::UnmapViewOfFile(reinterpret_cast<void*>(r.begin));
  ::CloseHandle(r.section);
  r.section = nullptr;
  r.was = r.kind;
  r.kind = region_kind::reserved;
  r.end = extent;
  ++g_cut_views;
  if (::VirtualAlloc(reinterpret_cast<void*>(r.begin), extent - r.begin, MEM_RESERVE, PAGE_NOACCESS) == nullptr)
    r.end = r.begin;  // taken by another thread meanwhile: mapped again below, or the remap aborts
}

/// Maps cut region `r` (exclusive table lock held) again from file `h`, `size` bytes long,
/// as far as the file reaches: a shorter view keeps the rest of its extent reserved.
inline void uncut_region(region& r, HANDLE h, std::uint64_t size, const saved_pages& saved) noexcept {
  const std::uint64_t want = r.want_end - r.begin;
  const std::uint64_t n = r.offset >= size ? 0 : std::min(want, size - r.offset);
  if (n == 0) return;  // still wholly past the end
  const bool view = r.was == region_kind::view;
  if (r.end != r.begin) ::VirtualFree(reinterpret_cast<void*>(r.begin), 0, MEM_RELEASE);
  const std::uint64_t section_end = r.offset + n;
  const DWORD prot = view ? PAGE_READONLY : (r.writable ? PAGE_READWRITE : PAGE_READONLY);
  const DWORD access = view ? FILE_MAP_COPY : (r.writable ? FILE_MAP_WRITE : FILE_MAP_READ);
  HANDLE s = ::CreateFileMappingW(h, nullptr, prot, static_cast<DWORD>(section_end >> 32),
                                  static_cast<DWORD>(section_end), nullptr);
  void* v = s ? ::MapViewOfFileEx(s, access, static_cast<DWORD>(r.offset >> 32), static_cast<DWORD>(r.offset),
                                  static_cast<std::size_t>(n), reinterpret_cast<void*>(r.begin))
              : nullptr;
  if (v != reinterpret_cast<void*>(r.begin)) {
    write_stderr("tmf: cannot map a view of a file again after a change of its size\n");
    std::abort();
  }
  const std::uintptr_t extent = round_up(r.want_end, map_granularity);
  r.kind = r.was;
  r.was = region_kind::none;
  r.section = s;
  r.end = r.begin + static_cast<std::uintptr_t>(n);
  --g_cut_views;
  if (view) {
    DWORD old;
    ::VirtualProtect(v, static_cast<std::size_t>(n), PAGE_READONLY, &old);
    restore_pages(r.begin, static_cast<std::size_t>(n), saved);
  }
  const std::uintptr_t rest = round_up(r.end, map_granularity);
  if (rest < extent &&
      ::VirtualAlloc(reinterpret_cast<void*>(rest), extent - rest, MEM_RESERVE, PAGE_NOACCESS) != nullptr) {
    if (region* t = add_region({rest, extent, region_kind::reserved, nullptr, 0})) {
      t->file_id = r.file_id;
      t->tail = true;
      ++g_cut_views;
    }
  }
}

/// Sets the size of file `f` while this process maps it (exclusive table lock not held).
/// Windows refuses to cut a file under a view (Wine: to change a mapped file's size at all,
/// ERROR_USER_MAPPED_FILE): with `cut`, every view and shared mapping of the file is unmapped
/// first (private pages saved), the size set, and each mapped again at its address as far
/// as the file now reaches; a view past the end stays reserved until the file grows back.
/// Without `cut` (the size was set), only the views cut short before are mapped out again.
/// g_cut_views: how many regions are cut (reserved where a view was, or its reserved rest).
inline std::error_code fit_views(const file& f, std::uint64_t size, bool cut) noexcept {
  const std::uint64_t id = file_index(f.native());
  if (id == 0) return last_error();
  std::error_code ec;
  ::AcquireSRWLockExclusive(&g_regions_lock);
  try {
    std::vector<region*> rs;
    std::uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (auto& r : g_regions) {
      if (r.file_id != id || r.tail) continue;
      const bool mapped = r.kind == region_kind::view || r.kind == region_kind::shared;
      const bool is_cut = r.kind == region_kind::reserved;
      const std::uint64_t want = r.want_end - r.begin;
      const std::uint64_t fits = r.offset >= size ? 0 : std::min(want, size - r.offset);
      if ((mapped && (cut || fits != r.end - r.begin)) || (is_cut && fits > 0)) {
        rs.push_back(&r);
        lo = std::min(lo, r.begin);
        hi = std::max(hi, r.want_end);
      }
    }
    if (!rs.empty()) {
      std::vector<saved_pages> saved(rs.size());
      // Faults of other threads in these views wait until they are back (on_exception).
      g_remap_end.store(hi, std::memory_order_relaxed);
      g_remap_begin.store(lo, std::memory_order_seq_cst);
      for (std::size_t i = 0; i < rs.size(); ++i)
        if (rs[i]->kind != region_kind::reserved) cut_region(*rs[i], saved[i]);
      std::uint64_t now = size;
      if (cut) {
        ec = set_size(f, size);
        file_info fi;
        if (ec && !stat_file(f, fi)) now = fi.size;  // refused (another process's view): as it was
      }
      for (std::size_t i = 0; i < rs.size(); ++i) uncut_region(*rs[i], f.native(), now, saved[i]);
      g_remap_begin.store(0, std::memory_order_seq_cst);
    } else if (cut) {
      ec = set_size(f, size);
    }
  } catch (...) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  }
  ::ReleaseSRWLockExclusive(&g_regions_lock);
  return ec;
}
}  // namespace impl

/// `discard` of several pieces: each view they touch is remapped once.
inline std::error_code discard_many(const span* pieces, std::size_t count) noexcept {
  using namespace impl;
  std::error_code first;
  ::AcquireSRWLockExclusive(&g_regions_lock);
  try {
    std::vector<region*> views;
    for (std::size_t i = 0; i < count; ++i) {
      const auto a = reinterpret_cast<std::uintptr_t>(pieces[i].data);
      for (std::uintptr_t at = a; at < a + pieces[i].size;) {
        region* r = find_region(at);
        if (!r) break;
        if (r->kind == region_kind::view && std::find(views.begin(), views.end(), r) == views.end()) views.push_back(r);
        at = round_up(r->end, map_granularity);
      }
    }
    for (region* r : views) {
      std::vector<unsigned char> drop((r->end - r->begin) / page_size, 0);
      for (std::size_t i = 0; i < count; ++i) {
        const auto a = reinterpret_cast<std::uintptr_t>(pieces[i].data);
        const std::uintptr_t b = std::max(a, r->begin), e = std::min(a + pieces[i].size, r->end);
        for (std::uintptr_t p = b; p < e; p += page_size) drop[(p - r->begin) / page_size] = 1;
      }
      if (auto ec = remap_view(*r, drop); ec && !first) first = ec;
    }
  } catch (...) {
    first = std::make_error_code(std::errc::not_enough_memory);
  }
  ::ReleaseSRWLockExclusive(&g_regions_lock);
  return first;
}

/// Drops private copies of pages: the next access sees the file's contents again.
inline std::error_code discard(void* addr, std::size_t size) noexcept {
  const span s{addr, size};
  return discard_many(&s, 1);
}

/// Maps `size` bytes of zeroed, private, read-write memory (committed: Windows charges it
/// against the commit limit at once, the pages are only allocated when touched).
inline std::error_code map_anonymous(std::size_t size, void*& out) noexcept {
  void* p = ::VirtualAlloc(nullptr, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
  if (!p) return last_error();
  const auto b = reinterpret_cast<std::uintptr_t>(p);
  ::AcquireSRWLockExclusive(&impl::g_regions_lock);
  impl::add_region({b, b + size, impl::region_kind::anonymous, nullptr, 0});
  ::ReleaseSRWLockExclusive(&impl::g_regions_lock);
  out = p;
  return {};
}

/// No pagemap on Windows: not_supported (the tracker then logs every page of a widened block
/// or chunk; logging a page that did not change is harmless).
inline std::error_code open_pagemap(file&) noexcept { return std::make_error_code(std::errc::not_supported); }
inline std::error_code read_pagemap(const file&, const void*, std::uint64_t*, std::size_t) noexcept {
  return std::make_error_code(std::errc::not_supported);
}
inline bool pagemap_is_private(std::uint64_t) noexcept { return true; }

// ---------------------------------------------------------------------------------------
// Kernel write tracking: Linux only.

inline std::error_code open_write_tracker(file&) noexcept {
  return std::make_error_code(std::errc::function_not_supported);
}
inline std::error_code track_writes(const file&, void*, std::size_t) noexcept {
  return std::make_error_code(std::errc::not_supported);
}
inline std::error_code write_protect(const file&, void*, std::size_t) noexcept {
  return std::make_error_code(std::errc::not_supported);
}
inline std::error_code scan_written(const file&, const void*, std::size_t, written_run*, std::size_t, std::size_t& count,
                                    std::uintptr_t& walk_end) noexcept {
  count = 0;
  walk_end = 0;
  return std::make_error_code(std::errc::not_supported);
}

// ---------------------------------------------------------------------------------------
// Threads, processes, faults.

/// An identifier of the calling thread, readable from an exception handler.
inline std::uintptr_t current_thread() noexcept { return static_cast<std::uintptr_t>(::GetCurrentThreadId()); }

/// The process id (for messages).
inline long process_id() noexcept { return static_cast<long>(::GetCurrentProcessId()); }

/// No fork on Windows: always 0.
inline std::uint64_t fork_generation() noexcept { return 0; }
/// No fork on Windows: the hook never runs.
inline void set_fork_child_hook(void (*)()) noexcept {}
inline std::uint64_t fork_generation_signal_safe() noexcept { return 0; }

/// Blocks while `*word == expected`, until `timeout_ms` (negative: no limit). Polls the word
/// (sleeping 1 ms between looks): WaitOnAddress cannot see stores of other processes.
/// Returns may be spurious. `std::errc::timed_out` after the timeout, {} otherwise.
inline std::error_code wait_on(const std::uint32_t* word, std::uint32_t expected, int timeout_ms) noexcept {
  const ULONGLONG start = ::GetTickCount64();
  for (int spin = 0;; ++spin) {
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected) return {};
    if (timeout_ms >= 0 && ::GetTickCount64() - start >= static_cast<ULONGLONG>(timeout_ms))
      return std::make_error_code(std::errc::timed_out);
    if (spin < 64)
      ::SwitchToThread();
    else
      ::Sleep(1);
  }
}

/// Nothing to do: waiters poll.
inline void wake_all(const std::uint32_t*) noexcept {}

namespace impl {
inline fault_handler g_fault_handler = nullptr;

inline LONG CALLBACK on_exception(EXCEPTION_POINTERS* e) noexcept {
  if (e->ExceptionRecord->ExceptionCode != EXCEPTION_ACCESS_VIOLATION || e->ExceptionRecord->NumberParameters < 2)
    return EXCEPTION_CONTINUE_SEARCH;
  const auto addr = static_cast<std::uintptr_t>(e->ExceptionRecord->ExceptionInformation[1]);
  // A view being remapped by another thread: wait until it is back, then retry.
  for (;;) {
    const std::uintptr_t b = g_remap_begin.load(std::memory_order_seq_cst);
    if (b == 0 || addr < b || addr >= g_remap_end.load(std::memory_order_relaxed)) break;
    ::SwitchToThread();
    if (g_remap_begin.load(std::memory_order_seq_cst) == 0) return EXCEPTION_CONTINUE_EXECUTION;
  }
  const DWORD saved = ::GetLastError();
  const bool handled = g_fault_handler && g_fault_handler(reinterpret_cast<void*>(addr));
  ::SetLastError(saved);
  return handled ? EXCEPTION_CONTINUE_EXECUTION : EXCEPTION_CONTINUE_SEARCH;
}
}  // namespace impl

/// Installs `fn` as the process's handler of invalid accesses: a vectored exception handler
/// (first in line) that passes every fault `fn` declines on (EXCEPTION_CONTINUE_SEARCH).
/// Once per process: later calls return the first call's result and ignore their argument.
inline std::error_code install_fault_handler(fault_handler fn) noexcept {
  static const std::error_code result = [fn] {
    impl::g_fault_handler = fn;
    return ::AddVectoredExceptionHandler(1, &impl::on_exception) ? std::error_code{} : last_error();
  }();
  return result;
}

}  // namespace os
}  // namespace tmf::detail

#endif  // TMF_DETAIL_OS_WIN32_HPP
