// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Container building: insert 10k ints (shuffled, fixed seed) into an empty map, then make it
// persistent. Emptying the map before each round is not timed.
//   tmf:    tmf::map inside one write transaction + commit (durability::full; no_sync)
//   boost:  boost::interprocess::map in a managed_mapped_file + flush() (msync; and no flush)
//   std:    std::map in ordinary memory (the floor)

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <tmf/tmf.hpp>

#include "bench_boost_ipc.hpp"
#include "bench_common.hpp"

namespace bip = boost::interprocess;

namespace {

constexpr int count = 10'000;

const std::vector<int>& keys() {
  static const std::vector<int> k = [] {
    std::vector<int> v(count);
    std::iota(v.begin(), v.end(), 0);
    std::shuffle(v.begin(), v.end(), std::mt19937_64(11));
    return v;
  }();
  return k;
}

void set_items(benchmark::State& state) { state.SetItemsProcessed(state.iterations() * count); }

struct map_root {
  tmf::map<int, int> m;
};

void BM_insert_tmf(benchmark::State& state) {
  tmf_bench::scoped_file f("containers.tmf");
  tmf::storage<map_root> store(f.path(), {.sync = state.range(0) ? tmf::durability::full : tmf::durability::no_sync});
  auto w = store.write();
  for (auto _ : state) {
    state.PauseTiming();
    w->m.clear();
    w.commit();
    state.ResumeTiming();
    for (int k : keys()) w->m.emplace(k, k);
    w.commit();
  }
  if (w->m.size() != count) state.SkipWithError("tmf: wrong map size");
  set_items(state);
  state.SetLabel(state.range(0) ? "full" : "no_sync");
}
BENCHMARK(BM_insert_tmf)->Arg(1)->Arg(0)->ArgName("full")->UseRealTime()->MinTime(0.2);

using bip_value = std::pair<const int, int>;
using bip_alloc = bip::allocator<bip_value, bip::managed_mapped_file::segment_manager>;
using bip_map = bip::map<int, int, std::less<int>, bip_alloc>;

void BM_insert_boost_ipc(benchmark::State& state) {
  tmf_bench::scoped_file f("containers.bip");
  bip::managed_mapped_file mf(bip::create_only, f.c_str(), std::size_t{16} << 20);
  bip_map* m = mf.construct<bip_map>("map")(mf.get_segment_manager());
  const std::size_t free_empty = mf.get_free_memory();
  for (auto _ : state) {
    state.PauseTiming();
    m->clear();
    if (mf.get_free_memory() != free_empty) state.SkipWithError("boost: the segment did not return to its size");
    if (state.range(0)) mf.flush();
    state.ResumeTiming();
    for (int k : keys()) m->emplace(k, k);
    if (state.range(0)) mf.flush();  // msync(MS_SYNC) of the mapping
  }
  if (m->size() != count) state.SkipWithError("boost: wrong map size");
  set_items(state);
  state.SetLabel(state.range(0) ? "flush" : "no flush");
}
BENCHMARK(BM_insert_boost_ipc)->Arg(1)->Arg(0)->ArgName("flush")->UseRealTime()->MinTime(0.2);

void BM_insert_std_map(benchmark::State& state) {
  std::map<int, int> m;
  for (auto _ : state) {
    state.PauseTiming();
    m.clear();
    state.ResumeTiming();
    for (int k : keys()) m.emplace(k, k);
    benchmark::ClobberMemory();
  }
  set_items(state);
}
BENCHMARK(BM_insert_std_map)->UseRealTime()->MinTime(0.2);

}  // namespace

BENCHMARK_MAIN();
