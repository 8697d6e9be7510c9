// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The process's registry of open storages, and what each thread holds.
///
/// The registry is a fixed array of slots in static storage, never freed, so that the fault
/// handler (tracker.hpp) can read a slot while another thread closes its storage. A slot is
/// claimed by an engine at open, filled in once its mapping exists (`publish`, which makes
/// the handler see it), and released at close. The fields the handler reads are atomics;
/// the file identity that refuses a second open of one file is guarded by the registry's
/// mutex. Allocators find their engine here by the storage's address.
///
/// `thread_state` lists the transactions the calling thread holds: it refuses self-deadlocks
/// (a writer on a thread that reads the same storage) and binds default-constructed
/// allocators to the innermost writer.
#ifndef TMF_DETAIL_REGISTRY_HPP
#define TMF_DETAIL_REGISTRY_HPP

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <system_error>

#include "../error.hpp"
#include "os.hpp"

namespace tmf::detail {

class engine;
class dirty_set;

inline constexpr std::size_t max_open_storages = 64;

/// One open storage as the fault handler and the allocators see it.
struct storage_slot {
  std::atomic<std::uintptr_t> begin{0};    ///< start of the reservation; 0 while unpublished
  std::atomic<std::uintptr_t> mapped{0};   ///< bytes of the file mapped from begin
  std::atomic<std::uintptr_t> reserved{0};  ///< bytes reserved from begin
  std::atomic<std::uintptr_t> writer{0};   ///< the writing thread (os::current_thread()); 0: none
  std::atomic<std::uint64_t> generation{0};  ///< os::fork_generation() of the opening process
  std::atomic<engine*> owner{nullptr};     ///< the engine; nullptr: slot free
  std::atomic<dirty_set*> dirty{nullptr};  ///< where the handler records written pages
  std::atomic<const char*> name{nullptr};  ///< file path, for messages
  std::uint64_t device = 0, inode = 0;     ///< the file's identity; guarded by registry_mutex()
};

/// The slots (static, never freed).
inline storage_slot* registry() noexcept {
  static storage_slot slots[max_open_storages];
  return slots;
}

/// Serialises claiming and releasing slots (never taken by the fault handler).
inline std::mutex& registry_mutex() noexcept {
  static std::mutex m;
  return m;
}

/// Claims a free slot for `owner`, whose data file is `fi`. Fails with errc::already_open if
/// that file is already open in this process, std::errc::too_many_files_open if every slot
/// is taken.
inline std::error_code claim_slot(engine* owner, const os::file_info& fi, storage_slot*& out) noexcept {
  std::lock_guard<std::mutex> g(registry_mutex());
  storage_slot* free_slot = nullptr;
  for (std::size_t i = 0; i < max_open_storages; ++i) {
    storage_slot& s = registry()[i];
    if (s.owner.load() == nullptr) {
      if (!free_slot) free_slot = &s;
    } else if (s.device == fi.device && s.inode == fi.inode) {
      return make_error_code(errc::already_open);
    }
  }
  if (!free_slot) return std::make_error_code(std::errc::too_many_files_open);
  free_slot->device = fi.device;
  free_slot->inode = fi.inode;
  free_slot->owner.store(owner);
  out = free_slot;
  return {};
}

/// Makes an opened storage visible to the fault handler and to `find_engine`.
inline void publish_slot(storage_slot& s, void* base, std::size_t reserved, dirty_set* dirty, std::uint64_t generation,
                         const char* name) noexcept {
  s.reserved.store(reserved, std::memory_order_relaxed);
  s.dirty.store(dirty, std::memory_order_relaxed);
  s.generation.store(generation, std::memory_order_relaxed);
  s.name.store(name, std::memory_order_relaxed);
  s.begin.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_release);
}

/// Hides the storage from the fault handler (before its mapping goes away).
inline void unpublish_slot(storage_slot& s) noexcept { s.begin.store(0, std::memory_order_release); }

/// Frees the slot for another storage.
inline void release_slot(storage_slot& s) noexcept {
  std::lock_guard<std::mutex> g(registry_mutex());
  s.begin.store(0, std::memory_order_release);
  s.writer.store(0);
  s.device = s.inode = 0;
  s.owner.store(nullptr);
}

/// The engine whose arena starts at `base` in this process, or nullptr. The per-thread
/// cache holds a slot (static, never freed), not an engine: a storage closed and another
/// opened at the same address is seen through the slot's current owner.
inline engine* find_engine(const void* base) noexcept {
  const auto want = reinterpret_cast<std::uintptr_t>(base);
  thread_local storage_slot* cached = nullptr;
  if (cached && cached->begin.load(std::memory_order_acquire) == want)
    return cached->owner.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < max_open_storages; ++i) {
    storage_slot& s = registry()[i];
    if (s.begin.load(std::memory_order_acquire) == want) {
      cached = &s;
      return s.owner.load(std::memory_order_acquire);
    }
  }
  return nullptr;
}

/// A small stack of engines (a thread's writers or readers), innermost last.
class engine_stack {
 public:
  static constexpr std::size_t capacity = 32;
  bool full() const noexcept { return m_count == capacity; }
  bool empty() const noexcept { return m_count == 0; }
  bool contains(const engine* e) const noexcept { return std::find(m_items, m_items + m_count, e) != m_items + m_count; }
  engine* top() const noexcept { return m_count ? m_items[m_count - 1] : nullptr; }
  /// \pre !full()
  void push(engine* e) noexcept { m_items[m_count++] = e; }
  /// Removes the innermost entry of `e`, if any.
  void remove(const engine* e) noexcept {
    for (std::size_t i = m_count; i-- > 0;)
      if (m_items[i] == e) {
        std::copy(m_items + i + 1, m_items + m_count, m_items + i);
        --m_count;
        return;
      }
  }

 private:
  engine* m_items[capacity]{};
  std::size_t m_count = 0;  // constant-initialised: a thread_local of this type needs no guard
};

/// What the calling thread holds.
struct thread_state {
  engine_stack writers;  ///< active writers, innermost last
  engine_stack readers;  ///< one entry per active read transaction
};

inline thread_state& this_thread() noexcept {
  thread_local thread_state state{};
  return state;
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_REGISTRY_HPP
