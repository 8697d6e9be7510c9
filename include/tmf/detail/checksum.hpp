// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// A 64-bit checksum for headers, log records and pages: the xxHash64 construction (four
/// multiply-rotate lanes over 32-byte stripes), about 8 bytes per cycle, deterministic on
/// every platform and word size. Not a cryptographic hash: it detects torn and bit-rotted
/// data, not an adversary.
#ifndef TMF_DETAIL_CHECKSUM_HPP
#define TMF_DETAIL_CHECKSUM_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "sanitizer.hpp"

namespace tmf::detail {

namespace checksum_impl {
inline constexpr std::uint64_t p1 = 0x9E3779B185EBCA87ULL;
inline constexpr std::uint64_t p2 = 0xC2B2AE3D27D4EB4FULL;
inline constexpr std::uint64_t p3 = 0x165667B19E3779F9ULL;
inline constexpr std::uint64_t p4 = 0x85EBCA77C2B2AE63ULL;
inline constexpr std::uint64_t p5 = 0x27D4EB2F165667C5ULL;

inline std::uint64_t rotl(std::uint64_t x, int r) noexcept { return (x << r) | (x >> (64 - r)); }

// Pages may hold bytes that user containers poisoned for ASan: these reads are exempt, and
// under ASan they are byte loads (a memcpy call would be checked by its interceptor).
TMF_NO_SANITIZE_ADDRESS inline std::uint64_t read64(const unsigned char* p) noexcept {
#if TMF_ASAN
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
#else
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // little-endian hosts only (checked by the format layer)
#endif
}
TMF_NO_SANITIZE_ADDRESS inline std::uint32_t read32(const unsigned char* p) noexcept {
#if TMF_ASAN
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
#else
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
#endif
}
inline std::uint64_t round(std::uint64_t acc, std::uint64_t input) noexcept {
  return rotl(acc + input * p2, 31) * p1;
}
inline std::uint64_t merge(std::uint64_t acc, std::uint64_t lane) noexcept {
  return (acc ^ round(0, lane)) * p1 + p4;
}
}  // namespace checksum_impl

/// Checksum of `n` bytes at `data`, seeded with `seed` (chain records by passing the
/// previous checksum as seed).
TMF_NO_SANITIZE_ADDRESS inline std::uint64_t checksum(const void* data, std::size_t n, std::uint64_t seed = 0) noexcept {
  using namespace checksum_impl;
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* end = p + n;
  std::uint64_t h;
  if (n >= 32) {
    std::uint64_t v1 = seed + p1 + p2, v2 = seed + p2, v3 = seed, v4 = seed - p1;
    const unsigned char* limit = end - 32;
    do {
      v1 = round(v1, read64(p));
      v2 = round(v2, read64(p + 8));
      v3 = round(v3, read64(p + 16));
      v4 = round(v4, read64(p + 24));
      p += 32;
    } while (p <= limit);
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge(h, v1);
    h = merge(h, v2);
    h = merge(h, v3);
    h = merge(h, v4);
  } else {
    h = seed + p5;
  }
  h += static_cast<std::uint64_t>(n);
  // Remaining lengths, not pointers past the end (p may be null when n is 0).
  while (static_cast<std::size_t>(end - p) >= 8) {
    h ^= round(0, read64(p));
    h = rotl(h, 27) * p1 + p4;
    p += 8;
  }
  if (static_cast<std::size_t>(end - p) >= 4) {
    h ^= static_cast<std::uint64_t>(read32(p)) * p1;
    h = rotl(h, 23) * p2 + p3;
    p += 4;
  }
  while (p < end) {
    h ^= (*p) * p5;
    h = rotl(h, 11) * p1;
    ++p;
  }
  h ^= h >> 33;
  h *= p2;
  h ^= h >> 29;
  h *= p3;
  h ^= h >> 32;
  return h;
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_CHECKSUM_HPP
