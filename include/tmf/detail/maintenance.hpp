// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Maintenance of an open storage: a consistent hot copy, and compaction.
///
/// Copy (`copy_storage`): inside one read transaction the mapping shows exactly the last
/// commit (a commit in another process waits for this process's readers before it applies,
/// locks.hpp), so the arena's bytes are written out as they are. The copy gets a fresh file
/// id and a log of its own with a new, empty generation at the copied transaction: it is a
/// cleanly closed storage. Both files are written under temporary names, synced, and renamed
/// into place, log first, without replacing anything.
///
/// Compaction (`compact_storage`): objects never move (pointers into the file are raw), so
/// compaction only gives back space the heap does not use. In one write transaction the top
/// free block is cut back to a page boundary and the arena shrinks (committed like any
/// change); after the commit the data file is truncated to the new arena and the pages that
/// lie wholly inside free blocks (past each block's first page, which holds its tree node)
/// are punched out. The same commit marks the free blocks as holed, so a page reused later
/// is allocated again before it is handed out.
#ifndef TMF_DETAIL_MAINTENANCE_HPP
#define TMF_DETAIL_MAINTENANCE_HPP

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "../error.hpp"
#include "engine.hpp"
#include "format.hpp"
#include "log.hpp"
#include "os.hpp"

namespace tmf {

/// What compaction gave back: the data file's length and its disk usage before and after.
struct compact_result {
  std::uint64_t file_bytes_before = 0, file_bytes_after = 0;
  std::uint64_t disk_bytes_before = 0, disk_bytes_after = 0;
  std::uint64_t punched_bytes = 0;  ///< bytes inside free blocks handed back (0 where the file system cannot)
};

namespace detail {

namespace maintenance_impl {
/// A read transaction for the scope (the engine's own begin_read refuses the writer's thread).
struct read_scope {
  engine& e;
  explicit read_scope(engine& en) : e(en) { e.begin_read(true); }
  read_scope(const read_scope&) = delete;
  read_scope& operator=(const read_scope&) = delete;
  ~read_scope() { e.end_read(); }
};
struct write_scope {
  engine& e;
  explicit write_scope(engine& en) : e(en) { e.begin_write(true); }
  write_scope(const write_scope&) = delete;
  write_scope& operator=(const write_scope&) = delete;
  ~write_scope() { e.end_write(); }
};

inline std::filesystem::path log_of(const std::filesystem::path& p) { return p.string() + "-log"; }

/// Removes a temporary file on scope exit unless released.
struct temp_file {
  std::filesystem::path path;
  bool keep = false;
  ~temp_file() {
    if (!keep && !path.empty()) os::remove_file(path);
  }
};
}  // namespace maintenance_impl

/// Writes a consistent copy of `e`'s last commit to `dst` (and `dst`-log). Refuses to
/// replace an existing file (std::errc::file_exists).
inline void copy_storage(engine& e, const std::filesystem::path& dst) {
  using namespace maintenance_impl;
  const std::filesystem::path dst_log = log_of(dst);
  const std::string name = dst.string();
  std::error_code exists_ec;
  if (std::filesystem::exists(dst, exists_ec) || std::filesystem::exists(dst_log, exists_ec))
    throw_os(std::make_error_code(std::errc::file_exists), "cannot copy " + e.path().string() + " to " + name);

  std::random_device rd;
  const std::string suffix = ".copy-" + std::to_string(os::process_id()) + "-" + std::to_string(rd());
  temp_file data_tmp{dst.string() + suffix}, log_tmp{dst_log.string() + suffix};
  os::file data, log;
  if (auto ec = os::create_file(data_tmp.path, data)) throw_os(ec, "cannot create " + data_tmp.path.string());
  if (auto ec = os::create_file(log_tmp.path, log)) throw_os(ec, "cannot create " + log_tmp.path.string());

  const std::uint64_t file_id = (std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(os::process_id());
  std::uint64_t txn = 0;
  {
    read_scope view(e);
    const unsigned char* base = e.base();
    const auto arena = static_cast<std::uint64_t>(e.header()->arena_size);
    // Space first: a full disk fails here, not halfway.
    if (auto ec = os::allocate(data, 0, arena)) throw_os(ec, "cannot allocate " + name);
    alignas(16) unsigned char page0[page_size];
    std::memcpy(page0, base, page_size);
    auto* h = reinterpret_cast<file_header*>(page0);
    txn = h->txn;
    h->file_id = file_id;
    h->log_base = txn;  // the copy's log starts its generation here, empty
    h->log_end = log_start;
    seal_header(*h);
    if (auto ec = os::pwrite_all(data, page0, page_size, 0)) throw_os(ec, "cannot write " + name);
    constexpr std::uint64_t chunk = std::uint64_t{1} << 20;
    for (std::uint64_t off = page_size; off < arena; off += chunk) {
      const auto n = static_cast<std::size_t>(std::min(chunk, arena - off));
      if (auto ec = os::pwrite_all(data, base + off, n, off)) throw_os(ec, "cannot write " + name);
    }
  }
  // The log of a cleanly closed storage: one growth step, a valid header whose generation
  // begins at the copied transaction, the apply marker there, no pending word.
  if (auto ec = os::allocate(log, 0, log_growth_step)) throw_os(ec, "cannot allocate " + dst_log.string());
  std::error_code ec = write_log_header(log, file_id, txn, next_generation(0, file_id, txn), false);
  if (!ec) ec = write_apply_marker(log, txn);
  if (!ec) ec = set_commit_pending(log, 0);
  if (!ec) ec = set_reapply_needed(log, 0);
  if (ec) throw_os(ec, "cannot write " + dst_log.string());
  // Both files whole on disk before either name appears.
  if (auto sec = os::sync_data(data)) throw_os(sec, "cannot sync " + name);
  if (auto sec = os::sync_data(log)) throw_os(sec, "cannot sync " + dst_log.string());
  if (auto rec = os::rename_noreplace(log_tmp.path, dst_log)) throw_os(rec, "cannot create " + dst_log.string());
  log_tmp.keep = true;
  if (auto rec = os::rename_noreplace(data_tmp.path, dst)) {
    os::remove_file(dst_log);
    throw_os(rec, "cannot create " + name);
  }
  data_tmp.keep = true;
  os::sync_directory(dst.parent_path());
}

/// Compacts `e` (see the file comment). Waits for the writer. \throws errc::corrupted if
/// the heap fails its audit (nothing is changed then).
inline compact_result compact_storage(engine& e) {
  using namespace maintenance_impl;
  compact_result r;
  os::file_info fi;
  write_scope w(e);
  if (auto ec = os::stat_file(e.data_file(), fi)) throw_os(ec, "cannot stat " + e.path().string());
  r.file_bytes_before = fi.size;
  r.disk_bytes_before = fi.disk_bytes;
  file_header* h = e.header();
  if (h->root != 0) {
    e.check();
    heap hp = e.arena_heap();
    void* end = hp.trim_top(page_size);
    const auto arena = static_cast<std::uint64_t>(static_cast<unsigned char*>(end) - e.base());
    if (arena != h->arena_size) h->arena_size = arena;
    // The free blocks record the holes about to be punched, so that their pages are
    // allocated again before reuse (a full disk is then std::bad_alloc, not a failed apply).
    hp.record_holes();
    std::vector<std::pair<std::uint64_t, std::uint64_t>> holes;
    const auto b = reinterpret_cast<std::uintptr_t>(e.base());
    hp.for_each_free_block([&](void* p, std::size_t size) {
      const auto a = reinterpret_cast<std::uintptr_t>(p);
      // The first page holds the block's tree node: it stays (as heap_impl::holes_begin).
      const std::uintptr_t first = (a - b) / page_size * page_size + page_size;
      const std::uintptr_t last = (a - b + size) / page_size * page_size;
      if (last > first) holes.emplace_back(first, last - first);
    });
    // Holes or a cut change the file: then the commit logs a record even if nothing else
    // changed, so that other processes see the txn move and drop their kept pages.
    if (fi.size > arena || !holes.empty()) e.force_record();
    e.commit();  // nothing to log if nothing changed
    // Committed (durably with durability::full): the tail is no longer part of any state a
    // recovery can reach, except records that replay over it and extend the file again.
    e.drop_kept();  // this process's own kept copies would hide the holes
    if (fi.size > arena)
      if (auto ec = os::truncate(e.data_file(), arena)) throw_os(ec, "cannot truncate " + e.path().string());
    for (const auto& [off, len] : holes) {
      std::error_code ec = os::punch_hole(e.data_file(), off, len);
      if (ec == std::errc::operation_not_supported) break;  // the file system keeps its blocks
      if (ec) throw_os(ec, "cannot punch a hole in " + e.path().string());
      r.punched_bytes += len;
    }
  }
  if (auto ec = os::stat_file(e.data_file(), fi)) throw_os(ec, "cannot stat " + e.path().string());
  r.file_bytes_after = fi.size;
  r.disk_bytes_after = fi.disk_bytes;
  return r;
}

}  // namespace detail
}  // namespace tmf

#endif  // TMF_DETAIL_MAINTENANCE_HPP
