// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// A real application's write path: an inverted index (term -> sorted list of document ids)
// over a corpus every Debian system has, /usr/share/common-licenses/* and
// /usr/share/doc/*/copyright (the gzipped changelogs are left out: reading them would need
// zlib). Documents are read and split into their distinct terms (lowercase runs of letters
// and digits, 2..40 bytes) before timing; one iteration builds the whole index from a new
// file in durable batches of 100 documents and closes it:
//   tmf:    tmf::map / tmf::btree_map<tmf::string, tmf::vector<std::uint32_t>>, one write
//           transaction per batch, durability::full
//   LMDB:   term -> its postings as one value (read, append the new ids, put), one write
//           transaction per batch, default flags (synced)
//   Boost:  boost::interprocess::map<string, vector<uint32_t>> in a managed_mapped_file,
//           flush() (msync) per batch
// Every peer's index is checked against the same expected posting count. Counters: batches,
// pages logged per commit (tmf), and bytes written per build from /proc/self/io: wchar (bytes
// passed to write calls) and write_bytes (bytes of page cache dirtied for storage, mapped
// stores included). Without any corpus file every case is skipped.
//   bench_text --benchmark_repetitions=3 --benchmark_report_aggregates_only=true

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>
#include <tmf/btree.hpp>
#include <tmf/tmf.hpp>

#include "bench_boost_ipc.hpp"
#include "bench_common.hpp"

#include <boost/interprocess/containers/string.hpp>
#include <boost/interprocess/containers/vector.hpp>

namespace bip = boost::interprocess;

namespace {

constexpr std::size_t batch = 100;

/// The corpus: for each document (in path order), its distinct terms, sorted.
struct corpus {
  std::vector<std::vector<std::string>> docs;
  std::size_t postings = 0;  // sum of the distinct terms of every document
  std::size_t bytes = 0;     // bytes read
};

void add_document(corpus& c, const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return;
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::set<std::string> terms;
  std::string t;
  auto flush = [&] {
    if (t.size() >= 2 && t.size() <= 40) terms.insert(t);
    t.clear();
  };
  for (char ch : text) {
    const auto u = static_cast<unsigned char>(ch);
    if (std::isalnum(u)) t.push_back(static_cast<char>(std::tolower(u)));
    else flush();
  }
  flush();
  c.bytes += text.size();
  c.postings += terms.size();
  c.docs.emplace_back(terms.begin(), terms.end());
}

const corpus& the_corpus() {
  static const corpus c = [] {
    namespace fs = std::filesystem;
    std::vector<fs::path> paths;
    std::error_code ec;
    for (fs::directory_iterator it("/usr/share/common-licenses", ec), end; !ec && it != end; it.increment(ec))
      if (it->is_regular_file(ec)) paths.push_back(it->path());
    for (fs::directory_iterator it("/usr/share/doc", ec), end; !ec && it != end; it.increment(ec)) {
      const fs::path p = it->path() / "copyright";
      if (fs::is_regular_file(p, ec)) paths.push_back(p);
    }
    std::sort(paths.begin(), paths.end());
    corpus r;
    for (const auto& p : paths) add_document(r, p);
    return r;
  }();
  return c;
}

/// Bytes this process has written so far: {wchar, write_bytes} of /proc/self/io.
struct io_bytes {
  double wchar = 0, write_bytes = 0;
};
io_bytes read_io() {
  io_bytes r;
  std::ifstream in("/proc/self/io");
  std::string key;
  double v;
  while (in >> key >> v) {
    if (key == "wchar:") r.wchar = v;
    else if (key == "write_bytes:") r.write_bytes = v;
  }
  return r;
}

/// Skips the case when the corpus is empty; else sets the counters every case shares.
bool have_corpus(benchmark::State& state) {
  if (the_corpus().docs.empty()) {
    state.SkipWithError("no corpus: /usr/share/common-licenses and /usr/share/doc/*/copyright are empty");
    return false;
  }
  return true;
}

void common_counters(benchmark::State& state, const io_bytes& before, const io_bytes& after) {
  const auto& c = the_corpus();
  const auto n = static_cast<double>(state.iterations());
  state.counters["docs"] = static_cast<double>(c.docs.size());
  state.counters["postings"] = static_cast<double>(c.postings);
  state.counters["batches"] = static_cast<double>((c.docs.size() + batch - 1) / batch);
  state.counters["wchar_MB"] = (after.wchar - before.wchar) / n / 1e6;
  state.counters["write_MB"] = (after.write_bytes - before.write_bytes) / n / 1e6;
}

// ---------------------------------------------------------------------------------------------
// tmf

template <class Index>
struct text_root {
  Index index;
  std::uint32_t docs = 0;
};
using map_index = tmf::map<tmf::string, tmf::vector<std::uint32_t>>;
using btree_index = tmf::btree_map<tmf::string, tmf::vector<std::uint32_t>>;

template <class Index>
void build_tmf(benchmark::State& state) {
  if (!have_corpus(state)) return;
  const auto& c = the_corpus();
  std::uint64_t commits = 0, pages = 0, last_pages = 0;
  std::string tracker;
  const io_bytes io0 = read_io();
  for (auto _ : state) {
    state.PauseTiming();
    auto f = std::make_unique<tmf_bench::scoped_file>("text.tmf");
    state.ResumeTiming();
    std::size_t total = 0;
    {
      tmf::storage<text_root<Index>> s(f->path(), tmf_bench::with_kept_env({.sync = tmf::durability::full}));
      for (std::size_t d = 0; d < c.docs.size(); d += batch) {
        auto w = s.write();
        auto& idx = w->index;
        for (std::size_t i = d; i < std::min(c.docs.size(), d + batch); ++i) {
          const auto id = static_cast<std::uint32_t>(i);
          for (const std::string& t : c.docs[i]) {
            auto it = idx.find(std::string_view(t));
            if (it == idx.end()) it = idx.try_emplace(tmf::string(t)).first;
            it->second.push_back(id);
          }
        }
        w->docs = static_cast<std::uint32_t>(std::min(c.docs.size(), d + batch));
        w.commit();
      }
      state.PauseTiming();
      const tmf::storage_stats st = s.stats();
      commits += st.commits;
      pages += st.pages_logged;
      last_pages = st.last_commit_pages;
      tracker = st.tracker;
      auto r = s.read();
      for (const auto& [term, ids] : r->index) total += ids.size();
      state.ResumeTiming();
    }  // closed inside the timing
    state.PauseTiming();
    if (total != c.postings) state.SkipWithError("tmf: wrong posting count");
    f.reset();
    state.ResumeTiming();
  }
  common_counters(state, io0, read_io());
  state.counters["logged/commit"] = static_cast<double>(pages) / static_cast<double>(commits);
  state.counters["last_commit_pages"] = static_cast<double>(last_pages);
  state.SetLabel("full " + tracker);
}
void BM_text_map_tmf(benchmark::State& state) { build_tmf<map_index>(state); }
void BM_text_btree_tmf(benchmark::State& state) { build_tmf<btree_index>(state); }
BENCHMARK(BM_text_map_tmf)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1);
BENCHMARK(BM_text_btree_tmf)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1);

// ---------------------------------------------------------------------------------------------
// Boost.Interprocess

using bip_segment = bip::managed_mapped_file::segment_manager;
using bip_string = bip::basic_string<char, std::char_traits<char>, bip::allocator<char, bip_segment>>;
using bip_ids = bip::vector<std::uint32_t, bip::allocator<std::uint32_t, bip_segment>>;
using bip_index = bip::map<bip_string, bip_ids, std::less<>,
                           bip::allocator<std::pair<const bip_string, bip_ids>, bip_segment>>;

void BM_text_boost_ipc(benchmark::State& state) {
  if (!have_corpus(state)) return;
  const auto& c = the_corpus();
  const io_bytes io0 = read_io();
  for (auto _ : state) {
    state.PauseTiming();
    auto f = std::make_unique<tmf_bench::scoped_file>("text.bip");
    state.ResumeTiming();
    std::size_t total = 0;
    {
      // Sized for the index with room to spare: a managed_mapped_file does not grow by itself.
      bip::managed_mapped_file mf(bip::create_only, f->c_str(), std::max<std::size_t>(64 << 20, 32 * c.bytes));
      bip_index* idx = mf.construct<bip_index>("index")(mf.get_segment_manager());
      bip_string key(mf.get_segment_manager());
      for (std::size_t d = 0; d < c.docs.size(); d += batch) {
        for (std::size_t i = d; i < std::min(c.docs.size(), d + batch); ++i) {
          const auto id = static_cast<std::uint32_t>(i);
          for (const std::string& t : c.docs[i]) {
            key.assign(t.data(), t.size());
            auto it = idx->find(key);
            if (it == idx->end()) it = idx->emplace(key, bip_ids(mf.get_segment_manager())).first;
            it->second.push_back(id);
          }
        }
        mf.flush();  // msync(MS_SYNC) of the mapping
      }
      state.PauseTiming();
      for (const auto& [term, ids] : *idx) total += ids.size();
      state.ResumeTiming();
    }
    state.PauseTiming();
    if (total != c.postings) state.SkipWithError("boost: wrong posting count");
    f.reset();
    state.ResumeTiming();
  }
  common_counters(state, io0, read_io());
  state.SetLabel("flush per batch");
}
BENCHMARK(BM_text_boost_ipc)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1);

// ---------------------------------------------------------------------------------------------
// LMDB

#if defined(TMF_HAVE_LMDB)
using tmf_bench::mdb_check;

void BM_text_lmdb(benchmark::State& state) {
  if (!have_corpus(state)) return;
  const auto& c = the_corpus();
  const io_bytes io0 = read_io();
  std::vector<std::uint32_t> scratch;
  for (auto _ : state) {
    state.PauseTiming();
    auto f = std::make_unique<tmf_bench::scoped_file>("text.mdb");
    state.ResumeTiming();
    std::size_t total = 0;
    MDB_env* env;
    MDB_dbi dbi;
    mdb_check(mdb_env_create(&env), "mdb_env_create");
    mdb_check(mdb_env_set_mapsize(env, std::size_t{1} << 30), "mdb_env_set_mapsize");
    mdb_check(mdb_env_open(env, f->c_str(), MDB_NOSUBDIR, 0644), "mdb_env_open");
    {
      MDB_txn* txn;
      mdb_check(mdb_txn_begin(env, nullptr, 0, &txn), "mdb_txn_begin");
      mdb_check(mdb_dbi_open(txn, nullptr, 0, &dbi), "mdb_dbi_open");
      mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
    }
    for (std::size_t d = 0; d < c.docs.size(); d += batch) {
      MDB_txn* txn;
      mdb_check(mdb_txn_begin(env, nullptr, 0, &txn), "mdb_txn_begin");
      for (std::size_t i = d; i < std::min(c.docs.size(), d + batch); ++i) {
        const auto id = static_cast<std::uint32_t>(i);
        for (const std::string& t : c.docs[i]) {
          MDB_val k{t.size(), const_cast<char*>(t.data())}, v;
          const int rc = mdb_get(txn, dbi, &k, &v);
          if (rc == MDB_NOTFOUND) v.mv_size = 0;
          else mdb_check(rc, "mdb_get");
          // The old value points into the map: copy it out before the put may move it.
          scratch.resize(v.mv_size / sizeof(std::uint32_t) + 1);
          if (v.mv_size) std::memcpy(scratch.data(), v.mv_data, v.mv_size);
          scratch.back() = id;
          MDB_val nv{scratch.size() * sizeof(std::uint32_t), scratch.data()};
          mdb_check(mdb_put(txn, dbi, &k, &nv, 0), "mdb_put");
        }
      }
      mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
    }
    state.PauseTiming();
    {
      MDB_txn* txn;
      MDB_cursor* cur;
      mdb_check(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin");
      mdb_check(mdb_cursor_open(txn, dbi, &cur), "mdb_cursor_open");
      MDB_val k, v;
      while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == MDB_SUCCESS) total += v.mv_size / sizeof(std::uint32_t);
      mdb_cursor_close(cur);
      mdb_txn_abort(txn);
    }
    state.ResumeTiming();
    mdb_env_close(env);
    state.PauseTiming();
    if (total != c.postings) state.SkipWithError("lmdb: wrong posting count");
    f.reset();
    state.ResumeTiming();
  }
  common_counters(state, io0, read_io());
  state.SetLabel("synced");
}
BENCHMARK(BM_text_lmdb)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1);
#endif

}  // namespace

BENCHMARK_MAIN();
