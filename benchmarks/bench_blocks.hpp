// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// bench_small's block shapes (issue 14), for bench_adjacency_metall: the same workload (seed
// 14), the same round (allocate all, free a random half and allocate it again, free all in
// shuffled order) and the same tmf and glibc cases, so that the Metall binary runs tmf and
// glibc beside Metall. bench_small.cpp uses it too.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <tmf/tmf.hpp>

#include "bench_common.hpp"

namespace tmf_bench::blocks {

/// Sizes of the live blocks, which half is freed and reallocated, and the final free order.
struct workload {
  std::vector<std::size_t> sizes;
  std::vector<std::size_t> half;
  std::vector<std::size_t> order;
  workload(std::size_t n, std::size_t lo, std::size_t hi) : sizes(n), order(n) {
    std::mt19937_64 rng(14);
    std::uniform_int_distribution<std::size_t> size(lo, hi);
    for (auto& s : sizes) s = size(rng);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::shuffle(order.begin(), order.end(), rng);
    half.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n / 2));
    std::shuffle(order.begin(), order.end(), rng);
  }
};
inline const workload& small_work() {
  static const workload w(400'000, 8, 256);
  return w;
}
inline const workload& large_work() {
  static const workload w(8'000, 1024, 64 * 1024);
  return w;
}

template <class Alloc, class Free>
void one_round(const workload& w, std::vector<void*>& blocks, Alloc& alloc, Free& free) {
  for (std::size_t i = 0; i < w.sizes.size(); ++i) blocks[i] = alloc(w.sizes[i]);
  for (std::size_t i : w.half) free(blocks[i], w.sizes[i]);
  for (std::size_t i : w.half) blocks[i] = alloc(w.sizes[i]);
  benchmark::DoNotOptimize(blocks.data());
  for (std::size_t i : w.order) free(blocks[i], w.sizes[i]);
  benchmark::ClobberMemory();
}

/// items/s = blocks allocated and freed per second.
inline void set_items(benchmark::State& state, const workload& w) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * (w.sizes.size() + w.half.size())));
}

struct empty_root {
  int unused = 0;
};

/// tmf inside one write transaction that starts fresh every round, rolled back untimed.
inline void tmf_rounds(benchmark::State& state, const workload& w, const char* tag) {
  tmf_bench::scoped_file f(tag);
  tmf::storage<empty_root> store(f.path(), {.sync = tmf::durability::no_sync});
  const std::size_t before = store.stats().allocated_bytes;
  std::vector<void*> blocks(w.sizes.size());
  for (auto _ : state) {
    auto wr = store.write();
    tmf::allocator<std::byte> a = wr.get_allocator();
    auto alloc = [&](std::size_t n) { return static_cast<void*>(a.allocate(n)); };
    auto free = [&](void* p, std::size_t n) { a.deallocate(static_cast<std::byte*>(p), n); };
    one_round(w, blocks, alloc, free);
    state.PauseTiming();
    if (store.stats().allocated_bytes != before) {
      state.SkipWithError("tmf: the heap did not return to its size");
      return;  // skipped: resuming the timer now would abort Google Benchmark
    }
    wr.rollback();  // the next round starts from clean, write-protected pages again
    state.ResumeTiming();
  }
  set_items(state, w);
}

inline void malloc_rounds(benchmark::State& state, const workload& w) {
  std::vector<void*> blocks(w.sizes.size());
  auto alloc = [](std::size_t n) { return std::malloc(n); };
  auto free = [](void* p, std::size_t) { std::free(p); };
  for (auto _ : state) one_round(w, blocks, alloc, free);
  set_items(state, w);
}

}  // namespace tmf_bench::blocks
