// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Open + close cost of an existing store, by size (1 MiB and 1 GiB of data; files prepared
// once per process, outside the timing). Wall-clock time: closing may sync.
//   tmf:    construct + destroy tmf::storage (default options: durability::full; and no_sync)
//   LMDB:   mdb_env_create + set_mapsize + mdb_env_open + mdb_env_close (default flags)
//   boost:  managed_mapped_file(open_only) + destroy

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <tmf/tmf.hpp>

#include "bench_boost_ipc.hpp"
#include "bench_common.hpp"

namespace bip = boost::interprocess;

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

struct open_root {
  std::uint64_t value = 0;
};

// One prepared tmf file per size (in MiB).
const tmf_bench::scoped_file& tmf_file(std::int64_t mib) {
  static std::unique_ptr<tmf_bench::scoped_file> small, big;
  auto& slot = mib <= 1 ? small : big;
  if (!slot) {
    slot = std::make_unique<tmf_bench::scoped_file>("open-" + std::to_string(mib) + "M.tmf");
    tmf::storage<open_root> store(slot->path(), {.sync = tmf::durability::no_sync});
    if (mib > 1) {
      auto w = store.write();
      auto a = w.get_allocator();
      auto bytes = static_cast<std::size_t>(mib) * MiB - 2 * MiB;
      (void)a.allocate(bytes);  // grows the file (fallocate) to about `mib` MiB; never freed
      w.commit();
    }
    if (mib > 1 && store.stats().file_bytes < static_cast<std::size_t>(mib) * MiB - 2 * MiB)
      throw std::runtime_error("the prepared tmf file is too small");
  }
  return *slot;
}

void BM_open_tmf(benchmark::State& state) {
  const auto& f = tmf_file(state.range(0));
  const tmf::options opt{.sync = state.range(1) ? tmf::durability::full : tmf::durability::no_sync};
  std::size_t bytes = 0;
  for (auto _ : state) {
    tmf::storage<open_root> store(f.path(), opt);
    bytes = store.size();
    benchmark::DoNotOptimize(store.address());
  }
  state.counters["arena_MiB"] = static_cast<double>(bytes) / MiB;
  state.SetLabel(state.range(1) ? "full" : "no_sync");
}
BENCHMARK(BM_open_tmf)
    ->ArgsProduct({{1, 1024}, {1, 0}})
    ->ArgNames({"MiB", "full"})
    ->UseRealTime()
    ->MinTime(0.2);

#if defined(TMF_HAVE_LMDB)
using tmf_bench::mdb_check;

const tmf_bench::scoped_file& lmdb_file(std::int64_t mib) {
  static std::unique_ptr<tmf_bench::scoped_file> small, big;
  auto& slot = mib <= 1 ? small : big;
  if (!slot) {
    slot = std::make_unique<tmf_bench::scoped_file>("open-" + std::to_string(mib) + "M.lmdb");
    tmf_bench::lmdb_env db(slot->str(), MDB_NOSYNC, static_cast<std::size_t>(mib) * MiB * 2 + 16 * MiB);
    std::vector<char> value(64 << 10, 'x');
    MDB_txn* txn;
    mdb_check(mdb_txn_begin(db.env, nullptr, 0, &txn), "mdb_txn_begin");
    for (std::uint64_t k = 0; k < static_cast<std::uint64_t>(mib) * 16; ++k) {
      MDB_val key{sizeof k, &k}, val{value.size(), value.data()};
      mdb_check(mdb_put(txn, db.dbi, &key, &val, MDB_APPEND), "mdb_put");
    }
    mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
    mdb_check(mdb_env_sync(db.env, 1), "mdb_env_sync");
  }
  return *slot;
}

void BM_open_lmdb(benchmark::State& state) {
  const auto& f = lmdb_file(state.range(0));
  const std::size_t map_size = static_cast<std::size_t>(state.range(0)) * MiB * 2 + 16 * MiB;
  for (auto _ : state) {
    MDB_env* env;
    mdb_check(mdb_env_create(&env), "mdb_env_create");
    mdb_check(mdb_env_set_mapsize(env, map_size), "mdb_env_set_mapsize");
    mdb_check(mdb_env_open(env, f.c_str(), MDB_NOSUBDIR, 0644), "mdb_env_open");
    benchmark::DoNotOptimize(env);
    mdb_env_close(env);
  }
}
BENCHMARK(BM_open_lmdb)->Arg(1)->Arg(1024)->ArgName("MiB")->UseRealTime()->MinTime(0.2);
#endif

const tmf_bench::scoped_file& boost_file(std::int64_t mib) {
  static std::unique_ptr<tmf_bench::scoped_file> small, big;
  auto& slot = mib <= 1 ? small : big;
  if (!slot) {
    slot = std::make_unique<tmf_bench::scoped_file>("open-" + std::to_string(mib) + "M.bip");
    bip::managed_mapped_file mf(bip::create_only, slot->c_str(), static_cast<std::size_t>(mib) * MiB);
    mf.construct<std::uint64_t>("value")(0);
  }
  return *slot;
}

void BM_open_boost_ipc(benchmark::State& state) {
  const auto& f = boost_file(state.range(0));
  for (auto _ : state) {
    bip::managed_mapped_file mf(bip::open_only, f.c_str());
    benchmark::DoNotOptimize(mf.get_address());
  }
}
BENCHMARK(BM_open_boost_ipc)->Arg(1)->Arg(1024)->ArgName("MiB")->UseRealTime()->MinTime(0.2);

}  // namespace

BENCHMARK_MAIN();
