// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The heap: a best-fit free-block manager over one byte range (the arena), with a
/// size-class front end (runs.hpp): requests of fewer than `run_limit` (64 KiB) bytes come
/// from size-class runs, which the heap takes from and gives back to its trees.
///
/// Free blocks carry their own bookkeeping: two compact Boost.Intrusive red-black tree hooks
/// (one tree ordered by (size, address) for best fit, one by address for coalescing) and the
/// block size, all inside the block's first quantum. Allocated blocks carry nothing: the
/// caller passes the size back to `deallocate`. The trees' header nodes and the counters
/// live in a `heap_state`, which sits inside the managed memory; since that memory is always
/// mapped at the same address, plain pointers are used throughout.
///
/// The heap knows nothing about files: its tests run over a plain buffer.
#ifndef TMF_DETAIL_HEAP_HPP
#define TMF_DETAIL_HEAP_HPP

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include <boost/intrusive/set.hpp>

#include "../error.hpp"
#include "config.hpp"
#include "os.hpp"  // fatal
#include "runs.hpp"
#include "sanitizer.hpp"

namespace tmf::detail {

namespace heap_impl {

namespace bi = boost::intrusive;

struct by_size_tag;
struct by_addr_tag;

// Compact hooks: the colour is packed into the parent pointer, and no safe-mode or
// auto-unlink bookkeeping (three pointers per hook, nothing else).
template <class Tag>
using hook = bi::set_base_hook<bi::tag<Tag>, bi::optimize_size<true>, bi::link_mode<bi::normal_link>>;

/// The bookkeeping written at the start of every free block; the block's address is the node's.
struct free_block : hook<by_size_tag>, hook<by_addr_tag> {
  std::size_t m_size;  ///< bytes in the block: a multiple of heap_quantum, at least one quantum
  /// 0: the block has no holes. Else the file may have holes (punched pages, heap_backing)
  /// in the block's pages that lie after its first page (which holds this node) and below
  /// this address: such pages are allocated again before they are handed out.
  std::uintptr_t m_holes_end;

  std::uintptr_t address() const noexcept { return reinterpret_cast<std::uintptr_t>(this); }
  std::uintptr_t end_address() const noexcept { return address() + m_size; }
};

static_assert(sizeof(free_block) <= heap_quantum, "a free block's node must fit in one quantum");
static_assert(alignof(free_block) <= heap_quantum);

/// Orders the size tree by (size, address); looks up by size alone.
struct by_size_compare {
  bool operator()(const free_block& a, const free_block& b) const noexcept {
    return a.m_size < b.m_size || (a.m_size == b.m_size && a.address() < b.address());
  }
  bool operator()(const free_block& a, std::size_t size) const noexcept { return a.m_size < size; }
  bool operator()(std::size_t size, const free_block& b) const noexcept { return size < b.m_size; }
};

/// A lookup key for the address tree (a distinct type: size_t and uintptr_t may be the same).
struct addr_key {
  std::uintptr_t value;
};

/// Orders the address tree by address.
struct by_addr_compare {
  bool operator()(const free_block& a, const free_block& b) const noexcept {
    return a.address() < b.address();
  }
  bool operator()(const free_block& a, addr_key k) const noexcept { return a.address() < k.value; }
  bool operator()(addr_key k, const free_block& b) const noexcept { return k.value < b.address(); }
};

// No constant_time_size: the state stays small and the counters are kept by the heap.
using size_tree = bi::set<free_block, bi::base_hook<hook<by_size_tag>>, bi::compare<by_size_compare>,
                          bi::constant_time_size<false>>;
using addr_tree = bi::set<free_block, bi::base_hook<hook<by_addr_tag>>, bi::compare<by_addr_compare>,
                          bi::constant_time_size<false>>;

/// The file behind a heap, when there is one (engine.hpp): freed extents of at least
/// `punch_min` bytes become holes in the file after their commit is durable, and pages of
/// a block that may have holes are allocated again before they are handed out.
struct heap_backing {
  /// Makes `[begin, end)` (page-aligned) backed by disk again. False if it cannot (disk full):
  /// the allocation then fails with nothing changed.
  bool (*reserve)(void* ctx, std::uintptr_t begin, std::uintptr_t end) noexcept;
  /// The pages `[begin, end)` (page-aligned) lie in a free block that now records holes
  /// below `end`: the owner punches them once the transaction is durable, if still free.
  void (*released)(void* ctx, std::uintptr_t begin, std::uintptr_t end) noexcept;
  void* ctx;
  /// Freed extents smaller than this stay on disk (in bytes; whole pages are punched).
  std::size_t punch_min;
};

/// A free block as it was before a free coalesced it (heap::released).
struct freed_part {
  std::uintptr_t begin, end, holes_end;
};

/// Past this many candidates, an over-aligned request jumps to a block that surely fits.
inline constexpr int aligned_scan_limit = 32;

inline std::uintptr_t align_up(std::uintptr_t v, std::size_t align) noexcept {
  return (v + (align - 1)) & ~static_cast<std::uintptr_t>(align - 1);
}
inline std::uintptr_t align_down(std::uintptr_t v, std::size_t align) noexcept {
  return v & ~static_cast<std::uintptr_t>(align - 1);
}
/// The first page of a free block at `a` that may be a hole: the page after its node's.
inline std::uintptr_t holes_begin(std::uintptr_t a) noexcept { return align_down(a, page_size) + page_size; }

/// A fixed-size message builder for the fatal path (no allocation there).
class message {
 public:
  message& operator<<(const char* s) noexcept {
    while (*s != '\0' && m_len + 1 < sizeof m_buf) m_buf[m_len++] = *s++;
    m_buf[m_len] = '\0';
    return *this;
  }
  message& hex(std::uintptr_t v) noexcept {
    char buf[24];
    return *this << format_hex(v, buf);
  }
  message& dec(std::uint64_t v) noexcept {
    char buf[24];
    return *this << format_dec(v, buf);
  }
  const char* c_str() const noexcept { return m_buf; }

 private:
  char m_buf[320] = {};
  std::size_t m_len = 0;
};

inline std::string hex_string(std::uintptr_t v) {
  char buf[24];
  return format_hex(v, buf);
}

}  // namespace heap_impl

class heap;

/// Persistent heap state. Lives inside the managed memory (in the storage's header page), is
/// constructed once in place by `heap::create` and thereafter reused as raw bytes by later
/// processes (the memory is mapped at the same fixed address every time, so the plain pointers
/// inside stay valid). Its layout depends on Boost.Intrusive's red-black tree header node.
/// Not copyable or movable: the trees point back into it.
struct heap_state {
  heap_state() noexcept = default;
  heap_state(const heap_state&) = delete;
  heap_state& operator=(const heap_state&) = delete;

 private:
  friend class heap;

  heap_impl::size_tree m_by_size;  ///< free blocks by (size, address)
  heap_impl::addr_tree m_by_addr;  ///< free blocks by address
  std::byte* m_begin = nullptr;    ///< arena start (quantum-aligned)
  std::byte* m_end = nullptr;      ///< arena end (quantum-aligned); moves up with grow()
  std::size_t m_free_bytes = 0;
  std::size_t m_free_blocks = 0;
  std::size_t m_allocated_bytes = 0;  ///< bytes of tree blocks handed out (runs and class table included)
  runs_impl::class_table* m_classes = nullptr;  ///< made with the first small allocation
  std::size_t m_run_bytes = 0;    ///< tree bytes held by runs and the class table
  std::size_t m_small_bytes = 0;  ///< bytes of small blocks in use (class sizes)
};

static_assert(sizeof(heap_state) <= 192, "heap_state must fit its slot in the header page");
static_assert(alignof(heap_state) <= 16);

/// A cheap, non-owning handle over a `heap_state`: the operations of the heap.
///
/// Sizes and addresses are multiples of `heap_quantum`. `allocate` is best fit (smallest
/// block, lowest address among equals) and carves from the start of the chosen block;
/// `deallocate` coalesces with both neighbours. Not thread-safe: the caller serialises
/// (the storage's single writer).
class heap {
 public:
  /// Constructs `*s` in place over the arena `[begin, end)`, which becomes one free block
  /// (or none if empty). Both ends quantum-aligned, `end >= begin`.
  static void create(heap_state* s, void* begin, void* end) noexcept {
    TMF_ASSERT(s != nullptr);
    TMF_ASSERT(reinterpret_cast<std::uintptr_t>(begin) % heap_quantum == 0);
    TMF_ASSERT(reinterpret_cast<std::uintptr_t>(end) % heap_quantum == 0);
    TMF_ASSERT(reinterpret_cast<std::uintptr_t>(end) >= reinterpret_cast<std::uintptr_t>(begin));
    ::new (static_cast<void*>(s)) heap_state();
    s->m_begin = static_cast<std::byte*>(begin);
    s->m_end = static_cast<std::byte*>(begin);
    heap(s).grow(end);  // an empty arena grown to `end`: one free block
  }

  /// Binds to an existing state (created by `create`, possibly by another process).
  /// With `backing`, frees may leave holes and allocations fill them (heap_backing).
  explicit heap(heap_state* s, const heap_impl::heap_backing* backing = nullptr) noexcept : m_s(s), m_backing(backing) {
    TMF_ASSERT(s != nullptr);
  }

  /// Returns a block of `block_size(size, align)` bytes aligned to `align`, or nullptr if
  /// no free block fits (the caller grows the arena by `growth_needed` and retries; nothing
  /// changed), or if `align` is not a power of two or exceeds `page_size`. Never throws.
  /// Below `run_limit` bytes: O(1) from a run of the size class, unless a new run is
  /// needed; only the run's header page is written. Larger: O(log n) for `align <=
  /// heap_quantum`; larger alignments scan a bounded number of candidates before taking a
  /// block that surely fits.
  void* allocate(std::size_t size, std::size_t align) noexcept {
    if (!std::has_single_bit(align) || align > page_size) return nullptr;
    if (served_by_runs(size)) return allocate_small(size, align);
    return tree_allocate(size, align);
  }

  /// Frees a block returned by `allocate(size, align)` (any alignment; the same `size`).
  /// Misuse is fatal: the process terminates with a message naming the address, the size and
  /// what is wrong, before anything is modified. Large blocks: a pointer outside the arena or
  /// misaligned, a block running past the arena end, or one overlapping a free block (double
  /// free). Blocks of runs: an address in no run, not at a block boundary of its run, a size
  /// beyond the run's class, or a block not in use (double free).
  void deallocate(void* ptr, std::size_t size) noexcept {
    if (served_by_runs(size))
      deallocate_small(ptr, size);
    else
      tree_deallocate(ptr, size);
  }

  /// The trees alone, bypassing the size classes (the runs take their pages here; tests):
  /// best fit of `tree_block_size(size)` bytes aligned to `align`, any power of two (the
  /// caller checks it). nullptr if no free block fits.
  void* tree_allocate(std::size_t size, std::size_t align) noexcept {
    if (size > arena_bytes()) return nullptr;  // also keeps the arithmetic below from overflowing
    const std::size_t bs = tree_block_size(size);
    auto& by_size = m_s->m_by_size;
    auto it = by_size.lower_bound(bs, heap_impl::by_size_compare{});
    std::uintptr_t at = 0;
    if (align <= heap_quantum) {
      if (it == by_size.end()) return nullptr;
      at = it->address();
    } else {
      it = find_aligned(it, bs, align, at);
      if (it == by_size.end()) return nullptr;
    }
    if (it->m_holes_end != 0 && !refill(*it, at, bs)) return nullptr;
    carve(*it, at, bs);
    TMF_ASSERT(at % align == 0);
    return reinterpret_cast<void*>(at);
  }

  /// Frees a block of `tree_allocate(size, ...)`, coalescing with both neighbours; misuse
  /// is fatal as for `deallocate`.
  void tree_deallocate(void* ptr, std::size_t size) noexcept {
    const auto p = reinterpret_cast<std::uintptr_t>(ptr);
    const auto b = reinterpret_cast<std::uintptr_t>(m_s->m_begin);
    const auto e = reinterpret_cast<std::uintptr_t>(m_s->m_end);
    if (p < b || p >= e) outside_arena(ptr, size, b, e);
    if (p % heap_quantum != 0) misaligned(ptr, size);
    if (size > e - p) past_end(ptr, size, e);
    // e - p is a positive multiple of the quantum and >= size, hence >= bs: no overflow below.
    const std::size_t bs = tree_block_size(size);
    auto& by_addr = m_s->m_by_addr;
    auto& by_size = m_s->m_by_size;
    const auto next_it = by_addr.upper_bound(heap_impl::addr_key{p}, heap_impl::by_addr_compare{});
    heap_impl::free_block* prev = next_it == by_addr.begin() ? nullptr : &*std::prev(next_it);
    heap_impl::free_block* next = next_it == by_addr.end() ? nullptr : &*next_it;
    if (prev != nullptr && prev->end_address() > p) overlap(ptr, size, *prev);
    if (next != nullptr && next->address() - p < bs) overlap(ptr, size, *next);
    TMF_ASSERT(m_s->m_allocated_bytes >= bs);  // implied by the overlap checks
    // A user container may have poisoned part of the block (ASan): it is free now, as with malloc.
    asan_unpoison(ptr, bs);

    const bool merge_prev = prev != nullptr && prev->end_address() == p;
    const bool merge_next = next != nullptr && next->address() == p + bs;
    // Holes the merged block inherits (the freed bytes themselves have none), and its parts
    // as they were, for released().
    std::uintptr_t holes = 0;
    heap_impl::freed_part parts[3];
    int part_count = 0;
    if (merge_prev) {
      holes = prev->m_holes_end;
      parts[part_count++] = {prev->address(), p, prev->m_holes_end};
    }
    parts[part_count++] = {p, p + bs, 0};
    if (merge_next) {
      holes = std::max(holes, next->m_holes_end);
      parts[part_count++] = {next->address(), next->end_address(), next->m_holes_end};
    }
    heap_impl::free_block* merged_block;
    if (merge_prev && merge_next) {
      const std::size_t merged = prev->m_size + bs + next->m_size;
      by_size.erase(by_size.iterator_to(*next));
      by_addr.erase(next_it);
      resize(*prev, *prev, merged);
      --m_s->m_free_blocks;
      merged_block = prev;
    } else if (merge_prev) {
      resize(*prev, *prev, prev->m_size + bs);
      merged_block = prev;
    } else if (merge_next) {
      const std::size_t merged = bs + next->m_size;
      heap_impl::free_block* block = make_block(p, 0);  // [p, p+bs) does not touch next's node
      by_addr.replace_node(next_it, *block);            // same place in address order
      resize(*next, *block, merged);
      merged_block = block;
    } else {
      heap_impl::free_block* block = make_block(p, bs);
      by_addr.insert_before(next_it, *block);  // the position is known: no search
      insert_by_size(*block);
      ++m_s->m_free_blocks;
      merged_block = block;
    }
    merged_block->m_holes_end = holes;
    m_s->m_free_bytes += bs;
    m_s->m_allocated_bytes -= bs;
    if (m_backing != nullptr) released(*merged_block, parts, part_count);
  }

 private:
  void* allocate_small(std::size_t size, std::size_t align) noexcept;
  void deallocate_small(void* ptr, std::size_t size) noexcept;
  runs_impl::run_header* new_run(std::size_t c) noexcept;
  void release_run(runs_impl::run_header* r) noexcept;

 public:
  /// Moves the arena end up to `new_end` (quantum-aligned, >= end()): extends the top free
  /// block if it touches the old end, else adds a new free block.
  void grow(void* new_end) noexcept {
    const auto ne = reinterpret_cast<std::uintptr_t>(new_end);
    const auto e = reinterpret_cast<std::uintptr_t>(m_s->m_end);
    TMF_ASSERT(ne % heap_quantum == 0);
    TMF_ASSERT(ne >= e);
    if (ne == e) return;
    const std::size_t added = ne - e;
    auto& by_addr = m_s->m_by_addr;
    if (!by_addr.empty() && by_addr.rbegin()->end_address() == e) {
      heap_impl::free_block& top = *by_addr.rbegin();
      resize(top, top, top.m_size + added);
    } else {
      heap_impl::free_block* block = make_block(e, added);
      by_addr.push_back(*block);  // highest address: O(1)
      insert_by_size(*block);
      ++m_s->m_free_blocks;
    }
    m_s->m_end = static_cast<std::byte*>(new_end);
    m_s->m_free_bytes += added;
  }

  /// Compaction: if the top free block touches end(), moves end() down to its address
  /// rounded up to `granule` (a power of two, at least the quantum; the page size for a
  /// file), cutting or removing the block. Returns the new end (end() if nothing changed).
  void* trim_top(std::size_t granule) noexcept {
    TMF_ASSERT(std::has_single_bit(granule) && granule >= heap_quantum);
    const auto e = reinterpret_cast<std::uintptr_t>(m_s->m_end);
    auto& by_addr = m_s->m_by_addr;
    if (by_addr.empty() || by_addr.rbegin()->end_address() != e) return m_s->m_end;
    heap_impl::free_block& top = *by_addr.rbegin();
    const std::uintptr_t ne = heap_impl::align_up(top.address(), granule);
    if (ne >= e) return m_s->m_end;
    const std::size_t cut = e - ne;
    if (ne == top.address()) {
      m_s->m_by_size.erase(m_s->m_by_size.iterator_to(top));
      by_addr.erase(by_addr.iterator_to(top));
      --m_s->m_free_blocks;
    } else {
      resize(top, top, top.m_size - cut);
      if (top.m_holes_end > ne) top.m_holes_end = ne;
      if (top.m_holes_end != 0 && top.m_holes_end <= heap_impl::holes_begin(top.address())) top.m_holes_end = 0;
    }
    m_s->m_end = reinterpret_cast<std::byte*>(ne);
    m_s->m_free_bytes -= cut;
    return m_s->m_end;
  }

  /// Marks every free block as possibly holed in all its whole pages past its node's page
  /// (compaction, before it punches them): they are allocated again before reuse.
  void record_holes() noexcept {
    for (auto& block : m_s->m_by_addr) {
      const std::uintptr_t he = heap_impl::align_down(block.end_address(), page_size);
      if (he > heap_impl::holes_begin(block.address()) && block.m_holes_end != he) block.m_holes_end = he;
    }
  }

  /// Bytes in the free block that touches end(), 0 if none does.
  std::size_t top_free_bytes() const noexcept {
    const auto& by_addr = m_s->m_by_addr;
    if (by_addr.empty() || by_addr.rbegin()->end_address() != reinterpret_cast<std::uintptr_t>(m_s->m_end)) return 0;
    return by_addr.rbegin()->m_size;
  }

  /// Calls `f(begin, end)` for each page-aligned piece of `[b, e)` that lies in a free
  /// block's pages which may be holes (after its node's page, below its recorded holes'
  /// end, whole pages only): what may be punched out of the file now. O(log n + pieces).
  template <class F>
  void for_each_hole(std::uintptr_t b, std::uintptr_t e, F&& f) const {
    const auto& by_addr = m_s->m_by_addr;
    auto it = by_addr.upper_bound(heap_impl::addr_key{b}, heap_impl::by_addr_compare{});
    if (it != by_addr.begin()) --it;
    for (; it != by_addr.end() && it->address() < e; ++it) {
      if (it->m_holes_end == 0) continue;
      const std::uintptr_t pb = std::max(b, heap_impl::holes_begin(it->address()));
      const std::uintptr_t pe =
          std::min({e, heap_impl::align_up(it->m_holes_end, page_size), heap_impl::align_down(it->end_address(), page_size)});
      if (pb < pe) f(pb, pe);
    }
  }

  /// Bytes to add at end() (a multiple of the quantum) so that `allocate(size, align)` is sure
  /// to succeed: computed from the top free block if it touches end(), else from end() itself.
  /// 0 if the top block already fits the request; SIZE_MAX if no growth can satisfy it (bad
  /// alignment, or a size beyond the address space).
  std::size_t growth_needed(std::size_t size, std::size_t align) const noexcept {
    constexpr std::size_t impossible = std::numeric_limits<std::size_t>::max();
    if (!std::has_single_bit(align) || align > page_size) return impossible;
    if (size > impossible - heap_quantum) return impossible;
    // A small request: nothing if its class has a run with room, else a class table (if none
    // yet) and a run anywhere in the top block.
    if (served_by_runs(size)) {
      const std::size_t c = runs_impl::class_of(size, align);
      if (m_s->m_classes != nullptr && m_s->m_classes->m_class[c].m_partial != nullptr) return 0;
      return tree_growth_needed(tree_block_size(sizeof(runs_impl::class_table)) + 2 * runs_impl::classes[c].run, 1);
    }
    return tree_growth_needed(size, align);
  }

  /// `growth_needed` for `tree_allocate(size, align)` (align a power of two up to a page).
  std::size_t tree_growth_needed(std::size_t size, std::size_t align) const noexcept {
    constexpr std::size_t impossible = std::numeric_limits<std::size_t>::max();
    if (!std::has_single_bit(align) || align > page_size) return impossible;
    if (size > impossible - heap_quantum) return impossible;
    const std::size_t bs = tree_block_size(size);
    const auto e = reinterpret_cast<std::uintptr_t>(m_s->m_end);
    std::uintptr_t start = e;
    const auto& by_addr = m_s->m_by_addr;
    if (!by_addr.empty() && by_addr.rbegin()->end_address() == e) start = by_addr.rbegin()->address();
    const std::uintptr_t at = heap_impl::align_up(start, align);
    if (at < start || bs > std::numeric_limits<std::uintptr_t>::max() - at) return impossible;
    const std::uintptr_t needed_end = at + bs;
    return needed_end <= e ? 0 : static_cast<std::size_t>(needed_end - e);
  }

  /// Full audit of the trees (links, colours, order, bounds), the runs (headers, bitmaps
  /// against their class, lists, placement outside free blocks) and the counters.
  /// Throws `tmf::error(errc::corrupted, "heap: ...")` naming what is wrong and where.
  /// Safe on corrupted state: every pointer is range-checked before it is followed.
  void check() const;

  /// Arena start.
  void* begin() const noexcept { return m_s->m_begin; }
  /// Arena end (moves up with grow()).
  void* end() const noexcept { return m_s->m_end; }
  /// Bytes in allocated blocks (each counted as block_size of its request).
  std::size_t allocated_bytes() const noexcept {
    return m_s->m_allocated_bytes - m_s->m_run_bytes + m_s->m_small_bytes;
  }
  /// Bytes in free blocks; allocated_bytes() + free_bytes() + spare_bytes() == end() - begin().
  std::size_t free_bytes() const noexcept { return m_s->m_free_bytes; }
  /// Bytes held by runs (and their class table) but not handed out: headers, free slots.
  std::size_t spare_bytes() const noexcept { return m_s->m_run_bytes - m_s->m_small_bytes; }
  /// The counters of size class `c` (< size_class_count()).
  size_class_stats class_stats(std::size_t c) const noexcept {
    const std::size_t bs = runs_impl::classes[c].size;
    if (m_s->m_classes == nullptr) return {bs, 0, 0, 0};
    const runs_impl::class_state& cs = m_s->m_classes->m_class[c];
    return {bs, cs.m_runs, cs.m_blocks, cs.m_blocks * bs};
  }
  static constexpr std::size_t size_class_count() noexcept { return runs_impl::class_count; }
  /// Bytes per block of size class `c` (< size_class_count()).
  static constexpr std::size_t class_block_size(std::size_t c) noexcept { return runs_impl::classes[c].size; }
  /// Number of free blocks.
  std::size_t free_blocks() const noexcept { return m_s->m_free_blocks; }
  /// Size of the largest free block, 0 if none. O(1).
  std::size_t largest_free_block() const noexcept {
    const auto& by_size = m_s->m_by_size;
    return by_size.empty() ? 0 : by_size.rbegin()->m_size;
  }

  /// Calls `f(void* address, std::size_t size)` for each free block, in address order
  /// (diagnostics and tests; `f` must not modify the heap).
  template <class F>
  void for_each_free_block(F&& f) const {
    for (const auto& block : m_s->m_by_addr) f(reinterpret_cast<void*>(block.address()), block.m_size);
  }

  /// The bytes a request of `size` aligned to `align` (a power of two up to a page)
  /// occupies: its size class below `run_limit`, else max(quantum, size rounded up to the
  /// quantum). Requires size <= SIZE_MAX - heap_quantum + 1.
  static constexpr std::size_t block_size(std::size_t size, std::size_t align = 1) noexcept {
    if (served_by_runs(size)) return runs_impl::classes[runs_impl::class_of(size, align)].size;
    return tree_block_size(size);
  }
  /// The bytes a tree block for `size` occupies: max(quantum, size rounded up to the quantum).
  static constexpr std::size_t tree_block_size(std::size_t size) noexcept {
    return size <= heap_quantum ? heap_quantum : (size + (heap_quantum - 1)) & ~(heap_quantum - 1);
  }

 private:
  using block_iterator = heap_impl::size_tree::iterator;

  std::size_t arena_bytes() const noexcept { return static_cast<std::size_t>(m_s->m_end - m_s->m_begin); }

  static heap_impl::free_block* make_block(std::uintptr_t at, std::size_t size) noexcept {
    auto* block = ::new (reinterpret_cast<void*>(at)) heap_impl::free_block;
    block->m_size = size;
    block->m_holes_end = 0;
    return block;
  }

  /// Before [at, at+bs) is carved out of `block`, which may have holes: allocates the pages
  /// it and the node of the tail left after it occupy, below the block's holes. False
  /// (nothing changed) if there is no backing to do it with or it fails.
  bool refill(const heap_impl::free_block& block, std::uintptr_t at, std::size_t bs) noexcept {
    using heap_impl::align_down;
    using heap_impl::align_up;
    const std::uintptr_t tail = at + bs;
    const std::uintptr_t last = tail < block.end_address() ? tail + heap_quantum : tail;  // the tail's node
    const std::uintptr_t b = std::max(align_down(at, page_size), heap_impl::holes_begin(block.address()));
    const std::uintptr_t e = std::min(align_up(last, page_size), block.m_holes_end);
    if (b >= e) return true;
    if (m_backing == nullptr) return false;
    return m_backing->reserve(m_backing->ctx, b, e);
  }

  /// After a free left `block` (made of `parts`: the freed extent and the free neighbours
  /// it coalesced with, as they were): if the block holds at least `punch_min` bytes, the
  /// pages of each part that may still be on disk (all of them, or those from the part's
  /// recorded holes' end on) are reported to be punched, clipped to the block's pages past
  /// its node page, and the block records holes up to its last whole page. Reported ranges
  /// may cover pages already punched (rounded outwards): punching a hole again is harmless.
  void released(heap_impl::free_block& block, const heap_impl::freed_part* parts, int count) noexcept {
    using heap_impl::align_down;
    using heap_impl::align_up;
    if (block.m_size < m_backing->punch_min) return;
    const std::uintptr_t hb = heap_impl::holes_begin(block.address());
    const std::uintptr_t he = align_down(block.end_address(), page_size);
    if (he <= hb) return;
    for (int i = 0; i < count; ++i) {
      const heap_impl::freed_part& part = parts[i];
      const std::uintptr_t b = std::max(hb, align_down(part.holes_end != 0 ? part.holes_end : part.begin, page_size));
      const std::uintptr_t e = std::min(he, align_up(part.end, page_size));
      if (b < e) m_backing->released(m_backing->ctx, b, e);
    }
    block.m_holes_end = std::max(block.m_holes_end, he);
  }

  void insert_by_size(heap_impl::free_block& block) noexcept {
    [[maybe_unused]] const bool inserted = m_s->m_by_size.insert(block).second;
    TMF_ASSERT(inserted);
  }

  /// Gives `to` the size-tree place of `from` (they may be the same block) with the size
  /// `new_size`. When the new key still sorts between the old neighbours, relinks in O(1)
  /// instead of erasing and reinserting: the common case (the top block is the largest).
  void resize(heap_impl::free_block& from, heap_impl::free_block& to, std::size_t new_size) noexcept {
    auto& by_size = m_s->m_by_size;
    const heap_impl::by_size_compare less;
    const auto it = by_size.iterator_to(from);
    const bool smaller = new_size < from.m_size || (new_size == from.m_size && to.address() < from.address());
    to.m_size = new_size;  // may change `from`'s key in place; only `to` is compared below
    bool in_place;
    if (smaller) {
      in_place = it == by_size.begin() || less(*std::prev(it), to);
    } else {
      const auto nx = std::next(it);
      in_place = nx == by_size.end() || less(to, *nx);
    }
    if (in_place) {
      if (&to != &from) by_size.replace_node(it, to);
    } else {
      by_size.erase(it);  // unlinking compares nothing, so the changed key is harmless
      insert_by_size(to);
    }
  }

  /// For align > quantum: the best-fitting block from `it` (the first block of at least `bs`
  /// bytes) on, in (size, address) order, with the aligned start in `at`; end() if none fits.
  block_iterator find_aligned(block_iterator it, std::size_t bs, std::size_t align,
                              std::uintptr_t& at) noexcept {
    auto& by_size = m_s->m_by_size;
    const auto fits = [&](const heap_impl::free_block& block) {
      const std::uintptr_t a = heap_impl::align_up(block.address(), align);
      const std::uintptr_t gap = a - block.address();
      if (gap > block.m_size || bs > block.m_size - gap) return false;
      at = a;
      return true;
    };
    for (int scanned = 0; it != by_size.end(); ++it, ++scanned) {
      if (scanned == heap_impl::aligned_scan_limit) {
        // A block of bs + align - quantum bytes fits whatever its (quantum-aligned) address.
        // None was met so far (it would have fitted), so this one lies at or after `it`.
        const auto sure = by_size.lower_bound(bs + align - heap_quantum, heap_impl::by_size_compare{});
        if (sure != by_size.end()) {
          [[maybe_unused]] const bool ok = fits(*sure);
          TMF_ASSERT(ok);
          return sure;
        }
        // No block is sure to fit: keep scanning (memory is short; the caller would grow).
      }
      if (fits(*it)) return it;
    }
    return it;
  }

  /// Takes [at, at+bs) out of `block` (which contains it): a leading gap stays a free block
  /// (the node does not move), a trailing rest becomes a new one.
  void carve(heap_impl::free_block& block, std::uintptr_t at, std::size_t bs) noexcept {
    auto& by_addr = m_s->m_by_addr;
    auto& by_size = m_s->m_by_size;
    const std::uintptr_t tail = at + bs;
    const std::size_t tail_size = block.end_address() - tail;
    const std::uintptr_t holes = block.m_holes_end;
    // The pages below the holes' end that the carve hands out were allocated (refill); the
    // tail keeps the holes above them, the leading gap those below `at`.
    const std::uintptr_t tail_holes = holes > heap_impl::holes_begin(tail) ? holes : 0;
    if (at == block.address()) {
      if (tail_size == 0) {
        by_size.erase(by_size.iterator_to(block));
        by_addr.erase(by_addr.iterator_to(block));
        --m_s->m_free_blocks;
      } else {
        heap_impl::free_block* rest = make_block(tail, 0);
        by_addr.replace_node(by_addr.iterator_to(block), *rest);  // same place in address order
        resize(block, *rest, tail_size);
        rest->m_holes_end = tail_holes;
      }
    } else {
      const auto after = std::next(by_addr.iterator_to(block));
      resize(block, block, at - block.address());
      if (holes != 0) block.m_holes_end = std::min(holes, at);
      if (block.m_holes_end <= heap_impl::holes_begin(block.address())) block.m_holes_end = 0;
      if (tail_size != 0) {
        heap_impl::free_block* rest = make_block(tail, tail_size);
        rest->m_holes_end = tail_holes;
        by_addr.insert_before(after, *rest);
        insert_by_size(*rest);
        ++m_s->m_free_blocks;
      }
    }
    m_s->m_free_bytes -= bs;
    m_s->m_allocated_bytes += bs;
  }

  // The fatal paths of deallocate, out of line: "invalid deallocate(0x..., 128): <what>".
  static heap_impl::message free_error(void* ptr, std::size_t size) noexcept {
    heap_impl::message m;
    m << "invalid deallocate(";
    m.hex(reinterpret_cast<std::uintptr_t>(ptr)) << ", ";
    m.dec(size) << "): ";
    return m;
  }
  [[noreturn, gnu::cold, gnu::noinline]] static void outside_arena(void* ptr, std::size_t size,
                                                                   std::uintptr_t b,
                                                                   std::uintptr_t e) noexcept {
    auto m = free_error(ptr, size);
    m << "address outside the arena [";
    m.hex(b) << ", ";
    m.hex(e) << ")";
    fatal(m.c_str());
  }
  [[noreturn, gnu::cold, gnu::noinline]] static void misaligned(void* ptr, std::size_t size) noexcept {
    auto m = free_error(ptr, size);
    m << "address not aligned to the ";
    m.dec(heap_quantum) << "-byte heap quantum";
    fatal(m.c_str());
  }
  [[noreturn, gnu::cold, gnu::noinline]] static void past_end(void* ptr, std::size_t size,
                                                              std::uintptr_t e) noexcept {
    auto m = free_error(ptr, size);
    m << "block extends past the arena end ";
    m.hex(e);
    fatal(m.c_str());
  }
  [[noreturn, gnu::cold, gnu::noinline]] static void overlap(void* ptr, std::size_t size,
                                                             const heap_impl::free_block& block) noexcept {
    auto m = free_error(ptr, size);
    m << "block overlaps free block ";
    m.hex(block.address()) << " of ";
    m.dec(block.m_size) << " bytes (double free?)";
    fatal(m.c_str());
  }

  /// Walks `tree` in order, checking every link before following it (in the arena, aligned,
  /// parent links, red-black colours and black heights, header's leftmost/rightmost), and
  /// calls `visit(block)` for each node. Throws on the first problem.
  void audit_runs(const std::vector<std::uintptr_t>& addresses, const std::vector<std::size_t>& sizes) const;
  template <class Tree, class Visit>
  void audit_tree(const Tree& tree, const char* name, std::size_t max_blocks, Visit&& visit) const;

  [[noreturn, gnu::cold, gnu::noinline]] static void not_in_run(void* ptr, std::size_t size) noexcept {
    auto m = free_error(ptr, size);
    m << "no size-class run holds this address (freed twice, or not allocated with this size?)";
    fatal(m.c_str());
  }
  [[noreturn, gnu::cold, gnu::noinline]] static void bad_small(void* ptr, std::size_t size,
                                                               const runs_impl::run_header& r,
                                                               const char* what) noexcept {
    auto m = free_error(ptr, size);
    m << what << " (run ";
    m.hex(r.address()) << " of ";
    m.dec(r.info().size) << "-byte blocks)";
    fatal(m.c_str());
  }

  heap_state* m_s;
  const heap_impl::heap_backing* m_backing;
};

// -- the small-object front end (runs.hpp) --------------------------------------------------

inline void* heap::allocate_small(std::size_t size, std::size_t align) noexcept {
  using namespace runs_impl;
  const std::size_t c = class_of(size, align);
  class_table* t = m_s->m_classes;
  const bool made_table = t == nullptr;
  if (made_table) {
    void* p = tree_allocate(sizeof(class_table), heap_quantum);
    if (p == nullptr) return nullptr;
    t = ::new (p) class_table{};
    t->m_magic = table_magic;
    m_s->m_classes = t;
    m_s->m_run_bytes += tree_block_size(sizeof(class_table));
  }
  class_state& cs = t->m_class[c];
  run_header* r = cs.m_partial;
  if (r == nullptr && (r = new_run(c)) == nullptr) {
    if (made_table) {  // leave the heap as it was: nullptr means nothing changed
      m_s->m_classes = nullptr;
      m_s->m_run_bytes -= tree_block_size(sizeof(class_table));
      tree_deallocate(t, sizeof(class_table));
    }
    return nullptr;
  }
  void* p = r->take();
  if (r->m_used == r->info().count) {
    unlink(cs.m_partial, r);
    push_front(cs.m_full, r);
  }
  ++cs.m_blocks;
  m_s->m_small_bytes += classes[c].size;
  TMF_ASSERT(reinterpret_cast<std::uintptr_t>(p) % align == 0);
  return p;
}

inline runs_impl::run_header* heap::new_run(std::size_t c) noexcept {
  using namespace runs_impl;
  const std::size_t bytes = classes[c].run;
  void* p = tree_allocate(bytes, bytes);  // aligned: a block finds its header by masking
  if (p == nullptr) return nullptr;
  run_header* r = run_header::make(p, c);
  class_table* t = m_s->m_classes;
  push_front(t->m_class[c].m_partial, r);
  ++t->m_class[c].m_runs;
  ++t->m_runs;
  m_s->m_run_bytes += bytes;
  return r;
}

inline void heap::release_run(runs_impl::run_header* r) noexcept {
  using namespace runs_impl;
  class_table* t = m_s->m_classes;
  class_state& cs = t->m_class[r->m_class];
  unlink(cs.m_partial, r);
  --cs.m_runs;
  --t->m_runs;
  const std::size_t bytes = r->bytes();
  m_s->m_run_bytes -= bytes;
  r->m_magic = 0;  // coalescing may leave these bytes as they are: a stale pointer must not see a run
  r->m_self = nullptr;
  tree_deallocate(r, bytes);
  if (t->m_runs == 0) {  // no small block left: the table goes too, so an empty heap is one block again
    m_s->m_classes = nullptr;
    m_s->m_run_bytes -= tree_block_size(sizeof(class_table));
    t->m_magic = 0;
    tree_deallocate(t, sizeof(class_table));
  }
}

inline void heap::deallocate_small(void* ptr, std::size_t size) noexcept {
  using namespace runs_impl;
  const auto p = reinterpret_cast<std::uintptr_t>(ptr);
  const auto b = reinterpret_cast<std::uintptr_t>(m_s->m_begin);
  const auto e = reinterpret_cast<std::uintptr_t>(m_s->m_end);
  if (p < b || p >= e) outside_arena(ptr, size, b, e);
  const std::size_t bytes = run_bytes_for(size);  // the run's size follows from the request's
  const std::uintptr_t h = p & ~static_cast<std::uintptr_t>(bytes - 1);
  if (h < b || e - h < bytes || m_s->m_classes == nullptr) not_in_run(ptr, size);
  auto* r = reinterpret_cast<run_header*>(h);
  if (r->m_magic != run_magic || r->m_self != r || r->m_class >= class_count || r->bytes() != bytes)
    not_in_run(ptr, size);
  const class_info& ci = r->info();
  const std::uintptr_t off = p - h;
  if (off < ci.offset || (off - ci.offset) % ci.size != 0 || (off - ci.offset) / ci.size >= ci.count)
    bad_small(ptr, size, *r, "address is not a block of its run");
  if (size > ci.size) bad_small(ptr, size, *r, "size exceeds its run's class");
  const std::size_t i = (off - ci.offset) / ci.size;
  if (!r->in_use(i)) bad_small(ptr, size, *r, "block not in use (double free?)");
  class_state& cs = m_s->m_classes->m_class[r->m_class];
  const bool was_full = r->m_used == ci.count;
  r->give(i);
  if (was_full) {
    unlink(cs.m_full, r);
    push_front(cs.m_partial, r);
  }
  --cs.m_blocks;
  m_s->m_small_bytes -= ci.size;
  if (r->m_used == 0) release_run(r);
}

}  // namespace tmf::detail

#include "heap_audit.hpp"

#endif  // TMF_DETAIL_HEAP_HPP
