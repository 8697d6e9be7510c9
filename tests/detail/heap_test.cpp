// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of tmf::detail::heap over a plain buffer. The trees (tree_allocate / tree_deallocate):
// sizes, best fit, coalescing, alignment, exhaustion, growth, and random allocate/free/grow
// against a reference model. The size classes and runs in front of them (allocate /
// deallocate): classes, adjacency, alignment, runs taken and given back, per-class counters,
// and a random model of mixed small and large blocks. Its audit
// (corruption detection), misuse deaths and the heap inside a storage: heap_audit_test.cpp.
#include <tmf/detail/heap.hpp>
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "heap_test_support.hpp"
#include "test_support.hpp"

namespace {

using namespace tmf_test::heap_tests;  // NOLINT(google-build-using-namespace)

constexpr std::size_t impossible = std::numeric_limits<std::size_t>::max();

std::string to_string(const block_list& blocks) {
  std::string s;
  for (const auto& [off, size] : blocks) {
    // Appended piecewise: "[" + std::string trips GCC 12's -Wrestrict false positive at -O3.
    s += '[';
    s += std::to_string(off);
    s += '+';
    s += std::to_string(size);
    s += "] ";
  }
  return s;
}

std::size_t offset_of(const arena& a, const void* p) {
  return static_cast<std::size_t>(static_cast<const std::byte*>(p) - a.base());
}

TEST(heap, block_size) {
  EXPECT_EQ(heap::tree_block_size(0), q);
  EXPECT_EQ(heap::tree_block_size(1), q);
  EXPECT_EQ(heap::tree_block_size(q - 1), q);
  EXPECT_EQ(heap::tree_block_size(q), q);
  EXPECT_EQ(heap::tree_block_size(q + 1), 2 * q);
  EXPECT_EQ(heap::tree_block_size(1000 * q), 1000 * q);
  EXPECT_EQ(heap::tree_block_size(1000 * q + 1), 1001 * q);
}

TEST(heap, fresh_heap_stats) {
  arena a(1 << 20);
  heap h = a.h();
  EXPECT_EQ(h.begin(), a.base());
  EXPECT_EQ(h.end(), a.at(1 << 20));
  EXPECT_EQ(h.allocated_bytes(), 0u);
  EXPECT_EQ(h.free_bytes(), std::size_t{1} << 20);
  EXPECT_EQ(h.free_blocks(), 1u);
  EXPECT_EQ(h.largest_free_block(), std::size_t{1} << 20);
  EXPECT_EQ(free_list(a), (block_list{{0, 1 << 20}}));
  EXPECT_NO_THROW(h.check());
}

TEST(heap, empty_arena) {
  arena a(0);
  heap h = a.h();
  EXPECT_EQ(h.begin(), h.end());
  EXPECT_EQ(h.free_bytes(), 0u);
  EXPECT_EQ(h.free_blocks(), 0u);
  EXPECT_EQ(h.largest_free_block(), 0u);
  EXPECT_NO_THROW(h.check());
  EXPECT_EQ(h.tree_allocate(0, 1), nullptr);
  EXPECT_EQ(h.tree_allocate(1, 64), nullptr);
  EXPECT_EQ(h.tree_growth_needed(0, 1), q);
  h.grow(a.at(q));
  EXPECT_EQ(h.tree_allocate(0, 1), a.base());
  EXPECT_NO_THROW(h.check());
}

TEST(heap, a_second_handle_sees_the_same_state) {
  arena a(1 << 16);
  void* p = a.h().tree_allocate(100, 8);
  heap other(a.state());
  EXPECT_EQ(other.allocated_bytes(), heap::tree_block_size(100));
  other.tree_deallocate(p, 100);
  EXPECT_EQ(a.h().allocated_bytes(), 0u);
  EXPECT_EQ(a.h().free_blocks(), 1u);
}

TEST(heap, sequential_allocations_ascend_and_free_back_to_one_block) {
  constexpr std::size_t size = 1 << 20;
  arena a(size);
  heap h = a.h();
  std::vector<std::pair<void*, std::size_t>> blocks;
  std::size_t expected_offset = 0;
  for (std::size_t i = 0; i < 200; ++i) {
    const std::size_t n = (i * 37) % 1000;
    void* p = h.tree_allocate(n, 8);
    ASSERT_NE(p, nullptr) << "allocation " << i;
    EXPECT_EQ(offset_of(a, p), expected_offset) << "allocation " << i << " of " << n << " bytes";
    expected_offset += heap::tree_block_size(n);
    blocks.emplace_back(p, n);
    EXPECT_EQ(h.allocated_bytes(), expected_offset);
    EXPECT_EQ(h.free_bytes(), size - expected_offset);
    EXPECT_EQ(h.free_blocks(), 1u);
  }
  ASSERT_NO_THROW(h.check());
  // Free every other block, then the rest: holes appear, then coalesce away.
  for (std::size_t i = 0; i < blocks.size(); i += 2) h.tree_deallocate(blocks[i].first, blocks[i].second);
  ASSERT_NO_THROW(h.check());
  EXPECT_EQ(h.free_blocks(), blocks.size() / 2 + 1) << to_string(free_list(a));  // the holes and the top
  for (std::size_t i = 1; i < blocks.size(); i += 2) h.tree_deallocate(blocks[i].first, blocks[i].second);
  ASSERT_NO_THROW(h.check());
  EXPECT_EQ(h.allocated_bytes(), 0u);
  EXPECT_EQ(h.free_bytes(), size);
  EXPECT_EQ(free_list(a), (block_list{{0, size}}));
}

TEST(heap, zero_size_takes_one_quantum) {
  arena a(1 << 16);
  heap h = a.h();
  void* p1 = h.tree_allocate(0, 1);
  void* p2 = h.tree_allocate(0, 1);
  ASSERT_NE(p1, nullptr);
  ASSERT_NE(p2, nullptr);
  EXPECT_NE(p1, p2);
  EXPECT_EQ(offset_of(a, p2), q);
  EXPECT_EQ(h.allocated_bytes(), 2 * q);
  h.tree_deallocate(p1, 0);
  EXPECT_EQ(free_list(a), (block_list{{0, q}, {2 * q, (1 << 16) - 2 * q}}));
  h.tree_deallocate(p2, 0);
  EXPECT_EQ(free_list(a), (block_list{{0, 1 << 16}}));
  EXPECT_NO_THROW(h.check());
}

TEST(heap, best_fit_prefers_smallest_then_lowest_address) {
  arena a(1 << 16);
  heap h = a.h();
  // Free: 4q at 0, 2q at 10q, 2q at 20q, 3q at 30q, 5q at 40q, 2q at 50q.
  make_layout(
      a, {{0, 4 * q}, {10 * q, 2 * q}, {20 * q, 2 * q}, {30 * q, 3 * q}, {40 * q, 5 * q}, {50 * q, 2 * q}});
  EXPECT_EQ(offset_of(a, h.tree_allocate(2 * q, 1)), 10 * q) << "not first fit (0), the lowest of the 2q blocks";
  EXPECT_EQ(offset_of(a, h.tree_allocate(2 * q - 5, 8)), 20 * q) << "the next 2q block";
  EXPECT_EQ(offset_of(a, h.tree_allocate(3 * q, 16)), 30 * q) << "the exact 3q block, not 4q at 0";
  EXPECT_EQ(offset_of(a, h.tree_allocate(q, 1)), 50 * q) << "the last 2q block";
  EXPECT_EQ(free_list(a), (block_list{{0, 4 * q}, {40 * q, 5 * q}, {51 * q, q}}));
  EXPECT_EQ(offset_of(a, h.tree_allocate(q, 1)), 51 * q) << "the 1q remainder";
  EXPECT_EQ(offset_of(a, h.tree_allocate(3 * q, 1)), 0u) << "4q at 0 beats 5q at 40q";
  EXPECT_EQ(offset_of(a, h.tree_allocate(5 * q, 1)), 40 * q);
  EXPECT_EQ(free_list(a), (block_list{{3 * q, q}}));
  EXPECT_EQ(h.tree_allocate(2 * q, 1), nullptr) << "no block of 2q left";
  EXPECT_NO_THROW(h.check());
}

TEST(heap, coalesces_with_previous_next_and_both) {
  arena a(64 * q);
  heap h = a.h();
  make_layout(a, {{10 * q, 2 * q}, {20 * q, 2 * q}, {30 * q, 2 * q}});
  // With the previous block only.
  h.tree_deallocate(a.at(12 * q), q);
  EXPECT_EQ(free_list(a), (block_list{{10 * q, 3 * q}, {20 * q, 2 * q}, {30 * q, 2 * q}}));
  // With the next block only.
  h.tree_deallocate(a.at(19 * q), 1);
  EXPECT_EQ(free_list(a), (block_list{{10 * q, 3 * q}, {19 * q, 3 * q}, {30 * q, 2 * q}}));
  // With both.
  h.tree_deallocate(a.at(22 * q), 8 * q);
  EXPECT_EQ(free_list(a), (block_list{{10 * q, 3 * q}, {19 * q, 13 * q}}));
  EXPECT_EQ(h.free_blocks(), 2u);
  EXPECT_EQ(h.largest_free_block(), 13 * q);
  // Neither.
  h.tree_deallocate(a.at(0), 2 * q);
  EXPECT_EQ(free_list(a), (block_list{{0, 2 * q}, {10 * q, 3 * q}, {19 * q, 13 * q}}));
  // Both, at the arena's ends.
  h.tree_deallocate(a.at(2 * q), 8 * q);
  h.tree_deallocate(a.at(13 * q), 6 * q);
  h.tree_deallocate(a.at(32 * q), 32 * q);
  EXPECT_EQ(free_list(a), (block_list{{0, 64 * q}}));
  EXPECT_EQ(h.free_bytes(), 64 * q);
  EXPECT_EQ(h.allocated_bytes(), 0u);
  EXPECT_NO_THROW(h.check());
}

TEST(heap, alignments_up_to_a_page_are_honoured_and_gaps_stay_free) {
  for (std::size_t align = 1; align <= page_size; align *= 2) {
    arena a(1 << 20);
    heap h = a.h();
    void* first = h.tree_allocate(1, 1);  // misalign the top block's start
    ASSERT_EQ(first, a.base());
    void* p = h.tree_allocate(100, align);
    ASSERT_NE(p, nullptr) << "align " << align;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u) << "align " << align;
    const std::size_t off = offset_of(a, p);
    const std::size_t expected = std::max(q, align);
    EXPECT_EQ(off, expected) << "align " << align;
    block_list expect_free;
    if (off > q) expect_free.emplace_back(q, off - q);  // the leading gap
    expect_free.emplace_back(off + heap::tree_block_size(100), (1 << 20) - off - heap::tree_block_size(100));
    EXPECT_EQ(free_list(a), expect_free) << "align " << align;
    ASSERT_NO_THROW(h.check()) << "align " << align;
    // The gap is used by a later small request.
    if (off > q) {
      EXPECT_EQ(h.tree_allocate(q, 1), a.at(q)) << "align " << align;
      h.tree_deallocate(a.at(q), q);
    }
    h.tree_deallocate(p, 100);
    h.tree_deallocate(first, 1);
    EXPECT_EQ(free_list(a), (block_list{{0, 1 << 20}})) << "align " << align;
  }
}

TEST(heap, bad_alignments_return_null) {
  arena a(1 << 16);
  heap h = a.h();
  for (std::size_t size : {std::size_t{8}, std::size_t{5000}}) {  // a size class, and the trees
    EXPECT_EQ(h.allocate(size, 0), nullptr);
    EXPECT_EQ(h.allocate(size, 3), nullptr);
    EXPECT_EQ(h.allocate(size, 48), nullptr);
    EXPECT_EQ(h.allocate(size, 2 * page_size), nullptr);
    EXPECT_EQ(h.growth_needed(size, 0), impossible);
    EXPECT_EQ(h.growth_needed(size, 3), impossible);
    EXPECT_EQ(h.growth_needed(size, 2 * page_size), impossible);
  }
  EXPECT_EQ(h.tree_growth_needed(8, 3), impossible);
  EXPECT_EQ(h.allocated_bytes(), 0u);
}

TEST(heap, over_aligned_request_picks_the_best_fitting_aligned_block) {
  arena a(64 * page_size);
  heap h = a.h();
  // 2q blocks at page offset q (unaligned) in pages 1..10, and a page-aligned 2q block at page 20:
  // the scan must skip the unaligned ones. Also 3q at page offset 0 in page 30 (fits, but larger).
  block_list layout;
  for (std::size_t i = 1; i <= 10; ++i) layout.emplace_back(i * page_size + q, 2 * q);
  layout.emplace_back(20 * page_size, 2 * q);
  layout.emplace_back(30 * page_size, 3 * q);
  make_layout(a, layout);
  EXPECT_EQ(offset_of(a, h.tree_allocate(2 * q, page_size)), 20 * page_size);
  EXPECT_EQ(offset_of(a, h.tree_allocate(q, page_size)), 30 * page_size);
  EXPECT_EQ(h.tree_allocate(q, page_size), nullptr);
  EXPECT_NO_THROW(h.check());
}

TEST(heap, over_aligned_request_prefers_a_best_fit_to_a_block_sure_to_fit) {
  // As above, plus a large block that any request fits: within the scan limit the best fit wins.
  arena a(64 * page_size);
  heap h = a.h();
  block_list layout;
  for (std::size_t i = 1; i <= 10; ++i) layout.emplace_back(i * page_size + q, 2 * q);
  layout.emplace_back(20 * page_size, 2 * q);
  layout.emplace_back(30 * page_size + q, 8 * page_size);
  make_layout(a, layout);
  EXPECT_EQ(offset_of(a, h.tree_allocate(2 * q, page_size)), 20 * page_size);
  EXPECT_EQ(offset_of(a, h.tree_allocate(2 * q, page_size)), 31 * page_size) << "then the large block";
  EXPECT_NO_THROW(h.check());
}

TEST(heap, over_aligned_scan_goes_past_its_limit_when_no_block_is_sure_to_fit) {
  arena a(256 * page_size);
  heap h = a.h();
  // More unaligned candidates than the scan limit, then the only fitting block; no large block.
  block_list layout;
  const std::size_t n = 3 * heap_impl::aligned_scan_limit;
  for (std::size_t i = 1; i <= n; ++i) layout.emplace_back(i * page_size + q, 2 * q);
  layout.emplace_back((n + 10) * page_size, 2 * q);
  make_layout(a, layout);
  EXPECT_EQ(offset_of(a, h.tree_allocate(2 * q, page_size)), (n + 10) * page_size);
  EXPECT_EQ(h.tree_allocate(2 * q, page_size), nullptr);
  EXPECT_NO_THROW(h.check());
}

TEST(heap, over_aligned_scan_jumps_to_a_block_sure_to_fit) {
  arena a(256 * page_size);
  heap h = a.h();
  block_list layout;
  const std::size_t n = 3 * heap_impl::aligned_scan_limit;
  for (std::size_t i = 1; i <= n; ++i) layout.emplace_back(i * page_size + q, 2 * q);
  layout.emplace_back((n + 10) * page_size + q, 2 * page_size);  // sure to fit (its page-aligned part)
  make_layout(a, layout);
  void* p = h.tree_allocate(2 * q, page_size);
  EXPECT_EQ(offset_of(a, p), (n + 11) * page_size);
  // The leading gap stays free.
  EXPECT_EQ(free_list(a).back(), (std::pair{(n + 11) * page_size + 2 * q, page_size - q}));
  EXPECT_EQ(free_list(a)[n], (std::pair{(n + 10) * page_size + q, page_size - q}));
  EXPECT_NO_THROW(h.check());
}

TEST(heap, exhaustion_returns_null) {
  arena a(16 * page_size);
  heap h = a.h();
  std::vector<void*> blocks;
  for (;;) {
    void* p = h.tree_allocate(1000, 64);
    if (p == nullptr) break;
    blocks.push_back(p);
    ASSERT_LE(blocks.size(), 16 * page_size / 1000) << "more blocks than fit";
  }
  EXPECT_EQ(blocks.size(), 16 * page_size / heap::tree_block_size(1000));
  EXPECT_LT(h.largest_free_block(), heap::tree_block_size(1000));
  // Fill the rest with quanta, then nothing at all fits.
  while (void* p = h.tree_allocate(0, 1)) blocks.push_back(p);
  EXPECT_EQ(h.free_bytes(), 0u);
  EXPECT_EQ(h.free_blocks(), 0u);
  EXPECT_EQ(h.largest_free_block(), 0u);
  EXPECT_EQ(h.allocated_bytes(), 16 * page_size);
  EXPECT_EQ(h.tree_allocate(0, 1), nullptr);
  EXPECT_EQ(h.tree_allocate(1, page_size), nullptr);
  EXPECT_EQ(h.tree_allocate(impossible, 1), nullptr);
  EXPECT_EQ(h.tree_allocate(impossible - 2 * page_size, 1), nullptr);
  EXPECT_NO_THROW(h.check());
}

TEST(heap, oversized_requests_return_null) {
  arena a(16 * page_size);
  heap h = a.h();
  EXPECT_EQ(h.tree_allocate(16 * page_size + 1, 1), nullptr);
  EXPECT_EQ(h.tree_allocate(impossible, 1), nullptr);
  EXPECT_EQ(h.tree_allocate(impossible, page_size), nullptr);
  EXPECT_EQ(h.tree_growth_needed(impossible, 1), impossible);
  EXPECT_EQ(h.tree_growth_needed(impossible - q, 1), impossible);
  EXPECT_NE(h.tree_allocate(16 * page_size, 1), nullptr);
}

TEST(heap, grow_extends_the_top_free_block) {
  arena a(4 * page_size);
  heap h = a.h();
  void* p = h.tree_allocate(page_size, 1);
  ASSERT_EQ(p, a.base());
  h.grow(a.at(6 * page_size));
  EXPECT_EQ(h.end(), a.at(6 * page_size));
  EXPECT_EQ(free_list(a), (block_list{{page_size, 5 * page_size}}));
  EXPECT_EQ(h.free_bytes(), 5 * page_size);
  EXPECT_EQ(h.largest_free_block(), 5 * page_size);
  h.grow(a.at(6 * page_size));  // no-op
  EXPECT_EQ(free_list(a), (block_list{{page_size, 5 * page_size}}));
  EXPECT_NO_THROW(h.check());
}

TEST(heap, grow_adds_a_block_when_the_top_is_allocated) {
  arena a(4 * page_size);
  heap h = a.h();
  make_layout(a, {{page_size, page_size}});  // the top is allocated
  h.grow(a.at(4 * page_size + q));
  EXPECT_EQ(free_list(a), (block_list{{page_size, page_size}, {4 * page_size, q}}));
  EXPECT_EQ(h.free_blocks(), 2u);
  EXPECT_EQ(h.free_bytes(), page_size + q);
  EXPECT_EQ(h.allocated_bytes(), 3 * page_size);
  EXPECT_NO_THROW(h.check());
  h.grow(a.at(5 * page_size));  // now the top is free: extended
  EXPECT_EQ(free_list(a), (block_list{{page_size, page_size}, {4 * page_size, page_size}}));
  EXPECT_NO_THROW(h.check());
  // Freeing the block before the grown part coalesces across the old end.
  h.tree_deallocate(a.at(2 * page_size), 2 * page_size);
  EXPECT_EQ(free_list(a), (block_list{{page_size, 4 * page_size}}));
  EXPECT_NO_THROW(h.check());
}

TEST(heap, growth_needed_is_enough) {
  struct scenario {
    const char* name;
    block_list layout;  // the free blocks (the rest of the arena is allocated)
    std::size_t arena;  // arena bytes
    std::size_t size, align;
    std::size_t expected;  // growth_needed
  };
  const std::size_t bs100 = heap::tree_block_size(100);
  const std::size_t p = page_size;
  // clang-format off
  const std::vector<scenario> scenarios = {
      // name                                  free blocks            arena       size   align  expected
      {"top free, too small",                  {{14 * p, 2 * p}},     16 * p,     3 * p, 64,    p},
      {"top free, fits",                       {{14 * p, 2 * p}},     16 * p,     2 * p, 64,    0},
      {"top allocated",                        {{p, p}},              16 * p,     100,   64,    bs100},
      {"top allocated, aligned end",           {{p, p}},              16 * p,     100,   p,     bs100},
      {"top allocated, unaligned end",         {{p, p}},              16 * p + q, 100,   p,     p - q + bs100},
      {"top free, unaligned start",            {{15 * p + q, p - q}}, 16 * p,     p,     p,     p},
      {"top free, aligned start inside",       {{15 * p - q, p + q}}, 16 * p,     p,     p,     0},
      {"small block elsewhere, top allocated", {{0, q}},              16 * p,     2 * q, 1,     2 * q},
  };
  // clang-format on
  for (const scenario& s : scenarios) {
    arena a(s.arena);
    heap h = a.h();
    make_layout(a, s.layout);
    const std::size_t g = h.tree_growth_needed(s.size, s.align);
    EXPECT_EQ(g, s.expected) << s.name;
    EXPECT_EQ(g % q, 0u) << s.name;
    h.grow(static_cast<std::byte*>(h.end()) + g);
    void* ptr = h.tree_allocate(s.size, s.align);
    EXPECT_NE(ptr, nullptr) << s.name;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(ptr) % s.align, 0u) << s.name;
    EXPECT_NO_THROW(h.check()) << s.name;
  }
}

TEST(heap, growth_needed_is_minimal_for_the_top_block) {
  // Growing by one quantum less than growth_needed is not enough when no other block fits.
  for (std::size_t align = 1; align <= page_size; align *= 2) {
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, 100 * q + 3, 3 * page_size}) {
      arena a(2 * page_size + 3 * q);
      heap h = a.h();
      ASSERT_NE(h.tree_allocate(page_size + q, 1), nullptr);  // top block starts at page_size + q
      const std::size_t g = h.tree_growth_needed(size, align);
      ASSERT_NE(g, impossible);
      if (g >= q) {
        h.grow(static_cast<std::byte*>(h.end()) + (g - q));
        EXPECT_EQ(h.tree_allocate(size, align), nullptr) << "size " << size << " align " << align << " g " << g;
        h.grow(static_cast<std::byte*>(h.end()) + q);
      } else {
        h.grow(static_cast<std::byte*>(h.end()) + g);
      }
      EXPECT_NE(h.tree_allocate(size, align), nullptr) << "size " << size << " align " << align << " g " << g;
      EXPECT_NO_THROW(h.check());
    }
  }
}

// Randomized: random allocate/free/grow against a model of the live blocks, checking the
// heap's audit, its free list (it must equal the model's gaps exactly: full coalescing),
// the best-fit choice, that nullptr means nothing fits, and that block contents survive.
// Two profiles: "mixed" (sizes up to 100 KB, ~400 live blocks, runs out of its 2 MiB) and
// "small" (sizes under 512 bytes, ~2000 live blocks: many free blocks, long aligned scans).
class heap_random : public testing::TestWithParam<std::tuple<std::uint64_t, bool>> {};

struct live_block {
  std::size_t size;  // as requested
  std::uint8_t pattern;
};

void fill(std::byte* p, std::size_t n, std::uint8_t pattern) {
  for (std::size_t i = 0; i < n; ++i)
    p[i] = static_cast<std::byte>(static_cast<std::uint8_t>(pattern + i * 7));
}

std::size_t first_mismatch(const std::byte* p, std::size_t n, std::uint8_t pattern) {
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] != static_cast<std::byte>(static_cast<std::uint8_t>(pattern + i * 7))) return i;
  }
  return n;
}

TEST_P(heap_random, matches_a_model) {
  const std::uint64_t seed = std::get<0>(GetParam());
  const bool small_only = std::get<1>(GetParam());
  const std::size_t target_live = small_only ? 2000 : 400;
  const char* const profile = small_only ? " small" : " mixed";
  constexpr int steps = 20000;
  constexpr int check_every_step_until = 4000;
  std::mt19937_64 rng(seed);
  arena a(64 * 1024, std::size_t{2} << 20);  // starts small, grows up to 2 MiB, then runs out
  heap h = a.h();
  std::map<std::uintptr_t, live_block> live;  // by address
  std::size_t live_bytes = 0;
  std::size_t grows = 0;
  std::size_t nulls = 0;
  std::size_t over_aligned = 0;

  const auto rand_below = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  const auto model_gaps = [&] {
    block_list gaps;
    std::uintptr_t cursor = reinterpret_cast<std::uintptr_t>(h.begin());
    for (const auto& [addr, blk] : live) {
      if (addr > cursor)
        gaps.emplace_back(cursor - reinterpret_cast<std::uintptr_t>(a.base()), addr - cursor);
      cursor = addr + heap::tree_block_size(blk.size);
    }
    const auto e = reinterpret_cast<std::uintptr_t>(h.end());
    if (e > cursor) gaps.emplace_back(cursor - reinterpret_cast<std::uintptr_t>(a.base()), e - cursor);
    return gaps;
  };
  const auto fits = [&](const std::pair<std::size_t, std::size_t>& gap, std::size_t bs, std::size_t align) {
    const std::uintptr_t start = reinterpret_cast<std::uintptr_t>(a.base()) + gap.first;
    const std::uintptr_t aligned = (start + align - 1) & ~static_cast<std::uintptr_t>(align - 1);
    return aligned + bs <= start + gap.second;
  };

  for (int step = 0; step < steps; ++step) {
    const bool allocate = live.empty() || rand_below(100) < (live.size() < target_live ? 60u : 45u);
    if (allocate) {
      const std::size_t kind = rand_below(100);
      const std::size_t size = small_only  ? rand_below(512)
                               : kind < 70 ? rand_below(300)
                               : kind < 95 ? rand_below(5000)
                                           : rand_below(100000);
      const std::size_t align_kind = rand_below(100);
      const std::size_t align = align_kind < 80 ? std::size_t{1} << rand_below(7)         // 1..64
                                                : std::size_t{1} << (7 + rand_below(6));  // 128..4096
      const std::size_t bs = heap::tree_block_size(size);
      const block_list gaps = model_gaps();
      // The model's answer: any fit? and, for align <= quantum, the best fit's address.
      bool any = false;
      std::size_t best_off = 0, best_size = 0;
      for (const auto& g : gaps) {
        if (!fits(g, bs, align)) continue;
        any = true;
        if (best_size == 0 || g.second < best_size) best_off = g.first, best_size = g.second;
      }
      void* p = h.tree_allocate(size, align);
      if (p == nullptr && !any) {
        const std::size_t g = h.tree_growth_needed(size, align);
        ASSERT_NE(g, impossible) << "seed " << seed << profile << " step " << step;
        // Grow in 64 KiB steps, as a storage would grow its file, while the buffer allows.
        const std::size_t chunk = (g + 0xffff) & ~std::size_t{0xffff};
        const std::size_t used = offset_of(a, h.end());
        if (used + chunk <= a.capacity()) {
          h.grow(a.at(used + chunk));
          ++grows;
          p = h.tree_allocate(size, align);
          ASSERT_NE(p, nullptr) << "seed " << seed << profile << " step " << step << ": allocate(" << size
                                << ", " << align << ") failed after growing by growth_needed " << g;
        } else {
          ++nulls;
        }
      } else {
        ASSERT_EQ(p != nullptr, any) << "seed " << seed << profile << " step " << step << ": allocate("
                                     << size << ", " << align << ") returned " << p << " but the model "
                                     << (any ? "has a fitting gap" : "has none") << "; gaps "
                                     << to_string(gaps);
        if (align <= q) {
          EXPECT_EQ(offset_of(a, p), best_off)
              << "seed " << seed << profile << " step " << step << ": not the best fit for " << bs
              << " bytes; gaps " << to_string(gaps);
        }
      }
      if (p != nullptr) {
        const auto addr = reinterpret_cast<std::uintptr_t>(p);
        ASSERT_EQ(addr % align, 0u) << "seed " << seed << profile << " step " << step << " align " << align;
        ASSERT_GE(p, h.begin()) << "seed " << seed << profile << " step " << step;
        ASSERT_LE(addr + bs, reinterpret_cast<std::uintptr_t>(h.end()))
            << "seed " << seed << profile << " step " << step;
        // No overlap with the live neighbours.
        const auto next = live.lower_bound(addr);
        if (next != live.end()) {
          ASSERT_GE(next->first, addr + bs)
              << "seed " << seed << profile << " step " << step << ": new block " << p
              << " overlaps live block at " << next->first;
        }
        if (next != live.begin()) {
          const auto prev = std::prev(next);
          ASSERT_LE(prev->first + heap::tree_block_size(prev->second.size), addr)
              << "seed " << seed << profile << " step " << step << ": new block " << p
              << " overlaps live block at " << prev->first;
        }
        const auto pattern = static_cast<std::uint8_t>(rng());
        fill(static_cast<std::byte*>(p), size, pattern);
        live.emplace(addr, live_block{size, pattern});
        live_bytes += bs;
        if (align > q) ++over_aligned;
      }
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(rand_below(live.size())));
      auto* p = reinterpret_cast<std::byte*>(it->first);
      const std::size_t bad = first_mismatch(p, it->second.size, it->second.pattern);
      ASSERT_EQ(bad, it->second.size)
          << "seed " << seed << profile << " step " << step << ": block " << static_cast<void*>(p) << " of "
          << it->second.size << " bytes was overwritten at offset " << bad;
      h.tree_deallocate(p, it->second.size);
      live_bytes -= heap::tree_block_size(it->second.size);
      live.erase(it);
    }

    ASSERT_EQ(h.allocated_bytes(), live_bytes) << "seed " << seed << profile << " step " << step;
    ASSERT_EQ(h.allocated_bytes() + h.free_bytes(), offset_of(a, h.end()))
        << "seed " << seed << profile << " step " << step;
    if (step < check_every_step_until || step % 97 == 0 || step == steps - 1) {
      ASSERT_NO_THROW(h.check()) << "seed " << seed << profile << " step " << step;
      const block_list gaps = model_gaps();
      ASSERT_EQ(free_list(a), gaps) << "seed " << seed << profile << " step " << step;
      std::size_t largest = 0;
      for (const auto& g : gaps) largest = std::max(largest, g.second);
      ASSERT_EQ(h.free_blocks(), gaps.size()) << "seed " << seed << profile << " step " << step;
      ASSERT_EQ(h.largest_free_block(), largest) << "seed " << seed << profile << " step " << step;
    }
  }
  // The run must have exercised growth, exhaustion and over-aligned requests.
  EXPECT_GT(grows, 0u) << "seed " << seed << profile;
  if (!small_only) {
    EXPECT_GT(nulls, 0u) << "seed " << seed << " mixed";
  }
  EXPECT_GT(over_aligned, 0u) << "seed " << seed << profile;

  // Free everything: one block remains.
  for (const auto& [addr, blk] : live) {
    ASSERT_EQ(first_mismatch(reinterpret_cast<std::byte*>(addr), blk.size, blk.pattern), blk.size)
        << "seed " << seed << profile << " block " << addr;
    h.tree_deallocate(reinterpret_cast<void*>(addr), blk.size);
  }
  ASSERT_NO_THROW(h.check()) << "seed " << seed << profile;
  EXPECT_EQ(free_list(a), (block_list{{0, offset_of(a, h.end())}})) << "seed " << seed << profile;
  EXPECT_EQ(h.allocated_bytes(), 0u) << "seed " << seed << profile;
}

INSTANTIATE_TEST_SUITE_P(seeds, heap_random,
                         testing::Combine(testing::Values(1, 2, 3, 42, 20240601), testing::Bool()),
                         [](const testing::TestParamInfo<heap_random::ParamType>& info) {
                           return (std::get<1>(info.param) ? "small_seed_" : "mixed_seed_") +
                                  std::to_string(std::get<0>(info.param));
                         });

// ---------------------------------------------------------------------------------------------
// Size classes and runs (allocate / deallocate below run_limit).

using tmf::detail::run_limit;
using tmf::detail::small_threshold;
namespace runs_impl = tmf::detail::runs_impl;
constexpr std::size_t run = runs_impl::run_bytes;

TEST(heap_classes, block_size_follows_the_classes) {
  EXPECT_EQ(heap::block_size(0), 16u);
  EXPECT_EQ(heap::block_size(1), 16u);
  EXPECT_EQ(heap::block_size(16), 16u);
  EXPECT_EQ(heap::block_size(17), 24u);
  EXPECT_EQ(heap::block_size(24, 8), 24u);
  EXPECT_EQ(heap::block_size(24, 16), 32u) << "the 24-byte class is only 8-aligned";
  EXPECT_EQ(heap::block_size(100), 112u);
  EXPECT_EQ(heap::block_size(256), 256u);
  EXPECT_EQ(heap::block_size(257), 320u);
  EXPECT_EQ(heap::block_size(1000), 1024u);
  EXPECT_EQ(heap::block_size(small_threshold), small_threshold);
  EXPECT_EQ(heap::block_size(small_threshold + 1), 1280u) << "the large tier's first class";
  EXPECT_EQ(heap::block_size(5000), 5120u);
  EXPECT_EQ(heap::block_size(5000, page_size), 8192u) << "5120-byte blocks are only 1 KiB-aligned";
  EXPECT_EQ(heap::block_size(1100, page_size), 4096u);
  EXPECT_EQ(heap::block_size(run_limit - 1), run_limit);
  EXPECT_EQ(heap::block_size(run_limit), heap::tree_block_size(run_limit)) << "64 KiB and more: the trees";
  EXPECT_EQ(heap::block_size(16, 64), 64u);
  EXPECT_EQ(heap::block_size(16, 1024), 1024u);
  EXPECT_EQ(heap::block_size(16, page_size), page_size) << "a page-aligned small request takes the page class";
  // Every class: blocks aligned as it says, inside the run after the header, at most 1/16 wasted
  // (1/8 in the large tier; the small tier's page class aside: it exists for alignment only).
  for (std::size_t c = 0; c < heap::size_class_count(); ++c) {
    const auto& ci = runs_impl::classes[c];
    EXPECT_EQ(ci.size % ci.align, 0u) << ci.size;
    EXPECT_GE(ci.offset, sizeof(runs_impl::run_header)) << ci.size;
    EXPECT_TRUE(std::has_single_bit(ci.run)) << ci.size;
    EXPECT_EQ(ci.run, c < runs_impl::small_class_count ? run : runs_impl::large_run_bytes_for(ci.size)) << ci.size;
    EXPECT_LE(ci.offset + std::size_t{ci.count} * ci.size, ci.run) << ci.size;
    if (ci.size <= small_threshold) {
      EXPECT_LE(run - std::size_t{ci.count} * ci.size, run / 16) << ci.size;
    } else if (c >= runs_impl::small_class_count) {
      EXPECT_LE(ci.run - std::size_t{ci.count} * ci.size, ci.run / 8) << ci.size;
    }
    if (c > 0 && c != runs_impl::small_class_count) {
      EXPECT_GT(ci.size, runs_impl::classes[c - 1].size);
    }
  }
}

TEST(heap_classes, the_run_of_a_block_follows_from_its_size) {
  // deallocate(p, size) finds the run header by masking p with run_bytes_for(size): whatever
  // class an alignment bumps a request to must have that run size, and hold the request.
  for (std::size_t size = 0; size < run_limit; ++size) {
    for (std::size_t align = 1; align <= page_size; align *= 2) {
      const auto& ci = runs_impl::classes[runs_impl::class_of(size, align)];
      ASSERT_GE(ci.size, size) << size << " aligned to " << align;
      ASSERT_GE(ci.align, align) << size << " aligned to " << align;
      ASSERT_EQ(ci.run, runs_impl::run_bytes_for(size)) << size << " aligned to " << align;
    }
  }
}

TEST(heap_classes, a_large_tier_block_is_neither_written_on_allocation_nor_on_free) {
  // The point of the large tier: a 1-64 KiB block costs a bit in its run's header page, and
  // none of its own pages is written (no tracking fault, no dirty page): a tree block would
  // get a free-block node written at the tail of each carve and at its start on free.
  arena a(std::size_t{8} << 20, std::size_t{8} << 20);
  heap h = a.h();
  const std::size_t size = 20000;  // the 20480-byte class, 1 MiB runs
  const auto& ci = runs_impl::classes[runs_impl::class_of(size, 16)];
  void* first = h.allocate(size, 16);
  ASSERT_NE(first, nullptr);
  const auto run_start = reinterpret_cast<std::uintptr_t>(first) & ~(std::uintptr_t{ci.run} - 1);
  // The run's other blocks (past its header page): marked, then allocated, freed, allocated.
  auto* data = static_cast<std::byte*>(first) + ci.size;
  const std::size_t data_bytes = (ci.count - 1) * std::size_t{ci.size};
  ASSERT_EQ(ci.offset, page_size) << "the 20480-byte class starts on the run's second page";
  ASSERT_LE(reinterpret_cast<std::uintptr_t>(data + data_bytes), reinterpret_cast<std::uintptr_t>(h.end()));
  fill(data, data_bytes, 0xc3);
  std::vector<void*> v;
  for (std::size_t i = 1; i < ci.count - 1; ++i) v.push_back(h.allocate(size, 16));
  for (void* p : v) EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) & ~(std::uintptr_t{ci.run} - 1), run_start);
  for (std::size_t i = 0; i < v.size(); i += 2) h.deallocate(v[i], size);
  for (std::size_t i = 0; i < v.size(); i += 2) v[i] = h.allocate(size + 100, 8);
  for (void* p : v) h.deallocate(p, size);
  EXPECT_EQ(first_mismatch(data, data_bytes, 0xc3), data_bytes) << "the heap wrote into a block's pages";
  EXPECT_EQ(h.class_stats(runs_impl::class_of(size, 16)).blocks, 1u);
  ASSERT_NO_THROW(h.check());
  h.deallocate(first, size);
  EXPECT_EQ(h.class_stats(runs_impl::class_of(size, 16)).runs, 0u) << "an empty run goes back to the trees";
  EXPECT_EQ(free_list(a), (block_list{{0, std::size_t{8} << 20}}));
  ASSERT_NO_THROW(h.check());
}

TEST(heap_classes, consecutive_allocations_are_adjacent_and_counted) {
  arena a(1 << 20);
  heap h = a.h();
  std::vector<std::byte*> v;
  for (int i = 0; i < 100; ++i) v.push_back(static_cast<std::byte*>(h.allocate(100, 8)));
  for (int i = 1; i < 100; ++i) EXPECT_EQ(v[i] - v[i - 1], 112) << i;
  EXPECT_EQ(h.allocated_bytes(), 100 * 112u);
  const std::size_t c = runs_impl::class_of(100, 8);
  const auto st = h.class_stats(c);
  EXPECT_EQ(st.block_size, 112u);
  EXPECT_EQ(st.runs, 1u);
  EXPECT_EQ(st.blocks, 100u);
  EXPECT_EQ(st.bytes, 100 * 112u);
  EXPECT_EQ(h.class_stats(0).runs, 0u);
  EXPECT_EQ(h.allocated_bytes() + h.free_bytes() + h.spare_bytes(), offset_of(a, h.end()));
  ASSERT_NO_THROW(h.check());
  // A freed block is the next one given (lowest free first).
  h.deallocate(v[40], 100);
  EXPECT_EQ(h.allocate(97, 1), v[40]);
  for (auto* p : v) h.deallocate(p, 100);
  EXPECT_EQ(h.class_stats(c).runs, 0u) << "an empty run goes back to the trees";
  EXPECT_EQ(h.allocated_bytes(), 0u);
  EXPECT_EQ(h.spare_bytes(), 0u);
  EXPECT_EQ(free_list(a), (block_list{{0, 1 << 20}}));
  ASSERT_NO_THROW(h.check());
}

TEST(heap_classes, zero_size_blocks_are_distinct) {
  arena a(1 << 20);
  heap h = a.h();
  void* p = h.allocate(0, 1);
  void* r = h.allocate(0, 1);
  ASSERT_NE(p, nullptr);
  ASSERT_NE(r, nullptr);
  EXPECT_NE(p, r);
  EXPECT_EQ(h.allocated_bytes(), 32u);
  h.deallocate(p, 0);
  h.deallocate(r, 0);
  EXPECT_EQ(h.allocated_bytes(), 0u);
  ASSERT_NO_THROW(h.check());
}

TEST(heap_classes, runs_are_aligned_and_a_small_block_touches_no_tree) {
  arena a(1 << 20);
  heap h = a.h();
  auto* p = static_cast<std::byte*>(h.allocate(40, 8));
  const auto run_start = reinterpret_cast<std::uintptr_t>(p) & ~(run - 1);
  EXPECT_GE(run_start, reinterpret_cast<std::uintptr_t>(h.begin()));
  const std::size_t free_blocks = h.free_blocks();
  const block_list before = free_list(a);
  // The run's other blocks come without any change to the free blocks.
  const std::size_t per_run = runs_impl::classes[runs_impl::class_of(40, 8)].count;
  std::vector<void*> more;
  for (std::size_t i = 1; i < per_run; ++i) more.push_back(h.allocate(40, 8));
  EXPECT_EQ(free_list(a), before);
  EXPECT_EQ(h.free_blocks(), free_blocks);
  for (void* m : more) EXPECT_EQ(reinterpret_cast<std::uintptr_t>(m) & ~(run - 1), run_start);
  // The run is full: the next block opens a second run.
  void* next = h.allocate(40, 8);
  EXPECT_NE(reinterpret_cast<std::uintptr_t>(next) & ~(run - 1), run_start);
  EXPECT_EQ(h.class_stats(runs_impl::class_of(40, 8)).runs, 2u);
  ASSERT_NO_THROW(h.check());
  // A free into the full run makes it the one allocations come from again.
  h.deallocate(more[10], 40);
  EXPECT_EQ(h.allocate(33, 8), more[10]);
  ASSERT_NO_THROW(h.check());
}

TEST(heap_classes, alignments_up_to_a_page_are_honoured) {
  arena a(std::size_t{16} << 20, std::size_t{16} << 20);
  heap h = a.h();
  std::vector<std::tuple<void*, std::size_t>> live;
  for (std::size_t align = 1; align <= page_size; align *= 2) {
    for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{24}, std::size_t{100}, std::size_t{700},
                             small_threshold, small_threshold + 1, std::size_t{5000}, std::size_t{40000},
                             run_limit - 1}) {
      for (int k = 0; k < 3; ++k) {
        void* p = h.allocate(size, align);
        ASSERT_NE(p, nullptr) << size << " " << align;
        EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u) << size << " aligned to " << align;
        std::memset(p, 0x5a, size);
        live.emplace_back(p, size);
      }
    }
  }
  ASSERT_NO_THROW(h.check());
  for (auto& [p, size] : live) h.deallocate(p, size);
  EXPECT_EQ(h.allocated_bytes(), 0u);
  EXPECT_EQ(free_list(a), (block_list{{0, std::size_t{16} << 20}}));
}

TEST(heap_classes, a_small_request_fails_cleanly_and_growth_needed_is_enough) {
  arena a(page_size, std::size_t{1} << 20);  // too small for a run
  heap h = a.h();
  EXPECT_EQ(h.allocate(8, 8), nullptr);
  EXPECT_EQ(h.free_blocks(), 1u) << "a failed small allocation left something behind";
  EXPECT_EQ(h.allocated_bytes(), 0u);
  ASSERT_NO_THROW(h.check());
  const std::size_t g = h.growth_needed(8, 8);
  ASSERT_GT(g, 0u);
  h.grow(a.at(page_size + g));
  void* p = h.allocate(8, 8);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(h.growth_needed(8, 8), 0u);
  h.deallocate(p, 8);
  ASSERT_NO_THROW(h.check());
}

// Randomized: small and large blocks of random sizes and alignments through allocate /
// deallocate, against a model of the live blocks: alignment, no overlap, contents kept, the
// counters (per class too) and the audit, and nullptr only when growth is needed.
class heap_classes_random : public testing::TestWithParam<std::uint64_t> {};

TEST_P(heap_classes_random, matches_a_model) {
  const std::uint64_t seed = GetParam();
  std::mt19937_64 rng(seed);
  arena a(64 * 1024, std::size_t{4} << 20);
  heap h = a.h();
  struct block {
    std::size_t size, align, bs;
    std::uint8_t pattern;
  };
  std::map<std::uintptr_t, block> live;
  std::size_t live_bytes = 0, grows = 0, nulls = 0;
  const auto rand_below = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  for (int step = 0; step < 30000; ++step) {
    const std::size_t target = step < 15000 ? 3000 : 300;  // fill, then drain: runs come and go
    if (live.empty() || rand_below(100) < (live.size() < target ? 60u : 40u)) {
      const std::size_t kind = rand_below(100);
      const std::size_t size = kind < 85 ? rand_below(small_threshold + 1) : kind < 98 ? rand_below(9000) : rand_below(70000);
      const std::size_t align = rand_below(100) < 90 ? std::size_t{1} << rand_below(5) : std::size_t{1} << rand_below(13);
      const std::size_t bs = heap::block_size(size, align);
      void* p = h.allocate(size, align);
      if (p == nullptr) {
        const std::size_t g = h.growth_needed(size, align);
        ASSERT_NE(g, impossible);
        ASSERT_GT(g, 0u) << "seed " << seed << " step " << step << ": allocate failed, growth_needed says it fits";
        const std::size_t chunk = (g + 0xffff) & ~std::size_t{0xffff};
        const std::size_t used = offset_of(a, h.end());
        if (used + chunk > a.capacity()) {
          ++nulls;
          continue;
        }
        h.grow(a.at(used + chunk));
        ++grows;
        p = h.allocate(size, align);
        ASSERT_NE(p, nullptr) << "seed " << seed << " step " << step << ": allocate(" << size << ", " << align
                              << ") failed after growing by growth_needed";
      }
      const auto addr = reinterpret_cast<std::uintptr_t>(p);
      ASSERT_EQ(addr % align, 0u) << "seed " << seed << " step " << step;
      ASSERT_GE(p, h.begin());
      ASSERT_LE(addr + bs, reinterpret_cast<std::uintptr_t>(h.end()));
      const auto next = live.lower_bound(addr);
      if (next != live.end()) {
        ASSERT_GE(next->first, addr + bs) << "seed " << seed << " step " << step << ": overlap";
      }
      if (next != live.begin()) {
        const auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second.bs, addr) << "seed " << seed << " step " << step << ": overlap";
      }
      const auto pattern = static_cast<std::uint8_t>(rng());
      fill(static_cast<std::byte*>(p), size, pattern);
      live.emplace(addr, block{size, align, bs, pattern});
      live_bytes += bs;
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(rand_below(live.size())));
      auto* p = reinterpret_cast<std::byte*>(it->first);
      ASSERT_EQ(first_mismatch(p, it->second.size, it->second.pattern), it->second.size)
          << "seed " << seed << " step " << step << ": block " << static_cast<void*>(p) << " overwritten";
      h.deallocate(p, it->second.size);
      live_bytes -= it->second.bs;
      live.erase(it);
    }
    ASSERT_EQ(h.allocated_bytes(), live_bytes) << "seed " << seed << " step " << step;
    ASSERT_EQ(h.allocated_bytes() + h.free_bytes() + h.spare_bytes(), offset_of(a, h.end()))
        << "seed " << seed << " step " << step;
    if (step % 101 == 0 || step == 29999) {
      ASSERT_NO_THROW(h.check()) << "seed " << seed << " step " << step;
      std::vector<std::size_t> per_class(heap::size_class_count());
      for (const auto& [addr, b] : live)
        if (tmf::detail::served_by_runs(b.size)) ++per_class[runs_impl::class_of(b.size, b.align)];
      for (std::size_t c = 0; c < per_class.size(); ++c)
        ASSERT_EQ(h.class_stats(c).blocks, per_class[c]) << "seed " << seed << " step " << step << " class " << c;
    }
  }
  EXPECT_GT(grows, 0u);
  EXPECT_GT(nulls + grows, 0u);
  for (const auto& [addr, b] : live) {
    ASSERT_EQ(first_mismatch(reinterpret_cast<std::byte*>(addr), b.size, b.pattern), b.size);
    h.deallocate(reinterpret_cast<void*>(addr), b.size);
  }
  ASSERT_NO_THROW(h.check());
  EXPECT_EQ(h.allocated_bytes(), 0u);
  EXPECT_EQ(h.spare_bytes(), 0u);
  EXPECT_EQ(free_list(a), (block_list{{0, offset_of(a, h.end())}})) << "seed " << seed;
}

INSTANTIATE_TEST_SUITE_P(seeds, heap_classes_random, testing::Values(1, 7, 14, 20261201));

}  // namespace

// -- holes (heap_backing): freed extents reported to be punched, refilled before reuse ---------

namespace {

/// A fake file behind the heap: which pages are holes. `released` punches at once (the
/// engine waits for the commit to be durable); `reserve` fills, or fails when told to.
struct hole_model {
  std::vector<bool> hole;  // per page of the buffer
  std::uintptr_t base = 0;
  bool fail = false;
  std::size_t reserves = 0, released_bytes = 0;
  heap_impl::heap_backing backing{&reserve, &released, this, std::size_t{64} << 10};

  static bool reserve(void* ctx, std::uintptr_t b, std::uintptr_t e) noexcept {
    auto* m = static_cast<hole_model*>(ctx);
    if (m->fail) return false;
    ++m->reserves;
    for (std::uintptr_t p = b; p < e; p += page_size) m->hole[(p - m->base) / page_size] = false;
    return true;
  }
  static void released(void* ctx, std::uintptr_t b, std::uintptr_t e) noexcept {
    auto* m = static_cast<hole_model*>(ctx);
    m->released_bytes += e - b;
    for (std::uintptr_t p = b; p < e; p += page_size) m->hole[(p - m->base) / page_size] = true;
  }
  /// Whether any page overlapping [p, p+n) is a hole.
  bool any_hole(const void* p, std::size_t n) const {
    const auto a = reinterpret_cast<std::uintptr_t>(p) - base;
    for (std::size_t pg = a / page_size; pg * page_size < a + n; ++pg)
      if (hole[pg]) return true;
    return false;
  }
};

TEST(heap_holes, freed_extents_are_released_and_refilled_before_they_are_handed_out) {
  arena a(std::size_t{4} << 20);
  hole_model m;
  m.hole.assign(a.capacity() / page_size, false);
  m.base = reinterpret_cast<std::uintptr_t>(a.base());
  heap h(a.state(), &m.backing);
  std::mt19937_64 g(42);
  std::vector<std::pair<void*, std::size_t>> live;
  for (int round = 0; round < 2000; ++round) {
    if (live.empty() || g() % 3 != 0) {
      const std::size_t size = (g() % 4 == 0) ? 8 + g() % 2048 : (std::size_t{1} << 10) + g() % (std::size_t{200} << 10);
      void* p = h.allocate(size, g() % 5 == 0 ? page_size : 16);
      if (p == nullptr) continue;
      // Every node of a free block (written by the heap) and every block handed out is backed.
      ASSERT_FALSE(m.any_hole(p, size)) << "round " << round << ": a hole was handed out (" << size << " bytes)";
      std::memset(p, 0x5a, size);
      live.emplace_back(p, size);
    } else {
      const std::size_t i = g() % live.size();
      h.deallocate(live[i].first, live[i].second);
      live[i] = live.back();
      live.pop_back();
    }
    h.for_each_free_block([&](void* p, std::size_t) {
      EXPECT_FALSE(m.any_hole(p, sizeof(heap_impl::free_block))) << "a free block's node lies in a hole";
    });
    if (round % 100 == 0) {
      ASSERT_NO_THROW(h.check()) << "round " << round;
    }
  }
  EXPECT_GT(m.released_bytes, std::size_t{1} << 20) << "large frees were not released";
  EXPECT_GT(m.reserves, 0u) << "no hole was ever refilled";
  for (auto& [p, n] : live) h.deallocate(p, n);
  h.check();
  EXPECT_EQ(h.free_blocks(), 1u);
}

TEST(heap_holes, emptied_large_tier_runs_are_released_whole_and_refilled_when_reused) {
  // 1-64 KiB blocks live in runs: freeing one releases nothing while its run holds others;
  // the run's last free gives the whole run back to the trees, which report it to be punched;
  // a new run over those pages gets them allocated again before any block is handed out.
  arena a(std::size_t{8} << 20, std::size_t{8} << 20);
  hole_model m;
  m.hole.assign(a.capacity() / page_size, false);
  m.base = reinterpret_cast<std::uintptr_t>(a.base());
  heap h(a.state(), &m.backing);
  std::vector<void*> v;
  for (int i = 0; i < 75; ++i) v.push_back(h.allocate(40000, 16));  // three full 1 MiB runs of 25
  ASSERT_EQ(h.class_stats(runs_impl::class_of(40000, 16)).runs, 3u);
  for (std::size_t i = 1; i < v.size(); ++i) h.deallocate(v[i], 40000);  // v[0] keeps the first run
  EXPECT_EQ(h.class_stats(runs_impl::class_of(40000, 16)).runs, 1u);
  EXPECT_GE(m.released_bytes, 2 * (std::size_t{1} << 20) - 2 * page_size) << "the two emptied runs were not released";
  const std::size_t released = m.released_bytes;
  h.deallocate(v[0], 40000);
  EXPECT_GT(m.released_bytes, released);
  ASSERT_NO_THROW(h.check());
  // Reused: every block of the new runs is backed (the headers too: they are written).
  const std::size_t reserves = m.reserves;
  for (auto& p : v) {
    p = h.allocate(40000, 16);
    ASSERT_NE(p, nullptr);
    ASSERT_FALSE(m.any_hole(p, 40000)) << "a hole was handed out";
    ASSERT_FALSE(m.any_hole(reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(p) & ~((std::uintptr_t{1} << 20) - 1)),
                            sizeof(runs_impl::run_header)));
  }
  EXPECT_GT(m.reserves, reserves);
  for (void* p : v) h.deallocate(p, 40000);
  ASSERT_NO_THROW(h.check());
}

TEST(heap_holes, an_allocation_whose_holes_cannot_be_filled_fails_and_changes_nothing) {
  arena a(std::size_t{2} << 20);
  hole_model m;
  m.hole.assign(a.capacity() / page_size, false);
  m.base = reinterpret_cast<std::uintptr_t>(a.base());
  heap h(a.state(), &m.backing);
  void* p = h.allocate(std::size_t{1} << 20, 16);
  ASSERT_NE(p, nullptr);
  h.deallocate(p, std::size_t{1} << 20);  // merged with the rest: the whole arena released
  EXPECT_GE(m.released_bytes, (std::size_t{1} << 20) - page_size);
  const block_list before = free_list(a);
  m.fail = true;  // a full disk
  EXPECT_EQ(h.allocate(std::size_t{256} << 10, 16), nullptr);
  EXPECT_EQ(free_list(a), before);
  h.check();
  m.fail = false;
  void* q2 = h.allocate(std::size_t{256} << 10, 16);
  ASSERT_NE(q2, nullptr);
  EXPECT_FALSE(m.any_hole(q2, std::size_t{256} << 10));
  h.check();
}

}  // namespace
