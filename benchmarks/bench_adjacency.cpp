// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Issue 14's adjacency-list build (Metall's benchmark shape; the workload is in
// bench_adjacency.hpp): 2M R-MAT edges into unordered_map<u64, vector<u64>>, 20 batches of
// 100k edges. One iteration builds the whole list in a new file and closes it:
//   tmf:    tmf::unordered_map<u64, tmf::vector<u64>>, one write transaction + commit per
//           batch; durability::no_sync, and durability::full (one fdatasync per commit)
//   Boost:  boost::unordered_map<u64, bip::vector<u64>> in a managed_mapped_file (1 GiB,
//           sparse); nothing per batch, and flush() (msync(MS_SYNC)) per batch
//   std:    std::unordered_map<u64, std::vector<u64>> in memory (glibc malloc), the floor
// Metall (LLNL) runs the same workload in bench_adjacency_metall, a separate binary built
// against Boost 1.81 (scripts/bench_metall.sh runs both and prints the ratios).
// Every list is checked against std::'s (vertices, edges, an order-independent checksum).
// Counters: items/s = edges per second of the whole build; build_s (the batches) and
// close_s per build; file_MB / disk_MB = the file's size and its disk usage after close.
//   bench_adjacency --benchmark_repetitions=3 --benchmark_report_aggregates_only=true

#include <cstdint>
#include <functional>
#include <memory>

#include <benchmark/benchmark.h>
#include <tmf/tmf.hpp>

#include "bench_adjacency.hpp"
#include "bench_boost_ipc.hpp"
#include "bench_common.hpp"

#include <boost/interprocess/containers/vector.hpp>
#include <boost/unordered_map.hpp>

namespace bip = boost::interprocess;
using namespace tmf_bench::adjacency;

namespace {

// ---------------------------------------------------------------------------------------------
// tmf (BM_adjacency_tmf is in bench_adjacency.hpp: bench_adjacency_metall runs it too)

BENCHMARK(BM_adjacency_tmf)->Arg(0)->Arg(1)->ArgName("durable")->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------------
// Boost.Interprocess

using bip_segment = bip::managed_mapped_file::segment_manager;
using bip_targets = bip::vector<std::uint64_t, bip::allocator<std::uint64_t, bip_segment>>;
using bip_list = boost::unordered_map<std::uint64_t, bip_targets, std::hash<std::uint64_t>, std::equal_to<>,
                                      bip::allocator<std::pair<const std::uint64_t, bip_targets>, bip_segment>>;
constexpr std::size_t bip_file_size = std::size_t{1} << 30;  // does not grow by itself; sparse

void BM_adjacency_boost_ipc(benchmark::State& state) {
  const bool durable = state.range(0) != 0;
  totals t;
  (void)expected();
  for (auto _ : state) {
    state.PauseTiming();
    tmf_bench::scoped_file f("adjacency.bip");
    state.ResumeTiming();
    auto t0 = std::chrono::steady_clock::now();
    auto mf = std::make_unique<bip::managed_mapped_file>(bip::create_only, f.c_str(), bip_file_size);
    auto* seg = mf->get_segment_manager();
    bip_list* list = mf->construct<bip_list>("adjacency")(0, std::hash<std::uint64_t>(), std::equal_to<>(), seg);
    const bip_targets::allocator_type targets_alloc(seg);
    for (std::size_t b = 0; b < edge_count; b += batch_edges) {
      add_edges(*list, b, b + batch_edges, targets_alloc);
      if (durable) mf->flush();
    }
    t.build_s += seconds_since(t0);
    state.PauseTiming();
    const bool ok = check_list(state, *list, "boost");
    if (!ok) break;  // skipped: the timer must stay paused
    state.ResumeTiming();
    t0 = std::chrono::steady_clock::now();
    mf.reset();  // unmaps; nothing synced unless flushed
    t.close_s += seconds_since(t0);
    state.PauseTiming();
    t.add_disk(f.path());
    state.ResumeTiming();
  }
  report(state, t);
  state.SetLabel(durable ? "flush per batch" : "no flush");
}
BENCHMARK(BM_adjacency_boost_ipc)->Arg(0)->Arg(1)->ArgName("durable")->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------------
// std:: in memory

BENCHMARK(BM_adjacency_std)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
