// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The untyped storage: files, address reservation, locks, transactions, growth, recovery.
///
/// Files: the data file `<path>` (page 0: header; then the arena) and the log `<path>-log`.
/// The data file is mapped MAP_PRIVATE and read-only at the header's fixed address; it only
/// ever holds committed state, so another process's readers never see a transaction in
/// progress. A commit logs the dirty pages (one fdatasync), then copies them into the data
/// file under the apply lock and drops the private copies.
///
/// Locks are open-file-description byte locks on the data file, held per process:
///  - byte 0, the open lock: shared while a process has the file open. Whoever gets it
///    exclusively at open is alone and runs full recovery (replaying the whole log); whoever
///    gets it exclusively at close is the last and checkpoints.
///  - byte 1, the writer lock: exclusive for a writer's whole life.
///  - byte 2, the apply lock: shared while a process has read transactions; exclusive while
///    a commit copies pages into the data file.
///  - byte 3, the turnstile, and the "commit pending" word in the log's first page: Linux
///    grants a shared lock past a waiting exclusive one, so overlapping readers could starve
///    a commit forever. A committer takes the turnstile, raises the pending word, then waits
///    for the apply lock; readers that see the word (through a shared view of the page) do
///    not start but queue on the turnstile until the commit is applied.
/// Inside a process a writer-preferring rw_mutex orders the writer against readers: they share the
/// writer's mapping, private copies included.
///
/// A writer that dies while applying leaves the data file half-written with its header
/// (page 0, written last) still old. Before applying, the committer stamps the transaction
/// id in the log's apply marker; a reader that finds the marker ahead of the data file's
/// header repairs the file (replays the record) before reading, as does the next writer.
#ifndef TMF_DETAIL_ENGINE_HPP
#define TMF_DETAIL_ENGINE_HPP

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <new>
#include <random>
#include <string>

#include "../error.hpp"
#include "../options.hpp"
#include "config.hpp"
#include "format.hpp"
#include "heap.hpp"
#include "log.hpp"
#include "os.hpp"
#include "tracker.hpp"

namespace tmf::detail {

inline constexpr unsigned lock_open = 0, lock_writer = 1, lock_apply = 2, lock_turnstile = 3;
inline constexpr std::uint64_t apply_marker_offset = 512;
/// A word in the log's first page, non-zero while a committer waits for the apply lock.
inline constexpr std::uint64_t commit_pending_offset = 576;
/// A word in the log's first page, non-zero after a data-file sync failed: the log must be
/// re-applied before any process restarts it (the kernel may have dropped the pages).
inline constexpr std::uint64_t reapply_needed_offset = 584;
inline constexpr char apply_marker_magic[8] = {'t', 'm', 'f', '-', 'a', 'p', 'l', '\0'};

/// Stamped in the log before a commit's pages are copied into the data file.
struct apply_marker {
  char magic[8];
  std::uint64_t txn;
};

class engine;

/// What the calling thread holds, to refuse self-deadlocks and bind allocators.
struct thread_state {
  static constexpr std::size_t capacity = 32;
  engine* writers[capacity];  ///< active writers, innermost last
  std::size_t writer_count;
  engine* readers[capacity];  ///< one entry per active read transaction
  std::size_t reader_count;
};

inline thread_state& this_thread() noexcept {
  thread_local thread_state state{};
  return state;
}

[[noreturn]] inline void throw_os(std::error_code ec, const std::string& what) {
  throw error(ec, "tmf: " + what);  // system_error appends ": " + ec.message()
}

/// Reserves `size` bytes in the library's default zone, else wherever the kernel chooses.
inline std::error_code reserve_default(std::size_t size, void*& out) noexcept {
#if UINTPTR_MAX > 0xffffffffu
#if defined(__SANITIZE_THREAD__)
  constexpr std::uintptr_t zone_begin = 0x7e8000000000, zone_end = 0x7f0000000000;  // TSan's app range
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
  constexpr std::uintptr_t zone_begin = 0x7e8000000000, zone_end = 0x7f0000000000;
#else
  constexpr std::uintptr_t zone_begin = 0x600000000000, zone_end = 0x700000000000;
#endif
#else
  constexpr std::uintptr_t zone_begin = 0x600000000000, zone_end = 0x700000000000;
#endif
  constexpr std::uintptr_t granule = std::uintptr_t{64} << 30;
  std::uintptr_t step = (size + granule - 1) / granule * granule;
  for (std::uintptr_t a = zone_begin; a + size <= zone_end && a + size > a; a += step)
    if (!os::reserve(reinterpret_cast<void*>(a), size, true, out)) return {};
#else
  for (std::uintptr_t a = 0x10000000; a + size <= 0xc0000000u && a + size > a; a += 0x10000000)
    if (!os::reserve(reinterpret_cast<void*>(a), size, true, out)) return {};
#endif
  return os::reserve(nullptr, size, false, out);
}

class engine {
 public:
  engine(const std::filesystem::path& file, const options& opt, const root_fingerprint& root)
      : m_path(file), m_log_path(file.string() + "-log"), m_opt(opt), m_root_fp(root) {
    try {
      open();
    } catch (...) {
      close_all(false);
      throw;
    }
  }
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;
  ~engine() { close_all(true); }

  // -- accessors --------------------------------------------------------------------------
  unsigned char* base() const noexcept { return m_base; }
  file_header* header() const noexcept { return reinterpret_cast<file_header*>(m_base); }
  heap arena_heap() const noexcept { return heap(reinterpret_cast<heap_state*>(header()->heap)); }
  const std::filesystem::path& path() const noexcept { return m_path; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(header()->arena_size); }
  bool writable() const noexcept { return m_writable; }
  /// True on the thread holding the writer; never in a forked child (whose thread may
  /// carry the same id as the parent's writer).
  bool is_writer_thread() const noexcept {
    return m_writer_thread.load(std::memory_order_relaxed) == os::current_thread() &&
           os::fork_generation() == m_fork_generation;
  }
  void* root() const noexcept { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(header()->root)); }

  void check_fork() const {
    if (os::fork_generation() != m_fork_generation)
      throw error(errc::forked, "tmf: " + m_path.string() + " was opened by the parent process before fork()");
  }

  // -- write transactions -----------------------------------------------------------------

  /// Becomes the writer (this thread). Returns false if `wait` is false and it is taken.
  bool begin_write(bool wait) {
    check_fork();
    if (!m_writable) throw error(errc::read_only, "tmf: " + m_path.string() + " is open read-only");
    if (m_poison) throw error(m_poison, "tmf: " + m_path.string() + " is unusable after a failed apply");
    if (is_writer_thread())
      throw error(errc::already_open, "tmf: this thread already holds the writer of " + m_path.string());
    thread_state& ts = this_thread();
    for (std::size_t i = 0; i < ts.reader_count; ++i)
      if (ts.readers[i] == this)
        throw error(errc::already_open,
                    "tmf: this thread holds a reader of " + m_path.string() + "; a writer would deadlock");
    if (ts.writer_count == thread_state::capacity) throw error(errc::already_open, "tmf: too many nested writers");
    if (wait)
      m_rw.lock();
    else if (!m_rw.try_lock())
      return false;
    std::unique_lock<os::rw_mutex> guard(m_rw, std::adopt_lock);
    bool got = false;
    if (auto ec = os::lock_byte(m_fd, lock_writer, os::lock_kind::exclusive, wait, got)) throw_os(ec, "write lock");
    if (!got) return false;
    try {
      if (!last_writer_was_us()) replay_pending();
      ensure_mapped(static_cast<std::size_t>(header()->arena_size));
    } catch (...) {
      os::lock_byte(m_fd, lock_writer, os::lock_kind::unlock, true, got);
      throw;
    }
    guard.release();
    m_writer_thread.store(os::current_thread(), std::memory_order_relaxed);
    m_region->writer.store(os::current_thread(), std::memory_order_release);
    ts.writers[ts.writer_count++] = this;
    return true;
  }

  /// Rolls back what was not committed and releases the writer.
  void end_write() noexcept {
    if (os::fork_generation() != m_fork_generation) return;  // the parent's locks are not ours
    TMF_ASSERT(is_writer_thread());
    if (has_changes()) ++m_rollbacks;
    if (m_dirty.reset(m_base, m_mapped.load(std::memory_order_relaxed), true))
      fatal("cannot drop private pages at the end of a writer (madvise/mprotect failed)");
    m_region->writer.store(0, std::memory_order_release);
    m_writer_thread.store(0, std::memory_order_relaxed);
    thread_state& ts = this_thread();
    for (std::size_t i = ts.writer_count; i-- > 0;)
      if (ts.writers[i] == this) {
        std::copy(ts.writers + i + 1, ts.writers + ts.writer_count, ts.writers + i);
        --ts.writer_count;
        break;
      }
    bool got;
    os::lock_byte(m_fd, lock_writer, os::lock_kind::unlock, true, got);
    m_rw.unlock();
  }

  /// Makes everything since the last commit atomic and durable.
  void commit() {
    check_writer("commit");
    if (!has_changes()) {
      ++m_commits;  // nothing changed: nothing to log
      return;
    }
    file_header* h = header();
    const std::uint64_t txn = h->txn + 1;
    h->txn = txn;  // dirties page 0 first, so that it is in the list collected below
    m_dirty.collect(m_base, m_mapped.load(std::memory_order_relaxed), m_pagemap_fd);
    const std::size_t n = m_dirty.count();
    TMF_ASSERT(n > 0 && m_dirty.pages()[0] == 0);  // the header page is always logged
    TMF_ASSERT_EXPENSIVE(std::adjacent_find(m_dirty.pages(), m_dirty.pages() + n,
                                            [](std::uint64_t a, std::uint64_t b) { return a >= b; }) ==
                         m_dirty.pages() + n);  // ascending, no duplicates: the log replays in order
    TMF_ASSERT(m_dirty.pages()[n - 1] * page_size < m_mapped.load(std::memory_order_relaxed));
    const std::uint64_t off = m_log_off;
    const std::uint64_t end = off + record_size(n);
    h->max_size = m_max_size;
    h->log_base = m_log_base;
    h->log_end = end;
    seal_header(*h);

    std::error_code ec = ensure_log_space(end);
    if (!ec) ec = write_record(m_log_fd, off, txn, h->file_id, m_dirty.pages(), n, m_base);
    if (!ec && m_opt.sync == durability::full) ec = os::sync_data(m_log_fd);
    if (ec) {
      // Make sure the failed record can never be replayed, then undo the transaction.
      static const char zeros[sizeof(record_header)] = {};
      os::pwrite_all(m_log_fd, zeros, sizeof zeros, off);
      rollback_pages();
      throw_os(ec, "commit to " + m_path.string() + " failed; the transaction was rolled back");
    }
    m_pages_logged += n;
    apply_committed(txn, n);
    TMF_ASSERT(!m_dirty.beyond_header());  // only the kept header page is still private
    m_log_off = end;
    m_seen_txn = txn;
    ++m_commits;
    if (m_log_off - log_start > m_opt.checkpoint_bytes) checkpoint();
  }

  /// Undoes everything since the last commit, allocations included.
  void rollback() {
    check_writer("rollback");
    rollback_pages();
  }

  // -- read transactions ------------------------------------------------------------------

  bool begin_read(bool wait) {
    check_fork();
    if (is_writer_thread())
      throw error(errc::already_open,
                  "tmf: this thread holds the writer of " + m_path.string() + "; read through the writer");
    thread_state& ts = this_thread();
    if (ts.reader_count == thread_state::capacity) throw error(errc::already_open, "tmf: too many nested readers");
    // A nested read on a thread that already reads this storage must not queue behind a
    // waiting writer: it would wait for itself.
    const bool nested = holds_reader(ts);
    if (!nested) {
      if (wait)
        m_rw.lock_shared();
      else if (!m_rw.try_lock_shared())
        return false;
    }
    bool passed_turnstile = false;
    for (;;) {
      try {
        std::lock_guard<std::mutex> g(m_reader_mutex);
        if (m_readers == 0) {
          if (!acquire_apply_shared(wait)) {
            if (!nested) m_rw.unlock_shared();
            return false;
          }
          ++m_readers;
          break;
        }
        if (nested || passed_turnstile || !commit_pending()) {
          ++m_readers;
          break;
        }
      } catch (...) {
        if (!nested) m_rw.unlock_shared();
        throw;
      }
      // A commit elsewhere waits for this process's readers to drain: do not join them.
      bool got = false;
      std::error_code ec;
      if (wait) ec = os::lock_byte(m_fd, lock_turnstile, os::lock_kind::shared, true, got);
      if (ec || !got) {
        m_rw.unlock_shared();
        if (ec) throw_os(ec, "turnstile lock");
        return false;
      }
      os::lock_byte(m_fd, lock_turnstile, os::lock_kind::unlock, true, got);
      passed_turnstile = true;
    }
    ts.readers[ts.reader_count++] = this;
    try {
      ensure_mapped(static_cast<std::size_t>(header()->arena_size));
    } catch (...) {
      end_read();
      throw;
    }
    return true;
  }

  void end_read() noexcept {
    if (os::fork_generation() != m_fork_generation) return;
    thread_state& ts = this_thread();
    for (std::size_t i = ts.reader_count; i-- > 0;)
      if (ts.readers[i] == this) {
        std::copy(ts.readers + i + 1, ts.readers + ts.reader_count, ts.readers + i);
        --ts.reader_count;
        break;
      }
    {
      std::lock_guard<std::mutex> g(m_reader_mutex);
      if (--m_readers == 0) {
        bool got;
        os::lock_byte(m_fd, lock_apply, os::lock_kind::unlock, true, got);
      }
    }
    if (!holds_reader(ts)) m_rw.unlock_shared();
  }

  // -- allocation -------------------------------------------------------------------------

  void* allocate(std::size_t size, std::size_t align) {
    check_fork();
    if (!is_writer_thread())
      throw error(errc::no_writer, "tmf: allocation in " + m_path.string() + " by a thread without its writer");
    heap hp = arena_heap();
    if (void* p = hp.allocate(size, align)) return p;
    if (align > page_size || (align & (align - 1)) != 0) throw std::bad_alloc();
    grow(hp.growth_needed(size, align));
    void* p = hp.allocate(size, align);
    TMF_ASSERT(p != nullptr);
    return p;
  }

  void deallocate(void* p, std::size_t size) noexcept {
    if (os::fork_generation() != m_fork_generation) fatal("deallocate in a storage opened before fork()");
    if (!is_writer_thread()) fatal("deallocate in a storage by a thread without its writer");
    arena_heap().deallocate(p, size);
  }

  /// First write transaction of a new file: the heap is created in place (its trees point
  /// to themselves, so it cannot be built before the file is mapped).
  void init_heap() noexcept {
    file_header* h = header();
    heap::create(reinterpret_cast<heap_state*>(h->heap), m_base + page_size, m_base + h->arena_size);
  }
  void set_root(void* p) noexcept { header()->root = reinterpret_cast<std::uintptr_t>(p); }

  // -- inspection -------------------------------------------------------------------------

  storage_stats stats() {
    check_fork();
    view v(*this);
    os::file_info fi;
    os::stat_file(m_fd, fi);
    heap hp = arena_heap();
    bool ready = header()->root != 0;
    return {static_cast<std::size_t>(fi.size),
            static_cast<std::size_t>(header()->arena_size),
            ready ? hp.allocated_bytes() : 0,
            ready ? hp.free_bytes() : 0,
            ready ? hp.free_blocks() : 0,
            ready ? hp.largest_free_block() : 0,
            m_commits.load(),
            m_rollbacks.load(),
            m_pages_logged.load()};
  }

  /// Audits the header and the heap; throws errc::corrupted naming the problem.
  void check() {
    check_fork();
    view v(*this);
    const file_header* h = header();
    const std::string name = m_path.string();
    auto fail = [&](const std::string& what) { throw error(errc::corrupted, "tmf: " + name + ": " + what); };
    if (header_checksum(*h) != h->checksum && !is_writer_thread()) fail("header checksum mismatch");
    if (h->arena_size > m_mapped.load() || h->arena_size < page_size) fail("arena size out of range");
    if (h->root == 0) return;
    auto root = static_cast<std::uintptr_t>(h->root);
    auto b = reinterpret_cast<std::uintptr_t>(m_base);
    if (root < b + page_size || root + h->root_size > b + h->arena_size) fail("root pointer outside the arena");
    if (root % heap_quantum != 0 || (h->root_align != 0 && root % h->root_align != 0))
      fail("root pointer " + hex(root) + " is not aligned as its type needs");
    heap hp = arena_heap();
    if (hp.begin() != m_base + page_size || hp.end() != m_base + h->arena_size)
      fail("heap bounds differ from the arena");
    hp.check();
  }

 private:
  /// Holds a consistent view for inspection: the writer's own, or a read transaction.
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

  /// Writer lock held. True if the data file is still at the transaction this process
  /// last committed or recovered, and no dead writer left a record after it: then the log
  /// position is known and nothing needs replaying (one small read instead of four).
  bool last_writer_was_us() {
    if (header()->txn != m_seen_txn) return false;  // the mapping shows the file: no private copy yet
    bool valid = false;
    record_info info;
    if (check_record(m_log_fd, m_log_off, m_seen_txn + 1, m_file_id, m_reserved / page_size + 1, valid, info))
      return false;
    return !valid;
  }

  bool holds_reader(const thread_state& ts) const noexcept {
    return std::find(ts.readers, ts.readers + ts.reader_count, this) != ts.readers + ts.reader_count;
  }

  /// Whether a committer in some process waits for the apply lock (see the turnstile).
  bool commit_pending() const noexcept {
    if (!m_log_view) return false;
    return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(m_log_view + commit_pending_offset),
                           __ATOMIC_ACQUIRE) != 0;
  }

  /// Takes the apply lock exclusively for a commit or a repair, through the turnstile so
  /// that new readers queue behind it. Undone by `unlock_apply_exclusive`.
  std::error_code lock_apply_exclusive() noexcept {
    bool got;
    if (auto ec = os::lock_byte(m_fd, lock_turnstile, os::lock_kind::exclusive, true, got)) return ec;
    set_commit_pending(1);
    if (auto ec = os::lock_byte(m_fd, lock_apply, os::lock_kind::exclusive, true, got)) {
      unlock_apply_exclusive();
      return ec;
    }
    return {};
  }
  void unlock_apply_exclusive() noexcept {
    bool got;
    os::lock_byte(m_fd, lock_apply, os::lock_kind::unlock, true, got);
    set_commit_pending(0);
    os::lock_byte(m_fd, lock_turnstile, os::lock_kind::unlock, true, got);
  }
  void set_commit_pending(std::uint64_t v) noexcept {
    // Best effort: a failed write only costs fairness (readers read the word, never trust it).
    if (m_log_fd >= 0) os::pwrite_all(m_log_fd, &v, sizeof v, commit_pending_offset);
  }

  void check_writer(const char* what) {
    check_fork();
    if (!is_writer_thread())
      throw error(errc::no_writer, std::string("tmf: ") + what + " on " + m_path.string() +
                                       " from a thread that does not hold its writer");
    if (m_poison) throw error(m_poison, "tmf: " + m_path.string() + " is unusable after a failed apply");
  }

  /// Undoes the transaction; the header page stays writable for the writer's next one.
  void rollback_pages() noexcept {
    if (has_changes()) ++m_rollbacks;
    if (m_dirty.reset(m_base, m_mapped.load(std::memory_order_relaxed), true, dirty_set::header_page::keep_discard))
      fatal("cannot drop private pages on rollback (madvise/mprotect failed)");
  }

  /// Whether the transaction changed anything: a page other than the header, or the
  /// header itself (its checksum is sealed at every commit).
  bool has_changes() const noexcept {
    const file_header* h = header();
    return m_dirty.beyond_header() || h->checksum != header_checksum(*h) || h->max_size != m_max_size;
  }

  // -- opening and closing ----------------------------------------------------------------

  void open() {
    m_fork_generation = os::fork_generation();
    if (auto ec = install_tracker()) throw_os(ec, "cannot install the SIGSEGV handler");
    if (os::system_page_size() != page_size)
      throw error(errc::incompatible_format, "tmf: this system's page size is not 4096");
    m_writable = m_opt.mode != open_mode::read_only;
    const std::string name = m_path.string();

    bool created = false;
    for (;;) {
      std::error_code ec;
      switch (m_opt.mode) {
        case open_mode::read_only: ec = os::open_file(m_path, os::access::read_only, m_fd); break;
        case open_mode::open_only: ec = os::open_file(m_path, os::access::read_write, m_fd); break;
        case open_mode::create_only:
          if (!create_new()) throw_os(std::make_error_code(std::errc::file_exists), "cannot create " + name);
          created = true;
          break;
        case open_mode::open_or_create:
          ec = os::open_file(m_path, os::access::read_write, m_fd);
          if (ec == std::errc::no_such_file_or_directory) {
            if (!create_new()) continue;  // another process created it first: open theirs
            created = true;
            ec = {};
          }
          break;
      }
      if (ec) throw_os(ec, "cannot open " + name);
      break;
    }

    os::file_info fi;
    if (auto ec = os::stat_file(m_fd, fi)) throw_os(ec, "cannot stat " + name);
    claim_slot(fi);

    bool got = false;
    if (m_writable) {
      if (auto ec = os::lock_byte(m_fd, lock_open, os::lock_kind::exclusive, false, got)) throw_os(ec, "open lock");
      m_first = got;
    }
    // Read-only processes take no open lock: the next writable opener after a power cut must
    // find itself first and run full recovery, which a read-only process cannot do.
    if (m_writable && !m_first)
      if (auto ec = os::lock_byte(m_fd, lock_open, os::lock_kind::shared, true, got)) throw_os(ec, "open lock");

    file_header h = read_header(fi.size);
    validate_header_format(h, name);
    validate_header_identity(h, name, m_opt.magic, m_root_fp);
    m_file_id = h.file_id;
    if (!created) {
      if (m_opt.address && reinterpret_cast<std::uintptr_t>(m_opt.address) != h.address)
        throw error(errc::address_unavailable, "tmf: " + name + " is bound to address " + hex(h.address) +
                                                   ", not " + hex(reinterpret_cast<std::uintptr_t>(m_opt.address)));
      m_max_size = std::max<std::uint64_t>(round_up_page(m_opt.max_size), h.max_size);
      if (m_max_size != static_cast<std::size_t>(m_max_size) || h.address + m_max_size < h.address)
        throw error(errc::address_unavailable, "tmf: " + name + " needs more address space than this process has");
      void* out = nullptr;
      if (auto ec = os::reserve(reinterpret_cast<void*>(static_cast<std::uintptr_t>(h.address)),
                                static_cast<std::size_t>(m_max_size), true, out))
        throw error(errc::address_unavailable, "tmf: cannot map " + name + " at " + hex(h.address) + " (" +
                                                   std::to_string(m_max_size >> 20) + " MiB): " + ec.message());
      m_base = static_cast<unsigned char*>(out);
      m_reserved = static_cast<std::size_t>(m_max_size);
    }

    if (m_writable) {
      if (auto ec = os::open_or_create_file(m_log_path, m_log_fd)) throw_os(ec, "cannot open " + m_log_path.string());
    } else if (auto ec = os::open_file(m_log_path, os::access::read_only, m_log_fd);
               ec && ec != std::errc::no_such_file_or_directory) {
      throw_os(ec, "cannot open " + m_log_path.string());
    }

    if (!m_writable) {
      refuse_unrecovered(h);
    } else if (m_first) {
      recover_all();
    } else {
      if (auto ec = os::lock_byte(m_fd, lock_writer, os::lock_kind::exclusive, false, got)) throw_os(ec, "write lock");
      if (got) {
        struct unlock_writer {
          int fd;
          ~unlock_writer() {
            bool g;
            os::lock_byte(fd, lock_writer, os::lock_kind::unlock, true, g);
          }
        } unlock{m_fd};
        replay_pending();
      }
    }
    if (m_first)
      if (auto ec = os::lock_byte(m_fd, lock_open, os::lock_kind::shared, true, got)) throw_os(ec, "open lock");

    if (auto ec = os::stat_file(m_fd, fi)) throw_os(ec, "cannot stat " + name);
    h = read_header(fi.size);
    validate_header_format(h, name);  // recovery may have replaced it
    if (fi.size < h.arena_size)
      throw error(errc::corrupted, "tmf: " + name + " is truncated: " + std::to_string(fi.size) +
                                       " bytes, its header says " + std::to_string(h.arena_size));
    if (h.root != 0 && (h.root < h.address + page_size || h.root + h.root_size > h.address + h.arena_size ||
                        h.root % heap_quantum != 0 || (h.root_align != 0 && h.root % h.root_align != 0)))
      throw error(errc::corrupted, "tmf: " + name + ": the Root pointer is outside the arena or misaligned");
    ensure_mapped(static_cast<std::size_t>(h.arena_size));
    if (auto ec = m_dirty.init(m_reserved / page_size)) throw_os(ec, "cannot reserve the dirty-page set");
    if (os::open_pagemap(m_pagemap_fd)) m_pagemap_fd = -1;  // then whole chunks are logged
    // Readers check the apply marker through a shared view of the log's first page: a load
    // instead of a pread per read transaction. Only once the log has the marker's bytes
    // (touching a page wholly past the end of a file is SIGBUS); until then, pread.
    os::file_info li;
    if (m_log_fd >= 0 && !os::stat_file(m_log_fd, li) && li.size >= commit_pending_offset + sizeof(std::uint64_t)) {
      const void* view = nullptr;
      if (!os::map_shared_view(m_log_fd, page_size, view)) m_log_view = static_cast<const unsigned char*>(view);
    }

    m_region->reserved.store(m_reserved, std::memory_order_relaxed);
    m_region->dirty.store(&m_dirty, std::memory_order_relaxed);
    m_region->generation.store(m_fork_generation, std::memory_order_relaxed);
    m_region->name.store(m_path_c.c_str(), std::memory_order_relaxed);
    m_region->begin.store(reinterpret_cast<std::uintptr_t>(m_base), std::memory_order_release);
  }

  static std::string hex(std::uint64_t v) {
    char buf[24];
    return format_hex(static_cast<std::uintptr_t>(v), buf);
  }
  static std::uint64_t round_up_page(std::uint64_t n) noexcept { return (n + page_size - 1) / page_size * page_size; }

  /// The header of a file of `file_size` bytes: pread_header, after refusing a file too
  /// short to hold one page.
  file_header read_header(std::uint64_t file_size) {
    if (file_size == 0) throw error(errc::not_a_storage, "tmf: " + m_path.string() + " is empty");
    if (file_size < page_size)
      throw error(errc::not_a_storage, "tmf: " + m_path.string() + " is too short to be a tmf storage");
    return pread_header();
  }

  void claim_slot(const os::file_info& fi) {
    std::lock_guard<std::mutex> g(registry_mutex());
    tracked_region* slots = registry();
    tracked_region* free_slot = nullptr;
    for (std::size_t i = 0; i < max_open_storages; ++i) {
      if (slots[i].owner.load() == nullptr) {
        if (!free_slot) free_slot = &slots[i];
      } else if (slots[i].device == fi.device && slots[i].inode == fi.inode) {
        throw error(errc::already_open, "tmf: " + m_path.string() + " is already open in this process");
      }
    }
    if (!free_slot)
      throw error(std::make_error_code(std::errc::too_many_files_open),
                  "tmf: more than " + std::to_string(max_open_storages) + " storages open in this process");
    free_slot->device = fi.device;
    free_slot->inode = fi.inode;
    free_slot->owner.store(this);
    m_region = free_slot;
  }

  /// Creates the file with a fresh header (no heap, no root yet: the storage's first write
  /// transaction makes them) under a temporary name, then renames it into place so that no
  /// process ever sees a half-written file. False if the file appeared meanwhile.
  bool create_new() {
    const std::string name = m_path.string();
    void* out = nullptr;
    m_max_size = round_up_page(m_opt.max_size);
    if (m_opt.address) {
      if (reinterpret_cast<std::uintptr_t>(m_opt.address) % page_size != 0)
        throw error(errc::address_unavailable, "tmf: options::address must be page-aligned");
      if (auto ec = os::reserve(m_opt.address, m_max_size, true, out))
        throw error(errc::address_unavailable,
                    "tmf: cannot reserve " + hex(reinterpret_cast<std::uintptr_t>(m_opt.address)) + ": " + ec.message());
    } else if (auto ec = reserve_default(m_max_size, out)) {
      throw error(errc::address_unavailable, "tmf: cannot reserve address space for " + name + ": " + ec.message());
    }
    m_base = static_cast<unsigned char*>(out);
    m_reserved = m_max_size;

    std::random_device rd;
    std::uint64_t id = (std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(os::process_id());
    alignas(16) static thread_local unsigned char page[page_size];
    std::memset(page, 0, sizeof page);
    auto* h = reinterpret_cast<file_header*>(page);
    init_header(*h, id, reinterpret_cast<std::uintptr_t>(m_base), m_max_size, m_opt.magic, m_root_fp);
    seal_header(*h);

    // Write the first page into an unnamed file and link it into place (no leftover if this
    // process dies); where that cannot be done (no O_TMPFILE, no /proc), a named temporary
    // is renamed into place instead.
    const bool full = m_opt.sync == durability::full;
    auto write_page = [&](int f) {
      std::error_code e = os::pwrite_all(f, page, page_size, 0);
      if (!e && full) e = os::sync_data(f);
      return e;
    };
    int fd = -1;
    std::error_code ec = os::create_unnamed_file(m_path.parent_path(), fd);
    if (!ec) {
      ec = write_page(fd);
      if (!ec) ec = os::link_file(fd, m_path);
      if (ec && ec != std::errc::file_exists) {
        os::close_file(fd);
        fd = -1;
      }
    }
    if (fd < 0) {
      const std::filesystem::path tmp =
          name + ".new-" + std::to_string(os::process_id()) + "-" + std::to_string(rd());
      ec = os::create_file(tmp, fd);
      if (!ec) {
        ec = write_page(fd);
        if (!ec) ec = os::rename_noreplace(tmp, m_path);
        if (ec) os::remove_file(tmp);
      } else {
        fd = -1;
      }
    }
    if (ec) {
      os::close_file(fd);
      release_reservation();
      if (ec == std::errc::file_exists && m_opt.mode == open_mode::open_or_create) return false;
      throw_os(ec, "cannot create " + name);
    }
    if (full) os::sync_directory(m_path.parent_path());
    m_fd = fd;
    return true;
  }

  void release_reservation() noexcept {
    if (m_base) os::release(m_base, m_reserved);
    m_base = nullptr;
    m_reserved = 0;
    m_mapped.store(0);
  }

  void close_all(bool checkpoint_if_last) noexcept {
    const bool forked = os::fork_generation() != m_fork_generation;
    if (checkpoint_if_last && !forked && (m_readers != 0 || m_writer_thread.load() != 0))
      fatal("a storage was destroyed while one of its readers or writers was still alive");
    if (m_region) m_region->begin.store(0, std::memory_order_release);
    if (checkpoint_if_last && !forked && m_writable && m_fd >= 0 && m_log_fd >= 0 && m_base && !m_poison) {
      // The last process to close syncs the data file and empties the log.
      bool got = false;
      if (!os::lock_byte(m_fd, lock_open, os::lock_kind::exclusive, false, got) && got) {
        bool w = false;
        if (!os::lock_byte(m_fd, lock_writer, os::lock_kind::exclusive, true, w) && w) {
          try {
            replay_pending();
            // An empty log generation means the data file was synced when it began.
            if (m_log_off != log_start || m_data_sync_failed) checkpoint();
          } catch (...) {
          }
        }
      }
    }
    m_dirty.destroy();
    if (m_log_view) os::release(const_cast<unsigned char*>(m_log_view), page_size);
    m_log_view = nullptr;
    if (m_pagemap_fd >= 0) os::close_file(m_pagemap_fd);
    release_reservation();
    // Closing the descriptors releases this process's locks, unless a forked parent still
    // shares them: then they stay the parent's.
    if (m_log_fd >= 0) os::close_file(m_log_fd);
    if (m_fd >= 0) os::close_file(m_fd);
    m_fd = m_log_fd = m_pagemap_fd = -1;
    if (m_region) {
      std::lock_guard<std::mutex> g(registry_mutex());
      m_region->writer.store(0);
      m_region->device = m_region->inode = 0;
      m_region->owner.store(nullptr);
      m_region = nullptr;
    }
  }

  // -- mapping and growth -----------------------------------------------------------------

  /// Maps the file up to `size` bytes (other processes may have grown it).
  void ensure_mapped(std::size_t size) {
    if (size <= m_mapped.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> g(m_map_mutex);
    std::size_t mapped = m_mapped.load(std::memory_order_relaxed);
    if (size <= mapped) return;
    if (size > m_reserved)
      throw error(errc::corrupted, "tmf: " + m_path.string() + " grew beyond this process's reservation");
    if (auto ec = os::map_file(m_base + mapped, size - mapped, m_fd, mapped)) throw_os(ec, "cannot map " + m_path.string());
    m_mapped.store(size, std::memory_order_release);
    if (m_region) m_region->mapped.store(size, std::memory_order_release);
  }

  /// Adds at least `need` bytes at the end of the arena. std::bad_alloc when max_size or
  /// the disk is exhausted.
  void grow(std::size_t need) {
    file_header* h = header();
    const auto cur = static_cast<std::size_t>(h->arena_size);
    if (need > m_reserved - cur) throw std::bad_alloc();
    std::size_t step = std::max({need, cur / 4, std::size_t{1} << 20});
    step = (step + (std::size_t{64} << 10) - 1) / (std::size_t{64} << 10) * (std::size_t{64} << 10);
    std::size_t target = cur + std::min(step, m_reserved - cur);
    os::file_info fi;
    if (os::stat_file(m_fd, fi)) throw std::bad_alloc();
    if (fi.size < target && os::allocate(m_fd, fi.size, target - fi.size)) {
      // Not enough disk for the comfortable step: try the bare need.
      target = cur + static_cast<std::size_t>(round_up_page(need));
      if (fi.size < target && os::allocate(m_fd, fi.size, target - fi.size)) throw std::bad_alloc();
    }
    try {
      ensure_mapped(target);
    } catch (const error&) {
      throw std::bad_alloc();
    }
    arena_heap().grow(m_base + target);
    h->arena_size = target;
  }

  std::error_code ensure_log_space(std::uint64_t end) noexcept {
    if (end <= m_log_allocated) return {};
    os::file_info fi;
    if (auto ec = os::stat_file(m_log_fd, fi)) return ec;
    m_log_allocated = fi.size;
    if (end <= m_log_allocated) return {};
    std::uint64_t target = std::max<std::uint64_t>(end, m_log_allocated + (std::uint64_t{4} << 20));
    if (auto ec = os::allocate(m_log_fd, m_log_allocated, target - m_log_allocated)) {
      if (target == end) return ec;
      if (auto ec2 = os::allocate(m_log_fd, m_log_allocated, end - m_log_allocated)) return ec2;
      target = end;
    }
    m_log_allocated = target;
    return {};
  }

  // -- commit, recovery, checkpoint -------------------------------------------------------

  /// Copies a logged transaction into the data file and drops the private copies.
  void apply_committed(std::uint64_t txn, std::size_t n) {
    apply_marker mk{};
    std::memcpy(mk.magic, apply_marker_magic, sizeof mk.magic);
    mk.txn = txn;
    std::error_code ec = lock_apply_exclusive();
    if (!ec) {
      ec = os::pwrite_all(m_log_fd, &mk, sizeof mk, apply_marker_offset);
      if (!ec) ec = apply_pages(m_fd, m_dirty.pages(), n, m_base);
      unlock_apply_exclusive();
    }
    if (ec) {
      // The commit is durable in the log and will be replayed by the next writer or open;
      // this process keeps its private copies (its view is right) but stops writing.
      m_poison = ec;
      throw_os(ec, "commit to " + m_path.string() + " is durable in the log but could not be applied");
    }
    // The header page keeps its private copy (now equal to the file) while this writer
    // lives: every commit writes it, and this saves a fault per commit.
    if (m_dirty.reset(m_base, m_mapped.load(std::memory_order_relaxed), true, dirty_set::header_page::keep))
      fatal("cannot drop private pages after commit (madvise/mprotect failed)");
  }

  struct log_state {
    log_header header;
    char pad[apply_marker_offset - sizeof(log_header)];
    apply_marker marker;
  };

  /// Reads the log's header and apply marker; an invalid header starts a new generation
  /// at the data file's transaction (the data file is consistent whenever the log header
  /// is invalid: it is only rewritten after the data file was synced).
  log_state read_log_state(const file_header& h) {
    log_state s{};
    std::size_t got = 0;
    if (auto ec = os::pread_all(m_log_fd, &s, sizeof s, 0, got)) throw_os(ec, "cannot read " + m_log_path.string());
    bool valid = got >= sizeof(log_header) && std::memcmp(s.header.magic, log_magic, sizeof log_magic) == 0 &&
                 s.header.version == 1 && s.header.page_size == page_size && s.header.file_id == m_file_id &&
                 s.header.checksum == log_header_checksum(s.header);
    if (!valid) {
      if (auto ec = write_log_header(m_log_fd, m_file_id, h.txn, m_opt.sync == durability::full))
        throw_os(ec, "cannot write " + m_log_path.string());
      // A new log's name must be durable before a commit relies on it: fsync the directory.
      if (m_opt.sync == durability::full)
        if (auto ec = os::sync_directory(m_log_path.parent_path())) throw_os(ec, "cannot sync the log's directory");
      clear_marker(h.txn);
      s.header.base_txn = h.txn;
      s.marker = {};
    }
    if (got < sizeof s || std::memcmp(s.marker.magic, apply_marker_magic, sizeof s.marker.magic) != 0) s.marker.txn = 0;
    return s;
  }

  file_header pread_header() {
    file_header h;
    std::size_t got = 0;
    if (auto ec = os::pread_all(m_fd, &h, sizeof h, 0, got)) throw_os(ec, "cannot read " + m_path.string());
    if (got < sizeof h) throw error(errc::not_a_storage, "tmf: " + m_path.string() + " is too short to be a tmf storage");
    return h;
  }

  /// Replays valid records from `off`, expecting `txn` first; returns how many.
  std::uint64_t replay_from(std::uint64_t& off, std::uint64_t txn) {
    std::uint64_t count = 0;
    const std::uint64_t max_pages = m_reserved ? m_reserved / page_size : std::uint64_t{1} << 40;
    for (;; ++txn) {
      bool valid = false;
      record_info info;
      if (auto ec = check_record(m_log_fd, off, txn, m_file_id, max_pages, valid, info))
        throw_os(ec, "cannot read " + m_log_path.string());
      if (!valid) return count;
      std::uint64_t last = 0;
      {
        std::vector<record_entry> e(static_cast<std::size_t>(info.page_count));
        std::size_t got;
        os::pread_all(m_log_fd, e.data(), e.size() * sizeof(record_entry), info.offset + sizeof(record_header), got);
        for (auto& x : e) last = std::max(last, x.page);
      }
      os::file_info fi;
      if (auto ec = os::stat_file(m_fd, fi)) throw_os(ec, "cannot stat " + m_path.string());
      if (fi.size < (last + 1) * page_size)
        if (auto ec = os::allocate(m_fd, fi.size, (last + 1) * page_size - fi.size)) throw_os(ec, "recovery");
      if (auto ec = apply_record(m_log_fd, info, m_fd)) throw_os(ec, "cannot replay the log into " + m_path.string());
      off = info.end;
      ++count;
    }
  }

  /// Makes sure the data file is at least as long as its header's arena.
  void extend_to_arena() {
    file_header h = pread_header();
    // A replayed header is validated before its arena size is trusted: a damaged log must
    // not make recovery allocate the disk.
    validate_header_format(h, m_path.string());
    if (h.arena_size > m_reserved)
      throw error(errc::corrupted, "tmf: " + m_path.string() + ": the recovered header's arena exceeds max_size");
    os::file_info fi;
    if (auto ec = os::stat_file(m_fd, fi)) throw_os(ec, "cannot stat " + m_path.string());
    if (fi.size < h.arena_size)
      if (auto ec = os::allocate(m_fd, fi.size, h.arena_size - fi.size)) throw_os(ec, "recovery");
  }

  /// First opener, alone: replays the whole log (a power cut may have lost any unsynced
  /// write to the data file), syncs, and starts a new log generation.
  void recover_all() {
    bool got;
    if (auto ec = os::lock_byte(m_fd, lock_writer, os::lock_kind::exclusive, true, got)) throw_os(ec, "write lock");
    // Read-only processes may be reading (they take no open lock): apply under the apply lock.
    if (auto ec = os::lock_byte(m_fd, lock_apply, os::lock_kind::exclusive, true, got)) {
      os::lock_byte(m_fd, lock_writer, os::lock_kind::unlock, true, got);
      throw_os(ec, "apply lock");
    }
    struct unlock_writer {
      int fd;
      ~unlock_writer() {
        bool g;
        os::lock_byte(fd, lock_apply, os::lock_kind::unlock, true, g);
        os::lock_byte(fd, lock_writer, os::lock_kind::unlock, true, g);
      }
    } unlock{m_fd};
    file_header h = pread_header();
    log_state s = read_log_state(h);
    std::uint64_t off = log_start;
    std::uint64_t replayed = replay_from(off, s.header.base_txn + 1);
    if (replayed == 0 && s.header.base_txn == h.txn && s.marker.txn <= h.txn) {
      m_log_base = h.txn;
      m_log_off = log_start;
      m_seen_txn = h.txn;
      return;  // clean: nothing written, the file stays byte-for-byte as it was
    }
    extend_to_arena();
    h = pread_header();
    const bool full = m_opt.sync == durability::full;
    if (full)
      if (auto ec = os::sync_data(m_fd)) throw_os(ec, "cannot sync " + m_path.string());
    clear_reapply_needed();  // the whole log was just re-applied and synced
    if (auto ec = write_log_header(m_log_fd, m_file_id, h.txn, full)) throw_os(ec, "cannot write " + m_log_path.string());
    clear_marker(h.txn);
    m_log_base = h.txn;
    m_log_off = log_start;
    m_seen_txn = h.txn;
  }

  /// A read-only opener cannot recover. If no writable process has the file open (the
  /// first of them recovers it) and the log holds commits since the last checkpoint, the
  /// last writer did not close cleanly: a power cut may have torn the data file, so refuse.
  void refuse_unrecovered(const file_header& h) {
    bool free = false;
    if (auto ec = os::lock_would_succeed(m_fd, lock_open, os::lock_kind::exclusive, free)) throw_os(ec, "open lock");
    if (!free || m_log_fd < 0) return;
    log_header lh;
    bool valid = false;
    if (auto ec = read_log_header(m_log_fd, h.file_id, lh, valid)) throw_os(ec, "cannot read " + m_log_path.string());
    if (!valid) return;  // only rewritten after the data file was synced: the data file is whole
    bool pending = lh.base_txn != h.txn;
    if (!pending) {
      record_info info;
      if (auto ec = check_record(m_log_fd, log_start, lh.base_txn + 1, h.file_id, h.max_size / page_size, pending, info))
        throw_os(ec, "cannot read " + m_log_path.string());
    }
    if (pending)
      throw error(errc::read_only, "tmf: " + m_path.string() +
                                       " was not closed cleanly and needs recovery; open it writable once");
  }

  void clear_reapply_needed() noexcept {
    const std::uint64_t zero = 0;
    os::pwrite_all(m_log_fd, &zero, sizeof zero, reapply_needed_offset);
  }

  /// Sets the apply marker to `txn` (nothing half-applied) and clears a stale pending word.
  void clear_marker(std::uint64_t txn) {
    apply_marker mk{};
    std::memcpy(mk.magic, apply_marker_magic, sizeof mk.magic);
    mk.txn = txn;
    if (auto ec = os::pwrite_all(m_log_fd, &mk, sizeof mk, apply_marker_offset)) throw_os(ec, "cannot write the log");
    const std::uint64_t zero = 0;
    if (auto ec = os::pwrite_all(m_log_fd, &zero, sizeof zero, commit_pending_offset))
      throw_os(ec, "cannot write the log");
  }

  /// Writer lock held: replays a record that a dead writer made durable but did not (fully)
  /// apply, and finds where the next record goes.
  void replay_pending() {
    file_header h = pread_header();
    log_state s = read_log_state(h);
    std::uint64_t off = (h.log_base == s.header.base_txn && h.log_end >= log_start) ? h.log_end : log_start;
    bool replay_needed = false;
    {
      bool valid = false;
      record_info info;
      if (auto ec = check_record(m_log_fd, off, h.txn + 1, m_file_id, m_reserved / page_size + 1, valid, info))
        throw_os(ec, "cannot read " + m_log_path.string());
      replay_needed = valid;
    }
    if (replay_needed || s.marker.txn > h.txn) {
      if (auto ec = lock_apply_exclusive()) throw_os(ec, "apply lock");
      try {
        replay_from(off, h.txn + 1);
        extend_to_arena();
        clear_marker(pread_header().txn);
      } catch (...) {
        unlock_apply_exclusive();
        throw;
      }
      unlock_apply_exclusive();
    }
    m_log_base = s.header.base_txn;
    m_log_off = off;
    m_seen_txn = pread_header().txn;
  }

  /// Takes the apply lock shared for this process's first reader; repairs a half-applied
  /// commit left by a dead writer first.
  bool acquire_apply_shared(bool wait) {
    for (;;) {
      bool got = false;
      bool fast = !commit_pending();
      if (fast) {
        if (auto ec = os::lock_byte(m_fd, lock_apply, os::lock_kind::shared, wait, got)) throw_os(ec, "apply lock");
        if (!got) return false;
        if (commit_pending()) {  // a committer raised its flag meanwhile: let it go first
          os::lock_byte(m_fd, lock_apply, os::lock_kind::unlock, true, got);
          fast = false;
        }
      }
      if (!fast) {
        // Queue behind the committer. Holding the turnstile shared, no commit can hold the
        // apply lock (committers take the turnstile first), so the apply lock comes at once;
        // a stale flag left by a dead committer costs only this slower path.
        if (auto ec = os::lock_byte(m_fd, lock_turnstile, os::lock_kind::shared, wait, got)) throw_os(ec, "turnstile");
        if (!got) return false;
        bool g;
        auto ec = os::lock_byte(m_fd, lock_apply, os::lock_kind::shared, true, got);
        os::lock_byte(m_fd, lock_turnstile, os::lock_kind::unlock, true, g);
        if (ec) throw_os(ec, "apply lock");
      }
      if (m_log_fd < 0) return true;
      apply_marker mk{};
      std::size_t n = sizeof mk;
      if (m_log_view)
        std::memcpy(&mk, m_log_view + apply_marker_offset, sizeof mk);  // the log never shrinks below it
      else
        os::pread_all(m_log_fd, &mk, sizeof mk, apply_marker_offset, n);
      bool half_applied = n == sizeof mk && std::memcmp(mk.magic, apply_marker_magic, sizeof mk.magic) == 0 &&
                          mk.txn > header()->txn;
      if (!half_applied) return true;
      os::lock_byte(m_fd, lock_apply, os::lock_kind::unlock, true, got);
      if (!m_writable)
        throw error(errc::read_only, "tmf: " + m_path.string() +
                                         " needs recovery (a writer died while committing); open it writable once");
      if (auto ec = os::lock_byte(m_fd, lock_writer, os::lock_kind::exclusive, wait, got)) throw_os(ec, "write lock");
      if (!got) return false;
      try {
        replay_pending();
      } catch (...) {
        os::lock_byte(m_fd, lock_writer, os::lock_kind::unlock, true, got);
        throw;
      }
      os::lock_byte(m_fd, lock_writer, os::lock_kind::unlock, true, got);
    }
  }

  /// Syncs the data file and restarts the log. Writer lock held, no transaction open. A
  /// failed sync keeps the log (its records stay replayable) and re-applies them before the
  /// next attempt, since the kernel may have dropped the pages it failed to write.
  void checkpoint() noexcept {
    const bool full = m_opt.sync == durability::full;
    // Re-applies the kept log (the kernel may have dropped the pages it failed to write),
    // under the apply lock: readers must not see older pages being rewritten.
    auto reapply = [&]() -> bool {
      if (lock_apply_exclusive()) return false;
      bool ok = true;
      try {
        std::uint64_t off = log_start;
        replay_from(off, m_log_base + 1);
      } catch (...) {
        ok = false;
      }
      unlock_apply_exclusive();
      return ok;
    };
    std::uint64_t flagged = 0;
    std::size_t got = 0;
    os::pread_all(m_log_fd, &flagged, sizeof flagged, reapply_needed_offset, got);
    if ((m_data_sync_failed || (got == sizeof flagged && flagged != 0)) && !reapply()) return;
    if (full && os::sync_data(m_fd)) {
      m_data_sync_failed = true;
      const std::uint64_t one = 1;  // for every process: none may restart the log unapplied
      os::pwrite_all(m_log_fd, &one, sizeof one, reapply_needed_offset);
      reapply();  // restore the pages now, before the writer or a reader reads them
      return;
    }
    m_data_sync_failed = false;
    if (flagged != 0) clear_reapply_needed();
    const std::uint64_t txn = header()->txn;
    if (write_log_header(m_log_fd, m_file_id, txn, full)) return;
    m_log_base = txn;
    m_log_off = log_start;
    // A huge transaction may have left a huge log: give the space back.
    const std::uint64_t keep = log_start + m_opt.checkpoint_bytes;
    if (m_log_allocated > 2 * keep && !os::truncate(m_log_fd, keep)) m_log_allocated = keep;
  }

  // -- state ------------------------------------------------------------------------------
  std::filesystem::path m_path;
  std::filesystem::path m_log_path;
  std::string m_path_c = m_path.string();
  options m_opt;
  root_fingerprint m_root_fp;
  bool m_writable = true;
  bool m_first = false;
  int m_fd = -1, m_log_fd = -1, m_pagemap_fd = -1;
  const unsigned char* m_log_view = nullptr;  ///< shared read-only view of the log's first page
  unsigned char* m_base = nullptr;
  std::size_t m_reserved = 0;
  std::uint64_t m_max_size = 0;
  std::atomic<std::size_t> m_mapped{0};
  std::uint64_t m_file_id = 0;
  std::uint64_t m_fork_generation = 0;
  tracked_region* m_region = nullptr;
  dirty_set m_dirty;
  os::rw_mutex m_rw;
  std::mutex m_reader_mutex;
  std::size_t m_readers = 0;
  std::mutex m_map_mutex;
  std::atomic<std::uintptr_t> m_writer_thread{0};
  std::uint64_t m_log_base = 0, m_log_off = log_start, m_log_allocated = 0;
  std::uint64_t m_seen_txn = ~std::uint64_t{0};  ///< the data file's txn when this process last knew the log position
  bool m_data_sync_failed = false;
  std::error_code m_poison;
  std::atomic<std::uint64_t> m_commits{0}, m_rollbacks{0}, m_pages_logged{0};
};

/// The engine whose arena starts at `base` in this process, or nullptr. The per-thread
/// cache holds a registry slot (static, never freed), not an engine: a storage closed and
/// another opened at the same address is seen through the slot's current owner.
inline engine* find_engine(const void* base) noexcept {
  const auto want = reinterpret_cast<std::uintptr_t>(base);
  thread_local tracked_region* cached = nullptr;
  if (cached && cached->begin.load(std::memory_order_acquire) == want)
    return static_cast<engine*>(cached->owner.load(std::memory_order_acquire));
  tracked_region* slots = registry();
  for (std::size_t i = 0; i < max_open_storages; ++i)
    if (slots[i].begin.load(std::memory_order_acquire) == want) {
      cached = &slots[i];
      return static_cast<engine*>(slots[i].owner.load(std::memory_order_acquire));
    }
  return nullptr;
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_ENGINE_HPP
