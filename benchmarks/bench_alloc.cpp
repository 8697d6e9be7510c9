// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Allocation speed: batches of 1000 live blocks of random sizes (16..1024 bytes, fixed
// seed), allocated then freed in a shuffled order.
//   tmf:    tmf::allocator inside one writer (no commit in the loop: the heap alone)
//   peers:  glibc malloc/free; Boost.Interprocess managed_mapped_file's segment manager
//           (default: with its interprocess mutex; and with null_mutex_family, lock-free
//           like tmf's heap, which only the writer uses)
// Reported: time per batch; items/s = allocate+deallocate pairs per second.

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include <sys/mman.h>
#include <sys/stat.h>

#include <benchmark/benchmark.h>
#include <tmf/tmf.hpp>

#include "bench_common.hpp"
#include "bench_boost_ipc.hpp"

namespace bip = boost::interprocess;

namespace {

constexpr std::size_t batch = 1000;

struct workload {
  std::vector<std::size_t> sizes;  // size of block i
  std::vector<std::size_t> order;  // the order blocks are freed in
  workload() : sizes(batch), order(batch) {
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<std::size_t> size(16, 1024);
    for (auto& s : sizes) s = size(rng);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::shuffle(order.begin(), order.end(), rng);
  }
};

const workload& work() {
  static const workload w;
  return w;
}

template <class Alloc, class Free>
void run_batches(benchmark::State& state, Alloc alloc, Free free) {
  const workload& w = work();
  std::vector<void*> blocks(batch);
  for (auto _ : state) {
    for (std::size_t i = 0; i < batch; ++i) {
      blocks[i] = alloc(w.sizes[i]);
      benchmark::DoNotOptimize(blocks[i]);
    }
    for (std::size_t i : w.order) free(blocks[i], w.sizes[i]);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
}

struct empty_root {
  int unused = 0;
};

void BM_alloc_tmf(benchmark::State& state) {
  tmf_bench::scoped_file f("alloc.tmf");
  tmf::storage<empty_root> store(f.path(), {.sync = tmf::durability::no_sync});
  auto w = store.write();
  tmf::allocator<std::byte> a = w.get_allocator();
  const std::size_t before = store.stats().allocated_bytes;
  run_batches(
      state, [&](std::size_t n) { return static_cast<void*>(a.allocate(n)); },
      [&](void* p, std::size_t n) { a.deallocate(static_cast<std::byte*>(p), n); });
  if (store.stats().allocated_bytes != before) state.SkipWithError("tmf: the heap did not return to its size");
  // ~writer rolls the heap back; nothing was ever committed.
}
BENCHMARK(BM_alloc_tmf);

void BM_alloc_malloc(benchmark::State& state) {
  run_batches(
      state, [](std::size_t n) { return std::malloc(n); }, [](void* p, std::size_t) { std::free(p); });
}
BENCHMARK(BM_alloc_malloc);

template <class File>
void boost_batches(benchmark::State& state, const char* tag) {
  tmf_bench::scoped_file f(tag);
  File mf(bip::create_only, f.c_str(), std::size_t{64} << 20);
  auto* sm = mf.get_segment_manager();
  const std::size_t before = sm->get_free_memory();
  try {
    run_batches(
        state, [&](std::size_t n) { return sm->allocate(n); }, [&](void* p, std::size_t) { sm->deallocate(p); });
  } catch (const bip::bad_alloc&) {
    state.SkipWithError("boost: bad_alloc (see bench_boost_ipc.hpp)");
    return;
  }
  if (sm->get_free_memory() != before) state.SkipWithError("boost: the segment did not return to its size");
}

void BM_alloc_boost_ipc(benchmark::State& state) {
  boost_batches<bip::managed_mapped_file>(state, "alloc.bip");
}
BENCHMARK(BM_alloc_boost_ipc);

using unlocked_mapped_file =
    bip::basic_managed_mapped_file<char, bip::rbtree_best_fit<bip::null_mutex_family>, bip::iset_index>;

void BM_alloc_boost_ipc_nolock(benchmark::State& state) {
  boost_batches<unlocked_mapped_file>(state, "alloc-nolock.bip");
}
BENCHMARK(BM_alloc_boost_ipc_nolock);

// -- giving freed space back (options::give_back_bytes) --------------------------------------
// A cycle: allocate 64 blocks of 64 KiB (4 MiB), store one byte per page, commit; free them
// all, commit. With give_back (the default, give_back_bytes = 1 MiB) the freeing commit
// checkpoints (a data-file fdatasync) and punches the 4 MiB out of the file, and the next
// cycle's allocations fallocate the holes again; give_back_bytes = 0 keeps the pages.
// Peer: Boost.Interprocess managed_mapped_file, the same blocks, a synchronous flush (msync
// MS_SYNC) after each half; it never gives space back.
// Counter disk_MiB: the data file's disk usage after the freeing half.

constexpr std::size_t cycle_blocks = 64, cycle_block = std::size_t{64} << 10;

struct cycle_root {
  std::byte* blocks[cycle_blocks] = {};
};

void touch_pages(std::byte* p) {
  for (std::size_t off = 0; off < cycle_block; off += 4096) p[off] = std::byte{1};
}

void BM_give_back_cycle_tmf(benchmark::State& state) {
  tmf_bench::scoped_file f("giveback.tmf");
  tmf::options o;
  o.sync = tmf::durability::full;
  o.give_back_bytes = state.range(0) != 0 ? std::size_t{1} << 20 : 0;
  tmf::storage<cycle_root> store(f.path(), o);
  auto w = store.write();
  tmf::allocator<std::byte> a = w.get_allocator();
  {  // a live block above the cycle's: the freed space stays inside the arena (no truncation)
    for (auto& b : w->blocks) b = a.allocate(cycle_block);
    benchmark::DoNotOptimize(a.allocate(cycle_block));
    for (auto& b : w->blocks) a.deallocate(b, cycle_block);
    w.commit();
  }
  for (auto _ : state) {
    for (auto& b : w->blocks) {
      b = a.allocate(cycle_block);
      touch_pages(b);
    }
    w.commit();
    for (auto& b : w->blocks) a.deallocate(b, cycle_block);
    w.commit();
  }
  state.counters["disk_MiB"] = static_cast<double>(store.stats().disk_bytes) / (1 << 20);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_give_back_cycle_tmf)->ArgName("give_back")->Arg(1)->Arg(0);

void BM_give_back_cycle_boost_ipc(benchmark::State& state) {
  tmf_bench::scoped_file f("giveback.bip");
  bip::managed_mapped_file mf(bip::create_only, f.c_str(), std::size_t{16} << 20);
  auto* sm = mf.get_segment_manager();
  std::byte* blocks[cycle_blocks];
  try {
    for (auto _ : state) {
      for (auto& b : blocks) {
        b = static_cast<std::byte*>(sm->allocate(cycle_block));
        touch_pages(b);
      }
      ::msync(mf.get_address(), mf.get_size(), MS_SYNC);  // durable, as tmf's durability::full
      for (auto* b : blocks) sm->deallocate(b);
      ::msync(mf.get_address(), mf.get_size(), MS_SYNC);
    }
  } catch (const bip::bad_alloc&) {
    state.SkipWithError("boost: bad_alloc");
    return;
  }
  struct stat st {};
  if (::stat(f.c_str(), &st) == 0) state.counters["disk_MiB"] = static_cast<double>(st.st_blocks) * 512 / (1 << 20);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_give_back_cycle_boost_ipc);

}  // namespace

BENCHMARK_MAIN();
