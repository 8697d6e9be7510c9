// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of tmf::detail::heap's defences: check() reporting every kind of corrupted free-block
// tree (not crashing), deallocate() misuse terminating with a message (death tests), and the
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
  void* p = h.allocate(100, 8);
  void* keep = h.allocate(100, 8);  // so p does not merge into the top block
  ASSERT_NE(keep, nullptr);
  h.deallocate(p, 100);
  EXPECT_DEATH(h.deallocate(p, 100),
               "tmf: invalid deallocate\\(0x[0-9a-f]+, 100\\): block overlaps free block");
  EXPECT_NO_THROW(h.check());  // the parent is untouched
}

TEST_F(heap_death, double_free_merged_into_the_top) {
  heap h = m_arena.h();
  void* p = h.allocate(100, 8);
  h.deallocate(p, 100);
  EXPECT_DEATH(h.deallocate(p, 100), "tmf: .*overlaps free block");
}

TEST_F(heap_death, free_inside_a_free_block) {
  heap h = m_arena.h();
  make_layout(m_arena, {{8 * q, 8 * q}});
  EXPECT_DEATH(h.deallocate(m_arena.at(10 * q), q), "tmf: .*overlaps free block");
  EXPECT_DEATH(h.deallocate(m_arena.at(6 * q), 3 * q), "tmf: .*overlaps free block")
      << "a block running into the next free block";
  EXPECT_DEATH(h.deallocate(m_arena.at(7 * q), 1000), "tmf: .*overlaps free block")
      << "spanning a free block";
}

TEST_F(heap_death, free_outside_the_arena) {
  heap h = m_arena.h();
  alignas(64) static std::byte elsewhere[64];
  EXPECT_DEATH(h.deallocate(elsewhere, 64), "tmf: invalid deallocate.*outside the arena");
  EXPECT_DEATH(h.deallocate(m_arena.at(64 * q), 1), "tmf: .*outside the arena") << "at the end";
  EXPECT_DEATH(h.deallocate(nullptr, 1), "tmf: .*outside the arena") << "null";
}

TEST_F(heap_death, misaligned_free) {
  heap h = m_arena.h();
  void* p = h.allocate(200, 8);
  EXPECT_DEATH(h.deallocate(static_cast<std::byte*>(p) + 8, 100), "tmf: .*not aligned");
}

TEST_F(heap_death, free_past_the_arena_end) {
  heap h = m_arena.h();
  ASSERT_NE(h.allocate(64 * q, 1), nullptr);
  EXPECT_DEATH(h.deallocate(m_arena.at(60 * q), 5 * q), "tmf: .*past the arena end");
}

// ---------------------------------------------------------------------------------------
// The same heap inside a storage: allocations go through tmf::allocator in write
// transactions, some committed and some rolled back; after each step the storage's audit
// (header + both trees) passes, the heap's accounting matches the live blocks exactly, and a
// new process finds every committed block's contents.

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
  for (std::size_t i = 0; i < r.count; ++i) n += tmf::detail::heap::block_size(r.blocks[i].size);
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
  int rc = tmf_test::run_in_child([&] {
    tmf::storage<heap_root> s(path.path(), o);
    s.check();
    auto r = s.read();
    for (std::size_t i = 0; i < r->count; ++i)
      if (!block_intact(r->blocks[i])) return 1;
    return s.stats().allocated_bytes == baseline + live_bytes(*r) ? 0 : 2;
  });
  EXPECT_EQ(rc, 0) << "a new process found a damaged block (1) or wrong accounting (2)";
}

}  // namespace
