// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of tmf::detail::heap's defences: check() reporting every kind of corrupted free-block
// tree and run (not crashing), deallocate() misuse terminating with a message (death tests,
// for tree blocks and for blocks of size-class runs), and the
// heap inside a storage, audited after every transaction. The rest: heap_test.cpp.
#include <tmf/detail/heap.hpp>
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "heap_test_support.hpp"
#include "test_support.hpp"

namespace {

using namespace tmf_test::heap_tests;  // NOLINT(google-build-using-namespace)

// check() must report corruption (not crash) and name it.
void expect_corrupted(heap h, const char* what_part, const char* context) {
  try {
    h.check();
    ADD_FAILURE() << context << ": check() accepted a corrupted heap";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::corrupted) << context;
    const std::string what = e.what();
    EXPECT_NE(what.find("heap"), std::string::npos) << context << ": " << what;
    EXPECT_NE(what.find(what_part), std::string::npos) << context << ": " << what;
  }
}

heap_impl::free_block& block_at(std::byte* p) { return *reinterpret_cast<heap_impl::free_block*>(p); }

class heap_corruption : public testing::Test {
 protected:
  heap_corruption() : m_arena(64 * q) {}
  void SetUp() override {
    // Enough free blocks for a tree of a few levels: 1q holes at 2q, 6q, 10q, ...
    block_list layout;
    for (std::size_t off = 2 * q; off + q <= 64 * q; off += 4 * q) layout.emplace_back(off, q);
    make_layout(m_arena, layout);
  }
  arena m_arena;
};

TEST_F(heap_corruption, size_not_a_multiple_of_the_quantum) {
  block_at(m_arena.at(10 * q)).m_size = q + 8;
  expect_corrupted(m_arena.h(), "not a positive multiple", "size q+8");
  EXPECT_THROW(m_arena.h().check(), tmf::error);
}

TEST_F(heap_corruption, size_zero) {
  block_at(m_arena.at(10 * q)).m_size = 0;
  expect_corrupted(m_arena.h(), "not a positive multiple", "size 0");
}

TEST_F(heap_corruption, size_overlapping_the_next_block) {
  block_at(m_arena.at(10 * q)).m_size = 5 * q;
  expect_corrupted(m_arena.h(), "overlaps free block", "size 5q");
}

TEST_F(heap_corruption, size_touching_the_next_block) {
  block_at(m_arena.at(10 * q)).m_size = 4 * q;
  expect_corrupted(m_arena.h(), "not coalesced", "size 4q");
}

TEST_F(heap_corruption, size_past_the_arena_end) {
  block_at(m_arena.at(62 * q)).m_size = 4 * q;
  expect_corrupted(m_arena.h(), "past the arena end", "last block too big");
}

TEST_F(heap_corruption, size_grown_into_allocated_memory) {
  // Consistent trees, but the bytes no longer add up.
  block_at(m_arena.at(62 * q)).m_size = 2 * q;  // the last block: still in size order
  expect_corrupted(m_arena.h(), "free byte counter", "size 2q");
}

TEST_F(heap_corruption, sizes_swapped_break_the_size_order) {
  // Two blocks far apart exchange sizes: the address tree is fine, the size tree is not.
  arena a(64 * q);
  make_layout(a, {{2 * q, q}, {20 * q, 3 * q}});
  block_at(a.at(2 * q)).m_size = 3 * q;
  block_at(a.at(20 * q)).m_size = q;
  expect_corrupted(a.h(), "size tree out of order", "swapped sizes");
}

TEST_F(heap_corruption, node_overwritten_with_garbage) {
  for (std::size_t off = 2 * q; off + q <= 64 * q; off += 4 * q) {
    arena a(64 * q);
    block_list layout;
    for (std::size_t o = 2 * q; o + q <= 64 * q; o += 4 * q) layout.emplace_back(o, q);
    make_layout(a, layout);
    std::memset(a.at(off), 0xab, sizeof(heap_impl::free_block));
    expect_corrupted(a.h(), "", ("garbage node at offset " + std::to_string(off)).c_str());
  }
}

TEST_F(heap_corruption, node_zeroed) {
  std::memset(m_arena.at(30 * q), 0, sizeof(heap_impl::free_block));
  expect_corrupted(m_arena.h(), "", "zeroed node");
}

TEST_F(heap_corruption, link_into_allocated_memory) {
  using traits = heap_impl::addr_tree::node_traits;
  using value_traits = heap_impl::addr_tree::value_traits;
  // Point some node's missing child at an allocated block (filled with zeros).
  std::memset(m_arena.at(0), 0, q);
  bool done = false;
  for (std::size_t off = 2 * q; off + q <= 64 * q && !done; off += 4 * q) {
    auto n = value_traits::to_node_ptr(block_at(m_arena.at(off)));
    if (traits::get_left(n) == nullptr) {
      traits::set_left(n, value_traits::to_node_ptr(block_at(m_arena.at(0))));
      done = true;
    }
  }
  ASSERT_TRUE(done);
  expect_corrupted(m_arena.h(), "address tree", "link into allocated memory");
}

TEST_F(heap_corruption, link_outside_the_arena) {
  using traits = heap_impl::size_tree::node_traits;
  using value_traits = heap_impl::size_tree::value_traits;
  static heap_impl::free_block outside;
  bool done = false;
  for (std::size_t off = 2 * q; off + q <= 64 * q && !done; off += 4 * q) {
    auto n = value_traits::to_node_ptr(block_at(m_arena.at(off)));
    if (traits::get_right(n) == nullptr) {
      traits::set_right(n, value_traits::to_node_ptr(outside));
      done = true;
    }
  }
  ASSERT_TRUE(done);
  expect_corrupted(m_arena.h(), "outside the arena", "link outside the arena");
}

TEST_F(heap_corruption, cycle) {
  using traits = heap_impl::addr_tree::node_traits;
  using value_traits = heap_impl::addr_tree::value_traits;
  // A leaf's child link back to the root.
  // Walk up to the root: the node whose parent (the header) has it as parent.
  auto root = value_traits::to_node_ptr(block_at(m_arena.at(2 * q)));
  while (traits::get_parent(traits::get_parent(root)) != root) root = traits::get_parent(root);
  bool done = false;
  for (std::size_t off = 2 * q; off + q <= 64 * q && !done; off += 4 * q) {
    auto n = value_traits::to_node_ptr(block_at(m_arena.at(off)));
    if (traits::get_left(n) == nullptr && traits::get_right(n) == nullptr) {
      traits::set_left(n, root);
      done = true;
    }
  }
  ASSERT_TRUE(done);
  expect_corrupted(m_arena.h(), "address tree", "cycle");
}

TEST_F(heap_corruption, colour_flipped) {
  using traits = heap_impl::size_tree::node_traits;
  using value_traits = heap_impl::size_tree::value_traits;
  // Make every node red: red-red or black-height violations must be found.
  for (std::size_t off = 2 * q; off + q <= 64 * q; off += 4 * q) {
    traits::set_color(value_traits::to_node_ptr(block_at(m_arena.at(off))), traits::red());
  }
  expect_corrupted(m_arena.h(), "size tree", "all red");
}

TEST_F(heap_corruption, black_height) {
  using traits = heap_impl::size_tree::node_traits;
  using value_traits = heap_impl::size_tree::value_traits;
  // A red node turned black: no red-red violation, but one path gains a black node.
  bool done = false;
  for (std::size_t off = 2 * q; off + q <= 64 * q && !done; off += 4 * q) {
    auto n = value_traits::to_node_ptr(block_at(m_arena.at(off)));
    if (traits::get_color(n) == traits::red()) {
      traits::set_color(n, traits::black());
      done = true;
    }
  }
  ASSERT_TRUE(done) << "no red node in the tree";
  expect_corrupted(m_arena.h(), "black heights", "red node turned black");
}

TEST_F(heap_corruption, header_leftmost) {
  using traits = heap_impl::addr_tree::node_traits;
  using value_traits = heap_impl::addr_tree::value_traits;
  // The header (in heap_state) is the root's parent; point its leftmost link at another node.
  auto root = value_traits::to_node_ptr(block_at(m_arena.at(2 * q)));
  while (traits::get_parent(traits::get_parent(root)) != root) root = traits::get_parent(root);
  traits::set_left(traits::get_parent(root), value_traits::to_node_ptr(block_at(m_arena.at(6 * q))));
  expect_corrupted(m_arena.h(), "leftmost", "header's leftmost link");
}

// Misuse of deallocate terminates with a message naming tmf, the address and the problem.
class heap_death : public testing::Test {
 protected:
  heap_death() : m_arena(64 * q) {}
  arena m_arena;
};

TEST_F(heap_death, double_free) {
  heap h = m_arena.h();
  void* p = h.tree_allocate(100, 8);
  void* keep = h.tree_allocate(100, 8);  // so p does not merge into the top block
  ASSERT_NE(keep, nullptr);
  h.tree_deallocate(p, 100);
  EXPECT_DEATH(h.tree_deallocate(p, 100),
               "tmf: invalid deallocate\\(0x.+, 100\\): block overlaps free block");
  EXPECT_NO_THROW(h.check());  // the parent is untouched
}

TEST_F(heap_death, double_free_merged_into_the_top) {
  heap h = m_arena.h();
  void* p = h.tree_allocate(100, 8);
  h.tree_deallocate(p, 100);
  EXPECT_DEATH(h.tree_deallocate(p, 100), "tmf: .*overlaps free block");
}

TEST_F(heap_death, free_inside_a_free_block) {
  heap h = m_arena.h();
  make_layout(m_arena, {{8 * q, 8 * q}});
  EXPECT_DEATH(h.tree_deallocate(m_arena.at(10 * q), q), "tmf: .*overlaps free block");
  EXPECT_DEATH(h.tree_deallocate(m_arena.at(6 * q), 3 * q), "tmf: .*overlaps free block")
      << "a block running into the next free block";
  EXPECT_DEATH(h.tree_deallocate(m_arena.at(7 * q), 1000), "tmf: .*overlaps free block")
      << "spanning a free block";
}

TEST_F(heap_death, free_outside_the_arena) {
  heap h = m_arena.h();
  alignas(64) static std::byte elsewhere[64];
  EXPECT_DEATH(h.tree_deallocate(elsewhere, 64), "tmf: invalid deallocate.*outside the arena");
  EXPECT_DEATH(h.tree_deallocate(m_arena.at(64 * q), 1), "tmf: .*outside the arena") << "at the end";
  EXPECT_DEATH(h.tree_deallocate(nullptr, 1), "tmf: .*outside the arena") << "null";
}

TEST_F(heap_death, misaligned_free) {
  heap h = m_arena.h();
  void* p = h.tree_allocate(200, 8);
  EXPECT_DEATH(h.tree_deallocate(static_cast<std::byte*>(p) + 8, 100), "tmf: .*not aligned");
}

TEST_F(heap_death, free_past_the_arena_end) {
  heap h = m_arena.h();
  ASSERT_NE(h.tree_allocate(64 * q, 1), nullptr);
  EXPECT_DEATH(h.tree_deallocate(m_arena.at(60 * q), 5 * q), "tmf: .*past the arena end");
}

// ---------------------------------------------------------------------------------------
// The same heap inside a storage: allocations go through tmf::allocator in write
// transactions, some committed and some rolled back; after each step the storage's audit
// (header + both trees) passes, the heap's accounting matches the live blocks exactly, and a
// new process finds every committed block's contents.

// ---------------------------------------------------------------------------------------------
// Runs: misuse of a small free is fatal, corrupted run state is reported.

namespace runs_impl = tmf::detail::runs_impl;

runs_impl::run_header& run_of(void* p) {
  return *reinterpret_cast<runs_impl::run_header*>(reinterpret_cast<std::uintptr_t>(p) & ~(runs_impl::run_bytes - 1));
}

std::size_t run_of_class(std::size_t size) { return runs_impl::class_of(size, 8); }

class run_death : public testing::Test {
 protected:
  run_death() : m_arena(1 << 20) {}
  arena m_arena;
};

TEST_F(run_death, double_free_in_a_live_run) {
  heap h = m_arena.h();
  void* p = h.allocate(100, 8);
  ASSERT_NE(h.allocate(100, 8), nullptr);  // keeps the run alive
  h.deallocate(p, 100);
  EXPECT_DEATH(h.deallocate(p, 100), "tmf: invalid deallocate\\(0x.+, 100\\): block not in use \\(double free\\?\\)");
}

TEST_F(run_death, double_free_after_the_run_went_back) {
  heap h = m_arena.h();
  void* p = h.allocate(100, 8);
  h.deallocate(p, 100);
  EXPECT_DEATH(h.deallocate(p, 100), "tmf: invalid deallocate.*no size-class run holds this address");
}

TEST_F(run_death, interior_pointer) {
  heap h = m_arena.h();
  auto* p = static_cast<std::byte*>(h.allocate(100, 8));
  EXPECT_DEATH(h.deallocate(p + 16, 100), "tmf: .*address is not a block of its run .*112-byte blocks");
  EXPECT_DEATH(h.deallocate(reinterpret_cast<void*>(&run_of(p)), 100), "tmf: .*not a block of its run");
}

TEST_F(run_death, size_beyond_the_class) {
  heap h = m_arena.h();
  void* p = h.allocate(16, 8);
  EXPECT_DEATH(h.deallocate(p, 200), "tmf: .*size exceeds its run's class");
}

TEST_F(run_death, a_tree_block_freed_as_small) {
  heap h = m_arena.h();
  void* big = h.allocate(100000, 8);
  std::memset(big, 0, 100000);
  EXPECT_DEATH(h.deallocate(big, 100), "tmf: .*no size-class run holds this address");
  EXPECT_DEATH(h.deallocate(big, 5000), "tmf: .*no size-class run holds this address");
}

TEST_F(run_death, a_large_tier_block_freed_with_a_size_of_another_run_size) {
  // A 5000-byte block lives in a 256 KiB run: freed as 100 bytes (16 KiB runs) or 40000
  // (1 MiB runs), the header found by masking is not a run of that size.
  heap h = m_arena.h();
  void* p = h.allocate(5000, 8);
  ASSERT_EQ(runs_impl::classes[run_of_class(5000)].run, std::size_t{256} << 10);
  ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % (std::size_t{256} << 10), runs_impl::classes[run_of_class(5000)].offset);
  EXPECT_DEATH(h.deallocate(p, 100), "tmf: .*no size-class run holds this address");
  EXPECT_DEATH(h.deallocate(p, 40000), "tmf: .*no size-class run holds this address");
  EXPECT_DEATH(h.deallocate(p, 6000), "tmf: .*size exceeds its run's class");
  h.deallocate(p, 4097);
  ASSERT_NO_THROW(h.check());
}

TEST_F(run_death, large_tier_double_free) {
  heap h = m_arena.h();
  void* p = h.allocate(3000, 8);
  void* keep = h.allocate(3000, 8);
  h.deallocate(p, 3000);
  EXPECT_DEATH(h.deallocate(p, 3000), "tmf: .*block not in use \\(double free\\?\\).*3072-byte blocks");
  h.deallocate(keep, 3000);
  EXPECT_DEATH(h.deallocate(keep, 3000), "tmf: .*no size-class run holds this address");
}

TEST_F(run_death, outside_the_arena) {
  heap h = m_arena.h();
  ASSERT_NE(h.allocate(8, 8), nullptr);
  alignas(16) static unsigned char elsewhere[64];
  EXPECT_DEATH(h.deallocate(elsewhere, 8), "tmf: .*outside the arena");
}

class run_corruption : public testing::Test {
 protected:
  run_corruption() : m_arena(1 << 20) {}
  void SetUp() override {
    heap h = m_arena.h();
    // A full run of 16-byte blocks and a partial one (m_small[1099] is its block 87), then
    // 500-byte ones.
    for (int i = 0; i < 1100; ++i) m_small.push_back(h.allocate(16, 8));
    ASSERT_EQ(runs_impl::classes[0].count, 1012u);
    for (int i = 0; i < 5; ++i) m_small.push_back(h.allocate(500, 8));
    ASSERT_NO_THROW(h.check());
  }
  arena m_arena;
  std::vector<void*> m_small;
};

TEST_F(run_corruption, bit_cleared) {
  run_of(m_small[1099]).m_bits[1] &= ~(std::uint64_t{1} << 23);
  expect_corrupted(m_arena.h(), "its bitmap", "bit cleared");
  run_of(m_small[1099]).m_bits[1] |= std::uint64_t{1} << 23;
  run_of(m_small[0]).m_bits[0] &= ~std::uint64_t{1};
  expect_corrupted(m_arena.h(), "below its search hint", "bit cleared in a full run");
}

TEST_F(run_corruption, padding_bit_cleared) {
  auto& r = run_of(m_small[0]);
  r.m_bits[runs_impl::bitmap_words - 1] = 0;
  expect_corrupted(m_arena.h(), "bits past its", "padding bit cleared");
}

TEST_F(run_corruption, magic_overwritten) {
  run_of(m_small.back()).m_magic ^= 1;
  expect_corrupted(m_arena.h(), "bad magic number", "magic overwritten");
}

TEST_F(run_corruption, class_changed) {
  run_of(m_small.back()).m_class = 0;
  expect_corrupted(m_arena.h(), "says class", "class changed");
}

TEST_F(run_corruption, use_count_changed) {
  run_of(m_small[0]).m_used -= 1;
  expect_corrupted(m_arena.h(), "blocks in use", "use count changed");
}

TEST_F(run_corruption, back_link) {
  run_of(m_small[0]).m_prev = &run_of(m_small.back());
  expect_corrupted(m_arena.h(), "back link", "back link");
}

TEST_F(run_corruption, list_link_into_a_free_block) {
  heap h = m_arena.h();
  void* free_at = nullptr;
  h.for_each_free_block([&](void* p, std::size_t size) {
    if (size >= 2 * runs_impl::run_bytes) free_at = p;
  });
  ASSERT_NE(free_at, nullptr);
  const auto aligned = (reinterpret_cast<std::uintptr_t>(free_at) + runs_impl::run_bytes - 1) & ~(runs_impl::run_bytes - 1);
  run_of(m_small.back()).m_next = reinterpret_cast<runs_impl::run_header*>(aligned);
  expect_corrupted(h, "overlaps free block", "link into a free block");
}

TEST_F(run_corruption, list_link_misaligned_or_outside) {
  run_of(m_small.back()).m_next = reinterpret_cast<runs_impl::run_header*>(&run_of(m_small.back()).m_bits[1]);
  expect_corrupted(m_arena.h(), "not aligned to its size", "misaligned link");
  // Aligned by hand: a PE object file aligns static data to at most 8 KiB.
  static unsigned char elsewhere_bytes[2 * runs_impl::run_bytes];
  unsigned char* elsewhere = elsewhere_bytes + (runs_impl::run_bytes - reinterpret_cast<std::uintptr_t>(elsewhere_bytes) % runs_impl::run_bytes) % runs_impl::run_bytes;
  run_of(m_small.back()).m_next = reinterpret_cast<runs_impl::run_header*>(elsewhere);
  expect_corrupted(m_arena.h(), "outside the arena", "link outside");
}

TEST_F(run_corruption, cycle) {
  auto& r = run_of(m_small[0]);  // the full run, alone in its list
  r.m_next = &r;
  expect_corrupted(m_arena.h(), "back link", "cycle");
}

TEST_F(run_corruption, class_counter) {
  heap h = m_arena.h();
  const std::size_t c = run_of(m_small[0]).m_class;
  ASSERT_EQ(h.class_stats(c).blocks, 1100u);
  // The class table is the tree block holding table_magic (nothing else here does).
  runs_impl::class_table* t = nullptr;
  for (std::size_t off = 0; off < (1 << 20) && t == nullptr; off += q) {
    std::uint64_t v;
    std::memcpy(&v, m_arena.at(off), sizeof v);
    if (v == runs_impl::table_magic) t = reinterpret_cast<runs_impl::class_table*>(m_arena.at(off));
  }
  ASSERT_NE(t, nullptr);
  t->m_class[c].m_blocks += 1;
  expect_corrupted(h, "class counts", "class counter");
  t->m_class[c].m_blocks -= 1;
  ASSERT_NO_THROW(h.check());
  t->m_magic = 0;
  expect_corrupted(h, "class table", "table magic");
}

class large_run_corruption : public testing::Test {
 protected:
  large_run_corruption() : m_arena(std::size_t{8} << 20, std::size_t{8} << 20) {}
  void SetUp() override {
    heap h = m_arena.h();
    // Two 1 MiB runs of 40960-byte blocks (25 a run: one full, one partial) and one 128 KiB
    // run of 3072-byte blocks.
    for (int i = 0; i < 30; ++i) m_big.push_back(h.allocate(40000, 8));
    ASSERT_EQ(runs_impl::classes[run_of_class(40000)].count, 25u);
    for (int i = 0; i < 3; ++i) m_mid.push_back(h.allocate(3000, 8));
    ASSERT_NO_THROW(h.check());
  }
  static runs_impl::run_header& run_at(void* p, std::size_t size) {
    return *reinterpret_cast<runs_impl::run_header*>(reinterpret_cast<std::uintptr_t>(p) &
                                                     ~(runs_impl::run_bytes_for(size) - 1));
  }
  runs_impl::class_table& table() {
    for (std::size_t off = 0; off < (std::size_t{8} << 20); off += q) {
      std::uint64_t v;
      std::memcpy(&v, m_arena.at(off), sizeof v);
      if (v == runs_impl::table_magic) return *reinterpret_cast<runs_impl::class_table*>(m_arena.at(off));
    }
    ADD_FAILURE() << "no class table";
    std::abort();
  }
  arena m_arena;
  std::vector<void*> m_big, m_mid;
};

TEST_F(large_run_corruption, a_link_aligned_to_a_small_run_but_not_to_its_own_size) {
  auto& r = run_at(m_big.back(), 40000);
  r.m_next = reinterpret_cast<runs_impl::run_header*>(r.address() + 16 * runs_impl::run_bytes);
  expect_corrupted(m_arena.h(), "not aligned to its size", "a 1 MiB run's link 256 KiB in");
}

TEST_F(large_run_corruption, class_changed_to_one_of_another_run_size) {
  run_at(m_mid.back(), 3000).m_class = static_cast<std::uint16_t>(run_of_class(40000));
  expect_corrupted(m_arena.h(), "says class", "class changed");
}

TEST_F(large_run_corruption, a_run_inside_another_run) {
  // A well-formed 128 KiB run header forged inside a live 1 MiB run (in its class's list,
  // with its counters): only the overlap gives it away.
  heap h = m_arena.h();
  auto& real = run_at(m_mid.back(), 3000);
  auto& big = run_at(m_big.front(), 40000);
  const std::uintptr_t at = big.address() + (std::size_t{512} << 10);  // 128 KiB-aligned, inside
  auto* forged = reinterpret_cast<runs_impl::run_header*>(at);
  std::memcpy(static_cast<void*>(forged), &real, sizeof real);
  forged->m_self = forged;
  forged->m_prev = &real;
  forged->m_next = nullptr;
  real.m_next = forged;
  auto& cs = table().m_class[real.m_class];
  cs.m_runs += 1;
  cs.m_blocks += real.m_used;
  expect_corrupted(h, "overlaps run", "a run inside another");
}

struct heap_root {
  struct block {
    unsigned char* p;
    std::size_t size;
    std::size_t align;
    unsigned char fill;
  };
  block blocks[512] = {};
  std::size_t count = 0;
};

std::size_t live_bytes(const heap_root& r) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < r.count; ++i) n += tmf::detail::heap::block_size(r.blocks[i].size, r.blocks[i].align);
  return n;
}

bool block_intact(const heap_root::block& b) {
  for (std::size_t k = 0; k < b.size; ++k)
    if (b.p[k] != static_cast<unsigned char>(b.fill + k)) return false;
  return true;
}

TEST(heap_in_storage, random_transactions_keep_both_trees_consistent) {
  tmf_test::scoped_path path;
  tmf::options o;
  o.sync = tmf::durability::no_sync;
  std::mt19937_64 rng(20261121);
  std::size_t baseline = 0;  // bytes allocated besides the blocks (the Root)
  {
    tmf::storage<heap_root> s(path, o);
    baseline = s.stats().allocated_bytes;
    for (int step = 0; step < 400; ++step) {
      auto w = s.write();
      auto a = w.get_allocator<unsigned char>();
      heap_root& r = *w;
      const std::size_t ops = 1 + rng() % 12;
      for (std::size_t k = 0; k < ops; ++k) {
        if (r.count > 0 && (r.count == 512 || rng() % 3 == 0)) {
          const std::size_t i = rng() % r.count;
          ASSERT_TRUE(block_intact(r.blocks[i])) << "step " << step << ": block " << i << " damaged before free";
          std::allocator_traits<decltype(a)>::deallocate(a, r.blocks[i].p, r.blocks[i].size);
          r.blocks[i] = r.blocks[--r.count];
        } else {
          const std::size_t size = rng() % 4 == 0 ? rng() % 70000 : rng() % 600;
          const std::size_t align = std::size_t{1} << (rng() % 13);  // 1 .. 4096
          // Through the engine for an arbitrary alignment (tmf::allocator<T> asks alignof(T)).
          void* p = tmf::detail::find_engine(s.address())->allocate(size, align);
          ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u) << "step " << step << ": alignment " << align;
          heap_root::block b{static_cast<unsigned char*>(p), size, align, static_cast<unsigned char>(rng())};
          for (std::size_t j = 0; j < size; ++j) b.p[j] = static_cast<unsigned char>(b.fill + j);
          r.blocks[r.count++] = b;
        }
      }
      ASSERT_EQ(s.stats().allocated_bytes, baseline + live_bytes(r)) << "step " << step << ": heap accounting";
      const bool keep = rng() % 4 != 0;
      if (keep) w.commit(); else w.rollback();
      ASSERT_NO_THROW(s.check()) << "step " << step << (keep ? " after commit" : " after rollback");
      ASSERT_EQ(s.stats().allocated_bytes, baseline + live_bytes(*w)) << "step " << step << ": accounting after "
                                                                       << (keep ? "commit" : "rollback");
    }
  }
  int rc = tmf_test::run_in_child(tmf_test::by_value([path = tmf_test::child_path(path.path()), o, baseline] {
    tmf::storage<heap_root> s(path.path(), o);
    s.check();
    auto r = s.read();
    for (std::size_t i = 0; i < r->count; ++i)
      if (!block_intact(r->blocks[i])) return 1;
    return s.stats().allocated_bytes == baseline + live_bytes(*r) ? 0 : 2;
  }));
  EXPECT_EQ(rc, 0) << "a new process found a damaged block (1) or wrong accounting (2)";
}

}  // namespace
