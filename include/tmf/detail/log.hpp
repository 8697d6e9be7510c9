// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The redo log beside a data file (`<file>-log`).
///
/// Layout: the first page is the control page (`log_control`): a 512-byte-sector header
/// (magic, version, page size, the data file's id, the generation's base transaction id,
/// checksum), the apply marker, the commit-pending word and the re-apply word. Records
/// follow from `log_start` on.
/// A record is one committed transaction:
///
///     record_header | record_entry[n] (page number, page checksum) | n pages | record_trailer
///
/// The header and entries carry checksums, every page its own, and the trailer repeats the
/// transaction id and the header checksum: it is the commit marker. A record counts only if
/// every checksum matches and its id is the one expected next, so a torn tail (a crash or
/// power cut in the middle of the write) is recognised and ignored. Replaying a record
/// writes page images, so replaying one twice is harmless.
///
/// Durability, one fsync at a time: commit = write the record, fdatasync the log (the only
/// sync of a durable commit), then copy the pages into the data file. At a checkpoint the
/// data file is fdatasync'ed first, and only then the log restarts with a new base id: a
/// crash between the two replays records the data file already has.
///
/// The control page's words (apply marker, commit pending, re-apply needed) are written with
/// pwrite and never synced on their own: each is either advisory (commit pending) or
/// rewritten by recovery after a power cut (see recovery.hpp).
#ifndef TMF_DETAIL_LOG_HPP
#define TMF_DETAIL_LOG_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "checksum.hpp"
#include "config.hpp"
#include "os.hpp"

namespace tmf::detail {

inline constexpr char log_magic[8] = {'t', 'm', 'f', '-', 'l', 'o', 'g', '\0'};
inline constexpr char record_magic[8] = {'t', 'm', 'f', '-', 'r', 'e', 'c', '\0'};
inline constexpr char trailer_magic[8] = {'t', 'm', 'f', '-', 'e', 'n', 'd', '\0'};
inline constexpr char apply_marker_magic[8] = {'t', 'm', 'f', '-', 'a', 'p', 'l', '\0'};
inline constexpr std::uint64_t log_start = page_size;  ///< offset of the first record
/// The layout version of the log header (bumped with format_version).
inline constexpr std::uint32_t log_version = 2;
/// The log grows (fallocate) in steps of this many bytes; a cleanly closed log keeps one.
inline constexpr std::uint64_t log_growth_step = std::uint64_t{4} << 20;

struct log_header {
  char magic[8];
  std::uint32_t version;
  std::uint32_t page_size;
  std::uint64_t file_id;
  std::uint64_t base_txn;  ///< records in this generation are base_txn+1, base_txn+2, ...
  /// Changes at every restart of the log and is stamped in each record: a record of an
  /// earlier generation is never valid again, even where its bytes survive.
  std::uint64_t generation;
  std::uint64_t checksum;
};

/// Stamped before a commit's pages are copied into the data file: a data file whose header
/// is older than the marker is half-applied and must be repaired from the log first.
struct apply_marker {
  char magic[8];
  std::uint64_t txn;
};

/// The log's first page, as far as it is used.
struct log_control {
  log_header header;
  char pad0[512 - sizeof(log_header)];
  apply_marker marker;  ///< the last transaction whose apply began
  char pad1[576 - 512 - sizeof(apply_marker)];
  /// Non-zero while a committer waits for the apply lock (the turnstile, locks.hpp).
  std::uint64_t commit_pending;
  /// Non-zero after a data-file sync failed: the log must be re-applied before any process
  /// restarts it (the kernel may have dropped the pages it failed to write).
  std::uint64_t reapply_needed;
};
static_assert(offsetof(log_control, marker) == 512 && offsetof(log_control, commit_pending) == 576 &&
                  offsetof(log_control, reapply_needed) == 584 && sizeof(log_control) <= log_start,
              "the control page's layout is part of the file format");

struct record_header {
  char magic[8];
  std::uint64_t txn;
  std::uint64_t file_id;
  std::uint64_t generation;  ///< the log generation it was written in
  std::uint64_t page_count;
  std::uint64_t entries_checksum;
  std::uint64_t checksum;  ///< of the fields above
};

struct record_entry {
  std::uint64_t page;      ///< page number in the data file
  std::uint64_t checksum;  ///< of the page's bytes
};

struct record_trailer {
  char magic[8];
  std::uint64_t txn;
  std::uint64_t header_checksum;
  std::uint64_t reserved;
};

inline std::uint64_t log_header_checksum(const log_header& h) noexcept {
  return checksum(&h, offsetof(log_header, checksum), 0x746d662d6c6f6700ULL);
}
inline std::uint64_t record_header_checksum(const record_header& h) noexcept {
  return checksum(&h, offsetof(record_header, checksum), 0x746d662d72656300ULL);
}
inline std::uint64_t page_checksum(const void* page, std::uint64_t page_no) noexcept {
  return checksum(page, page_size, page_no);  // seeded by position: a page written to the wrong place fails
}

/// Bytes a record of `n` pages occupies in the log.
inline std::uint64_t record_size(std::uint64_t n) noexcept {
  return sizeof(record_header) + n * (sizeof(record_entry) + page_size) + sizeof(record_trailer);
}

inline bool log_header_valid(const log_header& h, std::uint64_t file_id) noexcept {
  return std::memcmp(h.magic, log_magic, sizeof log_magic) == 0 && h.version == log_version &&
         h.page_size == page_size && h.file_id == file_id && h.checksum == log_header_checksum(h);
}

/// Reads the control page. `header_valid` tells whether its header is intact and belongs to
/// `file_id`; a missing or foreign apply marker reads as transaction 0.
inline std::error_code read_log_control(const os::file& f, std::uint64_t file_id, log_control& c,
                                        bool& header_valid) noexcept {
  std::size_t got = 0;
  std::memset(&c, 0, sizeof c);
  header_valid = false;
  if (auto ec = os::pread_all(f, &c, sizeof c, 0, got)) return ec;
  header_valid = got >= sizeof(log_header) && log_header_valid(c.header, file_id);
  if (got < offsetof(log_control, commit_pending) || std::memcmp(c.marker.magic, apply_marker_magic, 8) != 0)
    c.marker.txn = 0;
  return {};
}

/// The generation that follows `previous` (0 when the previous header is unknown: then one
/// derived from the file and the base, which an unknown predecessor would not have used).
inline std::uint64_t next_generation(std::uint64_t previous, std::uint64_t file_id, std::uint64_t base_txn) noexcept {
  if (previous != 0) return previous + 1;
  const std::uint64_t key[2] = {file_id, base_txn};
  return checksum(key, sizeof key, 0x746d662d67656e00ULL) | (std::uint64_t{1} << 63);
}

/// Starts log generation `generation` at `base_txn` (every older record becomes stale),
/// then syncs the log if `sync`.
inline std::error_code write_log_header(const os::file& f, std::uint64_t file_id, std::uint64_t base_txn,
                                        std::uint64_t generation, bool sync) noexcept {
  log_header h{};
  std::memcpy(h.magic, log_magic, sizeof log_magic);
  h.version = log_version;
  h.page_size = page_size;
  h.file_id = file_id;
  h.base_txn = base_txn;
  h.generation = generation;
  h.checksum = log_header_checksum(h);
  if (auto ec = os::pwrite_all(f, &h, sizeof h, 0)) return ec;
  return sync ? os::sync_data(f) : std::error_code{};
}

/// Stamps the apply marker with `txn`.
inline std::error_code write_apply_marker(const os::file& f, std::uint64_t txn) noexcept {
  apply_marker mk{};
  std::memcpy(mk.magic, apply_marker_magic, sizeof mk.magic);
  mk.txn = txn;
  return os::pwrite_all(f, &mk, sizeof mk, offsetof(log_control, marker));
}

inline std::error_code set_commit_pending(const os::file& f, std::uint64_t v) noexcept {
  return os::pwrite_all(f, &v, sizeof v, offsetof(log_control, commit_pending));
}

inline std::error_code set_reapply_needed(const os::file& f, std::uint64_t v) noexcept {
  return os::pwrite_all(f, &v, sizeof v, offsetof(log_control, reapply_needed));
}

/// Writes the record of transaction `txn` at `off`: pages `pages[0..n)` (ascending page
/// numbers) are read from `base + page * page_size`. Does not sync.
inline std::error_code write_record(const os::file& f, std::uint64_t off, std::uint64_t txn, std::uint64_t file_id,
                                    std::uint64_t generation, const std::uint64_t* pages, std::size_t n,
                                    const unsigned char* base) {
  std::vector<unsigned char> head(sizeof(record_header) + n * sizeof(record_entry));
  auto* entries = reinterpret_cast<record_entry*>(head.data() + sizeof(record_header));
  for (std::size_t i = 0; i < n; ++i) {
    entries[i].page = pages[i];
    entries[i].checksum = page_checksum(base + pages[i] * page_size, pages[i]);
  }
  record_header rh{};
  std::memcpy(rh.magic, record_magic, sizeof record_magic);
  rh.txn = txn;
  rh.file_id = file_id;
  rh.generation = generation;
  rh.page_count = n;
  rh.entries_checksum = checksum(entries, n * sizeof(record_entry));
  rh.checksum = record_header_checksum(rh);
  std::memcpy(head.data(), &rh, sizeof rh);
  record_trailer tr{};
  std::memcpy(tr.magic, trailer_magic, sizeof trailer_magic);
  tr.txn = txn;
  tr.header_checksum = rh.checksum;

  // Pages go straight from the mapping to the kernel: no copy in user space.
  std::vector<os::buffer> bufs;
  bufs.reserve(n + 2);
  bufs.push_back({head.data(), head.size()});
  for (std::size_t i = 0; i < n; ++i) bufs.push_back({base + pages[i] * page_size, page_size});
  bufs.push_back({&tr, sizeof tr});
  return os::pwritev_all(f, bufs.data(), bufs.size(), off);
}

/// What `check_record` learned about a valid record.
struct record_info {
  std::uint64_t offset = 0;
  std::uint64_t txn = 0;
  std::uint64_t page_count = 0;
  std::uint64_t end = 0;  ///< offset right after the record
};

/// Validates the record at `off`, expected to be transaction `txn` of data file `file_id`
/// in log generation `generation`, with page numbers below `max_pages`. Reads every page to verify its checksum. An
/// invalid or absent record is `valid == false` without error; errors are I/O errors.
inline std::error_code check_record(const os::file& fd, std::uint64_t off, std::uint64_t txn, std::uint64_t file_id,
                                    std::uint64_t generation, std::uint64_t max_pages, bool& valid, record_info& info) {
  valid = false;
  record_header rh;
  std::size_t got = 0;
  if (auto ec = os::pread_all(fd, &rh, sizeof rh, off, got)) return ec;
  if (got != sizeof rh || std::memcmp(rh.magic, record_magic, sizeof record_magic) != 0 || rh.txn != txn ||
      rh.file_id != file_id || rh.generation != generation || rh.checksum != record_header_checksum(rh) || rh.page_count == 0 ||
      rh.page_count > max_pages)
    return {};  // a real commit always logs the header page: a record of no page is forged
  const std::uint64_t n = rh.page_count;
  std::vector<record_entry> entries(static_cast<std::size_t>(n));
  std::uint64_t pos = off + sizeof rh;
  if (auto ec = os::pread_all(fd, entries.data(), entries.size() * sizeof(record_entry), pos, got)) return ec;
  if (got != entries.size() * sizeof(record_entry) ||
      checksum(entries.data(), entries.size() * sizeof(record_entry)) != rh.entries_checksum)
    return {};
  for (const auto& e : entries)
    if (e.page >= max_pages) return {};
  pos += n * sizeof(record_entry);
  constexpr std::size_t chunk_pages = 64;
  // Uninitialised and no bigger than the record: recovery calls this once per record.
  const std::size_t buf_pages = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_pages, n));
  std::unique_ptr<unsigned char[]> buf(new unsigned char[buf_pages * page_size]);
  for (std::uint64_t i = 0; i < n; i += chunk_pages) {
    std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_pages, n - i));
    if (auto ec = os::pread_all(fd, buf.get(), k * page_size, pos + i * page_size, got)) return ec;
    if (got != k * page_size) return {};
    for (std::size_t j = 0; j < k; ++j)
      if (page_checksum(buf.get() + j * page_size, entries[i + j].page) != entries[i + j].checksum) return {};
  }
  pos += n * page_size;
  record_trailer tr;
  if (auto ec = os::pread_all(fd, &tr, sizeof tr, pos, got)) return ec;
  if (got != sizeof tr || std::memcmp(tr.magic, trailer_magic, sizeof trailer_magic) != 0 || tr.txn != txn ||
      tr.header_checksum != rh.checksum)
    return {};
  valid = true;
  info = {off, txn, n, pos + sizeof tr};
  return {};
}

/// Reads the entries (page numbers and checksums) of a record that `check_record` accepted.
inline std::error_code read_record_entries(const os::file& log_fd, const record_info& info,
                                           std::vector<record_entry>& entries) {
  entries.resize(static_cast<std::size_t>(info.page_count));
  std::size_t got = 0;
  return os::pread_all(log_fd, entries.data(), entries.size() * sizeof(record_entry),
                       info.offset + sizeof(record_header), got);
}

/// Where the image of the record's `i`-th page lies in the log.
inline std::uint64_t record_page_offset(const record_info& info, std::uint64_t i) noexcept {
  return info.offset + sizeof(record_header) + info.page_count * sizeof(record_entry) + i * page_size;
}

/// Calls `f(i)` for each entry index of a record, the header page (page 0) last, so that a
/// reader of the header never sees it ahead of its pages. Returns the first error.
template <class F>
std::error_code for_each_entry_header_last(const std::vector<record_entry>& entries, F&& f) {
  std::size_t header_index = entries.size();
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].page == 0) {
      header_index = i;
      continue;
    }
    if (auto ec = f(i)) return ec;
  }
  return header_index < entries.size() ? f(header_index) : std::error_code{};
}

/// Copies the pages of a record that `check_record` accepted (its `entries` read by
/// `read_record_entries`) into the data file, header page last.
inline std::error_code apply_record(const os::file& log_fd, const record_info& info,
                                    const std::vector<record_entry>& entries, const os::file& data_fd) {
  std::vector<unsigned char> page(page_size);
  return for_each_entry_header_last(entries, [&](std::size_t i) {
    std::size_t got = 0;
    if (auto ec = os::pread_all(log_fd, page.data(), page_size, record_page_offset(info, i), got)) return ec;
    return os::pwrite_all(data_fd, page.data(), page_size, entries[i].page * page_size);
  });
}

/// Writes the pages `pages[0..n)` (ascending) from memory at `base` into the data file,
/// coalescing runs of consecutive pages into one call, page 0 last.
inline std::error_code apply_pages(const os::file& data_fd, const std::uint64_t* pages, std::size_t n,
                                   const unsigned char* base) {
  std::size_t i = (n > 0 && pages[0] == 0) ? 1 : 0;
  std::vector<os::buffer> bufs;
  while (i < n) {
    std::size_t j = i + 1;
    while (j < n && pages[j] == pages[j - 1] + 1) ++j;
    // One call per run; a buffer per page, so that the test seam sees (and can fail) each page.
    bufs.clear();
    for (std::size_t k = i; k < j; ++k) bufs.push_back({base + pages[k] * page_size, page_size});
    if (auto ec = os::pwritev_all(data_fd, bufs.data(), bufs.size(), pages[i] * page_size)) return ec;
    i = j;
  }
  if (n > 0 && pages[0] == 0) return os::pwrite_all(data_fd, base, page_size, 0);
  return {};
}


/// Where the next record of a log goes, and what it was learnt from.
struct log_position {
  std::uint64_t base_txn = 0;        ///< the generation's base: its records are base_txn+1, ...
  std::uint64_t generation = 0;      ///< the log header's generation
  std::uint64_t offset = log_start;  ///< where the next record goes
  std::uint64_t seen_txn = ~std::uint64_t{0};  ///< the data file's txn when this was learnt
};

/// An open log: its file, the append position, the preallocated size, and a shared
/// read-only view of the control page (read by every read transaction).
class log_file {
 public:
  log_file() = default;
  log_file(const log_file&) = delete;
  log_file& operator=(const log_file&) = delete;
  ~log_file() { close(); }

  /// Opens (writable: creates) the log at `p`. A read-only open of a missing log is not an
  /// error: the file then stays closed.
  std::error_code open(const std::filesystem::path& p, bool writable) noexcept {
    m_path = p;
    if (writable) return os::open_or_create_file(p, m_file);
    auto ec = os::open_file(p, os::access::read_only, m_file);
    return ec == std::errc::no_such_file_or_directory ? std::error_code{} : ec;
  }
  void close() noexcept {
    if (m_view) os::release(const_cast<unsigned char*>(m_view), page_size);
    m_view = nullptr;
    m_file.close();
  }
  bool is_open() const noexcept { return m_file.is_open(); }
  const os::file& file() const noexcept { return m_file; }
  const std::filesystem::path& path() const noexcept { return m_path; }
  log_position& position() noexcept { return m_pos; }
  const log_position& position() const noexcept { return m_pos; }

  /// Maps the control page shared, once the file holds its words (touching a page wholly
  /// past the end of a file is SIGBUS); until then the words are read with pread.
  void map_view() noexcept {
    os::file_info fi;
    if (m_view || !m_file.is_open() || os::stat_file(m_file, fi) || fi.size < offsetof(log_control, reapply_needed))
      return;
    const void* v = nullptr;
    if (!os::map_shared_view(m_file, page_size, v)) m_view = static_cast<const unsigned char*>(v);
  }

  /// Whether a committer in some process waits for the apply lock. Advisory.
  bool commit_pending() const noexcept {
    if (!m_view) return false;
    return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(m_view + offsetof(log_control, commit_pending)),
                           __ATOMIC_ACQUIRE) != 0;
  }

  /// The apply marker's transaction (0 if there is none or it cannot be read).
  std::uint64_t marker_txn() const noexcept {
    apply_marker mk{};
    std::size_t n = sizeof mk;
    if (m_view)
      std::memcpy(&mk, m_view + offsetof(log_control, marker), sizeof mk);  // the log never shrinks below it
    else if (!m_file.is_open() || os::pread_all(m_file, &mk, sizeof mk, offsetof(log_control, marker), n))
      return 0;
    return n == sizeof mk && std::memcmp(mk.magic, apply_marker_magic, sizeof mk.magic) == 0 ? mk.txn : 0;
  }

  /// Preallocates so that a record ending at `end` fits: in steps of log_growth_step, or
  /// just `end` when the disk has no room for a step.
  std::error_code ensure_space(std::uint64_t end) noexcept {
    if (end <= m_allocated) return {};
    os::file_info fi;
    if (auto ec = os::stat_file(m_file, fi)) return ec;
    m_allocated = fi.size;
    if (end <= m_allocated) return {};
    std::uint64_t target = std::max<std::uint64_t>(end, (m_allocated / log_growth_step + 1) * log_growth_step);
    if (auto ec = os::allocate(m_file, m_allocated, target - m_allocated)) {
      if (target == end) return ec;
      if (auto ec2 = os::allocate(m_file, m_allocated, end - m_allocated)) return ec2;
      target = end;
    }
    m_allocated = target;
    return {};
  }

  /// Writes the record of transaction `txn` at the append position (space first). Does not
  /// sync and does not move the position: the caller does once the record is durable.
  std::error_code append(std::uint64_t txn, std::uint64_t file_id, const std::uint64_t* pages, std::size_t n,
                         const unsigned char* base) {
    if (auto ec = ensure_space(m_pos.offset + record_size(n))) return ec;
    return write_record(m_file, m_pos.offset, txn, file_id, m_pos.generation, pages, n, base);
  }

  std::error_code sync() noexcept { return os::sync_data(m_file); }

  /// Gives back the space past `keep` bytes if more than `slack` bytes lie beyond it.
  /// \pre nothing past `keep` is needed (no record of the generation lies there).
  void shrink_to(std::uint64_t keep, std::uint64_t slack) noexcept {
    os::file_info fi;
    if (os::stat_file(m_file, fi)) return;
    m_allocated = fi.size;
    if (m_allocated > keep + slack && !os::truncate(m_file, keep)) m_allocated = keep;
  }

 private:
  os::file m_file;
  std::filesystem::path m_path;
  const unsigned char* m_view = nullptr;  ///< the shared view of the control page
  std::uint64_t m_allocated = 0;          ///< bytes known to be allocated
  log_position m_pos;
};

}  // namespace tmf::detail

#endif  // TMF_DETAIL_LOG_HPP
