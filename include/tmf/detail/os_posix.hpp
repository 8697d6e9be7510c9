// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The POSIX (Linux) implementation of the operating-system layer's contract (os.hpp).
/// Include os.hpp, never this file: it relies on the portable types declared there.
#ifndef TMF_DETAIL_OS_POSIX_HPP
#define TMF_DETAIL_OS_POSIX_HPP

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "sanitizer.hpp"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
// From the kernel's uapi (linux/userfaultfd.h, Linux 6.7): Debian 12's headers predate them.
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

namespace tmf::detail {
namespace os {

inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }

/// Writes a message to stderr (async-signal-safe).
inline void write_stderr(const char* s) noexcept {
  std::size_t n = std::strlen(s);
  while (n > 0) {
    ssize_t w = ::write(2, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

// ---------------------------------------------------------------------------------------
// Files.

/// An open file, owned: closed by the destructor. Move-only.
class file {
 public:
  file() noexcept = default;
  explicit file(int fd) noexcept : m_fd(fd) {}
  file(file&& o) noexcept : m_fd(std::exchange(o.m_fd, -1)) {}
  file& operator=(file&& o) noexcept {
    if (this != &o) {
      close();
      m_fd = std::exchange(o.m_fd, -1);
    }
    return *this;
  }
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  ~file() { close(); }

  bool is_open() const noexcept { return m_fd >= 0; }
  /// Closes the file (its locks go with it, unless a forked process shares them).
  void close() noexcept {
    if (m_fd >= 0) ::close(m_fd);  // never retried on EINTR: Linux has closed it already
    m_fd = -1;
  }
  /// The system's descriptor (for tests and diagnostics).
  int native() const noexcept { return m_fd; }

 private:
  int m_fd = -1;
};


namespace impl {
inline std::error_code open_flags(const char* p, int flags, file& out) noexcept {
  int fd;
  do fd = ::open(p, flags | O_CLOEXEC, 0644);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return last_error();
  out = file(fd);
  return {};
}
}  // namespace impl

/// Opens an existing file.
inline std::error_code open_file(const std::filesystem::path& p, access a, file& out) noexcept {
  return impl::open_flags(p.c_str(), a == access::read_only ? O_RDONLY : O_RDWR, out);
}

/// Creates a new file (EEXIST if it exists), mode 0644 less the umask.
inline std::error_code create_file(const std::filesystem::path& p, file& out) noexcept {
  return impl::open_flags(p.c_str(), O_RDWR | O_CREAT | O_EXCL, out);
}

/// Opens a file read-write, creating it (mode 0644 less the umask) if missing.
inline std::error_code open_or_create_file(const std::filesystem::path& p, file& out) noexcept {
  return impl::open_flags(p.c_str(), O_RDWR | O_CREAT, out);
}

/// Creates an unnamed file in directory `dir`: nothing is left behind if the process dies
/// before `link_file` names it. ENOTSUP/EISDIR/EINVAL where the file system cannot.
inline std::error_code create_unnamed_file(const std::filesystem::path& dir, file& out) noexcept {
  return impl::open_flags(dir.empty() ? "." : dir.c_str(), O_RDWR | O_TMPFILE, out);
}

/// Gives the unnamed file `f` the name `to`, atomically; EEXIST if it exists.
inline std::error_code link_file(const file& f, const std::filesystem::path& to) noexcept {
  char proc[64];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", f.native());
  return ::linkat(AT_FDCWD, proc, AT_FDCWD, to.c_str(), AT_SYMLINK_FOLLOW) == 0 ? std::error_code{} : last_error();
}

/// Atomically renames `from` to `to`; EEXIST if `to` exists.
inline std::error_code rename_noreplace(const std::filesystem::path& from,
                                        const std::filesystem::path& to) noexcept {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return {};
  if (errno != EINVAL && errno != ENOSYS) return last_error();
  // No renameat2 on this file system: link(2) also refuses to replace.
  if (::link(from.c_str(), to.c_str()) != 0) return last_error();
  ::unlink(from.c_str());
  return {};
}

inline std::error_code remove_file(const std::filesystem::path& p) noexcept {
  return ::unlink(p.c_str()) == 0 ? std::error_code{} : last_error();
}

/// fsyncs a directory so that a rename or creation inside it is durable.
inline std::error_code sync_directory(const std::filesystem::path& dir) noexcept {
  file d;
  if (auto ec = impl::open_flags(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY, d)) return ec;
  if (::fsync(d.native()) != 0 && errno != EINVAL) return last_error();
  return {};
}

inline std::error_code stat_file(const file& f, file_info& info) noexcept {
  struct stat64 st;
  if (::fstat64(f.native(), &st) != 0) return last_error();
  info.size = static_cast<std::uint64_t>(st.st_size);
  info.device = static_cast<std::uint64_t>(st.st_dev);
  info.inode = static_cast<std::uint64_t>(st.st_ino);
  info.disk_bytes = static_cast<std::uint64_t>(st.st_blocks) * 512;
  return {};
}

namespace impl {
// Under ASan, reads into and writes from the mapping bypass the interceptors: the pages may
// hold bytes that user containers poisoned (sanitizer.hpp). The system calls are the same.
inline ssize_t raw_pread(int fd, void* buf, std::size_t n, std::uint64_t off) noexcept {
#if TMF_ASAN && UINTPTR_MAX > 0xffffffffu
  return static_cast<ssize_t>(::syscall(SYS_pread64, fd, buf, n, static_cast<long>(off)));
#else
  return ::pread64(fd, buf, n, static_cast<off64_t>(off));
#endif
}
inline ssize_t raw_pwritev(int fd, const struct iovec* iov, int n, std::uint64_t off) noexcept {
#if TMF_ASAN && UINTPTR_MAX > 0xffffffffu
  // pos_l, pos_h: the kernel ignores pos_h on 64-bit.
  return static_cast<ssize_t>(::syscall(SYS_pwritev, fd, iov, n, static_cast<unsigned long>(off), 0UL));
#else
  return ::pwritev64(fd, iov, n, static_cast<off64_t>(off));
#endif
}
}  // namespace impl

/// Reads exactly `n` bytes at `off`; a short file gives `got` < n and no error.
inline std::error_code pread_all(const file& f, void* buf, std::size_t n, std::uint64_t off,
                                 std::size_t& got) noexcept {
  got = 0;
  if (auto ec = call_hook(io_op::read, f, off, n, nullptr)) return ec;
  auto* p = static_cast<char*>(buf);
  while (got < n) {
    ssize_t r = impl::raw_pread(f.native(), p + got, n - got, off + got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return {};
}

/// Writes the buffers back to back at `off`.
inline std::error_code pwritev_all(const file& f, const buffer* bufs, std::size_t count, std::uint64_t off) noexcept {
  for (std::size_t i = 0, at = 0; i < count; at += bufs[i].size, ++i)  // the hook sees the real bytes
    if (auto ec = call_hook(io_op::write, f, off + at, bufs[i].size, bufs[i].data)) return ec;
  constexpr std::size_t batch = 256;  // iovecs per call, on the stack
  struct iovec iov[batch];
  std::size_t first = 0, skip = 0;  // the next byte to write: buffer `first`, `skip` bytes in
  while (first < count) {
    std::size_t n = 0;
    for (std::size_t i = first; i < count && n < batch && n < static_cast<std::size_t>(IOV_MAX); ++i, ++n) {
      const std::size_t s = i == first ? skip : 0;
      iov[n].iov_base = const_cast<char*>(static_cast<const char*>(bufs[i].data) + s);
      iov[n].iov_len = bufs[i].size - s;
    }
    ssize_t r = impl::raw_pwritev(f.native(), iov, static_cast<int>(n), off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    if (r == 0) return std::make_error_code(std::errc::io_error);
    off += static_cast<std::uint64_t>(r);
    auto left = static_cast<std::size_t>(r);
    while (first < count && left >= bufs[first].size - skip) {
      left -= bufs[first].size - skip;
      skip = 0;
      ++first;
    }
    skip += left;  // a partial write ends inside buffer `first`
  }
  return {};
}

/// Writes exactly `n` bytes at `off`.
inline std::error_code pwrite_all(const file& f, const void* data, std::size_t n, std::uint64_t off) noexcept {
  const buffer b{data, n};
  return pwritev_all(f, &b, 1, off);
}

/// fdatasync(2). A failure must not be retried as if nothing happened: the kernel may have
/// dropped the dirty pages it could not write.
inline std::error_code sync_data(const file& f) noexcept {
  if (auto ec = call_hook(io_op::sync, f, 0, 0, nullptr)) return ec;
  while (::fdatasync(f.native()) != 0)
    if (errno != EINTR) return last_error();
  return {};
}

/// Makes the file at least `off + len` bytes with real blocks (never sparse), so that a
/// full disk is reported here rather than as SIGBUS on a later store.
inline std::error_code allocate(const file& f, std::uint64_t off, std::uint64_t len) noexcept {
  if (len == 0) return {};
  if (auto ec = call_hook(io_op::allocate, f, off, len, nullptr)) return ec;
  for (;;) {
    if (::fallocate64(f.native(), 0, static_cast<off64_t>(off), static_cast<off64_t>(len)) == 0) return {};
    if (errno == EINTR) continue;
    if (errno != EOPNOTSUPP) return last_error();
    break;
  }
  // The file system cannot fallocate: write zeros over the range instead.
  static const char zeros[4096] = {};
  for (const std::uint64_t end = off + len; off < end;) {
    std::size_t n = static_cast<std::size_t>(end - off < sizeof zeros ? end - off : sizeof zeros);
    if (auto ec = pwrite_all(f, zeros, n, off)) return ec;
    off += n;
  }
  return {};
}

/// Gives the disk blocks of `[off, off + len)` back to the file system; the range reads as
/// zeros and the file keeps its size. std::errc::operation_not_supported where the file
/// system cannot (then nothing changed).
inline std::error_code punch_hole(const file& f, std::uint64_t off, std::uint64_t len) noexcept {
  if (len == 0) return {};
  if (auto ec = call_hook(io_op::punch, f, off, len, nullptr)) return ec;
  while (::fallocate64(f.native(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off64_t>(off),
                       static_cast<off64_t>(len)) != 0)
    if (errno != EINTR) return last_error();
  return {};
}

inline std::error_code truncate(const file& f, std::uint64_t size) noexcept {
  if (auto ec = call_hook(io_op::truncate, f, size, 0, nullptr)) return ec;
  while (::ftruncate64(f.native(), static_cast<off64_t>(size)) != 0)
    if (errno != EINTR) return last_error();
  return {};
}

/// The page size of the running system.
inline std::size_t system_page_size() noexcept { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

/// Addresses and file offsets of `map_file` are multiples of this: the page size.
inline constexpr std::size_t map_granularity = page_size;

// ---------------------------------------------------------------------------------------
// Locks: open-file-description byte locks. Like flock(2) they belong to the open file (all
// threads of a process share them; they vanish when the process dies), and unlike flock
// one file carries several independent locks, one per byte.

/// Locks byte `which` of `f`. With `wait`, blocks; without, a conflicting lock held through
/// another open file gives `std::errc::resource_unavailable_try_again`.
inline std::error_code lock_byte(const file& f, std::uint64_t which, lock_kind kind, bool wait) noexcept {
  struct flock64 fl {};
  fl.l_type = static_cast<short>(kind == lock_kind::shared ? F_RDLCK : F_WRLCK);
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off64_t>(which);
  fl.l_len = 1;
  for (;;) {
    if (::fcntl64(f.native(), wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return {};
    if (errno == EINTR) continue;
    if (!wait && (errno == EAGAIN || errno == EACCES)) return std::make_error_code(std::errc::resource_unavailable_try_again);
    return last_error();
  }
}

/// Releases byte `which` of `f` (held or not).
inline std::error_code unlock_byte(const file& f, std::uint64_t which) noexcept {
  struct flock64 fl {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off64_t>(which);
  fl.l_len = 1;
  return ::fcntl64(f.native(), F_OFD_SETLK, &fl) == 0 ? std::error_code{} : last_error();
}

/// Whether a lock of `kind` on byte `which` could be taken now (no other open file holds a
/// conflicting one), without taking it. Works on read-only files.
inline std::error_code lock_would_succeed(const file& f, std::uint64_t which, lock_kind kind, bool& free) noexcept {
  struct flock64 fl {};
  fl.l_type = static_cast<short>(kind == lock_kind::shared ? F_RDLCK : F_WRLCK);
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off64_t>(which);
  fl.l_len = 1;
  if (::fcntl64(f.native(), F_OFD_GETLK, &fl) != 0) return last_error();
  free = fl.l_type == F_UNLCK;
  return {};
}

// ---------------------------------------------------------------------------------------
// Address space.

/// Reserves `size` bytes of inaccessible address space. With `fixed`, exactly at `addr`
/// (EEXIST if any of it is in use: an existing mapping is never replaced); otherwise
/// wherever the kernel chooses. No memory or swap is committed.
inline std::error_code reserve(void* addr, std::size_t size, bool fixed, void*& out) noexcept {
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (fixed ? MAP_FIXED_NOREPLACE : 0);
  void* p = ::mmap64(fixed ? addr : nullptr, size, PROT_NONE, flags, -1, 0);
  if (p == MAP_FAILED) return last_error();
  if (fixed && p != addr) {  // a kernel without MAP_FIXED_NOREPLACE took it as a hint
    ::munmap(p, size);
    return std::make_error_code(std::errc::file_exists);
  }
  out = p;
  return {};
}

/// Gives back address space obtained from `reserve` or `map_*` (and whatever is mapped in it).
inline std::error_code release(void* addr, std::size_t size) noexcept {
  return ::munmap(addr, size) == 0 ? std::error_code{} : last_error();
}

/// Maps `size` bytes of `f` from `offset` at `addr`, private and read-only, replacing part
/// of a reservation made by `reserve` (only ever our own reservation). The bytes must exist
/// in the file.
///
/// The mapping is made writable, one page is copied on write and dropped again, and only
/// then is it made read-only: the kernel attaches its anonymous-memory bookkeeping (the
/// anon_vma) to the whole mapping at once, so the pieces that protect() later splits off
/// share it and merge back when re-protected. Mapped read-only from the start, every piece
/// made writable gets its own and never merges: the process's mapping count then only grows,
/// until mprotect fails with ENOMEM (vm.max_map_count).
///
/// The mapping is MADV_RANDOM: faults read no pages ahead, so the page cache keeps 4 KiB
/// folios for the file instead of large ones, and a one-page pwrite into it stays cheap.
inline std::error_code map_file(void* addr, std::size_t size, const file& f, std::uint64_t offset) noexcept {
  void* p = ::mmap64(addr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, f.native(),
                     static_cast<off64_t>(offset));
  if (p == MAP_FAILED) return last_error();
  auto* first = static_cast<volatile unsigned char*>(p);
  *first = *first;  // the same byte: the private copy equals the file
  if (::madvise(p, page_size, MADV_DONTNEED) != 0 || ::madvise(p, size, MADV_RANDOM) != 0 ||
      ::mprotect(p, size, PROT_READ) != 0) {
    const std::error_code ec = last_error();
    ::mmap64(addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);  // back to reserved
    return ec;
  }
  return {};
}

/// A shared view may stay mapped while its file is truncated (its pages past the end fault).
inline constexpr bool shared_view_survives_truncate = true;

/// Maps `size` bytes of `f` from offset 0, shared and read-only, wherever the kernel
/// chooses: a window on the file's page cache that shows other processes' writes at once.
/// MADV_RANDOM (best effort), like map_file: a fault must not read ahead into large folios,
/// which make the data file's later small pwrites several times dearer.
inline std::error_code map_shared_view(const file& f, std::size_t size, const void*& out) noexcept {
  void* p = ::mmap64(nullptr, size, PROT_READ, MAP_SHARED, f.native(), 0);
  if (p == MAP_FAILED) return last_error();
  ::madvise(p, size, MADV_RANDOM);
  out = p;
  return {};
}

/// Changes the protection of whole pages: read-only, or read-write.
inline std::error_code protect(void* addr, std::size_t size, bool writable) noexcept {
  return ::mprotect(addr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ) == 0 ? std::error_code{}
                                                                                      : last_error();
}

/// Drops private copies of pages: the next access sees the file's contents again.
inline std::error_code discard(void* addr, std::size_t size) noexcept {
  return ::madvise(addr, size, MADV_DONTNEED) == 0 ? std::error_code{} : last_error();
}

namespace impl {
inline std::atomic<bool> g_no_batched_discard{false};
}  // namespace impl

/// `discard` of several pieces, in one system call where the kernel allows it
/// (process_madvise on this process, Linux >= 6.14: one lock and TLB flush for the batch),
/// else one madvise each.
inline std::error_code discard_many(const span* pieces, std::size_t count) noexcept {
  constexpr std::size_t batch = 512;  // iovecs per call, on the stack (UIO_MAXIOV is 1024)
#if defined(SYS_process_madvise)
  constexpr int pidfd_self = -10000;  // PIDFD_SELF, linux/pidfd.h (6.14)
  for (std::size_t first = 0; first < count && !impl::g_no_batched_discard.load(std::memory_order_relaxed);) {
    struct iovec iov[batch];
    std::size_t n = 0, bytes = 0;
    for (; n < batch && first + n < count; ++n) {
      iov[n].iov_base = pieces[first + n].data;
      iov[n].iov_len = pieces[first + n].size;
      bytes += pieces[first + n].size;
    }
    const long r = ::syscall(SYS_process_madvise, pidfd_self, iov, n, MADV_DONTNEED, 0u);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || static_cast<std::size_t>(r) != bytes) {
      // Refused (older kernel, seccomp) or cut short: the rest one by one, from this batch
      // on (dropping a page twice is harmless); and one by one from now on if refused.
      if (r < 0) impl::g_no_batched_discard.store(true, std::memory_order_relaxed);
      pieces += first;
      count -= first;
      break;
    }
    first += n;
    if (first == count) return {};
  }
#endif
  for (std::size_t i = 0; i < count; ++i)
    if (auto ec = discard(pieces[i].data, pieces[i].size)) return ec;
  return {};
}

/// Maps `size` bytes of zeroed, private, read-write memory, committed only when touched
/// (for structures sized for the worst case, such as the dirty-page set).
inline std::error_code map_anonymous(std::size_t size, void*& out) noexcept {
  void* p = ::mmap64(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return last_error();
  out = p;
  return {};
}

/// Opens the table that tells which pages of this process are private copies.
inline std::error_code open_pagemap(file& out) noexcept { return impl::open_flags("/proc/self/pagemap", O_RDONLY, out); }

/// Reads `count` entries of the pagemap `pm` starting at the page of `addr`.
inline std::error_code read_pagemap(const file& pm, const void* addr, std::uint64_t* entries, std::size_t count) noexcept {
  auto off = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(addr) / page_size) * 8;
  for (std::size_t got = 0; got < count * 8;) {
    ssize_t r = ::pread64(pm.native(), reinterpret_cast<char*>(entries) + got, count * 8 - got,
                          static_cast<off64_t>(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return last_error();
    if (r == 0) return std::make_error_code(std::errc::io_error);
    got += static_cast<std::size_t>(r);
  }
  return {};
}

/// True if a pagemap entry is a private anonymous page: present or swapped, not file-backed.
inline bool pagemap_is_private(std::uint64_t e) noexcept {
  bool present_or_swapped = (e >> 63) & 1 || (e >> 62) & 1;
  bool file_or_shared = (e >> 61) & 1;
  return present_or_swapped && !file_or_shared;
}

// ---------------------------------------------------------------------------------------
// Kernel write tracking (Linux >= 6.7): userfaultfd in asynchronous write-protect mode marks
// the pages of a registered range write-protected; a store to such a page is let through by
// the kernel itself (no signal, no message) and clears the mark; PAGEMAP_SCAN reports the
// pages whose mark is cleared and sets it again, in one ioctl.

namespace impl {
// PAGEMAP_SCAN, from the kernel's uapi (linux/fs.h, Linux 6.7): struct pm_scan_arg and its flags.
struct pm_scan_arg {
  std::uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  std::uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
static_assert(sizeof(pm_scan_arg) == 96, "struct pm_scan_arg of linux/fs.h");
inline constexpr unsigned long pagemap_scan = _IOWR('f', 16, pm_scan_arg);
inline constexpr std::uint64_t pm_scan_wp_matching = 1 << 0;
inline constexpr std::uint64_t pm_scan_check_wpasync = 1 << 1;
inline constexpr std::uint64_t page_is_written = 1 << 1;

inline std::error_code uffd_ioctl(const file& uffd, unsigned long request, void* arg) noexcept {
  while (::ioctl(uffd.native(), request, arg) != 0)
    if (errno != EINTR) return last_error();
  return {};
}
}  // namespace impl


/// Opens a userfaultfd for asynchronous write-protect tracking of user-mode stores (which
/// works unprivileged: UFFD_USER_MODE_ONLY). ENOSYS/EPERM/EINVAL where the kernel, a seccomp
/// filter or the kernel's version refuses; ENOTSUP if the features are missing.
inline std::error_code open_write_tracker(file& out) noexcept {
#if defined(SYS_userfaultfd)
  const long fd = ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (fd < 0) return last_error();
  file f(static_cast<int>(fd));
  struct uffdio_api api {};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
  if (auto ec = impl::uffd_ioctl(f, UFFDIO_API, &api)) return ec;
  constexpr std::uint64_t needed = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
  if ((api.features & needed) != needed || !(api.ioctls & (std::uint64_t{1} << _UFFDIO_REGISTER)))
    return std::make_error_code(std::errc::not_supported);
  out = std::move(f);
  return {};
#else
  (void)out;
  return std::make_error_code(std::errc::function_not_supported);
#endif
}

/// Registers `size` bytes at `addr` (whole pages, a mapping of this process) for write
/// tracking with `uffd`. A mapping replaced later (MAP_FIXED, mremap) must be registered again.
inline std::error_code track_writes(const file& uffd, void* addr, std::size_t size) noexcept {
  struct uffdio_register reg {};
  reg.range.start = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(addr));
  reg.range.len = size;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  return impl::uffd_ioctl(uffd, UFFDIO_REGISTER, &reg);
}

/// Marks `size` bytes at `addr` (registered with `uffd`) write-protected: the pages written
/// from now on are the ones `scan_written` reports. Unpopulated pages are marked too.
inline std::error_code write_protect(const file& uffd, void* addr, std::size_t size) noexcept {
  struct uffdio_writeprotect wp {};
  wp.range.start = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(addr));
  wp.range.len = size;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  return impl::uffd_ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);
}

/// Reports the pages of [addr, addr + size) written since they were write-protected, as up to
/// `cap` sorted runs in `runs` (`count` of them), and write-protects them again, atomically
/// (PAGEMAP_SCAN on /proc/self/pagemap). When `runs` fills up, the scan stops at `walk_end`
/// (an address); otherwise `walk_end` is the end of the range. EINVAL on kernels before 6.7
/// or on a range not registered for asynchronous write-protect.
inline std::error_code scan_written(const file& pagemap, const void* addr, std::size_t size, written_run* runs,
                                    std::size_t cap, std::size_t& count, std::uintptr_t& walk_end) noexcept {
  impl::pm_scan_arg a{};
  a.size = sizeof a;
  a.flags = impl::pm_scan_wp_matching | impl::pm_scan_check_wpasync;
  a.start = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(addr));
  a.end = a.start + size;
  a.vec = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(runs));
  a.vec_len = cap;
  a.category_mask = impl::page_is_written;
  a.return_mask = impl::page_is_written;
  long n;
  while ((n = ::ioctl(pagemap.native(), impl::pagemap_scan, &a)) < 0)
    if (errno != EINTR) return last_error();
  count = static_cast<std::size_t>(n);
  walk_end = static_cast<std::uintptr_t>(a.walk_end);
  return {};
}

// ---------------------------------------------------------------------------------------
// Threads, processes, faults.

/// An identifier of the calling thread, readable from a signal handler.
inline std::uintptr_t current_thread() noexcept { return static_cast<std::uintptr_t>(::pthread_self()); }

/// The process id (for messages).
inline long process_id() noexcept { return static_cast<long>(::getpid()); }

namespace impl {
inline std::atomic<std::uint64_t> g_fork_generation{0};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free || sizeof(void*) == 4,
              "the fork generation is read from a signal handler");
/// Called first thing in every child created by fork() (set once, before the first fork).
inline std::atomic<void (*)()> g_fork_child_hook{nullptr};
inline void on_fork_child() noexcept {
  g_fork_generation.fetch_add(1, std::memory_order_relaxed);
  if (auto hook = g_fork_child_hook.load(std::memory_order_relaxed)) hook();
}
}  // namespace impl

/// Increases in every child created by fork() (counted by a pthread_atfork handler,
/// registered on the first call).
inline std::uint64_t fork_generation() noexcept {
  static const int registered = ::pthread_atfork(nullptr, nullptr, &impl::on_fork_child);
  (void)registered;
  return impl::g_fork_generation.load(std::memory_order_relaxed);
}

/// Sets the function that every child created by fork() runs first (from the pthread_atfork
/// child handler: only async-signal-safe work). The first call wins.
inline void set_fork_child_hook(void (*fn)()) noexcept {
  void (*none)() = nullptr;
  impl::g_fork_child_hook.compare_exchange_strong(none, fn);
  (void)fork_generation();  // registers the atfork handler
}

/// `fork_generation()` for a signal handler: no registration, only the load.
inline std::uint64_t fork_generation_signal_safe() noexcept {
  return impl::g_fork_generation.load(std::memory_order_relaxed);
}

/// Blocks while `*word == expected` (read atomically by the kernel), until `wake_all` on the
/// same word from any process that maps it, or `timeout_ms` (negative: no limit). The word may
/// live in process memory or in a shared file mapping. Returns may be spurious: callers
/// re-check their condition. `std::errc::timed_out` after the timeout, {} otherwise.
inline std::error_code wait_on(const std::uint32_t* word, std::uint32_t expected, int timeout_ms) noexcept {
  struct timespec ts {};
  ts.tv_sec = timeout_ms / 1000;
  ts.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1000000L;
  // Not FUTEX_PRIVATE_FLAG: the waker may be another process sharing the mapping.
  if (::syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout_ms < 0 ? nullptr : &ts, nullptr, 0) == 0) return {};
  if (errno == ETIMEDOUT) return std::make_error_code(std::errc::timed_out);
  return {};  // EAGAIN (the word differs) and EINTR are ordinary returns
}

/// Wakes every thread of every process waiting in `wait_on` for `word`.
inline void wake_all(const std::uint32_t* word) noexcept {
  ::syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

/// Maps `size` bytes of `f` from offset 0, shared and read-write, wherever the kernel
/// chooses: stores reach every process that maps the file. Undo with `release`.
inline std::error_code map_shared_rw(const file& f, std::size_t size, void*& out) noexcept {
  void* p = ::mmap64(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, f.native(), 0);
  if (p == MAP_FAILED) return last_error();
  out = p;
  return {};
}

namespace impl {
inline fault_handler g_fault_handler = nullptr;
inline struct sigaction g_previous_segv {};

/// Passes a SIGSEGV on exactly as if no handler of ours were installed. For SIG_DFL (and
/// SIG_IGN, which the kernel does not honour for a fault) the default action is restored
/// and the handler returns: the instruction runs again and the process dies as it would have.
inline void on_segv(int sig, siginfo_t* info, void* ctx) noexcept {
  const int saved_errno = errno;
  const bool handled = g_fault_handler(info->si_addr);
  errno = saved_errno;
  if (handled) return;
  const struct sigaction& prev = g_previous_segv;
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) return prev.sa_sigaction(sig, info, ctx);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    return prev.sa_handler(sig);
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGSEGV, &dfl, nullptr);
}
}  // namespace impl

/// Installs `fn` as the process's handler of invalid accesses (SIGSEGV with SA_SIGINFO |
/// SA_ONSTACK | SA_NODEFER), chaining to the handler installed before it. Once per process:
/// later calls return the first call's result and ignore their argument.
inline std::error_code install_fault_handler(fault_handler fn) noexcept {
  static const std::error_code result = [fn] {
    impl::g_fault_handler = fn;
    struct sigaction sa {};
    sa.sa_sigaction = &impl::on_segv;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    return ::sigaction(SIGSEGV, &sa, &impl::g_previous_segv) == 0 ? std::error_code{} : last_error();
  }();
  return result;
}

}  // namespace os
}  // namespace tmf::detail

#endif  // TMF_DETAIL_OS_POSIX_HPP
