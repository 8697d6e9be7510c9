// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Small and large blocks at scale (issue 14), each case with its peers in the same binary:
//   space:  1M live blocks of 24 bytes; counter bytes_per_byte = arena bytes taken (tmf: arena
//           minus free bytes; glibc: mallinfo2 uordblks) per requested byte
//   small:  400k live blocks of 8..256 bytes, then a random half freed and allocated again,
//           then all freed in shuffled order; tmf inside one write transaction that starts
//           fresh every iteration (so page tracking faults count), rolled back outside the timing
//   large:  8k live blocks of 1..64 KiB, the same pattern
//   peers:  glibc malloc/free; Boost.Interprocess managed_mapped_file (null_mutex_family, as
//           tmf's heap takes no lock)
// items/s = blocks allocated and freed per second.
// (Pages logged per 1,000 inserts into a 1M-key tmf::map: bench_btree's BM_pages_map_tmf.)

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include <malloc.h>

#include <benchmark/benchmark.h>
#include <tmf/tmf.hpp>

#include "bench_blocks.hpp"
#include "bench_boost_ipc.hpp"
#include "bench_common.hpp"

namespace bip = boost::interprocess;

namespace {

// The workload, the round and the tmf and glibc cases are bench_blocks.hpp's, shared with
// bench_adjacency_metall so that both programs run the same shapes.
using tmf_bench::blocks::empty_root;
using tmf_bench::blocks::large_work;
using tmf_bench::blocks::malloc_rounds;
using tmf_bench::blocks::one_round;
using tmf_bench::blocks::set_items;
using tmf_bench::blocks::small_work;
using tmf_bench::blocks::tmf_rounds;
using tmf_bench::blocks::workload;

using unlocked_mapped_file =
    bip::basic_managed_mapped_file<char, bip::rbtree_best_fit<bip::null_mutex_family>, bip::iset_index>;

void boost_rounds(benchmark::State& state, const workload& w, const char* tag, std::size_t segment) {
  std::vector<void*> blocks(w.sizes.size());
  for (auto _ : state) {
    state.PauseTiming();
    tmf_bench::scoped_file f(tag);  // a fresh file each round: its pages fault in as tmf's do
    auto mf = std::make_unique<unlocked_mapped_file>(bip::create_only, f.c_str(), segment);
    auto* sm = mf->get_segment_manager();
    const std::size_t before = sm->get_free_memory();
    auto alloc = [&](std::size_t n) { return sm->allocate(n); };
    auto free = [&](void* p, std::size_t) { sm->deallocate(p); };
    state.ResumeTiming();
    try {
      one_round(w, blocks, alloc, free);
    } catch (const bip::bad_alloc&) {
      state.SkipWithError("boost: bad_alloc (see bench_boost_ipc.hpp)");
      return;
    }
    state.PauseTiming();
    if (sm->get_free_memory() != before) {
      state.SkipWithError("boost: the segment did not return to its size");
      return;  // skipped: resuming the timer now would abort Google Benchmark
    }
    mf.reset();
    state.ResumeTiming();
  }
  set_items(state, w);
}

void BM_small_tmf(benchmark::State& state) { tmf_rounds(state, small_work(), "small.tmf"); }
void BM_small_malloc(benchmark::State& state) { malloc_rounds(state, small_work()); }
void BM_small_boost_ipc(benchmark::State& state) {
  boost_rounds(state, small_work(), "small.bip", std::size_t{256} << 20);
}
void BM_large_tmf(benchmark::State& state) { tmf_rounds(state, large_work(), "large.tmf"); }
void BM_large_malloc(benchmark::State& state) { malloc_rounds(state, large_work()); }
void BM_large_boost_ipc(benchmark::State& state) {
  boost_rounds(state, large_work(), "large.bip", std::size_t{1} << 30);
}
BENCHMARK(BM_small_tmf)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_small_malloc)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_small_boost_ipc)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_large_tmf)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_large_malloc)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_large_boost_ipc)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---------------------------------------------------------------------------------------------
// space: 1M x 24 B

constexpr std::size_t n_space = 1'000'000;
constexpr std::size_t space_size = 24;

void BM_space24_tmf(benchmark::State& state) {
  tmf_bench::scoped_file f("space.tmf");
  tmf::storage<empty_root> store(f.path(), {.sync = tmf::durability::no_sync});
  std::vector<std::byte*> blocks(n_space);
  double ratio = 0;
  for (auto _ : state) {
    auto w = store.write();
    tmf::allocator<std::byte> a = w.get_allocator();
    const auto s0 = store.stats();
    for (auto& p : blocks) p = a.allocate(space_size);
    const auto s1 = store.stats();
    const double taken = static_cast<double>((s1.arena_bytes - s1.free_bytes) - (s0.arena_bytes - s0.free_bytes));
    ratio = taken / static_cast<double>(n_space * space_size);
    state.PauseTiming();
    w.rollback();
    state.ResumeTiming();
  }
  state.counters["bytes_per_byte"] = ratio;
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_space));
}
BENCHMARK(BM_space24_tmf)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_space24_malloc(benchmark::State& state) {
  std::vector<void*> blocks(n_space);
  double ratio = 0;
  for (auto _ : state) {
    const auto m0 = ::mallinfo2();
    for (auto& p : blocks) p = std::malloc(space_size);
    const auto m1 = ::mallinfo2();
    ratio = static_cast<double>(m1.uordblks - m0.uordblks) / static_cast<double>(n_space * space_size);
    state.PauseTiming();
    for (auto* p : blocks) std::free(p);
    state.ResumeTiming();
  }
  state.counters["bytes_per_byte"] = ratio;
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_space));
}
BENCHMARK(BM_space24_malloc)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
