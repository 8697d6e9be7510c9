// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The iterators of tmf's B-trees: a node and an index in it, moving in order through the
/// values of leaves and internal nodes by the parent links (no stack, no pointer outside the
/// tree's nodes: an iterator is valid in any process that maps the storage).
#ifndef TMF_DETAIL_BTREE_ITERATOR_HPP
#define TMF_DETAIL_BTREE_ITERATOR_HPP

#include <cstddef>
#include <iterator>
#include <type_traits>

#include "btree_node.hpp"
#include "btree_params.hpp"

namespace tmf::detail {

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

}  // namespace tmf::detail

#endif  // TMF_DETAIL_BTREE_ITERATOR_HPP
