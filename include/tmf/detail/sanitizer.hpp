// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// AddressSanitizer support for user code built with it.
///
/// User containers mark their unused slots as poisoned (libc++'s vector, absl's containers,
/// libstdc++ with _GLIBCXX_SANITIZE_VECTOR). tmf itself reads and writes such bytes where it
/// handles whole pages or free blocks: the commit's checksum, the copies between the mapping
/// and the files, and the header a freed block receives. Those routines are exempt
/// (TMF_NO_SANITIZE_ADDRESS, system calls that bypass ASan's interceptors in os.hpp), and a
/// freed block is unpoisoned, as malloc does, before the heap writes into it. Without ASan
/// everything here compiles to nothing.
#ifndef TMF_DETAIL_SANITIZER_HPP
#define TMF_DETAIL_SANITIZER_HPP

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define TMF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TMF_ASAN 1
#endif
#endif
#ifndef TMF_ASAN
#define TMF_ASAN 0
#endif

#if TMF_ASAN
#include <sanitizer/asan_interface.h>
/// Exempts a routine that reads or writes whole pages from AddressSanitizer's checks.
#define TMF_NO_SANITIZE_ADDRESS __attribute__((no_sanitize("address")))
#else
#define TMF_NO_SANITIZE_ADDRESS
#endif

namespace tmf::detail {

/// Makes `[p, p + n)` addressable again for ASan (a freed block, before the heap writes in it).
inline void asan_unpoison([[maybe_unused]] const void* p, [[maybe_unused]] std::size_t n) noexcept {
#if TMF_ASAN
  __asan_unpoison_memory_region(p, n);
#endif
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_SANITIZER_HPP
