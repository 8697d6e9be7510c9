// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Write tracking through page protection.
///
/// Outside a write transaction a storage's whole mapping is read-only. The first store to a
/// page by the writing thread faults; the SIGSEGV handler (async-signal-safe: no locks, no
/// allocation) finds the storage in a fixed process-wide registry, records the page in a
/// preallocated `dirty_set` and makes it writable. Any other fault in a storage's range
/// (a thread without a writer, a reader's const_cast, a child after fork, an access past the
/// arena) is reported with the address and passed to the previous handler, which by
/// default kills the process with SIGSEGV. Faults elsewhere go to the previous handler
/// untouched, as if tmf were not there.
///
/// Every isolated writable page splits a kernel mapping, and a process may have only
/// vm.max_map_count (65530 by default) of them. Past `isolated_page_budget` pages in one
/// transaction, or when mprotect reports ENOMEM, the handler unprotects the whole aligned
/// `chunk_size` chunk around the fault; at commit, the pages really written in such chunks
/// are found in /proc/self/pagemap (a written MAP_PRIVATE page is anonymous). The same
/// mechanism serves sequential writes: a fault on the page that follows a written one
/// unprotects the aligned `block_pages` block around it.
///
/// Where pagemap is readable (Linux; `use_whole_blocks`), only the first `exact_pages` pages
/// of a transaction are unprotected one by one (a small commit stays exact); after them every
/// first store unprotects its whole 64 KiB block, and a store that extends a run of such
/// blocks takes as many more as the run has, within its chunk. One fault, one mprotect and
/// one mapping split per block or run instead of per page; at commit one pagemap read per
/// run of adjacent blocks finds the pages really written, and each run is dropped whole and
/// re-protected with one mprotect (dropping only the written pages measured 6-8% slower). While
/// the transaction is open, any thread's store into such a block is accepted (and logged): the
/// stray-write guard there covers the written blocks (and those a growing run took ahead), not
/// the written pages. Windows has no pagemap
/// and keeps exact pages (every page of a widened block would be logged).
///
/// Kernel tracking (Linux >= 6.7, probed at open by `open_kernel_tracker`, forced off with
/// TMF_TRACKER=fallback): the mapping is registered with a userfaultfd in asynchronous
/// write-protect mode. Page protection then only guards whole chunks of `tracked_chunk_pages`
/// (64 KiB): the writer's first store to a chunk faults once, the handler write-protects the
/// chunk's pages in the userfaultfd sense (no signal on a later store: the kernel clears the
/// mark itself) and makes the chunk writable; the fourth chunk of one `chunk_size` region
/// takes the region's other chunks too (`region_after`). At commit one PAGEMAP_SCAN per run
/// of touched chunks returns the written pages and marks them again; then the private
/// copies are dropped (the marks stay, as pte markers) and the chunks read-only again, except
/// those the commit wrote when the writer goes on (`reset` with `keep_chunks`, at most
/// `hot_chunk_limit`): they stay writable and are scanned by the next commit. Cost: at most four faults per
/// region and transaction, a scan per run; never proportional to the arena. Any thread's store into
/// a chunk the writer made writable is accepted (and logged) while the transaction runs, as
/// a store into a page the writer wrote is on the fallback path.
///
/// Kept pages (options::kept_pages): after a successful apply a bounded set of the
/// committed pages keeps its private copies (they equal the file then) instead of dropping
/// them; their next write costs a protection fault, not a copy-on-write fault plus a drop.
/// The set is a CLOCK ring (`choose_kept`): a commit's new pages join it, pages written again
/// get a second chance, and past the budget the oldest page not written again is dropped; a
/// commit's cost stays proportional to its own pages, whatever the budget. A kept copy goes
/// stale when the file changes under it in any other way than this process's commits: the
/// engine drops them all then (`drop_kept`). The ring may name pages whose copy is gone
/// already (dropped by a rollback): dropping again is harmless.
#ifndef TMF_DETAIL_TRACKER_HPP
#define TMF_DETAIL_TRACKER_HPP

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "config.hpp"
#include "os.hpp"
#include "registry.hpp"

namespace tmf::detail {

inline constexpr std::size_t chunk_size = std::size_t{2} << 20;
inline constexpr std::size_t chunk_pages = chunk_size / page_size;
/// The chunk of kernel tracking (one protection fault per transaction and chunk written):
/// smaller than the fallback's, so that a small commit makes only a few pages writable and
/// read-only again (a 2 MiB mprotect and UFFDIO_WRITEPROTECT per commit cost ~25% of a
/// one-page commit).
inline constexpr std::size_t tracked_chunk_pages = 16;
static_assert(chunk_pages % tracked_chunk_pages == 0);
/// Kernel tracking: chunks of one `chunk_size` region written in a transaction before the
/// first store to a further one takes all the region's chunks at once (scattered writes then
/// fault at most four times per region, not once per chunk). Not the second: taking a region
/// write-protects and mprotects all its 512 pages, a cost that grows with the pages present
/// there (kept copies), and a commit of a few scattered pages measured 2.6x slower with it.
inline constexpr std::size_t region_after = 3;
/// Kernel tracking: a commit that wrote in at most this many chunks (64 MiB) leaves them
/// writable for the writer's next transaction (`reset` with `keep_chunks`); a bigger one
/// protects them all again, so that the next commit's scan stays small.
inline constexpr std::size_t hot_chunk_limit = 1024;
/// Pages unprotected one by one in a transaction before whole chunks are used instead.
inline constexpr std::size_t isolated_page_budget = 12000;
/// A fault on the page after a written one unprotects this many aligned pages at once:
/// sequential writes fault once per block instead of once per page.
inline constexpr std::size_t block_pages = 16;
/// Fallback with pagemap (`use_whole_blocks`): pages unprotected one by one in a transaction
/// before any further first store unprotects its whole block. A small commit (the header and
/// a page or two) stays exact: no pagemap read, no 64 KiB to drop and re-protect.
inline constexpr std::size_t exact_pages = 4;

/// The pages written in the current transaction of one storage. Touched only by the
/// writing thread (its own fault handler included).
class dirty_set {
 public:
  dirty_set() = default;
  dirty_set(const dirty_set&) = delete;
  dirty_set& operator=(const dirty_set&) = delete;
  ~dirty_set() { destroy(); }

  /// Reserves room for a range of `max_pages` pages (virtual memory, committed on use).
  std::error_code init(std::size_t max_pages) noexcept {
    m_max_pages = max_pages;
    // Room for the smaller chunks of kernel tracking, which may be switched on later.
    m_chunks = (max_pages + tracked_chunk_pages - 1) / tracked_chunk_pages;
    m_bitmap_bytes = round_up8((max_pages + 63) / 64 * 8);
    m_list_bytes = round_up8(max_pages * sizeof(std::uint64_t));
    m_chunk_bitmap_bytes = round_up8((m_chunks + 63) / 64 * 8);
    m_chunk_list_bytes = round_up8(m_chunks * sizeof(std::uint64_t));
    m_blocks = (max_pages + block_pages - 1) / block_pages;
    m_block_bitmap_bytes = round_up8((m_blocks + 63) / 64 * 8);
    m_block_list_bytes = round_up8(m_blocks * sizeof(std::uint64_t));
    m_total_bytes = m_bitmap_bytes + m_list_bytes + m_chunk_bitmap_bytes + m_chunk_list_bytes + m_block_bitmap_bytes +
                    m_block_list_bytes;
    void* p = nullptr;
    if (auto ec = os::map_anonymous(m_total_bytes, p)) return ec;
    auto* b = static_cast<unsigned char*>(p);
    m_bitmap = reinterpret_cast<std::uint64_t*>(b);
    m_list = reinterpret_cast<std::uint64_t*>(b + m_bitmap_bytes);
    m_chunk_bitmap = reinterpret_cast<std::uint64_t*>(b + m_bitmap_bytes + m_list_bytes);
    m_chunk_list = reinterpret_cast<std::uint64_t*>(b + m_bitmap_bytes + m_list_bytes + m_chunk_bitmap_bytes);
    b += m_bitmap_bytes + m_list_bytes + m_chunk_bitmap_bytes + m_chunk_list_bytes;
    m_block_bitmap = reinterpret_cast<std::uint64_t*>(b);
    m_block_list = reinterpret_cast<std::uint64_t*>(b + m_block_bitmap_bytes);
    return {};
  }

  void destroy() noexcept {
    if (m_bitmap) os::release(m_bitmap, m_total_bytes);
    m_bitmap = nullptr;
    if (m_kept_bitmap) os::release(m_kept_bitmap, m_kept_total_bytes);
    m_kept_bitmap = nullptr;
    m_kept_count = 0;
  }

  /// Room for up to `budget` kept pages (after `init`); 0: none are kept.
  std::error_code init_kept(std::size_t budget) noexcept {
    m_kept_budget = std::min(budget, m_max_pages);
    if (m_kept_budget == 0) return {};
    const std::size_t bitmap = round_up8((m_max_pages + 63) / 64 * 8);
    const std::size_t ring = round_up8(m_kept_budget * sizeof(std::uint64_t));
    m_kept_total_bytes = 2 * bitmap + ring;
    void* p = nullptr;
    if (auto ec = os::map_anonymous(m_kept_total_bytes, p)) {
      m_kept_budget = 0;
      return ec;
    }
    auto* b = static_cast<unsigned char*>(p);
    m_kept_bitmap = reinterpret_cast<std::uint64_t*>(b);
    m_kept_ref = reinterpret_cast<std::uint64_t*>(b + bitmap);
    m_kept_ring = reinterpret_cast<std::uint64_t*>(b + 2 * bitmap);
    m_kept_head = m_kept_count = 0;
    return {};
  }

  /// After a successful apply, before `reset`: chooses the pages that keep their private
  /// copies and drops those that fall out of the budget. The kept pages form a CLOCK ring:
  /// this commit's pages that were not kept join at its tail; those that were kept already
  /// get a second chance (their reference bit), so that when the ring is full the oldest
  /// page not written again since it joined is dropped. Page 0 and whole chunks of the
  /// fallback are never kept. The next `reset` leaves the chosen copies in place. Cost:
  /// proportional to this commit's pages and the pages dropped, not to the kept set.
  std::error_code choose_kept(unsigned char* base, std::size_t mapped) noexcept {
    if (m_kept_budget == 0) return {};
    constexpr std::size_t batch = 256;
    os::span pieces[batch];
    std::size_t pending = 0;
    std::error_code first_error;
    auto flush = [&] {
      if (pending)
        if (auto ec = os::discard_many(pieces, pending); ec && !first_error) first_error = ec;
      pending = 0;
    };
    auto tail = [&]() -> std::uint64_t& { return m_kept_ring[ring_index(m_kept_head + m_kept_count)]; };
    // \pre the ring is full. Each pass clears a reference bit, so this ends within one turn.
    auto drop_oldest = [&] {
      for (;;) {
        const auto page = static_cast<std::size_t>(m_kept_ring[m_kept_head]);
        m_kept_head = ring_index(m_kept_head + 1);
        --m_kept_count;
        if (test(m_kept_ref, page)) {  // written again since it joined: once more round
          clear(m_kept_ref, page);
          tail() = page;
          ++m_kept_count;
          continue;
        }
        clear(m_kept_bitmap, page);
        // A page of this commit that falls out is dropped by `reset` with the others.
        if (!test(m_bitmap, page) && page * page_size < mapped) {
          pieces[pending++] = {base + page * page_size, page_size};
          if (pending == batch) flush();
        }
        return;
      }
    };
    for (std::size_t i = 0; i < m_count; ++i) {
      const auto page = static_cast<std::size_t>(m_list[i]);
      if (page == 0 || wide(page)) continue;
      if (test(m_kept_bitmap, page)) {
        set(m_kept_ref, page);
        continue;
      }
      if (m_kept_count == m_kept_budget) drop_oldest();
      tail() = page;
      ++m_kept_count;
      set(m_kept_bitmap, page);
    }
    flush();
    m_keep_on_reset = true;
    return first_error;
  }

  /// Drops the private copies of the kept pages for which `which(page)` is true (all by
  /// default). \pre none of them is recorded in the current transaction.
  template <class Pred>
  std::error_code drop_kept(unsigned char* base, std::size_t mapped, Pred which) noexcept {
    if (m_kept_count == 0) return {};
    // Linearise the ring (oldest first) so that the survivors keep their order, then drop
    // the others sorted, a run of adjacent pages in one piece.
    if (m_kept_head != 0) {
      std::rotate(m_kept_ring, m_kept_ring + m_kept_head, m_kept_ring + m_kept_budget);
      m_kept_head = 0;
    }
    std::uint64_t* const dropped = std::stable_partition(
        m_kept_ring, m_kept_ring + m_kept_count, [&](std::uint64_t page) { return !which(static_cast<std::size_t>(page)); });
    std::uint64_t* const end = m_kept_ring + m_kept_count;
    std::sort(dropped, end);
    constexpr std::size_t batch = 256;
    os::span pieces[batch];
    std::size_t pending = 0;
    std::error_code first_error;
    auto flush = [&] {
      if (pending)
        if (auto ec = os::discard_many(pieces, pending); ec && !first_error) first_error = ec;
      pending = 0;
    };
    for (std::uint64_t* i = dropped; i != end;) {
      const auto page = static_cast<std::size_t>(*i);
      std::uint64_t* j = i + 1;  // a run of adjacent pages: one piece
      while (j != end && *j == *(j - 1) + 1) ++j;
      for (std::uint64_t* k = i; k != j; ++k) {
        clear(m_kept_bitmap, static_cast<std::size_t>(*k));
        clear(m_kept_ref, static_cast<std::size_t>(*k));
      }
      if (page * page_size < mapped) {
        pieces[pending++] = {base + page * page_size, std::min(static_cast<std::size_t>(j - i) * page_size, mapped - page * page_size)};
        if (pending == batch) flush();
      }
      i = j;
    }
    flush();
    m_kept_count = static_cast<std::size_t>(dropped - m_kept_ring);
    return first_error;
  }
  std::error_code drop_kept(unsigned char* base, std::size_t mapped) noexcept {
    return drop_kept(base, mapped, [](std::size_t) { return true; });
  }
  /// Pages kept (an upper bound on the private copies held between transactions).
  std::size_t kept_count() const noexcept { return m_kept_count; }

  /// Handler side: makes page `page` of the mapping at `base` (`mapped` bytes) writable
  /// and records it. Returns false if the kernel refused even a whole chunk.
  bool on_fault(unsigned char* base, std::size_t mapped, std::size_t page) noexcept {
    if (page >= m_max_pages) return false;
    std::size_t chunk = page / m_chunk_pages;
    if (m_uffd) return widen_tracked(base, mapped, chunk);
    if (!test(m_chunk_bitmap, chunk) && m_count + m_block_count < isolated_page_budget) {
      const std::size_t block = page / block_pages;
      const bool sequential = test(m_block_bitmap, block) ||
                              (page > 0 && (test(m_bitmap, page - 1) || test(m_block_bitmap, (page - 1) / block_pages)));
      // With pagemap, past the first few pages every first store takes its whole block: one
      // fault, one mprotect and one mapping split per 64 KiB instead of per page; `collect`
      // finds the pages really written.
      const bool whole = m_whole_blocks && m_count >= exact_pages;
      if (whole && !test(m_block_bitmap, block)) {
        // A run of wide blocks growing forward doubles: as many more blocks as the run has,
        // within the chunk (log2 faults and mprotects for a long run instead of one per block).
        const std::size_t chunk_end = (chunk + 1) * (m_chunk_pages / block_pages);
        std::size_t behind = 0;
        while (behind < block && behind < m_chunk_pages / block_pages && test(m_block_bitmap, block - behind - 1)) ++behind;
        std::size_t n = std::max<std::size_t>(1, std::min(behind, chunk_end - block));
        while (n > 1 && (block + n - 1) * block_pages * page_size >= mapped) --n;
        return widen_blocks(base, mapped, block, n) || widen(base, mapped, chunk);
      }
      if (sequential || whole) return widen_block(base, mapped, block) || widen(base, mapped, chunk);
      if (os::protect(base + page * page_size, page_size, true)) return widen(base, mapped, chunk);
      if (!test(m_bitmap, page)) {
        set(m_bitmap, page);
        m_list[m_count++] = page;
      }
      return true;
    }
    return widen(base, mapped, chunk);
  }

  /// Commit side: adds the pages written inside whole-chunk regions (read from pagemap,
  /// or every page of the chunk if pagemap cannot be read) and sorts the list.
  std::error_code collect(unsigned char* base, std::size_t mapped, const os::file& pagemap) noexcept {
    if (m_uffd) {
      scan_chunks(base, mapped);
      std::sort(m_list, m_list + m_count);
      m_collected = true;
      return {};
    }
    std::size_t mapped_pages = mapped / page_size;
    std::uint64_t entries[chunk_pages];  // the fallback's m_chunk_pages
    auto scan = [&](std::size_t first, std::size_t span) {
      std::size_t n = std::min(span, mapped_pages - std::min(first, mapped_pages));
      bool known = pagemap.is_open() && !os::read_pagemap(pagemap, base + first * page_size, entries, n);
      for (std::size_t k = 0; k < n; ++k) {
        if (known && !os::pagemap_is_private(entries[k])) continue;
        if (!test(m_bitmap, first + k)) {
          set(m_bitmap, first + k);
          m_list[m_count++] = first + k;
        }
      }
    };
    for (std::size_t i = 0; i < m_chunk_count; ++i) scan(static_cast<std::size_t>(m_chunk_list[i]) * m_chunk_pages, m_chunk_pages);
    // Adjacent blocks are read in one pagemap read (up to a chunk's worth of entries).
    std::sort(m_block_list, m_block_list + m_block_count);
    for (std::size_t i = 0; i < m_block_count;) {
      const std::size_t block = static_cast<std::size_t>(m_block_list[i]);
      if (test(m_chunk_bitmap, block * block_pages / m_chunk_pages)) {  // the chunk's scan did it
        ++i;
        continue;
      }
      std::size_t j = i + 1;
      while (j < m_block_count && m_block_list[j] == m_block_list[j - 1] + 1 && (j - i) * block_pages < chunk_pages &&
             !test(m_chunk_bitmap, static_cast<std::size_t>(m_block_list[j]) * block_pages / m_chunk_pages))
        ++j;
      scan(block * block_pages, (j - i) * block_pages);
      i = j;
    }
    std::sort(m_list, m_list + m_count);
    return {};
  }

  /// What `reset` does with page 0 (a storage's header, written by every commit).
  enum class header_page {
    release,       ///< like any other page
    keep,          ///< stays writable and recorded, private copy kept (after a commit: it equals the file)
    keep_discard,  ///< stays writable and recorded, private copy dropped (after a rollback)
  };

  /// Drops the private copies of everything recorded (`discard`) and makes it read-only
  /// again; then forgets it all, except page 0 as `header` says. Cost: proportional to the
  /// recorded pages and chunks.
  /// With kernel tracking, `keep_chunks` (after a successful commit, the writer going on)
  /// leaves the chunks this transaction wrote writable and recorded (`hot_chunk_limit`): the
  /// writer's next transaction takes them with no fault and no mprotect, and its commit
  /// scans them again. The fallback ignores it.
  std::error_code reset(unsigned char* base, std::size_t mapped, bool discard,
                        header_page header = header_page::release, bool keep_chunks = false) noexcept {
    if (m_uffd) return reset_tracked(base, mapped, discard, header, keep_chunks);
    std::error_code first_error;
    auto note = [&](std::error_code ec) {
      if (ec && !first_error) first_error = ec;
    };
    // Discard exactly the recorded runs; re-protect them in spans that also cover small
    // gaps between runs (already read-only), one mprotect for many scattered pages.
    constexpr std::size_t max_gap = 16;
    constexpr std::size_t batch = 256;  // private copies dropped in one system call
    os::span pieces[batch];
    std::size_t pending = 0;
    auto flush_discards = [&] {
      if (pending) note(os::discard_many(pieces, pending));
      pending = 0;
    };
    std::size_t span_begin = 0, span_end = 0;  // pages; empty when equal
    auto flush_span = [&] {
      if (span_end > span_begin)
        note(os::protect(base + span_begin * page_size, (span_end - span_begin) * page_size, false));
      span_begin = span_end = 0;
    };
    const bool keep = take_keep_on_reset();
    auto run = [&](std::size_t page, std::size_t n) {
      if (page * page_size >= mapped) return;
      n = std::min(n, mapped / page_size - page);
      if (discard) {
        // Kept pages (choose_kept) are never inside whole chunks or blocks: skip them here.
        for (std::size_t p = page, e = page + n; p < e;) {
          if (keep && test(m_kept_bitmap, p)) {
            ++p;
            continue;
          }
          std::size_t q = p + 1;
          while (q < e && !(keep && test(m_kept_bitmap, q))) ++q;
          pieces[pending++] = {base + p * page_size, (q - p) * page_size};
          if (pending == batch) flush_discards();
          p = q;
        }
      }
      if (span_end > span_begin && page <= span_end + max_gap) {
        span_end = std::max(span_end, page + n);
      } else {
        flush_span();
        span_begin = page;
        span_end = page + n;
      }
    };
    std::sort(m_list, m_list + m_count);
    // Pages inside a whole chunk are covered by the chunk's run below: re-protecting them
    // one by one would split the chunk into thousands of mappings.
    const bool keep_header = header != header_page::release && m_count > 0 && m_list[0] == 0 && !wide(0);
    std::size_t i = 0;
    if (keep_header) {
      if (header == header_page::keep_discard) note(os::discard(base, page_size));
      i = 1;
    }
    while (i < m_count) {
      if (wide(static_cast<std::size_t>(m_list[i]))) {
        clear(m_bitmap, static_cast<std::size_t>(m_list[i++]));
        continue;
      }
      std::size_t j = i + 1;
      while (j < m_count && m_list[j] == m_list[j - 1] + 1 && !wide(static_cast<std::size_t>(m_list[j]))) ++j;
      run(static_cast<std::size_t>(m_list[i]), j - i);
      for (std::size_t k = i; k < j; ++k) clear(m_bitmap, static_cast<std::size_t>(m_list[k]));
      i = j;
    }
    flush_span();
    // Blocks drop whole (a rollback must drop every private copy; dropping absent pages is
    // cheap), adjacent ones as one run: one piece and one re-protected span.
    std::sort(m_block_list, m_block_list + m_block_count);
    for (std::size_t b = 0; b < m_block_count;) {
      const auto block = static_cast<std::size_t>(m_block_list[b]);
      std::size_t e = b + 1;
      if (!test(m_chunk_bitmap, block * block_pages / m_chunk_pages)) {  // else the chunk's run does it
        while (e < m_block_count && m_block_list[e] == m_block_list[e - 1] + 1 &&
               !test(m_chunk_bitmap, static_cast<std::size_t>(m_block_list[e]) * block_pages / m_chunk_pages))
          ++e;
        run(block * block_pages, (e - b) * block_pages);
      }
      for (std::size_t k = b; k < e; ++k) clear(m_block_bitmap, static_cast<std::size_t>(m_block_list[k]));
      b = e;
    }
    flush_span();
    for (std::size_t c = 0; c < m_chunk_count; ++c) {
      run(static_cast<std::size_t>(m_chunk_list[c]) * m_chunk_pages, m_chunk_pages);
      flush_span();
      clear(m_chunk_bitmap, static_cast<std::size_t>(m_chunk_list[c]));
    }
    flush_discards();
    m_count = keep_header ? 1 : 0;
    m_chunk_count = 0;
    m_block_count = 0;
    return first_error;
  }

  /// Switches to kernel tracking: `uffd` (registered over the whole mapping) write-protects
  /// and `pagemap` scans. Both outlive this set. \pre nothing is recorded.
  void use_kernel_tracking(const os::file* uffd, const os::file* pagemap) noexcept {
    m_uffd = uffd;
    m_scan = pagemap;
    m_chunk_pages = tracked_chunk_pages;
    m_chunk_bytes = tracked_chunk_pages * page_size;
  }
  bool kernel_tracking() const noexcept { return m_uffd != nullptr; }
  /// Fallback: whether `collect` can read the written pages from pagemap; then, past
  /// `exact_pages`, a first store unprotects its whole block (`on_fault`). Never on Windows
  /// (no pagemap: every page of a block would be logged). \pre nothing is recorded.
  void use_whole_blocks(bool on) noexcept { m_whole_blocks = on; }

  /// True if anything other than a kept page 0 is recorded. Chunks carried over from the
  /// last commit (`reset` with `keep_chunks`) take stores without a fault: they are scanned
  /// (and what they hold recorded) to tell.
  bool beyond_header(unsigned char* base, std::size_t mapped) noexcept {
    if (m_chunk_count != m_hot_count || m_block_count != 0 || pages_beyond_header()) return true;
    if (m_hot_count == 0) return false;
    scan_chunks(base, mapped);
    return pages_beyond_header();
  }
  /// Kernel tracking: chunks carried over writable from the last commit.
  std::size_t hot_chunk_count() const noexcept { return m_hot_count; }

  const std::uint64_t* pages() const noexcept { return m_list; }
  std::size_t count() const noexcept { return m_count; }
  std::size_t chunk_count() const noexcept { return m_chunk_count; }
  std::size_t block_count() const noexcept { return m_block_count; }
  bool contains(std::size_t page) const noexcept {
    return page < m_max_pages && (test(m_bitmap, page) || test(m_chunk_bitmap, page / m_chunk_pages) ||
                                  test(m_block_bitmap, page / block_pages));
  }

 private:
  /// A page other than page 0 is recorded.
  bool pages_beyond_header() const noexcept { return m_count > 1 || (m_count == 1 && m_list[0] != 0); }
  static std::size_t round_up8(std::size_t n) noexcept { return (n + page_size - 1) / page_size * page_size; }
  static bool test(const std::uint64_t* bits, std::size_t i) noexcept { return (bits[i / 64] >> (i % 64)) & 1; }
  static void set(std::uint64_t* bits, std::size_t i) noexcept { bits[i / 64] |= std::uint64_t{1} << (i % 64); }
  static void clear(std::uint64_t* bits, std::size_t i) noexcept { bits[i / 64] &= ~(std::uint64_t{1} << (i % 64)); }

  /// Fallback: `page` lies in a chunk or block made writable whole (its runs drop whole).
  bool wide(std::size_t page) const noexcept {
    return !m_uffd && (test(m_chunk_bitmap, page / m_chunk_pages) || test(m_block_bitmap, page / block_pages));
  }
  std::size_t ring_index(std::size_t i) const noexcept { return i < m_kept_budget ? i : i - m_kept_budget; }
  /// Whether this `reset` follows `choose_kept` (then it leaves the kept copies); once.
  bool take_keep_on_reset() noexcept {
    const bool k = m_keep_on_reset && m_kept_count != 0;
    m_keep_on_reset = false;
    return k;
  }

  void record(std::size_t page) noexcept {
    if (!test(m_bitmap, page)) {
      set(m_bitmap, page);
      m_list[m_count++] = page;
    }
  }

  /// Kernel tracking, handler side: the writer's first store to `chunk` in this transaction.
  bool widen_tracked(unsigned char* base, std::size_t mapped, std::size_t chunk) noexcept {
    const std::size_t begin = chunk * m_chunk_bytes;
    if (begin >= mapped) return false;
    const std::size_t bytes = std::min(m_chunk_bytes, mapped - begin);
    if (test(m_chunk_bitmap, chunk)) return !os::protect(base + begin, bytes, true);  // growth mapped more of it
    // The chunk after `region_after` written in one `chunk_size` region takes the region's
    // other chunks too: scattered writes fault a few times per region, and a small commit
    // touches only its 64 KiB chunks.
    const std::size_t per_region = chunk_pages / m_chunk_pages;
    const std::size_t first = chunk / per_region * per_region;
    std::size_t in_region = 0;
    for (std::size_t c = first; c < first + per_region; ++c) in_region += test(m_chunk_bitmap, c);
    if (in_region < region_after) return track_chunks(base, mapped, chunk, chunk + 1);
    for (std::size_t c = first; c < first + per_region && c * m_chunk_bytes < mapped;) {
      if (test(m_chunk_bitmap, c)) {
        ++c;
        continue;
      }
      std::size_t d = c + 1;
      while (d < first + per_region && d * m_chunk_bytes < mapped && !test(m_chunk_bitmap, d)) ++d;
      // Could not take them all: the faulting chunk alone will do.
      if (!track_chunks(base, mapped, c, d)) return test(m_chunk_bitmap, chunk) || track_chunks(base, mapped, chunk, chunk + 1);
      c = d;
    }
    return true;
  }

  /// Kernel tracking: write-protects chunks [c, d) in the userfaultfd sense, then makes them
  /// writable and records them. \pre none of them is recorded.
  bool track_chunks(unsigned char* base, std::size_t mapped, std::size_t c, std::size_t d) noexcept {
    const std::size_t begin = c * m_chunk_bytes;
    const std::size_t bytes = std::min((d - c) * m_chunk_bytes, mapped - begin);
    // Marks first, then writable: no store can slip in between unseen. Pages read (mapped
    // from the page cache) since the chunk's last scan carry no mark and would look written.
    if (os::write_protect(*m_uffd, base + begin, bytes) || os::protect(base + begin, bytes, true)) return false;
    for (std::size_t k = c; k < d; ++k) {
      set(m_chunk_bitmap, k);
      m_chunk_list[m_chunk_count++] = k;
    }
    return true;
  }

  /// Kernel tracking: sorts the recorded chunks and scans each run of adjacent ones.
  void scan_chunks(unsigned char* base, std::size_t mapped) noexcept {
    std::sort(m_chunk_list, m_chunk_list + m_chunk_count);
    for (std::size_t c = 0; c < m_chunk_count;) {
      std::size_t d = c + 1;
      while (d < m_chunk_count && m_chunk_list[d] == m_chunk_list[d - 1] + 1) ++d;
      scan_chunk(base, mapped, static_cast<std::size_t>(m_chunk_list[c]), d - c);
      c = d;
    }
  }

  /// Kernel tracking: records the pages of the `chunks` chunks from `chunk` written since
  /// their last scan, and marks them again. If the scan fails, every page of them counts as
  /// written (logging a page that did not change is harmless: it equals the file).
  void scan_chunk(unsigned char* base, std::size_t mapped, std::size_t chunk, std::size_t chunks) noexcept {
    const std::size_t first = chunk * m_chunk_pages;
    if (first * page_size >= mapped) return;
    const std::size_t n = std::min(chunks * m_chunk_pages, mapped / page_size - first);
    const auto b = reinterpret_cast<std::uintptr_t>(base);
    std::uintptr_t at = b + first * page_size;
    const std::uintptr_t end = at + n * page_size;
    os::written_run runs[64];
    while (at < end) {
      std::size_t got = 0;
      std::uintptr_t walk_end = end;
      if (os::scan_written(*m_scan, reinterpret_cast<const void*>(at), end - at, runs, 64, got, walk_end)) {
        for (std::uintptr_t p = at; p < end; p += page_size) record((p - b) / page_size);
        return;
      }
      for (std::size_t r = 0; r < got; ++r)
        for (auto p = static_cast<std::uintptr_t>(runs[r].begin); p < runs[r].end; p += page_size)
          record((p - b) / page_size);
      if (walk_end <= at) return;  // no progress: never loop forever
      at = walk_end;
    }
  }

  /// Kernel tracking, `reset`: on a rollback (no `collect`) scans, to learn what to drop;
  /// drops the recorded pages' private copies and makes the chunks read-only, adjacent ones
  /// at once. After `collect` only the header page can have been written since (the sealed
  /// header, recorded already): no second scan. Pages left unmarked are marked again by
  /// their chunk's next first fault (`widen_tracked`).
  std::error_code reset_tracked(unsigned char* base, std::size_t mapped, bool discard, header_page header,
                                bool keep_chunks) noexcept {
    std::error_code first_error;
    auto note = [&](std::error_code ec) {
      if (ec && !first_error) first_error = ec;
    };
    if (!m_collected)
      scan_chunks(base, mapped);
    m_collected = false;
    const bool keep = take_keep_on_reset();
    std::sort(m_list, m_list + m_count);
    const bool keep_header = header != header_page::release && m_count > 0 && m_list[0] == 0;
    // The chunks that keep their protection off move to the front of the chunk list: those
    // in which this transaction wrote a page (page 0, written by every commit, aside).
    std::size_t hot = 0;
    std::sort(m_chunk_list, m_chunk_list + m_chunk_count);
    if (keep_chunks && m_chunk_count <= hot_chunk_limit) {
      std::size_t at = 0;
      for (std::size_t c = 0; c < m_chunk_count; ++c) {
        const std::uint64_t chunk = m_chunk_list[c];
        while (at < m_count && (m_list[at] == 0 || m_list[at] / m_chunk_pages < chunk)) ++at;
        if (at < m_count && m_list[at] / m_chunk_pages == chunk) std::swap(m_chunk_list[hot++], m_chunk_list[c]);
      }
    }
    std::size_t i = 0;
    if (keep_header) {
      if (header == header_page::keep_discard) note(os::discard(base, page_size));
      i = 1;
    }
    // The runs' private copies go in batches: one system call for many scattered runs.
    constexpr std::size_t batch = 256;
    os::span pieces[batch];
    std::size_t pending = 0;
    auto flush = [&] {
      if (pending) note(os::discard_many(pieces, pending));
      pending = 0;
    };
    while (i < m_count) {
      std::size_t j = i + 1;
      while (j < m_count && m_list[j] == m_list[j - 1] + 1) ++j;
      const auto page = static_cast<std::size_t>(m_list[i]);
      if (keep) {  // cut the run at its first kept page: kept copies stay (choose_kept)
        if (test(m_kept_bitmap, page)) {
          clear(m_bitmap, page);
          ++i;
          continue;
        }
        for (std::size_t k = i + 1; k < j; ++k)
          if (test(m_kept_bitmap, static_cast<std::size_t>(m_list[k]))) {
            j = k;
            break;
          }
      }
      if (discard && page * page_size < mapped) {
        pieces[pending++] = {base + page * page_size, std::min((j - i) * page_size, mapped - page * page_size)};
        if (pending == batch) flush();
      }
      for (std::size_t k = i; k < j; ++k) clear(m_bitmap, static_cast<std::size_t>(m_list[k]));
      i = j;
    }
    flush();
    if (hot != 0) std::sort(m_chunk_list + hot, m_chunk_list + m_chunk_count);  // the swaps moved some
    for (std::size_t c = hot; c < m_chunk_count;) {
      std::size_t d = c + 1;
      while (d < m_chunk_count && m_chunk_list[d] == m_chunk_list[d - 1] + 1) ++d;
      const std::size_t begin = static_cast<std::size_t>(m_chunk_list[c]) * m_chunk_bytes;
      if (begin < mapped) note(os::protect(base + begin, std::min((d - c) * m_chunk_bytes, mapped - begin), false));
      for (std::size_t k = c; k < d; ++k) clear(m_chunk_bitmap, static_cast<std::size_t>(m_chunk_list[k]));
      c = d;
    }
    m_count = keep_header ? 1 : 0;
    m_chunk_count = m_hot_count = hot;
    return first_error;
  }

  bool widen_block(unsigned char* base, std::size_t mapped, std::size_t block) noexcept {
    return widen_blocks(base, mapped, block, 1);
  }
  /// Makes blocks [block, block + n) writable with one mprotect and records them.
  bool widen_blocks(unsigned char* base, std::size_t mapped, std::size_t block, std::size_t n) noexcept {
    std::size_t begin = block * block_pages * page_size;
    if (begin >= mapped) return false;
    if (os::protect(base + begin, std::min(n * block_pages * page_size, mapped - begin), true)) return false;
    for (std::size_t b = block; b < block + n; ++b)
      if (!test(m_block_bitmap, b)) {
        set(m_block_bitmap, b);
        m_block_list[m_block_count++] = b;
      }
    return true;
  }

  bool widen(unsigned char* base, std::size_t mapped, std::size_t chunk) noexcept {
    std::size_t begin = chunk * m_chunk_bytes;
    if (begin >= mapped) return false;
    std::size_t bytes = std::min(m_chunk_bytes, mapped - begin);
    // Re-protecting an already wide chunk is needed when growth mapped more of it.
    if (os::protect(base + begin, bytes, true)) return false;
    if (!test(m_chunk_bitmap, chunk)) {
      set(m_chunk_bitmap, chunk);
      m_chunk_list[m_chunk_count++] = chunk;
    }
    return true;
  }

  std::size_t m_max_pages = 0, m_chunks = 0, m_blocks = 0;
  std::size_t m_chunk_pages = chunk_pages;  ///< pages per chunk: tracked_chunk_pages with kernel tracking
  std::size_t m_chunk_bytes = chunk_size;
  std::size_t m_bitmap_bytes = 0, m_list_bytes = 0, m_chunk_bitmap_bytes = 0, m_chunk_list_bytes = 0;
  std::size_t m_block_bitmap_bytes = 0, m_block_list_bytes = 0;
  std::size_t m_total_bytes = 0;
  std::uint64_t* m_bitmap = nullptr;
  std::uint64_t* m_list = nullptr;
  std::uint64_t* m_chunk_bitmap = nullptr;
  std::uint64_t* m_chunk_list = nullptr;
  std::uint64_t* m_block_bitmap = nullptr;
  std::uint64_t* m_block_list = nullptr;
  std::size_t m_count = 0;
  std::size_t m_chunk_count = 0;
  std::size_t m_block_count = 0;
  const os::file* m_uffd = nullptr;  ///< kernel tracking: the userfaultfd; nullptr: the fallback
  const os::file* m_scan = nullptr;  ///< kernel tracking: /proc/self/pagemap
  bool m_collected = false;          ///< kernel tracking: `collect` ran since the last `reset`
  std::size_t m_hot_count = 0;       ///< kernel tracking: chunks of m_chunk_list carried over (`keep_chunks`)
  bool m_whole_blocks = false;       ///< fallback: pagemap is readable (use_whole_blocks)
  // Kept pages (choose_kept): bitmaps over all pages (kept; written again since it joined
  // the ring) and the CLOCK ring of m_kept_budget slots, m_kept_count of them used from
  // m_kept_head on.
  std::size_t m_kept_budget = 0, m_kept_count = 0, m_kept_head = 0, m_kept_total_bytes = 0;
  std::uint64_t* m_kept_bitmap = nullptr;
  std::uint64_t* m_kept_ref = nullptr;
  std::uint64_t* m_kept_ring = nullptr;
  bool m_keep_on_reset = false;      ///< the next `reset` follows `choose_kept`
};

/// Whether the environment forces the mprotect tracker (TMF_TRACKER=fallback).
inline bool kernel_tracker_disabled() noexcept {
  const char* v = std::getenv("TMF_TRACKER");
  return v && std::strcmp(v, "fallback") == 0;
}

/// Sets up kernel tracking of the `mapped` bytes at `base` (the storage's whole mapping,
/// read-only): opens the userfaultfd into `uffd`, registers the mapping and checks that
/// PAGEMAP_SCAN works on it through `pagemap`. On any error `uffd` stays closed (closing it
/// undoes the registration) and the caller keeps the fallback.
inline std::error_code open_kernel_tracker(os::file& uffd, const os::file& pagemap, unsigned char* base,
                                           std::size_t mapped) noexcept {
  if (!pagemap.is_open()) return std::make_error_code(std::errc::not_supported);
  os::file f;
  if (auto ec = os::open_write_tracker(f)) return ec;
  if (auto ec = os::track_writes(f, base, mapped)) return ec;
  os::written_run run[1];
  std::size_t got = 0;
  std::uintptr_t walk_end = 0;
  if (auto ec = os::scan_written(pagemap, base, page_size, run, 1, got, walk_end)) return ec;
  uffd = std::move(f);
  return {};
}

namespace tracker_impl {
inline void report(const char* what, std::uintptr_t addr, const storage_slot& s) noexcept {
  char hex[24], num[24];
  os::write_stderr("tmf: ");
  os::write_stderr(what);
  os::write_stderr(" at address ");
  os::write_stderr(format_hex(addr, hex));
  if (const char* n = s.name.load(std::memory_order_relaxed)) {
    os::write_stderr(" in storage ");
    os::write_stderr(n);
  }
  os::write_stderr(" (pid ");
  os::write_stderr(format_dec(static_cast<std::uint64_t>(os::process_id()), num));
  os::write_stderr(")\n");
}

/// The fault handler: makes the writer's page writable, or reports a stray access to a
/// storage and passes it on; an address outside every storage passes on silently.
inline bool on_fault(void* address) noexcept {
  const auto addr = reinterpret_cast<std::uintptr_t>(address);
  for (std::size_t i = 0; i < max_open_storages; ++i) {
    storage_slot& s = registry()[i];
    const std::uintptr_t begin = s.begin.load(std::memory_order_acquire);
    if (begin == 0 || addr < begin || addr - begin >= s.reserved.load(std::memory_order_relaxed)) continue;
    const std::uintptr_t offset = addr - begin;
    if (s.generation.load(std::memory_order_relaxed) != os::fork_generation_signal_safe()) {
      report("write to a storage opened before fork()", addr, s);
    } else if (offset >= s.mapped.load(std::memory_order_acquire)) {
      report("access beyond the end of the storage's arena", addr, s);
    } else if (s.writer.load(std::memory_order_acquire) != os::current_thread()) {
      report("write to a storage by a thread without a writer (read-only page)", addr, s);
    } else if (s.dirty.load(std::memory_order_relaxed)
                   ->on_fault(reinterpret_cast<unsigned char*>(begin), s.mapped.load(std::memory_order_relaxed),
                              offset / page_size)) {
      return true;  // the store runs again, now on a writable page
    } else {
      report("cannot make a page writable (out of memory mappings: raise vm.max_map_count)", addr, s);
    }
    return false;
  }
  return false;
}
}  // namespace tracker_impl

namespace tracker_impl {
/// In a child after fork(): every storage inherited from the parent becomes read-only
/// (mprotect only: the parent's userfaultfd and pagemap descriptors, inherited too, would act
/// on the parent's memory). Pages and chunks the parent's writer had made writable would
/// otherwise take a stray store in silence; now any store faults and is reported.
inline void protect_inherited() noexcept {
  for (std::size_t i = 0; i < max_open_storages; ++i) {
    storage_slot& s = registry()[i];
    const std::uintptr_t begin = s.begin.load(std::memory_order_acquire);
    const std::uintptr_t mapped = s.mapped.load(std::memory_order_acquire);
    if (begin != 0 && mapped != 0) (void)os::protect(reinterpret_cast<void*>(begin), mapped, false);
  }
}
}  // namespace tracker_impl

/// Installs the fault handler (and the fork child's protection) once per process.
inline std::error_code install_tracker() noexcept {
  os::set_fork_child_hook(&tracker_impl::protect_inherited);
  return os::install_fault_handler(&tracker_impl::on_fault);
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_TRACKER_HPP
