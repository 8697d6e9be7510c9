// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Helpers shared by heap_test.cpp and heap_audit_test.cpp: an arena over a plain buffer
/// (`arena`), its free blocks as (offset, size) pairs (`free_list`) and a chosen free-block
/// layout (`make_layout`).
#ifndef TMF_TESTS_DETAIL_HEAP_TEST_SUPPORT_HPP
#define TMF_TESTS_DETAIL_HEAP_TEST_SUPPORT_HPP

#include <tmf/detail/heap.hpp>

#include <gtest/gtest.h>

#include "test_support.hpp"

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

namespace tmf_test::heap_tests {

using tmf::detail::heap;
using tmf::detail::heap_quantum;
using tmf::detail::heap_state;
using tmf::detail::page_size;
namespace heap_impl = tmf::detail::heap_impl;

inline constexpr std::size_t q = heap_quantum;

/// A page-aligned buffer whose first `size` bytes are the arena (it may grow up to the
/// buffer's capacity), with the heap_state in separate memory, as in a real storage.
class arena {
 public:
  explicit arena(std::size_t size, std::size_t capacity = std::size_t{4} << 20)
      : m_capacity(capacity),
        m_buffer(static_cast<std::byte*>(tmf_test::aligned_alloc(page_size, capacity))),
        m_state(std::make_unique<state_bytes>()) {
    std::memset(m_buffer, 0xee, capacity);  // garbage: the heap must not rely on zeroed memory
    heap::create(state(), m_buffer, m_buffer + size);
  }
  ~arena() { tmf_test::aligned_free(m_buffer); }
  arena(const arena&) = delete;
  arena& operator=(const arena&) = delete;

  heap_state* state() noexcept { return reinterpret_cast<heap_state*>(m_state->bytes); }
  heap h() noexcept { return heap(state()); }
  std::byte* base() const noexcept { return m_buffer; }
  std::byte* at(std::size_t offset) const noexcept { return m_buffer + offset; }
  std::size_t capacity() const noexcept { return m_capacity; }

 private:
  struct state_bytes {
    alignas(heap_state) unsigned char bytes[sizeof(heap_state)];
  };
  std::size_t m_capacity;
  std::byte* m_buffer;
  std::unique_ptr<state_bytes> m_state;
};

using block_list = std::vector<std::pair<std::size_t, std::size_t>>;  // (offset, size)

/// The free blocks as (offset from the buffer, size), in address order.
inline block_list free_list(arena& a) {
  block_list out;
  a.h().for_each_free_block([&](void* p, std::size_t size) {
    out.emplace_back(static_cast<std::size_t>(static_cast<std::byte*>(p) - a.base()), size);
  });
  return out;
}

/// Makes the whole arena allocated, then frees exactly `ranges` (offset, size): the free
/// blocks are then exactly these ranges (if no two touch).
inline void make_layout(arena& a, const block_list& ranges) {
  heap h = a.h();
  const auto total = static_cast<std::size_t>(static_cast<std::byte*>(h.end()) - a.base());
  ASSERT_EQ(h.tree_allocate(total, 1), a.base());
  ASSERT_EQ(h.free_blocks(), 0u);
  for (const auto& [off, size] : ranges) h.tree_deallocate(a.at(off), size);
  ASSERT_NO_THROW(h.check());
  ASSERT_EQ(free_list(a), ranges);
}

}  // namespace tmf_test::heap_tests

#endif  // TMF_TESTS_DETAIL_HEAP_TEST_SUPPORT_HPP
