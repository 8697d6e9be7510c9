// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Recovery and checkpoints: bringing the data file up to the log, and restarting the log.
///
/// The data file only ever receives pages of committed transactions, copied from the log
/// (or from the committer's private pages, which equal the log's). Three situations call
/// for the log to be read back:
///  - full recovery (`recover_all`), by the first writable opener, alone: a power cut may
///    have lost any unsynced write to the data file, so every record of the generation is
///    replayed, the data file synced, and the log restarted;
///  - a pending record (`replay_pending`), by the next writer or by a reader that finds a
///    half-applied commit: a process died between its commit's log sync and the end of the
///    apply, leaving a durable record past the data file's transaction;
///  - a checkpoint (`checkpoint`), by a writer between transactions: the data file is synced
///    and only then the log restarts (new base transaction), so a crash in between merely
///    replays records the data file already has. A failed data-file sync keeps the log and
///    re-applies it, because the kernel may have dropped the pages it failed to write.
/// Replay writes each record's changed bytes, header page last: replaying a record twice is
/// harmless, and replaying in order from a durable state repairs any torn data-file write.
///
/// Each function works on an `engine_files` (what it needs of the engine) and returns the
/// log position it established; none keeps state of its own.
#ifndef TMF_DETAIL_RECOVERY_HPP
#define TMF_DETAIL_RECOVERY_HPP

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../error.hpp"
#include "format.hpp"
#include "locks.hpp"
#include "log.hpp"
#include "os.hpp"

namespace tmf::detail {

/// What recovery needs of an open storage.
struct engine_files {
  const os::file& data;
  log_file& log;
  apply_gate& gate;
  const std::string& name;  ///< the data file's path, for messages
  std::uint64_t file_id;
  std::uint64_t reserved;  ///< address space reserved for the arena: bounds everything recovered
  bool full;               ///< durability::full: sync what recovery writes
};

namespace recovery {

/// The apply marker of a data file that may be mixed (a re-apply after a failed sync itself
/// failed): whoever next uses the file replays the whole log generation first.
inline constexpr std::uint64_t marker_broken = ~std::uint64_t{0};

/// The page numbers a record may hold (and their count): within the reservation.
inline std::uint64_t record_page_limit(const engine_files& f) noexcept { return f.reserved / page_size; }

inline file_header read_data_header(const engine_files& f) {
  file_header h;
  std::size_t got = 0;
  if (auto ec = os::pread_all(f.data, &h, sizeof h, 0, got)) throw_os(ec, "cannot read " + f.name);
  if (got < sizeof h) throw error(errc::not_a_storage, "tmf: " + f.name + " is too short to hold a header");
  return h;
}

/// Whether a valid record of transaction `txn` in generation `generation` starts at `off`.
inline bool record_at(const engine_files& f, std::uint64_t off, std::uint64_t txn, std::uint64_t generation) {
  bool valid = false;
  record_info info;
  if (auto ec = check_record(f.log.file(), off, txn, f.file_id, generation, record_page_limit(f), valid, info))
    throw_os(ec, "cannot read " + f.log.path().string());
  return valid;
}

/// Sets the apply marker to `txn` (nothing half-applied) and clears a stale pending word.
inline void clear_marker(const engine_files& f, std::uint64_t txn) {
  if (auto ec = write_apply_marker(f.log.file(), txn)) throw_os(ec, "cannot write " + f.log.path().string());
  if (auto ec = set_commit_pending(f.log.file(), 0)) throw_os(ec, "cannot write " + f.log.path().string());
}

/// Reads the control page. An invalid header starts a new generation at the data file's
/// transaction `h.txn`: the data file is consistent whenever the log header is invalid,
/// since the header is only rewritten after the data file was synced.
inline log_control read_control(const engine_files& f, const file_header& h) {
  log_control c;
  bool valid = false;
  if (auto ec = read_log_control(f.log.file(), f.file_id, c, valid)) throw_os(ec, "cannot read " + f.log.path().string());
  if (!valid) {
    const std::uint64_t generation = next_generation(0, f.file_id, h.txn);
    // Synced with durability::full: the new generation must be durable before a commit relies on it.
    if (auto ec = write_log_header(f.log.file(), f.file_id, h.txn, generation, f.full))
      throw_os(ec, "cannot write " + f.log.path().string());
    // A new log's name must be durable too: fsync the directory.
    if (f.full)
      if (auto ec = os::sync_directory(f.log.path().parent_path())) throw_os(ec, "cannot sync the log's directory");
    clear_marker(f, h.txn);
    c.header.base_txn = h.txn;
    c.header.generation = generation;
    c.marker = {};
  }
  return c;
}

/// Replays the valid records of generation `generation` from `off`, expecting `txn` first;
/// returns how many. `off` ends right after the last one.
inline std::uint64_t replay_from(const engine_files& f, std::uint64_t& off, std::uint64_t txn,
                                 std::uint64_t generation) {
  std::uint64_t count = 0;
  const std::string log_name = f.log.path().string();
  for (;; ++txn) {
    bool valid = false;
    record_info info;
    if (auto ec = check_record(f.log.file(), off, txn, f.file_id, generation, record_page_limit(f), valid, info))
      throw_os(ec, "cannot read " + log_name);
    if (!valid) return count;
    std::vector<record_extent> e;
    if (auto ec = read_record_extents(f.log.file(), info, e)) throw_os(ec, "cannot read " + log_name);
    const std::uint64_t last = last_page(e);
    os::file_info fi;
    if (auto ec = os::stat_file(f.data, fi)) throw_os(ec, "cannot stat " + f.name);
    if (fi.size < (last + 1) * page_size)
      if (auto ec = os::allocate(f.data, fi.size, (last + 1) * page_size - fi.size)) throw_os(ec, "recovery");
    if (auto ec = apply_record(f.log.file(), info, e, f.data)) throw_os(ec, "cannot replay the log into " + f.name);
    off = info.end;
    ++count;
  }
}

/// Makes sure the data file is at least as long as its header's arena. The replayed header
/// is validated before its arena size is trusted: a damaged log must not make recovery
/// allocate the disk.
inline void extend_to_arena(const engine_files& f) {
  const file_header h = read_data_header(f);
  validate_header_format(h, f.name);
  if (h.arena_size > f.reserved)
    throw error(errc::corrupted, "tmf: " + f.name + ": the recovered header's arena exceeds max_size");
  os::file_info fi;
  if (auto ec = os::stat_file(f.data, fi)) throw_os(ec, "cannot stat " + f.name);
  if (fi.size < h.arena_size)
    if (auto ec = os::allocate(f.data, fi.size, h.arena_size - fi.size)) throw_os(ec, "recovery");
}

/// The first writable opener, alone: replays the whole log, syncs, starts a new generation.
/// A new generation also settles a commit whose outcome was unknown (errc::commit_unknown):
/// a record this did not replay can never become valid again.
inline log_position recover_all(const engine_files& f) {
  byte_lock writer, apply;
  if (auto ec = writer.lock(f.data, lock_writer, os::lock_kind::exclusive)) throw_os(ec, "write lock");
  // Read-only processes may be reading (they take no open lock): apply under the apply lock.
  if (auto ec = apply.lock(f.data, lock_apply, os::lock_kind::exclusive)) throw_os(ec, "apply lock");
  file_header h = read_data_header(f);
  const log_control c = read_control(f, h);
  std::uint64_t off = log_start;
  if (c.marker.txn <= h.txn && !record_at(f, off, c.header.base_txn + 1, c.header.generation) && c.header.base_txn == h.txn)
    return {h.txn, c.header.generation, log_start, h.txn};  // clean: the files stay byte-for-byte as they were
  // The readers of other processes that have a reader table are kept out too.
  const reader_table::raised readers_out(f.gate.table());
  replay_from(f, off, c.header.base_txn + 1, c.header.generation);
  extend_to_arena(f);
  h = read_data_header(f);
  // Orders the replayed pages before the new log header: once the log restarts, the
  // records are gone and the data file is the only copy.
  if (f.full)
    if (auto ec = os::sync_data(f.data)) throw_os(ec, "cannot sync " + f.name);
  set_reapply_needed(f.log.file(), 0);  // the whole log was just re-applied and synced
  const std::uint64_t generation = next_generation(c.header.generation, f.file_id, h.txn);
  if (auto ec = write_log_header(f.log.file(), f.file_id, h.txn, generation, f.full))
    throw_os(ec, "cannot write " + f.log.path().string());
  clear_marker(f, h.txn);
  return {h.txn, generation, log_start, h.txn};
}

/// Writer lock held: replays a record that another process made durable but did not
/// (fully) apply, or the whole generation after a broken re-apply, and finds where the
/// next record goes.
inline log_position replay_pending(const engine_files& f) {
  const file_header h = read_data_header(f);
  const log_control c = read_control(f, h);
  const std::uint64_t generation = c.header.generation;
  const bool broken = c.marker.txn == marker_broken;
  std::uint64_t off = (!broken && h.log_base == c.header.base_txn && h.log_end >= log_start) ? h.log_end : log_start;
  const std::uint64_t first = broken ? c.header.base_txn + 1 : h.txn + 1;
  if (broken || c.marker.txn > h.txn || record_at(f, off, h.txn + 1, generation)) {
    apply_gate::exclusive_hold hold;
    if (auto ec = f.gate.exclusive(hold)) throw_os(ec, "apply lock");
    // Orders the records before anyone sees them applied: their writer's own sync may have
    // failed (errc::commit_unknown), and what readers see must stay.
    if (f.full)
      if (auto ec = f.log.sync()) throw_os(ec, "cannot sync " + f.log.path().string());
    if (broken) off = log_start;
    replay_from(f, off, first, generation);
    extend_to_arena(f);
    clear_marker(f, read_data_header(f).txn);
  }
  return {c.header.base_txn, generation, off, read_data_header(f).txn};
}

/// Writer lock held: whether `pos` is still where the next record goes. True if the data
/// file is at the transaction `pos` was learnt at and no other writer left a record after
/// it: then nothing needs replaying (one small read instead of four).
inline bool position_current(const engine_files& f, const log_position& pos, std::uint64_t data_txn) {
  return data_txn == pos.seen_txn && !record_at(f, pos.offset, pos.seen_txn + 1, pos.generation);
}

/// Whether a read-only opener must recover the file itself: no writable process has it open
/// (the first of them would have recovered it) and the log holds commits since the last
/// checkpoint, so the last writer did not close cleanly and a power cut may have torn the
/// data file. Then `c` holds the log's control page.
inline bool read_only_needs_recovery(const engine_files& f, const file_header& h, log_control& c) {
  bool free = false;
  if (auto ec = os::lock_would_succeed(f.data, lock_open, os::lock_kind::exclusive, free)) throw_os(ec, "open lock");
  if (!free || !f.log.is_open()) return false;
  bool valid = false;
  if (auto ec = read_log_control(f.log.file(), h.file_id, c, valid)) throw_os(ec, "cannot read " + f.log.path().string());
  if (!valid) return false;  // only rewritten after the data file was synced: the data file is whole
  return c.header.base_txn != h.txn || c.marker.txn > h.txn ||
         record_at(f, log_start, c.header.base_txn + 1, c.header.generation);
}

/// Recovery for a process that writes no file: every valid record of the log's generation
/// is copied into the process's own private pages of the mapping at `base` (MAP_PRIVATE:
/// the data file stays untouched), header page last, as full recovery would write them into
/// the file. `map(bytes)` must map the data file up to `bytes` first. Returns the
/// transaction the view is then at; `pages` receives the pages made private.
template <class Map>
std::uint64_t replay_into_memory(const engine_files& f, const log_control& c, unsigned char* base, Map&& map,
                                 std::vector<std::uint64_t>& pages) {
  const std::string log_name = f.log.path().string();
  std::uint64_t txn = c.header.base_txn, off = log_start;
  os::file_info fi;
  if (auto ec = os::stat_file(f.data, fi)) throw_os(ec, "cannot stat " + f.name);
  for (;; ++txn) {
    bool valid = false;
    record_info info;
    if (auto ec = check_record(f.log.file(), off, txn + 1, f.file_id, c.header.generation, record_page_limit(f), valid,
                               info))
      throw_os(ec, "cannot read " + log_name);
    if (!valid) break;
    std::vector<record_extent> e;
    if (auto ec = read_record_extents(f.log.file(), info, e)) throw_os(ec, "cannot read " + log_name);
    const std::uint64_t last = last_page(e);
    if ((last + 1) * page_size > fi.size)  // the file lacks the pages to map: only a writer can extend it
      throw error(errc::read_only, "tmf: " + f.name + " needs recovery that extends the file; open it writable once");
    map(static_cast<std::size_t>((last + 1) * page_size));
    // Extent by extent, the header page last (its header last), as apply_record writes them.
    const std::size_t hdr = header_extents(e.data(), e.size());
    std::uint64_t at = record_data_offset(info), header_bytes = 0;
    for (std::size_t k = 0; k < hdr; ++k) header_bytes += e[k].length;
    auto copy = [&](std::size_t i, std::uint64_t from) {
      unsigned char* page = base + e[i].page * page_size;
      std::size_t n = 0;
      std::error_code ec = os::protect(page, page_size, true);
      if (!ec) ec = os::pread_all(f.log.file(), page + e[i].offset, e[i].length, from, n);
      if (!ec && n != e[i].length) ec = std::make_error_code(std::errc::io_error);  // check_record saw it whole
      if (auto e2 = os::protect(page, page_size, false); e2 && !ec) ec = e2;
      if (!ec) pages.push_back(e[i].page);
      if (ec) throw_os(ec, "cannot replay " + log_name + " into memory");
    };
    at += header_bytes;
    for (std::size_t i = hdr; i < e.size(); at += e[i].length, ++i) copy(i, at);
    at = record_data_offset(info) + header_bytes;
    for (std::size_t i = hdr; i-- > 0;) copy(i, at -= e[i].length);
    off = info.end;
  }
  std::sort(pages.begin(), pages.end());
  pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
  return txn;
}

/// What a checkpoint remembers between attempts.
struct checkpoint_state {
  bool data_sync_failed = false;  ///< the last data-file sync failed: re-apply before trusting it
};

/// Syncs the data file and restarts the log at transaction `txn`. Writer lock held, no
/// transaction open; `keep` bytes of log space survive a restart.
///
/// The rule: the log restarts only once the data file is known durable. A failed data-file
/// sync keeps the log and re-applies it (the kernel may have dropped the pages it failed to
/// write), and flags that for every process. Returns empty when the files are consistent
/// (restarted, or kept and restored), else errc::needs_reopen with the I/O error in
/// `cause`: the data file could not be restored (it is marked broken, so every process
/// replays the log before using it) or the new log header is in doubt.
inline std::error_code checkpoint(const engine_files& f, checkpoint_state& st, std::uint64_t txn, std::uint64_t keep,
                                  std::error_code& cause) noexcept {
  log_position& pos = f.log.position();
  auto give_up = [&](std::error_code ec) {
    cause = ec;
    write_apply_marker(f.log.file(), marker_broken);  // best effort: the log may be what fails
    return make_error_code(errc::needs_reopen);
  };
  // Re-applies the whole generation under the apply lock: readers must not see older pages being rewritten.
  auto reapply = [&]() -> std::error_code {
    apply_gate::exclusive_hold hold;
    if (auto ec = f.gate.exclusive(hold)) return ec;
    try {
      std::uint64_t off = log_start;
      replay_from(f, off, pos.base_txn + 1, pos.generation);
    } catch (const std::system_error& e) {
      return e.code();
    } catch (...) {
      return std::make_error_code(std::errc::not_enough_memory);
    }
    return {};
  };
  std::uint64_t flagged = 0;
  std::size_t got = 0;
  if (os::pread_all(f.log.file(), &flagged, sizeof flagged, offsetof(log_control, reapply_needed), got))
    return {};  // in doubt whether to re-apply: keep the log, which is always safe
  if (st.data_sync_failed || (got == sizeof flagged && flagged != 0))
    if (auto ec = reapply()) return give_up(ec);
  // Orders every applied page before the log restarts: the records are the only other copy.
  if (f.full)
    if (auto ec = os::sync_data(f.data)) {
      st.data_sync_failed = true;
      // For every process: none may restart the log before re-applying it.
      if (auto e2 = set_reapply_needed(f.log.file(), 1)) return give_up(e2);
      if (auto e2 = reapply()) return give_up(e2);  // restore the pages now, before anyone reads them
      return {};
    }
  st.data_sync_failed = false;
  if (flagged != 0) set_reapply_needed(f.log.file(), 0);  // a failure costs one more re-apply later
  // The data file is durable: restart. The new header must be durable before records follow it.
  const std::uint64_t generation = next_generation(pos.generation, f.file_id, txn);
  std::error_code ec = write_log_header(f.log.file(), f.file_id, txn, generation, f.full);
  if (ec) ec = write_log_header(f.log.file(), f.file_id, txn, generation, f.full);  // once more
  if (ec) {
    // Which header is durable is unknown (either is consistent with the synced data file),
    // so no record may be appended after either.
    cause = ec;
    return make_error_code(errc::needs_reopen);
  }
  pos = {txn, generation, log_start, txn};
  f.log.shrink_to(keep, keep);  // a huge transaction may have left a huge log: give the space back
  return {};
}

}  // namespace recovery
}  // namespace tmf::detail

#endif  // TMF_DETAIL_RECOVERY_HPP
