// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/detail/engine.hpp: recovery from deaths at each step of a commit,
// torn log tails, failed log writes and syncs, checkpoints, growth seen by other processes,
// full disks. Deaths are simulated in child processes (tmf_test::spawn_child: forked on
// POSIX, the test binary re-executed on Windows) with os::io_hook: the child ends itself at
// the chosen I/O operation, exactly as a SIGKILL (TerminateProcess) there would leave the files.
#include <tmf/detail/log.hpp>
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <utility>

#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
namespace os = tmf::detail::os;
using tmf::detail::page_size;
using child_id = decltype(tmf_test::spawn_child(tmf_test::by_value([] { return 0; })));

struct root {
  std::uint64_t value = 0;
  tmf::vector<std::uint64_t> pages;  // one word per page-sized stride, to dirty many pages
};

using tmf_test::die_here;

/// What the hook does in this process. Trivially copyable, so that a child gets it by value
/// (a re-executed Windows child does not inherit the parent's globals).
struct faults {
  int writes_left = -1;  // data-file writes allowed before dying
  bool die_on_log_sync = false;
  bool die_on_log_write = false;  // at the commit's first log write: its record
  std::errc fail_log_write{}, fail_log_sync{}, fail_allocate{};  // one failure each (0: none)
};

os::file_info g_data;  // identity of the data file, which the hook tells from the log and lock files
faults g_faults;

bool is_data(const os::file& f) {
  os::file_info fi;
  return !os::stat_file(f, fi) && fi.inode == g_data.inode && fi.device == g_data.device;
}

std::error_code take(std::errc& e) { return std::make_error_code(std::exchange(e, std::errc{})); }

std::error_code hook(os::io_op op, const os::file& f, std::uint64_t, std::uint64_t, const void*) {
  const bool data = is_data(f);
  faults& g = g_faults;
  if (op == os::io_op::write && data && g.writes_left >= 0) {
    if (g.writes_left == 0) die_here(0);  // die here, like a SIGKILL
    --g.writes_left;
  }
  // One failure each (a transient error): the voiding of the failed record then succeeds.
  if (op == os::io_op::write && !data && g.fail_log_write != std::errc{}) return take(g.fail_log_write);
  if (op == os::io_op::sync && !data && g.die_on_log_sync) die_here(0);
  if (op == os::io_op::write && !data && g.die_on_log_write) die_here(0);
  if (op == os::io_op::sync && !data && g.fail_log_sync != std::errc{}) return take(g.fail_log_sync);
  if (op == os::io_op::allocate && data && g.fail_allocate != std::errc{}) return std::make_error_code(g.fail_allocate);
  return {};
}

/// Installs the hook with `f` for the data file `data` (in this process).
void arm(const fs::path& data, const faults& f) {
  g_data = tmf_test::file_identity(data);
  g_faults = f;
  os::io_hook = &hook;
}

/// A `T` read from `p` at `offset` (a header of the data file or the log), read as a test
/// tool would, outside tmf; nullopt if the file is shorter.
template <class T>
std::optional<T> read_at(const fs::path& p, std::uint64_t offset = 0) {
  std::ifstream in(p, std::ios::binary);
  T t;
  if (!in.seekg(static_cast<std::streamoff>(offset)) || !in.read(reinterpret_cast<char*>(&t), sizeof t)) return std::nullopt;
  return t;
}

struct engine_fixture : ::testing::Test {
  tmf_test::scoped_path path;
  void SetUp() override {
    g_faults = {};
    // Create the file with a committed baseline: value 1, 8 pages of 1s.
    tmf::storage<root> s(path);
    auto w = s.write();
    w->value = 1;
    w->pages.assign(8 * page_size / sizeof(std::uint64_t), 1);
    w.commit();
    g_data = tmf_test::file_identity(path.path());
  }
  void TearDown() override { os::io_hook = nullptr; }

  /// In a child: opens, sets the hook with `f`, sets value and every page word to `v`,
  /// commits. 0 when the hook ended the child as `f` says, 3 if the commit got through.
  int child_commit(std::uint64_t v, faults f) {
    return tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path.path()), v, f] {
      tmf::storage<root> s(p.path());
      auto w = s.write();
      w->value = v;
      for (auto& x : w->pages) x = v;
      arm(p.path(), f);
      w.commit();
      return 3;  // not reached: the hook ends the process
    }));
  }

  /// In a fresh child: opens, checks, and returns 0 if the state is uniformly `v`.
  int verify_in_child(std::uint64_t v) {
    return tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path.path()), v] {
      tmf::storage<root> s(p.path());
      s.check();
      auto r = s.read();
      if (r->value != v) {
        std::fprintf(stderr, "value %llu, expected %llu\n", (unsigned long long)r->value, (unsigned long long)v);
        return 1;
      }
      for (auto x : r->pages)
        if (x != v) {
          std::fprintf(stderr, "page word %llu, expected %llu (half-applied)\n", (unsigned long long)x,
                       (unsigned long long)v);
          return 2;
        }
      return 0;
    }));
  }
};

/// A child process (spawn_child) that waits for go() before it runs `fn`; killed and reaped
/// if the test ends first. Its handshake markers live beside `base`.
class waiting_child {
 public:
  template <class F>
  waiting_child(const fs::path& base, F fn)
      : m_h(base), m_id(tmf_test::spawn_child(tmf_test::by_value([h = m_h, fn] { return h.wait("g") ? fn() : 99; }))) {}
  waiting_child(const waiting_child&) = delete;
  waiting_child& operator=(const waiting_child&) = delete;
  ~waiting_child() {
    if (!m_joined) {
      try {
        tmf_test::kill_child(m_id);
        tmf_test::wait_child(m_id);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "could not end the waiting child: " << e.what();
      }
    }
    m_h.clear();
  }
  /// Lets the child run and waits for it: its exit code.
  int go() {
    m_h.signal("g");
    m_joined = true;
    return tmf_test::wait_child(m_id);
  }

 private:
  tmf_test::handshake m_h;
  child_id m_id;
  bool m_joined = false;
};

TEST_F(engine_fixture, DeathAtTheLogSyncKeepsTheWholeRecordOrNothing) {
  // A process death does not lose the page cache: the record written just before the
  // sync is complete, so recovery replays all of it (an unacknowledged commit may land,
  // never half of one). Power loss at this point is the power-loss harness's business.
  EXPECT_EQ(child_commit(2, {.die_on_log_sync = true}), 0);
  EXPECT_EQ(verify_in_child(2), 0);
}

TEST_F(engine_fixture, DeathAfterTheLogSyncBeforeApplyIsReplayedOnOpen) {
  EXPECT_EQ(child_commit(2, {.writes_left = 0}), 0);  // die at the first write to the data file
  EXPECT_EQ(verify_in_child(2), 0) << "a durable commit was lost";
}

TEST_F(engine_fixture, DeathInTheMiddleOfApplyIsRepairedOnOpen) {
  for (int allowed : {1, 3}) {
    EXPECT_EQ(child_commit(10 + allowed, {.writes_left = allowed}), 0);
    EXPECT_EQ(verify_in_child(10 + allowed), 0) << "half-applied commit after " << allowed << " page writes";
  }
}

TEST_F(engine_fixture, ReaderInAnotherProcessNeverSeesAHalfAppliedCommit) {
  for (int allowed : {0, 2}) {
    const std::uint64_t v = 20 + static_cast<std::uint64_t>(allowed);
    // The writer opens on its own, then dies in the middle of applying.
    waiting_child writer(path.path(), [p = tmf_test::child_path(path.path()), v, allowed] {
      tmf::storage<root> s(p.path());
      auto w = s.write();
      w->value = v;
      for (auto& x : w->pages) x = v;
      arm(p.path(), {.writes_left = allowed});
      w.commit();
      return 3;  // not reached: the hook exits
    });
    {
      tmf::storage<root> s(path);  // stays open while the writer dies
      ASSERT_EQ(s.read()->value, allowed == 0 ? 1u : 20u);
      ASSERT_EQ(writer.go(), 0) << "the writer should have died in its hook";
      auto r = s.read();
      EXPECT_EQ(r->value, v) << "the durable commit was not repaired into the data file";
      for (auto x : r->pages) ASSERT_EQ(x, v) << "a reader saw a half-applied commit";
    }
  }
}

TEST_F(engine_fixture, TornLastRecordIsIgnored) {
  // Commit 2 applied, commit 3 durable but not applied; then damage commit 3's record.
  EXPECT_EQ(tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path.path())] {
              tmf::storage<root> s(p.path());
              {
                auto w = s.write();
                w->value = 2;
                for (auto& x : w->pages) x = 2;
                w.commit();
                w->value = 3;
                for (auto& x : w->pages) x = 3;
                arm(p.path(), {.writes_left = 0});
                w.commit();
              }
              return 1;  // not reached
            })),
            0);
  // The last record starts where the data header's log_end says (header written by commit 2).
  const auto h = read_at<tmf::detail::file_header>(path.path());
  ASSERT_TRUE(h.has_value());
  ASSERT_EQ(h->txn, 3u) << "commit 2 should be applied (txn 1 created the root, 2 the baseline)";
  {
    std::fstream log(tmf_test::log_path(path.path()), std::ios::binary | std::ios::in | std::ios::out);
    ASSERT_TRUE(log.seekp(static_cast<std::streamoff>(h->log_end + 200)).put(0x5a).flush());
  }
  EXPECT_EQ(verify_in_child(2), 0) << "a damaged record was replayed, or the good state was lost";
}

TEST_F(engine_fixture, FailedLogWriteRollsBackAndTheWriterStaysUsable) {
  tmf::storage<root> s(path);
  auto w = s.write();
  w->value = 5;
  arm(path.path(), {.fail_log_write = std::errc::no_space_on_device});
  try {
    w.commit();
    ADD_FAILURE() << "commit succeeded despite a failing log write";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), std::errc::no_space_on_device) << e.what();
  }
  os::io_hook = nullptr;
  EXPECT_EQ(w->value, 1u) << "the failed transaction was not rolled back";
  w->value = 6;
  w.commit();
  EXPECT_EQ(s.stats().rollbacks, 1u);
}

TEST_F(engine_fixture, FailedLogSyncIsAFailedCommitEvenAfterACrash) {
  EXPECT_EQ(tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path.path())] {
              tmf::storage<root> s(p.path());
              auto w = s.write();
              w->value = 7;
              arm(p.path(), {.fail_log_sync = std::errc::io_error});
              try {
                w.commit();
                return 1;
              } catch (const tmf::error& e) {
                if (e.code() != std::errc::io_error) return 2;
              }
              if (w->value != 1) return 3;
              die_here(0);  // crash with the failed record in the page cache
            })),
            0);
  EXPECT_EQ(verify_in_child(1), 0) << "a commit reported as failed was replayed";
}

TEST_F(engine_fixture, DiskFullOnGrowthIsBadAllocAndTheWriterStaysUsable) {
  tmf::storage<root> s(path);
  auto w = s.write();
  arm(path.path(), {.fail_allocate = std::errc::no_space_on_device});
  EXPECT_THROW(w->pages.resize(64 << 20), std::bad_alloc);
  os::io_hook = nullptr;
  w->value = 9;
  w.commit();
  w.rollback();
  EXPECT_EQ(w->value, 9u);
  s.check();
}

TEST_F(engine_fixture, CheckpointsRestartTheLogAndKeepTheData) {
  tmf::options o;
  o.checkpoint_bytes = page_size;  // every commit checkpoints
  {
    tmf::storage<root> s(path, o);
    for (std::uint64_t v = 2; v < 6; ++v) {
      auto w = s.write();
      w->value = v;
      for (auto& x : w->pages) x = v;
      w.commit();
      const auto lh = read_at<tmf::detail::log_header>(tmf_test::log_path(path.path()));
      ASSERT_TRUE(lh.has_value());
      EXPECT_EQ(lh->base_txn, v + 1) << "the log did not restart at the checkpoint";
    }
  }
  EXPECT_EQ(verify_in_child(5), 0);
}

// The apply gate's fast path: with nobody else holding the apply lock, a commit writes the
// log's control page once (the apply marker), never the commit-pending word (the turnstile's,
// for a committer that has to wait: readers_test's CommitWaitsForAReadOnlyReaderWithoutATable).
int g_control_writes = 0, g_pending_writes = 0;
std::error_code control_hook(os::io_op op, const os::file& f, std::uint64_t offset, std::uint64_t, const void*) {
  if (op == os::io_op::write && !is_data(f) && offset < tmf::detail::log_start) {
    ++g_control_writes;
    if (offset == offsetof(tmf::detail::log_control, commit_pending)) ++g_pending_writes;
  }
  return {};
}

TEST_F(engine_fixture, UncontendedCommitWritesTheControlPageOnlyForTheApplyMarker) {
  tmf::storage<root> s(path);
  {
    auto w = s.write();
    g_control_writes = g_pending_writes = 0;
    os::io_hook = &control_hook;
    for (std::uint64_t v = 2; v < 12; ++v) {
      w->value = v;
      w.commit();
    }
    os::io_hook = nullptr;
  }
  EXPECT_EQ(g_pending_writes, 0) << "an uncontended commit raised the commit-pending word";
  EXPECT_EQ(g_control_writes, 10) << "more than the apply marker written per commit";
  EXPECT_EQ(s.read()->value, 11u);
}

// -- direct pages: fresh space goes straight into the data file ------------------------------

constexpr std::size_t words_per_page = page_size / sizeof(std::uint64_t);

/// The I/O a commit makes, in order: 'w'/'s' for writes and syncs of the data file, 'W'/'S'
/// for the log's.
std::string g_ops;
std::error_code order_hook(os::io_op op, const os::file& f, std::uint64_t, std::uint64_t, const void*) {
  const bool data = is_data(f);
  if (op == os::io_op::write) g_ops += data ? 'w' : 'W';
  if (op == os::io_op::sync) g_ops += data ? 's' : 'S';
  return {};
}

/// Direct pages are a durability::no_sync path (a process death keeps the page cache, so the
/// deaths below test it as well as they test a durable commit).
tmf::options no_sync() {
  tmf::options o;
  o.sync = tmf::durability::no_sync;
  return o;
}

TEST_F(engine_fixture, FreshPagesAreWrittenIntoTheDataFileBeforeTheRecordWithoutSync) {
  std::size_t pages = 256;  // more than any free block below the top: taken from the top
  for (const auto sync : {tmf::durability::full, tmf::durability::no_sync}) {
    SCOPED_TRACE(sync == tmf::durability::full ? "durable" : "no_sync");
    pages *= 2;  // the last round's block is free below the top now
    tmf::options o;
    o.sync = sync;
    {
      tmf::storage<root> s(path, o);
      auto w = s.write();
      const tmf::storage_stats before = s.stats();
      w->value = 7;
      w->pages.assign(pages * words_per_page, 7);  // a new block from the top of the arena
      g_ops.clear();
      g_data = tmf_test::file_identity(path.path());
      os::io_hook = &order_hook;
      w.commit();
      os::io_hook = nullptr;
      const tmf::storage_stats after = s.stats();
      EXPECT_EQ(after.last_commit_pages, after.pages_logged - before.pages_logged + after.pages_direct - before.pages_direct);
      const std::string head = g_ops.substr(0, g_ops.find('W'));  // the I/O before the record
      if (sync == tmf::durability::full) {
        // A direct page would need a data-file sync before the record: everything is logged.
        EXPECT_EQ(after.pages_direct, before.pages_direct) << "a durable commit wrote pages directly";
        EXPECT_GE(after.log_bytes - before.log_bytes, pages * page_size) << "the fresh block was not logged";
        EXPECT_EQ(head, "") << "I/O order: " << g_ops;
      } else {
        EXPECT_GE(after.pages_direct - before.pages_direct, pages - 2) << "the fresh block's pages were not written directly";
        EXPECT_LT(after.log_bytes - before.log_bytes, 16 * page_size) << "the fresh block was logged";
        EXPECT_EQ(head, "w") << "the direct pages are not written, in one write, before the record: " << g_ops;
      }
    }
    EXPECT_EQ(verify_in_child(7), 0);
    tmf::storage<root> s(path, o);  // back to the baseline for the next round
    auto w = s.write();
    w->value = 1;
    w->pages.assign(8 * words_per_page, 1);
    w.commit();
  }
}

TEST_F(engine_fixture, DeathBeforeTheRecordLeavesTheDirectPagesFree) {
  EXPECT_EQ(tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path.path())] {
              tmf::storage<root> s(p.path(), no_sync());
              auto w = s.write();
              w->value = 9;
              w->pages.assign(256 * words_per_page, 9);
              arm(p.path(), {.die_on_log_write = true});
              w.commit();
              return 3;  // not reached
            })),
            0);
  EXPECT_EQ(verify_in_child(1), 0) << "pages written before the record damaged the committed state";
}

TEST_F(engine_fixture, ASecondCommitOfOneWriterLogsThePagesItsFirstMadeLive) {
  // The first commit writes the new block directly; to the second it is live data, which
  // must go through the log: a death before the second record keeps the first commit.
  EXPECT_EQ(tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path.path())] {
              tmf::storage<root> s(p.path(), no_sync());
              auto w = s.write();
              w->value = 2;
              w->pages.assign(256 * words_per_page, 2);
              w.commit();
              const tmf::storage_stats first = s.stats();
              CHILD_CHECK(first.pages_direct >= 250, "precondition: the first commit wrote %llu pages directly",
                          (unsigned long long)first.pages_direct);
              w->value = 3;
              for (auto& x : w->pages) x = 3;
              arm(p.path(), {.die_on_log_write = true});
              w.commit();
              return 3;  // not reached
            })),
            0);
  EXPECT_EQ(verify_in_child(2), 0) << "the second commit wrote live pages before its record";
}

TEST_F(engine_fixture, FreedPagesOfARecordNotYetCheckpointedAreLoggedWhenReused) {
  // A record replayed at recovery rewrites its pages: a page it holds may be free again,
  // but a later commit that reuses it must log it, or the replay brings back the old bytes.
  EXPECT_EQ(tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path.path())] {
              tmf::options o = no_sync();
              o.checkpoint_bytes = std::size_t{1} << 30;  // no checkpoint: every record is replayed
              o.give_back_bytes = 0;                     // (a free to punch would checkpoint)
              o.truncate_bytes = 0;
              tmf::storage<root> s(p.path(), o);
              auto w = s.write();
              w->pages.assign(256 * words_per_page, 2);  // at the top of the arena, written directly
              w.commit();
              CHILD_CHECK(s.stats().pages_direct >= 250, "precondition: the new block was not written directly");
              const auto block = reinterpret_cast<std::uintptr_t>(w->pages.data());
              for (auto& x : w->pages) x = 3;  // now live: logged
              w.commit();
              w->pages = tmf::vector<std::uint64_t>(w->pages.get_allocator());  // freed: into the top block
              w.commit();
              const tmf::storage_stats before = s.stats();
              w->value = 4;
              w->pages.assign(600 * words_per_page, 4);  // larger than any other free block: the top
              const auto reused = reinterpret_cast<std::uintptr_t>(w->pages.data());
              CHILD_CHECK(reused < block + 256 * page_size && reused + 600 * page_size > block,
                          "precondition: the new block (at %llx) does not overlap the logged one (at %llx)",
                          (unsigned long long)reused, (unsigned long long)block);
              w.commit();
              CHILD_CHECK(s.stats().pages_direct - before.pages_direct < 600 - 256,
                          "pages held by a record of the log were written directly");
              ::_exit(0);  // no checkpoint at close: the next open replays every record
            })),
            0);
  EXPECT_EQ(verify_in_child(4), 0) << "recovery replayed an older record over a reused page";
}

TEST_F(engine_fixture, CleanCloseLeavesNothingToReplay) {
  { tmf::storage<root> s(path); }
  const auto bytes = tmf_test::read_bytes(path.path());
  { tmf::storage<root> s(path); }
  EXPECT_EQ(bytes, tmf_test::read_bytes(path.path())) << "reopening a cleanly closed file modified it";
}

TEST_F(engine_fixture, GrowthByAnotherProcessIsMappedByReaders) {
  // The writer opens on its own (started before the parent opens), once the parent has mapped.
  waiting_child writer(path.path(), [p = tmf_test::child_path(path.path())] {
    tmf::storage<root> s(p.path());
    auto w = s.write();
    w->pages.assign(4 << 20, 42);  // 32 MiB: the arena grows
    w->value = 42;
    w.commit();
    return 0;
  });
  tmf::storage<root> s(path);
  const auto before = s.size();
  ASSERT_EQ(writer.go(), 0);
  auto r = s.read();
  EXPECT_GT(s.size(), before) << "the arena did not grow";
  ASSERT_EQ(r->value, 42u);
  ASSERT_EQ(r->pages.size(), std::size_t{4} << 20);
  for (std::size_t i = 0; i < r->pages.size(); i += 511) ASSERT_EQ(r->pages[i], 42u) << "word " << i;
}

struct counted {
  std::uint64_t made = 0;
  counted() { made = 1; }
};

TEST_F(engine_fixture, ConcurrentCreationMakesOneRoot) {
  tmf_test::scoped_path fresh(std::string_view("fresh"));
  const tmf_test::handshake h(fresh.path());
  std::vector<child_id> ids;
  for (int i = 0; i < 4; ++i) {
    // The four start together (a Windows child takes ~0.1 s to start: without the gate
    // each would find the file made by the one before).
    ids.push_back(tmf_test::spawn_child(tmf_test::by_value([p = tmf_test::child_path(fresh.path()), h] {
      if (!h.wait("g")) return 2;
      tmf::storage<counted> s(p.path());
      auto w = s.write();
      w->made += 10;  // each process adds 10 to the one root
      w.commit();
      return 0;
    })));
  }
  h.signal("g");
  for (auto id : ids) EXPECT_EQ(tmf_test::wait_child(id), 0);
  h.clear();
  tmf::storage<counted> s(fresh.path());
  EXPECT_EQ(s.read()->made, 41u) << "the root was constructed more than once, or an update was lost";
}

TEST_F(engine_fixture, ReadOnlyOpenAfterAnUncleanShutdownServesTheLastCommitAndWritesNothing) {
  // A writer dies without closing: its commits are in the log since the last checkpoint.
  EXPECT_EQ(tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path.path())]() -> int {
              tmf::storage<root> s(p.path());
              auto w = s.write();
              w->value = 30;
              for (auto& x : w->pages) x = 30;
              w.commit();
              die_here(0);
            })),
            0);
  const auto data_before = tmf_test::read_bytes(path.path());
  const auto log_before = tmf_test::read_bytes(tmf_test::log_path(path.path()));
  tmf::options ro;
  ro.mode = tmf::open_mode::read_only;
  {
    tmf::storage<root> reader(path.path(), ro);
    auto r = reader.read();
    EXPECT_EQ(r->value, 30u) << "the read-only open did not show the last commit";
    reader.check();
  }
  EXPECT_EQ(data_before, tmf_test::read_bytes(path.path())) << "a read-only open modified the data file";
  EXPECT_EQ(log_before, tmf_test::read_bytes(tmf_test::log_path(path.path()))) << "a read-only open modified the log";
}

TEST_F(engine_fixture, WritableOpenerIsFirstEvenWhileAReadOnlyProcessReads) {
  // Both writers are started before this process opens the file (a forked child inherits an
  // open storage's address range, and then cannot open it again).
  waiting_child dying_writer(tmf_test::test_path("dying"), [p = tmf_test::child_path(path.path())] {
    // Commits, dies after the log sync, before applying.
    tmf::storage<root> s(p.path());
    auto w = s.write();
    w->value = 31;
    for (auto& x : w->pages) x = 31;
    arm(p.path(), {.writes_left = 0});
    w.commit();
    return 3;  // not reached
  });
  waiting_child recoverer(tmf_test::test_path("recoverer"), [p = tmf_test::child_path(path.path())] {
    // Must be first (the read-only process holds no open lock).
    tmf::storage<root> s(p.path());
    auto r = s.read();
    if (r->value != 31) return 1;
    for (auto x : r->pages)
      if (x != 31) return 2;
    // Full recovery (not just a replay of the pending record) restarts the log at the
    // data file's transaction: only it repairs what a power cut tore in earlier commits.
    const auto lh = read_at<tmf::detail::log_header>(tmf_test::log_path(p.path()));
    const auto h = read_at<tmf::detail::file_header>(p.path());
    return lh && h && lh->base_txn == h->txn ? 0 : 4;
  });
  tmf::options ro;
  ro.mode = tmf::open_mode::read_only;
  tmf::storage<root> reader(path.path(), ro);
  ASSERT_EQ(reader.read()->value, 1u);
  ASSERT_EQ(dying_writer.go(), 0) << "the writer should have died in its hook";
  // A read-only process cannot repair the half-done commit: it says so.
  try {
    auto r = reader.read();
    ADD_FAILURE() << "a read-only reader read a file with an unapplied commit (value " << r->value << ")";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::read_only) << e.what();
  }
  EXPECT_EQ(recoverer.go(), 0) << "the writable opener did not recover the durable commit";
  auto r = reader.read();
  EXPECT_EQ(r->value, 31u);
  for (auto x : r->pages) ASSERT_EQ(x, 31u) << "the read-only process saw a half-applied commit";
}

TEST_F(engine_fixture, ReadOnlyProcessRecoversATornDataFileInMemoryThenFollowsTheWriter) {
  // Commit 40 durably, then leave the files as a power cut could: the log holds the commit,
  // the data file is the baseline (the apply never reached the disk).
  const auto baseline = tmf_test::read_bytes(path.path());
  EXPECT_EQ(tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path.path())]() -> int {
              tmf::storage<root> s(p.path());
              auto w = s.write();
              w->value = 40;
              for (auto& x : w->pages) x = 40;
              w.commit();
              die_here(0);  // no checkpoint: the log keeps the record
            })),
            0);
  {
    std::ofstream out(path.path(), std::ios::binary | std::ios::trunc);
    out.write(baseline.data(), static_cast<std::streamsize>(baseline.size()));
  }
  const auto data_before = tmf_test::read_bytes(path.path());
  const auto log_before = tmf_test::read_bytes(tmf_test::log_path(path.path()));
  // A writer process, started before the reader opens (a forked child must not inherit an
  // open storage).
  waiting_child writer(path.path(), [p = tmf_test::child_path(path.path())] {
    tmf::storage<root> s(p.path());  // full recovery: the read-only process holds no open lock
    if (s.read()->value != 40) return 1;
    auto w = s.write();
    w->value = 41;
    for (auto& x : w->pages) x = 41;
    w.commit();
    return 0;
  });
  tmf::options ro;
  ro.mode = tmf::open_mode::read_only;
  tmf::storage<root> reader(path.path(), ro);
  {
    auto r = reader.read();
    EXPECT_EQ(r->value, 40u) << "the read-only process did not recover the durable commit";
    for (auto x : r->pages) ASSERT_EQ(x, 40u) << "a half-recovered view";
  }
  reader.check();
  EXPECT_EQ(data_before, tmf_test::read_bytes(path.path())) << "the read-only recovery wrote the data file";
  EXPECT_EQ(log_before, tmf_test::read_bytes(tmf_test::log_path(path.path()))) << "the read-only recovery wrote the log";
  // A writer opens (full recovery) and commits: the read-only process moves forward.
  EXPECT_EQ(writer.go(), 0) << "the writer did not recover the commit or could not commit";
  auto r = reader.read();
  EXPECT_EQ(r->value, 41u) << "the read-only process did not follow the writer's commit";
  for (auto x : r->pages) ASSERT_EQ(x, 41u) << "stale recovered pages mixed with the writer's commit";
}

}  // namespace
