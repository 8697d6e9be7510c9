// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The redo log beside a data file (`<file>-log`).
///
/// Layout: the first page is the control page (`log_control`): a 512-byte-sector header
/// (magic, version, page size, the data file's id, the generation's base transaction id,
/// checksum), the apply marker, the commit-pending word and the re-apply word. Records
/// follow from `log_start` on.
/// A record is one committed transaction, the bytes it changed:
///
///     record_header | record_extent[n] (page, offset, length, checksum) | their bytes | record_trailer
///
/// At commit each dirty page is compared with its page in the data file (which only ever
/// holds committed state) and only the changed ranges are logged and applied (diff_pages);
/// a page that mostly changed, or was all zeros in the file (new, or a hole), goes whole,
/// and page 0 always carries the whole file header.
/// The header and extents carry checksums, every extent its own, and the trailer repeats
/// the transaction id and the header checksum: it is the commit marker. A record counts only
/// if every checksum matches and its id is the one expected next, so a torn tail (a crash or
/// power cut in the middle of the write) is recognised and ignored. Replaying a record
/// writes its bytes at fixed places, so replaying one twice is harmless; replay always runs
/// in order from a state the data file had durably (the base of the generation, synced at
/// the checkpoint, or the state of the transaction before a pending record), so a byte no
/// record of the generation touches needs no repair: a partial-page write torn by a power
/// cut is repaired by replaying its record, which was durable before the write began.
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
#include "format.hpp"
#include "os.hpp"

namespace tmf::detail {

inline constexpr char log_magic[8] = {'t', 'm', 'f', '-', 'l', 'o', 'g', '\0'};
inline constexpr char record_magic[8] = {'t', 'm', 'f', '-', 'r', 'e', 'c', '\0'};
inline constexpr char trailer_magic[8] = {'t', 'm', 'f', '-', 'e', 'n', 'd', '\0'};
inline constexpr char apply_marker_magic[8] = {'t', 'm', 'f', '-', 'a', 'p', 'l', '\0'};
inline constexpr std::uint64_t log_start = page_size;  ///< offset of the first record
/// The layout version of the log header (bumped with format_version).
inline constexpr std::uint32_t log_version = 3;  // 3: records of changed byte ranges
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
  std::uint64_t extent_count;
  std::uint64_t data_bytes;  ///< the extents' lengths, summed
  std::uint64_t entries_checksum;
  std::uint64_t checksum;  ///< of the fields above
};

/// A run of changed bytes within one page of the data file.
struct record_extent {
  std::uint64_t page;      ///< page number in the data file
  std::uint32_t offset;    ///< first byte within the page
  std::uint32_t length;    ///< 1 .. page_size - offset
  std::uint64_t checksum;  ///< of the bytes (extent_checksum)
};
static_assert(sizeof(record_header) == 64 && sizeof(record_extent) == 24, "part of the log format");

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
/// Seeded by the bytes' position in the data file: bytes written to the wrong place fail.
inline std::uint64_t extent_checksum(const void* bytes, const record_extent& e) noexcept {
  return checksum(bytes, e.length, e.page * page_size + e.offset);
}
/// Where an extent's bytes go in the data file.
inline std::uint64_t extent_position(const record_extent& e) noexcept { return e.page * page_size + e.offset; }

/// How many extents at the front of an ascending list are in page 0 (the header page).
inline std::size_t header_extents(const record_extent* e, std::size_t n) noexcept {
  std::size_t k = 0;
  while (k < n && e[k].page == 0) ++k;
  return k;
}

/// Bytes a record of `n` extents holding `data_bytes` bytes occupies in the log.
inline std::uint64_t record_size(std::uint64_t n, std::uint64_t data_bytes) noexcept {
  return sizeof(record_header) + n * sizeof(record_extent) + data_bytes + sizeof(record_trailer);
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

/// A page is split into at most this many extents; more and it is logged whole.
inline constexpr std::size_t max_extents_per_page = 64;
/// Changed ranges closer than this are logged as one: an extent's entry costs 24 bytes.
inline constexpr std::uint32_t extent_merge_gap = 32;
/// Bytes of page 0 always logged (the file header, whole): its size stays known before the
/// header is sealed, which records where the record ends.
inline constexpr std::uint32_t header_extent_bytes = (sizeof(file_header) + 7) / 8 * 8;

/// Whether the `n` bytes (a multiple of 64) at `a` and `b` differ: one branch per call, words
/// xor-ed and or-ed (vectorised), where `memcmp` branched per 8 bytes (diff_page was 25% of
/// a 256-scattered-page commit). Pages may hold bytes user containers poisoned for ASan: exempt.
TMF_NO_SANITIZE_ADDRESS inline bool bytes_differ(const unsigned char* a, const unsigned char* b, std::size_t n) noexcept {
  std::uint64_t d = 0;
  for (std::size_t k = 0; k < n; k += 8) d |= checksum_impl::read64(a + k) ^ checksum_impl::read64(b + k);
  return d != 0;
}

/// Fills in the checksums of the extents `out[first..)`, all in the page at `now`, except in
/// page 0, whose header is sealed after the diff (write_record checksums those). Done while
/// the page is still in the CPU's cache from the diff: a second pass over a large commit's
/// pages, in write_record, missed the cache on every page (16% of a 5,000-page commit).
inline void checksum_extents(const unsigned char* now, std::vector<record_extent>& out, std::size_t first) noexcept {
  for (std::size_t i = first; i < out.size(); ++i)
    if (out[i].page != 0) out[i].checksum = extent_checksum(now + out[i].offset, out[i]);
}

/// Appends the extents in which page `page` at `now` differs from `was` (its committed
/// image): changed 8-byte words, ranges less than extent_merge_gap apart merged; the whole
/// page when that saves little (most of it changed, or too many pieces) or when `was` is
/// all zeros (a new page or a hole, whose zeros a power cut might not have kept). Page 0
/// always begins with [0, header_extent_bytes). The extents' checksums are filled in, except
/// page 0's (checksum_extents).
TMF_NO_SANITIZE_ADDRESS inline void diff_page(const unsigned char* now, const unsigned char* was, std::uint64_t page,
                                              std::vector<record_extent>& out) {
  const std::size_t first = out.size();
  bool zero = true;
  for (std::size_t i = 0; i < page_size && zero; i += 64) {
    std::uint64_t w[8];
    std::memcpy(w, was + i, sizeof w);
    zero = (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) == 0;
  }
  auto whole = [&] {
    out.resize(first);
    out.push_back({page, 0, static_cast<std::uint32_t>(page_size), 0});
  };
  if (zero) {
    whole();
    return checksum_extents(now, out, first);
  }
  std::uint32_t s = 0, e = 0;  // the open range [s, e); e == 0: none
  std::uint64_t bytes = 0;
  if (page == 0) e = header_extent_bytes;
  for (std::uint32_t i = page == 0 ? header_extent_bytes / 64 * 64 : 0; i < page_size; i += 64) {
    if (i % 256 == 0 && !bytes_differ(now + i, was + i, 256)) {  // most of a page is unchanged
      i += 192;
      continue;
    }
    if (!bytes_differ(now + i, was + i, 64)) continue;
    for (std::uint32_t j = i; j < i + 64; j += 8) {
      if (j < e || checksum_impl::read64(now + j) == checksum_impl::read64(was + j)) continue;
      if (e != 0 && j - e < extent_merge_gap) {
        e = j + 8;
        continue;
      }
      if (e != 0) {
        out.push_back({page, s, e - s, 0});
        bytes += e - s;
      }
      s = j;
      e = j + 8;
    }
  }
  if (e != 0) {
    out.push_back({page, s, e - s, 0});
    bytes += e - s;
  }
  const std::size_t k = out.size() - first;
  if (k > max_extents_per_page || bytes + k * sizeof(record_extent) >= page_size * 3 / 4) whole();
  checksum_extents(now, out, first);
}

/// A shared read-only view of the data file's committed pages, to diff against without a
/// system call or a copy per page (a page is faulted in once, then stays mapped). 64-bit
/// POSIX only: Windows refuses to truncate a file that a view maps, and a 32-bit process has
/// no address space for a second copy of the arena. Elsewhere, or when the mapping fails,
/// the originals are read with pread.
class committed_view {
 public:
  committed_view() = default;
  committed_view(const committed_view&) = delete;
  committed_view& operator=(const committed_view&) = delete;
  ~committed_view() { reset(); }

  /// Whether this build uses a view at all: not on 32-bit (no address space for a second
  /// copy of the arena), nor where a view blocks truncation (Windows).
  static constexpr bool available = os::shared_view_survives_truncate && UINTPTR_MAX > 0xffffffffu;

  /// The view of `f`'s first `size` bytes (its current size), or nullptr. Only bytes below
  /// the file's current size may be read: past its end a shared view faults (SIGBUS).
  const unsigned char* get([[maybe_unused]] const os::file& f, [[maybe_unused]] std::uint64_t size) noexcept {
    if constexpr (!available) {
      return nullptr;
    } else {
      if (size == 0 || m_failed) return nullptr;
      if (size > m_size) {
        reset();
        constexpr std::uint64_t step = std::uint64_t{1} << 30;  // remapped once per GiB of growth
        const std::uint64_t want = (size + step - 1) / step * step;
        const void* v = nullptr;
        if (os::map_shared_view(f, static_cast<std::size_t>(want), v)) {
          m_failed = true;  // pread from now on
          return nullptr;
        }
        m_view = static_cast<const unsigned char*>(v);
        m_size = want;
      }
      return m_view;
    }
  }
  void reset() noexcept {
    if (m_view) os::release(const_cast<unsigned char*>(m_view), static_cast<std::size_t>(m_size));
    m_view = nullptr;
    m_size = 0;
  }

 private:
  const unsigned char* m_view = nullptr;
  std::uint64_t m_size = 0;
  bool m_failed = false;
};

/// The extents of the dirty pages `pages[0..n)` (ascending, page 0 first) at `base`, each
/// diffed against the page in the data file, which only ever holds committed state: through
/// `view` (committed_view) when there is one, else read in runs of adjacent pages into
/// `scratch`. A page past the file's end reads as zeros (so it is logged whole). Replaces `out`.
inline std::error_code diff_pages(const os::file& data_fd, const std::uint64_t* pages, std::size_t n,
                                  const unsigned char* base, std::vector<record_extent>& out,
                                  std::vector<unsigned char>& scratch, committed_view* view = nullptr) {
  constexpr std::size_t run_pages = 64;
  out.clear();
  if (committed_view::available && view) {  // else no stat: the view could not be used
    os::file_info fi;
    if (auto ec = os::stat_file(data_fd, fi)) return ec;
    if (const unsigned char* v = view->get(data_fd, fi.size)) {
      const std::uint64_t file_pages = fi.size / page_size;
      if (scratch.size() < page_size) scratch.resize(page_size);
      std::memset(scratch.data(), 0, page_size);
      for (std::size_t k = 0; k < n; ++k)
        diff_page(base + pages[k] * page_size, pages[k] < file_pages ? v + pages[k] * page_size : scratch.data(),
                  pages[k], out);
      return {};
    }
  }
  if (scratch.size() < run_pages * page_size) scratch.resize(run_pages * page_size);
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i + 1;
    while (j < n && j - i < run_pages && pages[j] == pages[j - 1] + 1) ++j;
    const std::size_t bytes = (j - i) * page_size;
    std::size_t got = 0;
    if (auto ec = os::pread_all(data_fd, scratch.data(), bytes, pages[i] * page_size, got)) return ec;
    if (got < bytes) std::memset(scratch.data() + got, 0, bytes - got);
    for (std::size_t k = i; k < j; ++k)
      diff_page(base + pages[k] * page_size, scratch.data() + (k - i) * page_size, pages[k], out);
    i = j;
  }
  return {};
}

/// The data bytes the extents hold.
inline std::uint64_t extent_bytes(const record_extent* e, std::size_t n) noexcept {
  std::uint64_t b = 0;
  for (std::size_t i = 0; i < n; ++i) b += e[i].length;
  return b;
}

/// Whose checksums write_record computes: every extent's, or only page 0's (the others came
/// from diff_page, which filled them in).
enum class extent_checksums { compute, header_only };

/// Writes the record of transaction `txn` at `off`: extents `ext[0..n)` (ascending, no
/// overlap), their bytes read from `base + position`; fills in their checksums (`which`).
/// Does not sync.
inline std::error_code write_record(const os::file& f, std::uint64_t off, std::uint64_t txn, std::uint64_t file_id,
                                    std::uint64_t generation, record_extent* ext, std::size_t n,
                                    const unsigned char* base, extent_checksums which = extent_checksums::compute) {
  const std::size_t sum = which == extent_checksums::compute ? n : header_extents(ext, n);
  for (std::size_t i = 0; i < sum; ++i) ext[i].checksum = extent_checksum(base + extent_position(ext[i]), ext[i]);
  record_header rh{};
  std::memcpy(rh.magic, record_magic, sizeof record_magic);
  rh.txn = txn;
  rh.file_id = file_id;
  rh.generation = generation;
  rh.extent_count = n;
  rh.data_bytes = extent_bytes(ext, n);
  rh.entries_checksum = checksum(ext, n * sizeof(record_extent));
  rh.checksum = record_header_checksum(rh);
  record_trailer tr{};
  std::memcpy(tr.magic, trailer_magic, sizeof trailer_magic);
  tr.txn = txn;
  tr.header_checksum = rh.checksum;

  // The bytes go straight from the mapping to the kernel: no copy in user space.
  std::vector<os::buffer> bufs;
  bufs.reserve(n + 3);
  bufs.push_back({&rh, sizeof rh});
  bufs.push_back({ext, n * sizeof(record_extent)});
  for (std::size_t i = 0; i < n; ++i) bufs.push_back({base + extent_position(ext[i]), ext[i].length});
  bufs.push_back({&tr, sizeof tr});
  return os::pwritev_all(f, bufs.data(), bufs.size(), off);
}

/// What `check_record` learned about a valid record.
struct record_info {
  std::uint64_t offset = 0;
  std::uint64_t txn = 0;
  std::uint64_t extent_count = 0;
  std::uint64_t data_bytes = 0;
  std::uint64_t end = 0;  ///< offset right after the record
};

/// Where the bytes of the record's first extent lie in the log (the others follow in order).
inline std::uint64_t record_data_offset(const record_info& info) noexcept {
  return info.offset + sizeof(record_header) + info.extent_count * sizeof(record_extent);
}

/// Calls `f(i, j, at)` for consecutive chunks `[i, j)` of extents whose bytes (at log
/// offset `at`) fit in `cap` bytes (a chunk holds at least one extent).
template <class F>
std::error_code for_each_extent_chunk(const std::vector<record_extent>& ext, std::uint64_t at, std::size_t cap,
                                      F&& f) {
  for (std::size_t i = 0; i < ext.size();) {
    std::size_t j = i, bytes = 0;
    while (j < ext.size() && (j == i || bytes + ext[j].length <= cap)) bytes += ext[j++].length;
    if (auto ec = f(i, j, at)) return ec;
    at += bytes;
    i = j;
  }
  return {};
}

inline constexpr std::size_t record_chunk_bytes = 64 * page_size;

/// Validates the record at `off`, expected to be transaction `txn` of data file `file_id`
/// in log generation `generation`, with page numbers below `max_pages`: its extents ascend
/// without overlap and stay within their pages. Reads every byte to verify its checksum. An
/// invalid or absent record is `valid == false` without error; errors are I/O errors.
inline std::error_code check_record(const os::file& fd, std::uint64_t off, std::uint64_t txn, std::uint64_t file_id,
                                    std::uint64_t generation, std::uint64_t max_pages, bool& valid, record_info& info) {
  valid = false;
  record_header rh;
  std::size_t got = 0;
  if (auto ec = os::pread_all(fd, &rh, sizeof rh, off, got)) return ec;
  if (got != sizeof rh || std::memcmp(rh.magic, record_magic, sizeof record_magic) != 0 || rh.txn != txn ||
      rh.file_id != file_id || rh.generation != generation || rh.checksum != record_header_checksum(rh) ||
      rh.extent_count == 0 || rh.extent_count > max_pages * max_extents_per_page ||
      rh.data_bytes > max_pages * page_size || rh.extent_count > rh.data_bytes)
    return {};  // a real commit always logs the header page: a record of no extent is forged
  const std::uint64_t n = rh.extent_count;
  // The record must fit in the file before its entries are read into memory.
  os::file_info fi;
  if (auto ec = os::stat_file(fd, fi)) return ec;
  if (fi.size < off || fi.size - off < record_size(n, rh.data_bytes)) return {};
  std::vector<record_extent> ext(static_cast<std::size_t>(n));
  std::uint64_t pos = off + sizeof rh;
  if (auto ec = os::pread_all(fd, ext.data(), ext.size() * sizeof(record_extent), pos, got)) return ec;
  if (got != ext.size() * sizeof(record_extent) ||
      checksum(ext.data(), ext.size() * sizeof(record_extent)) != rh.entries_checksum)
    return {};
  std::uint64_t bytes = 0, next = 0;  // `next`: the first data-file position the next extent may start at
  for (const auto& e : ext) {
    if (e.page >= max_pages || e.length == 0 || e.offset >= page_size || e.length > page_size - e.offset ||
        extent_position(e) < next)
      return {};
    next = extent_position(e) + e.length;
    bytes += e.length;
  }
  if (bytes != rh.data_bytes) return {};
  pos += n * sizeof(record_extent);
  // Uninitialised and no bigger than the record: recovery calls this once per record.
  const std::size_t cap = static_cast<std::size_t>(std::min<std::uint64_t>(record_chunk_bytes, rh.data_bytes));
  std::unique_ptr<unsigned char[]> buf(new unsigned char[std::max<std::size_t>(cap, page_size)]);
  bool ok = true;
  if (auto ec = for_each_extent_chunk(ext, pos, cap, [&](std::size_t i, std::size_t j, std::uint64_t at) {
        std::size_t want = 0;
        for (std::size_t k = i; k < j; ++k) want += ext[k].length;
        std::size_t r = 0;
        if (auto e2 = os::pread_all(fd, buf.get(), want, at, r)) return e2;
        if (r != want) return ok = false, std::error_code{};
        for (std::size_t k = i, p = 0; k < j && ok; p += ext[k].length, ++k)
          ok = extent_checksum(buf.get() + p, ext[k]) == ext[k].checksum;
        return std::error_code{};
      }))
    return ec;
  if (!ok) return {};
  pos += rh.data_bytes;
  record_trailer tr;
  if (auto ec = os::pread_all(fd, &tr, sizeof tr, pos, got)) return ec;
  if (got != sizeof tr || std::memcmp(tr.magic, trailer_magic, sizeof trailer_magic) != 0 || tr.txn != txn ||
      tr.header_checksum != rh.checksum)
    return {};
  valid = true;
  info = {off, txn, n, rh.data_bytes, pos + sizeof tr};
  return {};
}

/// Reads the extents of a record that `check_record` accepted.
inline std::error_code read_record_extents(const os::file& log_fd, const record_info& info,
                                           std::vector<record_extent>& ext) {
  ext.resize(static_cast<std::size_t>(info.extent_count));
  std::size_t got = 0;
  return os::pread_all(log_fd, ext.data(), ext.size() * sizeof(record_extent), info.offset + sizeof(record_header),
                       got);
}

/// The highest page an extent list touches.
inline std::uint64_t last_page(const std::vector<record_extent>& ext) noexcept {
  std::uint64_t last = 0;
  for (const auto& e : ext) last = std::max(last, e.page);
  return last;
}

/// Copies the bytes of a record that `check_record` accepted (its extents read by
/// `read_record_extents`) into the data file, the header page last (its extents back to
/// front, the header itself last), so that a reader of the header never sees it ahead of
/// its pages. Extents adjacent in the data file go in one write.
inline std::error_code apply_record(const os::file& log_fd, const record_info& info,
                                    const std::vector<record_extent>& ext, const os::file& data_fd) {
  const std::size_t h = header_extents(ext.data(), ext.size());
  const std::size_t cap = static_cast<std::size_t>(std::min<std::uint64_t>(record_chunk_bytes, info.data_bytes));
  std::unique_ptr<unsigned char[]> buf(new unsigned char[std::max<std::size_t>(cap, page_size)]);
  std::uint64_t header_bytes = 0;
  for (std::size_t k = 0; k < h; ++k) header_bytes += ext[k].length;
  const std::uint64_t data = record_data_offset(info);
  auto copy = [&](std::size_t i, std::size_t j, std::uint64_t at) -> std::error_code {
    std::size_t want = 0;
    for (std::size_t k = i; k < j; ++k) want += ext[k].length;
    std::size_t got = 0;
    if (auto ec = os::pread_all(log_fd, buf.get(), want, at, got)) return ec;
    if (got != want) return std::make_error_code(std::errc::io_error);  // check_record saw it whole
    for (std::size_t k = i, p = 0; k < j;) {
      std::size_t m = k + 1, len = ext[k].length;
      while (m < j && extent_position(ext[m]) == extent_position(ext[m - 1]) + ext[m - 1].length) len += ext[m++].length;
      if (auto ec = os::pwrite_all(data_fd, buf.get() + p, len, extent_position(ext[k]))) return ec;
      p += len;
      k = m;
    }
    return {};
  };
  // Chunks never mix header-page extents with others: those are read separately below.
  std::vector<record_extent> rest(ext.begin() + static_cast<std::ptrdiff_t>(h), ext.end());
  if (auto ec = for_each_extent_chunk(rest, data + header_bytes, cap, [&](std::size_t i, std::size_t j, std::uint64_t at) {
        return copy(i + h, j + h, at);
      }))
    return ec;
  std::uint64_t at = data + header_bytes;
  for (std::size_t k = h; k-- > 0;) {
    at -= ext[k].length;
    std::size_t got = 0;
    if (auto ec = os::pread_all(log_fd, buf.get(), ext[k].length, at, got)) return ec;
    if (got != ext[k].length) return std::make_error_code(std::errc::io_error);
    if (auto ec = os::pwrite_all(data_fd, buf.get(), ext[k].length, extent_position(ext[k]))) return ec;
  }
  return {};
}

/// Writes the extents `ext[0..n)` (ascending) from memory at `base` into the data file, one
/// call per run of adjacent pages that carry extents: a run of one extent writes just it, a
/// longer one its whole pages (a buffer each, so that the test seam sees and can fail each):
/// a system call costs more than copying the unchanged bytes, which equal the file's (they
/// are what the extents were diffed against), so a torn write of them changes nothing the
/// log cannot repair. The header page goes last, its extents back to front.
inline std::error_code apply_extents(const os::file& data_fd, const record_extent* ext, std::size_t n,
                                     const unsigned char* base) {
  const std::size_t h = header_extents(ext, n);
  std::vector<os::buffer> bufs;
  for (std::size_t i = h; i < n;) {
    std::size_t j = i + 1;
    while (j < n && ext[j].page <= ext[j - 1].page + 1) ++j;
    bufs.clear();
    if (j == i + 1) {
      bufs.push_back({base + extent_position(ext[i]), ext[i].length});
      if (auto ec = os::pwritev_all(data_fd, bufs.data(), 1, extent_position(ext[i]))) return ec;
    } else {
      for (std::uint64_t p = ext[i].page; p <= ext[j - 1].page; ++p) bufs.push_back({base + p * page_size, page_size});
      if (auto ec = os::pwritev_all(data_fd, bufs.data(), bufs.size(), ext[i].page * page_size)) return ec;
    }
    i = j;
  }
  for (std::size_t k = h; k-- > 0;)
    if (auto ec = os::pwrite_all(data_fd, base + extent_position(ext[k]), ext[k].length, extent_position(ext[k])))
      return ec;
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
  std::error_code append(std::uint64_t txn, std::uint64_t file_id, record_extent* ext, std::size_t n,
                         const unsigned char* base, extent_checksums which = extent_checksums::compute) {
    if (auto ec = ensure_space(m_pos.offset + record_size(n, extent_bytes(ext, n)))) return ec;
    return write_record(m_file, m_pos.offset, txn, file_id, m_pos.generation, ext, n, base, which);
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
