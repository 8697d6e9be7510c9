// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Per-page commit costs without Google Benchmark (which Debian does not package for mingw):
// the cases of bench_commit that the README's Windows section quotes, and their floor, in one
// binary that builds for Linux and for Windows (run under Wine in CI's machine).
//  - dirty 256: write one byte in 256 scattered pages (every other page of a big
//    tmf::vector<char>) and commit; durability::no_sync and ::full;
//  - one page: update one 8-byte field and commit (no_sync, full);
//  - floor: the same 256 pages of a private copy-on-write mapping of a file (tmf's OS layer:
//    os::map_file, os::protect writable), each written (a copy-on-write fault) and dropped
//    again with os::discard_many (Linux: MADV_DONTNEED; Windows: the view is unmapped and
//    mapped again), with no tracking, no log and no write to the file.
// Each case runs batches of at least 0.3 s; the median batch's wall and CPU time per
// page (or per commit) are printed, then tmf's ratio to the floor.
//
//   x86_64-w64-mingw32-g++-posix -std=c++20 -O2 -Iinclude -I<dir with boost/>
//       benchmarks/windows/page_costs.cpp -static -o build/page_costs.exe && wine build/page_costs.exe
//   g++ -std=c++20 -O2 -Iinclude benchmarks/windows/page_costs.cpp -o build/page_costs && build/page_costs
// Optional argument: the directory for the files (default: the current one).

#include <tmf/tmf.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#if defined(_WIN32)
#include <windows.h>
#else
#include <time.h>
#endif

namespace {

namespace os = tmf::detail::os;
constexpr std::size_t page = 4096;
constexpr std::size_t pages = 256;

struct commit_root {
  std::uint64_t counter = 0;
  tmf::vector<char> big;
};

/// CPU time of this process, seconds.
double cpu_seconds() {
#if defined(_WIN32)
  FILETIME c, e, k, u;
  ::GetProcessTimes(::GetCurrentProcess(), &c, &e, &k, &u);
  auto v = [](FILETIME t) { return (static_cast<std::uint64_t>(t.dwHighDateTime) << 32 | t.dwLowDateTime) * 1e-7; };
  return v(k) + v(u);
#else
  timespec ts;
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
#endif
}

struct cost {
  double wall_us = 0, cpu_us = 0;
};

/// Runs `round` (one round = `units` pages or commits) in 5 batches of at least 0.3 s: the
/// median batch's cost per unit.
template <class F>
cost measure(std::size_t units, F round) {
  for (int i = 0; i < 3; ++i) round();  // warm-up
  std::vector<cost> batches;
  for (int b = 0; b < 5; ++b) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    std::size_t n = 0;
    double wall = 0;
    do {
      round();
      ++n;
      wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (wall < 0.3);
    const double cpu = cpu_seconds() - c0;
    const double per = 1e6 / static_cast<double>(n * units);
    batches.push_back({wall * per, cpu * per});
  }
  std::sort(batches.begin(), batches.end(), [](const cost& a, const cost& b) { return a.wall_us < b.wall_us; });
  return batches[2];
}

void print(const char* name, const char* unit, cost c) {
  std::printf("%-34s %9.2f us/%s wall %9.2f us/%s CPU\n", name, c.wall_us, unit, c.cpu_us, unit);
}

std::string tracker_of(const std::filesystem::path& p) {
  tmf::storage<commit_root> s(p, {.sync = tmf::durability::no_sync});
  return s.stats().tracker;
}

cost dirty_tmf(const std::filesystem::path& p, tmf::durability sync) {
  std::filesystem::remove(p);
  std::filesystem::remove(p.string() + "-log");
  tmf::storage<commit_root> store(p, {.sync = sync});
  auto w = store.write();
  w->big.assign(2 * pages * page + page, 0);
  w.commit();
  const auto first = (reinterpret_cast<std::uintptr_t>(w->big.data()) + page - 1) & ~(page - 1);
  char* base = reinterpret_cast<char*>(first);
  char v = 0;
  return measure(pages, [&] {
    ++v;
    for (std::size_t i = 0; i < pages; ++i) base[2 * i * page] = v;
    w.commit();
  });
}

cost one_page_tmf(const std::filesystem::path& p, tmf::durability sync) {
  std::filesystem::remove(p);
  std::filesystem::remove(p.string() + "-log");
  tmf::storage<commit_root> store(p, {.sync = sync});
  auto w = store.write();
  return measure(1, [&] {
    ++w->counter;
    w.commit();
  });
}

cost floor_cost(const std::filesystem::path& p) {
  std::filesystem::remove(p);
  const std::size_t bytes = (2 * pages * page + page + os::map_granularity - 1) / os::map_granularity * os::map_granularity;
  os::file f;
  void* base = nullptr;
  if (os::create_file(p, f) || os::allocate(f, 0, bytes) || os::reserve(nullptr, bytes, false, base) ||
      os::map_file(base, bytes, f, 0) || os::protect(base, bytes, true)) {
    std::fprintf(stderr, "page_costs: cannot map the floor's file\n");
    return {};
  }
  auto* m = static_cast<volatile char*>(base);
  std::vector<os::span> spans;
  for (std::size_t i = 0; i < pages; ++i) spans.push_back({static_cast<char*>(base) + 2 * i * page, page});
  char v = 0;
  const cost c = measure(pages, [&] {
    ++v;
    for (std::size_t i = 0; i < pages; ++i) m[2 * i * page] = v;
    os::discard_many(spans.data(), spans.size());
    os::protect(base, bytes, true);  // Windows: a remapped view comes back read-only
  });
  os::release(base, bytes);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : ".";
  const auto db = dir / "page_costs.tmf", raw = dir / "page_costs.bin";
  std::printf("tmf page costs (%s, tracker %s, view granularity %zu KiB)\n",
              os::map_granularity == page ? "Linux" : "Windows", tracker_of(db).c_str(), os::map_granularity >> 10);
  const cost floor = floor_cost(raw);
  print("floor: COW fault + discard, 256", "page", floor);
  const cost ns = dirty_tmf(db, tmf::durability::no_sync);
  print("tmf dirty 256 pages, no_sync", "page", ns);
  const cost full = dirty_tmf(db, tmf::durability::full);
  print("tmf dirty 256 pages, full", "page", full);
  print("tmf one-page commit, no_sync", "commit", one_page_tmf(db, tmf::durability::no_sync));
  print("tmf one-page commit, full", "commit", one_page_tmf(db, tmf::durability::full));
  if (floor.wall_us > 0)
    std::printf("ratio to the floor (wall / CPU): no_sync %.2f / %.2f, full %.2f / %.2f\n", ns.wall_us / floor.wall_us,
                ns.cpu_us / floor.cpu_us, full.wall_us / floor.wall_us, full.cpu_us / floor.cpu_us);
  for (const auto& p : {db, std::filesystem::path(db.string() + "-log"), std::filesystem::path(db.string() + "-lock"), raw})
    std::filesystem::remove(p);
  return 0;
}
