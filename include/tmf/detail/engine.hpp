// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The untyped storage: one open data file with its log, its mapping and its transactions.
///
/// Files: the data file `<path>` (page 0: header; then the arena), the log `<path>-log` and
/// the lock file `<path>-lock` (the reader table, readers.hpp).
/// The data file is mapped MAP_PRIVATE and read-only at the header's fixed address; every
/// page the committed state uses holds only committed bytes there, so another process's
/// readers never see a transaction in progress (a no_sync commit may write fresh pages, free
/// in that state, before its record: first_direct_page). The engine ties the layers together:
///  - write tracking (tracker.hpp): stores fault, the handler records the page;
///  - commit: collect the dirty pages, write the fresh ones into the data file (no_sync:
///    write_direct), diff the others against the data file, append one record of
///    the changed bytes to the log (log.hpp), fdatasync it
///    (the commit point), take the apply gate (locks.hpp), stamp the apply marker, copy the
///    pages into the data file, drop the private copies, maybe checkpoint (recovery.hpp);
///  - recovery and checkpoints (recovery.hpp), locks (locks.hpp), the registry the fault
///    handler and the allocators read (registry.hpp), growth and the mapping (here);
///  - transactions in the process: the writer raises the writer flag and waits for this
///    process's reader lanes to empty; a reader enters its lane unless the flag or the
///    reader table's pending word is raised (readers.hpp). No system call either way.
///
/// A writer that dies while applying leaves the data file half-written with its header
/// (page 0, written last) still old. The apply marker is stamped before applying; a reader
/// that finds the marker ahead of the data file's header repairs the file (replays the
/// record) before reading, as does the next writer.
#ifndef TMF_DETAIL_ENGINE_HPP
#define TMF_DETAIL_ENGINE_HPP

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../options.hpp"
#include "config.hpp"
#include "format.hpp"
#include "heap.hpp"
#include "locks.hpp"
#include "log.hpp"
#include "os.hpp"
#include "readers.hpp"
#include "recovery.hpp"
#include "registry.hpp"
#include "tracker.hpp"

namespace tmf::detail {

class engine {
 public:
  /// Opens or creates `file` as `opt` says, for a Root of fingerprint `root`. Without
  /// `reader_table`, a read-only open leaves the lock file alone (inspection, which writes no
  /// file): its readers take the apply lock instead.
  engine(const std::filesystem::path& file, const options& opt, const root_fingerprint& root, bool reader_table = true);
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;
  ~engine() { close_all(true); }

  // -- accessors --------------------------------------------------------------------------
  unsigned char* base() const noexcept { return m_base; }
  file_header* header() const noexcept { return reinterpret_cast<file_header*>(m_base); }
  heap arena_heap() const noexcept { return heap(reinterpret_cast<heap_state*>(header()->heap), &m_backing); }
  const std::filesystem::path& path() const noexcept { return m_path; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(header()->arena_size); }
  bool writable() const noexcept { return m_writable; }
  void* root() const noexcept { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(header()->root)); }
  /// The data file (maintenance.hpp: compaction truncates it and punches holes in it).
  const os::file& data_file() const noexcept { return m_fd; }
  /// True on the thread holding the writer; never in a forked child (whose thread may carry
  /// the same id as the parent's writer).
  bool is_writer_thread() const noexcept {
    return m_writer_thread.load(std::memory_order_relaxed) == os::current_thread() && !forked();
  }
  /// \throws error{errc::forked} in a child of the process that opened the storage.
  void check_fork() const {
    if (forked()) throw error(errc::forked, "tmf: " + m_name + " was opened by the parent process before fork()");
  }
  /// \throws error{errc::forked}, or errc::commit_unknown / errc::needs_reopen after an I/O
  /// error this storage object cannot get past.
  void check_usable() const;

  // -- transactions -----------------------------------------------------------------------
  /// Becomes the writer (this thread). False if `wait` is false and the writer is taken.
  bool begin_write(bool wait);
  /// Rolls back what was not committed and releases the writer.
  void end_write() noexcept;
  /// Makes everything since the last commit atomic and durable.
  void commit();
  /// Undoes everything since the last commit, allocations included.
  void rollback() {
    check_writer("rollback");
    rollback_pages();
  }
  /// Starts a read transaction. False if `wait` is false and it would have to wait.
  bool begin_read(bool wait);
  void end_read() noexcept;

  // -- allocation -------------------------------------------------------------------------
  void* allocate(std::size_t size, std::size_t align);
  void deallocate(void* p, std::size_t size) noexcept {
    if (forked()) fatal("deallocate in a storage opened before fork()");
    if (!is_writer_thread()) fatal("deallocate in a storage by a thread without its writer");
    arena_heap().deallocate(p, size);
  }
  /// Punches the pages waiting to be given back and truncates a cut arena, once the data
  /// file is known durable (after a checkpoint). Writer lock held, no transaction open.
  void give_back() noexcept;
  /// First write transaction of a new file: the heap is created in place (its trees point
  /// to themselves, so it cannot be built before the file is mapped).
  void init_heap() noexcept {
    heap::create(reinterpret_cast<heap_state*>(header()->heap), m_base + page_size, m_base + header()->arena_size);
  }
  void set_root(void* p) noexcept { header()->root = reinterpret_cast<std::uintptr_t>(p); }
  /// Drops every kept private copy (options::kept_pages): the mapping shows the file again.
  /// The writer's, or with this process's readers and writer kept out.
  void drop_kept() noexcept {
    if (m_dirty.drop_kept(m_base, mapped())) fatal("cannot drop kept private pages (madvise failed)");
    m_kept_txn.store(0, std::memory_order_relaxed);
  }
  /// The next commit logs a record even if nothing changed: its txn tells other processes
  /// that the file changed (compaction punches holes after it).
  void force_record() noexcept { m_force_record = true; }

  // -- inspection -------------------------------------------------------------------------
  storage_stats stats();
  /// Audits the header and the heap; throws errc::corrupted naming the problem.
  void check();

 private:
  /// A consistent view for inspection: the writer's own, or a read transaction.
  struct view {
    engine& e;
    bool reading;
    explicit view(engine& en) : e(en), reading(!en.is_writer_thread()) {
      if (reading) e.begin_read(true);
    }
    ~view() {
      if (reading) e.end_read();
    }
  };

  bool forked() const noexcept { return os::fork_generation() != m_fork_generation; }
  std::size_t mapped() const noexcept { return m_mapped.load(std::memory_order_relaxed); }
  engine_files files() noexcept {
    return {m_fd, m_log, m_gate, m_name, m_file_id, m_reserved, m_opt.sync == durability::full};
  }
  void check_writer(const char* what);
  void poison(errc code, std::error_code cause) noexcept;
  void rollback_pages() noexcept;
  bool has_changes() noexcept;
  [[noreturn]] void fail_commit(std::error_code ec, std::uint64_t txn);
  void apply_committed(std::uint64_t txn) noexcept;
  bool first_reader_lock(bool wait);
  bool exclude_readers(bool wait) noexcept;
  void admit_readers() noexcept { clear_word(m_writer_flag); }
  bool settle_view(bool wait);
  bool repair_after_dead_writer(bool wait);
  /// False when a dead writer left the data file behind the log's apply marker.
  bool view_applied() const noexcept { return !m_log.is_open() || m_log.marker_txn() <= header()->txn; }
  bool readers_open() const noexcept;
  /// No kept page (options::kept_pages), or the file is still at the commit that kept them.
  /// Read where the header page is the file's (no writer in this process): no system call.
  bool kept_fresh() const noexcept {
    const std::uint64_t k = m_kept_txn.load(std::memory_order_relaxed);
    return k == 0 || header()->txn == k;
  }
  void drop_private_if_caught_up();
  void maybe_checkpoint() noexcept;
  std::uint64_t first_direct_page() noexcept;
  std::error_code write_direct(const std::uint64_t* pages, std::size_t n) noexcept;
  void maybe_cut_arena() noexcept;
  static bool reserve_pages(void* ctx, std::uintptr_t begin, std::uintptr_t end) noexcept;
  static void released_pages(void* ctx, std::uintptr_t begin, std::uintptr_t end) noexcept;
  void settle_unknown() noexcept;

  // opening (engine_open.hpp) and closing
  void open();
  void adopt_header_identity();
  bool open_files();
  void take_open_lock();
  void open_reader_table();
  void reserve_for(const file_header& h);
  void recover_or_refuse(const file_header& h);
  void map_and_verify();
  file_header read_header();
  bool create_new();
  void release_reservation() noexcept;
  void close_all(bool checkpoint_if_last) noexcept;
  void ensure_mapped(std::size_t size);
  void grow(std::size_t need);

  // -- state ------------------------------------------------------------------------------
  // Identity and options, fixed at open.
  std::filesystem::path m_path;        ///< the data file
  std::string m_name = m_path.string();  ///< m_path for messages (and the fault handler's)
  options m_opt;
  root_fingerprint m_root_fp;
  bool m_writable = true;               ///< not open_mode::read_only
  bool m_reader_table = true;           ///< use the lock file (always, when writable)
  std::uint64_t m_file_id = 0;          ///< pairs the log with the data file
  std::uint64_t m_fork_generation = 0;  ///< os::fork_generation() at open
  // Files, locks and the mapping. The files outlive the locks on them.
  os::file m_fd;                        ///< the data file
  log_file m_log;                       ///< the log and where its next record goes
  os::file m_pagemap;                   ///< /proc/self/pagemap, or closed (then chunks are logged whole)
  os::file m_uffd;                      ///< the userfaultfd of kernel tracking, or closed (the fallback)
  reader_table m_table;                 ///< the lock file: readers of every process
  apply_gate m_gate{m_fd, m_log, m_table};
  byte_lock m_open_lock;                ///< lock_open, shared while open (writable processes)
  byte_lock m_writer_lock;              ///< lock_writer, while a writer is active
  byte_lock m_apply_shared;             ///< without a reader table: lock_apply shared, while m_readers > 0
  bool m_first = false;                 ///< this process opened the file alone (and recovered it)
  unsigned char* m_base = nullptr;      ///< the reservation, at the header's address
  std::size_t m_reserved = 0;           ///< bytes reserved from m_base
  std::uint64_t m_max_size = 0;         ///< the max_size recorded at the next commit
  std::atomic<std::size_t> m_mapped{0};  ///< bytes of the file mapped from m_base
  std::mutex m_map_mutex;               ///< serialises growing the mapping
  storage_slot* m_slot = nullptr;       ///< this storage in the registry
  dirty_set m_dirty;                    ///< pages the writer wrote in this transaction
  // Transactions in this process.
  std::mutex m_writer_mutex;            ///< the writer (or a reader's repair) of this process
  std::uint32_t m_writer_flag = 0;      ///< 2 while readers must wait (| 1: some do); atomic_ref only
  reader_block m_local_lanes{};         ///< the lanes when there is no reader table
  reader_block* m_lanes = &m_local_lanes;  ///< this process's lanes: the table's, or m_local_lanes
  std::uint32_t m_no_pending = 0;       ///< the pending word when there is no reader table (always 0)
  std::uint32_t* m_pending = &m_no_pending;  ///< the reader table's pending word
  // Without a reader table only: the process's read transactions against other processes.
  std::mutex m_apply_mutex;             ///< serialises the first reader's lock and repair
  std::mutex m_reader_mutex;            ///< guards m_readers
  std::size_t m_readers = 0;            ///< read transactions open in this process
  std::atomic<std::uintptr_t> m_writer_thread{0};  ///< os::current_thread() of the writer; 0: none
  recovery::checkpoint_state m_checkpoint;
  /// A read-only process that recovered the file into private pages: the transaction they
  /// show (0: none), and which they are; dropped once the data file has caught up.
  std::atomic<std::uint64_t> m_private_txn{0};
  std::vector<std::uint64_t> m_private_pages;
  std::error_code m_poison;             ///< errc::commit_unknown or errc::needs_reopen: no more transactions
  std::error_code m_poison_cause;       ///< the I/O error behind m_poison
  log_position m_unknown;               ///< with errc::commit_unknown: where its record is (offset, seen_txn = its txn)
  std::atomic<std::uint64_t> m_commits{0}, m_rollbacks{0}, m_pages_logged{0}, m_pages_direct{0}, m_last_commit_pages{0};
  std::atomic<std::uint64_t> m_log_bytes{0};
  std::vector<record_extent> m_extents;      ///< the commit's changed byte ranges (diff_pages)
  std::vector<unsigned char> m_diff_scratch;  ///< the committed originals they are diffed against
  committed_view m_committed;                 ///< or a shared view of them
  // Giving space back (options::give_back_bytes, truncate_bytes).
  heap_impl::heap_backing m_backing{&reserve_pages, &released_pages, this, give_back_min};
  using page_range = std::pair<std::uintptr_t, std::uintptr_t>;
  std::vector<page_range> m_freed;        ///< pages this transaction freed, to punch after it is durable
  std::vector<page_range> m_to_punch;     ///< committed frees waiting for a checkpoint
  std::size_t m_to_punch_bytes = 0;
  std::uint64_t m_cut_to = 0;             ///< a committed cut of the arena: truncate the file to it
  bool m_reserve_failed = false;          ///< the last allocation found no disk for a hole
  bool m_punch_unsupported = false;       ///< the file system cannot punch holes
  std::atomic<std::uint64_t> m_given_back{0};
  /// The txn at which the kept pages (options::kept_pages) equal the file; 0: none kept.
  std::atomic<std::uint64_t> m_kept_txn{0};
  bool m_force_record = false;            ///< force_record(): the next commit logs
  // Direct pages (write_direct).
  static constexpr std::uint64_t unknown_page = ~std::uint64_t{0};
  /// One past the highest page any record of the log's current generation may hold.
  std::uint64_t m_log_top = unknown_page;
  /// This transaction's first page that was free when it began and is in no record: a
  /// commit writes its dirty pages from here on into the data file directly.
  std::uint64_t m_direct_from = unknown_page;

 public:
  /// Freed extents of at least this many bytes are punched out of the data file.
  static constexpr std::size_t give_back_min = std::size_t{64} << 10;
  /// The arena is cut back to a multiple of this (the growth granule).
  static constexpr std::size_t cut_granule = std::size_t{64} << 10;
};

// -- write transactions -------------------------------------------------------------------

inline void engine::check_usable() const {
  check_fork();
  if (!m_poison) return;
  if (m_poison == errc::commit_unknown)
    throw error(m_poison, "tmf: " + m_name + ": a commit's outcome is unknown (" + m_poison_cause.message() +
                              "); reopen the storage to settle it");
  throw error(m_poison, "tmf: " + m_name + " must be reopened after an I/O error (" + m_poison_cause.message() +
                            "); every returned commit is durable");
}

inline void engine::poison(errc code, std::error_code cause) noexcept {
  if (!m_poison) {
    m_poison = make_error_code(code);
    m_poison_cause = cause;
  }
}

inline void engine::check_writer(const char* what) {
  check_fork();
  if (!is_writer_thread())
    throw error(errc::no_writer,
                std::string("tmf: ") + what + " on " + m_name + " from a thread that does not hold its writer");
  check_usable();
}

inline bool engine::begin_write(bool wait) {
  check_fork();
  if (!m_writable) throw error(errc::read_only, "tmf: " + m_name + " was opened with open_mode::read_only");
  check_usable();
  thread_state& ts = this_thread();
  if (is_writer_thread()) throw error(errc::already_open, "tmf: this thread already holds the writer of " + m_name);
  if (ts.readers.contains(this))
    throw error(errc::already_open, "tmf: this thread holds a reader of " + m_name + "; a writer would deadlock");
  if (ts.writers.full()) throw error(errc::already_open, "tmf: too many nested writers");
  if (wait)
    m_writer_mutex.lock();
  else if (!m_writer_mutex.try_lock())
    return false;
  std::unique_lock<std::mutex> guard(m_writer_mutex, std::adopt_lock);
  if (!exclude_readers(wait)) return false;
  struct admit_unless_done {
    engine* e;
    ~admit_unless_done() {
      if (e) e->admit_readers();
    }
  } admit{this};
  if (auto ec = m_writer_lock.lock(m_fd, lock_writer, os::lock_kind::exclusive, wait)) {
    if (would_block(ec)) return false;
    throw_os(ec, "write lock");
  }
  try {
    if (!recovery::position_current(files(), m_log.position(), header()->txn)) {
      m_log.position() = recovery::replay_pending(files());
      m_log_top = unknown_page;  // another process's records: their pages are not known here
    }
    ensure_mapped(static_cast<std::size_t>(header()->arena_size));
    if (!kept_fresh()) drop_kept();  // another process changed the file since our last commit
    m_direct_from = first_direct_page();
  } catch (...) {
    m_writer_lock.unlock();
    throw;
  }
  admit.e = nullptr;
  guard.release();
  m_writer_thread.store(os::current_thread(), std::memory_order_relaxed);
  m_slot->writer.store(os::current_thread(), std::memory_order_release);
  ts.writers.push(this);
  return true;
}

inline void engine::end_write() noexcept {
  if (forked()) return;  // the parent's locks are not ours
  TMF_ASSERT(is_writer_thread());
  if (has_changes() && !m_poison) ++m_rollbacks;
  m_freed.clear();
  m_force_record = false;
  // After a failed apply the private copies are the committed state: keep them.
  if (m_dirty.reset(m_base, mapped(), !m_poison))
    fatal("cannot drop private pages at the end of a writer (madvise/mprotect failed)");
  m_slot->writer.store(0, std::memory_order_release);
  m_writer_thread.store(0, std::memory_order_relaxed);
  this_thread().writers.remove(this);
  m_writer_lock.unlock();
  admit_readers();
  m_writer_mutex.unlock();
}

inline void engine::commit() {
  check_writer("commit");
  if (!has_changes()) {
    ++m_commits;  // nothing changed: nothing to log
    return;
  }
  m_force_record = false;
  maybe_cut_arena();
  file_header* h = header();
  const std::uint64_t txn = h->txn + 1;
  h->txn = txn;  // dirties page 0 first, so that it is in the list collected below
  m_dirty.collect(m_base, mapped(), m_pagemap);
  const std::uint64_t* pages = m_dirty.pages();
  const std::size_t n = m_dirty.count();
  TMF_ASSERT(n > 0 && pages[0] == 0);  // the header page is always logged
  TMF_ASSERT_EXPENSIVE(std::adjacent_find(pages, pages + n, [](std::uint64_t a, std::uint64_t b) { return a >= b; }) ==
                       pages + n);  // ascending, no duplicates: the log replays in order
  TMF_ASSERT(pages[n - 1] * page_size < mapped());
  log_position& pos = m_log.position();
  // Pages that were free at the transaction's start and in no record of the log's generation
  // go straight into the data file (write_direct); the rest are diffed, logged and applied.
  // Durable commits log every page: a direct page would need a sync of the data file before
  // the record, and that sync costs more than the log write it saves (README, "Fresh pages").
  std::size_t logged =
      m_opt.sync == durability::full
          ? n
          : static_cast<std::size_t>(std::lower_bound(pages, pages + n, m_direct_from) - pages);
  TMF_ASSERT(logged > 0);  // m_direct_from > 0: the header page is logged
  std::error_code ec;
  try {
    // Only the changed bytes are logged and applied. Page 0's extent covers the whole header,
    // so the record's size is known before the header (which records where it ends) is sealed.
    ec = diff_pages(m_fd, pages, logged, m_base, m_extents, m_diff_scratch, &m_committed);
  } catch (const std::bad_alloc&) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  }
  if (ec) fail_commit(ec, txn);
  ec = write_direct(pages + logged, n - logged);
  if (ec) fail_commit(ec, txn);
  const std::uint64_t end = pos.offset + record_size(m_extents.size(), extent_bytes(m_extents.data(), m_extents.size()));
  h->max_size = m_max_size;
  h->last_sync = m_opt.sync == durability::full ? 1 : 2;  // for inspection (tmf info)
  h->log_base = pos.base_txn;
  h->log_end = end;
  seal_header(*h);

  try {
    ec = m_log.append(txn, m_file_id, m_extents.data(), m_extents.size(), m_base, extent_checksums::header_only);
  } catch (const std::bad_alloc&) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  }
  // The commit point: this one fdatasync orders the whole record (trailer included) before
  // commit() returns; nothing else is synced per commit.
  if (!ec && m_opt.sync == durability::full) ec = m_log.sync();
  if (ec) fail_commit(ec, txn);
  // Durable: from here on nothing may turn the commit into an error.
  m_pages_logged += logged;
  m_pages_direct += n - logged;
  m_last_commit_pages.store(n, std::memory_order_relaxed);
  if (m_log_top != unknown_page) m_log_top = std::max(m_log_top, pages[logged - 1] + 1);
  m_log_bytes += end - pos.offset;
  pos = {pos.base_txn, pos.generation, end, txn};
  apply_committed(txn);
  ++m_commits;
  if (!m_freed.empty()) {
    try {
      m_to_punch.insert(m_to_punch.end(), m_freed.begin(), m_freed.end());
      for (const auto& [b, e] : m_freed) m_to_punch_bytes += e - b;
    } catch (const std::bad_alloc&) {  // they stay on disk (storage::compact punches them)
    }
    m_freed.clear();
  }
  maybe_checkpoint();
  m_direct_from = first_direct_page();  // the writer stays open: its next transaction starts here
}

/// The record could not be made durable: void it, durably, so that it can never be
/// replayed, then undo the transaction. If voiding fails too, the outcome is unknown.
inline void engine::fail_commit(std::error_code ec, std::uint64_t txn) {
  static const char zeros[sizeof(record_header)] = {};
  const log_position& pos = m_log.position();
  std::error_code void_ec = os::pwrite_all(m_log.file(), zeros, sizeof zeros, pos.offset);
  // Orders the void before the rollback is reported: a claimed rollback must hold.
  if (!void_ec && m_opt.sync == durability::full) void_ec = m_log.sync();
  rollback_pages();
  if (void_ec) {
    m_unknown = {pos.base_txn, pos.generation, pos.offset, txn};
    poison(errc::commit_unknown, ec);
    throw error(errc::commit_unknown, "tmf: commit to " + m_name + " failed (" + ec.message() +
                                          ") and so did voiding its record (" + void_ec.message() +
                                          "): whether it happened is settled when the storage is reopened");
  }
  throw_os(ec, "commit to " + m_name + " failed; the transaction was rolled back");
}

/// Copies a logged (durable) transaction into the data file and drops the private copies.
/// Never fails the commit: an I/O error is retried, and if it persists the storage must be
/// reopened (errc::needs_reopen) while the log, which every process replays before it
/// reads past the apply marker, keeps the commit.
inline void engine::apply_committed(std::uint64_t txn) noexcept {
  std::error_code ec;
  for (int attempt = 0; attempt < 3; ++attempt) {
    apply_gate::exclusive_hold hold;
    ec = m_gate.exclusive(hold);
    if (!ec) ec = write_apply_marker(m_log.file(), txn);  // before any page: a half-applied file is recognised
    try {
      if (!ec) ec = apply_extents(m_fd, m_extents.data(), m_extents.size(), m_base);
    } catch (const std::bad_alloc&) {
      ec = std::make_error_code(std::errc::not_enough_memory);
    }
    if (!ec) break;
  }
  if (ec) {
    // The data file may be half-applied. Other processes repair it from the log before they
    // read (the marker); this one keeps its private copies (its view is the commit's).
    write_apply_marker(m_log.file(), txn);  // best effort, in case the gate was what failed
    poison(errc::needs_reopen, ec);
    if (m_dirty.reset(m_base, mapped(), false, dirty_set::header_page::keep))
      fatal("cannot re-protect private pages after a failed apply (mprotect failed)");
    return;
  }
  // Hot pages keep their private copies (options::kept_pages), valid while the file's txn is ours.
  if (m_dirty.choose_kept(m_base, mapped())) fatal("cannot drop private pages after commit (madvise failed)");
  m_kept_txn.store(m_dirty.kept_count() ? txn : 0, std::memory_order_relaxed);
  // The header page keeps its private copy (now equal to the file) while this writer
  // lives: every commit writes it, and this saves a fault per commit.
  // The chunks this commit wrote stay writable for the writer's next transaction.
  if (m_dirty.reset(m_base, mapped(), true, dirty_set::header_page::keep, true))
    fatal("cannot drop private pages after commit (madvise/mprotect failed)");
}

/// At the start of a transaction (a writer's, or after its commit): the first page of the
/// top free block past its node's page (the arena's end if it has none), or past every page
/// a record of the log's generation may hold. No committed byte lies in those pages, and no
/// replay rewrites them: a no_sync commit may write its pages there into the data file
/// before its record, since until the record exists they are still free. A store there is
/// then neither diffed, logged nor applied.
inline std::uint64_t engine::first_direct_page() noexcept {
  if (m_log.position().offset == log_start) m_log_top = 0;  // the generation holds no record
  if (header()->root == 0) return unknown_page;  // a new file: the heap is built in this transaction
  heap hp = arena_heap();
  const auto end = static_cast<std::uint64_t>(static_cast<unsigned char*>(hp.end()) - m_base);
  const std::size_t top = hp.top_free_bytes();
  const std::uint64_t first = top == 0 ? end / page_size : (end - top) / page_size + 1;  // past the node's page
  return std::max(first, m_log_top);
}

/// Writes the dirty pages `pages[0..n)` (ascending, all at or past m_direct_from) into the
/// data file, one write per run of adjacent pages, before the record that makes them live.
/// durability::no_sync only: a durable commit would have to sync them first.
inline std::error_code engine::write_direct(const std::uint64_t* pages, std::size_t n) noexcept {
  TMF_ASSERT(n == 0 || m_opt.sync != durability::full);
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i + 1;
    while (j < n && pages[j] == pages[j - 1] + 1) ++j;
    if (auto ec = os::pwrite_all(m_fd, m_base + pages[i] * page_size, (j - i) * page_size, pages[i] * page_size))
      return ec;
    i = j;
  }
  return {};
}

inline void engine::maybe_checkpoint() noexcept {
  const log_position& pos = m_log.position();
  const bool give = m_cut_to != 0 || (m_opt.give_back_bytes != 0 && m_to_punch_bytes >= m_opt.give_back_bytes);
  if (m_poison || (pos.offset - log_start <= m_opt.checkpoint_bytes && !give)) return;
  std::error_code cause;
  if (recovery::checkpoint(files(), m_checkpoint, pos.seen_txn, log_start + m_opt.checkpoint_bytes, cause)) {
    poison(errc::needs_reopen, cause);
    return;
  }
  give_back();
}

/// Inside a commit, before its pages are collected: a free block of more than
/// truncate_bytes at the end of the arena is cut off (the file is truncated once this
/// commit is durable in the data file, give_back).
inline void engine::maybe_cut_arena() noexcept {
  if (m_opt.truncate_bytes == 0) return;
  heap hp = arena_heap();
  if (hp.top_free_bytes() <= m_opt.truncate_bytes) return;
  void* end = hp.trim_top(cut_granule);
  const auto arena = static_cast<std::uint64_t>(static_cast<unsigned char*>(end) - m_base);
  if (arena == header()->arena_size) return;
  header()->arena_size = arena;
  m_cut_to = arena;
}

/// After a checkpoint that synced the data file: every free recorded in m_to_punch and a
/// cut of the arena are durable in the data file itself, so a crash can no longer bring
/// back a state in which those pages are live. Each range is checked against the heap as
/// it is now (a later transaction may have reused it) and only pages still inside a free
/// block that records holes there are punched. No private copy of them exists in this
/// process: a commit drops every private page but the header page and the kept pages, which
/// are dropped first, so the mapping reads the holes as zeros, and other processes'
/// mappings follow the file.
inline void engine::give_back() noexcept {
  if (m_poison || m_checkpoint.data_sync_failed || header()->root == 0) return;
  // Kept copies of pages about to be cut off or punched would hide the holes: drop them all.
  if (m_cut_to != 0 || !m_to_punch.empty()) drop_kept();
  if (m_cut_to != 0) {
    os::file_info fi;
    if (!os::stat_file(m_fd, fi) && fi.size > m_cut_to && m_cut_to == header()->arena_size)
      if (!os::truncate(m_fd, m_cut_to)) m_given_back += fi.size - m_cut_to;
    m_cut_to = 0;
  }
  if (m_to_punch.empty()) return;
  std::vector<page_range> ranges;
  ranges.swap(m_to_punch);
  m_to_punch_bytes = 0;
  if (m_punch_unsupported || m_opt.give_back_bytes == 0) return;
  std::sort(ranges.begin(), ranges.end());
  heap hp = arena_heap();
  // Adjacent pieces (consecutive frees coalesce into one block) are punched together: one
  // system call per run of pages, not one per freed block.
  std::uintptr_t run_b = 0, run_e = 0;
  auto punch = [&] {
    if (run_e <= run_b || m_punch_unsupported) return;
    std::error_code ec = os::punch_hole(m_fd, run_b - reinterpret_cast<std::uintptr_t>(m_base), run_e - run_b);
    if (ec == std::errc::operation_not_supported)
      m_punch_unsupported = true;
    else if (!ec)
      m_given_back += run_e - run_b;
    // Another error: the pages stay allocated, which is harmless.
  };
  std::uintptr_t done = 0;  // ranges overlap where a block grew by coalescing: punch once
  for (auto [b, e] : ranges) {
    b = std::max(b, done);
    if (b >= e) continue;
    done = e;
    hp.for_each_hole(b, e, [&](std::uintptr_t pb, std::uintptr_t pe) {
      if (pb <= run_e && pe > run_e && run_e > run_b) {
        run_e = pe;
        return;
      }
      punch();
      run_b = pb;
      run_e = pe;
    });
  }
  punch();
}

/// heap_backing::reserve: allocates the data file's pages [begin, end) again (they may be holes).
inline bool engine::reserve_pages(void* ctx, std::uintptr_t begin, std::uintptr_t end) noexcept {
  auto* e = static_cast<engine*>(ctx);
  const auto base = reinterpret_cast<std::uintptr_t>(e->m_base);
  if (!os::allocate(e->m_fd, begin - base, end - begin)) return true;
  e->m_reserve_failed = true;
  return false;
}

/// heap_backing::released: pages this transaction freed, to punch once it is durable.
inline void engine::released_pages(void* ctx, std::uintptr_t begin, std::uintptr_t end) noexcept {
  auto* e = static_cast<engine*>(ctx);
  if (e->m_opt.give_back_bytes == 0 || e->m_punch_unsupported) return;
  try {
    e->m_freed.emplace_back(begin, end);
  } catch (const std::bad_alloc&) {  // not punched: harmless
  }
}

/// Undoes the transaction; the header page stays writable for the writer's next one.
inline void engine::rollback_pages() noexcept {
  if (has_changes()) ++m_rollbacks;
  m_freed.clear();  // the frees are undone, and so is a cut of the arena
  m_cut_to = 0;
  m_force_record = false;
  if (m_dirty.reset(m_base, mapped(), true, dirty_set::header_page::keep_discard))
    fatal("cannot drop private pages on rollback (madvise/mprotect failed)");
}

/// Whether the transaction changed anything: a page other than the header, or the header
/// itself (its checksum is sealed at every commit).
inline bool engine::has_changes() noexcept {
  const file_header* h = header();
  return m_force_record || h->checksum != header_checksum(*h) || h->max_size != m_max_size ||
         m_dirty.beyond_header(m_base, mapped());
}

// -- read transactions --------------------------------------------------------------------

/// Raises the writer flag and waits for this process's readers to end. Without `wait`,
/// false (flag lowered) if some are open. m_writer_mutex held.
inline bool engine::exclude_readers(bool wait) noexcept {
  std::atomic_ref<std::uint32_t>(m_writer_flag).store(2);
  for (reader_lane& l : m_lanes->lanes) {
    for (std::uint32_t v = load_word(l.count); v != 0; v = load_word(l.count)) {
      if (!wait) {
        admit_readers();
        return false;
      }
      os::wait_on(&l.count, v, -1);
    }
  }
  return true;
}

inline bool engine::readers_open() const noexcept {
  for (const reader_lane& l : m_lanes->lanes)
    if (load_word(l.count) != 0) return true;
  return false;
}

inline bool engine::begin_read(bool wait) {
  check_usable();
  if (is_writer_thread())
    throw error(errc::already_open, "tmf: this thread holds the writer of " + m_name + "; read through the writer");
  thread_state& ts = this_thread();
  if (ts.readers.full()) throw error(errc::already_open, "tmf: too many nested readers");
  // A nested read on a thread that already reads this storage must not wait for a writer
  // or a commit: they wait for it.
  const bool nested = ts.readers.contains(this);
  reader_lane& lane = m_lanes->lanes[thread_lane()];
  for (;;) {
    enter_lane(lane);
    if (nested) break;
    if ((load_word(m_writer_flag) | load_word(*m_pending)) == 0) {
      // Entered. Without a reader table, the other processes are kept out below. With one,
      // the view is ready unless a dead writer left the data file behind the log's apply
      // marker, or the private pages of a read-only recovery may be dropped.
      if (!m_table.is_open() || (view_applied() && kept_fresh())) break;
      leave_lane(lane, m_writer_flag, *m_pending);
      if (!settle_view(wait)) return false;
      continue;
    }
    leave_lane(lane, m_writer_flag, *m_pending);
    if (!wait) return false;
    if (load_word(m_writer_flag) != 0)
      wait_word_zero(m_writer_flag, [](std::uint32_t) {});
    else
      m_table.wait_pending(m_fd);
  }
  struct leave_unless_done {
    engine* e;
    reader_lane& l;
    ~leave_unless_done() {
      if (e) leave_lane(l, e->m_writer_flag, *e->m_pending);
    }
  } leave{this, lane};
  if (!m_table.is_open()) {
    // Other processes' commits: the process's first reader takes the apply lock shared.
    for (bool passed_turnstile = false;;) {
      bool first;
      {
        std::lock_guard<std::mutex> g(m_reader_mutex);
        first = m_readers == 0;
        if (!first && (nested || passed_turnstile || !m_gate.commit_pending())) {
          ++m_readers;
          break;
        }
      }
      if (first) {
        // Without holding m_reader_mutex: the readers that end meanwhile do not wait for it.
        std::lock_guard<std::mutex> a(m_apply_mutex);
        {
          std::lock_guard<std::mutex> g(m_reader_mutex);
          if (m_readers != 0) continue;  // another thread was first meanwhile
        }
        if (!first_reader_lock(wait)) return false;
        std::lock_guard<std::mutex> g(m_reader_mutex);
        ++m_readers;
        break;
      }
      // A commit elsewhere waits for this process's readers to drain: do not join them.
      if (!wait) return false;
      if (auto ec = m_gate.pass_turnstile(true)) throw_os(ec, "turnstile lock");
      passed_turnstile = true;
    }
  }
  leave.e = nullptr;
  ts.readers.push(this);
  try {
    ensure_mapped(static_cast<std::size_t>(header()->arena_size));
  } catch (...) {
    end_read();
    throw;
  }
  return true;
}

inline void engine::end_read() noexcept {
  if (forked()) return;
  this_thread().readers.remove(this);
  if (!m_table.is_open()) {
    std::lock_guard<std::mutex> g(m_reader_mutex);
    if (--m_readers == 0) m_apply_shared.unlock();
  }
  leave_lane(m_lanes->lanes[thread_lane()], m_writer_flag, *m_pending);
}

/// With a reader table, a reader that found the data file behind the log's apply marker, or
/// kept pages of an older transaction than the file's: with this process's readers and
/// writer kept out, drops the stale kept pages, drops the private pages of a read-only
/// recovery once the data file has caught up with them, or repairs a half-applied commit of
/// a dead writer. Returns to let the caller try again; false if `wait` is false and it would
/// have to wait.
inline bool engine::settle_view(bool wait) {
  std::unique_lock<std::mutex> w(m_writer_mutex, std::defer_lock);
  if (wait)
    w.lock();
  else if (!w.try_lock())
    return false;
  if (!exclude_readers(wait)) return false;
  struct admit_at_end {
    engine* e;
    ~admit_at_end() { e->admit_readers(); }
  } admit{this};
  if (!kept_fresh()) drop_kept();  // another process committed (or compacted) since our last commit
  if (m_private_txn.load()) {
    drop_private_if_caught_up();
    if (!m_private_txn.load()) return true;
  }
  if (view_applied()) return true;
  // An apply in another process (this one has no writer now) is not a dead writer's: the
  // caller waits for it on the pending word.
  bool free = false;
  if (auto ec = os::lock_would_succeed(m_fd, lock_apply, os::lock_kind::shared, free)) throw_os(ec, "apply lock");
  if (!free) return true;
  return repair_after_dead_writer(wait);
}

/// Replays the commit a dead writer left half-applied (the data file behind the log's
/// apply marker), under the writer lock. False if `wait` is false and the lock is taken.
/// \throws error{errc::read_only} in a read-only process, which cannot repair.
inline bool engine::repair_after_dead_writer(bool wait) {
  if (!m_writable)
    throw error(errc::read_only,
                "tmf: " + m_name + " needs recovery (a writer died while committing); open it writable once");
  byte_lock writer;
  if (auto ec = writer.lock(m_fd, lock_writer, os::lock_kind::exclusive, wait)) {
    if (would_block(ec)) return false;
    throw_os(ec, "write lock");
  }
  m_log.position() = recovery::replay_pending(files());
  return true;
}

/// The process's first reader: takes the apply lock shared; repairs a half-applied commit
/// left by a dead writer first. m_apply_mutex held.
inline bool engine::first_reader_lock(bool wait) {
  for (;;) {
    if (auto ec = m_gate.shared(wait, m_apply_shared)) {
      if (would_block(ec)) return false;
      throw_os(ec, "apply lock");
    }
    if (m_private_txn.load()) drop_private_if_caught_up();
    if (view_applied()) return true;
    m_apply_shared.unlock();
    if (!repair_after_dead_writer(wait)) return false;
  }
}

/// A read-only process's recovered view: once a writer has brought the data file to (or
/// past) it, the private pages are dropped and the mapping shows the file again. No reader
/// of this process reads meanwhile (the first reader without a reader table, or under the
/// writer flag).
inline void engine::drop_private_if_caught_up() {
  if (recovery::read_data_header(files()).txn < m_private_txn) return;
  const std::uint64_t* p = m_private_pages.data();
  for (std::size_t i = 0, n = m_private_pages.size(); i < n;) {
    std::size_t j = i + 1;
    while (j < n && p[j] == p[j - 1] + 1) ++j;
    if (auto ec = os::discard(m_base + p[i] * page_size, (j - i) * page_size))
      throw_os(ec, "cannot drop the recovered pages of " + m_name);
    i = j;
  }
  m_private_pages.clear();
  m_private_txn = 0;
}

// -- allocation and growth ----------------------------------------------------------------

inline void* engine::allocate(std::size_t size, std::size_t align) {
  check_fork();
  if (!is_writer_thread()) throw error(errc::no_writer, "tmf: allocation in " + m_name + " by a thread without its writer");
  heap hp = arena_heap();
  m_reserve_failed = false;
  if (void* p = hp.allocate(size, align)) return p;
  // No disk for the holes of the block that fits (a full disk): as when growth fails.
  if (m_reserve_failed || align > page_size || (align & (align - 1)) != 0) throw std::bad_alloc();
  grow(hp.growth_needed(size, align));
  void* p = hp.allocate(size, align);
  if (p == nullptr && m_reserve_failed) throw std::bad_alloc();
  TMF_ASSERT(p != nullptr);
  return p;
}

/// Maps the file up to `size` bytes (other processes may have grown it).
inline void engine::ensure_mapped(std::size_t size) {
  if (size <= m_mapped.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> g(m_map_mutex);
  const std::size_t have = mapped();
  if (size <= have) return;
  if (size > m_reserved) throw error(errc::corrupted, "tmf: " + m_name + " grew beyond this process's reservation");
  // Views begin at multiples of os::map_granularity (the page on Linux, 64 KiB on Windows):
  // map whole granules, first extending a writable file whose arena ends inside one.
  const std::size_t granule = os::map_granularity;
  if (size % granule != 0) {
    const std::size_t want = std::min(m_reserved, (size + granule - 1) / granule * granule);
    os::file_info fi;
    if (auto ec = os::stat_file(m_fd, fi)) throw_os(ec, "cannot stat " + m_name);
    if (fi.size < want && m_writable)
      if (auto ec = os::allocate(m_fd, fi.size, want - fi.size)) throw_os(ec, "cannot extend " + m_name);
    if (fi.size >= want || m_writable) size = want;
  }
  if (auto ec = os::map_file(m_base + have, size - have, m_fd, have)) throw_os(ec, "cannot map " + m_name);
  // The new mapping replaced reserved space: kernel tracking must register it afresh.
  if (m_uffd.is_open())
    if (auto ec = os::track_writes(m_uffd, m_base + have, size - have))
      throw_os(ec, "cannot track writes to the grown part of " + m_name);
  m_mapped.store(size, std::memory_order_release);
  if (m_slot) m_slot->mapped.store(size, std::memory_order_release);
}

/// Adds at least `need` bytes at the end of the arena. std::bad_alloc when max_size or the
/// disk is exhausted.
inline void engine::grow(std::size_t need) {
  file_header* h = header();
  const auto cur = static_cast<std::size_t>(h->arena_size);
  if (need > m_reserved - cur) throw std::bad_alloc();
  constexpr std::size_t granule = std::size_t{64} << 10;
  std::size_t step = std::max({need, cur / 4, std::size_t{1} << 20});
  step = (step + granule - 1) / granule * granule;
  std::size_t target = cur + std::min(step, m_reserved - cur);
  os::file_info fi;
  if (os::stat_file(m_fd, fi)) throw std::bad_alloc();
  // From the arena's end, not the file's: past a cut whose truncation failed, the file may
  // hold holes (give_back), which the new free space must not inherit.
  const std::uint64_t from = std::min<std::uint64_t>(fi.size, cur);
  if (os::allocate(m_fd, from, target - from)) {
    // Not enough disk for the comfortable step: try the bare need.
    target = cur + (need + page_size - 1) / page_size * page_size;
    if (os::allocate(m_fd, from, target - from)) throw std::bad_alloc();
  }
  try {
    ensure_mapped(target);
  } catch (const error&) {
    throw std::bad_alloc();
  }
  arena_heap().grow(m_base + target);
  h->arena_size = target;
}

// -- inspection ---------------------------------------------------------------------------

inline storage_stats engine::stats() {
  check_fork();
  view v(*this);
  os::file_info fi;
  os::stat_file(m_fd, fi);
  heap hp = arena_heap();
  const bool ready = header()->root != 0;
  std::vector<size_class_stats> classes;
  for (std::size_t c = 0; c < heap::size_class_count(); ++c) {
    classes.push_back(ready ? hp.class_stats(c) : size_class_stats{heap::class_block_size(c), 0, 0, 0});
  }
  return {static_cast<std::size_t>(fi.size),
          static_cast<std::size_t>(header()->arena_size),
          ready ? hp.allocated_bytes() : 0,
          ready ? hp.free_bytes() : 0,
          ready ? hp.free_blocks() : 0,
          ready ? hp.largest_free_block() : 0,
          m_commits.load(),
          m_rollbacks.load(),
          m_pages_logged.load(),
          m_dirty.kernel_tracking() ? "userfaultfd" : "mprotect",
          m_last_commit_pages.load(std::memory_order_relaxed),
          ready ? hp.spare_bytes() : 0,
          std::move(classes),
          static_cast<std::size_t>(fi.disk_bytes),
          m_given_back.load(),
          m_log_bytes.load(),
          m_dirty.kept_count(),
          m_pages_direct.load()};
}

inline void engine::check() {
  check_fork();
  view v(*this);
  const file_header* h = header();
  auto fail = [&](const std::string& what) { throw error(errc::corrupted, "tmf: " + m_name + ": " + what); };
  if (header_checksum(*h) != h->checksum && !is_writer_thread()) fail("header checksum mismatch");
  if (h->arena_size > m_mapped.load() || h->arena_size < page_size) fail("arena size out of range");
  if (h->root == 0) return;
  const auto root = static_cast<std::uintptr_t>(h->root);
  const auto b = reinterpret_cast<std::uintptr_t>(m_base);
  if (root < b + page_size || root + h->root_size > b + h->arena_size) fail("root pointer outside the arena");
  if (root % min_block_align != 0 || (h->root_align != 0 && root % h->root_align != 0)) {
    char buf[24];
    fail(std::string("root pointer ") + format_hex(root, buf) + " is not aligned as its type needs");
  }
  heap hp = arena_heap();
  if (hp.begin() != m_base + page_size || hp.end() != m_base + h->arena_size) fail("heap bounds differ from the arena");
  hp.check();
}

}  // namespace tmf::detail

#include "engine_open.hpp"

#endif  // TMF_DETAIL_ENGINE_HPP
