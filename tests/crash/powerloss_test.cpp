// SPDX-License-Identifier: Apache-2.0 OR MIT
// Power-loss simulation (issue 3, item 1).
//
// Recording: a storage is created and closed cleanly, and both files are snapshotted (the
// baseline: everything synced). The storage is reopened with durability::full and tmf's I/O
// hook records, in order, every write, fdatasync, allocate and truncate of the data file and
// of the log (trace.hpp). Random transactions run on a Root whose state is a function of its
// `seq` (workload.hpp: transaction n applies ops drawn from a PRNG seeded by (seed, n),
// the model replays them on std containers); rolled-back junk transactions are mixed in. For
// every commit the harness notes where in the trace it started, where its log fdatasync is
// and where it returned. The storage is closed at the end (its checkpoint is recorded too).
//
// Replay: a cut point k keeps the first k operations of the trace; the operations after each
// file's last fdatasync before k are kept, dropped or torn at 512-byte sectors, in random
// combinations (trace.hpp: image_builder, random_fate).
// The two reconstructed files are written to a scratch path, and a child process (forked by
// one of two small worker processes, themselves forked before the recording; nothing there has
// the storage open, so the recorded address is free; verifier.hpp) opens them (recovery), runs
// check(), reads seq and requires:
//   - the whole content equals model(seq): exactly one committed state;
//   - seq >= the last commit whose commit() returned before k, and >= the last commit whose
//     log fdatasync is before k (durable means durable);
//   - seq <= the last commit that had started (written anything) before k;
// then (every other image) commits transaction seq + 1 on the recovered storage, closes it,
// reopens it and checks model(seq + 1): recovery must leave a storage that keeps working.
//
// Cut points: every sync boundary (just before and just after every fdatasync), the ends, and
// random points between them; several combinations per cut point that has unsynced operations
// (combination 0: all kept, 1: all dropped, then random mixes). Three scenarios: a checkpoint
// every ~64 KiB of log, no checkpoint but at close (a long log), and a checkpoint at nearly
// every commit with the log truncated (truncate + re-allocate churn).
//
// Not modelled: directory entries (the two files' names are assumed durable) and a second power
// cut during recovery. A failure names the cut point and the combination, and the first images
// that failed are kept as <test dir>/powerloss-failure-<scenario>-<n>.tmf (+ -log); the printed
// seed reproduces the whole run.
//
// Tests: PowerLoss.RandomCutsRecoverACommittedState (prints cut points, combinations and the
// time; default >= 10,000 combinations), PowerLoss.TornLastLogRecordAtEverySector (the last
// record, cut at every sector boundary as a prefix, a suffix and with one sector missing: the
// exact expected seq is known).
// Environment: TMF_POWERLOSS_COMBINATIONS (default 10500: total over the three scenarios, shared
// 40/20/40; at least every sync boundary is verified whatever the number; e.g.
// 200000 for a long manual run), TMF_POWERLOSS_TXNS (transactions per scenario, default 90),
// TMF_POWERLOSS_SEED (fixes the seed; the seed in use is printed), TMF_POWERLOSS_SCENARIO (run only
// the named one), TMF_POWERLOSS_DIR (where the images are written; default /dev/shm if usable,
// since recovery fdatasyncs, else the test dir).

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <unistd.h>

#include "test_support.hpp"
#include "trace.hpp"
#include "verifier.hpp"
#include "workload.hpp"

namespace {

using namespace tmf_test::crash;  // NOLINT(google-build-using-namespace)

/// Several pages per transaction, blobs up to ~100 KiB (the file grows past its first MiB),
/// frees and reuse; every 16th transaction a known multi-page record (TornLastLogRecord...).
constexpr workload powerloss_workload{
    .max_ops = 6,
    .weight = {.list_put = 2, .list_append = 1, .list_erase = 1, .list_poke = 1,
               .blob_put = 2, .blob_erase = 1, .blob_rewrite = 2},
    .big_blob_every = 16, .big_blob_key = 1000, .big_blob_size = 24u << 10,
    .list_keys = 48, .list_len = 40, .long_list_odds = 8, .long_list_extra = 1500, .list_append_max = 30,
    .blob_keys = 64, .blob_min = 1024, .blob_range = 20u << 10, .long_blob_odds = 6, .long_blob_extra = 80u << 10,
    .blob_cap = std::uint64_t{1280} << 10,
};

// -- a scenario: record, then replay cut points ----------------------------------------------

struct scenario {
  std::string name;
  std::size_t checkpoint_bytes;
  std::uint64_t txns;
  std::uint64_t seed;
};

struct recorded {
  scenario sc;
  trace t;
  std::vector<model_root> models;  // models[s] = state after transaction s; s = 0..N+1
  std::filesystem::path original;
};

tmf::options storage_options(const scenario& sc) {
  tmf::options o;
  o.sync = tmf::durability::full;
  o.checkpoint_bytes = sc.checkpoint_bytes;
  // Freed space given back at once: a commit that frees >= 64 KiB checkpoints and punches,
  // and a free top of the arena over 512 KiB is cut off (the file truncated, then regrown).
  o.give_back_bytes = 64u << 10;
  o.truncate_bytes = 512u << 10;
  return o;
}

/// The model's state after every transaction 0..N+1.
void make_models(recorded& r) {
  r.models.assign(1, model_root{});
  for (std::uint64_t n = 1; n <= r.sc.txns + 1; ++n) {
    model_root m = r.models.back();
    apply_transaction(m, powerloss_workload, r.sc.seed, n);
    r.models.push_back(std::move(m));
  }
}

/// Creates the storage (the baseline), then runs and records the transactions.
void record(recorded& r, const std::filesystem::path& path) {
  const scenario& sc = r.sc;
  r.original = path;
  tmf_test::remove_storage(path);
  {
    // Created with the default checkpoint_bytes: its close then ends with the log's fdatasync
    // (a small checkpoint_bytes would also truncate the log after it, unsynced).
    tmf::options o;
    o.sync = tmf::durability::full;
    tmf::storage<disk_root> s(path, o);
  }
  r.t.take_baseline(path, tmf_test::log_path(path));
  prng ctl(sc.seed, 99);
  {
    recorder rec(r.t, path, tmf_test::log_path(path));
    tmf::storage<disk_root> s(path, storage_options(sc));
    std::unique_ptr<tmf::writer<disk_root>> w;  // (std::optional: a GCC 12 maybe-uninitialized false positive)
    for (std::uint64_t n = 1; n <= sc.txns; ++n) {
      if (!w || ctl.below(3) == 0) {
        w.reset();
        w = std::make_unique<tmf::writer<disk_root>>(s.write());
      }
      if (ctl.below(6) == 0) {  // junk, undone by rollback() (it may grow the file)
        apply_junk(**w, powerloss_workload, sc.seed, n, ctl);
        w->rollback();
      }
      apply_transaction(**w, powerloss_workload, sc.seed, n);
      const std::size_t start = r.t.ops.size();
      w->commit();
      r.t.mark_commit(n, start);
    }
    w.reset();
  }  // the close (a checkpoint) is recorded too
}

/// Where images are written: TMF_POWERLOSS_DIR, else /dev/shm (recovery fdatasyncs: cheap on
/// tmpfs), else the test directory.
std::filesystem::path image_dir() {
  if (const char* d = std::getenv("TMF_POWERLOSS_DIR"); d != nullptr && *d != '\0') {
    std::filesystem::create_directories(d);
    return d;
  }
  std::error_code ec;
  if (std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  return tmf_test::test_dir();
}

std::filesystem::path image_path(const std::string& tag) {
  std::string name = tmf_test::test_path(tag).filename().string();
  return image_dir() / (std::to_string(::getpid()) + "." + name);
}

/// In a child: recover the image, check it, compare with the model. Exit code 0 if right.
int verify_image(const recorded& r, const std::filesystem::path& path, const expectation& x, bool verbose) {
  ::alarm(60);
  const tmf::options opt = [&] {
    tmf::options o = storage_options(r.sc);
    o.mode = tmf::open_mode::open_only;
    return o;
  }();
  auto say = [&](const std::string& msg) {
    if (verbose) std::fprintf(stderr, "powerloss: %s: %s\n", x.what.c_str(), msg.c_str());
  };
  std::uint64_t seq = 0;
  try {
    tmf::storage<disk_root> s(path, opt);
    try {
      s.check();
    } catch (const std::exception& e) {
      say(std::string("check() after recovery failed: ") + e.what());
      return 12;
    }
    {
      auto rd = s.read();
      seq = rd->seq;
      if (seq < x.lower || seq > x.upper) {
        say("recovered seq " + std::to_string(seq) + ", expected " + std::to_string(x.lower) + ".." +
            std::to_string(x.upper));
        return 10;
      }
      if (std::string d = compare(*rd, r.models[seq]); !d.empty()) {
        say("recovered seq " + std::to_string(seq) + " but the content is not that state: " + d);
        return 11;
      }
    }
    if (!x.write_after) return 0;
    auto w = s.write();
    apply_transaction(*w, powerloss_workload, r.sc.seed, seq + 1);
    w.commit();
  } catch (const std::exception& e) {
    say(std::string("open/recovery failed: ") + e.what());
    return 13;
  }
  try {
    tmf::storage<disk_root> s(path, opt);
    s.check();
    auto rd = s.read();
    if (std::string d = compare(*rd, r.models[seq + 1]); !d.empty()) {
      say("after recovering seq " + std::to_string(seq) + ", committing " + std::to_string(seq + 1) +
          " and reopening: " + d);
      return 14;
    }
  } catch (const std::exception& e) {
    say("after recovering seq " + std::to_string(seq) + " and committing " + std::to_string(seq + 1) +
        ", reopen/check failed: " + e.what());
    return 15;
  }
  return 0;
}

/// The verification workers of a recording (forked now: construct it before recording).
verifier make_verifier(const recorded& r) {
  return verifier([&r](const std::filesystem::path& p, const expectation& x,
                       bool verbose) { return verify_image(r, p, x, verbose); },
                  {image_path(r.sc.name + ".slot0"), image_path(r.sc.name + ".slot1")});
}

struct scenario_result {
  std::uint64_t ops = 0, commits = 0, syncs = 0, punches = 0, truncates = 0, cuts = 0, combinations = 0, failures = 0;
};

/// Records the scenario and verifies `target` combinations (at least every sync boundary).
scenario_result run_scenario(const scenario& sc, std::uint64_t target) {
  scenario_result res;
  recorded r;
  r.sc = sc;
  tmf_test::scoped_path original(std::string_view(sc.name));
  make_models(r);
  verifier v = make_verifier(r);  // before the recording: the workers stay small
  record(r, original.path());
  EXPECT_EQ(r.t.ignored, 0u) << "the I/O hook saw operations on files other than the storage's two";
  const std::size_t T = r.t.ops.size();
  res.ops = T;
  res.commits = r.t.commits.size();

  res.syncs = static_cast<std::uint64_t>(
      std::count_if(r.t.ops.begin(), r.t.ops.end(), [](const trace_op& op) { return op.op == io_op::sync; }));
  for (const trace_op& op : r.t.ops) {
    if (op.file != data_file) continue;
    if (op.op == io_op::punch) ++res.punches;
    if (op.op == io_op::truncate) ++res.truncates;
  }
  const std::vector<std::size_t> pending_at = unsynced_counts(r.t);  // without building images
  constexpr std::size_t combos_per_cut = 8;
  auto combos_at = [&](std::size_t k) { return pending_at[k] == 0 ? std::size_t{1} : combos_per_cut; };
  std::set<std::size_t> cuts{0, T};
  for (std::size_t i = 0; i < T; ++i)
    if (r.t.ops[i].op == io_op::sync) {
      cuts.insert(i);
      cuts.insert(i + 1);
    }
  std::uint64_t planned = 0;
  for (std::size_t k : cuts) planned += combos_at(k);
  prng cg(sc.seed, 7);
  while (planned < target && cuts.size() < T + 1) {
    const std::size_t k = static_cast<std::size_t>(cg.below(T + 1));
    if (cuts.insert(k).second) planned += combos_at(k);
  }

  image_builder b(r.t);
  std::uint64_t index = 0;
  for (std::size_t k : cuts) {
    b.advance_to(k);
    const seq_bounds bounds = bounds_at(r.t, k);
    const expectation base{bounds.lower, bounds.upper, false, {}};
    ++res.cuts;
    for (std::size_t c = 0; c < combos_at(k); ++c) {
      random_fate rf(sc.seed ^ mix64(k), c);
      const bool write_after = (index++ % 2) == 0;
      v.submit({k, c}, [&](const std::filesystem::path& p) {
        expectation x = base;
        x.write_after = write_after;
        fate fa = rf.get();
        b.write(data_file, p, fa);
        b.write(log_file, tmf_test::log_path(p), fa);
        x.what = sc.name + ": " + describe_cut(r.t, k) + ", " + rf.describe() + ", unsynced ops: data " +
                 std::to_string(b.pending(data_file).size()) + ", log " + std::to_string(b.pending(log_file).size());
        return x;
      });
      ++res.combinations;
    }
  }
  v.wait_all();
  res.failures = v.failures().size();

  // Keep the images of the first failures (rebuilt from scratch: the child changed its copy).
  std::size_t kept = 0;
  for (const auto& f : v.failures()) {
    std::ostringstream msg;
    msg << "power cut " << f.what << " -> child exit code " << f.code
        << " (10: seq out of range, 11: content is not model(seq), 12: check() failed, 13: open failed, "
           "14/15: commit after recovery wrong, 128+n: killed by signal n)";
    if (kept < 3) {
      const auto keep = tmf_test::test_dir() / ("powerloss-failure-" + sc.name + "-" + std::to_string(kept) + ".tmf");
      image_builder fb(r.t);
      fb.advance_to(f.j.cut);
      random_fate rf(sc.seed ^ mix64(f.j.cut), f.j.combination);
      fate fa = rf.get();
      fb.write(data_file, keep, fa);
      fb.write(log_file, tmf_test::log_path(keep), fa);
      msg << "; image kept in " << keep << " (+ -log)";
      ++kept;
    }
    ADD_FAILURE() << msg.str();
    if (kept >= 3 && &f - v.failures().data() > 20) {
      ADD_FAILURE() << "... " << v.failures().size() << " failures in all";
      break;
    }
  }
  return res;
}

// -- tests ----------------------------------------------------------------------------------

// Sanitizer builds (the asan stage of scripts/test.sh) run ~10-20x slower, with forks that
// cost far more: they run a smaller share; the release stage runs the full default.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr std::uint64_t default_combinations = 1500;
constexpr std::uint64_t torn_sector_stride = 8;
#else
constexpr std::uint64_t default_combinations = 10500;
constexpr std::uint64_t torn_sector_stride = 1;
#endif

std::uint64_t pick_seed() { return seed_from_env("TMF_POWERLOSS_SEED"); }

TEST(PowerLoss, RandomCutsRecoverACommittedState) {
  const std::uint64_t seed = pick_seed();
  const std::uint64_t total = env_u64("TMF_POWERLOSS_COMBINATIONS", default_combinations);
  const std::uint64_t txns = env_u64("TMF_POWERLOSS_TXNS", 90);
  std::cout << "powerloss: seed " << seed << " (TMF_POWERLOSS_SEED), " << txns << " transactions per scenario, images in "
            << image_dir() << std::endl;
  // The long log costs ~4x more per image (every image replays the whole log): a smaller share.
  struct weighted {
    scenario sc;
    std::uint64_t percent;
  };
  const weighted scenarios[] = {
      {{"checkpoint-64k", std::size_t{64} << 10, txns, seed}, 40},
      {{"long-log", std::size_t{64} << 20, txns, mix64(seed + 1)}, 20},
      {{"checkpoint-every-commit", std::size_t{16} << 10, txns, mix64(seed + 2)}, 40},
  };
  const auto t0 = std::chrono::steady_clock::now();
  scenario_result sum;
  const char* only = std::getenv("TMF_POWERLOSS_SCENARIO");
  for (const auto& [sc, percent] : scenarios) {
    if (only != nullptr && *only != '\0' && sc.name != only) continue;
    const auto t1 = std::chrono::steady_clock::now();
    scenario_result res = run_scenario(sc, (total * percent + 99) / 100);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    std::cout << "powerloss: " << sc.name << ": " << res.commits << " commits, " << res.ops << " file operations ("
              << res.syncs << " fdatasyncs, " << res.punches << " hole punches, " << res.truncates
              << " truncations of the data file); " << res.cuts << " cut points, " << res.combinations
              << " combinations verified, " << res.failures << " failures, " << secs << " s" << std::endl;
    // The workload frees and reuses extents of >= 64 KiB: punched and allocated again.
    EXPECT_GT(res.punches, 0u) << sc.name << ": no hole was punched (seed " << sc.seed << ")";
    sum.cuts += res.cuts;
    sum.combinations += res.combinations;
    sum.failures += res.failures;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "powerloss: total: " << sum.cuts << " cut points, " << sum.combinations << " combinations, "
            << sum.failures << " failures, " << secs << " s" << std::endl;
  RecordProperty("cut_points", std::to_string(sum.cuts));
  RecordProperty("combinations", std::to_string(sum.combinations));
  if (only == nullptr || *only == '\0') {
    EXPECT_GE(sum.combinations, total) << "fewer combinations than asked for";
  }
}

/// The last commit's record, cut at every sector boundary: only the sectors before it (a
/// prefix), only those after it (a suffix), or all but the sector there (a hole). Everything
/// else is kept. Recovery must give exactly the last commit if the record's bytes are all
/// there (a dropped sector may hold the same bytes as before), else the one before it.
TEST(PowerLoss, TornLastLogRecordAtEverySector) {
  recorded r;
  r.sc = {"torn-last-record", std::size_t{64} << 20, powerloss_workload.big_blob_every, pick_seed()};
  std::cout << "powerloss: seed " << r.sc.seed << std::endl;
  tmf_test::scoped_path original("original");
  make_models(r);
  verifier v = make_verifier(r);
  record(r, original.path());
  ASSERT_EQ(r.t.commits.size(), powerloss_workload.big_blob_every);
  const commit_mark& last = r.t.commits.back();
  ASSERT_LT(last.sync, last.end) << "the last commit did not fdatasync the log";
  // The record: the log writes of the last commit before its fdatasync.
  std::uint64_t lo = ~std::uint64_t{0}, hi = 0;
  std::set<std::size_t> record_ops;
  for (std::size_t i = last.start; i < last.sync; ++i) {
    const trace_op& op = r.t.ops[i];
    if (op.file != log_file || op.op != io_op::write || op.offset < tmf::detail::log_start) continue;
    record_ops.insert(i);
    lo = std::min(lo, op.offset);
    hi = std::max(hi, op.offset + op.length);
  }
  ASSERT_FALSE(record_ops.empty());
  ASSERT_GE(hi - lo, 6 * 4096u) << "the last record should span several pages";

  image_builder b(r.t);
  b.advance_to(last.sync);  // everything of the last commit written, nothing synced by it
  const auto full_path = image_path("full");
  auto keep_all = fate{[](std::size_t, std::uint64_t, std::uint64_t, std::size_t, std::size_t) { return true; },
                       [](std::size_t) { return true; }};
  b.write(log_file, full_path, keep_all);
  const auto full_record = read_range(full_path, lo, hi);
  std::filesystem::remove(full_path);

  std::vector<std::uint64_t> boundaries{lo};
  for (std::uint64_t s = (lo / sector + 1) * sector; s < hi; s += sector * torn_sector_stride) boundaries.push_back(s);
  boundaries.push_back(hi);

  std::uint64_t images = 0, complete = 0;
  for (std::uint64_t at : boundaries)
    for (int style = 0; style < 3; ++style) {
      if (style == 2 && at == hi) continue;
      fate fa = keep_all;
      fa.keep_piece = [&, at, style](std::size_t op, std::uint64_t pb, std::uint64_t, std::size_t, std::size_t) {
        if (!record_ops.count(op)) return true;
        if (style == 0) return pb < at;                            // prefix
        if (style == 1) return pb >= at;                           // suffix
        return pb < at || pb >= (at / sector + 1) * sector;        // one sector missing
      };
      static const char* const style_names[] = {"prefix before", "suffix from", "hole at"};
      v.submit({static_cast<std::size_t>(at), static_cast<std::size_t>(style)}, [&](const std::filesystem::path& p) {
        expectation x{0, 0, images % 2 == 0, {}};
        b.write(data_file, p, fa);
        b.write(log_file, tmf_test::log_path(p), fa);
        const bool whole = read_range(tmf_test::log_path(p), lo, hi) == full_record;
        x.lower = x.upper = whole ? last.seq : last.seq - 1;
        complete += whole;
        x.what = "last record [" + std::to_string(lo) + ", " + std::to_string(hi) + ") kept " + style_names[style] +
                 " " + std::to_string(at) + (whole ? " (bytes complete)" : " (bytes incomplete)");
        return x;
      });
      ++images;
    }
  v.wait_all();
  std::cout << "powerloss: last record of " << (hi - lo) << " bytes: " << images << " torn images (" << complete
            << " with all its bytes), " << v.failures().size() << " failures" << std::endl;
  for (std::size_t i = 0; i < v.failures().size() && i < 20; ++i)
    ADD_FAILURE() << "power cut: " << v.failures()[i].what << " -> child exit code " << v.failures()[i].code
                  << " (10: wrong seq, 11: content is not model(seq), 12: check() failed, 13: open failed, "
                     "14/15: commit after recovery wrong, 128+n: killed by signal n)";
  if (v.failures().size() > 20) ADD_FAILURE() << "... " << v.failures().size() << " failures in all";
  EXPECT_GT(images, 3 * (hi - lo) / (sector * torn_sector_stride) - 3) << "too few torn images were tried";
}

}  // namespace
