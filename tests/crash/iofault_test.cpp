// SPDX-License-Identifier: Apache-2.0 OR MIT
// Pairs of I/O errors around the commit point, each followed by power cuts.
//
// A workload of a few commits, each followed by a checkpoint (data-file sync, new log
// header), runs once to enumerate its file operations. Then, for every operation (a write
// or a sync) and every later one in a window (a write, a sync or a read), it runs again with
// exactly those two failing, recording every operation that happened (trace.hpp). A failed
// sync is recorded as such: the file's unsynced writes then never become durable, as when
// Linux drops the pages it failed to write. After each schedule, the power is cut at every
// point where the durable state changed (and at the end, without a cut), the files are
// rebuilt as the disk would hold them, reopened and checked against what commit() said:
//  - no commit that returned is lost;
//  - no commit reported rolled back (a system error) is present;
//  - the state is one whole commit (never half), check() passes, and a second reopen
//    shows the same state (the outcome is settled).
// Four named schedules are the cases of the I/O-error issue.
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "crash/trace.hpp"
#include "test_support.hpp"

namespace {

namespace os = tmf::detail::os;
using namespace tmf_test::crash;
using tmf::detail::page_size;

struct root {
  std::uint64_t value = 0;
  tmf::vector<std::uint64_t> pages;  // one word per page-sized stride
};

constexpr std::uint64_t baseline_value = 1;
constexpr int attempts = 3;  // commits per run; attempt i writes value 100 + i

/// What commit() said about one attempt.
enum class outcome { acknowledged, rolled_back, unknown, needs_reopen, not_run };

struct attempt_result {
  outcome what = outcome::not_run;
  std::size_t start = 0, end = 0;  ///< trace size when commit() was called and when it returned
};

// -- the fault schedule ----------------------------------------------------------------------

/// The faultable operations of a run, counted in order: the reads, writes and syncs of the
/// storage's two files. `fail` lists the indices that fail. With `evict`, a failed sync of
/// the data file also evicts its unsynced pages from the cache: reads then see the disk's
/// older content (the kernel dropped what it could not write).
struct schedule {
  std::vector<std::size_t> fail;
  bool evict = false;
};

std::size_t g_index = 0;  // faultable operations seen so far
const schedule* g_schedule = nullptr;
int g_failed = 0, g_evictions = 0;
std::vector<std::size_t> g_data_syncs;  // the indices of the data file's syncs in this run
trace* g_trace = nullptr;
std::filesystem::path g_data_path, g_scratch_path;

bool faultable(io_op op) { return op == io_op::write || op == io_op::sync || op == io_op::read; }

const fate& lose_unsynced() {
  static const fate f{[](std::size_t, std::uint64_t, std::uint64_t, std::size_t, std::size_t) { return false; },
                      [](std::size_t) { return false; }};
  return f;
}

/// The data file's cache loses its unsynced pages: its content becomes the durable one,
/// written back (and reported to the recorder as writes, so the trace stays the truth).
void evict_data_file(const os::file& f) {
  image_builder b(*g_trace);
  b.advance_to(g_trace->ops.size());
  b.write(data_file, g_scratch_path, lose_unsynced());
  std::vector<char> durable = tmf_test::read_bytes(g_scratch_path);
  struct stat st;
  if (::fstat(f.native(), &st) != 0) throw std::system_error(errno, std::generic_category(), "fstat");
  durable.resize(static_cast<std::size_t>(st.st_size), 0);  // pages past the durable end read as zeros
  if (::pwrite(f.native(), durable.data(), durable.size(), 0) != static_cast<ssize_t>(durable.size()))
    throw std::system_error(errno, std::generic_category(), "pwrite");
  if (g_io_observer) g_io_observer(io_event{io_op::write, f.native(), 0, durable.size(), durable.data()});
  ++g_evictions;
}

std::error_code fault_hook(io_op op, const os::file& f, std::uint64_t off, std::uint64_t len, const void* data) {
  if (g_schedule && faultable(op)) {
    const std::size_t i = g_index++;
    if (op == io_op::sync) {
      struct stat a, b;
      if (::fstat(f.native(), &a) == 0 && ::stat(g_data_path.c_str(), &b) == 0 && a.st_ino == b.st_ino)
        g_data_syncs.push_back(i);
    }
    for (std::size_t x : g_schedule->fail)
      if (x == i) {
        ++g_failed;
        if (op == io_op::sync && g_io_observer) {
          struct stat a, b;
          if (g_schedule->evict && ::fstat(f.native(), &a) == 0 && ::stat(g_data_path.c_str(), &b) == 0 &&
              a.st_ino == b.st_ino)
            evict_data_file(f);
          io_event e{op, f.native(), off, len, data};
          e.failed = true;
          g_io_observer(e);
        }
        return std::make_error_code(std::errc::io_error);
      }
  }
  return forward_io(op, f, off, len, data);
}

// -- one run -----------------------------------------------------------------------------

struct run_result {
  trace t;
  attempt_result a[attempts];
  std::size_t faultable_ops = 0;
  bool evicted = false;  ///< a failed data sync evicted pages (the failed syncs wrote nothing)
};

tmf::options workload_options() {
  tmf::options o;
  o.checkpoint_bytes = 4 * page_size;  // every commit's record is larger: a checkpoint after each
  return o;
}

void set(tmf::writer<root>& w, std::uint64_t v) {
  w->value = v;
  for (auto& x : w->pages) x = v;
}

/// Creates the storage at its baseline, then runs the attempts with `sched` failing.
run_result run_once(const std::filesystem::path& path, const schedule& sched) {
  run_result r;
  std::filesystem::remove(path);
  std::filesystem::remove(tmf_test::log_path(path));
  {
    tmf::storage<root> s(path, workload_options());
    auto w = s.write();
    w->pages.assign(4 * page_size / sizeof(std::uint64_t), 0);
    set(w, baseline_value);
    w.commit();
  }
  r.t.take_baseline(path, tmf_test::log_path(path));
  {
    recorder rec(r.t, path, tmf_test::log_path(path));
    g_index = 0;
    g_failed = 0;
    g_data_syncs.clear();
    g_trace = &r.t;
    g_data_path = path;
    g_scratch_path = path.string() + "-scratch";
    g_schedule = &sched;
    os::io_hook = &fault_hook;
    try {
      std::optional<tmf::storage<root>> s;
      s.emplace(path, workload_options());
      auto w = s->write();
      for (int i = 0; i < attempts; ++i) {
        attempt_result& a = r.a[i];
        a.start = r.t.ops.size();
        try {
          set(w, 100 + static_cast<std::uint64_t>(i));
          w.commit();
          a.what = outcome::acknowledged;
        } catch (const tmf::error& e) {
          a.what = e.code() == tmf::errc::commit_unknown ? outcome::unknown
                   : e.code() == tmf::errc::needs_reopen ? outcome::needs_reopen
                                                         : outcome::rolled_back;
        }
        a.end = r.t.ops.size();
        if (a.what == outcome::unknown || a.what == outcome::needs_reopen) break;
        // A later call may report needs_reopen for an earlier checkpoint: then stop.
        try {
          (void)w.root();
        } catch (const tmf::error&) {
          break;
        }
      }
    } catch (const tmf::error&) {
      // Opening or ending the writer failed under the schedule: what was acknowledged stands.
    }
    r.faultable_ops = g_index;
    r.evicted = g_evictions > 0;
    g_schedule = nullptr;
    os::io_hook = nullptr;
    std::filesystem::remove(g_scratch_path);
  }
  return r;
}

// -- verification ----------------------------------------------------------------------------

/// Opens the storage at `path` and reads its state: the value, or nullopt with `why` if the
/// state is half-applied or the audit fails.
std::optional<std::uint64_t> read_state(const std::filesystem::path& path, std::string& why) {
  tmf::options o = workload_options();
  o.sync = tmf::durability::no_sync;  // recovery here needs no fsync: the checks are what matter
  try {
    tmf::storage<root> s(path, o);
    s.check();
    auto r = s.read();
    for (auto x : r->pages)
      if (x != r->value) {
        why = "half-applied: value " + std::to_string(r->value) + ", a page word " + std::to_string(x);
        return std::nullopt;
      }
    return r->value;
  } catch (const std::exception& e) {
    why = std::string("reopen failed: ") + e.what();
    return std::nullopt;
  }
}

/// Checks a reopened state `v` against the run at cut point `k` (k = ops.size(): no cut).
std::string judge(const run_result& r, std::size_t k, std::uint64_t v) {
  // The last acknowledged commit that returned before the cut, and the attempts allowed.
  std::uint64_t must_have = baseline_value;
  std::vector<std::uint64_t> allowed{baseline_value};
  for (int i = 0; i < attempts; ++i) {
    const attempt_result& a = r.a[i];
    const std::uint64_t value = 100 + static_cast<std::uint64_t>(i);
    if (a.what == outcome::not_run || a.start >= k) continue;
    if (a.what == outcome::acknowledged && a.end <= k) {
      must_have = value;
      allowed = {value};  // everything before it is superseded
      continue;
    }
    if (a.what == outcome::rolled_back && a.end <= k) continue;  // never allowed
    allowed.push_back(value);  // unknown, needs_reopen (durable, applied or not), or in flight
  }
  bool ok = false;
  for (auto x : allowed) ok = ok || x == v;
  if (ok && v >= must_have) return {};
  std::ostringstream o;
  o << "found value " << v << "; the last acknowledged commit before the cut was " << must_have << "; allowed:";
  for (auto x : allowed) o << " " << x;
  return o.str();
}

std::string describe(const run_result& r) {
  static const char* names[] = {"acknowledged", "rolled back", "commit_unknown", "needs_reopen", "not run"};
  std::ostringstream o;
  for (int i = 0; i < attempts; ++i) o << " attempt " << 100 + i << ": " << names[static_cast<int>(r.a[i].what)] << ";";
  return o.str();
}

/// Cuts the power after every operation that changed the durable state (and checks the files
/// as they are, without a cut). Returns the violations.
std::vector<std::string> verify(const run_result& r, const std::filesystem::path& img) {
  std::vector<std::string> bad;
  const fate& lose = lose_unsynced();
  const fate keep_all{[](std::size_t, std::uint64_t, std::uint64_t, std::size_t, std::size_t) { return true; },
                      [](std::size_t) { return true; }};
  std::vector<std::size_t> cuts;
  bool any_failed_sync = false;
  for (std::size_t k = 0; k < r.t.ops.size(); ++k)
    if (r.t.ops[k].op == io_op::sync) {
      cuts.push_back(k);  // just before each sync: its writes are lost
      any_failed_sync = any_failed_sync || r.t.ops[k].failed;
    }
  cuts.push_back(r.t.ops.size());
  // A failed sync either lost the file's pending writes for good or wrote them after all.
  for (bool failed_sync_writes : {false, true}) {
    if (failed_sync_writes && (!any_failed_sync || r.evicted)) break;
    image_builder b(r.t, failed_sync_writes);
    for (std::size_t cut : cuts) {
    b.advance_to(cut);
    for (const fate* fa : {&lose, &keep_all}) {
      if (fa == &keep_all && cut != r.t.ops.size()) continue;  // the crash without power loss: at the end
      b.write(data_file, img, *fa);
      b.write(log_file, tmf_test::log_path(img), *fa);
      std::string why;
      auto v = read_state(img, why);
      std::string verdict = v ? judge(r, cut, *v) : why;
      if (verdict.empty()) {
        std::string why2;
        auto v2 = read_state(img, why2);  // settled: the same again
        if (!v2 || *v2 != *v) verdict = "a second reopen found " + (v2 ? std::to_string(*v2) : why2);
      }
      if (!verdict.empty())
        bad.push_back(describe_cut(r.t, cut) + (fa == &keep_all ? " (no power loss)" : "") +
                      (failed_sync_writes ? " (the failed sync wrote)" : "") + ": " + verdict + ";" + describe(r));
    }
    }
  }
  return bad;
}

std::filesystem::path fast_dir() {
  // Thousands of runs with several fdatasyncs each: on tmpfs a sync costs nothing.
  if (const char* d = std::getenv("TMF_IOFAULT_DIR")) return d;
  std::error_code ec;
  if (std::filesystem::is_directory("/dev/shm", ec)) return "/dev/shm";
  return {};
}

/// A path for this test's files: on tmpfs where there is one (TMF_IOFAULT_DIR overrides).
std::filesystem::path test_file(const char* tag) {
  const std::filesystem::path dir = fast_dir();
  if (dir.empty()) return tmf_test::test_path(tag);
  return dir / ("tmf-iofault-" + std::string(tag) + "-" + std::to_string(::getpid()));
}

struct IoFault : ::testing::Test {
  tmf_test::scoped_path data{test_file("data")};
  tmf_test::scoped_path img{test_file("img")};
  void TearDown() override { os::io_hook = nullptr; }

  /// How many faultable operations the workload makes without faults; `data_syncs` gets the
  /// indices of the data file's syncs among them.
  std::size_t baseline_ops(std::vector<std::size_t>& data_syncs) {
    schedule none;
    run_result r = run_once(data.path(), none);
    EXPECT_EQ(r.a[attempts - 1].what, outcome::acknowledged) << describe(r);
    data_syncs = g_data_syncs;
    return r.faultable_ops;
  }

  std::vector<std::string> run_schedule(const schedule& s) { return verify(run_once(data.path(), s), img.path()); }
};

std::string list(const std::vector<std::size_t>& v) {
  std::ostringstream o;  // (not std::string +: GCC 12 at -O3 warns falsely, bug 105329)
  for (std::size_t i = 0; i < v.size(); ++i) o << (i ? "," : "") << v[i];
  return o.str();
}

TEST_F(IoFault, EveryPairOfFailuresThenPowerCuts) {
  std::vector<std::size_t> data_syncs;
  const std::size_t n = baseline_ops(data_syncs);
  ASSERT_GT(n, 20u) << "the workload made too few file operations";
  ASSERT_FALSE(data_syncs.empty()) << "the workload made no checkpoint";
  auto is_data_sync = [&](std::size_t k) { return std::find(data_syncs.begin(), data_syncs.end(), k) != data_syncs.end(); };
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  const std::size_t window = 3;  // sanitizers: a sample (the release stage runs the full window)
#else
  const std::size_t window = 12;
#endif
  std::size_t schedules = 0, violations = 0, injected = 0, evicting = 0;
  std::vector<std::string> first_bad;
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = i; j <= std::min(n - 1, i + window); ++j) {
      for (bool evict : {false, true}) {
        // Eviction needs a failed data sync; up to the first failure the run is the baseline's.
        if (evict && !is_data_sync(i) && !is_data_sync(j)) continue;
        schedule s;
        s.fail = j == i ? std::vector<std::size_t>{i} : std::vector<std::size_t>{i, j};
        s.evict = evict;
        g_evictions = 0;
        auto bad = run_schedule(s);
        if (evict && g_evictions == 0) continue;  // no data sync failed: the same as without
        evicting += evict;
        injected += static_cast<std::size_t>(g_failed);
        ++schedules;
        violations += bad.size();
        for (auto& b : bad)
          if (first_bad.size() < 10) {
            std::ostringstream o;
            o << "fail ops {" << list(s.fail) << "}" << (evict ? " evicting" : "") << ": " << b;
            first_bad.push_back(o.str());
          }
      }
    }
  }
  std::cout << "iofault_test: " << n << " faultable operations, " << schedules << " schedules (single and pairs within "
            << window << "; " << evicting << " with pages evicted by a failed data sync), " << injected
            << " errors injected, " << violations << " violations" << std::endl;
  EXPECT_EQ(violations, 0u);
  for (auto& b : first_bad) ADD_FAILURE() << b;
}

}  // namespace
