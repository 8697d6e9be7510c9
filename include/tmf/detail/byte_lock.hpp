// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The byte locks every process takes on a storage's files (their meaning: locks.hpp), and
/// an RAII holder for one of them.
#ifndef TMF_DETAIL_BYTE_LOCK_HPP
#define TMF_DETAIL_BYTE_LOCK_HPP

#include <cstdint>
#include <system_error>
#include <utility>

#include "os.hpp"

namespace tmf::detail {

inline constexpr std::uint64_t lock_open = 0, lock_writer = 1, lock_apply = 2, lock_turnstile = 3, lock_table = 4;

/// True for the error of a lock that was not taken because `wait` was false.
inline bool would_block(std::error_code ec) noexcept { return ec == std::errc::resource_unavailable_try_again; }

/// One byte lock, released by the destructor. Locking again while held converts it
/// (shared <-> exclusive) atomically, as fcntl does.
class byte_lock {
 public:
  byte_lock() noexcept = default;
  byte_lock(byte_lock&& o) noexcept : m_file(std::exchange(o.m_file, nullptr)), m_which(o.m_which) {}
  byte_lock& operator=(byte_lock&& o) noexcept {
    if (this != &o) {
      unlock();
      m_file = std::exchange(o.m_file, nullptr);
      m_which = o.m_which;
    }
    return *this;
  }
  byte_lock(const byte_lock&) = delete;
  byte_lock& operator=(const byte_lock&) = delete;
  ~byte_lock() { unlock(); }

  /// Takes byte `which` of `f`. Without `wait`, a lock held elsewhere gives `would_block`.
  /// On failure, a lock held before stays as it was.
  std::error_code lock(const os::file& f, std::uint64_t which, os::lock_kind kind, bool wait = true) noexcept {
    if (auto ec = os::lock_byte(f, which, kind, wait)) return ec;
    m_file = &f;
    m_which = which;
    return {};
  }
  bool owns() const noexcept { return m_file != nullptr; }
  void unlock() noexcept {
    if (m_file) os::unlock_byte(*m_file, m_which);
    m_file = nullptr;
  }
  /// Forgets the lock without releasing it (a forked child: the lock is the parent's).
  void abandon() noexcept { m_file = nullptr; }

 private:
  const os::file* m_file = nullptr;
  std::uint64_t m_which = 0;
};

}  // namespace tmf::detail

#endif  // TMF_DETAIL_BYTE_LOCK_HPP
