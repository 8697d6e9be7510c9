// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The heap's small-object front end: size classes and the runs that hold their blocks.
///
/// A request of at most `small_threshold` bytes is served from a *run*: `run_bytes` of arena
/// taken from the free trees as one block aligned to `run_bytes`, starting with a
/// `run_header` (class, use count, list links, and a bitmap of the blocks in use) followed by
/// blocks of one size class. The header of the run holding `p` is therefore at
/// `p & ~(run_bytes - 1)`: a free finds it by arithmetic, and neither allocating nor freeing
/// a small block touches a tree node or any page but the run's header page and the block's
/// own. A run gives the lowest free block first, so consecutive allocations of one class are
/// adjacent, and a run whose last block is freed goes back to the trees at once.
///
/// Per class, a `class_state` in the arena's `class_table` (itself a tree block, made with
/// the first small allocation and freed with the last run) lists the runs with a free block
/// and the full ones, and counts runs and blocks. Everything lives in the arena, so runs
/// commit and roll back with the transaction like any other page.
///
/// Classes: 16-byte steps to 256 bytes (plus 24, for 8-aligned objects such as three
/// pointers), then four per doubling to 1 KiB, in runs of `run_bytes` (the small tier).
/// Above 1 KiB and below `run_limit` (64 KiB), four classes per doubling again, in larger
/// runs (the large tier, `large_run_bytes_for`: 128 KiB up to 4 KiB blocks, then doubling
/// with the class to 1 MiB), so that a 1-64 KiB block too is handed out and freed by a bitmap
/// in its run's header page: the allocator writes none of the block's own pages (no
/// tracking fault, no dirty page for it), where a tree block writes a free-block node at the
/// carved tail. A class's blocks are aligned to the largest power of two dividing its size
/// (at most a page); a request aligned beyond that takes the next class that honours it.
/// Each tier ends with a class of page alignment (the small tier's page class exists for
/// alignment only), so the run size of a block follows from its request size alone:
/// `deallocate(p, size)` finds the header by masking with `run_bytes_for(size)`.
#ifndef TMF_DETAIL_RUNS_HPP
#define TMF_DETAIL_RUNS_HPP

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "../options.hpp"  // size_class_stats
#include "config.hpp"

namespace tmf::detail {

/// Requests of at most this many bytes come from the small tier's runs (`run_bytes` each).
inline constexpr std::size_t small_threshold = 1024;
/// Requests of fewer bytes than this come from size-class runs (above `small_threshold`: the
/// large tier's); this many bytes and more from the trees, as whole extents that free
/// coalesces and give-back punches.
inline constexpr std::size_t run_limit = 64 * 1024;

/// Whether a request of `size` bytes is served by a size-class run (else by the trees).
constexpr bool served_by_runs(std::size_t size) noexcept { return size < run_limit; }

/// Every block the heap hands out is aligned to at least this (the 24-byte class's alignment).
inline constexpr std::size_t min_block_align = 8;

namespace runs_impl {

/// Bytes of one run of the small tier (header included); runs are aligned to their size.
inline constexpr std::size_t run_bytes = 4 * page_size;
/// Bytes of one run of the large tier for a class of `size` bytes (> small_threshold): 128 KiB
/// up to 4 KiB blocks (at least 31 blocks a run), then 32 blocks' worth, at most 1 MiB.
/// A power of two, so that every class of one doubling shares it (alignment bumps stay
/// inside a doubling, or go to the 4 KiB class, which shares the 1-4 KiB runs' size).
constexpr std::size_t large_run_bytes_for(std::size_t size) noexcept {
  if (size <= 4096) return std::size_t{128} << 10;
  return std::min(std::bit_ceil(size) * 32, std::size_t{1} << 20);
}
/// The largest run (of either tier).
inline constexpr std::size_t max_run_bytes = std::size_t{1} << 20;
/// Bytes of the run that serves a request of `size` bytes (served_by_runs(size)).
constexpr std::size_t run_bytes_for(std::size_t size) noexcept {
  return size <= small_threshold ? run_bytes : large_run_bytes_for(size);
}
/// Bytes reserved for the header at the start of a run (blocks of classes aligned to at most
/// this start right after it).
inline constexpr std::size_t header_slot = 192;
/// Bitmap words: enough for the 16-byte class, the most blocks per run.
inline constexpr std::size_t bitmap_words = ((run_bytes - header_slot) / 16 + 63) / 64;
inline constexpr std::uint32_t run_magic = 0x6e757274;  // "trun"
inline constexpr std::uint64_t table_magic = 0x73657373616c6374ULL;  // "tclasses"

inline constexpr std::array<std::uint32_t, 50> class_sizes = {
    16,   24,   32,   48,   64,    80,    96,    112,   128,   144,   160,   176,   192,  208,  224, 240,  256,
    320,  384,  448,  512,  640,   768,   896,   1024,  4096,  // the small tier; 4096: page alignment only
    1280, 1536, 1792, 2048, 2560,  3072,  3584,  4096,  5120,  6144,  7168,  8192,  10240, 12288, 14336,
    16384, 20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536};  // the large tier
inline constexpr std::size_t class_count = class_sizes.size();
/// Classes [0, small_class_count) are the small tier's.
inline constexpr std::size_t small_class_count = 26;

/// The fixed geometry of one class.
struct class_info {
  std::uint32_t size;    ///< bytes per block
  std::uint32_t align;   ///< every block's alignment
  std::uint32_t offset;  ///< of the first block from the run start
  std::uint32_t count;   ///< blocks per run
  std::uint32_t run;     ///< bytes per run (its alignment too)
};

constexpr class_info make_info(std::uint32_t size, std::size_t run) {
  std::uint32_t align = size & (~size + 1);  // the lowest set bit
  if (align > page_size) align = page_size;
  const std::uint32_t offset = static_cast<std::uint32_t>((header_slot + align - 1) / align * align);
  return {size, align, offset, static_cast<std::uint32_t>((run - offset) / size), static_cast<std::uint32_t>(run)};
}

inline constexpr auto classes = [] {
  std::array<class_info, class_count> a{};
  for (std::size_t i = 0; i < class_count; ++i)
    a[i] = make_info(class_sizes[i], i < small_class_count ? run_bytes : large_run_bytes_for(class_sizes[i]));
  return a;
}();

static_assert(classes[small_class_count - 1].align == page_size, "the small tier must end with a page-aligned class");
static_assert(classes[small_class_count - 2].size == small_threshold);
static_assert(classes[class_count - 1].align == page_size, "the large tier must end with a page-aligned class");
static_assert(classes[class_count - 1].size == run_limit && classes[small_class_count].size > small_threshold);
static_assert([] {
  for (std::size_t i = 0; i < class_count; ++i) {
    const class_info& c = classes[i];
    if (c.align < min_block_align || c.count > 64 * bitmap_words || c.count == 0 || c.run > max_run_bytes) return false;
    // Every class a request's alignment may bump it to (class_of) has the run size of the
    // request's own class: the run of a block follows from the size alone.
    for (std::size_t align = 1; align <= page_size; align *= 2) {
      std::size_t j = i;
      while (classes[j].align < align) ++j;
      if (classes[j].run != c.run) return false;
    }
  }
  return true;
}());

/// The smallest class of at least `size` bytes, by 8-byte step (sizes up to the threshold).
inline constexpr auto lookup = [] {
  std::array<std::uint8_t, small_threshold / 8 + 1> t{};
  std::size_t c = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    while (classes[c].size < i * 8) ++c;
    t[i] = static_cast<std::uint8_t>(c);
  }
  return t;
}();

/// The smallest large-tier class of at least `size` bytes, by 256-byte step.
inline constexpr auto large_lookup = [] {
  std::array<std::uint8_t, run_limit / 256 + 1> t{};
  std::size_t c = small_class_count;
  for (std::size_t i = 0; i < t.size(); ++i) {
    while (classes[c].size < i * 256) ++c;
    t[i] = static_cast<std::uint8_t>(c);
  }
  return t;
}();

/// The class serving (size, align): served_by_runs(size), align a power of two <= page_size.
constexpr std::size_t class_of(std::size_t size, std::size_t align) noexcept {
  std::size_t c = size <= small_threshold ? lookup[(size + 7) / 8] : large_lookup[(size + 255) / 256];
  while (classes[c].align < align) ++c;  // ends at the tier's page class
  return c;
}

/// At the start of every run. Bit i of m_bits set: block i is in use; the bits past the
/// class's count are set too, so a search never needs the count.
struct run_header {
  std::uint32_t m_magic;    ///< run_magic
  std::uint16_t m_class;    ///< index into classes
  std::uint16_t m_used;     ///< blocks in use; 0 < m_used while the run exists
  run_header* m_self;       ///< its own address: a stray copy of a header is not a run
  run_header* m_prev;       ///< in its class's partial or full list
  run_header* m_next;
  std::uint32_t m_hint;     ///< no free block in the words below it
  std::uint64_t m_bits[bitmap_words];

  const class_info& info() const noexcept { return classes[m_class]; }
  std::size_t bytes() const noexcept { return classes[m_class].run; }
  std::uintptr_t address() const noexcept { return reinterpret_cast<std::uintptr_t>(this); }

  /// A fresh run of class `c` with no block in use.
  static run_header* make(void* at, std::size_t c) noexcept {
    auto* r = ::new (at) run_header;
    r->m_magic = run_magic;
    r->m_class = static_cast<std::uint16_t>(c);
    r->m_used = 0;
    r->m_self = r;
    r->m_prev = r->m_next = nullptr;
    r->m_hint = 0;
    const std::uint32_t n = classes[c].count;
    for (std::size_t w = 0; w < bitmap_words; ++w) {
      const std::size_t lo = w * 64;
      r->m_bits[w] = lo + 64 <= n ? 0 : lo >= n ? ~std::uint64_t{0} : ~std::uint64_t{0} << (n - lo);
    }
    return r;
  }

  /// Takes the lowest free block. Requires m_used < count.
  void* take() noexcept {
    std::size_t w = m_hint;
    while (m_bits[w] == ~std::uint64_t{0}) ++w;
    const int bit = std::countr_one(m_bits[w]);
    m_bits[w] |= std::uint64_t{1} << bit;
    m_hint = static_cast<std::uint32_t>(w);
    ++m_used;
    const class_info& ci = info();
    return reinterpret_cast<void*>(address() + ci.offset + (w * 64 + static_cast<std::size_t>(bit)) * ci.size);
  }

  /// Whether block `i` is in use.
  bool in_use(std::size_t i) const noexcept { return (m_bits[i / 64] >> (i % 64)) & 1u; }

  /// Frees block `i` (in use).
  void give(std::size_t i) noexcept {
    m_bits[i / 64] &= ~(std::uint64_t{1} << (i % 64));
    if (i / 64 < m_hint) m_hint = static_cast<std::uint32_t>(i / 64);
    --m_used;
  }
};

static_assert(sizeof(run_header) <= header_slot, "the run header must fit its slot");

/// One class's runs and counters.
struct class_state {
  run_header* m_partial;  ///< runs with a free block (allocation takes the first)
  run_header* m_full;     ///< runs with none
  std::size_t m_runs;
  std::size_t m_blocks;   ///< blocks in use
};

/// Every class's state, in one tree block of the arena.
struct class_table {
  std::uint64_t m_magic;  ///< table_magic
  std::size_t m_runs;     ///< runs of all classes: the table is freed when it drops to 0
  class_state m_class[class_count];
};

inline void push_front(run_header*& list, run_header* r) noexcept {
  r->m_prev = nullptr;
  r->m_next = list;
  if (list != nullptr) list->m_prev = r;
  list = r;
}

inline void unlink(run_header*& list, run_header* r) noexcept {
  if (r->m_prev != nullptr)
    r->m_prev->m_next = r->m_next;
  else
    list = r->m_next;
  if (r->m_next != nullptr) r->m_next->m_prev = r->m_prev;
  r->m_prev = r->m_next = nullptr;
}

}  // namespace runs_impl

using tmf::size_class_stats;

}  // namespace tmf::detail

#endif  // TMF_DETAIL_RUNS_HPP
