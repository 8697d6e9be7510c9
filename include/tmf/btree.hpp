// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// `tmf::btree_map`, `btree_set`, `btree_multimap`, `btree_multiset`: ordered containers with
/// page-sized nodes, for key-value work in a storage (and in ordinary memory).
///
/// They offer the std::map / std::set interface, with these differences (as absl::btree_map):
/// - **Iterator invalidation.** Inserting or erasing moves elements between nodes: every
///   iterator, pointer and reference into the container is invalidated by insert, emplace,
///   try_emplace, insert_or_assign (when it inserts), erase and merge. The iterator that
///   erase returns is valid: `for (it = c.begin(); it != c.end();) it = pred(*it) ? c.erase(it) : std::next(it);`
///   erases while iterating. Lookups, iteration and assigning to a mapped value invalidate nothing.
/// - Elements must be nothrow move constructible (they are relocated between nodes).
/// - No node handles (extract / insert(node_type)).
///
/// Nodes are `NodeSize` bytes (4 KiB by default, the storage page), page-aligned, allocated
/// through the container's allocator (a node holds about `NodeSize / sizeof(value_type)`
/// values), so that an insert in a storage dirties one leaf page and rarely its parents.
/// A map whose keys are scalars of up to 8 bytes (integers, enums, pointers) ordered by
/// std::less or std::greater also keeps a copy of each key in an array of its own at the
/// start of the node (`NodeSize / (sizeof(key_type) + sizeof(value_type))` values a node):
/// a lookup reads a few adjacent cache lines of keys per node instead of one line per probe.
/// With std::allocator, nodes are aligned to a cache line only (a page-aligned request costs
/// the C library about a page of padding per node); any other allocator gets page-aligned
/// nodes. The
/// container object holds the root, the first and last leaves and the size; an empty
/// container holds no node and no pointer, and nothing points outside the allocator's memory:
/// a container in a storage is valid in every process, empty or not. Lookups and iteration
/// never allocate, so readers use them without a writer; with a transparent comparator (the
/// default std::less<>) a reader looks a tmf::string key up by std::string_view.
#ifndef TMF_BTREE_HPP
#define TMF_BTREE_HPP

#include <compare>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "allocator.hpp"
#include "detail/btree_tree.hpp"

namespace tmf {

namespace detail {

/// The parts of btree_map and btree_multimap that std::map has and std::set has not.
template <class P>
class btree_map_base : public btree<P> {
  using base = btree<P>;

 public:
  using mapped_type = typename P::mapped_type;
  using typename base::const_iterator;
  using typename base::iterator;
  using typename base::key_compare;
  using typename base::key_type;
  using typename base::value_type;

  /// Compares values by their keys.
  class value_compare {
   public:
    bool operator()(const value_type& a, const value_type& b) const { return m_comp(a.first, b.first); }

   protected:
    friend class btree_map_base;
    explicit value_compare(key_compare c) : m_comp(std::move(c)) {}
    key_compare m_comp;
  };

  using base::base;
  using base::operator=;
  using base::insert;

  value_compare value_comp() const { return value_compare(this->key_comp()); }

  /// Inserts `value_type(std::forward<V>(v))`.
  template <class V>
    requires std::is_constructible_v<value_type, V&&>
  typename base::insert_return insert(V&& v) {
    return this->emplace(std::forward<V>(v));
  }
  template <class V>
    requires std::is_constructible_v<value_type, V&&>
  iterator insert(const_iterator hint, V&& v) {
    return this->emplace_hint(hint, std::forward<V>(v));
  }
};

/// The unique-key map operations: try_emplace, insert_or_assign, operator[], at.
template <class P>
class btree_unique_map_base : public btree_map_base<P> {
  using base = btree_map_base<P>;

 public:
  using typename base::const_iterator;
  using typename base::iterator;
  using typename base::key_type;
  using typename base::mapped_type;

  using base::base;
  using base::operator=;

  /// Inserts `{k, mapped_type(args...)}` if `k` is absent; otherwise changes nothing (the
  /// arguments are not moved from).
  template <class... Args>
  std::pair<iterator, bool> try_emplace(const key_type& k, Args&&... args) {
    return try_emplace_impl(k, std::forward<Args>(args)...);
  }
  template <class... Args>
  std::pair<iterator, bool> try_emplace(key_type&& k, Args&&... args) {
    return try_emplace_impl(std::move(k), std::forward<Args>(args)...);
  }
  template <class... Args>
  iterator try_emplace(const_iterator, const key_type& k, Args&&... args) {
    return try_emplace_impl(k, std::forward<Args>(args)...).first;
  }
  template <class... Args>
  iterator try_emplace(const_iterator, key_type&& k, Args&&... args) {
    return try_emplace_impl(std::move(k), std::forward<Args>(args)...).first;
  }

  /// Inserts `{k, std::forward<M>(m)}`, or assigns `m` to the mapped value of `k`.
  template <class M>
  std::pair<iterator, bool> insert_or_assign(const key_type& k, M&& m) {
    return insert_or_assign_impl(k, std::forward<M>(m));
  }
  template <class M>
  std::pair<iterator, bool> insert_or_assign(key_type&& k, M&& m) {
    return insert_or_assign_impl(std::move(k), std::forward<M>(m));
  }
  template <class M>
  iterator insert_or_assign(const_iterator, const key_type& k, M&& m) {
    return insert_or_assign_impl(k, std::forward<M>(m)).first;
  }
  template <class M>
  iterator insert_or_assign(const_iterator, key_type&& k, M&& m) {
    return insert_or_assign_impl(std::move(k), std::forward<M>(m)).first;
  }

  mapped_type& operator[](const key_type& k) { return try_emplace(k).first->second; }
  mapped_type& operator[](key_type&& k) { return try_emplace(std::move(k)).first->second; }

  /// \throws std::out_of_range if `k` is absent.
  mapped_type& at(const key_type& k) { return at_impl(*this, k); }
  const mapped_type& at(const key_type& k) const { return at_impl(*this, k); }
  template <class K>
    requires btree_transparent<typename base::key_compare>
  mapped_type& at(const K& k) {
    return at_impl(*this, k);
  }
  template <class K>
    requires btree_transparent<typename base::key_compare>
  const mapped_type& at(const K& k) const {
    return at_impl(*this, k);
  }

 private:
  template <class Self, class K>
  static auto& at_impl(Self& self, const K& k) {
    auto it = self.find(k);
    if (it == self.end()) throw std::out_of_range("tmf::btree_map::at: no such key");
    return it->second;
  }
  template <class K, class... Args>
  std::pair<iterator, bool> try_emplace_impl(K&& k, Args&&... args) {
    auto [pos, found] = this->locate_unique(k);
    if (found) return {pos, false};
    typename base::temp_value t(*this, std::piecewise_construct, std::forward_as_tuple(std::forward<K>(k)),
                                std::forward_as_tuple(std::forward<Args>(args)...));
    return {this->emplace_at(pos, t), true};
  }
  template <class K, class M>
  std::pair<iterator, bool> insert_or_assign_impl(K&& k, M&& m) {
    auto [pos, found] = this->locate_unique(k);
    if (found) {
      pos->second = std::forward<M>(m);
      return {pos, false};
    }
    typename base::temp_value t(*this, std::forward<K>(k), std::forward<M>(m));
    return {this->emplace_at(pos, t), true};
  }
};

template <class P>
class btree_set_base : public btree<P> {
  using base = btree<P>;

 public:
  using value_compare = typename base::key_compare;
  using base::base;
  using base::operator=;
  value_compare value_comp() const { return this->key_comp(); }
};

}  // namespace detail

/// An ordered map with unique keys in a B-tree of page-sized nodes (see the file comment for
/// how it differs from std::map). `Alloc` defaults to tmf::allocator; std::allocator works too.
template <class K, class V, class Compare = std::less<>, class Alloc = allocator<std::pair<const K, V>>,
          std::size_t NodeSize = 4096>
class btree_map
    : public detail::btree_unique_map_base<detail::btree_map_params<K, V, Compare, Alloc, false, NodeSize>> {
  using base = detail::btree_unique_map_base<detail::btree_map_params<K, V, Compare, Alloc, false, NodeSize>>;

 public:
  using base::base;
  using base::operator=;
};

/// An ordered map with equivalent keys allowed (std::multimap's interface; equal keys keep
/// their insertion order).
template <class K, class V, class Compare = std::less<>, class Alloc = allocator<std::pair<const K, V>>,
          std::size_t NodeSize = 4096>
class btree_multimap
    : public detail::btree_map_base<detail::btree_map_params<K, V, Compare, Alloc, true, NodeSize>> {
  using base = detail::btree_map_base<detail::btree_map_params<K, V, Compare, Alloc, true, NodeSize>>;

 public:
  using base::base;
  using base::operator=;
};

/// An ordered set with unique keys (std::set's interface; iterators are constant).
template <class K, class Compare = std::less<>, class Alloc = allocator<K>, std::size_t NodeSize = 4096>
class btree_set : public detail::btree_set_base<detail::btree_set_params<K, Compare, Alloc, false, NodeSize>> {
  using base = detail::btree_set_base<detail::btree_set_params<K, Compare, Alloc, false, NodeSize>>;

 public:
  using base::base;
  using base::operator=;
};

/// An ordered set with equivalent keys allowed (std::multiset's interface).
template <class K, class Compare = std::less<>, class Alloc = allocator<K>, std::size_t NodeSize = 4096>
class btree_multiset : public detail::btree_set_base<detail::btree_set_params<K, Compare, Alloc, true, NodeSize>> {
  using base = detail::btree_set_base<detail::btree_set_params<K, Compare, Alloc, true, NodeSize>>;

 public:
  using base::base;
  using base::operator=;
};

/// Element-wise equality (sizes first), as std::map's operator==.
template <class P>
bool operator==(const detail::btree<P>& a, const detail::btree<P>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), b.end());
}
/// Lexicographical comparison of the elements, as std::map's operator<=>.
template <class P>
auto operator<=>(const detail::btree<P>& a, const detail::btree<P>& b) {
  return std::lexicographical_compare_three_way(a.begin(), a.end(), b.begin(), b.end(), detail::btree_synth_three_way{});
}

/// Swaps the contents (allocators too when they propagate on swap).
template <class P>
void swap(detail::btree<P>& a, detail::btree<P>& b) noexcept(noexcept(a.swap(b))) {
  a.swap(b);
}

/// Erases every element for which `pred` is true; returns how many.
template <class P, class Pred>
typename detail::btree<P>::size_type erase_if(detail::btree<P>& c, Pred pred) {
  const auto before = c.size();
  for (auto it = c.begin(); it != c.end();) it = pred(*it) ? c.erase(it) : std::next(it);
  return before - c.size();
}

}  // namespace tmf

#endif  // TMF_BTREE_HPP
