// SPDX-License-Identifier: Apache-2.0 OR MIT
// User code built with AddressSanitizer: blocks that a user container has partly poisoned
// (as libc++'s vector and absl's containers do with their unused slots) are committed
// (checksummed and written to the log and the data file), freed (the heap writes a
// free-block header into them) and audited, without an ASan report. In builds without ASan
// the same transactions run and the data is checked.
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>

#include "test_support.hpp"

#if TMF_ASAN
#include <sanitizer/asan_interface.h>
#define TMF_TEST_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#else
#define TMF_TEST_POISON(p, n) static_cast<void>(0)
#endif

namespace {

struct asan_root {
  unsigned char* block = nullptr;
  std::size_t size = 0;
};

constexpr std::size_t block_bytes = 3 * 4096;

TEST(Sanitizer, PoisonedBytesAreCommittedFreedAndAudited) {
  tmf_test::scoped_path path;
  {
    tmf::storage<asan_root> s(path);
    {
      auto w = s.write();
      unsigned char* b = w.get_allocator<unsigned char>().allocate(block_bytes);
      for (std::size_t i = 0; i < block_bytes; ++i) b[i] = static_cast<unsigned char>(i * 7);
      w->block = b;
      w->size = block_bytes;
      // Everything past the first 100 bytes is "unused capacity", as a vector marks it.
      TMF_TEST_POISON(b + 100, block_bytes - 100);
      w.commit();  // the checksum and the log write read the poisoned bytes
    }
    s.check();
    {
      auto r = s.read();
      for (std::size_t i = 0; i < 100; ++i) ASSERT_EQ(r->block[i], static_cast<unsigned char>(i * 7)) << i;
    }
    {
      auto w = s.write();
      TMF_TEST_POISON(w->block, 100);  // the whole block is poisoned now, header quantum included
      unsigned char* b = w->block;
      w.get_allocator<unsigned char>().deallocate(b, block_bytes);  // writes a free-block header at b
#if TMF_ASAN
      EXPECT_EQ(__asan_region_is_poisoned(b, block_bytes), nullptr) << "a freed block is addressable again";
#endif
      w->block = nullptr;
      w->size = 0;
      w.commit();
    }
    s.check();
    {
      // The freed block is reused; its bytes are plain memory again.
      auto w = s.write();
      unsigned char* b = w.get_allocator<unsigned char>().allocate(block_bytes);
      b[block_bytes - 1] = 1;
      w->block = b;
      w->size = block_bytes;
      w.commit();
    }
  }
  tmf::storage<asan_root> again(path);  // recovery and checkpoint read the pages again
  again.check();
  auto r = again.read();
  EXPECT_EQ(r->size, block_bytes);
  EXPECT_EQ(r->block[block_bytes - 1], 1);
}

}  // namespace
