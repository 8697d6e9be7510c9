// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The redo log beside a data file (`<file>-log`).
///
/// Layout: a 512-byte-sector header at offset 0 (magic, version, page size, the data file's
/// id, the generation's base transaction id, checksum), then records from `log_start` on.
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
#ifndef TMF_DETAIL_LOG_HPP
#define TMF_DETAIL_LOG_HPP

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "checksum.hpp"
#include "config.hpp"
#include "os.hpp"

namespace tmf::detail {

inline constexpr char log_magic[8] = {'t', 'm', 'f', '-', 'l', 'o', 'g', '\0'};
inline constexpr char record_magic[8] = {'t', 'm', 'f', '-', 'r', 'e', 'c', '\0'};
inline constexpr char trailer_magic[8] = {'t', 'm', 'f', '-', 'e', 'n', 'd', '\0'};
inline constexpr std::uint64_t log_start = page_size;  ///< offset of the first record

struct log_header {
  char magic[8];
  std::uint32_t version;
  std::uint32_t page_size;
  std::uint64_t file_id;
  std::uint64_t base_txn;  ///< records in this generation are base_txn+1, base_txn+2, ...
  std::uint64_t checksum;
};

struct record_header {
  char magic[8];
  std::uint64_t txn;
  std::uint64_t file_id;
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

/// Reads the log header; `valid` tells whether it is intact and belongs to `file_id`.
inline std::error_code read_log_header(int fd, std::uint64_t file_id, log_header& h, bool& valid) noexcept {
  std::size_t got = 0;
  valid = false;
  if (auto ec = os::pread_all(fd, &h, sizeof h, 0, got)) return ec;
  valid = got == sizeof h && std::memcmp(h.magic, log_magic, sizeof log_magic) == 0 && h.version == 1 &&
          h.page_size == page_size && h.file_id == file_id && h.checksum == log_header_checksum(h);
  return {};
}

/// Starts a new log generation at `base_txn` (records after it become stale), then syncs
/// the log if `sync`.
inline std::error_code write_log_header(int fd, std::uint64_t file_id, std::uint64_t base_txn, bool sync) noexcept {
  log_header h{};
  std::memcpy(h.magic, log_magic, sizeof log_magic);
  h.version = 1;
  h.page_size = page_size;
  h.file_id = file_id;
  h.base_txn = base_txn;
  h.checksum = log_header_checksum(h);
  if (auto ec = os::pwrite_all(fd, &h, sizeof h, 0)) return ec;
  return sync ? os::sync_data(fd) : std::error_code{};
}

/// Writes the record of transaction `txn` at `off`: pages `pages[0..n)` (ascending page
/// numbers) are read from `base + page * page_size`. Does not sync.
inline std::error_code write_record(int fd, std::uint64_t off, std::uint64_t txn, std::uint64_t file_id,
                                    const std::uint64_t* pages, std::size_t n, const unsigned char* base) {
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
  rh.page_count = n;
  rh.entries_checksum = checksum(entries, n * sizeof(record_entry));
  rh.checksum = record_header_checksum(rh);
  std::memcpy(head.data(), &rh, sizeof rh);
  record_trailer tr{};
  std::memcpy(tr.magic, trailer_magic, sizeof trailer_magic);
  tr.txn = txn;
  tr.header_checksum = rh.checksum;

  // Pages go straight from the mapping to the kernel: no copy in user space.
  std::vector<struct iovec> iov;
  iov.reserve(n + 2);
  iov.push_back({head.data(), head.size()});
  for (std::size_t i = 0; i < n; ++i)
    iov.push_back({const_cast<unsigned char*>(base + pages[i] * page_size), page_size});
  iov.push_back({&tr, sizeof tr});
  return os::pwritev_all(fd, iov.data(), iov.size(), off);
}

/// What `check_record` learned about a valid record.
struct record_info {
  std::uint64_t offset = 0;
  std::uint64_t txn = 0;
  std::uint64_t page_count = 0;
  std::uint64_t end = 0;  ///< offset right after the record
};

/// Validates the record at `off`, expected to be transaction `txn` of data file `file_id`
/// with page numbers below `max_pages`. Reads every page to verify its checksum. An
/// invalid or absent record is `valid == false` without error; errors are I/O errors.
inline std::error_code check_record(int fd, std::uint64_t off, std::uint64_t txn, std::uint64_t file_id,
                                    std::uint64_t max_pages, bool& valid, record_info& info) {
  valid = false;
  record_header rh;
  std::size_t got = 0;
  if (auto ec = os::pread_all(fd, &rh, sizeof rh, off, got)) return ec;
  if (got != sizeof rh || std::memcmp(rh.magic, record_magic, sizeof record_magic) != 0 || rh.txn != txn ||
      rh.file_id != file_id || rh.checksum != record_header_checksum(rh) || rh.page_count == 0 ||
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

/// Copies the pages of a record that `check_record` accepted into the data file, page 0
/// (the header) last so that a reader of the header never sees it ahead of its pages.
inline std::error_code apply_record(int log_fd, const record_info& info, int data_fd) {
  const std::uint64_t n = info.page_count;
  std::vector<record_entry> entries(static_cast<std::size_t>(n));
  std::size_t got = 0;
  std::uint64_t pos = info.offset + sizeof(record_header);
  if (auto ec = os::pread_all(log_fd, entries.data(), entries.size() * sizeof(record_entry), pos, got)) return ec;
  pos += n * sizeof(record_entry);
  std::vector<unsigned char> page(page_size);
  std::uint64_t header_index = n;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (entries[i].page == 0) {
      header_index = i;
      continue;
    }
    if (auto ec = os::pread_all(log_fd, page.data(), page_size, pos + i * page_size, got)) return ec;
    if (auto ec = os::pwrite_all(data_fd, page.data(), page_size, entries[i].page * page_size)) return ec;
  }
  if (header_index < n) {
    if (auto ec = os::pread_all(log_fd, page.data(), page_size, pos + header_index * page_size, got)) return ec;
    if (auto ec = os::pwrite_all(data_fd, page.data(), page_size, 0)) return ec;
  }
  return {};
}

/// Writes the pages `pages[0..n)` (ascending) from memory at `base` into the data file,
/// coalescing runs of consecutive pages into one call, page 0 last.
inline std::error_code apply_pages(int data_fd, const std::uint64_t* pages, std::size_t n, const unsigned char* base) {
  std::size_t i = (n > 0 && pages[0] == 0) ? 1 : 0;
  std::vector<struct iovec> iov;
  while (i < n) {
    std::size_t j = i + 1;
    while (j < n && pages[j] == pages[j - 1] + 1) ++j;
    iov.clear();
    for (std::size_t k = i; k < j; ++k)
      iov.push_back({const_cast<unsigned char*>(base + pages[k] * page_size), page_size});
    if (auto ec = os::pwritev_all(data_fd, iov.data(), iov.size(), pages[i] * page_size)) return ec;
    i = j;
  }
  if (n > 0 && pages[0] == 0) return os::pwrite_all(data_fd, base, page_size, 0);
  return {};
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_LOG_HPP
