// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Point reads: look up a random existing key among 100k uint64 -> uint64 entries.
//   tmf:    read transaction + tmf::map::find          (and: find inside one long reader;
//           the same with tmf::btree_map; the transaction alone)
//   LMDB:   read txn begin + mdb_get + abort, MDB_INTEGERKEY (and: reset/renew; one long txn;
//           renew + reset alone)
// The transaction cases also run on 2 threads (real time per iteration of each thread).
//   boost:  boost::interprocess::map in a managed_mapped_file, find (no transactions at all)
//   std:    std::map::find in ordinary memory (the floor)
// Each data set is built once per process, outside the timing.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <tmf/btree.hpp>
#include <tmf/tmf.hpp>

#include "bench_boost_ipc.hpp"
#include "bench_common.hpp"

namespace bip = boost::interprocess;

namespace {

constexpr std::size_t entries = 100'000;
constexpr std::size_t probes = 1 << 16;  // precomputed lookup sequence, cycled

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct keyset {
  std::vector<std::uint64_t> keys;   // key i -> value i
  std::vector<std::uint64_t> probe;  // keys to look up, random order
  keyset() : keys(entries), probe(probes) {
    for (std::size_t i = 0; i < entries; ++i) keys[i] = splitmix(i);
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<std::size_t> pick(0, entries - 1);
    for (auto& p : probe) p = keys[pick(rng)];
  }
};
const keyset& ks() {
  static const keyset k;
  return k;
}

// -- tmf --------------------------------------------------------------------------------------
struct read_root {
  tmf::map<std::uint64_t, std::uint64_t> m;
  tmf::btree_map<std::uint64_t, std::uint64_t> bt;
};

struct tmf_fixture {
  tmf_bench::scoped_file file{"read.tmf"};
  tmf::storage<read_root> store{file.path(), {.sync = tmf::durability::no_sync}};
  tmf_fixture() {
    auto w = store.write();
    for (std::size_t i = 0; i < entries; ++i) w->m.emplace(ks().keys[i], i);
    for (std::size_t i = 0; i < entries; ++i) w->bt.emplace(ks().keys[i], i);
    w.commit();
  }
};
tmf_fixture& tmf_data() {
  static tmf_fixture f;
  return f;
}

void BM_read_tmf_txn(benchmark::State& state) {
  auto& store = tmf_data().store;
  const auto& probe = ks().probe;
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919, found = 0;
  for (auto _ : state) {
    auto r = store.read();
    auto it = r->m.find(probe[i++ & (probes - 1)]);
    found += it != r->m.end();
    benchmark::DoNotOptimize(it);
  }
  if (found != static_cast<std::size_t>(state.iterations())) state.SkipWithError("tmf: a key was not found");
}
BENCHMARK(BM_read_tmf_txn)->Threads(1)->Threads(2)->UseRealTime();

void BM_read_tmf_held(benchmark::State& state) {
  auto& store = tmf_data().store;
  const auto& probe = ks().probe;
  auto r = store.read();
  const auto& m = r->m;
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919, found = 0;
  for (auto _ : state) {
    auto it = m.find(probe[i++ & (probes - 1)]);
    found += it != m.end();
    benchmark::DoNotOptimize(it);
  }
  if (found != static_cast<std::size_t>(state.iterations())) state.SkipWithError("tmf: a key was not found");
}
BENCHMARK(BM_read_tmf_held);

// The same with tmf::btree_map, whose page-sized nodes take fewer cache misses per lookup.
void BM_read_tmf_btree_txn(benchmark::State& state) {
  auto& store = tmf_data().store;
  const auto& probe = ks().probe;
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919, found = 0;
  for (auto _ : state) {
    auto r = store.read();
    auto it = r->bt.find(probe[i++ & (probes - 1)]);
    found += it != r->bt.end();
    benchmark::DoNotOptimize(it);
  }
  if (found != static_cast<std::size_t>(state.iterations())) state.SkipWithError("tmf: a key was not found");
}
BENCHMARK(BM_read_tmf_btree_txn)->Threads(1)->Threads(2)->UseRealTime();

// The transaction alone: begin + end, no lookup.
void BM_read_tmf_empty_txn(benchmark::State& state) {
  auto& store = tmf_data().store;
  for (auto _ : state) {
    auto r = store.read();
    benchmark::DoNotOptimize(&r->m);
  }
}
BENCHMARK(BM_read_tmf_empty_txn)->Threads(1)->Threads(2)->UseRealTime();

// -- LMDB -------------------------------------------------------------------------------------
#if defined(TMF_HAVE_LMDB)
using tmf_bench::mdb_check;

struct lmdb_fixture {
  tmf_bench::scoped_file file{"read.lmdb"};
  tmf_bench::lmdb_env db{file.str(), MDB_NOSYNC};
  lmdb_fixture() {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> sorted;
    for (std::size_t i = 0; i < entries; ++i) sorted.emplace_back(ks().keys[i], i);
    std::sort(sorted.begin(), sorted.end());
    MDB_txn* txn;
    mdb_check(mdb_txn_begin(db.env, nullptr, 0, &txn), "mdb_txn_begin");
    for (auto& [k, v] : sorted) {
      MDB_val key{sizeof k, &k}, val{sizeof v, &v};
      mdb_check(mdb_put(txn, db.dbi, &key, &val, MDB_APPEND), "mdb_put");
    }
    mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
  }
};
lmdb_fixture& lmdb_data() {
  static lmdb_fixture f;
  return f;
}

bool lmdb_find(MDB_txn* txn, MDB_dbi dbi, std::uint64_t k) {
  MDB_val key{sizeof k, &k}, val;
  int rc = mdb_get(txn, dbi, &key, &val);
  benchmark::DoNotOptimize(val.mv_data);
  return rc == MDB_SUCCESS;
}

void BM_read_lmdb_txn(benchmark::State& state) {
  auto& db = lmdb_data().db;
  const auto& probe = ks().probe;
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919, found = 0;
  for (auto _ : state) {
    MDB_txn* txn;
    mdb_check(mdb_txn_begin(db.env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
    found += lmdb_find(txn, db.dbi, probe[i++ & (probes - 1)]);
    mdb_txn_abort(txn);
  }
  if (found != static_cast<std::size_t>(state.iterations())) state.SkipWithError("lmdb: a key was not found");
}
BENCHMARK(BM_read_lmdb_txn)->Threads(1)->Threads(2)->UseRealTime();

void BM_read_lmdb_renew(benchmark::State& state) {
  auto& db = lmdb_data().db;
  const auto& probe = ks().probe;
  MDB_txn* txn;
  mdb_check(mdb_txn_begin(db.env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
  mdb_txn_reset(txn);
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919, found = 0;
  for (auto _ : state) {
    mdb_check(mdb_txn_renew(txn), "mdb_txn_renew");
    found += lmdb_find(txn, db.dbi, probe[i++ & (probes - 1)]);
    mdb_txn_reset(txn);
  }
  mdb_txn_abort(txn);
  if (found != static_cast<std::size_t>(state.iterations())) state.SkipWithError("lmdb: a key was not found");
}
BENCHMARK(BM_read_lmdb_renew)->Threads(1)->Threads(2)->UseRealTime();

void BM_read_lmdb_empty_renew(benchmark::State& state) {
  auto& db = lmdb_data().db;
  MDB_txn* txn;
  mdb_check(mdb_txn_begin(db.env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
  mdb_txn_reset(txn);
  for (auto _ : state) {
    mdb_check(mdb_txn_renew(txn), "mdb_txn_renew");
    benchmark::DoNotOptimize(txn);
    mdb_txn_reset(txn);
  }
  mdb_txn_abort(txn);
}
BENCHMARK(BM_read_lmdb_empty_renew)->Threads(1)->Threads(2)->UseRealTime();

void BM_read_lmdb_held(benchmark::State& state) {
  auto& db = lmdb_data().db;
  const auto& probe = ks().probe;
  MDB_txn* txn;
  mdb_check(mdb_txn_begin(db.env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919, found = 0;
  for (auto _ : state) found += lmdb_find(txn, db.dbi, probe[i++ & (probes - 1)]);
  mdb_txn_abort(txn);
  if (found != static_cast<std::size_t>(state.iterations())) state.SkipWithError("lmdb: a key was not found");
}
BENCHMARK(BM_read_lmdb_held);
#endif

// -- Boost.Interprocess -----------------------------------------------------------------------
using bip_value = std::pair<const std::uint64_t, std::uint64_t>;
using bip_alloc = bip::allocator<bip_value, bip::managed_mapped_file::segment_manager>;
using bip_map = bip::map<std::uint64_t, std::uint64_t, std::less<std::uint64_t>, bip_alloc>;

struct boost_fixture {
  tmf_bench::scoped_file file{"read.bip"};
  bip::managed_mapped_file mf{bip::create_only, file.c_str(), std::size_t{64} << 20};
  bip_map* m = mf.construct<bip_map>("map")(mf.get_segment_manager());
  boost_fixture() {
    for (std::size_t i = 0; i < entries; ++i) m->emplace(ks().keys[i], i);
  }
};
boost_fixture& boost_data() {
  static boost_fixture f;
  return f;
}

void BM_read_boost_ipc(benchmark::State& state) {
  const bip_map& m = *boost_data().m;
  const auto& probe = ks().probe;
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919, found = 0;
  for (auto _ : state) {
    auto it = m.find(probe[i++ & (probes - 1)]);
    found += it != m.end();
    benchmark::DoNotOptimize(it);
  }
  if (found != static_cast<std::size_t>(state.iterations()) || m.size() != entries)
    state.SkipWithError("boost: a key was not found");
}
BENCHMARK(BM_read_boost_ipc);

// -- std::map ---------------------------------------------------------------------------------
void BM_read_std_map(benchmark::State& state) {
  static const std::map<std::uint64_t, std::uint64_t> m = [] {
    std::map<std::uint64_t, std::uint64_t> x;
    for (std::size_t i = 0; i < entries; ++i) x.emplace(ks().keys[i], i);
    return x;
  }();
  const auto& probe = ks().probe;
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919, found = 0;
  for (auto _ : state) {
    auto it = m.find(probe[i++ & (probes - 1)]);
    found += it != m.end();
    benchmark::DoNotOptimize(it);
  }
  if (found != static_cast<std::size_t>(state.iterations())) state.SkipWithError("std: a key was not found");
}
BENCHMARK(BM_read_std_map);

}  // namespace

BENCHMARK_MAIN();
