// SPDX-License-Identifier: Apache-2.0 OR MIT
// Soak mode (issue 3, item 5; not in CI): writer processes, reader processes and a killer
// run against one storage for a given number of minutes.
//
//   TMF_SOAK_MINUTES=10 ./soak_test        (skipped when TMF_SOAK_MINUTES is not set)
//   optional: TMF_SOAK_WRITERS (2), TMF_SOAK_READERS (2), TMF_SOAK_SEED (random, printed),
//             TMF_SOAK_KILL_MS (300: the killer strikes every 0..TMF_SOAK_KILL_MS ms)
//
// Writers run random transactions (transfers between counters, additions, insertion and
// removal of blobs of 8 B .. 2 MiB whose content is a function of their id, rollbacks,
// several commits per writer); readers verify the invariant in every read transaction:
//   total == sum(counters), every blob's content matches its id, ids < next_id,
//   commits never goes backwards in one reader process.
// The killer SIGKILLs (Windows: TerminateProcess) a random writer or reader at random instants
// and restarts it; every
// 20 kills a fresh process audits the file (check() + the invariant). At the end everything
// stops, a fresh process runs recovery, check() and the invariant, and verifies that the
// number of committed transactions on disk is between the acknowledged count and the
// acknowledged count plus the writers killed (each may have died after its commit became
// durable, before it could count it). The figures are printed.
//
// The workers are tmf_test::spawn_child processes (forked on POSIX; on Windows the test binary
// re-executed, ~0.1 s per start under Wine), their counters in a tmf_test::shared_object.
// Under Windows the default TMF_SOAK_KILL_MS is 1500: with kills every 0..300 ms a restarted
// worker would seldom get past its start and open.
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <thread>

#include "shared_object.hpp"
#include "test_support.hpp"

namespace {

constexpr std::size_t counter_count = 4096;  // 8 pages
constexpr std::size_t max_blobs = 200;

struct soak_root {
  std::uint64_t commits = 0;  ///< committed writer transactions
  std::uint64_t total = 0;    ///< always the sum of `counters`
  std::uint64_t next_id = 1;  ///< blob ids are below it
  tmf::vector<std::uint64_t> counters;
  tmf::map<std::uint64_t, tmf::vector<std::uint64_t>> blobs;  ///< word k of blob id is blob_word(id, k)
};

std::uint64_t mix64(std::uint64_t z) noexcept {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
std::uint64_t blob_word(std::uint64_t id, std::uint64_t k) noexcept { return mix64(id * 0x100000001b3ULL ^ k); }

/// Counters shared by all processes (a tmf_test::shared_object that each worker attaches).
struct shared_state {
  std::atomic<std::uint64_t> acked_commits;  ///< commits that returned
  std::atomic<std::uint64_t> rollbacks;
  std::atomic<std::uint64_t> verified_reads;
  std::atomic<std::uint64_t> recovery_retries;  ///< read-only readers told to wait for a repair
  std::atomic<std::uint64_t> stop;
  std::atomic<std::uint64_t> audit_commits, audit_blobs;  ///< an audit's result: an exit code is too small
};
shared_state* g_shared = nullptr;

/// Checks the invariant; returns an empty string or what is wrong. `full` checks every word
/// of every blob, otherwise a sample of each.
std::string check_invariant(const soak_root& r, bool full, std::mt19937_64& rng) {
  if (r.counters.size() != counter_count) return "counters has " + std::to_string(r.counters.size()) + " entries";
  std::uint64_t sum = 0;
  for (auto c : r.counters) sum += c;
  if (sum != r.total) return "total " + std::to_string(r.total) + " != sum of counters " + std::to_string(sum);
  if (r.blobs.size() > max_blobs + 1) return std::to_string(r.blobs.size()) + " blobs";
  for (const auto& blob : r.blobs) {
    // Named copies, not structured bindings: Clang 14 cannot capture bindings in a lambda.
    const auto id = blob.first;
    const auto& words = blob.second;
    if (id == 0 || id >= r.next_id) return "blob id " + std::to_string(id) + " >= next_id";
    if (words.empty()) return "blob " + std::to_string(id) + " is empty";
    const std::size_t n = words.size();
    auto bad = [&](std::size_t k) { return words[k] != blob_word(id, k); };
    if (full || n <= 512) {
      for (std::size_t k = 0; k < n; ++k)
        if (bad(k)) return "blob " + std::to_string(id) + " word " + std::to_string(k) + " is wrong";
    } else {
      if (bad(0) || bad(n - 1)) return "blob " + std::to_string(id) + " first/last word is wrong";
      for (int i = 0; i < 64; ++i)
        if (std::size_t k = rng() % n; bad(k))
          return "blob " + std::to_string(id) + " word " + std::to_string(k) + " is wrong";
    }
  }
  return {};
}

[[noreturn]] void die(const char* who, const std::string& what) {
  std::fprintf(stderr, "soak %s (pid %d): %s\n", who, static_cast<int>(::getpid()), what.c_str());
  std::fflush(stderr);
  ::_exit(1);
}

void random_transaction(tmf::writer<soak_root>& w, std::mt19937_64& rng) {
  soak_root& r = *w;
  const unsigned op = static_cast<unsigned>(rng() % 100);
  if (op < 40) {  // transfer
    const std::size_t i = rng() % counter_count, j = rng() % counter_count;
    const std::uint64_t x = rng() % 1000;
    r.counters[i] -= x;
    r.counters[j] += x;
  } else if (op < 60) {  // addition
    const std::uint64_t x = rng() % 1000;
    r.counters[rng() % counter_count] += x;
    r.total += x;
  } else if (op < 85 || r.blobs.empty()) {  // new blob; now and then a big one (file growth)
    const std::size_t n = rng() % 50 == 0 ? (std::size_t{1} << 18) - rng() % 1000 : 1 + rng() % 2000;
    const std::uint64_t id = r.next_id++;
    tmf::vector<std::uint64_t> words(n);
    for (std::size_t k = 0; k < n; ++k) words[k] = blob_word(id, k);
    r.blobs.emplace(id, std::move(words));
    if (r.blobs.size() > max_blobs) r.blobs.erase(r.blobs.begin());
  } else {  // removal
    auto it = r.blobs.lower_bound(1 + rng() % r.next_id);
    if (it == r.blobs.end()) it = r.blobs.begin();
    r.blobs.erase(it);
  }
}

int writer_main(const std::filesystem::path& path, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  tmf::options o;
  o.checkpoint_bytes = std::size_t{4} << 20;  // checkpoints now and then
  tmf::storage<soak_root> s(path, o);
  while (!g_shared->stop.load()) {
    auto w = s.write();
    for (int batch = 1 + static_cast<int>(rng() % 4); batch > 0 && !g_shared->stop.load(); --batch) {
      const std::uint64_t commits = w->commits;
      const int ops = 1 + static_cast<int>(rng() % 3);
      for (int i = 0; i < ops; ++i) random_transaction(w, rng);
      if (rng() % 10 == 0) {
        w.rollback();
        if (w->commits != commits) die("writer", "rollback did not restore the commit count");
        g_shared->rollbacks.fetch_add(1);
        continue;
      }
      w->commits = commits + 1;
      w.commit();
      g_shared->acked_commits.fetch_add(1);
    }
  }
  return 0;
}

int reader_main(const std::filesystem::path& path, std::uint64_t seed, bool read_only) {
  std::mt19937_64 rng(seed);
  tmf::options o;
  if (read_only) o.mode = tmf::open_mode::read_only;
  tmf::storage<soak_root> s(path, o);
  std::uint64_t last_commits = 0;
  while (!g_shared->stop.load()) {
    try {
      auto r = s.read();
      if (r->commits < last_commits)
        die("reader", "commits went back from " + std::to_string(last_commits) + " to " + std::to_string(r->commits));
      last_commits = r->commits;
      if (std::string bad = check_invariant(*r, false, rng); !bad.empty())
        die("reader", "invariant broken at commit " + std::to_string(r->commits) + ": " + bad);
      g_shared->verified_reads.fetch_add(1);
    } catch (const tmf::error& e) {
      // A writer died while applying: a read-only process cannot repair, a writer will.
      if (!read_only || e.code() != tmf::errc::read_only) throw;
      g_shared->recovery_retries.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return 0;
}

/// A fresh process: opens, audits, checks every word. Returns 0 (the commit and blob counts
/// set) or -1.
int audit(const std::filesystem::path& path, const tmf_test::child_path& shared, std::uint64_t& commits_out,
          std::uint64_t& blobs_out) {
  const int rc = tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path), shared] {
    shared_state& sh = tmf_test::attach_shared<shared_state>(shared);
    std::mt19937_64 rng(1);
    tmf::storage<soak_root> s(p.path());
    s.check();
    auto r = s.read();
    if (std::string bad = check_invariant(*r, true, rng); !bad.empty()) {
      std::fprintf(stderr, "soak audit: invariant broken at commit %" PRIu64 ": %s\n", r->commits, bad.c_str());
      return 1;
    }
    sh.audit_commits.store(r->commits);
    sh.audit_blobs.store(r->blobs.size());
    return 0;
  }));
  if (rc != 0) return -1;
  commits_out = g_shared->audit_commits.load();
  blobs_out = g_shared->audit_blobs.load();
  return 0;
}

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

TEST(Soak, WritersReadersAndKillers) {
  const char* minutes_env = std::getenv("TMF_SOAK_MINUTES");
  if (minutes_env == nullptr || *minutes_env == '\0') GTEST_SKIP() << "soak mode: set TMF_SOAK_MINUTES to run it";
  const double minutes = std::strtod(minutes_env, nullptr);
  ASSERT_GT(minutes, 0.0) << "TMF_SOAK_MINUTES must be a positive number";
  const auto writers = static_cast<std::size_t>(env_number("TMF_SOAK_WRITERS", 2));
  const auto readers = static_cast<std::size_t>(env_number("TMF_SOAK_READERS", 2));
  const std::uint64_t kill_ms = std::max<std::uint64_t>(1, env_number("TMF_SOAK_KILL_MS", tmf_test::is_windows ? 1500 : 300));
  const std::uint64_t seed = env_number("TMF_SOAK_SEED", std::random_device{}());
  ASSERT_GE(writers, 1u);
  std::printf("soak: %.2f minutes, %zu writers, %zu readers, a kill every 0..%" PRIu64 " ms, TMF_SOAK_SEED=%" PRIu64
              "\n",
              minutes, writers, readers, kill_ms, seed);
  std::fflush(stdout);

  tmf_test::scoped_path path;
  const tmf_test::shared_object<shared_state> shared;
  const tmf_test::child_path sp = shared.path(), p = path.path();
  g_shared = &*shared;
  std::mt19937_64 rng(seed);

  // Create the file (Root and counters) before the crowd arrives.
  ASSERT_EQ(tmf_test::run_in_child(tmf_test::by_value([p] {
              tmf::storage<soak_root> s(p.path());
              auto w = s.write();
              w->counters.assign(counter_count, 0);
              w.commit();
              return 0;
            })),
            0);

  using child_id = decltype(tmf_test::spawn_child(tmf_test::by_value([] { return 0; })));
  const std::size_t workers = writers + readers;
  std::vector<child_id> pids(workers, -1);
  std::uint64_t starts = 0;
  auto start = [&](std::size_t i) {
    const std::uint64_t child_seed = rng();
    pids[i] = tmf_test::spawn_child(tmf_test::by_value([p, sp, i, writers, child_seed] {
      g_shared = &tmf_test::attach_shared<shared_state>(sp);
      try {
        return i < writers ? writer_main(p.path(), child_seed) : reader_main(p.path(), child_seed, (i - writers) % 2 == 1);
      } catch (const std::exception& e) {
        die(i < writers ? "writer" : "reader", std::string("exception: ") + e.what());
      }
    }));
    ++starts;
  };
  for (std::size_t i = 0; i < workers; ++i) start(i);

  std::uint64_t kills = 0, writer_kills = 0, reader_kills = 0, audits = 0;
  std::vector<std::string> failures;
  // A worker that died on its own (not by our SIGKILL) found a problem: it printed it.
  auto reap_unexpected = [&] {
    for (std::size_t i = 0; i < workers; ++i) {
      int status = 0;
      if (pids[i] > 0 && tmf_test::try_wait_child(pids[i], status)) {
        failures.push_back("worker " + std::to_string(i) + " (pid " + std::to_string(pids[i]) +
                           ") died on its own, exit code " + std::to_string(status));
        pids[i] = -1;
        start(i);
      }
    }
  };

  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::milliseconds(static_cast<std::int64_t>(minutes * 60000.0));
  auto last_progress = clock::now();
  std::uint64_t last_acked = 0, last_reads = 0;
  while (clock::now() < deadline && failures.size() < 5) {
    const std::uint64_t nap_us = (rng() % kill_ms) * 1000 + rng() % 1000;
    std::this_thread::sleep_for(std::chrono::microseconds(nap_us));
    reap_unexpected();
    const std::size_t victim = rng() % workers;
    if (pids[victim] > 0) {
      tmf_test::kill_child(pids[victim]);
      const int status = tmf_test::wait_child(pids[victim]);
      if (status != tmf_test::killed_status)
        failures.push_back("worker " + std::to_string(victim) + " had exited on its own, exit code " +
                           std::to_string(status));
      ++kills;
      ++(victim < writers ? writer_kills : reader_kills);
      start(victim);
    }
    if (kills % 20 == 0 && kills / 20 > audits) {
      std::uint64_t c = 0, b = 0;
      if (audit(path, sp, c, b) != 0) failures.push_back("audit " + std::to_string(audits + 1) + " failed");
      ++audits;
    }
    // A watchdog, not a timing: nothing committed and nothing read for a minute is a hang.
    const std::uint64_t acked = g_shared->acked_commits.load(), reads = g_shared->verified_reads.load();
    if (acked != last_acked || reads != last_reads) {
      last_acked = acked;
      last_reads = reads;
      last_progress = clock::now();
    } else if (clock::now() - last_progress > std::chrono::seconds(60)) {
      failures.push_back("no commit and no read for 60 s: deadlock?");
      break;
    }
  }

  // Stop: workers finish their transaction and close cleanly (the last one checkpoints).
  g_shared->stop.store(1);
  const auto stop_deadline = clock::now() + std::chrono::seconds(120);
  for (std::size_t i = 0; i < workers; ++i) {
    if (pids[i] <= 0) continue;
    int status = 0;
    bool ended;
    while (!(ended = tmf_test::try_wait_child(pids[i], status)) && clock::now() < stop_deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!ended) {
      failures.push_back("worker " + std::to_string(i) + " did not stop within 120 s: hung");
      tmf_test::kill_child(pids[i]);
      tmf_test::wait_child(pids[i]);
    } else if (status != 0) {
      failures.push_back("worker " + std::to_string(i) + " ended with exit code " + std::to_string(status));
    }
    pids[i] = -1;
  }

  std::uint64_t on_disk = 0, blobs = 0;
  const bool final_ok = audit(path, sp, on_disk, blobs) == 0;
  ++audits;
  const std::uint64_t acked = g_shared->acked_commits.load();
  std::printf(
      "soak: transactions committed %" PRIu64 " (acknowledged; %" PRIu64 " on disk), rollbacks %" PRIu64
      ", read transactions verified %" PRIu64 " (read-only repair waits %" PRIu64 "), kills %" PRIu64
      " (writers %" PRIu64 ", readers %" PRIu64 "), restarts %" PRIu64 ", verifications (fresh-process audits) %" PRIu64
      ", blobs %" PRIu64 ", file %.1f MiB\n",
      acked, on_disk, g_shared->rollbacks.load(), g_shared->verified_reads.load(), g_shared->recovery_retries.load(),
      kills, writer_kills, reader_kills, starts - workers, audits, blobs,
      static_cast<double>(std::filesystem::file_size(path.path())) / (1 << 20));
  std::fflush(stdout);

  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_TRUE(final_ok) << "the final audit (recovery, check(), invariant) failed";
  EXPECT_GE(on_disk, acked) << "acknowledged commits are missing from the file";
  EXPECT_LE(on_disk, acked + writer_kills) << "more commits on disk than acknowledged + writers killed";
  EXPECT_GT(acked, 0u) << "no transaction was committed";
  EXPECT_GT(g_shared->verified_reads.load(), 0u) << "no read transaction was verified";
  g_shared = nullptr;
}

}  // namespace
