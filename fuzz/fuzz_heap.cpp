// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// libFuzzer target: tmf::detail::heap driven through its API by a byte-coded sequence of
/// operations, against a model of the live blocks.
///
/// Input: two bytes of set-up (initial arena size in quanta, offset of the arena in the
/// buffer), then operations, each an opcode byte and its operands:
///   0 allocate(size, align)   size: 2 bytes (scaled by the third byte's top bits), align:
///                             a power of two up to 2 * page_size, or (rarely) not one.
///                             On nullptr, grows by growth_needed() when it fits the buffer
///                             and retries, which must then succeed.
///   1 deallocate              the live block picked by the next byte
///   2 grow                    by the next byte * quantum (within the buffer)
///   3 check
///   4 free half               every other live block (makes holes)
///   5 corrupt                 xors a byte (next three bytes: which free block's node, run
///                             header or the heap state; offset; value) and audits: from
///                             then on check() must either pass or throw errc::corrupted,
///                             reading only inside the arena; no other operation runs any more
///
/// Sizes below run_limit come from size-class runs (the third byte's top bits 0 keep every
/// request there: up to 1 KiB the small tier's 16 KiB runs, above it the large tier's runs of
/// 128 KiB to 1 MiB), larger ones from the trees.
/// Oracle: allocate returns an aligned block inside the arena overlapping no live block (or,
/// for a tree block of a small alignment, nullptr exactly when the model says no free block
/// can hold it); the counters match the model, per size class too; no free block overlaps a
/// live block; check() never throws; and (AddressSanitizer) the heap never touches a live
/// block's bytes or the buffer past the arena end: both are poisoned (a run's header is the
/// heap's, its free slots are not poisoned). Freeing everything leaves one free block.
#include <tmf/detail/heap.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <new>
#include <string>
#include <vector>

#include <tmf/error.hpp>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define FUZZ_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define FUZZ_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#endif
#endif
#ifndef FUZZ_POISON
#define FUZZ_POISON(p, n) ((void)(p), (void)(n))
#define FUZZ_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace {

namespace td = tmf::detail;
using td::heap;
using td::heap_quantum;
using td::page_size;

constexpr std::size_t buffer_bytes = std::size_t{8} << 20;  // room for the large tier's 1 MiB runs
alignas(page_size) unsigned char g_buffer[buffer_bytes + page_size];
alignas(16) unsigned char g_state[sizeof(td::heap_state)];

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "tmf fuzz_heap: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

struct input_reader {
  const std::uint8_t* p;
  std::size_t n;
  bool empty() const { return n == 0; }
  std::uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::uint16_t word() { return static_cast<std::uint16_t>(byte() | (byte() << 8)); }
};

struct model {
  std::map<std::uintptr_t, std::size_t> live;  ///< address -> block size (block_size(request))
  std::map<std::uintptr_t, std::size_t> request;  ///< address -> requested size
  std::map<std::uintptr_t, std::size_t> klass;    ///< address -> size class (blocks of runs)
  std::size_t allocated = 0;
};

void audit(const heap& h, const model& m, std::uintptr_t begin, std::uintptr_t end) {
  try {
    h.check();
  } catch (const std::exception& e) {
    fail(std::string("check() threw on a heap driven through its API: ") + e.what());
  }
  if (reinterpret_cast<std::uintptr_t>(h.begin()) != begin || reinterpret_cast<std::uintptr_t>(h.end()) != end)
    fail("heap bounds moved");
  if (h.allocated_bytes() != m.allocated)
    fail("allocated_bytes " + std::to_string(h.allocated_bytes()) + " != model " + std::to_string(m.allocated));
  if (h.allocated_bytes() + h.free_bytes() + h.spare_bytes() != end - begin) fail("allocated + free + spare != arena");
  std::vector<std::size_t> per_class(heap::size_class_count());
  for (const auto& [a, c] : m.klass) ++per_class[c];
  for (std::size_t c = 0; c < per_class.size(); ++c) {
    const auto st = h.class_stats(c);
    if (st.blocks != per_class[c] || st.bytes != per_class[c] * st.block_size)
      fail("class " + std::to_string(c) + " counts " + std::to_string(st.blocks) + " blocks, the model " +
           std::to_string(per_class[c]));
  }
  std::size_t blocks = 0, largest = 0;
  h.for_each_free_block([&](void* p, std::size_t size) {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    ++blocks;
    largest = std::max(largest, size);
    // No live block may intersect [a, a + size).
    auto it = m.live.upper_bound(a);
    if (it != m.live.end() && it->first < a + size) fail("a free block overlaps a live block above it");
    if (it != m.live.begin()) {
      --it;
      if (it->first + it->second > a) fail("a free block overlaps a live block below it");
    }
  });
  if (blocks != h.free_blocks()) fail("free_blocks() differs from the blocks visited");
  if (largest != h.largest_free_block()) fail("largest_free_block() differs from the blocks visited");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input_reader in{data, size};
  const std::size_t initial = static_cast<std::size_t>(in.byte()) * 16 * heap_quantum;  // up to ~255 KiB
  const std::size_t shift = static_cast<std::size_t>(in.byte() % 64) * heap_quantum;    // any quantum offset
  unsigned char* const begin_p = g_buffer + shift;
  const auto begin = reinterpret_cast<std::uintptr_t>(begin_p);
  const std::uintptr_t limit = reinterpret_cast<std::uintptr_t>(g_buffer) + buffer_bytes;
  std::uintptr_t end = begin + initial;

  FUZZ_UNPOISON(g_buffer, sizeof g_buffer);
  FUZZ_POISON(reinterpret_cast<void*>(end), sizeof g_buffer - (end - reinterpret_cast<std::uintptr_t>(g_buffer)));
  FUZZ_POISON(g_buffer, shift);
  auto* s = reinterpret_cast<td::heap_state*>(g_state);
  heap::create(s, begin_p, reinterpret_cast<void*>(end));
  heap h(s);
  model m;
  audit(h, m, begin, end);

  auto grow_to = [&](std::uintptr_t ne) {
    FUZZ_UNPOISON(reinterpret_cast<void*>(end), ne - end);
    h.grow(reinterpret_cast<void*>(ne));
    end = ne;
  };
  auto free_block = [&](std::map<std::uintptr_t, std::size_t>::iterator it) {
    const std::uintptr_t a = it->first;
    const std::size_t bs = it->second;
    FUZZ_UNPOISON(reinterpret_cast<void*>(a), bs);
    h.deallocate(reinterpret_cast<void*>(a), m.request.at(a));
    m.allocated -= bs;
    m.request.erase(a);
    m.klass.erase(a);
    m.live.erase(it);
  };

  bool corrupted = false;
  std::vector<unsigned char*> nodes;  // the free blocks when the first corruption happened
  std::vector<unsigned char*> runs;   // the runs then
  auto audit_corrupted = [&] {
    try {
      h.check();
    } catch (const tmf::error& e) {
      if (e.code() != tmf::errc::corrupted) fail(std::string("check() threw an unexpected error: ") + e.what());
    } catch (const std::exception& e) {
      fail(std::string("check() threw an unexpected exception: ") + e.what());
    }
  };

  int ops = 0;
  while (!in.empty() && ops++ < 4096) {
    const unsigned op = in.byte() % 6u;
    if (corrupted && op != 3 && op != 5) continue;
    switch (op) {
      case 0: {  // allocate
        const std::uint16_t w = in.word();
        const std::uint8_t a = in.byte();
        std::size_t request = static_cast<std::size_t>(w) << ((a >> 6) * 2);  // up to 64 Ki << 6
        std::size_t align;
        if ((a & 0x3f) == 0x3f) {
          align = static_cast<std::size_t>(w % 300);  // mostly not a power of two (0 included)
        } else {
          align = std::size_t{1} << ((a & 0x3f) % 14);  // 1 .. 8192 (above page_size: refused)
        }
        const bool valid_align = std::has_single_bit(align) && align <= page_size;
        void* p = h.allocate(request, align);
        if (p == nullptr && valid_align) {
          const std::size_t need = h.growth_needed(request, align);
          if (need == std::numeric_limits<std::size_t>::max()) fail("growth_needed() says impossible for a valid request");
          if (need == 0) fail("allocate() failed though growth_needed() says the top block fits");
          if (need <= limit - end) {
            grow_to(end + need);
            p = h.allocate(request, align);
            if (p == nullptr) fail("allocate() failed after growing by growth_needed()");
          }
        }
        const bool small = td::served_by_runs(request);  // from a run
        if (p == nullptr) {
          if (valid_align && !small && align <= heap_quantum && heap::block_size(request) <= h.largest_free_block())
            fail("allocate() returned nullptr though a free block is large enough");
          break;
        }
        if (!valid_align) fail("allocate() accepted an invalid alignment " + std::to_string(align));
        const auto pa = reinterpret_cast<std::uintptr_t>(p);
        const std::size_t bs = heap::block_size(request, align);
        if (pa % align != 0 || (!small && pa % heap_quantum != 0)) fail("allocate() returned a misaligned block");
        if (small && pa % 8 != 0) fail("allocate() returned a small block not 8-aligned");
        if (pa < begin || pa + bs > end) fail("allocate() returned a block outside the arena");
        auto it = m.live.upper_bound(pa);
        if (it != m.live.end() && it->first < pa + bs) fail("allocate() returned a block overlapping a live one");
        if (it != m.live.begin() && std::prev(it)->first + std::prev(it)->second > pa)
          fail("allocate() returned a block overlapping a live one");
        m.live.emplace(pa, bs);
        m.request.emplace(pa, request);
        if (small) m.klass.emplace(pa, td::runs_impl::class_of(request, align));
        m.allocated += bs;
        std::memset(p, 0xa5, bs);  // the whole block is the caller's
        FUZZ_POISON(p, bs);
        break;
      }
      case 1: {  // deallocate
        if (m.live.empty()) break;
        auto it = m.live.begin();
        std::advance(it, in.byte() % m.live.size());
        free_block(it);
        break;
      }
      case 2: {  // grow
        const std::size_t by = static_cast<std::size_t>(in.byte()) * heap_quantum;
        if (by <= limit - end) grow_to(end + by);
        break;
      }
      case 3:
        if (corrupted)
          audit_corrupted();
        else
          audit(h, m, begin, end);
        break;
      case 4: {  // free every other live block
        bool odd = false;
        for (auto it = m.live.begin(); it != m.live.end();) {
          auto next = std::next(it);
          if (odd) free_block(it);
          odd = !odd;
          it = next;
        }
        break;
      }
      case 5: {  // corrupt one byte of a free block's node or of the state, then audit
        const std::uint8_t which = in.byte(), offset = in.byte(), value = in.byte();
        if (!corrupted) {
          // check() may now follow a corrupted link into a live block: reading it is allowed
          // (it is arena memory), so nothing in the arena stays poisoned.
          FUZZ_UNPOISON(begin_p, end - begin);
          corrupted = true;
          // Walked once, while the trees are sound: never iterate a corrupted tree.
          h.for_each_free_block([&](void* p, std::size_t) { nodes.push_back(static_cast<unsigned char*>(p)); });
          for (const auto& [a, c] : m.klass) {
            auto* r = reinterpret_cast<unsigned char*>(a & ~static_cast<std::uintptr_t>(td::runs_impl::classes[c].run - 1));
            if (std::find(runs.begin(), runs.end(), r) == runs.end()) runs.push_back(r);
          }
        }
        const std::uint8_t v = value;
        const std::size_t at = which % 4 == 0 || nodes.empty() ? offset % sizeof g_state : offset % heap_quantum;
        unsigned char saved[sizeof g_state];
        std::memcpy(saved, g_state, sizeof g_state);
        if (which % 4 == 0 || nodes.empty()) {
          g_state[at] ^= v;
        } else if (which % 4 == 1 && !runs.empty()) {
          // A run header: class, counts, links, bitmap.
          runs[(which / 4) % runs.size()][offset % sizeof(td::runs_impl::run_header)] ^= v;
        } else {
          // A free block's first quantum holds its node (hooks and size).
          nodes[which % nodes.size()][at] ^= v;
        }
        // The arena bounds are the caller's to vouch for (the engine compares them with the
        // file's before auditing): a corrupted bound is undone.
        if (reinterpret_cast<std::uintptr_t>(h.begin()) != begin || reinterpret_cast<std::uintptr_t>(h.end()) != end)
          std::memcpy(g_state, saved, sizeof g_state);
        audit_corrupted();
        break;
      }
    }
  }
  if (corrupted) {
    audit_corrupted();
    FUZZ_UNPOISON(g_buffer, sizeof g_buffer);
    return 0;
  }
  audit(h, m, begin, end);
  while (!m.live.empty()) free_block(m.live.begin());
  audit(h, m, begin, end);
  if (end != begin && (h.free_blocks() != 1 || h.free_bytes() != end - begin))
    fail("freeing every block did not leave one free block spanning the arena");
  if (end == begin && h.free_blocks() != 0) fail("an empty arena has free blocks");
  FUZZ_UNPOISON(g_buffer, sizeof g_buffer);
  return 0;
}
