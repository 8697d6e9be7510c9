// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Ordered key-value work: random 8-byte keys with 64-byte values (issue 13).
//   insert:  200k keys in durable transactions of 1,000 (and no_sync / MDB_NOSYNC):
//            tmf::btree_map, tmf::map (std::map with tmf::allocator), LMDB
//   find:    every one of the 200k keys, shuffled, inside one read transaction
//   scan:    an ordered walk over 1M entries (LMDB: a cursor)
//   pages:   pages logged per 1,000 random inserts into a 1M-key tree (counter pages_per_1000)
//   memory:  insert and find of the 200k keys with std::allocator: tmf::btree_map, std::map,
//            absl::btree_map (when built with absl)

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <tmf/btree.hpp>
#include <tmf/tmf.hpp>

#if defined(TMF_HAVE_ABSL)
#include <absl/container/btree_map.h>
#endif

#include "bench_common.hpp"

namespace {

constexpr std::size_t n_keys = 200'000;
constexpr std::size_t batch = 1'000;
constexpr std::size_t n_scan = 1'000'000;

struct value64 {
  char bytes[64];
};
value64 make_value(std::uint64_t k) {
  value64 v;
  std::memset(v.bytes, static_cast<int>(k & 0x7f), sizeof v.bytes);
  std::memcpy(v.bytes, &k, sizeof k);
  return v;
}

/// `n` distinct random keys (fixed seed), in random order.
std::vector<std::uint64_t> random_keys(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint64_t> v(n);
  for (auto& k : v) k = rng();
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  while (v.size() < n) v.push_back(rng());  // (never in practice)
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}
const std::vector<std::uint64_t>& keys() {
  static const auto k = random_keys(n_keys, 13);
  return k;
}
const std::vector<std::uint64_t>& lookup_order() {
  static const auto k = [] {
    auto v = keys();
    std::shuffle(v.begin(), v.end(), std::mt19937_64(17));
    return v;
  }();
  return k;
}

using btree_type = tmf::btree_map<std::uint64_t, value64>;
using map_type = tmf::map<std::uint64_t, value64>;
struct btree_root {
  btree_type m;
};
struct map_root {
  map_type m;
};

tmf::durability sync_of(const benchmark::State& state) {
  return state.range(0) ? tmf::durability::full : tmf::durability::no_sync;
}

// ---------------------------------------------------------------------------------------------
// insert: 200k keys, 1,000 per transaction

template <class Root>
void insert_tmf(benchmark::State& state) {
  std::uint64_t pages = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto f = std::make_unique<tmf_bench::scoped_file>("btree-insert.tmf");
    auto s = std::make_unique<tmf::storage<Root>>(f->path(), tmf_bench::with_kept_env(tmf::options{.sync = sync_of(state)}));
    const auto before = s->stats().pages_logged;
    state.ResumeTiming();
    const auto& k = keys();
    for (std::size_t i = 0; i < k.size(); i += batch) {
      auto w = s->write();
      for (std::size_t j = i; j < i + batch; ++j) w->m.emplace(k[j], make_value(k[j]));
      w.commit();
    }
    state.PauseTiming();
    pages += s->stats().pages_logged - before;
    if (s->read()->m.size() != n_keys) state.SkipWithError("tmf: wrong size");
    s.reset();
    f.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_keys));
  state.counters["pages_per_1000"] =
      static_cast<double>(pages) / static_cast<double>(state.iterations()) / (n_keys / 1000.0);
  state.SetLabel(state.range(0) ? "full" : "no_sync");
}
void BM_insert_btree_tmf(benchmark::State& state) { insert_tmf<btree_root>(state); }
void BM_insert_map_tmf(benchmark::State& state) { insert_tmf<map_root>(state); }
BENCHMARK(BM_insert_btree_tmf)->Arg(1)->Arg(0)->ArgName("full")->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1);
BENCHMARK(BM_insert_map_tmf)->Arg(1)->Arg(0)->ArgName("full")->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1);

#if defined(TMF_HAVE_LMDB)
void lmdb_put(MDB_txn* txn, MDB_dbi dbi, std::uint64_t k) {
  value64 v = make_value(k);
  MDB_val key{sizeof k, &k};
  MDB_val val{sizeof v, &v};
  tmf_bench::mdb_check(mdb_put(txn, dbi, &key, &val, 0), "mdb_put");
}
/// An LMDB file holding `k`, written in transactions of `per_txn` (MDB_NOSYNC).
std::unique_ptr<tmf_bench::lmdb_env> lmdb_filled(const std::string& path, const std::vector<std::uint64_t>& k,
                                                 std::size_t per_txn, std::size_t map_size) {
  auto e = std::make_unique<tmf_bench::lmdb_env>(path, MDB_NOSYNC, map_size);
  for (std::size_t i = 0; i < k.size(); i += per_txn) {
    MDB_txn* txn;
    tmf_bench::mdb_check(mdb_txn_begin(e->env, nullptr, 0, &txn), "mdb_txn_begin");
    for (std::size_t j = i; j < std::min(k.size(), i + per_txn); ++j) lmdb_put(txn, e->dbi, k[j]);
    tmf_bench::mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  return e;
}

void BM_insert_lmdb(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    auto f = std::make_unique<tmf_bench::scoped_file>("btree-insert.mdb");
    auto e = std::make_unique<tmf_bench::lmdb_env>(f->str(), state.range(0) ? 0u : unsigned{MDB_NOSYNC});
    state.ResumeTiming();
    const auto& k = keys();
    for (std::size_t i = 0; i < k.size(); i += batch) {
      MDB_txn* txn;
      tmf_bench::mdb_check(mdb_txn_begin(e->env, nullptr, 0, &txn), "mdb_txn_begin");
      for (std::size_t j = i; j < i + batch; ++j) lmdb_put(txn, e->dbi, k[j]);
      tmf_bench::mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
    }
    state.PauseTiming();
    e.reset();
    f.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_keys));
  state.SetLabel(state.range(0) ? "sync" : "MDB_NOSYNC");
}
BENCHMARK(BM_insert_lmdb)->Arg(1)->Arg(0)->ArgName("sync")->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1);
#endif

// ---------------------------------------------------------------------------------------------
// find: all 200k keys in one read transaction

template <class Root>
struct filled_storage {
  explicit filled_storage(const std::vector<std::uint64_t>& k, const char* tag)
      : file(tag), store(file.path(), {.sync = tmf::durability::no_sync}) {
    for (std::size_t i = 0; i < k.size(); i += 10'000) {
      auto w = store.write();
      for (std::size_t j = i; j < std::min(k.size(), i + 10'000); ++j) w->m.emplace(k[j], make_value(k[j]));
      w.commit();
    }
  }
  tmf_bench::scoped_file file;
  tmf::storage<Root> store;
};

template <class Root>
void find_tmf(benchmark::State& state, const char* tag) {
  filled_storage<Root> fs(keys(), tag);
  const auto& order = lookup_order();
  for (auto _ : state) {
    auto r = fs.store.read();
    std::uint64_t sum = 0;
    for (std::uint64_t k : order) {
      auto it = r->m.find(k);
      sum += static_cast<unsigned char>(it->second.bytes[8]);
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_keys));
}
void BM_find_btree_tmf(benchmark::State& state) { find_tmf<btree_root>(state, "btree-find.tmf"); }
void BM_find_map_tmf(benchmark::State& state) { find_tmf<map_root>(state, "map-find.tmf"); }
BENCHMARK(BM_find_btree_tmf)->Unit(benchmark::kMillisecond)->MinTime(1);
BENCHMARK(BM_find_map_tmf)->Unit(benchmark::kMillisecond)->MinTime(1);

#if defined(TMF_HAVE_LMDB)
void BM_find_lmdb(benchmark::State& state) {
  tmf_bench::scoped_file f("btree-find.mdb");
  auto e = lmdb_filled(f.str(), keys(), 10'000, std::size_t{1} << 30);
  const auto& order = lookup_order();
  for (auto _ : state) {
    MDB_txn* txn;
    tmf_bench::mdb_check(mdb_txn_begin(e->env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
    std::uint64_t sum = 0;
    for (std::uint64_t k : order) {
      MDB_val key{sizeof k, &k};
      MDB_val val;
      tmf_bench::mdb_check(mdb_get(txn, e->dbi, &key, &val), "mdb_get");
      sum += static_cast<const unsigned char*>(val.mv_data)[8];
    }
    mdb_txn_abort(txn);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_keys));
}
BENCHMARK(BM_find_lmdb)->Unit(benchmark::kMillisecond)->MinTime(1);
#endif

// ---------------------------------------------------------------------------------------------
// scan: 1M entries in order; pages: 1,000 random inserts into a 1M-key tree

const std::vector<std::uint64_t>& scan_keys() {
  static const auto k = random_keys(n_scan, 19);
  return k;
}

void BM_scan_btree_tmf(benchmark::State& state) {
  filled_storage<btree_root> fs(scan_keys(), "btree-scan.tmf");
  for (auto _ : state) {
    auto r = fs.store.read();
    std::uint64_t sum = 0;
    for (const auto& kv : r->m) sum += kv.first + static_cast<unsigned char>(kv.second.bytes[8]);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_scan));
}
BENCHMARK(BM_scan_btree_tmf)->Unit(benchmark::kMillisecond)->MinTime(1);

#if defined(TMF_HAVE_LMDB)
void BM_scan_lmdb(benchmark::State& state) {
  tmf_bench::scoped_file f("btree-scan.mdb");
  auto e = lmdb_filled(f.str(), scan_keys(), 10'000, std::size_t{1} << 31);
  for (auto _ : state) {
    MDB_txn* txn;
    MDB_cursor* cur;
    tmf_bench::mdb_check(mdb_txn_begin(e->env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
    tmf_bench::mdb_check(mdb_cursor_open(txn, e->dbi, &cur), "mdb_cursor_open");
    MDB_val key, val;
    std::uint64_t sum = 0;
    std::size_t n = 0;
    for (int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT), ++n) {
      std::uint64_t k;
      std::memcpy(&k, key.mv_data, sizeof k);
      sum += k + static_cast<const unsigned char*>(val.mv_data)[8];
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (n != n_scan) state.SkipWithError("lmdb: wrong count");
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_scan));
}
BENCHMARK(BM_scan_lmdb)->Unit(benchmark::kMillisecond)->MinTime(1);
#endif

/// Pages logged by commits of 1,000 random inserts each into a tree of 1M keys.
template <class Root>
void pages_tmf(benchmark::State& state, const char* tag) {
  filled_storage<Root> fs(scan_keys(), tag);
  std::mt19937_64 rng(23);
  std::uint64_t pages = 0;
  for (auto _ : state) {
    const auto before = fs.store.stats().pages_logged;
    auto w = fs.store.write();
    for (std::size_t i = 0; i < 1000; ++i) {
      const std::uint64_t k = rng();
      w->m.emplace(k, make_value(k));
    }
    w.commit();
    pages += fs.store.stats().pages_logged - before;
  }
  state.counters["pages_per_1000"] = static_cast<double>(pages) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * 1000));
}
void BM_pages_btree_tmf(benchmark::State& state) { pages_tmf<btree_root>(state, "btree-pages.tmf"); }
void BM_pages_map_tmf(benchmark::State& state) { pages_tmf<map_root>(state, "map-pages.tmf"); }
BENCHMARK(BM_pages_btree_tmf)->Iterations(20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_pages_map_tmf)->Iterations(20)->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------------
// memory: std::allocator

template <class M>
void mem_insert(benchmark::State& state) {
  for (auto _ : state) {
    M m;
    for (std::uint64_t k : keys()) m.emplace(k, make_value(k));
    benchmark::DoNotOptimize(m.size());
    state.PauseTiming();
    { M gone(std::move(m)); }
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_keys));
}
template <class M>
void mem_find(benchmark::State& state) {
  M m;
  for (std::uint64_t k : keys()) m.emplace(k, make_value(k));
  for (auto _ : state) {
    std::uint64_t sum = 0;
    for (std::uint64_t k : lookup_order()) sum += static_cast<unsigned char>(m.find(k)->second.bytes[8]);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n_keys));
}
using mem_btree = tmf::btree_map<std::uint64_t, value64, std::less<>, std::allocator<std::pair<const std::uint64_t, value64>>>;
using mem_std = std::map<std::uint64_t, value64>;
BENCHMARK_TEMPLATE(mem_insert, mem_btree)->Name("BM_mem_insert_btree")->Unit(benchmark::kMillisecond)->MinTime(1);
BENCHMARK_TEMPLATE(mem_insert, mem_std)->Name("BM_mem_insert_std_map")->Unit(benchmark::kMillisecond)->MinTime(1);
BENCHMARK_TEMPLATE(mem_find, mem_btree)->Name("BM_mem_find_btree")->Unit(benchmark::kMillisecond)->MinTime(1);
BENCHMARK_TEMPLATE(mem_find, mem_std)->Name("BM_mem_find_std_map")->Unit(benchmark::kMillisecond)->MinTime(1);
#if defined(TMF_HAVE_ABSL)
using mem_absl = absl::btree_map<std::uint64_t, value64>;
BENCHMARK_TEMPLATE(mem_insert, mem_absl)->Name("BM_mem_insert_absl")->Unit(benchmark::kMillisecond)->MinTime(1);
BENCHMARK_TEMPLATE(mem_find, mem_absl)->Name("BM_mem_find_absl")->Unit(benchmark::kMillisecond)->MinTime(1);
#endif

}  // namespace

BENCHMARK_MAIN();
