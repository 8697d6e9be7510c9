// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The B-tree behind tmf::btree_map, btree_set, btree_multimap and btree_multiset: the
/// container core (construction, insertion, erasure, lookup, the audit).
///
/// A classic B-tree (values in internal nodes too, as in absl::btree_map) whose nodes are
/// page-sized blocks from the container's allocator. The container object holds the root,
/// the leftmost and rightmost leaves and the size; an empty tree holds no node and no
/// pointer at all, so it is valid in a storage after a restart. Nothing points outside the
/// allocator's memory and the container object.
///
/// The layers below: btree_node.hpp (the node layout), btree_params.hpp (map or set, key
/// copies), btree_nodes.hpp (moving values, in-node search, split, merge, rebalancing),
/// btree_iterator.hpp. This file owns the nodes (allocation, freeing), the root, the size and
/// the leftmost and rightmost leaves, and decides which structural step each change needs.
#ifndef TMF_DETAIL_BTREE_TREE_HPP
#define TMF_DETAIL_BTREE_TREE_HPP

#include <algorithm>
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
#include "btree_iterator.hpp"
#include "btree_node.hpp"
#include "btree_nodes.hpp"
#include "btree_params.hpp"

namespace tmf::detail {

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
  using nodes = btree_nodes<P>;
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
      nodes::relocate(m_alloc, dst, ptr());
      m_live = false;
    }

   private:
    value_type* ptr() noexcept { return std::launder(reinterpret_cast<value_type*>(m_buf)); }
    alignas(value_type) unsigned char m_buf[sizeof(value_type)];
    value_alloc m_alloc;
    bool m_live = true;
  };

  static value_type* slot(node* n, std::size_t i) noexcept { return nodes::slot(n, i); }
  /// Relocates `n` values from `src` to `dst` (see btree_nodes).
  void move_values(value_type* dst, value_type* src, std::size_t n) noexcept {
    value_alloc a(m_alloc);
    nodes::move_values(a, dst, src, n);
  }

  iterator mutable_iterator(const_iterator it) const noexcept { return iterator(it.m_node, it.m_pos); }

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
    value_alloc a(m_alloc);
    nodes::destroy_values(a, n);
    delete_node(n);
  }

  // --- lookup ---------------------------------------------------------------------------------

  /// The leaf position where a search for `k` ends.
  template <bool Upper, class K>
  iterator descend(const K& k) const {
    node* n = m_root;
    for (;;) {
      const std::size_t pos = nodes::template search<Upper>(m_comp, n, k);
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
    if (it != end() && !m_comp(k, nodes::key_at(it.m_node, static_cast<std::size_t>(it.m_pos)))) return {it, true};
    return {leaf_pos, false};
  }
  template <class K>
  const_iterator find_impl(const K& k) const {
    if (!m_root) return end();
    const iterator it = normalize(descend<false>(k));
    if (it != end() && !m_comp(k, nodes::key_at(it.m_node, static_cast<std::size_t>(it.m_pos)))) return it;
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
    nodes::shift_keys(n, pos + 1, pos, n->count - pos);
    t.relocate_to(slot(n, pos));
    nodes::set_key(n, pos);
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
    value_alloc a(m_alloc);
    nodes::split(a, n, pos, dest);
    if (m_rightmost == n) m_rightmost = dest;
    if (pos > n->count) {
      pos -= n->count + 1u;
      n = dest;
    }
  }

  // --- bulk loading: values appended in order along the right spine -----------------------------

  template <class V>
  void append_back(V&& v) {
    temp_value t(*this, std::forward<V>(v));
    if (!m_root) m_root = m_leftmost = m_rightmost = new_node(true);
    node* leaf = m_rightmost;
    if (leaf->count < leaf_capacity) {
      t.relocate_to(slot(leaf, leaf->count));
      nodes::set_key(leaf, leaf->count);
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
    nodes::set_key(p, p->count);
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
        value_alloc a(m_alloc);
        nodes::move_left_to_right(a, (left->count - c->count) / 2, left, c);
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
      nodes::relocate(a, slot(internal.m_node, internal.m_pos), slot(it.m_node, it.m_pos));
      nodes::set_key(internal.m_node, static_cast<std::size_t>(internal.m_pos));
      internal_delete = true;
    } else {
      value_traits::destroy(a, slot(it.m_node, it.m_pos));
    }
    node* n = it.m_node;
    const std::size_t pos = it.m_pos;
    move_values(slot(n, pos), slot(n, pos + 1), n->count - pos - 1);
    nodes::shift_keys(n, pos, pos + 1, n->count - pos - 1);
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
        value_alloc a(m_alloc);
        nodes::move_right_to_left(a, to_move, n, right);
        return false;
      }
    }
    if (npos > 0) {
      node* left = layout::child(parent, npos - 1u);
      if (left->count > layout::min_count(left) && (n->count == 0 || it.m_pos < static_cast<int>(n->count))) {
        std::size_t to_move = (left->count - n->count) / 2u;
        to_move = std::min<std::size_t>(to_move, left->count - 1u);
        value_alloc a(m_alloc);
        nodes::move_left_to_right(a, to_move, left, n);
        it.m_pos += static_cast<int>(to_move);
        return false;
      }
    }
    return false;
  }

  /// Merges `right` into its left sibling `left`, then frees it.
  void merge_nodes(node* left, node* right) noexcept {
    value_alloc a(m_alloc);
    nodes::merge(a, left, right);
    if (m_rightmost == right) m_rightmost = left;
    delete_node(right);
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
}  // namespace tmf::detail

#endif  // TMF_DETAIL_BTREE_TREE_HPP
