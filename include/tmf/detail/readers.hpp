// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Read transactions without system calls: per-thread lanes, and the reader table that
/// every process opening a storage shares through its lock file, `<path>-lock`.
///
/// A lane is one cache line holding a count of open read transactions. Each process has a
/// block of `reader_lanes` lanes; a thread always uses lane `thread_lane() % reader_lanes`
/// of it, so threads rarely share a line. A read transaction adds one to its lane, then
/// loads the words that may stop it: the process's writer flag (engine.hpp) and the table's
/// pending word. If they are zero it reads; otherwise it takes its count back, wakes
/// whoever waits for the lane, and waits on the word that stopped it. Whoever must not be
/// overlapped by readers (the process's writer; any process that writes the data file: a
/// commit's apply, a repair, a checkpoint) stores its word first, then waits until the
/// lanes it covers are zero. Both sides store, then load, sequentially consistent: at least
/// one of them sees the other, so a reader never slips past a raised word, and a waiter is
/// always woken (a reader that ends wakes its lane whenever a word is raised).
///
/// The lock file (format `reader_table_version`): a header page, then `reader_blocks`
/// process blocks. Its byte locks:
///  - byte 0, shared while a process uses the table. Whoever gets it exclusively is alone
///    and rebuilds the table from nothing: its contents are never trusted across a time
///    when nobody had it open;
///  - byte 1 + i, exclusive while a process owns block i. The kernel drops it when the
///    process dies, so a waiter that finds a block's lock free clears the block (LMDB's
///    stale-reader check, one F_OFD_SETLK per block with open lanes).
/// Every process using a table also holds `lock_table` shared on the data file. A process
/// that rebuilds a table while that lock is held elsewhere knows that another process still
/// uses an older table (the lock file was deleted or replaced): it refuses to open instead
/// of letting readers and committers miss each other.
///
/// Liveness is also why the waits have timeouts: a reader that dies while a committer waits
/// for it, or a committer that dies with its word raised, is found by the waiter's check
/// when its wait times out (`liveness_check_ms`). Waits end by a wake in every other case.
#ifndef TMF_DETAIL_READERS_HPP
#define TMF_DETAIL_READERS_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "../error.hpp"
#include "checksum.hpp"
#include "byte_lock.hpp"
#include "config.hpp"
#include "os.hpp"

namespace tmf::detail {

inline constexpr std::size_t reader_lanes = 16;    ///< lanes per process block
inline constexpr std::size_t reader_blocks = 128;  ///< processes that can use one table
inline constexpr std::uint32_t reader_table_version = 1;
inline constexpr std::uint64_t reader_table_magic = 0x6b636f6c2d666d74ULL;  // "tmf-lock"
inline constexpr int liveness_check_ms = 50;
inline constexpr std::uint64_t table_lock_init = 0;  ///< lock-file byte 0 (see the file comment)

/// One lane: read transactions open on the threads that use it.
struct alignas(64) reader_lane {
  std::uint32_t count;
  std::uint32_t pid;  ///< lane 0 of a block: the owning process, for diagnostics
  unsigned char pad[56];
};
static_assert(sizeof(reader_lane) == 64);

/// A process's lanes.
struct reader_block {
  reader_lane lanes[reader_lanes];
};

/// The lock file's first page.
struct reader_table_header {
  std::uint64_t magic;  ///< written last by a rebuild
  std::uint32_t version, blocks, lanes, lane_size;
  std::uint64_t file_id;   ///< the data file's: pairs the table with its storage
  std::uint64_t checksum;  ///< of the fields from `version` to here
  alignas(64) std::uint32_t pending;  ///< 0, or (sequence << 1) | waiters: the data file is being written
  std::uint32_t sequence;             ///< changed only by the holder of the apply lock
  alignas(64) std::uint64_t used[reader_blocks / 64];  ///< blocks claimed (hints: liveness decides)
};
static_assert(sizeof(reader_table_header) <= page_size);

inline constexpr std::size_t reader_table_size = page_size + reader_blocks * sizeof(reader_block);

/// This thread's lane index (constant for the thread's life).
inline unsigned thread_lane() noexcept {
  static std::atomic<unsigned> next{0};
  thread_local unsigned lane = ~0u;
  if (lane == ~0u) lane = next.fetch_add(1, std::memory_order_relaxed) % reader_lanes;
  return lane;
}

/// Sequentially consistent access to a word that other threads or processes change.
inline std::uint32_t load_word(const std::uint32_t& w) noexcept {
  return std::atomic_ref<std::uint32_t>(const_cast<std::uint32_t&>(w)).load();
}

/// Adds a reader to `lane`.
inline void enter_lane(reader_lane& lane) noexcept { std::atomic_ref<std::uint32_t>(lane.count).fetch_add(1); }

/// Takes a reader back from `lane`; wakes its waiters if it was the last and either word
/// that makes waiters is raised.
inline void leave_lane(reader_lane& lane, const std::uint32_t& flag, const std::uint32_t& pending) noexcept {
  if (std::atomic_ref<std::uint32_t>(lane.count).fetch_sub(1) == 1 && (load_word(flag) | load_word(pending)) != 0)
    os::wake_all(&lane.count);
}

/// Waits until `word` is zero, marking it (bit 0) so that whoever clears it wakes this
/// thread. `stale`, called after every `liveness_check_ms` without a change, may clear a
/// word whose owner died.
template <class Stale>
inline void wait_word_zero(std::uint32_t& word, Stale stale) noexcept {
  std::atomic_ref<std::uint32_t> w(word);
  for (std::uint32_t v = w.load(); v != 0; v = w.load()) {
    if ((v & 1) == 0 && !w.compare_exchange_weak(v, v | 1)) continue;
    if (os::wait_on(&word, v | 1, liveness_check_ms) == std::errc::timed_out) stale(v | 1);
  }
}

/// Clears a word raised by `raise`-style code and wakes its waiters.
inline void clear_word(std::uint32_t& word) noexcept {
  if (std::atomic_ref<std::uint32_t>(word).exchange(0) & 1) os::wake_all(&word);
}

/// The shared reader table of one storage, and this process's block in it.
class reader_table {
 public:
  reader_table() noexcept = default;
  reader_table(const reader_table&) = delete;
  reader_table& operator=(const reader_table&) = delete;
  ~reader_table() { close(); }

  /// Opens (creating or rebuilding it as the file comment says) the table at `path` for the
  /// storage whose data file is `data` with `file_id`, and claims a block. False when a
  /// read-only process may not write the lock file (the caller then works without it).
  /// \throws error{errc::corrupted} for a table damaged or replaced while in use,
  ///         error{errc::too_many_processes} when every block is taken, tmf::error on I/O.
  bool open(const std::filesystem::path& path, const os::file& data, std::uint64_t file_id, bool writable,
            const std::string& name) {
    m_name = name;
    m_path = path;
    std::error_code ec = os::open_or_create_file(path, m_file);
#if defined(TMF_TESTING_IO_HOOK)
    if (!writable && std::getenv("TMF_TESTING_NO_READER_TABLE")) ec = std::make_error_code(std::errc::permission_denied);
#endif
    if (ec) {
      m_file.close();
      if (!writable && (ec == std::errc::permission_denied || ec == std::errc::read_only_file_system ||
                        ec == std::errc::operation_not_permitted))
        return false;
      throw_os(ec, "cannot open the lock file " + path.string());
    }
    try {
      attach(data, file_id);
    } catch (...) {
      close();
      throw;
    }
    return true;
  }

  bool is_open() const noexcept { return m_header != nullptr; }

  /// This process's block.
  reader_block& own() noexcept { return *m_own; }
  std::uint32_t& pending() noexcept { return m_header->pending; }

  /// Raises the pending word and waits until no lane of any process holds a reader.
  /// \pre the apply lock is held exclusively (so only one process raises the word).
  void raise_and_wait() noexcept {
    m_raised.store(true);
    m_header->sequence += 1;
    const std::uint32_t token = (m_header->sequence | 1u << 30) << 1;  // never 0, bit 0 clear
    std::atomic_ref<std::uint32_t>(m_header->pending).store(token);
    for (std::size_t word = 0; word < reader_blocks / 64; ++word) {
      std::uint64_t used = std::atomic_ref<std::uint64_t>(m_header->used[word]).load();
      for (; used != 0; used &= used - 1) wait_block(word * 64 + static_cast<std::size_t>(__builtin_ctzll(used)));
    }
  }
  /// The table raised while it lives (if open), for code that holds the apply lock itself.
  class raised {
   public:
    explicit raised(reader_table& t) noexcept : m_table(t.is_open() ? &t : nullptr) {
      if (m_table) m_table->raise_and_wait();
    }
    raised(const raised&) = delete;
    raised& operator=(const raised&) = delete;
    ~raised() {
      if (m_table) m_table->lower();
    }

   private:
    reader_table* m_table;
  };

  /// Lowers the pending word and wakes the readers that wait for it.
  void lower() noexcept {
    clear_word(m_header->pending);
    m_raised.store(false);
  }

  /// A reader's wait while the pending word is raised. A word left by a dead committer
  /// (nobody holds the apply lock of `data`) is cleared.
  void wait_pending(const os::file& data) noexcept {
    wait_word_zero(m_header->pending, [&](std::uint32_t seen) {
      // This process's own apply lock looks free to it (locks of one open file never conflict).
      if (m_raised.load()) return;
      bool free = false;
      if (!os::lock_would_succeed(data, lock_apply, os::lock_kind::shared, free) && free) {
        std::uint32_t v = seen;
        if (std::atomic_ref<std::uint32_t>(m_header->pending).compare_exchange_strong(v, 0)) os::wake_all(&m_header->pending);
      }
    });
  }

  /// Gives back the block and the table.
  void close() noexcept {
    if (m_own) {
      std::memset(static_cast<void*>(m_own), 0, sizeof *m_own);
      std::atomic_ref<std::uint64_t>(m_header->used[m_index / 64]).fetch_and(~(std::uint64_t{1} << (m_index % 64)));
      m_block_lock.unlock();
    }
    unmap();
    m_data_lock.unlock();
    m_init_lock.unlock();
    m_file.close();
  }
  /// In a forked child: the locks are the parent's (the open files are shared); only the
  /// mapping and the descriptor are this process's.
  void abandon() noexcept {
    m_block_lock.abandon();
    m_data_lock.abandon();
    m_init_lock.abandon();
    unmap();
    m_file.close();
  }

 private:
  void attach(const os::file& data, std::uint64_t file_id) {
    std::error_code ec = m_init_lock.lock(m_file, table_lock_init, os::lock_kind::exclusive, false);
    bool alone = !ec;
    if (would_block(ec)) ec = m_init_lock.lock(m_file, table_lock_init, os::lock_kind::shared);
    if (ec) throw_os(ec, "lock of " + m_path.string());
    if (!alone) {
      map();
      if (valid(file_id)) {
        take_data_lock(data);
        claim();
        return;
      }
      // Damaged, or its builder died before finishing: rebuild it if everyone else is gone.
      unmap();
      ec = m_init_lock.lock(m_file, table_lock_init, os::lock_kind::exclusive, false);
      if (would_block(ec))
        throw error(errc::corrupted, "tmf: the reader table " + m_path.string() + " of " + m_name +
                                         " is damaged while other processes use it; close them, then open again");
      if (ec) throw_os(ec, "lock of " + m_path.string());
    }
    // Alone with this lock file. If another process still holds the data file's table lock,
    // it uses another table: this file was deleted or replaced under it.
    bool free = false;
    if (auto e = os::lock_would_succeed(data, lock_table, os::lock_kind::exclusive, free)) throw_os(e, "table lock");
    if (!free)
      throw error(errc::corrupted, "tmf: the lock file " + m_path.string() + " was deleted or replaced while another process had " +
                                       m_name + " open; close every process using it, then open it again");
    rebuild(file_id);
    take_data_lock(data);
    if (auto e = m_init_lock.lock(m_file, table_lock_init, os::lock_kind::shared)) throw_os(e, "lock of " + m_path.string());
    claim();
  }

  void map() {
    os::file_info fi;
    if (auto ec = os::stat_file(m_file, fi)) throw_os(ec, "cannot stat " + m_path.string());
    if (fi.size != reader_table_size) return;  // not valid(); left unmapped
    void* p = nullptr;
    if (auto ec = os::map_shared_rw(m_file, reader_table_size, p)) throw_os(ec, "cannot map " + m_path.string());
    m_header = static_cast<reader_table_header*>(p);
  }
  void unmap() noexcept {
    if (m_header) os::release(m_header, reader_table_size);
    m_header = nullptr;
    m_own = nullptr;
  }

  static std::uint64_t header_sum(const reader_table_header& h) noexcept {
    // From `version`: the magic is stored after the checksum.
    constexpr std::size_t from = offsetof(reader_table_header, version);
    return checksum(reinterpret_cast<const unsigned char*>(&h) + from, offsetof(reader_table_header, checksum) - from);
  }
  bool valid(std::uint64_t file_id) const noexcept {
    const reader_table_header* h = m_header;
    return h && h->magic == reader_table_magic && h->version == reader_table_version && h->blocks == reader_blocks &&
           h->lanes == reader_lanes && h->lane_size == sizeof(reader_lane) && h->file_id == file_id &&
           h->checksum == header_sum(*h);
  }

  void rebuild(std::uint64_t file_id) {
    // A fresh table is all zeros. Punching the old bytes out keeps the file's size: a cut to
    // size zero (the fallback, where punching fails) makes ext4 write the file's dirty pages
    // back when it is closed (auto_da_alloc), a fifth of an open and close (bench_open).
    if (os::punch_hole(m_file, 0, reader_table_size))
      if (auto ec = os::truncate(m_file, 0)) throw_os(ec, "cannot reset " + m_path.string());
    if (auto ec = os::truncate(m_file, reader_table_size)) throw_os(ec, "cannot size " + m_path.string());
    map();
    TMF_ASSERT(m_header != nullptr);
    reader_table_header& h = *m_header;
    h.version = reader_table_version;
    h.blocks = reader_blocks;
    h.lanes = reader_lanes;
    h.lane_size = sizeof(reader_lane);
    h.file_id = file_id;
    h.checksum = header_sum(h);
    std::atomic_ref<std::uint64_t>(h.magic).store(reader_table_magic);
  }

  void take_data_lock(const os::file& data) {
    if (auto ec = m_data_lock.lock(data, lock_table, os::lock_kind::shared)) throw_os(ec, "table lock");
  }

  void claim() {
    auto* blocks = reinterpret_cast<reader_block*>(reinterpret_cast<unsigned char*>(m_header) + page_size);
    for (std::size_t i = 0; i < reader_blocks; ++i) {
      std::error_code ec = m_block_lock.lock(m_file, 1 + i, os::lock_kind::exclusive, false);
      if (would_block(ec)) continue;
      if (ec) throw_os(ec, "lock of " + m_path.string());
      m_index = i;
      m_own = &blocks[i];
      reset_block(*m_own);  // a dead process's leftovers
      m_own->lanes[0].pid = static_cast<std::uint32_t>(os::process_id());
      std::atomic_ref<std::uint64_t>(m_header->used[i / 64]).fetch_or(std::uint64_t{1} << (i % 64));
      return;
    }
    throw error(errc::too_many_processes, "tmf: " + m_name + " is open in " + std::to_string(reader_blocks) +
                                              " processes, the most its reader table " + m_path.string() + " holds");
  }

  static void reset_block(reader_block& b) noexcept {
    for (reader_lane& l : b.lanes) {
      l.pid = 0;
      if (std::atomic_ref<std::uint32_t>(l.count).exchange(0) != 0) os::wake_all(&l.count);
    }
  }

  /// Waits for block i's lanes to be empty; a block whose owner is dead is cleared.
  void wait_block(std::size_t i) noexcept {
    auto* b = reinterpret_cast<reader_block*>(reinterpret_cast<unsigned char*>(m_header) + page_size) + i;
    bool checked = i == m_index;  // this process is alive
    for (reader_lane& l : b->lanes) {
      for (std::uint32_t v = load_word(l.count); v != 0; v = load_word(l.count)) {
        if (!checked && clear_if_dead(i, *b)) return;
        checked = true;
        if (os::wait_on(&l.count, v, liveness_check_ms) == std::errc::timed_out) checked = false;
      }
    }
  }
  /// Clears block i if no process holds its lock.
  bool clear_if_dead(std::size_t i, reader_block& b) noexcept {
    byte_lock probe;
    if (probe.lock(m_file, 1 + i, os::lock_kind::exclusive, false)) return false;  // alive (or cannot tell)
    reset_block(b);
    std::atomic_ref<std::uint64_t>(m_header->used[i / 64]).fetch_and(~(std::uint64_t{1} << (i % 64)));
    return true;
  }

  std::string m_name;
  std::filesystem::path m_path;
  os::file m_file;
  byte_lock m_init_lock, m_block_lock, m_data_lock;
  reader_table_header* m_header = nullptr;
  reader_block* m_own = nullptr;
  std::size_t m_index = ~std::size_t{0};
  std::atomic<bool> m_raised{false};  ///< this process holds the pending word
};

}  // namespace tmf::detail

#endif  // TMF_DETAIL_READERS_HPP
