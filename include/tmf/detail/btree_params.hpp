// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The parameters of tmf's B-trees: what distinguishes a map from a set (value type, key
/// extraction, moving a value out, unique or equivalent keys), whether nodes keep a copy of
/// their keys (btree_key_cache), the node layout that follows (btree_layout_for), and the
/// comparisons shared by the containers.
#ifndef TMF_DETAIL_BTREE_PARAMS_HPP
#define TMF_DETAIL_BTREE_PARAMS_HPP

#include <compare>
#include <concepts>
#include <cstddef>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include "btree_node.hpp"

namespace tmf::detail {

template <class C>
concept btree_transparent = requires { typename C::is_transparent; };

/// What distinguishes a map from a set: value type, key extraction, moving a value out.
template <class K, class V, class Compare, class Alloc, bool Multi, std::size_t NodeSize>
struct btree_map_params {
  using key_type = K;
  using mapped_type = V;
  using value_type = std::pair<const K, V>;
  using key_compare = Compare;
  using allocator_type = Alloc;
  static constexpr bool multi = Multi;
  static constexpr bool is_set = false;
  static constexpr std::size_t node_size = NodeSize;
  static const K& key(const value_type& v) noexcept { return v.first; }
  /// Builds `*dst` from `src`, moving the key too: `src` lives in the tree's own storage and
  /// is destroyed right after (the const of the key protects users, not the tree).
  template <class A>
  static void move_construct(A& a, value_type* dst, value_type& src) {
    std::allocator_traits<A>::construct(a, dst, std::move(const_cast<K&>(src.first)), std::move(src.second));
  }
  static_assert(std::is_nothrow_move_constructible_v<K> && std::is_nothrow_move_constructible_v<V>,
                "tmf::btree_map: elements move between nodes; K and V need noexcept move constructors");
};

template <class K, class Compare, class Alloc, bool Multi, std::size_t NodeSize>
struct btree_set_params {
  using key_type = K;
  using value_type = K;
  using key_compare = Compare;
  using allocator_type = Alloc;
  static constexpr bool multi = Multi;
  static constexpr bool is_set = true;
  static constexpr std::size_t node_size = NodeSize;
  static const K& key(const value_type& v) noexcept { return v; }
  template <class A>
  static void move_construct(A& a, value_type* dst, value_type& src) {
    std::allocator_traits<A>::construct(a, dst, std::move(src));
  }
  static_assert(std::is_nothrow_move_constructible_v<K>,
                "tmf::btree_set: elements move between nodes; K needs a noexcept move constructor");
};

/// Whether a tree keeps a copy of its keys in an array of their own in each node (see
/// btree_layout): for scalar keys of at most 8 bytes under std::less / std::greater, where a
/// copy orders as the original and a linear scan of a few adjacent cache lines beats a
/// binary search that misses the cache at every probe among large values.
template <class P>
inline constexpr bool btree_key_cache = [] {
  using K = typename P::key_type;
  using C = typename P::key_compare;
  constexpr bool scalar = (std::is_arithmetic_v<K> || std::is_enum_v<K> || std::is_pointer_v<K>) && sizeof(K) <= 8;
  constexpr bool plain_order = std::is_same_v<C, std::less<>> || std::is_same_v<C, std::less<K>> ||
                               std::is_same_v<C, std::greater<>> || std::is_same_v<C, std::greater<K>>;
  // A set's value is its key: a copy would only halve the node's capacity.
  return scalar && plain_order && !P::is_set;
}();

/// The node layout of a tree with parameters P.
template <class P>
using btree_layout_for =
    btree_layout<typename P::value_type, P::node_size, std::conditional_t<btree_key_cache<P>, typename P::key_type, void>>;


/// The three-way comparison std containers use: <=> when the type has it, else <.
struct btree_synth_three_way {
  template <class T, class U>
  constexpr auto operator()(const T& t, const U& u) const {
    if constexpr (std::three_way_comparable_with<T, U>) {
      return t <=> u;
    } else {
      if (t < u) return std::weak_ordering::less;
      if (u < t) return std::weak_ordering::greater;
      return std::weak_ordering::equivalent;
    }
  }
};

}  // namespace tmf::detail

#endif  // TMF_DETAIL_BTREE_PARAMS_HPP
