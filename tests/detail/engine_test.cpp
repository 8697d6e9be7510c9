// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/detail/engine.hpp: recovery from deaths at each step of a commit,
// torn log tails, failed log writes and syncs, checkpoints, growth seen by other processes,
// full disks. Deaths are simulated in forked children with os::io_hook: the child _exits
// at the chosen I/O operation, exactly as a SIGKILL there would leave the files.
#include <tmf/detail/log.hpp>
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <fstream>
#include <utility>

#include <sys/stat.h>

#include <cstring>

#include "test_support.hpp"

namespace {

namespace os = tmf::detail::os;
using tmf::detail::page_size;

struct root {
  std::uint64_t value = 0;
  tmf::vector<std::uint64_t> pages;  // one word per page-sized stride, to dirty many pages
};

std::uint64_t g_data_inode = 0;
int g_writes_left = -1;      // data-file writes allowed before dying
bool g_die_on_log_sync = false;
std::error_code g_fail_log_write, g_fail_log_sync, g_fail_allocate;

bool is_data(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && st.st_ino == g_data_inode;
}

std::error_code hook(os::io_op op, const os::file& f, std::uint64_t, std::uint64_t, const void*) {
  const bool data = is_data(f.native());
  if (op == os::io_op::write && data && g_writes_left >= 0) {
    if (g_writes_left == 0) ::_exit(0);  // die here, like a SIGKILL
    --g_writes_left;
  }
  // One failure each (a transient error): the voiding of the failed record then succeeds.
  if (op == os::io_op::write && !data && g_fail_log_write) return std::exchange(g_fail_log_write, {});
  if (op == os::io_op::sync && !data && g_die_on_log_sync) ::_exit(0);
  if (op == os::io_op::sync && !data && g_fail_log_sync) return std::exchange(g_fail_log_sync, {});
  if (op == os::io_op::allocate && data && g_fail_allocate) return g_fail_allocate;
  return {};
}

struct engine_fixture : ::testing::Test {
  tmf_test::scoped_path path;
  void SetUp() override {
    g_writes_left = -1;
    g_die_on_log_sync = false;
    g_fail_log_write = g_fail_log_sync = g_fail_allocate = {};
    // Create the file with a committed baseline: value 1, 8 pages of 1s.
    tmf::storage<root> s(path);
    auto w = s.write();
    w->value = 1;
    w->pages.assign(8 * page_size / sizeof(std::uint64_t), 1);
    w.commit();
    struct stat st;
    ::stat(path.path().c_str(), &st);
    g_data_inode = st.st_ino;
  }
  void TearDown() override { os::io_hook = nullptr; }

  /// In a child: opens, sets the hook, sets value and every page word to `v`, commits.
  int child_commit(std::uint64_t v) {
    return tmf_test::run_in_child([&] {
      tmf::storage<root> s(path);
      auto w = s.write();
      w->value = v;
      for (auto& x : w->pages) x = v;
      os::io_hook = &hook;
      w.commit();
      os::io_hook = nullptr;
      return 0;
    });
  }

  /// In a fresh child: opens, checks, and returns 0 if the state is uniformly `v`.
  int verify_in_child(std::uint64_t v) {
    return tmf_test::run_in_child([&] {
      tmf::storage<root> s(path);
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
    });
  }
};

TEST_F(engine_fixture, DeathAtTheLogSyncKeepsTheWholeRecordOrNothing) {
  // A process death does not lose the page cache: the record written just before the
  // sync is complete, so recovery replays all of it (an unacknowledged commit may land,
  // never half of one). Power loss at this point is the power-loss harness's business.
  g_die_on_log_sync = true;
  EXPECT_EQ(child_commit(2), 0);
  EXPECT_EQ(verify_in_child(2), 0);
}

TEST_F(engine_fixture, DeathAfterTheLogSyncBeforeApplyIsReplayedOnOpen) {
  g_writes_left = 0;  // die at the first write to the data file
  EXPECT_EQ(child_commit(2), 0);
  EXPECT_EQ(verify_in_child(2), 0) << "a durable commit was lost";
}

TEST_F(engine_fixture, DeathInTheMiddleOfApplyIsRepairedOnOpen) {
  for (int allowed : {1, 3}) {
    g_writes_left = allowed;
    EXPECT_EQ(child_commit(10 + allowed), 0);
    EXPECT_EQ(verify_in_child(10 + allowed), 0) << "half-applied commit after " << allowed << " page writes";
  }
}

TEST_F(engine_fixture, ReaderInAnotherProcessNeverSeesAHalfAppliedCommit) {
  for (int allowed : {0, 2}) {
    int go[2];
    ASSERT_EQ(::pipe(go), 0);
    const std::uint64_t v = 20 + static_cast<std::uint64_t>(allowed);
    pid_t pid = ::fork();
    if (pid == 0) {  // the writer opens on its own, then dies in the middle of applying
      char c;
      if (::read(go[0], &c, 1) != 1) ::_exit(1);
      tmf::storage<root> s(path);
      auto w = s.write();
      w->value = v;
      for (auto& x : w->pages) x = v;
      g_writes_left = allowed;
      os::io_hook = &hook;
      w.commit();
      ::_exit(3);  // not reached: the hook exits
    }
    {
      tmf::storage<root> s(path);  // stays open while the writer dies
      ASSERT_EQ(s.read()->value, allowed == 0 ? 1u : 20u);
      ASSERT_EQ(::write(go[1], "g", 1), 1);
      int status = 0;
      ::waitpid(pid, &status, 0);
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "writer status " << status;
      auto r = s.read();
      EXPECT_EQ(r->value, v) << "the durable commit was not repaired into the data file";
      for (auto x : r->pages) ASSERT_EQ(x, v) << "a reader saw a half-applied commit";
    }
    ::close(go[0]);
    ::close(go[1]);
  }
}

TEST_F(engine_fixture, TornLastRecordIsIgnored) {
  // Commit 2 applied, commit 3 durable but not applied; then damage commit 3's record.
  EXPECT_EQ(tmf_test::run_in_child([&] {
              tmf::storage<root> s(path);
              {
                auto w = s.write();
                w->value = 2;
                for (auto& x : w->pages) x = 2;
                w.commit();
                w->value = 3;
                for (auto& x : w->pages) x = 3;
                g_writes_left = 0;
                os::io_hook = &hook;
                w.commit();
              }
              return 1;  // not reached
            }),
            0);
  // The last record starts where the data header's log_end says (header written by commit 2).
  int fd = ::open(path.path().c_str(), O_RDONLY);
  tmf::detail::file_header h;
  ASSERT_EQ(::pread(fd, &h, sizeof h, 0), static_cast<ssize_t>(sizeof h));
  ::close(fd);
  ASSERT_EQ(h.txn, 3u) << "commit 2 should be applied (txn 1 created the root, 2 the baseline)";
  int lfd = ::open(tmf_test::log_path(path.path()).c_str(), O_RDWR);
  char junk = 0x5a;
  ASSERT_EQ(::pwrite(lfd, &junk, 1, static_cast<off_t>(h.log_end + 200)), 1);
  ::close(lfd);
  EXPECT_EQ(verify_in_child(2), 0) << "a damaged record was replayed, or the good state was lost";
}

TEST_F(engine_fixture, FailedLogWriteRollsBackAndTheWriterStaysUsable) {
  tmf::storage<root> s(path);
  auto w = s.write();
  w->value = 5;
  g_fail_log_write = std::make_error_code(std::errc::no_space_on_device);
  os::io_hook = &hook;
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
  EXPECT_EQ(tmf_test::run_in_child([&] {
              tmf::storage<root> s(path);
              auto w = s.write();
              w->value = 7;
              g_fail_log_sync = std::make_error_code(std::errc::io_error);
              os::io_hook = &hook;
              try {
                w.commit();
                return 1;
              } catch (const tmf::error& e) {
                if (e.code() != std::errc::io_error) return 2;
              }
              if (w->value != 1) return 3;
              ::_exit(0);  // crash with the failed record in the page cache
            }),
            0);
  EXPECT_EQ(verify_in_child(1), 0) << "a commit reported as failed was replayed";
}

TEST_F(engine_fixture, DiskFullOnGrowthIsBadAllocAndTheWriterStaysUsable) {
  tmf::storage<root> s(path);
  auto w = s.write();
  g_fail_allocate = std::make_error_code(std::errc::no_space_on_device);
  os::io_hook = &hook;
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
      int lfd = ::open(tmf_test::log_path(path.path()).c_str(), O_RDONLY);
      tmf::detail::log_header lh;
      ASSERT_EQ(::pread(lfd, &lh, sizeof lh, 0), static_cast<ssize_t>(sizeof lh));
      ::close(lfd);
      EXPECT_EQ(lh.base_txn, v + 1) << "the log did not restart at the checkpoint";
    }
  }
  EXPECT_EQ(verify_in_child(5), 0);
}

// The apply gate's fast path: with nobody else holding the apply lock, a commit writes the
// log's control page once (the apply marker), never the commit-pending word (the turnstile's,
// for a committer that has to wait: readers_test's CommitWaitsForAReadOnlyReaderWithoutATable).
int g_control_writes = 0, g_pending_writes = 0;
std::error_code control_hook(os::io_op op, const os::file& f, std::uint64_t offset, std::uint64_t, const void*) {
  if (op == os::io_op::write && !is_data(f.native()) && offset < tmf::detail::log_start) {
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

TEST_F(engine_fixture, CleanCloseLeavesNothingToReplay) {
  { tmf::storage<root> s(path); }
  const auto bytes = tmf_test::read_bytes(path.path());
  { tmf::storage<root> s(path); }
  EXPECT_EQ(bytes, tmf_test::read_bytes(path.path())) << "reopening a cleanly closed file modified it";
}

TEST_F(engine_fixture, GrowthByAnotherProcessIsMappedByReaders) {
  int go[2], done[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(done), 0);
  pid_t pid = ::fork();
  if (pid == 0) {  // the writer: opens on its own (the parent had not opened yet)
    char c;
    if (::read(go[0], &c, 1) != 1) ::_exit(1);
    {
      tmf::storage<root> s(path);
      auto w = s.write();
      w->pages.assign(4 << 20, 42);  // 32 MiB: the arena grows
      w->value = 42;
      w.commit();
    }
    ::_exit(::write(done[1], "x", 1) == 1 ? 0 : 1);
  }
  tmf::storage<root> s(path);
  const auto before = s.size();
  ASSERT_EQ(::write(go[1], "g", 1), 1);
  char c;
  ASSERT_EQ(::read(done[0], &c, 1), 1);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto r = s.read();
  EXPECT_GT(s.size(), before) << "the arena did not grow";
  ASSERT_EQ(r->value, 42u);
  ASSERT_EQ(r->pages.size(), std::size_t{4} << 20);
  for (std::size_t i = 0; i < r->pages.size(); i += 511) ASSERT_EQ(r->pages[i], 42u) << "word " << i;
  for (int fd : {go[0], go[1], done[0], done[1]}) ::close(fd);
}

TEST_F(engine_fixture, ConcurrentCreationMakesOneRoot) {
  tmf_test::scoped_path fresh(std::string_view("fresh"));
  struct counted {
    std::uint64_t made = 0;
    counted() { made = 1; }
  };
  std::vector<pid_t> pids;
  for (int i = 0; i < 4; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      try {
        tmf::storage<counted> s(fresh.path());
        auto w = s.write();
        w->made += 10;  // each process adds 10 to the one root
        w.commit();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child: %s\n", e.what());
        ::_exit(1);
      }
      ::_exit(0);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  tmf::storage<counted> s(fresh.path());
  EXPECT_EQ(s.read()->made, 41u) << "the root was constructed more than once, or an update was lost";
}

TEST_F(engine_fixture, ReadOnlyOpenAfterAnUncleanShutdownServesTheLastCommitAndWritesNothing) {
  // A writer dies without closing: its commits are in the log since the last checkpoint.
  EXPECT_EQ(tmf_test::run_in_child([&]() -> int {
              tmf::storage<root> s(path);
              auto w = s.write();
              w->value = 30;
              for (auto& x : w->pages) x = 30;
              w.commit();
              ::_exit(0);
            }),
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


/// Forks a child that waits for `go()` and then runs `fn` (its exit code).
struct waiting_child {
  int pipefd[2] = {-1, -1};
  pid_t pid = -1;
  template <class F>
  explicit waiting_child(F fn) {
    if (::pipe(pipefd) != 0) return;
    pid = ::fork();
    if (pid == 0) {
      char c;
      ::_exit(::read(pipefd[0], &c, 1) == 1 ? fn() : 99);
    }
  }
  int go() {
    if (::write(pipefd[1], "g", 1) != 1) return -1;
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};


TEST_F(engine_fixture, WritableOpenerIsFirstEvenWhileAReadOnlyProcessReads) {
  // Both writers are forked before this process opens the file (an open storage's address
  // range is inherited by children, which then cannot open it again).
  waiting_child dying_writer([&] {  // commits, dies after the log sync, before applying
    tmf::storage<root> s(path.path());
    auto w = s.write();
    w->value = 31;
    for (auto& x : w->pages) x = 31;
    g_writes_left = 0;
    os::io_hook = &hook;
    w.commit();
    return 3;  // not reached
  });
  waiting_child recoverer([&] {  // must be first (the read-only process holds no open lock)
    tmf::storage<root> s(path.path());
    auto r = s.read();
    if (r->value != 31) return 1;
    for (auto x : r->pages)
      if (x != 31) return 2;
    // Full recovery (not just a replay of the pending record) restarts the log at the
    // data file's transaction: only it repairs what a power cut tore in earlier commits.
    int lfd = ::open(tmf_test::log_path(path.path()).c_str(), O_RDONLY);
    tmf::detail::log_header lh;
    tmf::detail::file_header h;
    int dfd = ::open(path.path().c_str(), O_RDONLY);
    bool ok = ::pread(lfd, &lh, sizeof lh, 0) == sizeof lh && ::pread(dfd, &h, sizeof h, 0) == sizeof h;
    ::close(lfd);
    ::close(dfd);
    return ok && lh.base_txn == h.txn ? 0 : 4;
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
  EXPECT_EQ(tmf_test::run_in_child([&]() -> int {
              tmf::storage<root> s(path);
              auto w = s.write();
              w->value = 40;
              for (auto& x : w->pages) x = 40;
              w.commit();
              ::_exit(0);  // no checkpoint: the log keeps the record
            }),
            0);
  {
    std::ofstream out(path.path(), std::ios::binary | std::ios::trunc);
    out.write(baseline.data(), static_cast<std::streamsize>(baseline.size()));
  }
  const auto data_before = tmf_test::read_bytes(path.path());
  const auto log_before = tmf_test::read_bytes(tmf_test::log_path(path.path()));
  // A writer process, forked before the reader opens (a child must not inherit an open storage).
  waiting_child writer([&] {
    tmf::storage<root> s(path);  // full recovery: the read-only process holds no open lock
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
