// SPDX-License-Identifier: Apache-2.0 OR MIT
// Concurrency tests: one writer and several readers on one storage, as threads of one process
// and as separate processes; two writer processes competing; a writer process killed
// repeatedly (SIGKILL) while reader processes keep reading.
//
// Every writer transaction keeps an invariant spread over several pages (the sum of the slots
// is constant, the item list matches its counter and its notes, the ballast matches its
// recorded sum and length); readers check it in every read transaction, so a reader that saw
// uncommitted, rolled-back or half-applied state fails. Iteration counts are fixed (no timing);
// they are modest because this file also runs under ThreadSanitizer. Writer starvation is
// detected by counting, not timing (wait_gauge).
//
// KNOWN BUGS (failing tests kept): /tmp/bugs/crash-1.md (in-process readers starve write():
// ConcurrencyThreads.OneWriterThreeReaders) and crash-2.md (readers of other processes starve
// commit(): ConcurrencyProcesses.OneWriterThreeReaders).

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <iostream>
#include <mutex>
#include <new>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <time.h>
#if !defined(_WIN32)
#include <signal.h>
#include <unistd.h>
#endif

#include "shared_object.hpp"
#include "test_support.hpp"

namespace {

constexpr std::size_t slot_count = 2048;  // 16 KiB: the slots span several pages
constexpr std::int64_t slot_initial = 1000;
constexpr std::int64_t slot_total = static_cast<std::int64_t>(slot_count) * slot_initial;
constexpr std::size_t max_items = 48;

struct conc_root {
  std::uint64_t commits = 0;  // committed writer transactions (written by every step)
  std::uint64_t counter = 0;  // incremented by the competing writers
  std::uint64_t done = 0;     // set by the last writer of a test
  tmf::vector<std::int64_t> slots;  // sum == slot_total once initialised
  tmf::deque<std::uint64_t> items;  // consecutive ids, the last one == next_item - 1
  std::uint64_t next_item = 1;
  std::uint64_t item_count = 0;  // == items.size()
  tmf::map<std::uint64_t, tmf::string> notes;  // one per item: id % 61 + 1 chars of 'a' + id % 26
  tmf::vector<std::int64_t> ballast;  // rewritten now and then: many pages in one commit
  std::int64_t ballast_sum = 0;
  std::uint64_t ballast_len = 0;
};

struct prng {
  std::uint64_t state;
  explicit prng(std::uint64_t seed) noexcept : state(seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) noexcept { return next() % n; }
};

/// Measures writer starvation without timing: the writer announces when it waits (in write()
/// and commit()); a reader whose read() began and ended while the same wait went on has
/// overtaken the waiting writer. A fair lock lets a few reads overtake (those already under
/// way, those during the log write of a commit); starvation lets them overtake forever.
/// Lives in an anonymous shared mapping for the process tests.
struct wait_gauge {
  // Overtakes of one wait that count as starvation. Readers of other processes read during
  // the writer's whole write() and commit() but the apply (readers.hpp), and a read
  // transaction makes no system call (well under a microsecond): a writer descheduled for a
  // few milliseconds on a busy machine is overtaken tens of thousands of times without being
  // starved. Starvation is a stream of reads that never lets the writer through, so the bound
  // is large (reached in about a second of such a stream) rather than near a fair lock's
  // hundreds.
  static constexpr std::uint64_t starvation_bound = 1000000;
  std::atomic<std::uint64_t> waiting{0};    // the id of the writer's current wait, 0 if none
  std::atomic<std::uint64_t> next_wait{0};
  std::atomic<std::uint64_t> overtakes{0};  // of the current wait
  std::atomic<std::uint64_t> max_overtakes{0};
  std::atomic<std::uint64_t> starved{0};

  void enter() noexcept {
    overtakes.store(0);
    waiting.store(++next_wait);
  }
  void leave() noexcept {
    waiting.store(0);
    std::uint64_t o = overtakes.load(), m = max_overtakes.load();
    while (o > m && !max_overtakes.compare_exchange_weak(m, o)) {
    }
  }
  /// Before read(): the wait under way, if any.
  std::uint64_t before_read() const noexcept { return waiting.load(); }
  /// After read() returned; true if the writer counts as starved.
  bool after_read(std::uint64_t wait) noexcept {
    if (wait == 0 || waiting.load() != wait) return starved.load() != 0;
    if (overtakes.fetch_add(1) + 1 >= starvation_bound) starved.store(wait);
    return starved.load() != 0;
  }
  /// Whether the current wait was overtaken more than `n` times.
  bool overtaken_more_than(std::uint64_t n) const noexcept { return waiting.load() != 0 && overtakes.load() > n; }
};

void sleep_us(std::uint64_t us) {
  timespec ts{static_cast<time_t>(us / 1000000), static_cast<long>(us % 1000000) * 1000};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/// Empty if `r` satisfies the invariant, else what is broken.
std::string broken(const conc_root& r) {
  std::ostringstream out;
  if (r.slots.size() != slot_count) {
    out << "slots.size() " << r.slots.size() << " != " << slot_count << "; ";
  } else if (std::int64_t sum = std::accumulate(r.slots.begin(), r.slots.end(), std::int64_t{0}); sum != slot_total) {
    out << "sum of slots " << sum << " != " << slot_total << "; ";
  }
  if (r.items.size() != r.item_count) out << "items.size() " << r.items.size() << " != item_count " << r.item_count << "; ";
  if (!r.items.empty() && (r.items.back() != r.next_item - 1 || r.items.back() - r.items.front() + 1 != r.items.size()))
    out << "items not consecutive up to next_item - 1; ";
  if (r.notes.size() != r.items.size()) {
    out << "notes.size() " << r.notes.size() << " != items.size() " << r.items.size() << "; ";
  } else {
    auto it = r.items.begin();
    for (const auto& [id, note] : r.notes) {
      if (id != *it || note.size() != id % 61 + 1 || note.front() != static_cast<char>('a' + id % 26)) {
        out << "note of item " << *it << " wrong; ";
        break;
      }
      ++it;
    }
  }
  if (r.ballast.size() != r.ballast_len) out << "ballast.size() " << r.ballast.size() << " != " << r.ballast_len << "; ";
  if (std::int64_t sum = std::accumulate(r.ballast.begin(), r.ballast.end(), std::int64_t{0}); sum != r.ballast_sum)
    out << "ballast sum " << sum << " != " << r.ballast_sum << "; ";
  return out.str();
}

/// One valid transaction's changes (keeps the invariant): moves value between two slots,
/// appends and drops items with their notes, sometimes (1 in `ballast_odds`; 0: never)
/// rewrites the ballast with up to `ballast_max` elements.
void step(conc_root& r, prng& g, std::uint64_t ballast_odds = 6, std::uint64_t ballast_max = 40000) {
  const std::size_t a = g.below(slot_count), b = g.below(slot_count);
  const auto amount = static_cast<std::int64_t>(g.below(500));
  r.slots[a] -= amount;
  r.slots[b] += amount;
  for (std::uint64_t k = g.below(4); k > 0; --k) {
    const std::uint64_t id = r.next_item++;
    r.items.push_back(id);
    r.notes[id].assign(id % 61 + 1, static_cast<char>('a' + id % 26));
  }
  for (std::uint64_t k = r.items.size() > max_items ? 4 : g.below(3); k > 0 && !r.items.empty(); --k) {
    r.notes.erase(r.items.front());
    r.items.pop_front();
  }
  r.item_count = r.items.size();
  if (ballast_odds != 0 && g.below(ballast_odds) == 0) {
    const std::size_t len = 512 + g.below(ballast_max);
    r.ballast.assign(len, 0);
    std::int64_t sum = 0;
    for (std::size_t i = 0; i < len; ++i) sum += r.ballast[i] = static_cast<std::int64_t>(g.below(1000)) - 300;
    r.ballast_sum = sum;
    r.ballast_len = len;
  }
  ++r.commits;
}

/// Changes that break the invariant: must never be seen (rolled back).
void junk(conc_root& r, prng& g) {
  r.slots[g.below(slot_count)] += 1 + static_cast<std::int64_t>(g.below(1000));
  r.items.push_back(12345);
  r.notes[~std::uint64_t{0}] = tmf::string(100, 'z');
  r.ballast.push_back(7);
  r.commits += 1000;
}

/// The first transaction of a test: the slots.
void init_root(tmf::storage<conc_root>& s) {
  auto w = s.write();
  if (w->slots.empty()) {
    w->slots.assign(slot_count, slot_initial);
    w.commit();
  }
}

/// One writer transaction in its own writer object; with probability 1/8 it is junk that is
/// rolled back (explicitly, then a real step follows, or by destroying the writer).
/// Returns whether it committed.
bool writer_transaction(tmf::storage<conc_root>& s, prng& g, wait_gauge& gauge) {
  gauge.enter();
  auto w = s.write();
  gauge.leave();
  switch (g.below(16)) {
    case 0:
      junk(*w, g);
      return false;  // the writer is destroyed without commit: rolled back
    case 1:
      junk(*w, g);
      w.rollback();
      break;
    default:
      break;
  }
  step(*w, g);
  gauge.enter();
  w.commit();
  gauge.leave();
  return true;
}

// -- readers --------------------------------------------------------------------------------

enum reader_result { reader_ok = 0, reader_broken = 1, reader_starved = 2 };

/// A reader's loop (thread or process): reads until `stop(root)`, checking the invariant in
/// every read transaction. Impolite readers read back to back and give up (reader_starved)
/// once the writer counts as starved; polite ones back off when they have overtaken a waiting
/// writer many times (tests whose subject is not the lock's fairness).
int reader_loop(tmf::storage<conc_root>& s, std::atomic<std::uint64_t>& reads, wait_gauge& gauge, bool polite,
                bool use_try_read, const std::function<bool(const conc_root&)>& stop, std::string& message) {
  std::uint64_t last_commits = 0;
  // -1: go on; else the result.
  auto check = [&](const conc_root& root) -> int {
    if (std::string b = broken(root); !b.empty()) {
      message = "invariant broken at commit " + std::to_string(root.commits) + ": " + b;
      return reader_broken;
    }
    if (root.commits < last_commits) {
      message = "commits went back from " + std::to_string(last_commits) + " to " + std::to_string(root.commits);
      return reader_broken;
    }
    last_commits = root.commits;
    reads.fetch_add(1, std::memory_order_relaxed);
    return stop(root) ? reader_ok : -1;
  };
  for (;;) {
    const std::uint64_t wait = gauge.before_read();
    int rc;
    if (use_try_read && (reads.load(std::memory_order_relaxed) & 7) == 7) {
      auto r = s.try_read();
      if (!r) continue;
      rc = check(**r);
    } else {
      auto r = s.read();
      rc = check(*r);
    }
    if (rc >= 0) return rc;
    const bool starved = gauge.after_read(wait);
    if (polite) {
      if (gauge.overtaken_more_than(50))
        for (const std::uint64_t w = gauge.waiting.load(); w != 0 && gauge.waiting.load() == w;) sleep_us(100);
    } else if (starved) {
      message = "the writer is starved: " + std::to_string(wait_gauge::starvation_bound) +
                " read transactions began and ended while it waited in write() or commit() (see /tmp/bugs/crash-1.md, "
                "crash-2.md)";
      return reader_starved;
    }
  }
}

// -- processes ------------------------------------------------------------------------------

namespace os = tmf::detail::os;

/// Shared with the child processes: a file that the test and each child map shared (on
/// every system: a Windows child is a new program, not a fork).
struct shared_block {
  std::atomic<std::uint64_t> reads[8];
  std::atomic<std::uint64_t> commits;
  wait_gauge gauge;
};

using shared_state = tmf_test::shared_object<shared_block>;

using tmf_test::spawn_child;
using tmf_test::wait_child;
using child_id = decltype(spawn_child(tmf_test::by_value([] { return 0; })));

/// Kills and reaps the children still running when a test ends early (a failed ASSERT), so
/// that no reader process loops forever.
class child_guard {
 public:
  child_guard() = default;
  child_guard(const child_guard&) = delete;
  child_guard& operator=(const child_guard&) = delete;
  ~child_guard() {
    for (child_id pid : m_pids) {
      try {  // a destructor must not throw
        tmf_test::kill_child(pid);
        wait_child(pid);
      } catch (...) {
      }
    }
  }
  child_id add(child_id pid) {
    m_pids.push_back(pid);
    return pid;
  }
  /// wait_child(pid), and forgets it.
  int wait(child_id pid) {
    std::erase(m_pids, pid);
    return wait_child(pid);
  }

 private:
  std::vector<child_id> m_pids;
};

/// When a reader process stops: once `commits` transactions are committed, or once `done`
/// is set (trivially copyable, for by_value).
struct stop_when {
  std::uint64_t commits = ~std::uint64_t{0};
  bool done = false;
  bool operator()(const conc_root& r) const { return done ? r.done != 0 : r.commits >= commits; }
};

/// What verify_in_child expects besides the invariant (trivially copyable, for by_value).
struct expect_state {
  std::uint64_t commits = ~std::uint64_t{0};  // ~0: not checked
  std::uint64_t counter = ~std::uint64_t{0};
  bool done = false;
  std::string operator()(const conc_root& r) const {
    std::string e;
    if (counter != ~std::uint64_t{0} && r.counter != counter)
      e += "counter " + std::to_string(r.counter) + " != " + std::to_string(counter) + "; ";
    if (commits != ~std::uint64_t{0} && r.commits != commits) e += "commits " + std::to_string(r.commits) + "; ";
    if (done && !r.done) e += "done not set";
    return e;
  }
};

/// A reader process: opens the storage and runs reader_loop; its message goes to stderr.
child_id spawn_reader(const std::filesystem::path& path, const tmf::options& opt, const shared_state& shared,
                      int index, bool polite, stop_when stop) {
  const tmf_test::child_path p = path, sp = shared.path();
  return spawn_child(tmf_test::by_value([p, opt, sp, index, polite, stop] {
    shared_block& sh = tmf_test::attach_shared<shared_block>(sp);
    tmf::storage<conc_root> s(p.path(), opt);
    std::string message;
    const int rc = reader_loop(s, sh.reads[index], sh.gauge, polite, index == 1, stop, message);
    if (rc != reader_ok)
      std::fprintf(stderr, "concurrency_test reader process %d (pid %ld): %s\n", index, os::process_id(),
                   message.c_str());
    return rc;
  }));
}

/// Creates the storage and its slots in a child (the test process never opens it).
void create_storage(const std::filesystem::path& path) {
  const tmf_test::child_path p = path;
  const int rc = tmf_test::run_in_child(tmf_test::by_value([p] {
    tmf::storage<conc_root> s(p.path());
    init_root(s);
    return 0;
  }));
  ASSERT_EQ(rc, 0) << "creating " << path << " failed";
}

/// Opens the storage in a fresh process and checks it: heap audit and invariant.
int verify_in_child(const std::filesystem::path& path, expect_state extra) {
  const tmf_test::child_path p = path;
  return tmf_test::run_in_child(tmf_test::by_value([p, extra] {
    tmf::storage<conc_root> s(p.path(), tmf::options{.mode = tmf::open_mode::open_only});
    s.check();
    auto r = s.read();
    std::string b = broken(*r) + extra(*r);
    if (!b.empty()) {
      std::fprintf(stderr, "concurrency_test verifier: %s\n", b.c_str());
      return 1;
    }
    return 0;
  }));
}

const char* describe(int rc) {
  switch (rc) {
    case reader_ok: return "ok";
    case reader_broken: return "saw a broken invariant (see stderr)";
    case reader_starved: return "gave up: the writer was starved (see stderr, /tmp/bugs/crash-1.md, crash-2.md)";
    default: return "failed (see stderr)";
  }
}

// -- threads --------------------------------------------------------------------------------

// One writer thread, three reader threads, one storage. Each writer transaction is its own
// writer object (in-process readers wait for the writer's whole life).
// KNOWN BUG (/tmp/bugs/crash-1.md): the in-process lock prefers readers, so readers that read
// back to back starve the writer; the readers detect it and stop, and the test fails.
TEST(ConcurrencyThreads, OneWriterThreeReaders) {
  constexpr std::uint64_t n = 300;
  constexpr int reader_threads = 3;
  tmf_test::scoped_path path;
  tmf::storage<conc_root> s(path, tmf::options{.sync = tmf::durability::no_sync});
  init_root(s);

  wait_gauge gauge;
  std::atomic<std::uint64_t> reads[reader_threads] = {};
  int results[reader_threads] = {};
  std::string messages[reader_threads];
  std::string writer_failure;
  std::uint64_t writer_commits = 0;
  std::thread writer([&] {
    try {
      prng g(1);
      while (writer_commits < n)
        if (writer_transaction(s, g, gauge)) ++writer_commits;
    } catch (const std::exception& e) {
      writer_failure = e.what();
    }
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < reader_threads; ++t)
    readers.emplace_back([&, t] {
      try {
        results[t] = reader_loop(s, reads[t], gauge, false, t == 1,
                                 [&](const conc_root& r) { return r.commits >= n; }, messages[t]);
      } catch (const std::exception& e) {
        results[t] = 100;
        messages[t] = e.what();
      }
    });
  writer.join();
  for (auto& t : readers) t.join();

  EXPECT_EQ(writer_failure, "");
  EXPECT_EQ(writer_commits, n);
  for (int t = 0; t < reader_threads; ++t) {
    EXPECT_EQ(results[t], reader_ok) << "reader thread " << t << " " << describe(results[t]) << ": " << messages[t];
    EXPECT_GT(reads[t].load(), 0u) << "reader thread " << t << " never read";
  }
  auto r = s.read();
  EXPECT_EQ(r->commits, n);
  EXPECT_EQ(broken(*r), "");
  EXPECT_NO_THROW(s.check());
  std::cout << "threads: " << n << " commits; reads " << reads[0] << ", " << reads[1] << ", " << reads[2]
            << "; at most " << gauge.max_overtakes << " reads overtook one wait of the writer" << std::endl;
}

// Writer threads of one storage serialise: each does n increments in its own transactions.
TEST(ConcurrencyThreads, TwoWriterThreadsCompete) {
  constexpr std::uint64_t n = 150;
  tmf_test::scoped_path path;
  tmf::storage<conc_root> s(path, tmf::options{.sync = tmf::durability::no_sync});
  init_root(s);
  std::atomic<int> failures{0};
  auto body = [&](std::uint64_t seed) {
    try {
      prng g(seed);
      auto work = [&](tmf::writer<conc_root>& w) {
        w->counter += 1;
        step(*w, g);
        w.commit();
      };
      for (std::uint64_t i = 0; i < n; ++i) {
        if (i % 4 == 3) {
          for (;;) {
            if (auto w = s.try_write()) {
              work(*w);
              break;
            }
            std::this_thread::yield();
          }
        } else {
          auto w = s.write();
          work(w);
        }
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "writer thread: %s\n", e.what());
      ++failures;
    }
  };
  std::thread a(body, 11), b(body, 12);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  auto r = s.read();
  EXPECT_EQ(r->counter, 2 * n) << "increments were lost";
  EXPECT_EQ(r->commits, 2 * n);
  EXPECT_EQ(broken(*r), "");
}

// -- processes ------------------------------------------------------------------------------

// One writer process and three reader processes (one of them read_only); each child opens
// the storage itself after the fork; the readers read until they see the last commit.
// KNOWN BUG (/tmp/bugs/crash-2.md): a commit needs the apply lock exclusively while readers
// of other processes take it shared back to back: the writer is starved; the readers detect
// it and stop, and the test fails.
TEST(ConcurrencyProcesses, OneWriterThreeReaders) {
  constexpr std::uint64_t n = 300;
  constexpr int reader_count = 3;
  tmf_test::scoped_path path;
  create_storage(path);
  shared_state shared;
  child_guard children;

  const stop_when stop{.commits = n};
  std::vector<child_id> readers;
  for (int i = 0; i < reader_count; ++i) {
    tmf::options o;
    if (i == 2) o.mode = tmf::open_mode::read_only;
    readers.push_back(children.add(spawn_reader(path, o, shared, i, false, stop)));
  }
  const tmf_test::child_path p = path.path(), sp = shared.path();
  const child_id writer = children.add(spawn_child(tmf_test::by_value([p, sp] {
    shared_block& sh = tmf_test::attach_shared<shared_block>(sp);
    tmf::storage<conc_root> s(p.path(), tmf::options{.sync = tmf::durability::no_sync});
    prng g(2);
    std::uint64_t commits = 0;
    while (commits < n)
      if (writer_transaction(s, g, sh.gauge)) ++commits;
    sh.commits = commits;
    return 0;
  })));

  EXPECT_EQ(children.wait(writer), 0) << "the writer process failed (see stderr)";
  for (int i = 0; i < reader_count; ++i) {
    const int rc = children.wait(readers[i]);
    EXPECT_EQ(rc, reader_ok) << "reader process " << i << " " << describe(rc);
    EXPECT_GT(shared->reads[i].load(), 0u) << "reader process " << i << " never read";
  }
  EXPECT_EQ(shared->commits.load(), n);
  EXPECT_EQ(verify_in_child(path, expect_state{.commits = n}), 0);
  std::cout << "processes: " << n << " commits; reads " << shared->reads[0] << ", " << shared->reads[1] << ", "
            << shared->reads[2] << " (read_only); at most " << shared->gauge.max_overtakes
            << " reads overtook one wait of the writer" << std::endl;
}

// Two writer processes: write() blocks across processes, no increment is lost.
TEST(ConcurrencyProcesses, TwoWritersCompete) {
  constexpr std::uint64_t n = 150;
  tmf_test::scoped_path path;
  create_storage(path);
  child_guard children;
  std::vector<child_id> writers;
  const tmf_test::child_path p = path.path();
  for (int i = 0; i < 2; ++i)
    writers.push_back(children.add(spawn_child(tmf_test::by_value([p, i] {
      tmf::storage<conc_root> s(p.path(), tmf::options{.sync = i == 0 ? tmf::durability::full : tmf::durability::no_sync});
      prng g(20 + i);
      for (std::uint64_t k = 0; k < n; ++k) {
        auto w = s.write();
        w->counter += 1;
        step(*w, g);
        w.commit();
      }
      return 0;
    }))));
  for (int i = 0; i < 2; ++i) EXPECT_EQ(children.wait(writers[i]), 0) << "writer process " << i << " failed (see stderr)";
  EXPECT_EQ(verify_in_child(path, expect_state{.commits = 2 * n, .counter = 2 * n}), 0);
}

// Kills the calling process with SIGKILL at the `kill_at`-th write to the data file whose inode
// is `data_inode` (tmf's I/O hook runs before each write): the data file is then half-written
// by an apply (or a repair), with its header page (written last) still old.
struct self_kill {
  static inline std::uint64_t data_inode = 0, data_device = 0, kill_at = 0, writes = 0;
  static std::error_code hook(os::io_op op, const os::file& f, std::uint64_t, std::uint64_t, const void*) {
    os::file_info fi;
    if (op == os::io_op::write && !os::stat_file(f, fi) && fi.inode == data_inode && fi.device == data_device &&
        ++writes >= kill_at) {
#if defined(_WIN32)
      ::TerminateProcess(::GetCurrentProcess(), tmf_test::killed_status);
#else
      ::kill(::getpid(), SIGKILL);
#endif
    }
    return {};
  }
  static void arm(const std::filesystem::path& data, std::uint64_t at) {
    os::file f;
    os::file_info fi;
    if (auto ec = os::open_file(data, os::access::read_only, f)) throw std::system_error(ec, "open " + data.string());
    if (auto ec = os::stat_file(f, fi)) throw std::system_error(ec, "stat " + data.string());
    data_inode = fi.inode;
    data_device = fi.device;
    kill_at = at;
    writes = 0;
    tmf::detail::os::io_hook = &hook;
  }
};

// A writer process is SIGKILLed 20 times while three reader processes keep reading: no
// reader may ever see a broken invariant (a half-applied commit must be repaired before
// anyone reads it: acquire_apply_shared, replay_pending). Even kills are self-inflicted in
// the middle of an apply (at the k-th write to the data file after a few commits, through
// tmf's I/O hook); odd ones come from the test at a random instant. The readers are polite
// (they back off when they have overtaken a waiting writer 50 times) so that the writer
// gets through despite crash-2; the subject here is the repair, not the lock's fairness.
TEST(ConcurrencyProcesses, WriterKilledWhileReadersRead) {
  constexpr int kills = 20;
  constexpr int reader_count = 3;
  tmf_test::scoped_path path;
  create_storage(path);
  shared_state shared;
  child_guard children;

  const stop_when stop{.done = true};
  std::vector<child_id> readers;
  for (int i = 0; i < reader_count; ++i)
    readers.push_back(children.add(spawn_reader(path, {}, shared, i, true, stop)));
  const tmf_test::child_path p = path.path(), sp = shared.path();

  prng ctl(3);
  for (int k = 0; k < kills; ++k) {
    const bool self = k % 2 == 0;
    const auto sync = ctl.below(3) == 0 ? tmf::durability::full : tmf::durability::no_sync;
    const std::uint64_t seed = ctl.next();
    const std::uint64_t commits_before_arming = ctl.below(4), kill_at = 1 + ctl.below(4);
    const std::uint64_t before = shared->commits.load();
    const child_id w = children.add(spawn_child(tmf_test::by_value([p, sp, sync, seed, self, commits_before_arming, kill_at] {
      shared_block& sh = tmf_test::attach_shared<shared_block>(sp);
      sh.gauge.enter();  // its open may repair what the last one left, under the apply lock
      tmf::storage<conc_root> s(p.path(), tmf::options{.sync = sync});
      sh.gauge.leave();
      prng g(seed);
      for (std::uint64_t c = 0;; ++c) {
        if (self && c == commits_before_arming) self_kill::arm(p.path(), kill_at);
        if (writer_transaction(s, g, sh.gauge)) sh.commits.fetch_add(1);
        else --c;
      }
      return 0;
    })));
    if (!self) {
      if (ctl.below(4) == 0) {
        sleep_us(ctl.below(3000));  // during its open (repair) or its first transaction
      } else {
        // After a few of its commits (waiting at most ~1 s): mid-transaction or mid-commit.
        const std::uint64_t target = before + 1 + ctl.below(4);
        for (int spin = 0; spin < 10000 && shared->commits.load() < target; ++spin) sleep_us(100);
        sleep_us(ctl.below(300));
      }
      tmf_test::kill_child(w);
    }
    const int rc = children.wait(w);
    shared->gauge.leave();  // the dead writer's wait, if it was waiting
    ASSERT_EQ(rc, tmf_test::killed_status) << "writer process " << k << " failed before it was killed (see stderr)";
  }
  // The last writer ends the readers' loops.
  const child_id last = children.add(spawn_child(tmf_test::by_value([p, sp] {
    shared_block& sh = tmf_test::attach_shared<shared_block>(sp);
    tmf::storage<conc_root> s(p.path());
    prng g(99);
    sh.gauge.enter();
    auto w = s.write();
    sh.gauge.leave();
    step(*w, g);
    w->done = 1;
    sh.gauge.enter();
    w.commit();
    sh.gauge.leave();
    return 0;
  })));
  EXPECT_EQ(children.wait(last), 0) << "the last writer failed (see stderr)";
  shared->gauge.leave();
  for (int i = 0; i < reader_count; ++i) {
    const int rc = children.wait(readers[i]);
    EXPECT_EQ(rc, reader_ok) << "reader process " << i << " " << describe(rc);
    EXPECT_GT(shared->reads[i].load(), 0u) << "reader process " << i << " never read";
  }
  EXPECT_EQ(verify_in_child(path, expect_state{.done = true}), 0);
  EXPECT_GT(shared->commits.load(), 0u) << "no killed writer ever committed: nothing was tested";
  std::cout << "crash+concurrency: " << kills << " writer processes killed (" << kills / 2
            << " in the middle of an apply); they acknowledged " << shared->commits << " commits; reads "
            << shared->reads[0] << ", " << shared->reads[1] << ", " << shared->reads[2] << std::endl;
}

}  // namespace
