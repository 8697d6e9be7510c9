// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Commit cost (wall-clock time: the syncs are the point).
//  - small: update one 8-byte field and commit, the writer kept open;
//      tmf durability::full / no_sync  vs  LMDB txn_begin + put(8-byte value) + commit,
//      default flags (synced) / MDB_NOSYNC.
//  - dirty N pages: write one byte in N pages, every other page of a big tmf::vector<char>,
//      and commit; vs LMDB updating N 8-byte values that lie in N different leaf pages.
//      Counters: pages/s and s/page (per-page cost). The same pages are written by every
//      commit: with options::kept_pages (arg kept, 0 = off) their private copies stay.
//  - floor: the same N scattered pages of a private file mapping, each written (a
//      copy-on-write fault) and dropped again (MADV_DONTNEED), with no tracking, no log and no
//      write to the file: what any copy-on-write design pays at least, measured in this binary.
//  - one page, arena 64 MiB / 4 GiB / 16 GiB: a not-synced one-field commit on a small and a big
//      arena (the big block is fallocated: the 16 GiB case needs that much free disk for a while).
//  - append: each commit writes a new 1 MiB block (256 fresh pages) vs LMDB putting a new 1 MiB
//      value (MDB_APPEND); both free everything every 64 commits, outside the timing.
//  - diff: the commit's diff of 256 cached pages against their committed images, beside a
//      memcmp of each whole page (the floor of any comparison).
//  tmf's rows carry the active write tracker in their label; TMF_TRACKER=fallback forces the
//  mprotect one. The per-page table in the README comes from
//    bench_commit --benchmark_filter='dirty.*pages:256'

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <benchmark/benchmark.h>
#include <tmf/tmf.hpp>

#include "bench_common.hpp"

namespace {

constexpr std::size_t page = 4096;
constexpr std::int64_t max_pages = 256;

struct commit_root {
  std::uint64_t counter = 0;
  tmf::vector<char> big;  // 2 * max_pages pages (dirty-N case only)
};

tmf::durability sync_of(std::int64_t arg) { return arg ? tmf::durability::full : tmf::durability::no_sync; }
const char* sync_name(std::int64_t arg) { return arg ? "full" : "no_sync"; }

// Pages tmf logged per commit (the header page included), and the log bytes they took.
void pages_per_commit(benchmark::State& state, const tmf::storage_stats& a, const tmf::storage_stats& b) {
  const auto commits = static_cast<double>(b.commits - a.commits);
  state.counters["logged/commit"] = static_cast<double>(b.pages_logged - a.pages_logged) / commits;
  state.counters["log_B/commit"] = static_cast<double>(b.log_bytes - a.log_bytes) / commits;
}

void BM_commit_small_tmf(benchmark::State& state) {
  tmf_bench::scoped_file f("commit-small.tmf");
  tmf::storage<commit_root> store(f.path(), {.sync = sync_of(state.range(0))});
  auto w = store.write();
  const tmf::storage_stats before = store.stats();
  for (auto _ : state) {
    ++w->counter;
    w.commit();
  }
  state.SetLabel(sync_name(state.range(0)));
  pages_per_commit(state, before, store.stats());
}
BENCHMARK(BM_commit_small_tmf)->Arg(1)->Arg(0)->UseRealTime()->MinTime(0.2);

// A one-page commit (not synced: the CPU cost) on an arena of 64 MiB, 4 GiB and 16 GiB: what a
// commit costs must not depend on the arena's size.
struct arena_root {
  std::uint64_t counter = 0;
  char* bytes = nullptr;  // the arena, allocated and never touched
};

void BM_commit_one_page_arena_tmf(benchmark::State& state) {
  tmf_bench::scoped_file f("commit-arena.tmf");
  const auto arena = static_cast<std::size_t>(state.range(0)) << 20;
  tmf::storage<arena_root> store(f.path(), {.max_size = arena + (std::size_t{64} << 20), .sync = tmf::durability::no_sync});
  auto w = store.write();
  w->bytes = w.get_allocator<char>().allocate(arena - (std::size_t{8} << 20));
  w.commit();
  for (auto _ : state) {
    ++w->counter;
    w.commit();
  }
  const tmf::storage_stats st = store.stats();
  state.SetLabel(std::to_string(st.arena_bytes >> 20) + " MiB arena, " + st.tracker);
}
BENCHMARK(BM_commit_one_page_arena_tmf)->Arg(64)->Arg(4096)->Arg(16384)->ArgName("arena_mib")->MinTime(0.2);

// A one-page commit after one that wrote `kept` distinct pages (not synced): with
// options::kept_pages at least that large, every later commit runs with a full kept set, so
// this shows what choosing the kept pages costs per commit (it must not grow with the set).
void BM_commit_one_page_kept_tmf(benchmark::State& state) {
  tmf_bench::scoped_file f("commit-kept.tmf");
  const auto kept = static_cast<std::size_t>(state.range(0));
  tmf::options opt{.sync = tmf::durability::no_sync};
  opt.kept_pages = std::max<std::size_t>(kept, 1);
  tmf::storage<commit_root> store(f.path(), opt);
  auto w = store.write();
  w->big.assign((kept + 2) * page, 0);
  w.commit();
  for (std::size_t i = 0; i < kept; ++i) w->big[i * page + page / 2] = 1;  // every page of the buffer
  w.commit();
  for (auto _ : state) {
    ++w->counter;
    w.commit();
  }
  state.SetLabel(std::to_string(store.stats().kept_pages) + " kept, " + store.stats().tracker);
}
BENCHMARK(BM_commit_one_page_kept_tmf)->Arg(0)->Arg(2048)->Arg(8192)->Arg(32768)->ArgName("kept")->MinTime(0.2);

void pages_counters(benchmark::State& state, std::int64_t n) {
  state.counters["pages/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["s/page"] = benchmark::Counter(
      static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_commit_dirty_tmf(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  tmf_bench::scoped_file f("commit-dirty.tmf");
  tmf::options opt{.sync = sync_of(state.range(1))};
  opt.kept_pages = static_cast<std::size_t>(state.range(2));
  tmf::storage<commit_root> store(f.path(), opt);
  auto w = store.write();
  w->big.assign(2 * max_pages * page + page, 0);
  w.commit();
  // The vector's buffer is 64-byte aligned, not page aligned: step from its first full page.
  auto first = (reinterpret_cast<std::uintptr_t>(w->big.data()) + page - 1) & ~(page - 1);
  char* base = reinterpret_cast<char*>(first);
  char v = 0;
  const tmf::storage_stats before = store.stats();
  for (auto _ : state) {
    ++v;
    for (std::int64_t i = 0; i < n; ++i) base[2 * i * page] = v;
    w.commit();
  }
  const tmf::storage_stats after = store.stats();
  state.SetLabel(std::string(sync_name(state.range(1))) + " " + after.tracker +
                 (after.kept_pages ? " kept " + std::to_string(after.kept_pages) : ""));
  pages_counters(state, n);
  pages_per_commit(state, before, after);
}
// kept: options::kept_pages (2048 the default, 0 off: every private copy dropped at commit).
BENCHMARK(BM_commit_dirty_tmf)
    ->ArgsProduct({{1, 16, max_pages}, {1, 0}, {2048, 0}})
    ->ArgNames({"pages", "full", "kept"})
    ->UseRealTime()
    ->MinTime(0.2);

// Append: each commit writes a new 1 MiB block (256 fresh pages), as a bulk load does. The
// pages were free when the transaction began, so tmf writes them straight into the data file
// (storage_stats::pages_direct) instead of logging them. Every 64 commits the blocks are freed
// again, outside the timing, which keeps the file at 64 MiB.
constexpr std::size_t append_bytes = max_pages * page;
constexpr int append_ring = 64;

struct append_root {
  tmf::vector<tmf::vector<char>> blocks;
};

void BM_commit_append_tmf(benchmark::State& state) {
  tmf_bench::scoped_file f("commit-append.tmf");
  tmf::storage<append_root> store(f.path(), tmf::options{.sync = sync_of(state.range(0))});
  auto w = store.write();
  w->blocks.reserve(append_ring);
  w.commit();
  char v = 0;
  const tmf::storage_stats before = store.stats();
  for (auto _ : state) {
    if (w->blocks.size() == append_ring) {
      state.PauseTiming();
      w->blocks.clear();
      w.commit();
      state.ResumeTiming();
    }
    ++v;
    w->blocks.emplace_back(append_bytes, v);
    w.commit();
  }
  const tmf::storage_stats after = store.stats();
  state.SetLabel(std::string(sync_name(state.range(0))) + " " + after.tracker);
  pages_counters(state, max_pages);
  pages_per_commit(state, before, after);
  state.counters["direct/commit"] =
      static_cast<double>(after.pages_direct - before.pages_direct) / static_cast<double>(after.commits - before.commits);
}
BENCHMARK(BM_commit_append_tmf)->Arg(1)->Arg(0)->ArgName("full")->UseRealTime()->MinTime(0.5);

// The copy-on-write floor: fault a private copy of N scattered pages of a file mapping and
// drop it, nothing else.
void BM_commit_dirty_floor(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  tmf_bench::scoped_file f("commit-floor.bin");
  const std::size_t bytes = 2 * max_pages * page + page;
  const int fd = ::open(f.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 || ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)) != 0) {
    state.SkipWithError("cannot create the file");
    return;
  }
  void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (m == MAP_FAILED) {
    ::close(fd);
    state.SkipWithError("cannot map the file");
    return;
  }
  auto* base = static_cast<volatile char*>(m);
  char v = 0;
  for (auto _ : state) {
    ++v;
    for (std::int64_t i = 0; i < n; ++i) base[2 * i * page] = v;
    for (std::int64_t i = 0; i < n; ++i) ::madvise(static_cast<char*>(m) + 2 * i * page, page, MADV_DONTNEED);
  }
  ::munmap(m, bytes);
  ::close(fd);
  pages_counters(state, n);
}
BENCHMARK(BM_commit_dirty_floor)->Arg(1)->Arg(16)->Arg(max_pages)->ArgName("pages")->UseRealTime()->MinTime(0.2);

// The commit's diff of a page against its committed image (tmf::detail::diff_page, one
// word changed per page, 256 pages in the cache), beside the floor of any byte comparison:
// memcmp of the whole page, which stops at nothing because the change is its last word.
struct diff_pages_data {
  std::vector<unsigned char> now = std::vector<unsigned char>(max_pages * page), was = now;
  diff_pages_data() {
    for (std::size_t i = 0; i < was.size(); ++i) was[i] = now[i] = static_cast<unsigned char>(i * 7 + 1);
    for (std::size_t p = 0; p < max_pages; ++p) now[p * page + page - 8] ^= 1;
  }
};

void BM_diff_page_tmf(benchmark::State& state) {
  diff_pages_data d;
  std::vector<tmf::detail::record_extent> out;
  for (auto _ : state) {
    out.clear();
    for (std::size_t p = 1; p <= max_pages; ++p)
      tmf::detail::diff_page(d.now.data() + (p - 1) * page, d.was.data() + (p - 1) * page, p, out);
    benchmark::DoNotOptimize(out.data());
  }
  if (out.size() != max_pages) state.SkipWithError("diff_page found the wrong extents");
  pages_counters(state, max_pages);
}
BENCHMARK(BM_diff_page_tmf)->MinTime(0.2);

void BM_diff_page_memcmp(benchmark::State& state) {
  diff_pages_data d;
  int sum = 0;
  for (auto _ : state) {
    for (std::size_t p = 0; p < max_pages; ++p) sum += std::memcmp(d.now.data() + p * page, d.was.data() + p * page, page) != 0;
    benchmark::DoNotOptimize(sum);
  }
  pages_counters(state, max_pages);
}
BENCHMARK(BM_diff_page_memcmp)->MinTime(0.2);

#if defined(TMF_HAVE_LMDB)
using tmf_bench::mdb_check;

void lmdb_put(MDB_txn* txn, MDB_dbi dbi, std::uint64_t key, std::uint64_t value) {
  MDB_val k{sizeof key, &key}, d{sizeof value, &value};
  mdb_check(mdb_put(txn, dbi, &k, &d, 0), "mdb_put");
}

void BM_commit_small_lmdb(benchmark::State& state) {
  tmf_bench::scoped_file f("commit-small.lmdb");
  tmf_bench::lmdb_env db(f.str(), state.range(0) ? 0 : MDB_NOSYNC);
  std::uint64_t counter = 0;
  for (auto _ : state) {
    MDB_txn* txn;
    mdb_check(mdb_txn_begin(db.env, nullptr, 0, &txn), "mdb_txn_begin");
    lmdb_put(txn, db.dbi, 1, ++counter);
    mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  state.SetLabel(state.range(0) ? "synced" : "MDB_NOSYNC");
}
BENCHMARK(BM_commit_small_lmdb)->Arg(1)->Arg(0)->UseRealTime()->MinTime(0.2);

constexpr std::uint64_t lmdb_stride = 512;  // keys per stride: more than an LMDB leaf holds

void BM_commit_dirty_lmdb(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  tmf_bench::scoped_file f("commit-dirty.lmdb");
  tmf_bench::lmdb_env db(f.str(), state.range(1) ? 0 : MDB_NOSYNC);
  {
    MDB_txn* txn;
    mdb_check(mdb_txn_begin(db.env, nullptr, 0, &txn), "mdb_txn_begin");
    for (std::uint64_t k = 0; k < max_pages * lmdb_stride; ++k) {
      MDB_val key{sizeof k, &k}, d{sizeof k, &k};
      mdb_check(mdb_put(txn, db.dbi, &key, &d, MDB_APPEND), "mdb_put");
    }
    mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  std::uint64_t v = 0;
  for (auto _ : state) {
    ++v;
    MDB_txn* txn;
    mdb_check(mdb_txn_begin(db.env, nullptr, 0, &txn), "mdb_txn_begin");
    for (std::int64_t i = 0; i < n; ++i) lmdb_put(txn, db.dbi, static_cast<std::uint64_t>(i) * lmdb_stride, v);
    mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  state.SetLabel(state.range(1) ? "synced" : "MDB_NOSYNC");
  pages_counters(state, n);
}
BENCHMARK(BM_commit_dirty_lmdb)
    ->ArgsProduct({{1, 16, max_pages}, {1, 0}})
    ->ArgNames({"pages", "synced"})
    ->UseRealTime()
    ->MinTime(0.2);

// Append in LMDB: one new 1 MiB value per commit (overflow pages, written once); every 64
// commits the values are deleted again outside the timing.
void BM_commit_append_lmdb(benchmark::State& state) {
  tmf_bench::scoped_file f("commit-append.lmdb");
  tmf_bench::lmdb_env db(f.str(), state.range(0) ? 0 : MDB_NOSYNC);
  std::vector<char> value(append_bytes);
  std::uint64_t key = 0;
  int held = 0;
  for (auto _ : state) {
    MDB_txn* txn;
    if (held == append_ring) {
      state.PauseTiming();
      mdb_check(mdb_txn_begin(db.env, nullptr, 0, &txn), "mdb_txn_begin");
      mdb_check(mdb_drop(txn, db.dbi, 0), "mdb_drop");
      mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
      held = 0;
      state.ResumeTiming();
    }
    std::memset(value.data(), static_cast<int>(++key), value.size());
    mdb_check(mdb_txn_begin(db.env, nullptr, 0, &txn), "mdb_txn_begin");
    MDB_val k{sizeof key, &key}, d{value.size(), value.data()};
    mdb_check(mdb_put(txn, db.dbi, &k, &d, MDB_APPEND), "mdb_put");
    mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
    ++held;
  }
  state.SetLabel(state.range(0) ? "synced" : "MDB_NOSYNC");
  pages_counters(state, max_pages);
}
BENCHMARK(BM_commit_append_lmdb)->Arg(1)->Arg(0)->ArgName("synced")->UseRealTime()->MinTime(0.5);
#endif

}  // namespace

BENCHMARK_MAIN();
