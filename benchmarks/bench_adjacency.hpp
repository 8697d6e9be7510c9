// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// The adjacency-list workload of issue 14, shared by bench_adjacency (tmf, Boost.Interprocess
// 1.74, std::) and bench_adjacency_metall (Metall, built against Boost 1.81): 2M directed R-MAT
// edges over 2^20 vertices (a=0.57 b=0.19 c=0.19 d=0.05, as Metall's adjacency-list benchmark;
// vertex ids scrambled by a hash, as Metall's generator does), inserted in batches of 100k into
// an unordered_map<u64, vector<u64>>. The edges come from the standard library alone, so both
// binaries generate the same edges in the same order; the tmf and std:: cases are here so
// that both binaries run them (tmf builds against either Boost: it uses Boost.Intrusive only).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sys/resource.h>
#include <sys/stat.h>

#include <benchmark/benchmark.h>
#include <tmf/tmf.hpp>

#include "bench_common.hpp"

namespace tmf_bench::adjacency {

constexpr unsigned vertex_scale = 20;
constexpr std::size_t edge_count = 2'000'000;
constexpr std::size_t batch_edges = 100'000;
constexpr std::uint64_t seed = 14;

using edge = std::pair<std::uint64_t, std::uint64_t>;

/// splitmix64: a tiny, fully specified generator (std:: distributions are not portable).
inline std::uint64_t next_random(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// A bijective 64-bit mix (splitmix64's finalizer), for id scrambling and the checksum.
inline std::uint64_t mix(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// `n` R-MAT edges over 2^scale vertices: each level picks one quadrant of the adjacency
/// matrix with probabilities a, b, c, 1-a-b-c; the ids are then scrambled (masked hash) so the
/// high-degree vertices are not all small numbers.
inline std::vector<edge> rmat_edges(std::size_t n, unsigned scale, std::uint64_t s, double a = 0.57,
                                    double b = 0.19, double c = 0.19) {
  std::vector<edge> out(n);
  const std::uint64_t mask = (std::uint64_t{1} << scale) - 1;
  for (auto& e : out) {
    std::uint64_t src = 0, dst = 0;
    for (unsigned level = 0; level < scale; ++level) {
      const double r = static_cast<double>(next_random(s) >> 11) * 0x1.0p-53;
      const std::uint64_t bit = std::uint64_t{1} << level;
      if (r < a) {
      } else if (r < a + b) {
        dst |= bit;
      } else if (r < a + b + c) {
        src |= bit;
      } else {
        src |= bit;
        dst |= bit;
      }
    }
    e = {mix(src) & mask, mix(dst) & mask};
  }
  return out;
}

/// The benchmark's edges, generated once per process (outside any timing).
inline const std::vector<edge>& edges() {
  static const std::vector<edge> e = rmat_edges(edge_count, vertex_scale, seed);
  return e;
}

/// Adds edges [begin, end) to an adjacency map: `m.try_emplace(src, empty...)` then
/// `push_back(dst)`; `empty` is what a new target vector is built from (its allocator, for
/// the peers whose allocators are not default-constructible).
template <class Map, class... Empty>
void add_edges(Map& m, std::size_t begin, std::size_t end, const Empty&... empty) {
  const auto& e = edges();
  for (std::size_t i = begin; i < end; ++i) m.try_emplace(e[i].first, empty...).first->second.push_back(e[i].second);
}

/// What a built adjacency list holds, independent of iteration order: the number of vertices
/// with an out-edge, of edges, and a sum over every (source, position, target) triple.
struct summary {
  std::size_t vertices = 0;
  std::size_t edges = 0;
  std::uint64_t checksum = 0;
  friend bool operator==(const summary&, const summary&) = default;
};

template <class Map>
summary summarize(const Map& m) {
  summary s;
  for (const auto& [src, targets] : m) {
    ++s.vertices;
    std::uint64_t pos = 0;
    for (const std::uint64_t dst : targets) {
      ++s.edges;
      s.checksum += mix(mix(src) ^ (pos++ * 0x9e3779b97f4a7c15ULL) ^ mix(dst + 1));
    }
  }
  return s;
}

/// The summary every peer's list must match: the list built with std:: containers.
inline const summary& expected() {
  static const summary s = [] {
    std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> m;
    add_edges(m, 0, edge_count);
    return summarize(m);
  }();
  return s;
}

/// Bytes of a file, or of every file under a directory (Metall's datastore): apparent size
/// and disk usage (st_blocks).
struct disk_bytes {
  double size = 0, used = 0;
};
inline disk_bytes measure_disk(const std::filesystem::path& p) {
  namespace fs = std::filesystem;
  disk_bytes r;
  auto add = [&](const fs::path& f) {
    struct ::stat st{};
    if (::stat(f.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      r.size += static_cast<double>(st.st_size);
      r.used += static_cast<double>(st.st_blocks) * 512.0;
    }
  };
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    for (fs::recursive_directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec)) add(it->path());
  } else {
    add(p);
  }
  return r;
}

/// Page faults this process has taken so far (minor and major; getrusage).
inline double page_faults() noexcept {
  struct ::rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_minflt) + static_cast<double>(u.ru_majflt);
}

/// Seconds on the steady clock since `t0`.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Per-iteration sums of one case: the batches' time, the close's time, the file's bytes.
struct totals {
  double build_s = 0, close_s = 0;
  disk_bytes disk;
  void add_disk(const std::filesystem::path& p) {
    const disk_bytes d = measure_disk(p);
    disk.size += d.size;
    disk.used += d.used;
  }
};

/// Sets the counters every case shares; items/s = edges inserted per second of the whole
/// build (batches and close).
inline void report(benchmark::State& state, const totals& t) {
  const auto n = static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * edge_count));
  state.counters["build_s"] = t.build_s / n;
  state.counters["close_s"] = t.close_s / n;
  state.counters["file_MB"] = t.disk.size / n / 1e6;
  state.counters["disk_MB"] = t.disk.used / n / 1e6;
}

/// Checks a built list against the std:: one; false (and the case skipped) if they differ.
template <class Map>
bool check_list(benchmark::State& state, const Map& m, const char* who) {
  if (summarize(m) == expected()) return true;
  state.SkipWithError((std::string(who) + ": the adjacency list differs from std::'s").c_str());
  return false;
}

/// The floor: std::unordered_map<u64, std::vector<u64>> in ordinary memory (glibc malloc),
/// built in the same batches, destroyed as the close.
inline void BM_adjacency_std(benchmark::State& state) {
  totals t;
  (void)expected();
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    auto m = std::make_unique<std::unordered_map<std::uint64_t, std::vector<std::uint64_t>>>();
    for (std::size_t b = 0; b < edge_count; b += batch_edges) add_edges(*m, b, b + batch_edges);
    t.build_s += seconds_since(t0);
    state.PauseTiming();
    const bool ok = check_list(state, *m, "std");
    if (!ok) break;  // skipped: the timer must stay paused
    state.ResumeTiming();
    t0 = std::chrono::steady_clock::now();
    m.reset();
    t.close_s += seconds_since(t0);
  }
  report(state, t);
  state.SetLabel("in memory");
}

/// The tmf case's root.
struct adjacency_root {
  tmf::unordered_map<std::uint64_t, tmf::vector<std::uint64_t>> list;
};

/// tmf: one write transaction + commit per batch; range(0): durability::full, else no_sync.
/// Extra counters: commit_s (the build's time in commit(); the rest of build_s is the
/// batches' container work, allocation and tracking faults), logged/commit (pages per
/// commit), faults/commit (the process's page faults during the build, per commit).
inline void BM_adjacency_tmf(benchmark::State& state) {
  const bool durable = state.range(0) != 0;
  totals t;
  (void)expected();
  std::uint64_t commits = 0, pages = 0;
  double commit_s = 0, faults = 0;
  for (auto _ : state) {
    state.PauseTiming();
    tmf_bench::scoped_file f("adjacency.tmf");
    state.ResumeTiming();
    auto t0 = std::chrono::steady_clock::now();
    const double faults0 = page_faults();
    std::optional<tmf::storage<adjacency_root>> s;
    s.emplace(f.path(), tmf_bench::with_kept_env(tmf::options{.sync = durable ? tmf::durability::full : tmf::durability::no_sync}));
    for (std::size_t b = 0; b < edge_count; b += batch_edges) {
      auto w = s->write();
      add_edges(w->list, b, b + batch_edges);
      const auto c0 = std::chrono::steady_clock::now();
      w.commit();
      commit_s += seconds_since(c0);
    }
    t.build_s += seconds_since(t0);
    faults += page_faults() - faults0;
    state.PauseTiming();
    const tmf::storage_stats st = s->stats();
    commits += st.commits;
    pages += st.pages_logged;
    bool ok;
    {
      auto r = s->read();
      ok = check_list(state, r->list, "tmf");
    }
    if (!ok) break;  // skipped: the timer must stay paused
    state.ResumeTiming();
    t0 = std::chrono::steady_clock::now();
    s.reset();
    t.close_s += seconds_since(t0);
    state.PauseTiming();
    t.add_disk(f.path());
    state.ResumeTiming();
  }
  report(state, t);
  state.counters["logged/commit"] = commits ? static_cast<double>(pages) / static_cast<double>(commits) : 0;
  state.counters["faults/commit"] = commits ? faults / static_cast<double>(commits) : 0;
  state.counters["commit_s"] = commit_s / static_cast<double>(state.iterations());
  state.SetLabel(durable ? "full" : "no_sync");
}
}  // namespace tmf_bench::adjacency
