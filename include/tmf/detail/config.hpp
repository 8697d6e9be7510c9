// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Build-wide constants, number formatting for messages, and the internal assertion macros
/// (their failure path, `assertion_failed`, and `fatal` are in os.hpp: they write to stderr).
#ifndef TMF_DETAIL_CONFIG_HPP
#define TMF_DETAIL_CONFIG_HPP

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

/// Assertion level: 0 none, 1 cheap checks (default), 2 also expensive ones (debug builds).
#ifndef TMF_ASSERT_LEVEL
#ifdef NDEBUG
#define TMF_ASSERT_LEVEL 1
#else
#define TMF_ASSERT_LEVEL 2
#endif
#endif

namespace tmf::detail {

/// The page size tmf is built for; checked against the OS at open and stored in every file.
inline constexpr std::size_t page_size = 4096;

/// Heap granularity: every block size and address is a multiple of it.
inline constexpr std::size_t heap_quantum = sizeof(void*) == 8 ? 64 : 32;

/// Formats `v` as 0x-prefixed hex into `buf` (at least 19 bytes); async-signal-safe.
inline const char* format_hex(std::uintptr_t v, char* buf) noexcept {
  char tmp[2 * sizeof v];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v != 0);
  char* p = buf;
  *p++ = '0';
  *p++ = 'x';
  while (n > 0) *p++ = tmp[--n];
  *p = '\0';
  return buf;
}

/// Formats `v` in decimal into `buf` (at least 21 bytes); async-signal-safe.
inline const char* format_dec(std::uint64_t v, char* buf) noexcept {
  char tmp[20];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  char* p = buf;
  while (n > 0) *p++ = tmp[--n];
  *p = '\0';
  return buf;
}

}  // namespace tmf::detail

#if TMF_ASSERT_LEVEL >= 1
/// Internal invariant, checked unless TMF_ASSERT_LEVEL is 0.
#define TMF_ASSERT(expr) \
  ((expr) ? static_cast<void>(0) : ::tmf::detail::assertion_failed(#expr, __FILE__, __LINE__))
#else
#define TMF_ASSERT(expr) static_cast<void>(0)
#endif

#if TMF_ASSERT_LEVEL >= 2
/// Invariant too costly for release builds (walks a structure); checked at level 2.
#define TMF_ASSERT_EXPENSIVE(expr) TMF_ASSERT(expr)
#else
#define TMF_ASSERT_EXPENSIVE(expr) static_cast<void>(0)
#endif

#endif  // TMF_DETAIL_CONFIG_HPP
