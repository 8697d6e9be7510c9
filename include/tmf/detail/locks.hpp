// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The locks between processes: byte locks on the data file, and the apply gate.
///
/// Every lock is an open-file-description byte lock on the data file, held per process
/// (all its threads share it; the kernel drops it when the process dies):
///  - `lock_open`: shared while a process has the file open writable. Whoever gets it
///    exclusively at open is alone and runs full recovery; whoever gets it exclusively at
///    close is the last and checkpoints. Read-only processes take none: the next writable
///    opener after a power cut must find itself first.
///  - `lock_writer`: exclusive for a writer's whole life, and around every recovery.
///  - `lock_apply`: shared while a process has read transactions; exclusive while a commit
///    or a repair copies pages into the data file.
///  - `lock_turnstile`, with the commit-pending word in the log's control page: Linux grants
///    a shared lock past a waiting exclusive one, so overlapping readers could starve a
///    commit forever. A committer takes the turnstile, raises the pending word, then waits
///    for the apply lock; readers that see the word (through the log's shared view) do not
///    start but queue on the turnstile until the commit is applied. A stale word left by a
///    dead committer costs readers only the slower path.
/// Inside a process, a writer-preferring rw_mutex orders the writer against the readers
/// (engine.hpp): they share the writer's mapping, private copies included.
#ifndef TMF_DETAIL_LOCKS_HPP
#define TMF_DETAIL_LOCKS_HPP

#include <cstdint>
#include <system_error>
#include <utility>

#include "log.hpp"
#include "os.hpp"

namespace tmf::detail {

inline constexpr std::uint64_t lock_open = 0, lock_writer = 1, lock_apply = 2, lock_turnstile = 3;

/// True for the error of a lock that was not taken because `wait` was false.
inline bool would_block(std::error_code ec) noexcept { return ec == std::errc::resource_unavailable_try_again; }

/// One byte lock, released by the destructor. Locking again while held converts it
/// (shared <-> exclusive) atomically, as fcntl does.
class byte_lock {
 public:
  byte_lock() noexcept = default;
  byte_lock(byte_lock&& o) noexcept : m_file(std::exchange(o.m_file, nullptr)), m_which(o.m_which) {}
  byte_lock& operator=(byte_lock&& o) noexcept {
    if (this != &o) {
      unlock();
      m_file = std::exchange(o.m_file, nullptr);
      m_which = o.m_which;
    }
    return *this;
  }
  byte_lock(const byte_lock&) = delete;
  byte_lock& operator=(const byte_lock&) = delete;
  ~byte_lock() { unlock(); }

  /// Takes byte `which` of `f`. Without `wait`, a lock held elsewhere gives `would_block`.
  /// On failure, a lock held before stays as it was.
  std::error_code lock(const os::file& f, std::uint64_t which, os::lock_kind kind, bool wait = true) noexcept {
    if (auto ec = os::lock_byte(f, which, kind, wait)) return ec;
    m_file = &f;
    m_which = which;
    return {};
  }
  bool owns() const noexcept { return m_file != nullptr; }
  void unlock() noexcept {
    if (m_file) os::unlock_byte(*m_file, m_which);
    m_file = nullptr;
  }
  /// Forgets the lock without releasing it (a forked child: the lock is the parent's).
  void abandon() noexcept { m_file = nullptr; }

 private:
  const os::file* m_file = nullptr;
  std::uint64_t m_which = 0;
};

/// The apply lock with its turnstile (see the file comment).
class apply_gate {
 public:
  apply_gate(const os::file& data, log_file& log) noexcept : m_data(data), m_log(log) {}

  /// The gate held exclusively: the apply lock, the turnstile and the raised pending word,
  /// released in reverse order by the destructor.
  class exclusive_hold {
   public:
    exclusive_hold() noexcept = default;
    exclusive_hold(exclusive_hold&&) noexcept = default;
    exclusive_hold& operator=(exclusive_hold&& o) noexcept {
      release();
      m_apply = std::move(o.m_apply);
      m_turnstile = std::move(o.m_turnstile);
      m_log = std::exchange(o.m_log, nullptr);
      return *this;
    }
    ~exclusive_hold() { release(); }
    bool owns() const noexcept { return m_apply.owns(); }
    void release() noexcept {
      m_apply.unlock();
      // Best effort: a failed write only costs fairness (readers read the word, never trust it).
      if (m_log) set_commit_pending(m_log->file(), 0);
      m_log = nullptr;
      m_turnstile.unlock();
    }

   private:
    friend class apply_gate;
    byte_lock m_apply, m_turnstile;
    const log_file* m_log = nullptr;
  };

  /// Waits for the apply lock exclusively, for a commit or a repair, through the turnstile
  /// so that new readers queue behind it.
  std::error_code exclusive(exclusive_hold& out) noexcept {
    exclusive_hold h;
    if (auto ec = h.m_turnstile.lock(m_data, lock_turnstile, os::lock_kind::exclusive)) return ec;
    if (m_log.is_open()) {
      set_commit_pending(m_log.file(), 1);
      h.m_log = &m_log;
    }
    if (auto ec = h.m_apply.lock(m_data, lock_apply, os::lock_kind::exclusive)) return ec;
    out = std::move(h);
    return {};
  }

  /// Takes the apply lock shared into `out`, for a process's first reader, letting a
  /// committer that waits for it go first. Without `wait`, a busy gate gives `would_block`.
  std::error_code shared(bool wait, byte_lock& out) noexcept {
    if (!commit_pending()) {
      if (auto ec = out.lock(m_data, lock_apply, os::lock_kind::shared, wait)) return ec;
      if (!commit_pending()) return {};
      out.unlock();  // a committer raised its word meanwhile: let it go first
    }
    // Queue behind the committer. Holding the turnstile shared, no commit can hold the apply
    // lock (committers take the turnstile first), so the apply lock comes at once.
    byte_lock turnstile;
    if (auto ec = turnstile.lock(m_data, lock_turnstile, os::lock_kind::shared, wait)) return ec;
    return out.lock(m_data, lock_apply, os::lock_kind::shared);
  }

  /// Waits until no committer holds the turnstile (readers queue here while a commit is
  /// pending). Without `wait`, a busy turnstile gives `would_block`.
  std::error_code pass_turnstile(bool wait) noexcept {
    byte_lock turnstile;
    return turnstile.lock(m_data, lock_turnstile, os::lock_kind::shared, wait);
  }

  bool commit_pending() const noexcept { return m_log.commit_pending(); }

 private:
  const os::file& m_data;
  log_file& m_log;
};

}  // namespace tmf::detail

#endif  // TMF_DETAIL_LOCKS_HPP
