// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The heap's audit, `heap::check()` (included by heap.hpp, after the class): every link of
/// both free trees is range-checked before it is followed, so a corrupted file is reported
/// as errc::corrupted naming what is wrong and where, never followed into a crash.
#ifndef TMF_DETAIL_HEAP_AUDIT_HPP
#define TMF_DETAIL_HEAP_AUDIT_HPP

#ifndef TMF_DETAIL_HEAP_HPP
#error "heap_audit.hpp holds heap.hpp's audit: include heap.hpp"
#endif

namespace tmf::detail {

namespace heap_impl {
[[noreturn]] inline void corrupted(const std::string& what) { throw error(errc::corrupted, "heap: " + what); }
}  // namespace heap_impl

template <class Tree, class Visit>
void heap::audit_tree(const Tree& tree, const char* name, std::size_t max_blocks, Visit&& visit) const {
  using traits = typename Tree::node_traits;
  using node_ptr = typename traits::node_ptr;
  using value_traits = typename Tree::value_traits;
  using heap_impl::corrupted;
  using heap_impl::hex_string;
  const auto b = reinterpret_cast<std::uintptr_t>(m_s->m_begin);
  const auto e = reinterpret_cast<std::uintptr_t>(m_s->m_end);
  const std::string tree_name = name;
  const node_ptr header = tree.end().pointed_node();
  // A red-black tree of n nodes is at most 2*log2(n+1) deep: deeper means a cycle.
  const int max_depth = 2 * static_cast<int>(std::bit_width(max_blocks + 1)) + 2;
  node_ptr leftmost = header;
  node_ptr rightmost = header;

  // Returns the black height of the subtree at n.
  const auto walk = [&](const auto& self, node_ptr n, node_ptr parent, bool parent_red, int depth) -> int {
    if (n == nullptr) return 1;
    const auto na = reinterpret_cast<std::uintptr_t>(n);
    const auto pa = reinterpret_cast<std::uintptr_t>(parent);
    if (na < b || na >= e) {
      corrupted(tree_name + ": link from " + hex_string(pa) + " to " + hex_string(na) +
                " points outside the arena [" + hex_string(b) + ", " + hex_string(e) + ")");
    }
    // Where the node sits inside its block, from a real object: the block's address is then
    // checked with integer arithmetic before any pointer to it is formed (a misaligned
    // free_block* is undefined behaviour even unread).
    static const std::uintptr_t node_offset = [] {
      heap_impl::free_block probe;
      return reinterpret_cast<std::uintptr_t>(value_traits::to_node_ptr(probe)) -
             reinterpret_cast<std::uintptr_t>(&probe);
    }();
    const std::uintptr_t a = na - node_offset;
    if (na < node_offset || a < b || a >= e || a % heap_quantum != 0) {
      corrupted(tree_name + ": link from " + hex_string(pa) + " to " + hex_string(na) +
                " is not the node of a quantum-aligned block in the arena");
    }
    // From here the block's first quantum is known to be in the arena: its node can be read.
    const heap_impl::free_block* block = value_traits::to_value_ptr(n);
    if (depth > max_depth) {
      corrupted(tree_name + ": deeper than " + std::to_string(max_depth) + " levels at free block " +
                hex_string(a) + " (a cycle?)");
    }
    if (traits::get_parent(n) != parent) {
      corrupted(tree_name + ": free block " + hex_string(a) + " has parent link " +
                hex_string(reinterpret_cast<std::uintptr_t>(traits::get_parent(n))) + ", expected " +
                hex_string(pa));
    }
    const bool red = traits::get_color(n) == traits::red();
    if (red && parent_red) {
      corrupted(tree_name + ": red free block " + hex_string(a) + " has a red parent " + hex_string(pa));
    }
    const int left = self(self, traits::get_left(n), n, red, depth + 1);
    if (leftmost == header) leftmost = n;
    rightmost = n;
    visit(*block);
    const int right = self(self, traits::get_right(n), n, red, depth + 1);
    if (left != right) {
      corrupted(tree_name + ": unequal black heights (" + std::to_string(left) + " and " +
                std::to_string(right) + ") below free block " + hex_string(a));
    }
    return left + (red ? 0 : 1);
  };
  walk(walk, traits::get_parent(header), header, false, 0);
  if (traits::get_left(header) != leftmost || traits::get_right(header) != rightmost) {
    corrupted(tree_name + ": header's leftmost/rightmost links " +
              hex_string(reinterpret_cast<std::uintptr_t>(traits::get_left(header))) + "/" +
              hex_string(reinterpret_cast<std::uintptr_t>(traits::get_right(header))) +
              " do not match the tree's first/last nodes " +
              hex_string(reinterpret_cast<std::uintptr_t>(leftmost)) + "/" +
              hex_string(reinterpret_cast<std::uintptr_t>(rightmost)));
  }
}

inline void heap::check() const {
  using heap_impl::corrupted;
  using heap_impl::free_block;
  using heap_impl::hex_string;
  const auto b = reinterpret_cast<std::uintptr_t>(m_s->m_begin);
  const auto e = reinterpret_cast<std::uintptr_t>(m_s->m_end);
  if (b % heap_quantum != 0 || e % heap_quantum != 0 || e < b) {
    corrupted("arena [" + hex_string(b) + ", " + hex_string(e) + ") is reversed or not quantum-aligned");
  }
  const std::size_t max_blocks = (e - b) / heap_quantum;

  // Address tree: each block sane, strictly ascending, no overlaps, no uncoalesced neighbours.
  std::vector<std::uintptr_t> addresses;
  std::size_t bytes = 0;
  const free_block* prev = nullptr;
  audit_tree(m_s->m_by_addr, "address tree", max_blocks, [&](const free_block& block) {
    const std::uintptr_t a = block.address();
    const std::size_t size = block.m_size;
    if (size < heap_quantum || size % heap_quantum != 0) {
      corrupted("free block " + hex_string(a) + " has size " + std::to_string(size) +
                ", not a positive multiple of the quantum " + std::to_string(heap_quantum));
    }
    if (size > e - a) {
      corrupted("free block " + hex_string(a) + " of " + std::to_string(size) +
                " bytes runs past the arena end " + hex_string(e));
    }
    if (prev != nullptr) {
      const std::uintptr_t pa = prev->address();
      if (a <= pa) {
        corrupted("address tree out of order: free block " + hex_string(a) + " follows " + hex_string(pa));
      }
      if (a < prev->end_address()) {
        corrupted("free block " + hex_string(a) + " overlaps free block " + hex_string(pa) + " of " +
                  std::to_string(prev->m_size) + " bytes");
      }
      if (a == prev->end_address()) {
        corrupted("free blocks " + hex_string(pa) + " (" + std::to_string(prev->m_size) + " bytes) and " +
                  hex_string(a) + " are adjacent: not coalesced");
      }
    }
    addresses.push_back(a);
    bytes += size;
    prev = &block;
  });

  // Size tree: strictly ascending by (size, address), and the same blocks.
  std::size_t count = 0;
  prev = nullptr;
  audit_tree(m_s->m_by_size, "size tree", max_blocks, [&](const free_block& block) {
    const std::uintptr_t a = block.address();
    if (!std::binary_search(addresses.begin(), addresses.end(), a)) {
      corrupted("size tree holds " + hex_string(a) + ", which is not a free block in the address tree");
    }
    if (prev != nullptr && !heap_impl::by_size_compare{}(*prev, block)) {
      corrupted("size tree out of order: free block " + hex_string(a) + " (" + std::to_string(block.m_size) +
                " bytes) follows " + hex_string(prev->address()) + " (" + std::to_string(prev->m_size) +
                " bytes)");
    }
    ++count;
    prev = &block;
  });
  if (count != addresses.size()) {
    corrupted("size tree holds " + std::to_string(count) + " blocks, address tree " +
              std::to_string(addresses.size()));
  }

  // Counters.
  if (m_s->m_free_blocks != count) {
    corrupted("free block counter is " + std::to_string(m_s->m_free_blocks) + ", the trees hold " +
              std::to_string(count));
  }
  if (m_s->m_free_bytes != bytes) {
    corrupted("free byte counter is " + std::to_string(m_s->m_free_bytes) + ", the free blocks hold " +
              std::to_string(bytes));
  }
  if (m_s->m_allocated_bytes != (e - b) - bytes) {
    corrupted("allocated byte counter is " + std::to_string(m_s->m_allocated_bytes) + ", but the arena [" +
              hex_string(b) + ", " + hex_string(e) + ") minus the free bytes is " +
              std::to_string((e - b) - bytes));
  }
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_HEAP_AUDIT_HPP
