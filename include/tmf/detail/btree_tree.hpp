// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The B-tree behind tmf::btree_map, btree_set, btree_multimap and btree_multiset.
///
/// A classic B-tree (values in internal nodes too, as in absl::btree_map) whose nodes are
/// page-sized blocks from the container's allocator. The container object holds the root,
/// the leftmost and rightmost leaves and the size; an empty tree holds no node and no
/// pointer at all, so it is valid in a storage after a restart. Nothing points outside the
/// allocator's memory and the container object.
#ifndef TMF_DETAIL_BTREE_TREE_HPP
#define TMF_DETAIL_BTREE_TREE_HPP

#include <algorithm>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "../error.hpp"
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

template <class P>
class btree;

/// A position in a tree: a node and an index in it. The end iterator is one past the last
/// value of the rightmost leaf (or a null node in an empty tree).
template <class P, bool Const>
class btree_iterator {
  using layout = btree_layout_for<P>;
  friend class btree<P>;
  friend class btree_iterator<P, !Const>;

 public:
  using iterator_category = std::bidirectional_iterator_tag;
  using iterator_concept = std::bidirectional_iterator_tag;
  using value_type = typename P::value_type;
  using difference_type = std::ptrdiff_t;
  using reference = std::conditional_t<Const, const value_type&, value_type&>;
  using pointer = std::conditional_t<Const, const value_type*, value_type*>;

  btree_iterator() noexcept = default;
  /// iterator -> const_iterator.
  template <bool C = Const, std::enable_if_t<C, int> = 0>
  btree_iterator(const btree_iterator<P, false>& other) noexcept : m_node(other.m_node), m_pos(other.m_pos) {}

  reference operator*() const noexcept { return layout::values(m_node)[m_pos]; }
  pointer operator->() const noexcept { return layout::values(m_node) + m_pos; }

  btree_iterator& operator++() noexcept {
    if (m_node->leaf && ++m_pos < static_cast<int>(m_node->count)) return *this;
    increment_slow();
    return *this;
  }
  btree_iterator operator++(int) noexcept {
    btree_iterator t = *this;
    ++*this;
    return t;
  }
  btree_iterator& operator--() noexcept {
    if (m_node->leaf && --m_pos >= 0) return *this;
    decrement_slow();
    return *this;
  }
  btree_iterator operator--(int) noexcept {
    btree_iterator t = *this;
    --*this;
    return t;
  }

  friend bool operator==(const btree_iterator& a, const btree_iterator& b) noexcept {
    return a.m_node == b.m_node && a.m_pos == b.m_pos;
  }

 private:
  btree_iterator(btree_node* n, int pos) noexcept : m_node(n), m_pos(pos) {}

  void increment_slow() noexcept {
    if (m_node->leaf) {  // m_pos == count: climb to the first ancestor with a value to the right
      const btree_iterator save = *this;
      while (m_pos == static_cast<int>(m_node->count) && m_node->parent != nullptr) {
        m_pos = static_cast<int>(layout::position(m_node));
        m_node = m_node->parent;
      }
      if (m_pos == static_cast<int>(m_node->count)) *this = save;  // it was the last value: end()
    } else {  // the leftmost value of the subtree to the right
      m_node = layout::child(m_node, static_cast<std::size_t>(m_pos) + 1);
      while (!m_node->leaf) m_node = layout::child(m_node, 0);
      m_pos = 0;
    }
  }
  void decrement_slow() noexcept {
    if (m_node->leaf) {  // m_pos == -1
      const btree_iterator save = *this;
      while (m_pos < 0 && m_node->parent != nullptr) {
        m_pos = static_cast<int>(layout::position(m_node)) - 1;
        m_node = m_node->parent;
      }
      if (m_pos < 0) *this = save;
    } else {  // the rightmost value of the subtree to the left
      m_node = layout::child(m_node, static_cast<std::size_t>(m_pos));
      while (!m_node->leaf) m_node = layout::child(m_node, m_node->count);
      m_pos = static_cast<int>(m_node->count) - 1;
    }
  }

  btree_node* m_node = nullptr;
  int m_pos = 0;
};

/// The tree and everything the four containers share.
template <class P>
class btree {
 public:
  using key_type = typename P::key_type;
  using value_type = typename P::value_type;
  using key_compare = typename P::key_compare;
  using allocator_type = typename P::allocator_type;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using reference = value_type&;
  using const_reference = const value_type&;
  using pointer = typename std::allocator_traits<allocator_type>::pointer;
  using const_pointer = typename std::allocator_traits<allocator_type>::const_pointer;
  using iterator = btree_iterator<P, P::is_set>;
  using const_iterator = btree_iterator<P, true>;
  using reverse_iterator = std::reverse_iterator<iterator>;
  using const_reverse_iterator = std::reverse_iterator<const_iterator>;
  using insert_return = std::conditional_t<P::multi, iterator, std::pair<iterator, bool>>;

  /// Values per leaf and per internal node.
  static constexpr std::size_t leaf_capacity = btree_layout_for<P>::leaf_capacity;
  static constexpr std::size_t internal_capacity = btree_layout_for<P>::internal_capacity;
  /// Bytes of one node (the page size, or a multiple for very large values).
  static constexpr std::size_t node_bytes = btree_layout_for<P>::node_bytes;
  /// Whether each node keeps a copy of its keys (scalar keys; see btree_key_cache).
  static constexpr bool cached_keys = btree_layout_for<P>::cached_keys;

 protected:
  using layout = btree_layout_for<P>;
  using node = btree_node;
  using alloc_traits = std::allocator_traits<allocator_type>;
  using value_alloc = typename alloc_traits::template rebind_alloc<value_type>;
  using value_traits = std::allocator_traits<value_alloc>;
  /// Nodes from std::allocator are aligned to a cache line, not to a page: an over-aligned
  /// request of a page costs glibc's memalign about a page of padding per node (twice the
  /// memory, twice the page faults). Every other allocator (tmf's: a node is a page of the
  /// file, so that an insert dirties one page) gets page-aligned nodes.
  static constexpr std::size_t block_align =
      std::is_same_v<allocator_type, std::allocator<value_type>> && layout::node_align > 64 ? 64 : layout::node_align;
  struct alignas(block_align) block {
    unsigned char bytes[layout::node_bytes];
  };
  using block_alloc = typename alloc_traits::template rebind_alloc<block>;
  using block_traits = std::allocator_traits<block_alloc>;
  static_assert(std::is_pointer_v<typename block_traits::pointer>,
                "tmf::btree: allocators with fancy pointers are not supported");
  static_assert(std::is_same_v<typename alloc_traits::value_type, value_type>,
                "tmf::btree: the allocator's value_type must be the container's value_type");
  static constexpr bool trivial_values =
      std::is_trivially_copy_constructible_v<value_type> && std::is_trivially_destructible_v<value_type>;

 public:
  // -------------------------------------------------------------------------------------------
  // Construction

  btree() : btree(key_compare()) {}
  explicit btree(const key_compare& comp, const allocator_type& alloc = allocator_type())
      : m_comp(comp), m_alloc(alloc) {}
  explicit btree(const allocator_type& alloc) : m_comp(), m_alloc(alloc) {}
  template <class InputIt>
  btree(InputIt first, InputIt last, const key_compare& comp = key_compare(), const allocator_type& alloc = allocator_type())
      : m_comp(comp), m_alloc(alloc) {
    insert(first, last);
  }
  template <class InputIt>
  btree(InputIt first, InputIt last, const allocator_type& alloc) : btree(first, last, key_compare(), alloc) {}
  btree(std::initializer_list<value_type> il, const key_compare& comp = key_compare(),
        const allocator_type& alloc = allocator_type())
      : btree(il.begin(), il.end(), comp, alloc) {}
  btree(std::initializer_list<value_type> il, const allocator_type& alloc) : btree(il.begin(), il.end(), key_compare(), alloc) {}

  btree(const btree& other)
      : m_comp(other.m_comp), m_alloc(alloc_traits::select_on_container_copy_construction(other.m_alloc)) {
    copy_from(other);
  }
  btree(const btree& other, const std::type_identity_t<allocator_type>& alloc) : m_comp(other.m_comp), m_alloc(alloc) {
    copy_from(other);
  }
  btree(btree&& other) noexcept : m_comp(other.m_comp), m_alloc(std::move(other.m_alloc)) { steal(other); }
  btree(btree&& other, const std::type_identity_t<allocator_type>& alloc) : m_comp(other.m_comp), m_alloc(alloc) {
    if (m_alloc == other.m_alloc) {
      steal(other);
    } else {
      move_elements_from(other);
    }
  }

  btree& operator=(const btree& other) {
    if (this == &other) return *this;
    clear();
    if constexpr (alloc_traits::propagate_on_container_copy_assignment::value) m_alloc = other.m_alloc;
    m_comp = other.m_comp;
    copy_from(other);
    return *this;
  }
  btree& operator=(btree&& other) noexcept(alloc_traits::propagate_on_container_move_assignment::value ||
                                           alloc_traits::is_always_equal::value) {
    if (this == &other) return *this;
    clear();
    m_comp = other.m_comp;
    if constexpr (alloc_traits::propagate_on_container_move_assignment::value) {
      m_alloc = std::move(other.m_alloc);
      steal(other);
    } else if (m_alloc == other.m_alloc) {
      steal(other);
    } else {
      move_elements_from(other);  // another storage: the elements are moved one by one
    }
    return *this;
  }
  btree& operator=(std::initializer_list<value_type> il) {
    clear();
    insert(il.begin(), il.end());
    return *this;
  }
  ~btree() { clear(); }

  allocator_type get_allocator() const noexcept { return m_alloc; }
  key_compare key_comp() const { return m_comp; }

  // -------------------------------------------------------------------------------------------
  // Iterators

  iterator begin() noexcept { return iterator(m_leftmost, 0); }
  const_iterator begin() const noexcept { return const_iterator(m_leftmost, 0); }
  const_iterator cbegin() const noexcept { return begin(); }
  iterator end() noexcept { return iterator(m_rightmost, m_rightmost ? m_rightmost->count : 0); }
  const_iterator end() const noexcept { return const_iterator(m_rightmost, m_rightmost ? m_rightmost->count : 0); }
  const_iterator cend() const noexcept { return end(); }
  reverse_iterator rbegin() noexcept { return reverse_iterator(end()); }
  const_reverse_iterator rbegin() const noexcept { return const_reverse_iterator(end()); }
  const_reverse_iterator crbegin() const noexcept { return rbegin(); }
  reverse_iterator rend() noexcept { return reverse_iterator(begin()); }
  const_reverse_iterator rend() const noexcept { return const_reverse_iterator(begin()); }
  const_reverse_iterator crend() const noexcept { return rend(); }

  [[nodiscard]] bool empty() const noexcept { return m_size == 0; }
  size_type size() const noexcept { return m_size; }
  size_type max_size() const noexcept { return std::numeric_limits<difference_type>::max() / sizeof(value_type); }

  // -------------------------------------------------------------------------------------------
  // Insertion

  insert_return insert(const value_type& v) { return emplace(v); }
  insert_return insert(value_type&& v) { return emplace(std::move(v)); }
  iterator insert(const_iterator hint, const value_type& v) { return emplace_hint(hint, v); }
  iterator insert(const_iterator hint, value_type&& v) { return emplace_hint(hint, std::move(v)); }
  /// Inserts [first, last). Into an empty tree, a sorted forward range is bulk-loaded:
  /// leaves are filled in order, with no split.
  template <class InputIt>
  void insert(InputIt first, InputIt last) {
    if constexpr (std::is_base_of_v<std::forward_iterator_tag, typename std::iterator_traits<InputIt>::iterator_category>) {
      if (empty() && sorted(first, last)) {
        for (; first != last; ++first) {
          if (!P::multi && m_size != 0 && !m_comp(P::key(*std::prev(end())), P::key(*first))) continue;
          append_back(*first);
        }
        finish_append();
        return;
      }
    }
    for (; first != last; ++first) emplace_hint(end(), *first);
  }
  void insert(std::initializer_list<value_type> il) { insert(il.begin(), il.end()); }

  template <class... Args>
  insert_return emplace(Args&&... args) {
    temp_value t(*this, std::forward<Args>(args)...);
    if constexpr (P::multi) {
      return emplace_at(locate_upper(P::key(t.get())), t);
    } else {
      auto [it, found] = locate_unique(P::key(t.get()));
      if (found) return {it, false};
      return {emplace_at(it, t), true};
    }
  }

  /// Inserts as close as possible before `hint` (as std::map and std::multimap do).
  template <class... Args>
  iterator emplace_hint(const_iterator hint, Args&&... args) {
    temp_value t(*this, std::forward<Args>(args)...);
    const key_type& k = P::key(t.get());
    iterator pos = mutable_iterator(hint);
    if (empty()) return emplace_at(pos, t);
    if constexpr (P::multi) {
      const iterator e = end();
      if (pos == e) {
        if (!m_comp(k, P::key(*std::prev(e)))) return emplace_at(pos, t);
        return emplace_at(locate_upper(k), t);
      }
      if (!m_comp(P::key(*pos), k)) {  // k <= *pos
        if (pos == begin() || !m_comp(k, P::key(*std::prev(pos)))) return emplace_at(pos, t);
        return emplace_at(locate_upper(k), t);
      }
      iterator next = std::next(pos);
      if (next == e || !m_comp(P::key(*next), k)) return emplace_at(next, t);
      return emplace_at(locate_lower(k), t);
    } else {
      if (pos == end() || m_comp(k, P::key(*pos))) {
        if (pos == begin() || m_comp(P::key(*std::prev(pos)), k)) return emplace_at(pos, t);
      } else if (!m_comp(P::key(*pos), k)) {
        return pos;  // equal
      }
      auto [it, found] = locate_unique(k);
      if (found) return it;
      return emplace_at(it, t);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Erasure. Every iterator into the tree is invalidated, except the one returned.

  /// Erases `*pos`; returns the iterator to the next element (or end()).
  iterator erase(const_iterator pos) { return erase_at(mutable_iterator(pos)); }
  /// Erases [first, last); returns the iterator to what followed `last`.
  iterator erase(const_iterator first, const_iterator last) {
    if (first == begin() && last == end()) {
      clear();
      return end();
    }
    auto n = std::distance(first, last);
    iterator it = mutable_iterator(first);
    while (n-- > 0) it = erase_at(it);
    return it;
  }
  /// Erases every element with key `k`; returns how many there were.
  size_type erase(const key_type& k) { return erase_key(k); }
  template <class K>
    requires btree_transparent<key_compare> && (!std::is_convertible_v<K, const_iterator>) &&
             (!std::is_convertible_v<K, iterator>)
  size_type erase(K&& k) {
    return erase_key(k);
  }

  void clear() noexcept {
    if (m_root) destroy_subtree(m_root);
    m_root = m_leftmost = m_rightmost = nullptr;
    m_size = 0;
  }

  void swap(btree& other) noexcept(alloc_traits::propagate_on_container_swap::value || alloc_traits::is_always_equal::value) {
    if (this == &other) return;
    if constexpr (alloc_traits::propagate_on_container_swap::value) {
      using std::swap;
      swap(m_alloc, other.m_alloc);
      swap_contents(other);
    } else if (m_alloc == other.m_alloc) {
      swap_contents(other);
    } else {  // different storages: the elements are moved, each stays with its allocator
      btree mine(std::move(*this), other.m_alloc);
      *this = std::move(other);
      other = std::move(mine);
    }
  }

  /// Moves into this tree every element of `source` this tree accepts (all of them for the
  /// multi variants, those with a new key otherwise); the others stay in `source`.
  template <class P2>
  void merge(btree<P2>& source) {
    if (static_cast<void*>(&source) == static_cast<void*>(this)) return;
    for (auto it = source.begin(); it != source.end();) {
      if constexpr (!P::multi) {
        auto [pos, found] = locate_unique(P::key(*it));
        if (found) {
          ++it;
          continue;
        }
        temp_value t(*this, moved{const_cast<value_type&>(*it)});
        emplace_at(pos, t);
      } else {
        temp_value t(*this, moved{const_cast<value_type&>(*it)});
        emplace_at(locate_upper(P::key(t.get())), t);
      }
      it = source.erase(it);
    }
  }
  template <class P2>
  void merge(btree<P2>&& source) {
    merge(source);
  }

  // -------------------------------------------------------------------------------------------
  // Lookup (never allocates: a reader can look up without a writer)

  iterator find(const key_type& k) { return mutable_iterator(find_impl(k)); }
  const_iterator find(const key_type& k) const { return find_impl(k); }
  template <class K>
    requires btree_transparent<key_compare>
  iterator find(const K& k) {
    return mutable_iterator(find_impl(k));
  }
  template <class K>
    requires btree_transparent<key_compare>
  const_iterator find(const K& k) const {
    return find_impl(k);
  }

  bool contains(const key_type& k) const { return find_impl(k) != end(); }
  template <class K>
    requires btree_transparent<key_compare>
  bool contains(const K& k) const {
    return find_impl(k) != end();
  }

  size_type count(const key_type& k) const { return count_impl(k); }
  template <class K>
    requires btree_transparent<key_compare>
  size_type count(const K& k) const {
    return count_impl(k);
  }

  iterator lower_bound(const key_type& k) { return locate_lower(k); }
  const_iterator lower_bound(const key_type& k) const { return const_cast<btree*>(this)->locate_lower(k); }
  template <class K>
    requires btree_transparent<key_compare>
  iterator lower_bound(const K& k) {
    return locate_lower(k);
  }
  template <class K>
    requires btree_transparent<key_compare>
  const_iterator lower_bound(const K& k) const {
    return const_cast<btree*>(this)->locate_lower(k);
  }

  iterator upper_bound(const key_type& k) { return locate_upper(k); }
  const_iterator upper_bound(const key_type& k) const { return const_cast<btree*>(this)->locate_upper(k); }
  template <class K>
    requires btree_transparent<key_compare>
  iterator upper_bound(const K& k) {
    return locate_upper(k);
  }
  template <class K>
    requires btree_transparent<key_compare>
  const_iterator upper_bound(const K& k) const {
    return const_cast<btree*>(this)->locate_upper(k);
  }

  std::pair<iterator, iterator> equal_range(const key_type& k) { return equal_range_impl(k); }
  std::pair<const_iterator, const_iterator> equal_range(const key_type& k) const {
    return const_cast<btree*>(this)->equal_range_impl(k);
  }
  template <class K>
    requires btree_transparent<key_compare>
  std::pair<iterator, iterator> equal_range(const K& k) {
    return equal_range_impl(k);
  }
  template <class K>
    requires btree_transparent<key_compare>
  std::pair<const_iterator, const_iterator> equal_range(const K& k) const {
    return const_cast<btree*>(this)->equal_range_impl(k);
  }

  // -------------------------------------------------------------------------------------------
  // Audit

  /// Checks every invariant: the order of the values (strict for unique keys), the node
  /// fill (1 ..= capacity values in every non-root node), all leaves at one depth, parent
  /// links and positions, the leftmost and rightmost leaves, and the size.
  /// \throws tmf::error{errc::corrupted} naming the first problem found.
  void check() const {
    if (m_root == nullptr) {
      if (m_size != 0 || m_leftmost != nullptr || m_rightmost != nullptr)
        fail("an empty tree has a size or leaf links");
      return;
    }
    if (m_root->parent != nullptr) fail("the root has a parent");
    audit a;
    audit_node(m_root, nullptr, nullptr, 0, a);
    if (a.values != m_size) fail("size() is " + std::to_string(m_size) + " but the nodes hold " + std::to_string(a.values));
    if (a.first_leaf != m_leftmost) fail("the leftmost leaf link is wrong");
    if (a.last_leaf != m_rightmost) fail("the rightmost leaf link is wrong");
  }

  /// (for tests and benchmarks) Node counts and depth: walks the whole tree.
  struct shape {
    std::size_t leaves = 0, internals = 0, depth = 0;
  };
  shape tree_shape() const noexcept {
    shape s;
    if (!m_root) return s;
    count_nodes(m_root, 1, s);
    return s;
  }

 protected:
  template <class Q>
  friend class btree;

  /// A value being moved out of another tree's node (merge): its key is moved too.
  struct moved {
    value_type& v;
  };

  /// A value built outside the tree (so that a throwing constructor leaves the tree as it
  /// was), then relocated into a node.
  class temp_value {
   public:
    template <class... Args>
    explicit temp_value(btree& t, Args&&... args) : m_alloc(t.m_alloc) {
      value_traits::construct(m_alloc, ptr(), std::forward<Args>(args)...);
    }
    temp_value(btree& t, moved m) : m_alloc(t.m_alloc) { P::move_construct(m_alloc, ptr(), m.v); }
    temp_value(const temp_value&) = delete;
    temp_value& operator=(const temp_value&) = delete;
    ~temp_value() {
      if (m_live) value_traits::destroy(m_alloc, ptr());
    }
    value_type& get() noexcept { return *ptr(); }
    /// Moves the value into `dst` (raw slot); this holder is then empty.
    void relocate_to(value_type* dst) noexcept {
      btree::relocate(m_alloc, dst, ptr());
      m_live = false;
    }

   private:
    value_type* ptr() noexcept { return std::launder(reinterpret_cast<value_type*>(m_buf)); }
    alignas(value_type) unsigned char m_buf[sizeof(value_type)];
    value_alloc m_alloc;
    bool m_live = true;
  };

  static void relocate(value_alloc& a, value_type* dst, value_type* src) noexcept {
    if constexpr (trivial_values) {
      std::memcpy(static_cast<void*>(dst), static_cast<const void*>(src), sizeof(value_type));
    } else {
      P::move_construct(a, dst, *src);
      value_traits::destroy(a, src);
    }
  }
  /// Relocates `n` values from `src` to `dst`; the ranges may overlap.
  void move_values(value_type* dst, value_type* src, std::size_t n) noexcept {
    if (n == 0 || dst == src) return;
    if constexpr (trivial_values) {
      std::memmove(static_cast<void*>(dst), static_cast<const void*>(src), n * sizeof(value_type));
    } else {
      value_alloc a(m_alloc);
      if (std::less<>{}(dst, src)) {
        for (std::size_t i = 0; i < n; ++i) relocate(a, dst + i, src + i);
      } else {
        for (std::size_t i = n; i-- > 0;) relocate(a, dst + i, src + i);
      }
    }
  }
  static value_type* slot(node* n, std::size_t i) noexcept { return layout::values(n) + i; }

  // The key cache (cached_keys): keys(n)[i] is a copy of the key of value i of n. Every
  // change of a node's values updates it: shift_keys along with a shift, set_key and
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

  iterator mutable_iterator(const_iterator it) const noexcept { return iterator(it.m_node, it.m_pos); }

  /// The key of the value at `it` (not end()): its copy in the key cache when there is one
  /// (the values' cache line is not read).
  static const key_type& key_at(const_iterator it) noexcept {
    if constexpr (layout::cached_keys) {
      return layout::keys(it.m_node)[it.m_pos];
    } else {
      return P::key(*it);
    }
  }

  // --- nodes ----------------------------------------------------------------------------------

  node* new_node(bool leaf) {
    block_alloc a(m_alloc);
    auto* b = block_traits::allocate(a, 1);
    return ::new (static_cast<void*>(b)) node{nullptr, 0, leaf};
  }
  void delete_node(node* n) noexcept {
    block_alloc a(m_alloc);
    block_traits::deallocate(a, reinterpret_cast<block*>(n), 1);
  }
  void destroy_subtree(node* n) noexcept {
    if (!n->leaf)
      for (std::size_t i = 0; i <= n->count; ++i) destroy_subtree(layout::child(n, i));
    if constexpr (!std::is_trivially_destructible_v<value_type>) {
      value_alloc a(m_alloc);
      for (std::size_t i = 0; i < n->count; ++i) value_traits::destroy(a, slot(n, i));
    }
    delete_node(n);
  }

  // --- lookup ---------------------------------------------------------------------------------

  /// First index in `n` whose key is not less than `k` (Upper: greater than `k`).
  template <bool Upper, class K>
  std::size_t node_search(const node* n, const K& k) const {
    if constexpr (layout::cached_keys) {
      // Binary steps down to 32 keys (4 cache lines of 8-byte keys), then a branch-free count
      // of the keys below `k`: its loads are independent, so their cache misses overlap.
      const auto* keys = layout::keys(n);
      std::size_t lo = 0, hi = n->count;
      while (hi - lo > 32) {
        const std::size_t mid = (lo + hi) / 2;
        if (Upper ? !m_comp(k, keys[mid]) : m_comp(keys[mid], k)) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      std::size_t below = 0;
      for (std::size_t i = lo; i < hi; ++i) below += static_cast<std::size_t>(Upper ? !m_comp(k, keys[i]) : m_comp(keys[i], k));
      return lo + below;
    }
    const value_type* v = layout::values(n);
    std::size_t lo = 0, hi = n->count;
    while (lo < hi) {
      const std::size_t mid = (lo + hi) / 2;
      const bool go_right = Upper ? !m_comp(k, P::key(v[mid])) : m_comp(P::key(v[mid]), k);
      if (go_right) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }
  /// The leaf position where a search for `k` ends.
  template <bool Upper, class K>
  iterator descend(const K& k) const {
    node* n = m_root;
    for (;;) {
      const std::size_t pos = node_search<Upper>(n, k);
      if (n->leaf) return iterator(n, static_cast<int>(pos));
      n = layout::child(n, pos);
    }
  }
  /// A leaf position one past a node's values -> the value that follows it, or end().
  iterator normalize(iterator it) const noexcept {
    while (it.m_pos == static_cast<int>(it.m_node->count)) {
      if (it.m_node->parent == nullptr) return iterator(m_rightmost, m_rightmost->count);
      it.m_pos = static_cast<int>(layout::position(it.m_node));
      it.m_node = it.m_node->parent;
    }
    return it;
  }
  template <class K>
  iterator locate_lower(const K& k) {
    if (!m_root) return end();
    return normalize(descend<false>(k));
  }
  template <class K>
  iterator locate_upper(const K& k) {
    if (!m_root) return end();
    return normalize(descend<true>(k));
  }
  /// For unique keys: where `k` is or would go, and whether it is there. The position is a
  /// leaf position when it is not there.
  template <class K>
  std::pair<iterator, bool> locate_unique(const K& k) {
    if (!m_root) return {end(), false};
    const iterator leaf_pos = descend<false>(k);
    const iterator it = normalize(leaf_pos);
    if (it != end() && !m_comp(k, key_at(it))) return {it, true};
    return {leaf_pos, false};
  }
  template <class K>
  const_iterator find_impl(const K& k) const {
    if (!m_root) return end();
    const iterator it = normalize(descend<false>(k));
    if (it != end() && !m_comp(k, key_at(it))) return it;
    return end();
  }
  template <class K>
  size_type count_impl(const K& k) const {
    if constexpr (P::multi) {
      auto [b, e] = const_cast<btree*>(this)->equal_range_impl(k);
      return static_cast<size_type>(std::distance(b, e));
    } else {
      return find_impl(k) != end() ? 1 : 0;
    }
  }
  template <class K>
  std::pair<iterator, iterator> equal_range_impl(const K& k) {
    iterator b = locate_lower(k);
    if constexpr (P::multi) {
      return {b, locate_upper(k)};
    } else {
      if (b != end() && !m_comp(k, P::key(*b))) return {b, std::next(b)};
      return {b, b};
    }
  }

  // --- insertion ------------------------------------------------------------------------------

  /// Relocates `t` into the tree before `it` (any position, end() included); returns its
  /// iterator. Node allocation happens before any value moves, so bad_alloc leaves the tree
  /// valid and unchanged in content.
  iterator emplace_at(iterator it, temp_value& t) {
    if (!m_root) {
      m_root = m_leftmost = m_rightmost = new_node(true);
      it = iterator(m_root, 0);
    } else if (!it.m_node->leaf) {  // before an internal value = after its predecessor, in a leaf
      --it;
      ++it.m_pos;
    }
    node* n = it.m_node;
    std::size_t pos = static_cast<std::size_t>(it.m_pos);
    if (n->count == leaf_capacity) split_for_insert(n, pos);
    move_values(slot(n, pos + 1), slot(n, pos), n->count - pos);
    shift_keys(n, pos + 1, pos, n->count - pos);
    t.relocate_to(slot(n, pos));
    set_key(n, pos);
    ++n->count;
    ++m_size;
    return iterator(n, static_cast<int>(pos));
  }

  /// Splits the full node `n` so that a value can go at `pos`; `n` and `pos` then name the
  /// node and index where it goes. Splits full parents first.
  void split_for_insert(node*& n, std::size_t& pos) {
    node* parent = n->parent;
    if (parent == nullptr) {
      parent = new_node(false);
      layout::set_child(parent, 0, n);
      m_root = parent;
    } else if (parent->count == internal_capacity) {
      node* p = parent;
      std::size_t ppos = layout::position(n);
      split_for_insert(p, ppos);
      parent = n->parent;
    }
    node* dest = new_node(n->leaf);
    split(n, pos, dest);
    if (m_rightmost == n) m_rightmost = dest;
    if (pos > n->count) {
      pos -= n->count + 1u;
      n = dest;
    }
  }

  /// Moves the upper part of the full node `n` into the new node `dest` and its median into
  /// the parent (which has room). Appending at either end leaves the other side full, so that
  /// sorted insertions fill nodes.
  void split(node* n, std::size_t insert_pos, node* dest) {
    const std::size_t c = n->count;
    const std::size_t dest_count = insert_pos == 0 ? c - 1 : insert_pos == layout::capacity(n) ? 0 : c / 2;
    const std::size_t left = c - dest_count;  // values staying in n, the median included
    move_values(slot(dest, 0), slot(n, left), dest_count);
    dest->count = static_cast<std::uint16_t>(dest_count);
    node* parent = n->parent;
    const std::size_t at = layout::position(n);
    // The median goes up into the parent at `at`; dest becomes the parent's child at + 1.
    move_values(slot(parent, at + 1), slot(parent, at), parent->count - at);
    layout::move_children(parent, at + 2, parent, at + 1, parent->count - at);
    value_alloc a(m_alloc);
    relocate(a, slot(parent, at), slot(n, left - 1));
    ++parent->count;
    layout::set_child(parent, at + 1, dest);
    n->count = static_cast<std::uint16_t>(left - 1);
    if (!n->leaf) layout::move_children(dest, 0, n, left, dest_count + 1);
    refresh_keys(dest, 0, dest->count);
    refresh_keys(parent, at, parent->count);
  }

  // --- bulk loading: values appended in order along the right spine -----------------------------

  template <class V>
  void append_back(V&& v) {
    temp_value t(*this, std::forward<V>(v));
    if (!m_root) m_root = m_leftmost = m_rightmost = new_node(true);
    node* leaf = m_rightmost;
    if (leaf->count < leaf_capacity) {
      t.relocate_to(slot(leaf, leaf->count));
      set_key(leaf, leaf->count);
      ++leaf->count;
      ++m_size;
      return;
    }
    // The leaf is full: the value becomes a separator above it, a new empty leaf follows.
    // Nodes are allocated first, so that bad_alloc leaves the tree valid.
    std::size_t full_levels = 0;
    node* p = leaf->parent;
    for (; p != nullptr && p->count == internal_capacity; p = p->parent) ++full_levels;
    node* new_root = p == nullptr ? new_node(false) : nullptr;
    node* fresh[64];
    std::size_t made = 0;
    try {
      fresh[made] = new_node(true);
      ++made;
      for (; made <= full_levels; ++made) fresh[made] = new_node(false);
    } catch (...) {
      while (made > 0) delete_node(fresh[--made]);
      if (new_root) delete_node(new_root);
      throw;
    }
    if (new_root) {
      layout::set_child(new_root, 0, m_root);
      m_root = new_root;
      p = new_root;
    }
    node* c = fresh[0];
    for (std::size_t i = 1; i <= full_levels; ++i) {
      layout::set_child(fresh[i], 0, c);
      c = fresh[i];
    }
    t.relocate_to(slot(p, p->count));
    set_key(p, p->count);
    ++p->count;
    layout::set_child(p, p->count, c);
    ++m_size;
    m_rightmost = fresh[0];
  }
  /// After append_back: the right spine may hold under-filled nodes (an empty last leaf...);
  /// each takes values from its full left sibling.
  void finish_append() noexcept {
    if (!m_root) return;
    for (node* n = m_root; !n->leaf;) {
      node* c = layout::child(n, n->count);
      if (c->count < layout::min_count(c)) {
        node* left = layout::child(n, n->count - 1u);
        rebalance_left_to_right((left->count - c->count) / 2, left, c);
      }
      n = c;
    }
  }

  // --- erasure --------------------------------------------------------------------------------

  iterator erase_at(iterator it) {
    value_alloc a(m_alloc);
    bool internal_delete = false;
    if (!it.m_node->leaf) {
      // Replace the value by its predecessor (the last of a leaf), then remove that slot.
      const iterator internal = it;
      --it;
      value_traits::destroy(a, slot(internal.m_node, internal.m_pos));
      relocate(a, slot(internal.m_node, internal.m_pos), slot(it.m_node, it.m_pos));
      set_key(internal.m_node, static_cast<std::size_t>(internal.m_pos));
      internal_delete = true;
    } else {
      value_traits::destroy(a, slot(it.m_node, it.m_pos));
    }
    node* n = it.m_node;
    const std::size_t pos = it.m_pos;
    move_values(slot(n, pos), slot(n, pos + 1), n->count - pos - 1);
    shift_keys(n, pos, pos + 1, n->count - pos - 1);
    --n->count;
    --m_size;
    iterator res = rebalance_after_erase(it);
    if (internal_delete) ++res;
    return res;
  }

  template <class K>
  size_type erase_key(const K& k) {
    if constexpr (P::multi) {
      auto [b, e] = equal_range_impl(k);
      const auto n = static_cast<size_type>(std::distance(b, e));
      erase(b, e);
      return n;
    } else {
      const const_iterator it = find_impl(k);
      if (it == end()) return 0;
      erase_at(mutable_iterator(it));
      return 1;
    }
  }

  /// Merges or rebalances under-filled nodes from the leaf of `it` up; returns the iterator
  /// to the value that followed the erased one.
  iterator rebalance_after_erase(iterator it) {
    iterator res = it;
    bool first = true;
    for (;;) {
      if (it.m_node == m_root) {
        shrink_root();
        if (empty()) return end();
        break;
      }
      if (it.m_node->count >= layout::min_count(it.m_node)) break;
      const bool merged = merge_or_rebalance(it);
      if (first) {
        res = it;
        first = false;
      }
      if (!merged) break;
      it.m_pos = static_cast<int>(layout::position(it.m_node));
      it.m_node = it.m_node->parent;
    }
    if (res.m_pos == static_cast<int>(res.m_node->count)) {
      res.m_pos = static_cast<int>(res.m_node->count) - 1;
      ++res;
    }
    return res;
  }

  void shrink_root() noexcept {
    if (m_root->count > 0) return;
    node* old = m_root;
    if (old->leaf) {
      m_root = m_leftmost = m_rightmost = nullptr;
    } else {
      m_root = layout::child(old, 0);
      m_root->parent = nullptr;
    }
    delete_node(old);
  }

  /// `it.m_node` is under-filled: merges it with a sibling (returns true) or moves values
  /// from a sibling into it. Keeps `it` on the same value.
  bool merge_or_rebalance(iterator& it) noexcept {
    node* n = it.m_node;
    node* parent = n->parent;
    const std::size_t cap = layout::capacity(n);
    const std::size_t npos = layout::position(n);
    if (npos > 0) {
      node* left = layout::child(parent, npos - 1u);
      if (1u + left->count + n->count <= cap) {
        it.m_pos += 1 + left->count;
        merge_nodes(left, n);
        it.m_node = left;
        return true;
      }
    }
    if (npos < parent->count) {
      node* right = layout::child(parent, npos + 1u);
      if (1u + n->count + right->count <= cap) {
        merge_nodes(n, right);
        return true;
      }
      if (right->count > layout::min_count(right) && (n->count == 0 || it.m_pos > 0)) {
        std::size_t to_move = (right->count - n->count) / 2u;
        to_move = std::min<std::size_t>(to_move, right->count - 1u);
        rebalance_right_to_left(to_move, n, right);
        return false;
      }
    }
    if (npos > 0) {
      node* left = layout::child(parent, npos - 1u);
      if (left->count > layout::min_count(left) && (n->count == 0 || it.m_pos < static_cast<int>(n->count))) {
        std::size_t to_move = (left->count - n->count) / 2u;
        to_move = std::min<std::size_t>(to_move, left->count - 1u);
        rebalance_left_to_right(to_move, left, n);
        it.m_pos += static_cast<int>(to_move);
        return false;
      }
    }
    return false;
  }

  /// Moves the separator and all of `right` into `left`, then frees `right`.
  void merge_nodes(node* left, node* right) noexcept {
    node* parent = left->parent;
    const std::size_t at = layout::position(left);
    value_alloc a(m_alloc);
    const std::size_t old_count = left->count;
    relocate(a, slot(left, left->count), slot(parent, at));
    move_values(slot(left, left->count + 1u), slot(right, 0), right->count);
    if (!left->leaf) layout::move_children(left, left->count + 1u, right, 0, right->count + 1u);
    left->count = static_cast<std::uint16_t>(left->count + 1u + right->count);
    refresh_keys(left, old_count, left->count);
    // Remove the separator and the right child from the parent.
    move_values(slot(parent, at), slot(parent, at + 1), parent->count - at - 1u);
    layout::move_children(parent, at + 1, parent, at + 2, parent->count - at - 1u);
    shift_keys(parent, at, at + 1, parent->count - at - 1u);
    --parent->count;
    if (m_rightmost == right) m_rightmost = left;
    delete_node(right);
  }

  /// Moves `k` values (k >= 1) from the front of `right` through the parent to `left`.
  void rebalance_right_to_left(std::size_t k, node* left, node* right) noexcept {
    node* parent = left->parent;
    const std::size_t at = layout::position(left);
    value_alloc a(m_alloc);
    relocate(a, slot(left, left->count), slot(parent, at));
    move_values(slot(left, left->count + 1u), slot(right, 0), k - 1);
    relocate(a, slot(parent, at), slot(right, k - 1));
    move_values(slot(right, 0), slot(right, k), right->count - k);
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
  void rebalance_left_to_right(std::size_t k, node* left, node* right) noexcept {
    node* parent = left->parent;
    const std::size_t at = layout::position(left);
    value_alloc a(m_alloc);
    move_values(slot(right, k), slot(right, 0), right->count);
    relocate(a, slot(right, k - 1), slot(parent, at));
    move_values(slot(right, 0), slot(left, left->count - k + 1u), k - 1);
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

  // --- whole-tree helpers -----------------------------------------------------------------------

  template <class It>
  bool sorted(It first, It last) const {
    if (first == last) return true;
    for (It next = std::next(first); next != last; first = next, ++next)
      if (m_comp(P::key(*next), P::key(*first))) return false;
    return true;
  }
  void copy_from(const btree& other) {
    for (const value_type& v : other) append_back(v);
    finish_append();
  }
  void move_elements_from(btree& other) {
    for (const value_type& v : other) append_back(moved{const_cast<value_type&>(v)});
    finish_append();
    other.clear();
  }
  void steal(btree& other) noexcept {
    m_root = std::exchange(other.m_root, nullptr);
    m_leftmost = std::exchange(other.m_leftmost, nullptr);
    m_rightmost = std::exchange(other.m_rightmost, nullptr);
    m_size = std::exchange(other.m_size, 0);
  }
  void swap_contents(btree& other) noexcept {
    using std::swap;
    swap(m_root, other.m_root);
    swap(m_leftmost, other.m_leftmost);
    swap(m_rightmost, other.m_rightmost);
    swap(m_size, other.m_size);
    swap(m_comp, other.m_comp);
  }

  struct audit {
    std::size_t values = 0;
    std::size_t leaf_depth = 0;
    const node* first_leaf = nullptr;
    const node* last_leaf = nullptr;
  };
  [[noreturn]] static void fail(const std::string& what) { throw error(errc::corrupted, "tmf::btree: " + what); }

  /// Checks `n` and its subtree; every key must be within (lo, hi) (null: unbounded), with
  /// equality allowed at the bounds for the multi variants.
  void audit_node(const node* n, const value_type* lo, const value_type* hi, std::size_t depth, audit& a) const {
    const std::string where = " (node at depth " + std::to_string(depth) + ")";
    if (n->count > layout::capacity(n)) fail("a node holds more values than its capacity" + where);
    if (n != m_root && n->count == 0) fail("a non-root node is empty" + where);
    if (n == m_root && n->count == 0) fail("the root is empty");
    const value_type* v = layout::values(n);
    for (std::size_t i = 0; i < n->count; ++i) {
      const value_type* before = i == 0 ? lo : v + i - 1;
      if (before) {
        const bool bad = P::multi ? m_comp(P::key(v[i]), P::key(*before)) : !m_comp(P::key(*before), P::key(v[i]));
        if (bad) fail("values out of order at index " + std::to_string(i) + where);
      }
    }
    if (hi && n->count > 0) {
      const value_type& last = v[n->count - 1];
      const bool bad = P::multi ? m_comp(P::key(*hi), P::key(last)) : !m_comp(P::key(last), P::key(*hi));
      if (bad) fail("a node's last value is not below its upper separator" + where);
    }
    if constexpr (layout::cached_keys) {
      const auto* keys = layout::keys(n);
      for (std::size_t i = 0; i < n->count; ++i)
        if (std::memcmp(&keys[i], &P::key(v[i]), sizeof keys[i]) != 0)
          fail("the key copy at index " + std::to_string(i) + " differs from its value's key" + where);
    }
    a.values += n->count;
    if (n->leaf) {
      if (a.first_leaf == nullptr) {
        a.first_leaf = n;
        a.leaf_depth = depth;
      } else if (a.leaf_depth != depth) {
        fail("leaves at depths " + std::to_string(a.leaf_depth) + " and " + std::to_string(depth));
      }
      a.last_leaf = n;
      return;
    }
    for (std::size_t i = 0; i <= n->count; ++i) {
      const node* c = layout::child(n, i);
      if (c == nullptr) fail("a null child link" + where);
      if (c->parent != n) fail("a child's parent link is wrong" + where);
      audit_node(c, i == 0 ? lo : v + i - 1, i == n->count ? hi : v + i, depth + 1, a);
    }
  }
  void count_nodes(const node* n, std::size_t depth, shape& s) const noexcept {
    s.depth = std::max(s.depth, depth);
    if (n->leaf) {
      ++s.leaves;
      return;
    }
    ++s.internals;
    for (std::size_t i = 0; i <= n->count; ++i) count_nodes(layout::child(n, i), depth + 1, s);
  }

  node* m_root = nullptr;
  node* m_leftmost = nullptr;
  node* m_rightmost = nullptr;
  std::size_t m_size = 0;
  [[no_unique_address]] key_compare m_comp;
  [[no_unique_address]] allocator_type m_alloc;
};

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

#endif  // TMF_DETAIL_BTREE_TREE_HPP
