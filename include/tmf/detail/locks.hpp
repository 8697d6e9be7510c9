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
///    commit forever. A committer that finds the apply lock taken takes the turnstile, raises
///    the pending word, then waits for the apply lock; readers that see the word (through the
///    log's shared view) do not start but queue on the turnstile until the commit is applied.
///    A committer that finds the apply lock free just takes it (one fcntl, no word written).
///    A stale word left by a dead committer costs readers only the slower path.
///  - `lock_table`: shared while a process uses the storage's reader table (readers.hpp).
/// The apply lock and the turnstile stop the readers of processes that have no reader
/// table (read-only ones that may not write the lock file); the reader table stops all
/// others without a system call per read transaction, and `apply_gate` raises both.
/// Inside a process, the writer flag and the reader lanes (engine.hpp, readers.hpp) order
/// the writer against the readers: they share the writer's mapping, private copies included.
#ifndef TMF_DETAIL_LOCKS_HPP
#define TMF_DETAIL_LOCKS_HPP

#include <cstdint>
#include <system_error>
#include <utility>

#include "byte_lock.hpp"
#include "log.hpp"
#include "os.hpp"
#include "readers.hpp"

namespace tmf::detail {

/// The apply lock with its turnstile (see the file comment).
class apply_gate {
 public:
  /// `table`: the reader table, raised by every exclusive hold while it is open.
  apply_gate(const os::file& data, log_file& log, reader_table& table) noexcept
      : m_data(data), m_log(log), m_table(table) {}

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
      m_table = std::exchange(o.m_table, nullptr);
      return *this;
    }
    ~exclusive_hold() { release(); }
    bool owns() const noexcept { return m_apply.owns(); }
    void release() noexcept {
      if (m_table) m_table->lower();
      m_table = nullptr;
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
    reader_table* m_table = nullptr;
  };

  /// Waits for the apply lock exclusively, for a commit or a repair, through the turnstile
  /// so that new readers queue behind it; then raises the reader table and waits for its
  /// readers (those of every process that has one).
  std::error_code exclusive(exclusive_hold& out) noexcept {
    exclusive_hold h;
    // Fast path: a free apply lock is taken at once, without the turnstile and the pending
    // word (two fcntl and two pwrite fewer per commit). They only keep a committer that has
    // to wait from being starved by readers; this one does not wait. A reader arriving
    // meanwhile waits for the apply lock itself (shared() below), as behind any holder.
    std::error_code fast = h.m_apply.lock(m_data, lock_apply, os::lock_kind::exclusive, false);
    if (fast && !would_block(fast)) return fast;
    if (fast) {
      if (auto ec = h.m_turnstile.lock(m_data, lock_turnstile, os::lock_kind::exclusive)) return ec;
      if (m_log.is_open()) {
        set_commit_pending(m_log.file(), 1);
        h.m_log = &m_log;
      }
      if (auto ec = h.m_apply.lock(m_data, lock_apply, os::lock_kind::exclusive)) return ec;
    }
    if (m_table.is_open()) {
      m_table.raise_and_wait();
      h.m_table = &m_table;
    }
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
    // Queue behind the committer. Holding the turnstile shared, only a committer that found
    // the apply lock free (the fast path of exclusive()) can hold it: it does not wait for
    // anything, so the apply lock comes as soon as that apply ends.
    byte_lock turnstile;
    if (auto ec = turnstile.lock(m_data, lock_turnstile, os::lock_kind::shared, wait)) return ec;
    return out.lock(m_data, lock_apply, os::lock_kind::shared, wait);
  }

  /// Waits until no committer holds the turnstile (readers queue here while a commit is
  /// pending). Without `wait`, a busy turnstile gives `would_block`.
  std::error_code pass_turnstile(bool wait) noexcept {
    byte_lock turnstile;
    return turnstile.lock(m_data, lock_turnstile, os::lock_kind::shared, wait);
  }

  bool commit_pending() const noexcept { return m_log.commit_pending(); }
  reader_table& table() noexcept { return m_table; }

 private:
  const os::file& m_data;
  log_file& m_log;
  reader_table& m_table;
};

}  // namespace tmf::detail

#endif  // TMF_DETAIL_LOCKS_HPP
