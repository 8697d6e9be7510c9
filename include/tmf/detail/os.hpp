// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The operating-system layer: the only header that makes system calls.
///
/// Contract: every function returns a `std::error_code` (empty on success, the system's
/// `errno` otherwise) and never throws, never allocates unless it says so, and restarts on
/// EINTR. File offsets and sizes are 64-bit on every word size. Descriptors are opened
/// close-on-exec. A Windows twin would implement the same functions.
///
/// Every write, sync and truncation of a storage's files goes through `pwrite_all`,
/// `pwritev_all`, `sync_data`, `allocate` and `truncate`; a test build can observe them by
/// setting `io_hook` (used by the power-loss harness).
#ifndef TMF_DETAIL_OS_HPP
#define TMF_DETAIL_OS_HPP

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "config.hpp"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

namespace tmf::detail::os {

inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }

// ---------------------------------------------------------------------------------------
// I/O observation hook for fault-injection and power-loss tests.

/// What a storage does to its files; reported to `io_hook` before the call is made.
enum class io_op { write, sync, allocate, truncate };

/// If set, called before every write/sync/allocate/truncate with the descriptor, offset and
/// length; a non-empty return makes the operation fail with that error without doing it.
/// Not thread-safe to change while storages are in use; for tests.
using io_hook_fn = std::error_code (*)(io_op op, int fd, std::uint64_t offset, std::uint64_t length,
                                       const void* data);
inline io_hook_fn io_hook = nullptr;

inline std::error_code call_hook(io_op op, int fd, std::uint64_t off, std::uint64_t len,
                                 const void* data) noexcept {
  return io_hook ? io_hook(op, fd, off, len, data) : std::error_code{};
}

// ---------------------------------------------------------------------------------------
// Files.

enum class access { read_only, read_write };

/// Opens an existing file. `fd` receives the descriptor.
inline std::error_code open_file(const std::filesystem::path& p, access a, int& fd) noexcept {
  int flags = (a == access::read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  do fd = ::open(p.c_str(), flags);
  while (fd < 0 && errno == EINTR);
  return fd < 0 ? last_error() : std::error_code{};
}

/// Creates a new file (fails with EEXIST if it exists), mode 0644 less the umask.
inline std::error_code create_file(const std::filesystem::path& p, int& fd) noexcept {
  do fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  while (fd < 0 && errno == EINTR);
  return fd < 0 ? last_error() : std::error_code{};
}

/// Opens a file read-write, creating it (mode 0644 less the umask) if missing.
inline std::error_code open_or_create_file(const std::filesystem::path& p, int& fd) noexcept {
  do fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  while (fd < 0 && errno == EINTR);
  return fd < 0 ? last_error() : std::error_code{};
}

inline void close_file(int fd) noexcept {
  if (fd >= 0) ::close(fd);  // never retried on EINTR: Linux has closed it already
}

struct file_info {
  std::uint64_t size = 0;
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
};

inline std::error_code stat_file(int fd, file_info& info) noexcept {
  struct stat64 st;
  if (::fstat64(fd, &st) != 0) return last_error();
  info.size = static_cast<std::uint64_t>(st.st_size);
  info.device = static_cast<std::uint64_t>(st.st_dev);
  info.inode = static_cast<std::uint64_t>(st.st_ino);
  return {};
}

/// Reads exactly `n` bytes at `off`; a short file gives `got` < n and no error.
inline std::error_code pread_all(int fd, void* buf, std::size_t n, std::uint64_t off,
                                 std::size_t& got) noexcept {
  got = 0;
  auto* p = static_cast<char*>(buf);
  while (got < n) {
    ssize_t r = ::pread64(fd, p + got, n - got, static_cast<off64_t>(off + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return {};
}

/// Writes exactly `n` bytes at `off`.
inline std::error_code pwrite_all(int fd, const void* buf, std::size_t n, std::uint64_t off) noexcept {
  if (auto ec = call_hook(io_op::write, fd, off, n, buf)) return ec;
  auto* p = static_cast<const char*>(buf);
  std::size_t done = 0;
  while (done < n) {
    ssize_t r = ::pwrite64(fd, p + done, n - done, static_cast<off64_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    if (r == 0) return std::make_error_code(std::errc::io_error);
    done += static_cast<std::size_t>(r);
  }
  return {};
}

/// Writes the buffers back to back at `off`. `iov` may be modified.
inline std::error_code pwritev_all(int fd, struct iovec* iov, std::size_t count, std::uint64_t off) noexcept {
  if (io_hook) {
    // Report each buffer separately so the hook sees the real bytes.
    std::uint64_t at = off;
    for (std::size_t i = 0; i < count; ++i) {
      if (auto ec = call_hook(io_op::write, fd, at, iov[i].iov_len, iov[i].iov_base)) return ec;
      at += iov[i].iov_len;
    }
  }
  const std::size_t max_iov = static_cast<std::size_t>(IOV_MAX);
  while (count > 0) {
    int batch = static_cast<int>(count < max_iov ? count : max_iov);
    ssize_t r = ::pwritev64(fd, iov, batch, static_cast<off64_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    if (r == 0) return std::make_error_code(std::errc::io_error);
    off += static_cast<std::uint64_t>(r);
    auto left = static_cast<std::size_t>(r);
    while (count > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --count;
    }
    if (left > 0) {  // partial buffer: advance inside it
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return {};
}

/// fdatasync(2). A failure is reported as is and must not be retried as if nothing
/// happened: the kernel may have dropped the dirty pages.
inline std::error_code sync_data(int fd) noexcept {
  if (auto ec = call_hook(io_op::sync, fd, 0, 0, nullptr)) return ec;
  while (::fdatasync(fd) != 0) {
    if (errno != EINTR) return last_error();
  }
  return {};
}

/// Makes the file at least `off + len` bytes with real blocks (never sparse), so that a
/// full disk is reported here rather than as SIGBUS on a later store.
inline std::error_code allocate(int fd, std::uint64_t off, std::uint64_t len) noexcept {
  if (len == 0) return {};
  if (auto ec = call_hook(io_op::allocate, fd, off, len, nullptr)) return ec;
  for (;;) {
    if (::fallocate64(fd, 0, static_cast<off64_t>(off), static_cast<off64_t>(len)) == 0) return {};
    if (errno == EINTR) continue;
    if (errno != EOPNOTSUPP) return last_error();
    break;
  }
  // The file system cannot fallocate: write zeros over the range instead.
  static const char zeros[page_size] = {};
  std::uint64_t end = off + len;
  while (off < end) {
    std::size_t n = static_cast<std::size_t>(end - off < page_size ? end - off : page_size);
    if (auto ec = pwrite_all(fd, zeros, n, off)) return ec;
    off += n;
  }
  return {};
}

inline std::error_code truncate(int fd, std::uint64_t size) noexcept {
  if (auto ec = call_hook(io_op::truncate, fd, size, 0, nullptr)) return ec;
  while (::ftruncate64(fd, static_cast<off64_t>(size)) != 0) {
    if (errno != EINTR) return last_error();
  }
  return {};
}

/// Creates an unnamed file in directory `dir` (O_TMPFILE): nothing is left behind if the
/// process dies before `link_file` names it. ENOTSUP/EISDIR/EINVAL where the file system
/// cannot.
inline std::error_code create_unnamed_file(const std::filesystem::path& dir, int& fd) noexcept {
  do fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDWR | O_TMPFILE | O_CLOEXEC, 0644);
  while (fd < 0 && errno == EINTR);
  return fd < 0 ? last_error() : std::error_code{};
}

/// Gives the unnamed file `fd` the name `to`, atomically, failing with EEXIST if it exists.
inline std::error_code link_file(int fd, const std::filesystem::path& to) noexcept {
  char proc[64];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  return ::linkat(AT_FDCWD, proc, AT_FDCWD, to.c_str(), AT_SYMLINK_FOLLOW) == 0 ? std::error_code{} : last_error();
}

/// Atomically renames `from` to `to`, failing with EEXIST if `to` exists.
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
  int fd;
  do fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return last_error();
  std::error_code ec;
  if (::fsync(fd) != 0 && errno != EINVAL) ec = last_error();
  ::close(fd);
  return ec;
}

/// The page size of the running system.
inline std::size_t system_page_size() noexcept { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

// ---------------------------------------------------------------------------------------
// Locks: open-file-description byte locks. Like flock(2) they belong to the open file (so
// all threads of a process share them and they vanish when the process dies), and unlike
// flock one file can carry several independent locks, one per byte.

enum class lock_kind { unlock, shared, exclusive };

/// Sets the lock on byte `which` of `fd`. With `wait`, blocks; without, `acquired` tells.
inline std::error_code lock_byte(int fd, unsigned which, lock_kind kind, bool wait,
                                 bool& acquired) noexcept {
  struct flock64 fl {};
  fl.l_type = static_cast<short>(kind == lock_kind::unlock ? F_UNLCK
                                 : kind == lock_kind::shared ? F_RDLCK
                                                             : F_WRLCK);
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off64_t>(which);
  fl.l_len = 1;
  acquired = false;
  for (;;) {
    if (::fcntl64(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) {
      acquired = true;
      return {};
    }
    if (errno == EINTR) continue;
    if (!wait && (errno == EAGAIN || errno == EACCES)) return {};
    return last_error();
  }
}

/// Tells whether a lock of `kind` on byte `which` could be taken now (no other open file
/// holds a conflicting one), without taking it. Works on read-only descriptors.
inline std::error_code lock_would_succeed(int fd, unsigned which, lock_kind kind, bool& free) noexcept {
  struct flock64 fl {};
  fl.l_type = static_cast<short>(kind == lock_kind::shared ? F_RDLCK : F_WRLCK);
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off64_t>(which);
  fl.l_len = 1;
  if (::fcntl64(fd, F_OFD_GETLK, &fl) != 0) return last_error();
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

/// Gives back address space obtained from `reserve` (and whatever is mapped in it).
inline std::error_code release(void* addr, std::size_t size) noexcept {
  return ::munmap(addr, size) == 0 ? std::error_code{} : last_error();
}

/// Maps `size` bytes of `fd` from `offset` at `addr`, private and read-only, replacing
/// part of a reservation made by `reserve` (only ever our own reservation).
inline std::error_code map_file(void* addr, std::size_t size, int fd, std::uint64_t offset) noexcept {
  void* p = ::mmap64(addr, size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, static_cast<off64_t>(offset));
  return p == MAP_FAILED ? last_error() : std::error_code{};
}

/// Maps `size` bytes of `fd` from offset 0, shared and read-only, wherever the kernel
/// chooses: a window on the file's page cache that shows other processes' writes at once.
inline std::error_code map_shared_view(int fd, std::size_t size, const void*& out) noexcept {
  void* p = ::mmap64(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return last_error();
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

/// Maps `size` bytes of zeroed, private, read-write memory, committed only when touched
/// (for structures sized for the worst case, such as the dirty-page set).
inline std::error_code map_anonymous(std::size_t size, void*& out) noexcept {
  void* p = ::mmap64(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return last_error();
  out = p;
  return {};
}

/// Opens /proc/self/pagemap (for finding pages written inside an unprotected chunk).
inline std::error_code open_pagemap(int& fd) noexcept {
  do fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  return fd < 0 ? last_error() : std::error_code{};
}

/// Reads `count` pagemap entries starting at the page of `addr`.
inline std::error_code read_pagemap(int fd, const void* addr, std::uint64_t* entries, std::size_t count) noexcept {
  std::size_t got = 0;
  auto off = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(addr) / page_size) * 8;
  if (auto ec = pread_all(fd, entries, count * 8, off, got)) return ec;
  return got == count * 8 ? std::error_code{} : std::make_error_code(std::errc::io_error);
}

/// True if a pagemap entry is a private anonymous page: present or swapped, not file-backed.
inline bool pagemap_is_private(std::uint64_t e) noexcept {
  bool present_or_swapped = (e >> 63) & 1 || (e >> 62) & 1;
  bool file_or_shared = (e >> 61) & 1;
  return present_or_swapped && !file_or_shared;
}

// ---------------------------------------------------------------------------------------
// Threads, processes, signals.

/// An identifier of the calling thread, readable from a signal handler.
inline std::uintptr_t current_thread() noexcept { return static_cast<std::uintptr_t>(::pthread_self()); }

/// Increases in every child created by fork() (counted by a pthread_atfork handler).
inline std::uint64_t fork_generation() noexcept;

namespace impl {
inline std::uint64_t g_fork_generation = 0;
inline void on_fork_child() noexcept { ++g_fork_generation; }
inline int register_atfork() noexcept { return ::pthread_atfork(nullptr, nullptr, &on_fork_child); }
}  // namespace impl

inline std::uint64_t fork_generation() noexcept {
  static const int registered = impl::register_atfork();  // once, on first use
  (void)registered;
  return impl::g_fork_generation;
}

/// A reader-writer lock that prefers writers: once a writer waits, new readers wait too
/// (glibc's default, used by std::shared_mutex, lets readers starve a writer). Not
/// recursive: a thread that holds it shared must not lock it shared again.
class rw_mutex {
 public:
  rw_mutex() noexcept {
    pthread_rwlockattr_t attr;
    ::pthread_rwlockattr_init(&attr);
    ::pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    ::pthread_rwlock_init(&m_lock, &attr);
    ::pthread_rwlockattr_destroy(&attr);
  }
  rw_mutex(const rw_mutex&) = delete;
  rw_mutex& operator=(const rw_mutex&) = delete;
  ~rw_mutex() { ::pthread_rwlock_destroy(&m_lock); }
  void lock() noexcept { ::pthread_rwlock_wrlock(&m_lock); }
  bool try_lock() noexcept { return ::pthread_rwlock_trywrlock(&m_lock) == 0; }
  void unlock() noexcept { ::pthread_rwlock_unlock(&m_lock); }
  void lock_shared() noexcept { ::pthread_rwlock_rdlock(&m_lock); }
  bool try_lock_shared() noexcept { return ::pthread_rwlock_tryrdlock(&m_lock) == 0; }
  void unlock_shared() noexcept { ::pthread_rwlock_unlock(&m_lock); }

 private:
  pthread_rwlock_t m_lock;
};

using segv_handler = void (*)(int, siginfo_t*, void*);

/// Installs `handler` for SIGSEGV (SA_SIGINFO | SA_ONSTACK | SA_NODEFER), saving the previous action.
inline std::error_code install_segv_handler(segv_handler handler, struct sigaction& previous) noexcept {
  struct sigaction sa {};
  sa.sa_sigaction = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  return ::sigaction(SIGSEGV, &sa, &previous) == 0 ? std::error_code{} : last_error();
}

/// Passes a SIGSEGV on to `previous` exactly as if our handler had never been installed.
/// For SIG_DFL (and SIG_IGN, which the kernel does not honour for a fault) the default
/// action is restored and the handler returns: the faulting instruction runs again and the
/// process dies of SIGSEGV as it would have.
inline void chain_segv(const struct sigaction& previous, int sig, siginfo_t* info, void* ctx) noexcept {
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction) {
      previous.sa_sigaction(sig, info, ctx);
      return;
    }
  } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
    return;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGSEGV, &dfl, nullptr);
}

/// The process id (for messages).
inline long process_id() noexcept { return static_cast<long>(::getpid()); }

}  // namespace tmf::detail::os

#endif  // TMF_DETAIL_OS_HPP
