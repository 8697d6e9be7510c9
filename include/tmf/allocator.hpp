// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// `tmf::allocator<T>`: allocates in a storage, from inside its write transactions.
#ifndef TMF_ALLOCATOR_HPP
#define TMF_ALLOCATOR_HPP

#include <cstddef>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "detail/engine.hpp"
#include "error.hpp"

namespace tmf {

/// A C++ Allocator over a storage's heap.
///
/// It holds only the storage's fixed address, which is the same in every process, so an
/// allocator stored inside a container in the file is valid after a restart. Allocating
/// and deallocating need the calling thread to hold that storage's writer. Allocators are
/// equal when bound to the same storage; they never propagate, so a container stays in its
/// storage (assigning between storages copies elements).
///
/// Elements belong to their container's storage: construct() does uses-allocator
/// construction, as std::pmr::polymorphic_allocator does, so a tmf container or string
/// built as an element of a tmf container (emplace, insert, copies, moves) gets an
/// allocator bound to the same storage, whichever storage has the thread's innermost writer.
template <class T>
class allocator {
 public:
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using propagate_on_container_copy_assignment = std::false_type;
  using propagate_on_container_move_assignment = std::false_type;
  using propagate_on_container_swap = std::false_type;
  using is_always_equal = std::false_type;

  /// Binds to the storage of this thread's innermost active writer.
  /// \throws tmf::error{errc::no_writer} if this thread holds no writer.
  allocator() : m_base(current_base()) {}

  /// (tmf extension) Binds to the storage whose arena starts at `storage_address`
  /// (`storage::address()`).
  explicit allocator(void* storage_address) noexcept : m_base(storage_address) {}

  template <class U>
  allocator(const allocator<U>& other) noexcept : m_base(other.address()) {}

  /// Allocates room for `n` objects, aligned to alignof(T).
  /// \throws std::bad_alloc when max_size or the disk is exhausted;
  ///         tmf::error{errc::no_writer} if this thread holds no writer of the storage.
  [[nodiscard]] T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    detail::engine* e = detail::find_engine(m_base);
    if (!e) throw error(errc::no_writer, "tmf: allocation in a storage that is not open in this process");
    return static_cast<T*>(e->allocate(n * sizeof(T), alignof(T)));
  }

  /// Frees what `allocate(n)` returned. A double or invalid free terminates the process.
  void deallocate(T* p, std::size_t n) noexcept {
    detail::engine* e = detail::find_engine(m_base);
    if (!e) detail::fatal("deallocate in a storage that is not open in this process");
    e->deallocate(p, n * sizeof(T));
  }

  /// Constructs a `U` at `p` by uses-allocator construction with this allocator
  /// (std::uninitialized_construct_using_allocator): a `U` that takes an allocator (a tmf
  /// container, tmf::string, a std::pair of them) is bound to this allocator's storage.
  /// \throws whatever U's constructor throws (std::bad_alloc when the storage is full).
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    std::uninitialized_construct_using_allocator(p, *this, std::forward<Args>(args)...);
  }

  /// (tmf extension) The address of the storage this allocator is bound to.
  void* address() const noexcept { return m_base; }

  template <class U>
  friend bool operator==(const allocator& a, const allocator<U>& b) noexcept {
    return a.m_base == b.address();
  }

 private:
  static void* current_base() {
    detail::engine* e = detail::this_thread().writers.top();
    if (!e) throw error(errc::no_writer, "tmf: tmf::allocator<T>() constructed outside a write transaction");
    return e->base();
  }

  void* m_base;
};

}  // namespace tmf

#endif  // TMF_ALLOCATOR_HPP
