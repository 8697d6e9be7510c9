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
#ifndef TMF_DETAIL_TRACKER_HPP
#define TMF_DETAIL_TRACKER_HPP

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "config.hpp"
#include "os.hpp"
#include "registry.hpp"

namespace tmf::detail {

inline constexpr std::size_t chunk_size = std::size_t{2} << 20;
inline constexpr std::size_t chunk_pages = chunk_size / page_size;
/// Pages unprotected one by one in a transaction before whole chunks are used instead.
inline constexpr std::size_t isolated_page_budget = 12000;
/// A fault on the page after a written one unprotects this many aligned pages at once:
/// sequential writes fault once per block instead of once per page.
inline constexpr std::size_t block_pages = 16;

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
    m_chunks = (max_pages + chunk_pages - 1) / chunk_pages;
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
  }

  /// Handler side: makes page `page` of the mapping at `base` (`mapped` bytes) writable
  /// and records it. Returns false if the kernel refused even a whole chunk.
  bool on_fault(unsigned char* base, std::size_t mapped, std::size_t page) noexcept {
    if (page >= m_max_pages) return false;
    std::size_t chunk = page / chunk_pages;
    if (!test(m_chunk_bitmap, chunk) && m_count + m_block_count < isolated_page_budget) {
      const std::size_t block = page / block_pages;
      const bool sequential = test(m_block_bitmap, block) ||
                              (page > 0 && (test(m_bitmap, page - 1) || test(m_block_bitmap, (page - 1) / block_pages)));
      if (sequential) return widen_block(base, mapped, block) || widen(base, mapped, chunk);
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
    std::size_t mapped_pages = mapped / page_size;
    std::uint64_t entries[chunk_pages];
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
    for (std::size_t i = 0; i < m_chunk_count; ++i) scan(static_cast<std::size_t>(m_chunk_list[i]) * chunk_pages, chunk_pages);
    for (std::size_t i = 0; i < m_block_count; ++i) {
      const std::size_t first = static_cast<std::size_t>(m_block_list[i]) * block_pages;
      if (!test(m_chunk_bitmap, first / chunk_pages)) scan(first, block_pages);  // else the chunk's scan did it
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
  std::error_code reset(unsigned char* base, std::size_t mapped, bool discard,
                        header_page header = header_page::release) noexcept {
    std::error_code first_error;
    auto note = [&](std::error_code ec) {
      if (ec && !first_error) first_error = ec;
    };
    // Discard exactly the recorded runs; re-protect them in spans that also cover small
    // gaps between runs (already read-only), one mprotect for many scattered pages.
    constexpr std::size_t max_gap = 16;
    std::size_t span_begin = 0, span_end = 0;  // pages; empty when equal
    auto flush_span = [&] {
      if (span_end > span_begin)
        note(os::protect(base + span_begin * page_size, (span_end - span_begin) * page_size, false));
      span_begin = span_end = 0;
    };
    auto run = [&](std::size_t page, std::size_t n) {
      if (page * page_size >= mapped) return;
      n = std::min(n, mapped / page_size - page);
      if (discard) note(os::discard(base + page * page_size, n * page_size));
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
    auto wide = [&](std::uint64_t page) {
      return test(m_chunk_bitmap, static_cast<std::size_t>(page) / chunk_pages) ||
             test(m_block_bitmap, static_cast<std::size_t>(page) / block_pages);
    };
    const bool keep_header = header != header_page::release && m_count > 0 && m_list[0] == 0 && !wide(0);
    std::size_t i = 0;
    if (keep_header) {
      if (header == header_page::keep_discard) note(os::discard(base, page_size));
      i = 1;
    }
    while (i < m_count) {
      if (wide(m_list[i])) {
        clear(m_bitmap, static_cast<std::size_t>(m_list[i++]));
        continue;
      }
      std::size_t j = i + 1;
      while (j < m_count && m_list[j] == m_list[j - 1] + 1 && !wide(m_list[j])) ++j;
      run(static_cast<std::size_t>(m_list[i]), j - i);
      for (std::size_t k = i; k < j; ++k) clear(m_bitmap, static_cast<std::size_t>(m_list[k]));
      i = j;
    }
    flush_span();
    std::sort(m_block_list, m_block_list + m_block_count);
    for (std::size_t b = 0; b < m_block_count; ++b) {
      const std::size_t first = static_cast<std::size_t>(m_block_list[b]) * block_pages;
      if (!test(m_chunk_bitmap, first / chunk_pages)) run(first, block_pages);  // else the chunk's run does it
      clear(m_block_bitmap, static_cast<std::size_t>(m_block_list[b]));
    }
    flush_span();
    for (std::size_t c = 0; c < m_chunk_count; ++c) {
      run(static_cast<std::size_t>(m_chunk_list[c]) * chunk_pages, chunk_pages);
      flush_span();
      clear(m_chunk_bitmap, static_cast<std::size_t>(m_chunk_list[c]));
    }
    m_count = keep_header ? 1 : 0;
    m_chunk_count = 0;
    m_block_count = 0;
    return first_error;
  }

  /// True if anything other than a kept page 0 is recorded.
  bool beyond_header() const noexcept {
    return m_chunk_count != 0 || m_block_count != 0 || m_count > 1 || (m_count == 1 && m_list[0] != 0);
  }

  const std::uint64_t* pages() const noexcept { return m_list; }
  std::size_t count() const noexcept { return m_count; }
  std::size_t chunk_count() const noexcept { return m_chunk_count; }
  std::size_t block_count() const noexcept { return m_block_count; }
  bool contains(std::size_t page) const noexcept {
    return page < m_max_pages && (test(m_bitmap, page) || test(m_chunk_bitmap, page / chunk_pages) ||
                                  test(m_block_bitmap, page / block_pages));
  }

 private:
  static std::size_t round_up8(std::size_t n) noexcept { return (n + page_size - 1) / page_size * page_size; }
  static bool test(const std::uint64_t* bits, std::size_t i) noexcept { return (bits[i / 64] >> (i % 64)) & 1; }
  static void set(std::uint64_t* bits, std::size_t i) noexcept { bits[i / 64] |= std::uint64_t{1} << (i % 64); }
  static void clear(std::uint64_t* bits, std::size_t i) noexcept { bits[i / 64] &= ~(std::uint64_t{1} << (i % 64)); }

  bool widen_block(unsigned char* base, std::size_t mapped, std::size_t block) noexcept {
    std::size_t begin = block * block_pages * page_size;
    if (begin >= mapped) return false;
    if (os::protect(base + begin, std::min(block_pages * page_size, mapped - begin), true)) return false;
    if (!test(m_block_bitmap, block)) {
      set(m_block_bitmap, block);
      m_block_list[m_block_count++] = block;
    }
    return true;
  }

  bool widen(unsigned char* base, std::size_t mapped, std::size_t chunk) noexcept {
    std::size_t begin = chunk * chunk_size;
    if (begin >= mapped) return false;
    std::size_t bytes = std::min(chunk_size, mapped - begin);
    // Re-protecting an already wide chunk is needed when growth mapped more of it.
    if (os::protect(base + begin, bytes, true)) return false;
    if (!test(m_chunk_bitmap, chunk)) {
      set(m_chunk_bitmap, chunk);
      m_chunk_list[m_chunk_count++] = chunk;
    }
    return true;
  }

  std::size_t m_max_pages = 0, m_chunks = 0, m_blocks = 0;
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
};

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

/// Installs the fault handler once per process.
inline std::error_code install_tracker() noexcept { return os::install_fault_handler(&tracker_impl::on_fault); }

}  // namespace tmf::detail

#endif  // TMF_DETAIL_TRACKER_HPP
