// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// LLNL Metall (https://github.com/LLNL/metall, header-only) as a benchmark-only peer for
// issue 14, in its own binary: Metall needs Boost >= 1.80 and tmf's other peers are built
// against Debian 12's Boost 1.74, so this program is compiled against an unpacked copy of
// Boost 1.81's headers (benchmarks/CMakeLists.txt: TMF_METALL_INCLUDE_DIR and
// TMF_BOOST181_INCLUDE_DIR; never built by default or in CI). tmf and glibc run here too,
// compiled against the same headers (tmf uses Boost.Intrusive alone), so that every ratio can
// be read within one binary and one run; scripts/bench_metall.sh also runs bench_adjacency
// and bench_small beside it. Metall runs with its defaults (thread-safe, per-CPU object cache).
//   adjacency:  bench_adjacency.hpp's workload: metall::container::unordered_map<u64,
//               metall::container::vector<u64>> (boost::unordered_map and
//               boost::container::vector with Metall's allocator) in a new datastore;
//               nothing per batch, and flush() (msync of the application data) per batch;
//               closed (management data serialised, synced) inside the timing
//   small / large: bench_blocks.hpp's rounds with metall::manager::allocate / deallocate in a
//               new datastore every round (so its pages fault in, as Boost's do in bench_small)

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include <benchmark/benchmark.h>
#include <metall/container/unordered_map.hpp>
#include <metall/container/vector.hpp>
#include <metall/metall.hpp>

#include "bench_adjacency.hpp"
#include "bench_blocks.hpp"
#include "bench_common.hpp"

using namespace tmf_bench::adjacency;
namespace blk = tmf_bench::blocks;

namespace {

// ---------------------------------------------------------------------------------------------
// adjacency list

using metall_targets = metall::container::vector<std::uint64_t>;
using metall_list = metall::container::unordered_map<std::uint64_t, metall_targets>;

void BM_adjacency_metall(benchmark::State& state) {
  const bool durable = state.range(0) != 0;
  totals t;
  (void)expected();
  for (auto _ : state) {
    state.PauseTiming();
    tmf_bench::scoped_file f("adjacency.metall");
    state.ResumeTiming();
    auto t0 = std::chrono::steady_clock::now();
    auto m = std::make_unique<metall::manager>(metall::create_only, f.c_str());
    if (!m->check_sanity()) {
      state.SkipWithError("metall: could not create the datastore");
      return;
    }
    metall_list* list = m->construct<metall_list>("adjacency")(m->get_allocator<>());
    const metall_targets::allocator_type targets_alloc = m->get_allocator<std::uint64_t>();
    for (std::size_t b = 0; b < edge_count; b += batch_edges) {
      add_edges(*list, b, b + batch_edges, targets_alloc);
      if (durable) m->flush();
    }
    t.build_s += seconds_since(t0);
    state.PauseTiming();
    const bool ok = check_list(state, *list, "metall");
    if (!ok) break;  // skipped: the timer must stay paused
    state.ResumeTiming();
    t0 = std::chrono::steady_clock::now();
    m.reset();  // serialises the management data and syncs the segment
    t.close_s += seconds_since(t0);
    state.PauseTiming();
    t.add_disk(f.path());
    state.ResumeTiming();
  }
  report(state, t);
  state.SetLabel(durable ? "flush per batch" : "no flush");
}
BENCHMARK(BM_adjacency_metall)->Arg(0)->Arg(1)->ArgName("durable")->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adjacency_tmf)->Arg(0)->Arg(1)->ArgName("durable")->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adjacency_std)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------------
// small and large blocks

void metall_rounds(benchmark::State& state, const blk::workload& w, const char* tag) {
  std::vector<void*> blocks(w.sizes.size());
  for (auto _ : state) {
    state.PauseTiming();
    auto f = std::make_unique<tmf_bench::scoped_file>(tag);
    auto m = std::make_unique<metall::manager>(metall::create_only, f->c_str());
    if (!m->check_sanity()) {
      state.SkipWithError("metall: could not create the datastore");
      return;
    }
    bool failed = false;
    auto alloc = [&](std::size_t n) {
      void* p = m->allocate(n);
      failed |= p == nullptr;
      return p;
    };
    auto free = [&](void* p, std::size_t) { m->deallocate(p); };
    state.ResumeTiming();
    blk::one_round(w, blocks, alloc, free);
    state.PauseTiming();
    if (failed) {
      state.SkipWithError("metall: allocate returned nullptr");
      return;  // skipped: the timer must stay paused
    }
    m.reset();
    f.reset();
    state.ResumeTiming();
  }
  blk::set_items(state, w);
}

void BM_small_metall(benchmark::State& state) { metall_rounds(state, blk::small_work(), "small.metall"); }
void BM_small_tmf(benchmark::State& state) { blk::tmf_rounds(state, blk::small_work(), "small.tmf"); }
void BM_small_malloc(benchmark::State& state) { blk::malloc_rounds(state, blk::small_work()); }
void BM_large_metall(benchmark::State& state) { metall_rounds(state, blk::large_work(), "large.metall"); }
void BM_large_tmf(benchmark::State& state) { blk::tmf_rounds(state, blk::large_work(), "large.tmf"); }
void BM_large_malloc(benchmark::State& state) { blk::malloc_rounds(state, blk::large_work()); }
BENCHMARK(BM_small_metall)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_small_tmf)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_small_malloc)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_large_metall)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_large_tmf)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_large_malloc)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
