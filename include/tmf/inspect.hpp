// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// `tmf::untyped_storage`: a storage opened without its Root type, for inspection and
/// maintenance (the `tmf` command is built on it).
///
/// It checks the file's format (magic, version, word size, byte order, page size, header
/// checksum and ranges) but takes the Root's identity and the application magic from the
/// file itself. Opened read-only (the default) it never writes either file: both are opened
/// O_RDONLY, and a file whose last writer died is recovered into private pages, as any
/// read-only open is. Opened writable (open_mode::open_only) it can also compact.
#ifndef TMF_INSPECT_HPP
#define TMF_INSPECT_HPP

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "detail/engine.hpp"
#include "detail/maintenance.hpp"
#include "error.hpp"
#include "options.hpp"

namespace tmf {

/// The state of a storage's log, as `untyped_storage::info()` reads it.
enum class log_state {
  absent,     ///< no log file (a storage that was never opened writable, or whose log was removed)
  unused,     ///< the log has no valid header: the next writable open starts a generation
  clean,      ///< no record since the last checkpoint: the data file holds everything
  applied,    ///< records since the last checkpoint, all in the data file (a writer is open or died)
  unapplied,  ///< records the data file does not have yet: the next writable open replays them
};

/// What `untyped_storage::info()` reports: the header and the log, as they are on disk.
struct storage_info {
  std::uint32_t format_version = 0;
  std::uint32_t word_size = 0;  ///< bytes per pointer of the programs that may open it
  std::uint32_t page_size = 0;
  std::uint64_t file_id = 0;       ///< random; pairs the log with the data file
  std::uintptr_t address = 0;      ///< where the file is mapped
  std::uint64_t max_size = 0;      ///< address range reserved on open
  std::uint64_t arena_bytes = 0;   ///< bytes in use, header page included
  std::uint64_t file_bytes = 0;    ///< length of the data file
  std::uint64_t disk_bytes = 0;    ///< disk space of the data file (holes excluded)
  std::uint64_t user_magic = 0;    ///< tmf::options::magic of the application
  bool has_root = false;           ///< false until the first writer constructed it
  std::string root_name;           ///< the Root's demangled type name (first 127 bytes)
  std::uint64_t root_size = 0, root_align = 0;
  std::uint64_t root_fingerprint = 0;  ///< tmf::schema_fingerprint<Root>()
  std::uint64_t txn = 0;               ///< the last committed transaction (of this view)
  /// The durability the last commit's writer used: "full", "no_sync", or "none" (no commit yet).
  std::string last_durability = "none";
  bool recovered_in_memory = false;    ///< the view replayed the log into private pages
  bool open_elsewhere = false;         ///< a writable process has the file open now
  // The log.
  log_state log = log_state::absent;
  std::uint64_t log_bytes = 0;
  std::uint64_t log_base_txn = 0;      ///< the generation's base: its records are base+1, ...
  std::uint64_t log_generation = 0;
  std::uint64_t log_records = 0;       ///< valid records since the last checkpoint
  std::uint64_t log_last_txn = 0;      ///< the last of them (log_base_txn if none)
  std::uint64_t log_record_bytes = 0;  ///< bytes those records occupy
};

/// A free extent of the heap (for maps of the arena).
struct free_extent {
  std::uint64_t offset;  ///< from the start of the file
  std::uint64_t size;
};

/// A storage opened without its Root type. Not copyable, not movable.
class untyped_storage {
 public:
  /// Opens `file` (and `file`-log) with `mode`: open_mode::read_only (never writes) or
  /// open_mode::open_only (writable: compact()).
  /// \throws tmf::error: errc::not_a_storage (empty, too short, bad magic),
  ///         errc::incompatible_format, errc::corrupted (checksum, ranges, truncated),
  ///         errc::address_unavailable, errc::read_only (recovery that needs a writer), or
  ///         the system error (no such file, permission denied).
  explicit untyped_storage(const std::filesystem::path& file, open_mode mode = open_mode::read_only)
      : m_path(file) {
    if (mode != open_mode::read_only && mode != open_mode::open_only)
      throw error(std::make_error_code(std::errc::invalid_argument),
                  "tmf: untyped_storage opens existing files only (read_only or open_only)");
    const detail::file_header h = read_header(file);
    // The identity comes from the header as recovery leaves it: a log may hold a committed
    // header page that differs from the one on disk.
    detail::root_fingerprint fp;
    fp.adopt = true;
    options opt;
    opt.mode = mode;
    opt.max_size = static_cast<std::size_t>(std::min<std::uint64_t>(h.max_size, SIZE_MAX));
    // Read-only: not even the lock file is written (its readers take the apply lock instead).
    m_engine.emplace(file, opt, fp, mode != open_mode::read_only);
  }
  untyped_storage(const untyped_storage&) = delete;
  untyped_storage& operator=(const untyped_storage&) = delete;

  /// The header and the log (a consistent snapshot of the header).
  storage_info info() const;
  /// Sizes (the counters are this object's: 0).
  storage_stats stats() const { return engine().stats(); }
  /// Full audit. \throws tmf::error{errc::corrupted} naming the problem.
  void check() const { engine().check(); }
  /// The heap's free extents in address order, after a full audit (so a damaged tree is
  /// reported, never followed). Empty for a file without a Root.
  std::vector<free_extent> free_extents() const;
  /// See storage::copy_to.
  void copy_to(const std::filesystem::path& dst) const { detail::copy_storage(engine(), dst); }
  /// See storage::compact. \throws tmf::error{errc::read_only} when opened read-only.
  compact_result compact() { return detail::compact_storage(engine()); }
  void* address() const noexcept { return m_engine->base(); }
  const std::filesystem::path& path() const noexcept { return m_path; }

 private:
  detail::engine& engine() const noexcept { return const_cast<detail::engine&>(*m_engine); }

  /// The data file's header, format-checked, read without mapping anything.
  static detail::file_header read_header(const std::filesystem::path& file) {
    const std::string name = file.string();
    detail::os::file f;
    if (auto ec = detail::os::open_file(file, detail::os::access::read_only, f)) detail::throw_os(ec, "cannot open " + name);
    detail::os::file_info fi;
    if (auto ec = detail::os::stat_file(f, fi)) detail::throw_os(ec, "cannot stat " + name);
    if (fi.size == 0) throw error(errc::not_a_storage, "tmf: " + name + " is empty");
    detail::file_header h;
    std::size_t got = 0;
    if (auto ec = detail::os::pread_all(f, &h, sizeof h, 0, got)) detail::throw_os(ec, "cannot read " + name);
    if (got < sizeof h || fi.size < detail::page_size)
      throw error(errc::not_a_storage, "tmf: " + name + " is shorter than one page (" + std::to_string(fi.size) + " bytes)");
    detail::validate_header_format(h, name);
    // Before the engine opens anything (a writable open would create the log): the data
    // file's own header never records more arena than the file holds.
    if (fi.size < h.arena_size)
      throw error(errc::corrupted, "tmf: " + name + " is truncated: " + std::to_string(fi.size) +
                                       " bytes, its header says " + std::to_string(h.arena_size));
    return h;
  }

  std::filesystem::path m_path;
  std::optional<detail::engine> m_engine;
};

inline storage_info untyped_storage::info() const {
  using namespace detail;
  storage_info r;
  detail::engine& e = this->engine();
  {
    maintenance_impl::read_scope view(e);
    const file_header& h = *e.header();
    r.format_version = h.version;
    r.word_size = h.word_size;
    r.page_size = h.page_size;
    r.file_id = h.file_id;
    r.address = static_cast<std::uintptr_t>(h.address);
    r.max_size = h.max_size;
    r.arena_bytes = h.arena_size;
    r.user_magic = h.user_magic;
    r.has_root = h.root != 0;
    r.root_name.assign(h.root_name, ::strnlen(h.root_name, root_name_capacity));
    r.root_size = h.root_size;
    r.root_align = h.root_align;
    r.root_fingerprint = h.root_schema;
    r.txn = h.txn;
    r.last_durability = h.last_sync == 1 ? "full" : h.last_sync == 2 ? "no_sync" : "none";
  }
  const std::string name = m_path.string();
  os::file_info fi;
  if (auto ec = os::stat_file(e.data_file(), fi)) throw_os(ec, "cannot stat " + name);
  r.file_bytes = fi.size;
  r.disk_bytes = fi.disk_bytes;
  file_header disk;  // the header as the data file has it (the view may be recovered in memory)
  std::size_t got = 0;
  if (auto ec = os::pread_all(e.data_file(), &disk, sizeof disk, 0, got)) throw_os(ec, "cannot read " + name);
  if (got < sizeof disk) throw error(errc::corrupted, "tmf: " + name + " shrank while it was inspected");
  r.recovered_in_memory = r.txn != disk.txn;
  bool free = false;
  if (auto ec = os::lock_would_succeed(e.data_file(), lock_open, os::lock_kind::exclusive, free))
    throw_os(ec, "cannot test the open lock of " + name);
  r.open_elsewhere = !free;

  // The log, read with its own descriptor (read-only).
  const std::filesystem::path log_path = name + "-log";
  os::file log;
  if (auto ec = os::open_file(log_path, os::access::read_only, log)) {
    if (ec == std::errc::no_such_file_or_directory) return r;
    throw_os(ec, "cannot open " + log_path.string());
  }
  if (auto ec = os::stat_file(log, fi)) throw_os(ec, "cannot stat " + log_path.string());
  r.log_bytes = fi.size;
  log_control c;
  bool valid = false;
  if (auto ec = read_log_control(log, r.file_id, c, valid)) throw_os(ec, "cannot read " + log_path.string());
  if (!valid) {
    r.log = log_state::unused;
    return r;
  }
  r.log_base_txn = c.header.base_txn;
  r.log_generation = c.header.generation;
  r.log_last_txn = c.header.base_txn;
  const std::uint64_t page_limit = r.max_size / page_size;
  for (std::uint64_t off = log_start, txn = c.header.base_txn + 1;; ++txn) {
    bool ok = false;
    record_info ri;
    if (auto ec = check_record(log, off, txn, r.file_id, c.header.generation, page_limit, ok, ri))
      throw_os(ec, "cannot read " + log_path.string());
    if (!ok) break;
    ++r.log_records;
    r.log_last_txn = txn;
    r.log_record_bytes += ri.end - off;
    off = ri.end;
  }
  if (r.log_records == 0)
    r.log = log_state::clean;
  else if (r.log_last_txn > disk.txn)
    r.log = log_state::unapplied;
  else
    r.log = log_state::applied;
  return r;
}

inline std::vector<free_extent> untyped_storage::free_extents() const {
  using namespace detail;
  std::vector<free_extent> out;
  detail::engine& e = this->engine();
  maintenance_impl::read_scope view(e);
  if (e.header()->root == 0) return out;
  e.check();
  const auto b = reinterpret_cast<std::uintptr_t>(e.base());
  e.arena_heap().for_each_free_block([&](void* p, std::size_t size) {
    out.push_back({static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p) - b), size});
  });
  return out;
}

}  // namespace tmf

#endif  // TMF_INSPECT_HPP
