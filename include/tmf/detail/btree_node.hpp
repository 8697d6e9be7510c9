// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The node layout of tmf's B-trees: one block of `node_bytes` (a multiple of the page size,
/// page-aligned), a small header, then the values, then (internal nodes) the child links.
#ifndef TMF_DETAIL_BTREE_NODE_HPP
#define TMF_DETAIL_BTREE_NODE_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <type_traits>

namespace tmf::detail {

/// The header at the start of every node. Leaves and internal nodes have the same size; an
/// internal node's child links follow its values.
struct btree_node {
  btree_node* parent;   ///< nullptr at the root
  std::uint16_t count;  ///< values held
  bool leaf;
  // No index among the parent's children: keeping one would make every split or merge write
  // to all the siblings to its right (each a page of the storage). position() finds it.
};

/// Sizes and offsets of a node holding `Value`s in blocks of NodeSize bytes (a power of two).
///
/// With `Key` not void (small scalar keys, see btree_key_cache), a node also keeps a copy of
/// each value's key in an array of its own, before the values: a search reads a few adjacent
/// cache lines of keys instead of one line per probe among the values. The key array has
/// room for leaf_capacity keys in every node (internal nodes use the first
/// internal_capacity), so that the values start at the same offset in leaves and internal
/// nodes.
template <class Value, std::size_t NodeSize, class Key = void>
struct btree_layout {
  static_assert(NodeSize >= 64 && (NodeSize & (NodeSize - 1)) == 0, "tmf::btree: NodeSize must be a power of two >= 64");

  static constexpr bool cached_keys = !std::is_void_v<Key>;
  using key_slot = std::conditional_t<cached_keys, Key, unsigned char>;
  static constexpr std::size_t key_bytes = cached_keys ? sizeof(key_slot) : 0;

  static constexpr std::size_t round_up(std::size_t v, std::size_t a) noexcept { return (v + a - 1) / a * a; }
  static constexpr std::size_t keys_offset = round_up(sizeof(btree_node), alignof(key_slot));
  /// Where the values start when the key array holds `n` keys.
  static constexpr std::size_t values_offset_for(std::size_t n) noexcept {
    return round_up(keys_offset + n * key_bytes, alignof(Value));
  }

  static constexpr std::size_t leaf_capacity_of(std::size_t bytes) noexcept {
    std::size_t n = (bytes - keys_offset) / (key_bytes + sizeof(Value));
    while (n > 0 && values_offset_for(n) + n * sizeof(Value) > bytes) --n;
    return n;
  }
  static constexpr std::size_t internal_capacity_of(std::size_t bytes) noexcept {
    const std::size_t values_at = values_offset_for(leaf_capacity_of(bytes));
    std::size_t n = leaf_capacity_of(bytes);
    while (n > 0 && round_up(values_at + n * sizeof(Value), alignof(btree_node*)) + (n + 1) * sizeof(btree_node*) > bytes)
      --n;
    return n;
  }
  /// NodeSize, or the least multiple of it that holds at least 3 values in an internal node.
  static constexpr std::size_t node_bytes = [] {
    std::size_t b = NodeSize;
    while (internal_capacity_of(b) < 3) b += NodeSize;
    return b;
  }();
  static constexpr std::size_t node_align = NodeSize < 4096 ? NodeSize : 4096;
  static constexpr std::size_t leaf_capacity = leaf_capacity_of(node_bytes) < 65535 ? leaf_capacity_of(node_bytes) : 65535;
  static constexpr std::size_t internal_capacity =
      internal_capacity_of(node_bytes) < 65535 ? internal_capacity_of(node_bytes) : 65535;
  static constexpr std::size_t values_offset = values_offset_for(cached_keys ? leaf_capacity : 0);
  static constexpr std::size_t children_offset =
      round_up(values_offset + internal_capacity * sizeof(Value), alignof(btree_node*));
  static_assert(values_offset + leaf_capacity * sizeof(Value) <= node_bytes);
  static_assert(children_offset + (internal_capacity + 1) * sizeof(btree_node*) <= node_bytes);

  /// The key array (cached_keys only).
  static key_slot* keys(btree_node* n) noexcept {
    return reinterpret_cast<key_slot*>(reinterpret_cast<unsigned char*>(n) + keys_offset);
  }
  static const key_slot* keys(const btree_node* n) noexcept {
    return reinterpret_cast<const key_slot*>(reinterpret_cast<const unsigned char*>(n) + keys_offset);
  }

  static Value* values(btree_node* n) noexcept {
    return reinterpret_cast<Value*>(reinterpret_cast<unsigned char*>(n) + values_offset);
  }
  static const Value* values(const btree_node* n) noexcept {
    return reinterpret_cast<const Value*>(reinterpret_cast<const unsigned char*>(n) + values_offset);
  }
  static btree_node** children(btree_node* n) noexcept {
    return reinterpret_cast<btree_node**>(reinterpret_cast<unsigned char*>(n) + children_offset);
  }
  static btree_node* child(const btree_node* n, std::size_t i) noexcept {
    return reinterpret_cast<btree_node* const*>(reinterpret_cast<const unsigned char*>(n) + children_offset)[i];
  }
  static std::size_t capacity(const btree_node* n) noexcept { return n->leaf ? leaf_capacity : internal_capacity; }
  /// Fewest values a non-root node should hold after an erase (B-tree half fill).
  static std::size_t min_count(const btree_node* n) noexcept { return capacity(n) / 2; }

  /// The index of `n` (not the root) among its parent's children: a scan of the parent's
  /// links, which reads and writes nothing else.
  static std::size_t position(const btree_node* n) noexcept {
    const btree_node* p = n->parent;
    btree_node* const* c =
        reinterpret_cast<btree_node* const*>(reinterpret_cast<const unsigned char*>(p) + children_offset);
    std::size_t i = 0;
    while (c[i] != n) ++i;
    return i;
  }
  /// Makes `c` child `i` of `n`.
  static void set_child(btree_node* n, std::size_t i, btree_node* c) noexcept {
    children(n)[i] = c;
    if (c->parent != n) c->parent = n;  // no store (no dirty page) when it stays
  }
  /// Moves `k` child links of `src` from `from` to `dst` at `to` (regions may overlap when
  /// src == dst); children that change node get their parent link fixed.
  static void move_children(btree_node* dst, std::size_t to, btree_node* src, std::size_t from, std::size_t k) noexcept {
    std::memmove(children(dst) + to, children(src) + from, k * sizeof(btree_node*));
    if (dst != src)
      for (std::size_t i = to; i < to + k; ++i) children(dst)[i]->parent = dst;
  }
};

}  // namespace tmf::detail

#endif  // TMF_DETAIL_BTREE_NODE_HPP
