// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/detail/btree_node.hpp, btree_params.hpp and btree_nodes.hpp, below the
// tree: the node layout (capacities, offsets that fit, the key copies of scalar keys), which
// trees copy their keys, the in-node search against std::lower_bound / upper_bound, and the
// structural steps (split, merge, moves between siblings) on hand-built nodes: the values
// keep their order across left sibling, separator and right sibling, counts and parent links
// are right, and every key copy equals its value's key. Typed over int and std::string values
// (trivially relocated or not), with and without key copies.
#include <tmf/detail/btree_nodes.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace td = tmf::detail;

/// Not std::less: no key copies.
struct plain_less {
  bool operator()(int a, int b) const { return a < b; }
};

template <class V, class Cmp, std::size_t NodeSize = 1024>
using params = td::btree_map_params<int, V, Cmp, std::allocator<std::pair<const int, V>>, false, NodeSize>;

struct value64 {
  char bytes[64];
};

TEST(BtreeLayout, CapacitiesAndOffsetsFit) {
  using big = td::btree_map_params<std::uint64_t, value64, std::less<>,
                                   std::allocator<std::pair<const std::uint64_t, value64>>, false, 4096>;
  using L = td::btree_layout_for<big>;
  static_assert(L::cached_keys);
  // 8-byte keys + 72-byte values: 51 per leaf, 45 per internal node (README "B-trees").
  if constexpr (sizeof(void*) == 8) {
    EXPECT_EQ(L::leaf_capacity, 51u);
    EXPECT_EQ(L::internal_capacity, 45u);
  }
  EXPECT_EQ(L::node_bytes, 4096u);
  EXPECT_GE(L::values_offset, L::keys_offset + L::leaf_capacity * sizeof(std::uint64_t));
  EXPECT_LE(L::values_offset + L::leaf_capacity * sizeof(std::pair<const std::uint64_t, value64>), L::node_bytes);
  EXPECT_LE(L::children_offset + (L::internal_capacity + 1) * sizeof(td::btree_node*), L::node_bytes);

  struct plain_less64 {
    bool operator()(std::uint64_t a, std::uint64_t b) const { return a < b; }
  };
  using uncached = td::btree_map_params<std::uint64_t, value64, plain_less64,
                                        std::allocator<std::pair<const std::uint64_t, value64>>, false, 4096>;
  using U = td::btree_layout_for<uncached>;
  static_assert(!U::cached_keys);
  EXPECT_GT(U::leaf_capacity, L::leaf_capacity) << "without key copies a leaf holds more values";
  EXPECT_EQ(U::values_offset, U::keys_offset) << "without key copies the values follow the header";

  // Values too large for 3 per internal node: the node grows to a multiple of NodeSize.
  struct huge {
    char bytes[2000];
  };
  using H = td::btree_layout_for<params<huge, std::less<>, 4096>>;
  EXPECT_GE(H::internal_capacity, 3u);
  EXPECT_EQ(H::node_bytes % 4096, 0u);
}

TEST(BtreeLayout, WhichTreesCopyTheirKeys) {
  using alloc_i = std::allocator<std::pair<const int, int>>;
  static_assert(td::btree_key_cache<td::btree_map_params<int, int, std::less<>, alloc_i, false, 4096>>);
  static_assert(td::btree_key_cache<td::btree_map_params<int, int, std::greater<int>, alloc_i, true, 4096>>);
  static_assert(!td::btree_key_cache<td::btree_map_params<int, int, plain_less, alloc_i, false, 4096>>);
  static_assert(!td::btree_key_cache<td::btree_set_params<int, std::less<>, std::allocator<int>, false, 4096>>);
  using alloc_s = std::allocator<std::pair<const std::string, int>>;
  static_assert(!td::btree_key_cache<td::btree_map_params<std::string, int, std::less<>, alloc_s, false, 4096>>);
  SUCCEED();
}

// ---------------------------------------------------------------------------------------------
// Hand-built nodes

template <class P>
struct node_kit {
  using nodes = td::btree_nodes<P>;
  using layout = typename nodes::layout;
  using node = td::btree_node;
  using value_type = typename P::value_type;
  using mapped = typename P::mapped_type;

  typename nodes::value_alloc alloc;
  std::vector<node*> made;

  ~node_kit() {
    for (node* n : made) {
      nodes::destroy_values(alloc, n);
      ::operator delete(static_cast<void*>(n), std::align_val_t{64});
    }
  }
  static mapped value_of(int k) {
    if constexpr (std::is_same_v<mapped, std::string>) {
      return std::string(40, 'v') + std::to_string(k);  // on the heap: ASan sees a double relocation
    } else {
      return k * 10;
    }
  }
  node* make(bool leaf, const std::vector<int>& keys = {}) {
    void* mem = ::operator new(layout::node_bytes, std::align_val_t{64});
    node* n = ::new (mem) node{nullptr, 0, leaf};
    made.push_back(n);
    for (int k : keys) {
      std::allocator_traits<typename nodes::value_alloc>::construct(alloc, nodes::slot(n, n->count), k, value_of(k));
      ++n->count;
    }
    nodes::refresh_keys(n, 0, n->count);
    return n;
  }
  /// The keys of `n` in order; checks each value and key copy.
  static std::vector<int> keys(const node* n) {
    std::vector<int> out;
    for (std::size_t i = 0; i < n->count; ++i) {
      const value_type& v = layout::values(n)[i];
      EXPECT_EQ(v.second, value_of(v.first)) << "value at index " << i << " does not belong to its key";
      EXPECT_EQ(nodes::key_at(n, i), v.first) << "key copy at index " << i;
      out.push_back(v.first);
    }
    return out;
  }
  /// A parent holding `seps` with children `kids` (seps.size() + 1 of them).
  node* parent_of(const std::vector<int>& seps, const std::vector<node*>& kids) {
    node* p = make(false, seps);
    for (std::size_t i = 0; i < kids.size(); ++i) layout::set_child(p, i, kids[i]);
    return p;
  }
  /// The keys of left, the separator after it in the parent, right.
  static std::vector<int> concat(const node* left, const node* parent, std::size_t at, const node* right) {
    std::vector<int> all = keys(left);
    all.push_back(keys(parent).at(at));
    for (int k : keys(right)) all.push_back(k);
    return all;
  }
};

std::vector<int> range(int from, int n, int step = 1) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(from + i * step);
  return v;
}

template <class P>
class BtreeNodes : public ::testing::Test {};

using node_params = ::testing::Types<params<int, std::less<>>, params<int, plain_less>, params<std::string, std::less<>>,
                                     params<std::string, plain_less>>;
TYPED_TEST_SUITE(BtreeNodes, node_params);

TYPED_TEST(BtreeNodes, SearchMatchesLowerAndUpperBound) {
  node_kit<TypeParam> kit;
  using nodes = typename node_kit<TypeParam>::nodes;
  const std::size_t cap = node_kit<TypeParam>::layout::leaf_capacity;
  std::vector<int> keys;
  for (std::size_t i = 0; i < cap; ++i) keys.push_back(static_cast<int>(i / 3) * 2);  // repeats, gaps
  const auto* n = kit.make(true, keys);
  const typename TypeParam::key_compare comp;
  for (int k = -1; k <= keys.back() + 1; ++k) {
    EXPECT_EQ(nodes::template search<false>(comp, n, k),
              static_cast<std::size_t>(std::lower_bound(keys.begin(), keys.end(), k) - keys.begin()))
        << "lower bound of " << k;
    EXPECT_EQ(nodes::template search<true>(comp, n, k),
              static_cast<std::size_t>(std::upper_bound(keys.begin(), keys.end(), k) - keys.begin()))
        << "upper bound of " << k;
  }
  const auto* empty = kit.make(true);
  EXPECT_EQ(nodes::template search<false>(comp, empty, 5), 0u);
}

TYPED_TEST(BtreeNodes, SplitKeepsOrderAtEveryInsertPosition) {
  using kit_t = node_kit<TypeParam>;
  const std::size_t cap = kit_t::layout::leaf_capacity;
  for (std::size_t pos : {std::size_t{0}, std::size_t{1}, cap / 2, cap - 1, cap}) {
    kit_t kit;
    const std::vector<int> full = range(10, static_cast<int>(cap), 2);
    auto* n = kit.make(true, full);
    auto* p = kit.parent_of({}, {n});
    auto* dest = kit.make(true);
    kit_t::nodes::split(kit.alloc, n, pos, dest);
    ASSERT_EQ(p->count, 1u) << "insert position " << pos;
    EXPECT_EQ(kit_t::layout::child(p, 0), n);
    EXPECT_EQ(kit_t::layout::child(p, 1), dest);
    EXPECT_EQ(dest->parent, p);
    EXPECT_EQ(kit_t::concat(n, p, 0, dest), full) << "insert position " << pos;
    if (pos == cap) {
      EXPECT_EQ(dest->count, 0u) << "appending leaves the left node full";
    }
    if (pos == 0) {
      EXPECT_EQ(n->count, 0u) << "prepending leaves the right node full";
    }
  }
}

TYPED_TEST(BtreeNodes, SplitOfAnInternalNodeMovesChildren) {
  using kit_t = node_kit<TypeParam>;
  using layout = typename kit_t::layout;
  kit_t kit;
  const std::size_t cap = layout::internal_capacity;
  std::vector<td::btree_node*> kids;
  for (std::size_t i = 0; i <= cap; ++i) kids.push_back(kit.make(true, {static_cast<int>(i * 10 + 1)}));
  std::vector<int> seps;
  for (std::size_t i = 0; i < cap; ++i) seps.push_back(static_cast<int>(i * 10 + 5));
  auto* n = kit.parent_of(seps, kids);
  auto* p = kit.parent_of({}, {n});
  auto* dest = kit.make(false);
  kit_t::nodes::split(kit.alloc, n, cap / 2, dest);
  EXPECT_EQ(n->count + dest->count + 1u, cap);
  for (std::size_t i = 0; i <= n->count; ++i) EXPECT_EQ(layout::child(n, i)->parent, n);
  for (std::size_t i = 0; i <= dest->count; ++i) {
    EXPECT_EQ(layout::child(dest, i)->parent, dest);
    EXPECT_EQ(layout::child(dest, i), kids[n->count + 1 + i]);
  }
  EXPECT_EQ(kit_t::concat(n, p, 0, dest), seps);
}

TYPED_TEST(BtreeNodes, MergeTakesTheSeparatorAndTheRightSibling) {
  using kit_t = node_kit<TypeParam>;
  kit_t kit;
  auto* a = kit.make(true, range(0, 3));
  auto* l = kit.make(true, range(10, 4));
  auto* r = kit.make(true, range(20, 5));
  auto* p = kit.parent_of({5, 15}, {a, l, r});
  const auto want = kit_t::concat(l, p, 1, r);
  kit_t::nodes::merge(kit.alloc, l, r);
  EXPECT_EQ(r->count, 0u);
  EXPECT_EQ(kit_t::keys(l), want);
  EXPECT_EQ(kit_t::keys(p), std::vector<int>{5});
  EXPECT_EQ(kit_t::layout::child(p, 1), l);
}

TYPED_TEST(BtreeNodes, MovesBetweenSiblingsKeepOrder) {
  using kit_t = node_kit<TypeParam>;
  for (std::size_t k : {std::size_t{1}, std::size_t{3}}) {
    kit_t kit;
    auto* l = kit.make(true, range(0, 6));
    auto* r = kit.make(true, range(20, 2));
    auto* p = kit.parent_of({10}, {l, r});
    const auto want = kit_t::concat(l, p, 0, r);
    kit_t::nodes::move_left_to_right(kit.alloc, k, l, r);
    EXPECT_EQ(l->count, 6u - k);
    EXPECT_EQ(r->count, 2u + k);
    EXPECT_EQ(kit_t::concat(l, p, 0, r), want) << k << " moved left to right";
    kit_t::nodes::move_right_to_left(kit.alloc, k, l, r);
    EXPECT_EQ(l->count, 6u);
    EXPECT_EQ(kit_t::concat(l, p, 0, r), want) << k << " moved back";
  }
}

}  // namespace
