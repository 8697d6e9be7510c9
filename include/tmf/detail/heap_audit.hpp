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

/// The runs: the class table, then every run of every class's two lists (placement, header,
/// bitmap against the class, links), and the run counters. `addresses`/`sizes`: the free
/// blocks in address order, already audited.
inline void heap::audit_runs(const std::vector<std::uintptr_t>& addresses, const std::vector<std::size_t>& sizes) const {
  using heap_impl::corrupted;
  using heap_impl::hex_string;
  using namespace runs_impl;
  const auto b = reinterpret_cast<std::uintptr_t>(m_s->m_begin);
  const auto e = reinterpret_cast<std::uintptr_t>(m_s->m_end);
  // [a, a + n) must lie in the arena and meet no free block.
  const auto held = [&](std::uintptr_t a, std::size_t n, const char* what) {
    if (a < b || a >= e || n > e - a) {
      corrupted(std::string(what) + " " + hex_string(a) + " of " + std::to_string(n) + " bytes is outside the arena [" +
                hex_string(b) + ", " + hex_string(e) + ")");
    }
    auto it = std::upper_bound(addresses.begin(), addresses.end(), a);
    if (it != addresses.end() && *it < a + n) {
      corrupted(std::string(what) + " " + hex_string(a) + " overlaps free block " + hex_string(*it));
    }
    if (it != addresses.begin()) {
      const auto i = static_cast<std::size_t>(std::prev(it) - addresses.begin());
      if (addresses[i] + sizes[i] > a)
        corrupted(std::string(what) + " " + hex_string(a) + " overlaps free block " + hex_string(addresses[i]));
    }
  };
  const class_table* t = m_s->m_classes;
  if (t == nullptr) {
    if (m_s->m_run_bytes != 0 || m_s->m_small_bytes != 0) {
      corrupted("no class table, but the run counters are " + std::to_string(m_s->m_run_bytes) + " and " +
                std::to_string(m_s->m_small_bytes) + " bytes");
    }
    return;
  }
  const auto ta = reinterpret_cast<std::uintptr_t>(t);
  if (ta % heap_quantum != 0) corrupted("class table " + hex_string(ta) + " is not quantum-aligned");
  held(ta, tree_block_size(sizeof(class_table)), "class table");
  if (t->m_magic != table_magic) corrupted("class table " + hex_string(ta) + " has a bad magic number");

  const std::size_t max_runs = (e - b) / run_bytes;
  std::vector<std::pair<std::uintptr_t, std::size_t>> runs;  // (address, bytes)
  std::size_t total_runs = 0, small_bytes = 0, run_bytes_total = tree_block_size(sizeof(class_table));
  for (std::size_t c = 0; c < class_count; ++c) {
    const class_state& cs = t->m_class[c];
    const class_info& ci = classes[c];
    std::size_t n_runs = 0, n_blocks = 0;
    for (int full = 0; full < 2; ++full) {
      const std::string list = std::string(full ? "full" : "partial") + " run list of the " +
                               std::to_string(ci.size) + "-byte class";
      const run_header* prev = nullptr;
      for (const run_header* r = full ? cs.m_full : cs.m_partial; r != nullptr; r = r->m_next) {
        const auto ra = reinterpret_cast<std::uintptr_t>(r);
        if (n_runs++ >= max_runs) corrupted(list + ": more runs than the arena holds (a cycle?)");
        if (ra % ci.run != 0) corrupted(list + ": run " + hex_string(ra) + " is not aligned to its size");
        held(ra, ci.run, "run");
        if (r->m_magic != run_magic || r->m_self != r)
          corrupted(list + ": run " + hex_string(ra) + " has a bad magic number or self link");
        if (r->m_class != c) {
          corrupted(list + ": run " + hex_string(ra) + " says class " + std::to_string(r->m_class) + ", expected " +
                    std::to_string(c));
        }
        if (r->m_prev != prev) corrupted(list + ": run " + hex_string(ra) + " has a wrong back link");
        std::size_t used = 0;
        for (std::size_t w = 0; w < bitmap_words; ++w) {
          const std::size_t lo = w * 64;
          const std::uint64_t pad =
              lo + 64 <= ci.count ? 0 : lo >= ci.count ? ~std::uint64_t{0} : ~std::uint64_t{0} << (ci.count - lo);
          if ((r->m_bits[w] & pad) != pad)
            corrupted(list + ": run " + hex_string(ra) + " has bits past its " + std::to_string(ci.count) + " blocks clear");
          used += static_cast<std::size_t>(std::popcount(r->m_bits[w] & ~pad));
          if (w < r->m_hint && r->m_bits[w] != ~std::uint64_t{0})
            corrupted(list + ": run " + hex_string(ra) + " has a free block below its search hint");
        }
        if (r->m_hint >= bitmap_words) corrupted(list + ": run " + hex_string(ra) + " has its search hint out of range");
        if (used != r->m_used || used == 0 || (full ? used != ci.count : used == ci.count)) {
          corrupted(list + ": run " + hex_string(ra) + " counts " + std::to_string(r->m_used) + " blocks in use, its bitmap " +
                    std::to_string(used) + " of " + std::to_string(ci.count));
        }
        n_blocks += used;
        runs.emplace_back(ra, ci.run);
        run_bytes_total += ci.run;
        prev = r;
      }
    }
    if (n_runs != cs.m_runs || n_blocks != cs.m_blocks) {
      corrupted("the " + std::to_string(ci.size) + "-byte class counts " + std::to_string(cs.m_runs) + " runs and " +
                std::to_string(cs.m_blocks) + " blocks, its lists hold " + std::to_string(n_runs) + " and " +
                std::to_string(n_blocks));
    }
    total_runs += n_runs;
    small_bytes += n_blocks * ci.size;
  }
  std::sort(runs.begin(), runs.end());
  for (std::size_t i = 1; i < runs.size(); ++i) {
    if (runs[i].first == runs[i - 1].first) corrupted("a run is in two lists");
    if (runs[i - 1].first + runs[i - 1].second > runs[i].first)
      corrupted("run " + hex_string(runs[i - 1].first) + " overlaps run " + hex_string(runs[i].first));
  }
  {
    const std::uintptr_t te = ta + tree_block_size(sizeof(class_table));
    const auto it = std::upper_bound(runs.begin(), runs.end(), std::pair<std::uintptr_t, std::size_t>{ta, SIZE_MAX});
    if ((it != runs.begin() && std::prev(it)->first + std::prev(it)->second > ta) || (it != runs.end() && it->first < te))
      corrupted("class table " + hex_string(ta) + " overlaps a run");
  }
  if (t->m_runs != total_runs || total_runs == 0) {
    corrupted("class table counts " + std::to_string(t->m_runs) + " runs, the lists hold " + std::to_string(total_runs));
  }
  if (m_s->m_run_bytes != run_bytes_total || m_s->m_small_bytes != small_bytes ||
      m_s->m_allocated_bytes < m_s->m_run_bytes) {
    corrupted("run byte counters are " + std::to_string(m_s->m_run_bytes) + " and " + std::to_string(m_s->m_small_bytes) +
              ", the runs hold " + std::to_string(run_bytes_total) + " and " + std::to_string(small_bytes));
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
  std::vector<std::size_t> sizes;
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
    if (block.m_holes_end != 0 &&
        (block.m_holes_end <= heap_impl::holes_begin(a) || block.m_holes_end - a > size)) {
      corrupted("free block " + hex_string(a) + " of " + std::to_string(size) + " bytes records holes up to " +
                hex_string(block.m_holes_end) + ", outside its pages");
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
    sizes.push_back(size);
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

  audit_runs(addresses, sizes);

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
