// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/detail/recovery.hpp and the commit outcomes around it: I/O errors at
// and after the commit point, injected through os::io_hook as exact schedules ("the next
// log sync fails, and so does the write that voids the record"). Each case checks what
// commit() reported against what a fresh process finds after a crash and a reopen.
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include "test_support.hpp"

namespace {

namespace os = tmf::detail::os;
using tmf::detail::page_size;

struct root {
  std::uint64_t value = 0;
  tmf::vector<std::uint64_t> pages;  // one word per page-sized stride
};

/// Fails chosen operations: after `skip` of them, the next `count` operations of kind `op`
/// on the log or the data file; with `after_first`, only once another rule has failed one.
struct rule {
  os::io_op op;
  bool on_log;
  int skip = 0;
  int count = 1;
  bool after_first = false;
};
std::vector<rule> g_rules;
std::uint64_t g_data_inode = 0;
int g_injected = 0;

/// The file's identity (inode; Windows: file index), through the OS layer on both systems.
std::uint64_t file_id(const os::file& f) {
  os::file_info fi;
  return os::stat_file(f, fi) ? 0 : fi.inode;
}

std::error_code hook(os::io_op op, const os::file& f, std::uint64_t, std::uint64_t, const void*) {
  const std::uint64_t id = file_id(f);
  if (id == 0) return {};
  const bool log = id != g_data_inode;
  for (rule& r : g_rules) {
    if (r.op != op || r.on_log != log || r.count == 0 || (r.after_first && g_injected == 0)) continue;
    if (r.skip > 0) {
      --r.skip;
      continue;
    }
    --r.count;
    ++g_injected;
    return std::make_error_code(std::errc::io_error);
  }
  return {};
}

struct recovery_fixture : ::testing::Test {
  tmf_test::scoped_path path;
  tmf::options opt;
  void SetUp() override {
    g_rules.clear();
    g_injected = 0;
    opt.checkpoint_bytes = 64 << 10;
    tmf::storage<root> s(path, opt);
    auto w = s.write();
    w->value = 1;
    w->pages.assign(8 * page_size / sizeof(std::uint64_t), 1);
    w.commit();
    os::file f;
    if (!os::open_file(path.path(), os::access::read_only, f)) g_data_inode = file_id(f);
  }
  void TearDown() override { os::io_hook = nullptr; }

  static void set(tmf::writer<root>& w, std::uint64_t v) {
    w->value = v;
    for (auto& x : w->pages) x = v;
  }

  /// Commits values 10, 11, ... until a commit throws, which must be errc::needs_reopen
  /// (true) or 30 commits passed (false). `last` is the last acknowledged value.
  static bool commit_until_needs_reopen(tmf::writer<root>& w, std::uint64_t& last) {
    for (std::uint64_t v = 10; v < 40; ++v) {
      try {
        set(w, v);
        w.commit();
        last = v;
      } catch (const tmf::error& e) {
        EXPECT_EQ(e.code(), tmf::errc::needs_reopen) << e.what();
        return true;
      }
    }
    return false;
  }

  /// In a fresh child: opens and audits the storage; `v` receives its value. Returns 0 if
  /// the state is uniform (every page word equals the value), 1 if it is half-applied.
  int state_in_child(std::uint64_t& v) {
    const tmf_test::child_path p = path.path();
    const tmf::options o = opt;
    int rc = tmf_test::run_in_child(tmf_test::by_value([=] {
      tmf::storage<root> s(p.path(), o);
      s.check();
      auto r = s.read();
      for (auto x : r->pages)
        if (x != r->value) return 200;  // half-applied
      return static_cast<int>(r->value);
    }));
    v = static_cast<std::uint64_t>(rc);
    return rc == 200 ? 1 : 0;
  }
};

// Case 4 of the I/O-error issue: the log sync fails, and so does the write that voids the
// record. commit() must not claim a rollback that might not hold: errc::commit_unknown,
// and after a reopen the outcome is one or the other, whole, the same every time.
TEST_F(recovery_fixture, SyncAndVoidBothFailingIsCommitUnknownAndTheReopenSettlesIt) {
  {
    tmf::storage<root> s(path, opt);
    auto w = s.write();
    set(w, 7);
    // The record's write succeeds, its sync fails, then the void (the next log write) fails.
    g_rules = {{os::io_op::sync, true}, {os::io_op::write, true, 0, 1, true}};
    os::io_hook = &hook;
    try {
      w.commit();
      ADD_FAILURE() << "commit returned although its log sync failed";
    } catch (const tmf::error& e) {
      EXPECT_EQ(e.code(), tmf::errc::commit_unknown) << e.what();
    }
    os::io_hook = nullptr;
    EXPECT_EQ(g_injected, 2);
    EXPECT_THROW(w.commit(), tmf::error) << "a storage with an unknown commit accepted another";
    try {
      (void)w.root();
      ADD_FAILURE() << "the writer stayed usable after commit_unknown";
    } catch (const tmf::error& e) {
      EXPECT_EQ(e.code(), tmf::errc::commit_unknown);
    }
  }
  std::uint64_t first = 0, second = 0;
  ASSERT_EQ(state_in_child(first), 0) << "half-applied state after commit_unknown";
  ASSERT_EQ(state_in_child(second), 0);
  EXPECT_TRUE(first == 1 || first == 7) << "state " << first;
  EXPECT_EQ(first, second) << "two opens settled the unknown commit differently";
}

// The log sync fails once; voiding works: a real rollback, and the writer stays usable.
TEST_F(recovery_fixture, FailedSyncWithADurableVoidIsARollbackThatHolds) {
  {
    tmf::storage<root> s(path, opt);
    auto w = s.write();
    set(w, 7);
    g_rules = {{os::io_op::sync, true}};
    os::io_hook = &hook;
    EXPECT_THROW(w.commit(), tmf::error);
    os::io_hook = nullptr;
    EXPECT_EQ(w->value, 1u) << "not rolled back";
    set(w, 8);
    w.commit();
  }
  std::uint64_t v = 0;
  ASSERT_EQ(state_in_child(v), 0);
  EXPECT_EQ(v, 8u);
}

// Case 3: after the commit point, a data-file write fails (every retry too). The commit is
// durable: commit() returns normally; later calls say to reopen; the reopen shows it.
TEST_F(recovery_fixture, ApplyFailureAfterTheCommitPointIsNotAFailedCommit) {
  {
    tmf::storage<root> s(path, opt);
    auto w = s.write();
    set(w, 9);
    g_rules = {{os::io_op::write, false, 0, 1000}};
    os::io_hook = &hook;
    EXPECT_NO_THROW(w.commit()) << "a durable commit was reported as failed";
    os::io_hook = nullptr;
    EXPECT_GT(g_injected, 0);
    try {
      w.commit();
      ADD_FAILURE() << "the storage stayed writable after an unrepaired apply";
    } catch (const tmf::error& e) {
      EXPECT_EQ(e.code(), tmf::errc::needs_reopen) << e.what();
    }
  }
  std::uint64_t v = 0;
  ASSERT_EQ(state_in_child(v), 0);
  EXPECT_EQ(v, 9u) << "the acknowledged commit was lost";
}

// A transient apply failure is retried: nothing is reported and the storage stays usable.
TEST_F(recovery_fixture, TransientApplyFailureIsRetried) {
  tmf::storage<root> s(path, opt);
  auto w = s.write();
  set(w, 4);
  g_rules = {{os::io_op::write, false}};
  os::io_hook = &hook;
  w.commit();
  os::io_hook = nullptr;
  EXPECT_EQ(g_injected, 1);
  set(w, 5);
  EXPECT_NO_THROW(w.commit());
}

// Case 2: the data file's sync at a checkpoint fails, and the re-apply of the log that
// follows cannot read it. No view may show an older state: the storage says to reopen, and
// the reopen shows the last acknowledged commit.
TEST_F(recovery_fixture, FailedReapplyAfterAFailedDataSyncNeedsAReopenAndLosesNothing) {
  std::uint64_t last = 0;
  {
    tmf::storage<root> s(path, opt);
    auto w = s.write();
    // The checkpoint's data sync fails; its re-apply cannot read the log (past the word it reads first).
    g_rules = {{os::io_op::sync, false}, {os::io_op::read, true, 1, 1000, true}};
    os::io_hook = &hook;
    EXPECT_TRUE(commit_until_needs_reopen(w, last)) << "the failed checkpoint went unnoticed";
    os::io_hook = nullptr;
  }
  std::uint64_t v = 0;
  ASSERT_EQ(state_in_child(v), 0);
  EXPECT_EQ(v, last) << "an acknowledged commit was lost";
}

// Case 1: the new log header's sync fails at a checkpoint (twice: the retry too). The data
// file is synced, so nothing is lost, but no record may follow a header in doubt.
TEST_F(recovery_fixture, LogHeaderInDoubtAtACheckpointStopsCommitsAndLosesNothing) {
  std::uint64_t last = 0;
  {
    tmf::storage<root> s(path, opt);
    auto w = s.write();
    // Log syncs: one per commit; the checkpoint's header sync follows its data-file sync.
    // Fail every log sync that directly follows a data-file sync: exactly the header's.
    os::io_hook = [](os::io_op op, const os::file& f, std::uint64_t, std::uint64_t, const void*) -> std::error_code {
      static bool after_data_sync = false;
      if (op != os::io_op::sync) return {};
      const std::uint64_t id = file_id(f);
      if (id == 0) return {};
      const bool log = id != g_data_inode;
      if (!log) {
        after_data_sync = true;
        return {};
      }
      if (after_data_sync) {  // the header's sync, then its retry
        ++g_injected;
        if (g_injected == 2) after_data_sync = false;
        return std::make_error_code(std::errc::io_error);
      }
      return {};
    };
    EXPECT_TRUE(commit_until_needs_reopen(w, last)) << "commits went on after a log header in doubt";
    os::io_hook = nullptr;
  }
  std::uint64_t v = 0;
  ASSERT_EQ(state_in_child(v), 0);
  EXPECT_EQ(v, last) << "an acknowledged commit was lost";
}

// After a clean close the log keeps one growth step, however much it held.
TEST_F(recovery_fixture, CleanCloseTruncatesTheLogToOneGrowthStep) {
  {
    tmf::options big = opt;
    big.checkpoint_bytes = std::size_t{64} << 20;
    tmf::storage<root> s(path, big);
    auto w = s.write();
    w->pages.resize(3 * (std::size_t{4} << 20) / sizeof(std::uint64_t));  // a 12 MiB record
    set(w, 3);
    w.commit();
  }
  std::error_code ec;
  const auto log_size = std::filesystem::file_size(tmf_test::log_path(path.path()), ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_LE(log_size, tmf::detail::log_growth_step) << "a cleanly closed log kept its space";
  std::uint64_t v = 0;
  ASSERT_EQ(state_in_child(v), 0);
  EXPECT_EQ(v, 3u);
}

}  // namespace
