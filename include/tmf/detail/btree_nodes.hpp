// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Node-level algorithms of tmf's B-trees: moving values within and between nodes (with the
/// key copies of btree_layout kept in step), the in-node search, and the three structural
/// steps, split, merge and the rebalancing of two siblings through their parent.
///
/// Stateless: each function takes the allocator (to relocate values) or the comparator it
/// needs. Nothing here allocates or frees a node, nor knows the tree's root, size or
/// leftmost and rightmost leaves; btree_tree.hpp does. Every function is noexcept: values
/// are nothrow move constructible (btree_params.hpp checks it).
#ifndef TMF_DETAIL_BTREE_NODES_HPP
#define TMF_DETAIL_BTREE_NODES_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <type_traits>

#include "btree_node.hpp"
#include "btree_params.hpp"

namespace tmf::detail {

template <class P>
struct btree_nodes {
  using layout = btree_layout_for<P>;
  using node = btree_node;
  using key_type = typename P::key_type;
  using value_type = typename P::value_type;
  using key_compare = typename P::key_compare;
  using value_alloc = typename std::allocator_traits<typename P::allocator_type>::template rebind_alloc<value_type>;
  using value_traits = std::allocator_traits<value_alloc>;
  static constexpr bool trivial_values =
      std::is_trivially_copy_constructible_v<value_type> && std::is_trivially_destructible_v<value_type>;

  static value_type* slot(node* n, std::size_t i) noexcept { return layout::values(n) + i; }

  /// Moves the value at `src` into the raw slot `dst`; `src` is then raw.
  static void relocate(value_alloc& a, value_type* dst, value_type* src) noexcept {
    if constexpr (trivial_values) {
      std::memcpy(static_cast<void*>(dst), static_cast<const void*>(src), sizeof(value_type));
    } else {
      P::move_construct(a, dst, *src);
      value_traits::destroy(a, src);
    }
  }
  /// Relocates `n` values from `src` to `dst`; the ranges may overlap.
  static void move_values(value_alloc& a, value_type* dst, value_type* src, std::size_t n) noexcept {
    if (n == 0 || dst == src) return;
    if constexpr (trivial_values) {
      std::memmove(static_cast<void*>(dst), static_cast<const void*>(src), n * sizeof(value_type));
    } else if (std::less<>{}(dst, src)) {
      for (std::size_t i = 0; i < n; ++i) relocate(a, dst + i, src + i);
    } else {
      for (std::size_t i = n; i-- > 0;) relocate(a, dst + i, src + i);
    }
  }
  /// Destroys the values of `n` (not its children's).
  static void destroy_values(value_alloc& a, node* n) noexcept {
    if constexpr (!std::is_trivially_destructible_v<value_type>)
      for (std::size_t i = 0; i < n->count; ++i) value_traits::destroy(a, slot(n, i));
  }

  // The key copies (layout::cached_keys): keys(n)[i] is a copy of the key of value i of n.
  // Every change of a node's values updates them: shift_keys along with a shift, set_key and
  // refresh_keys after values arrive.
  static void set_key(node* n, std::size_t i) noexcept {
    if constexpr (layout::cached_keys) layout::keys(n)[i] = P::key(layout::values(n)[i]);
  }
  static void refresh_keys(node* n, std::size_t from, std::size_t to) noexcept {
    if constexpr (layout::cached_keys)
      for (std::size_t i = from; i < to; ++i) layout::keys(n)[i] = P::key(layout::values(n)[i]);
  }
  /// Moves `k` keys of `n` from index `from` to index `to` (the ranges may overlap).
  static void shift_keys(node* n, std::size_t to, std::size_t from, std::size_t k) noexcept {
    if constexpr (layout::cached_keys)
      if (k != 0) std::memmove(layout::keys(n) + to, layout::keys(n) + from, k * sizeof(typename layout::key_slot));
  }
  /// The key of value `i` of `n`: its copy when there is one (the values' cache line is not read).
  static const key_type& key_at(const node* n, std::size_t i) noexcept {
    if constexpr (layout::cached_keys) {
      return layout::keys(n)[i];
    } else {
      return P::key(layout::values(n)[i]);
    }
  }

  /// First index in `n` whose key is not less than `k` (Upper: greater than `k`).
  template <bool Upper, class K>
  static std::size_t search(const key_compare& comp, const node* n, const K& k) {
    if constexpr (layout::cached_keys) {
      // Binary steps down to 32 keys (4 cache lines of 8-byte keys), then a branch-free count
      // of the keys below `k`: its loads are independent, so their cache misses overlap.
      const auto* keys = layout::keys(n);
      std::size_t lo = 0, hi = n->count;
      while (hi - lo > 32) {
        const std::size_t mid = (lo + hi) / 2;
        if (Upper ? !comp(k, keys[mid]) : comp(keys[mid], k)) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      std::size_t below = 0;
      for (std::size_t i = lo; i < hi; ++i) below += static_cast<std::size_t>(Upper ? !comp(k, keys[i]) : comp(keys[i], k));
      return lo + below;
    } else {
      const value_type* v = layout::values(n);
      std::size_t lo = 0, hi = n->count;
      while (lo < hi) {
        const std::size_t mid = (lo + hi) / 2;
        if (Upper ? !comp(k, P::key(v[mid])) : comp(P::key(v[mid]), k)) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      return lo;
    }
  }

  /// Moves the upper part of the full node `n` into the new, empty node `dest` and its median
  /// into the parent (which has room); dest becomes the child after n. `insert_pos` is where
  /// a value is about to go: appending at either end leaves the other side full, so that
  /// sorted insertions fill nodes.
  static void split(value_alloc& a, node* n, std::size_t insert_pos, node* dest) noexcept {
    const std::size_t c = n->count;
    const std::size_t dest_count = insert_pos == 0 ? c - 1 : insert_pos == layout::capacity(n) ? 0 : c / 2;
    const std::size_t left = c - dest_count;  // values staying in n, the median included
    move_values(a, slot(dest, 0), slot(n, left), dest_count);
    dest->count = static_cast<std::uint16_t>(dest_count);
    node* parent = n->parent;
    const std::size_t at = layout::position(n);
    // The median goes up into the parent at `at`; dest becomes the parent's child at + 1.
    move_values(a, slot(parent, at + 1), slot(parent, at), parent->count - at);
    layout::move_children(parent, at + 2, parent, at + 1, parent->count - at);
    relocate(a, slot(parent, at), slot(n, left - 1));
    ++parent->count;
    layout::set_child(parent, at + 1, dest);
    n->count = static_cast<std::uint16_t>(left - 1);
    if (!n->leaf) layout::move_children(dest, 0, n, left, dest_count + 1);
    refresh_keys(dest, 0, dest->count);
    refresh_keys(parent, at, parent->count);
  }

  /// Moves the separator and all of `right` into `left` (they must fit) and removes both
  /// from the parent; `right` is left empty, for the caller to free.
  static void merge(value_alloc& a, node* left, node* right) noexcept {
    node* parent = left->parent;
    const std::size_t at = layout::position(left);
    const std::size_t old_count = left->count;
    relocate(a, slot(left, left->count), slot(parent, at));
    move_values(a, slot(left, left->count + 1u), slot(right, 0), right->count);
    if (!left->leaf) layout::move_children(left, left->count + 1u, right, 0, right->count + 1u);
    left->count = static_cast<std::uint16_t>(left->count + 1u + right->count);
    right->count = 0;
    refresh_keys(left, old_count, left->count);
    // Remove the separator and the right child from the parent.
    move_values(a, slot(parent, at), slot(parent, at + 1), parent->count - at - 1u);
    layout::move_children(parent, at + 1, parent, at + 2, parent->count - at - 1u);
    shift_keys(parent, at, at + 1, parent->count - at - 1u);
    --parent->count;
  }

  /// Moves `k` values (k >= 1) from the front of `right` through the parent to `left`.
  static void move_right_to_left(value_alloc& a, std::size_t k, node* left, node* right) noexcept {
    node* parent = left->parent;
    const std::size_t at = layout::position(left);
    relocate(a, slot(left, left->count), slot(parent, at));
    move_values(a, slot(left, left->count + 1u), slot(right, 0), k - 1);
    relocate(a, slot(parent, at), slot(right, k - 1));
    move_values(a, slot(right, 0), slot(right, k), right->count - k);
    if (!left->leaf) {
      layout::move_children(left, left->count + 1u, right, 0, k);
      layout::move_children(right, 0, right, k, right->count - k + 1u);
    }
    left->count = static_cast<std::uint16_t>(left->count + k);
    right->count = static_cast<std::uint16_t>(right->count - k);
    refresh_keys(left, left->count - k, left->count);
    refresh_keys(right, 0, right->count);
    set_key(parent, at);
  }

  /// Moves `k` values (k >= 1) from the back of `left` through the parent to `right`.
  static void move_left_to_right(value_alloc& a, std::size_t k, node* left, node* right) noexcept {
    node* parent = left->parent;
    const std::size_t at = layout::position(left);
    move_values(a, slot(right, k), slot(right, 0), right->count);
    relocate(a, slot(right, k - 1), slot(parent, at));
    move_values(a, slot(right, 0), slot(left, left->count - k + 1u), k - 1);
    relocate(a, slot(parent, at), slot(left, left->count - k));
    if (!left->leaf) {
      layout::move_children(right, k, right, 0, right->count + 1u);
      layout::move_children(right, 0, left, left->count - k + 1u, k);
    }
    left->count = static_cast<std::uint16_t>(left->count - k);
    right->count = static_cast<std::uint16_t>(right->count + k);
    refresh_keys(right, 0, right->count);
    set_key(parent, at);
  }
};

}  // namespace tmf::detail

#endif  // TMF_DETAIL_BTREE_NODES_HPP
