// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Opening and closing an engine (included by engine.hpp, after the class).
///
/// Opening, in order, each step a member function:
///  1. `open_files`: open the data file, or create it with its first page (linked into place
///     whole, so no process sees a half-made file); claim a registry slot;
///  2. `take_open_lock`: the open lock, exclusively if this process is alone;
///  3. validate the header's format; `reserve_for`: the address range at the header's address;
///     `open_reader_table`: the lock file, before anything that may write the data file;
///  4. `recover_or_refuse`: open the log; full recovery if alone, else replay a pending
///     record; a read-only process refuses a file that needs recovery;
///  5. `map_and_verify`: re-read the header (recovery may have replaced it), map the arena;
///     then check the recovered header's identity (user magic, Root fingerprint);
///  6. publish the slot: from then on the fault handler and allocators see the storage.
/// Any refusal before the first write leaves the files byte-for-byte as they were; a wrong
/// magic or Root is refused after recovery, which writes nothing to a cleanly closed file
/// (an unrecovered one is brought to its last commit first, as any open would).
#ifndef TMF_DETAIL_ENGINE_OPEN_HPP
#define TMF_DETAIL_ENGINE_OPEN_HPP

#include <cstring>
#include <random>
#include <string>

#ifndef TMF_DETAIL_ENGINE_HPP
#error "engine_open.hpp holds engine.hpp's definitions: include engine.hpp"
#endif

namespace tmf::detail {

namespace engine_impl {
inline std::string hex(std::uint64_t v) {
  char buf[24];
  return format_hex(static_cast<std::uintptr_t>(v), buf);
}
inline std::uint64_t round_up_page(std::uint64_t n) noexcept { return (n + page_size - 1) / page_size * page_size; }

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
  const std::uintptr_t step = (size + granule - 1) / granule * granule;
  for (std::uintptr_t a = zone_begin; a + size <= zone_end && a + size > a; a += step)
    if (!os::reserve(reinterpret_cast<void*>(a), size, true, out)) return {};
#else
  for (std::uintptr_t a = 0x10000000; a + size <= 0xc0000000u && a + size > a; a += 0x10000000)
    if (!os::reserve(reinterpret_cast<void*>(a), size, true, out)) return {};
#endif
  return os::reserve(nullptr, size, false, out);
}
}  // namespace engine_impl

inline engine::engine(const std::filesystem::path& file, const options& opt, const root_fingerprint& root,
                      bool reader_table)
    : m_path(file), m_opt(opt), m_root_fp(root), m_reader_table(reader_table) {
  try {
    open();
  } catch (...) {
    close_all(false);
    throw;
  }
}

inline void engine::open() {
  m_fork_generation = os::fork_generation();
  if (auto ec = install_tracker()) throw_os(ec, "cannot install the SIGSEGV handler");
  if (os::system_page_size() != page_size)
    throw error(errc::incompatible_format, "tmf: this system's page size is not 4096");
  m_writable = m_opt.mode != open_mode::read_only;
  const bool created = open_files();
  take_open_lock();
  const file_header h = read_header();
  validate_header_format(h, m_name);
  m_file_id = h.file_id;
  if (!created) reserve_for(h);
  open_reader_table();
  recover_or_refuse(h);
  map_and_verify();
  // On the recovered header: a replayed commit may have installed another Root (tmf::migrate).
  // Recovery of a cleanly closed file writes nothing, so a refusal leaves it untouched.
  if (m_root_fp.adopt)
    adopt_header_identity();
  else
    validate_header_identity(*header(), m_name, m_opt.magic, m_root_fp);
  publish_slot(*m_slot, m_base, m_reserved, &m_dirty, m_fork_generation, m_name.c_str());
}

/// The untyped open's identity: the recovered header's Root and user magic.
inline void engine::adopt_header_identity() {
  const file_header& h = *header();
  m_root_fp.size = h.root_size;
  m_root_fp.align = h.root_align;
  m_root_fp.schema = h.root_schema;
  m_root_fp.name.assign(h.root_name, ::strnlen(h.root_name, root_name_capacity));
  m_opt.magic = h.user_magic;
}

/// Opens the data file as the mode says, creating it if needed, and claims a registry slot.
/// True if this process created the file (the reservation is then made already).
inline bool engine::open_files() {
  bool created = false;
  for (;;) {
    std::error_code ec;
    switch (m_opt.mode) {
      case open_mode::read_only: ec = os::open_file(m_path, os::access::read_only, m_fd); break;
      case open_mode::open_only: ec = os::open_file(m_path, os::access::read_write, m_fd); break;
      case open_mode::create_only:
        if (!create_new()) throw_os(std::make_error_code(std::errc::file_exists), "cannot create " + m_name);
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
    if (ec) throw_os(ec, "cannot open " + m_name);
    break;
  }
  os::file_info fi;
  if (auto ec = os::stat_file(m_fd, fi)) throw_os(ec, "cannot stat " + m_name);
  if (auto ec = claim_slot(this, fi, m_slot)) {
    if (ec == errc::already_open) throw error(ec, "tmf: " + m_name + " is already open in this process");
    throw error(ec, "tmf: more than " + std::to_string(max_open_storages) + " storages open in this process");
  }
  return created;
}

/// Writable processes hold the open lock shared; the first takes it exclusively and so knows
/// it is alone. Read-only processes take none: the next writable opener after a power cut
/// must find itself first and run full recovery, which a read-only process cannot do.
inline void engine::take_open_lock() {
  if (!m_writable) return;
  std::error_code ec = m_open_lock.lock(m_fd, lock_open, os::lock_kind::exclusive, false);
  m_first = !ec;
  if (would_block(ec)) ec = m_open_lock.lock(m_fd, lock_open, os::lock_kind::shared);
  if (ec) throw_os(ec, "open lock");
}

/// Opens the reader table and uses its lanes; a read-only process that may not write the
/// lock file works without one (then its readers take the apply lock, locks.hpp).
inline void engine::open_reader_table() {
  if (!m_writable && !m_reader_table) return;
  if (!m_table.open(m_path.string() + "-lock", m_fd, m_file_id, m_writable, m_name)) return;
  m_lanes = &m_table.own();
  m_pending = &m_table.pending();
}

/// The header of the data file, after refusing a file too short to hold one page.
inline file_header engine::read_header() {
  os::file_info fi;
  if (auto ec = os::stat_file(m_fd, fi)) throw_os(ec, "cannot stat " + m_name);
  if (fi.size == 0) throw error(errc::not_a_storage, "tmf: " + m_name + " is empty");
  if (fi.size < page_size) throw error(errc::not_a_storage, "tmf: " + m_name + " is shorter than one page (" + std::to_string(fi.size) + " bytes)");
  return recovery::read_data_header(files());
}

/// Reserves the address range an existing file is bound to: its recorded address, for the
/// larger of its recorded max_size and the options'.
inline void engine::reserve_for(const file_header& h) {
  using engine_impl::hex;
  if (m_opt.address && reinterpret_cast<std::uintptr_t>(m_opt.address) != h.address)
    throw error(errc::address_unavailable, "tmf: " + m_name + " is bound to address " + hex(h.address) + ", not " +
                                               hex(reinterpret_cast<std::uintptr_t>(m_opt.address)));
  m_max_size = std::max<std::uint64_t>(engine_impl::round_up_page(m_opt.max_size), h.max_size);
  if (m_max_size != static_cast<std::size_t>(m_max_size) || h.address + m_max_size < h.address)
    throw error(errc::address_unavailable, "tmf: " + m_name + " needs more address space than this process has");
  void* out = nullptr;
  if (auto ec = os::reserve(reinterpret_cast<void*>(static_cast<std::uintptr_t>(h.address)),
                            static_cast<std::size_t>(m_max_size), true, out))
    throw error(errc::address_unavailable, "tmf: cannot map " + m_name + " at " + hex(h.address) + " (" +
                                               std::to_string(m_max_size >> 20) + " MiB): " + ec.message());
  m_base = static_cast<unsigned char*>(out);
  m_reserved = static_cast<std::size_t>(m_max_size);
}

/// Opens the log and brings the data file up to it: full recovery when alone, else a
/// pending record's replay; a read-only process only checks that nothing is needed.
inline void engine::recover_or_refuse(const file_header& h) {
  const std::filesystem::path log_path = m_path.string() + "-log";
  if (auto ec = m_log.open(log_path, m_writable)) throw_os(ec, "cannot open " + log_path.string());
  if (!m_writable) {
    // A read-only process recovers into its own private pages; the files stay untouched.
    log_control c;
    if (recovery::read_only_needs_recovery(files(), h, c))
      m_private_txn = recovery::replay_into_memory(
          files(), c, m_base, [this](std::size_t bytes) { ensure_mapped(bytes); }, m_private_pages);
  } else if (m_first) {
    m_log.position() = recovery::recover_all(files());
    if (auto ec = m_open_lock.lock(m_fd, lock_open, os::lock_kind::shared)) throw_os(ec, "open lock");
  } else {
    byte_lock writer;
    std::error_code ec = writer.lock(m_fd, lock_writer, os::lock_kind::exclusive, false);
    if (!ec)
      m_log.position() = recovery::replay_pending(files());
    else if (!would_block(ec))  // a writer is active: it knows the log position, and so will we when we write
      throw_os(ec, "write lock");
  }
}

/// Re-reads the header (recovery may have replaced it), checks it against the file, maps
/// the arena and prepares write tracking.
inline void engine::map_and_verify() {
  // After a recovery into private pages the view's header is the recovered one.
  const file_header h = m_private_txn ? *header() : read_header();
  validate_header_format(h, m_name);
  os::file_info fi;
  if (auto ec = os::stat_file(m_fd, fi)) throw_os(ec, "cannot stat " + m_name);
  if (fi.size < h.arena_size && m_private_txn)
    throw error(errc::read_only, "tmf: " + m_name + " needs recovery that extends the file; open it writable once");
  if (fi.size < h.arena_size)
    throw error(errc::corrupted, "tmf: " + m_name + " is truncated: " + std::to_string(fi.size) +
                                     " bytes, its header says " + std::to_string(h.arena_size));
  if (h.root != 0 && (h.root < h.address + page_size || h.root + h.root_size > h.address + h.arena_size ||
                      h.root % min_block_align != 0 || (h.root_align != 0 && h.root % h.root_align != 0)))
    throw error(errc::corrupted, "tmf: " + m_name + ": the Root pointer is outside the arena or misaligned");
  ensure_mapped(static_cast<std::size_t>(h.arena_size));
  if (auto ec = m_dirty.init(m_reserved / page_size)) throw_os(ec, "cannot reserve the dirty-page set");
  if (os::open_pagemap(m_pagemap)) m_pagemap.close();  // then whole chunks are logged
  m_dirty.use_whole_blocks(m_pagemap.is_open());
  // Kernel tracking where the kernel has it (only writers track; silently the fallback else).
  if (m_writable && !m_private_txn && !kernel_tracker_disabled() &&
      !open_kernel_tracker(m_uffd, m_pagemap, m_base, mapped()))
    m_dirty.use_kernel_tracking(&m_uffd, &m_pagemap);
  // Kept pages: only a writer's commits keep any, and only with kernel tracking (with the
  // mprotect tracker they measured within the noise, and its whole-block pagemap reads
  // would log every kept page of a block again).
  if (m_writable && m_dirty.kernel_tracking())
    if (auto ec = m_dirty.init_kept(m_opt.kept_pages)) throw_os(ec, "cannot reserve the kept-page set");
  m_log.map_view();
}

/// Creates the file with a fresh header (no heap, no root yet: the storage's first write
/// transaction makes them) so that no process ever sees a half-written file. False if the
/// file appeared meanwhile.
inline bool engine::create_new() {
  using engine_impl::hex;
  void* out = nullptr;
  m_max_size = engine_impl::round_up_page(m_opt.max_size);
  if (m_opt.address) {
    if (reinterpret_cast<std::uintptr_t>(m_opt.address) % page_size != 0)
      throw error(errc::address_unavailable, "tmf: options::address must be page-aligned");
    if (auto ec = os::reserve(m_opt.address, m_max_size, true, out))
      throw error(errc::address_unavailable,
                  "tmf: cannot reserve " + hex(reinterpret_cast<std::uintptr_t>(m_opt.address)) + ": " + ec.message());
  } else if (auto ec = engine_impl::reserve_default(m_max_size, out)) {
    throw error(errc::address_unavailable, "tmf: cannot reserve address space for " + m_name + ": " + ec.message());
  }
  m_base = static_cast<unsigned char*>(out);
  m_reserved = m_max_size;

  std::random_device rd;
  const std::uint64_t id = (std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(os::process_id());
  alignas(16) unsigned char page[page_size] = {};
  auto* h = reinterpret_cast<file_header*>(page);
  init_header(*h, id, reinterpret_cast<std::uintptr_t>(m_base), m_max_size, m_opt.magic, m_root_fp);
  seal_header(*h);

  // Write the first page into an unnamed file and link it into place (no leftover if this
  // process dies); where that cannot be done (no O_TMPFILE, no /proc), a named temporary
  // is renamed into place instead.
  const bool full = m_opt.sync == durability::full;
  auto write_page = [&](const os::file& f) {
    std::error_code e = os::pwrite_all(f, page, page_size, 0);
    if (!e && full) e = os::sync_data(f);  // the page before its name: a named file is never empty
    return e;
  };
  os::file fd;
  std::error_code ec = os::create_unnamed_file(m_path.parent_path(), fd);
  if (!ec) {
    ec = write_page(fd);
    if (!ec) ec = os::link_file(fd, m_path);
    if (ec && ec != std::errc::file_exists) fd.close();
  }
  if (!fd.is_open()) {
    const std::filesystem::path tmp = m_name + ".new-" + std::to_string(os::process_id()) + "-" + std::to_string(rd());
    ec = os::create_file(tmp, fd);
    if (!ec) {
      ec = write_page(fd);
      if (!ec) ec = os::rename_noreplace(tmp, m_path);
      if (ec) os::remove_file(tmp);
    }
  }
  if (ec) {
    fd.close();
    release_reservation();
    if (ec == std::errc::file_exists && m_opt.mode == open_mode::open_or_create) return false;
    throw_os(ec, "cannot create " + m_name);
  }
  if (full) os::sync_directory(m_path.parent_path());  // the new name is durable before it is used
  m_fd = std::move(fd);
  return true;
}

/// With errc::commit_unknown, at close, writer lock held: settles the record as absent,
/// durably, unless it is valid after all (then replay_pending syncs and applies it).
inline void engine::settle_unknown() noexcept {
  try {
    const engine_files f = files();
    if (recovery::read_data_header(f).txn + 1 != m_unknown.seen_txn) return;  // settled by another writer
    if (recovery::record_at(f, m_unknown.offset, m_unknown.seen_txn, m_unknown.generation)) return;
    static const char zeros[sizeof(record_header)] = {};
    if (!os::pwrite_all(m_log.file(), zeros, sizeof zeros, m_unknown.offset)) m_log.sync();
  } catch (...) {
  }
}

inline void engine::release_reservation() noexcept {
  if (m_base) os::release(m_base, m_reserved);
  m_base = nullptr;
  m_reserved = 0;
  m_mapped.store(0);
}

inline void engine::close_all(bool checkpoint_if_last) noexcept {
  const bool child = forked();
  if (checkpoint_if_last && !child && (readers_open() || m_writer_thread.load() != 0))
    fatal("a storage was destroyed while one of its readers or writers was still alive");
  if (m_slot) unpublish_slot(*m_slot);
  if (child) {
    // The locks belong to the open files the parent shares: they stay the parent's.
    m_open_lock.abandon();
    m_writer_lock.abandon();
    m_apply_shared.abandon();
    m_table.abandon();
  } else if (checkpoint_if_last && m_writable && m_fd.is_open() && m_log.is_open() && m_base) {
    // The last process to close syncs the data file and empties the log; a storage object
    // that failed an I/O settles what it can (the next writer or open does the rest).
    const bool last = !m_open_lock.lock(m_fd, lock_open, os::lock_kind::exclusive, false);
    byte_lock writer;
    if ((last || m_poison) && !writer.lock(m_fd, lock_writer, os::lock_kind::exclusive, last)) {
      try {
        if (m_poison == errc::commit_unknown) settle_unknown();
        m_log.position() = recovery::replay_pending(files());
        std::error_code cause;
        // An empty log generation means the data file was synced when it began.
        if (last && (m_log.position().offset != log_start || m_checkpoint.data_sync_failed))
          if (!recovery::checkpoint(files(), m_checkpoint, m_log.position().seen_txn,
                                    log_start + m_opt.checkpoint_bytes, cause))
            give_back();
        // A cleanly closed log keeps one growth step of space.
        if (last && m_log.position().offset == log_start && !m_checkpoint.data_sync_failed)
          m_log.shrink_to(log_growth_step, 0);
      } catch (...) {
      }
    }
  }
  m_dirty.destroy();
  m_log.close();
  release_reservation();
  m_uffd.close();  // after the mapping: the registration goes with either
  m_pagemap.close();
  m_apply_shared.unlock();
  m_lanes = &m_local_lanes;
  m_pending = &m_no_pending;
  m_table.close();
  m_writer_lock.unlock();
  m_open_lock.unlock();
  m_fd.close();
  if (m_slot) release_slot(*m_slot);
  m_slot = nullptr;
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_ENGINE_OPEN_HPP
