// SPDX-License-Identifier: Apache-2.0 OR MIT
// Full disks and I/O errors with REAL limits (issue 3, item 3):
//  - a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes and fallocate beyond it fail
//    with EFBIG): growth beyond it is std::bad_alloc, a commit whose log record does not fit
//    fails with EFBIG and is rolled back, the writer stays usable, everything committed
//    before is intact, and once the limit is raised the same work commits;
//  - a small tmpfs filled up by another file (root only, in a private mount namespace;
//    skipped where mounting is not permitted): the same with ENOSPC, then the space is freed;
//  - fdatasync failures of the DATA file during a checkpoint (os::io_hook, since a real EIO
//    needs a failing device): the commit stays durable, the log is kept and re-applied, and
//    a crash afterwards loses nothing, even if the kernel dropped the unwritten pages.
//    Two of them guard bugs found this way and since fixed (disk-1, disk-2: see their comments).
// Failed LOG syncs and hook-injected write/allocate failures are in detail/engine_test.cpp.
// Every scenario runs in child processes (tmf_test::spawn_child: forked on POSIX, the test
// binary re-executed on Windows): limits, mounts and hooks never reach the runner. On Windows
// the file-size-limit and tmpfs cases are skipped (RLIMIT_FSIZE and mount namespaces are
// POSIX); the data-file sync failures, made by the I/O hook, run there too.
#include <tmf/detail/log.hpp>
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <thread>
#include <vector>

#if !defined(_WIN32)
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#endif

#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
namespace os = tmf::detail::os;
using tmf::detail::page_size;

struct root {
  std::uint64_t value = 0;
  tmf::vector<std::uint64_t> data;  // bulk: to dirty many pages and to grow the file
};

constexpr std::size_t words(std::size_t bytes) { return bytes / sizeof(std::uint64_t); }


constexpr int skip_code = 77;  // a child's "not permitted here"

unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

[[maybe_unused]] std::uint64_t bytes_of(const fs::path& p) {  // POSIX cases only
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<std::uint64_t>(n);
}

using tmf_test::die_here;

template <class T>
T read_struct(const fs::path& p, std::uint64_t offset) {
  T t{};
  std::ifstream in(p, std::ios::binary);
  if (!in.seekg(static_cast<std::streamoff>(offset)) || !in.read(reinterpret_cast<char*>(&t), sizeof t)) t = T{};
  return t;
}
tmf::detail::file_header data_header(const fs::path& p) { return read_struct<tmf::detail::file_header>(p, 0); }
tmf::detail::log_header log_header(const fs::path& p) {
  return read_struct<tmf::detail::log_header>(tmf_test::log_path(p), 0);
}

#if !defined(_WIN32)
/// Writes beyond the limit fail with EFBIG instead of killing the process.
void ignore_sigxfsz() { std::signal(SIGXFSZ, SIG_IGN); }

/// Sets the soft RLIMIT_FSIZE (the hard limit stays, so it can be raised again).
bool set_file_size_limit(rlim_t bytes) {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_FSIZE, &rl) != 0) return false;
  rl.rlim_cur = std::min(bytes, rl.rlim_max);
  return ::setrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur == bytes;
}
bool raise_file_size_limit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_FSIZE, &rl) != 0) return false;
  rl.rlim_cur = rl.rlim_max;
  return ::setrlimit(RLIMIT_FSIZE, &rl) == 0;
}

#endif

bool all_equal(const tmf::vector<std::uint64_t>& v, std::uint64_t x) {
  return std::all_of(v.begin(), v.end(), [x](std::uint64_t y) { return y == x; });
}

/// In a fresh child process: opens `path` (recovery runs if the last user crashed), audits
/// it and checks that value == `value` and data == `n` words all equal to `word`.
int verify_in_child(const fs::path& path, std::uint64_t value, std::size_t n, std::uint64_t word,
                    const tmf::options& o = {}) {
  return tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(path), value, n, word, o] {
    tmf::storage<root> s(p.path(), o);
    s.check();
    auto r = s.read();
    CHILD_CHECK(r->value == value, "value %llu, expected %llu", ull(r->value), ull(value));
    CHILD_CHECK(r->data.size() == n, "data has %zu words, expected %zu", r->data.size(), n);
    CHILD_CHECK(all_equal(r->data, word), "data words differ from %llu (half-applied or lost commit)", ull(word));
    return 0;
  }));
}

// -- RLIMIT_FSIZE ---------------------------------------------------------------------------

#if defined(_WIN32)
// Windows has no per-process file-size limit, and a full disk needs a small volume made for
// the test: these cases are POSIX only.
constexpr const char* no_limits = "needs RLIMIT_FSIZE or a tmpfs mounted in a private mount namespace (POSIX only)";
TEST(DiskFull, GrowthBeyondTheFileSizeLimitIsBadAllocAndTheWriterStaysUsable) { GTEST_SKIP() << no_limits; }
TEST(DiskFull, CommitWhoseLogRecordCrossesTheLimitFailsWithEfbigAndRollsBack) { GTEST_SKIP() << no_limits; }
TEST(DiskFull, AfterTheLimitIsRaisedTheSameCommitSucceeds) { GTEST_SKIP() << no_limits; }
TEST(DiskFull, FullTmpfsGivesBadAllocAndEnospcThenWorkContinuesWhenSpaceIsFreed) { GTEST_SKIP() << no_limits; }
#else

TEST(DiskFull, GrowthBeyondTheFileSizeLimitIsBadAllocAndTheWriterStaysUsable) {
  tmf_test::scoped_path path;
  constexpr std::size_t initial = 512 << 10, smaller = 768 << 10, huge = 16 << 20;
  const int rc = tmf_test::run_in_child([&] {
    ignore_sigxfsz();
    tmf::storage<root> s(path);
    auto w = s.write();
    w->value = 1;
    w->data.assign(words(initial), 1);
    w.commit();
    const std::uint64_t before = bytes_of(path);
    // Writes to the log stay below the limit; the data file has 1 MiB left.
    const std::uint64_t limit = std::max(before, bytes_of(path.log())) + (1 << 20);
    CHILD_CHECK(set_file_size_limit(limit), "setrlimit(RLIMIT_FSIZE, %llu) failed", ull(limit));

    w->value = 5;  // a change made before the failing allocation
    try {
      w->data.assign(words(huge), 5);
      CHILD_CHECK(false, "a %zu-byte allocation succeeded beyond a %llu-byte file-size limit", huge,
                  ull(limit));
    } catch (const std::bad_alloc&) {
    }
    CHILD_CHECK(bytes_of(path) <= limit, "the data file (%llu bytes) went beyond the limit",
                ull(bytes_of(path)));
    CHILD_CHECK(w->data.size() == words(initial) && all_equal(w->data, 1),
                "the failed allocation damaged the committed data");
    CHILD_CHECK(w->value == 5, "bad_alloc lost the transaction's earlier change");
    s.check();
    w.commit();  // the transaction goes on after bad_alloc: its earlier change commits

    // A smaller allocation, which fits in the space left, works.
    w->value = 2;
    w->data.assign(words(smaller), 2);
    w.commit();
    CHILD_CHECK(bytes_of(path) <= limit, "the data file went beyond the limit");
    CHILD_CHECK(bytes_of(path) > before, "the smaller allocation should have grown the file");
    w.rollback();
    CHILD_CHECK(w->value == 2 && all_equal(w->data, 2), "the committed state is not what was committed");
    s.check();
    return 0;  // closes (and checkpoints) under the limit
  });
  ASSERT_EQ(rc, 0) << "growth beyond the file-size limit (see the child's message above)";
  EXPECT_EQ(verify_in_child(path, 2, words(smaller), 2), 0) << "a fresh process does not see the last commit";
}

/// Commits 2 MiB, then sets the file-size limit just above the log (whose preallocated space
/// cannot hold a rewrite of those 2 MiB) and tries to rewrite them: the commit must fail
/// with EFBIG and roll back, leaving the data file byte-for-byte as it was. Then either
/// (raise == false) commits a small change and crashes, or (raise == true) raises the
/// limit, commits the same big rewrite and closes cleanly.
int commit_beyond_the_limit(const fs::path& path, bool raise) {
  ignore_sigxfsz();
  constexpr std::size_t bulk = 2 << 20;
  tmf::storage<root> s(path);
  auto w = s.write();
  w->value = 1;
  w->data.assign(words(bulk), 1);
  w.commit();

  const std::uint64_t data_bytes = bytes_of(path), log_bytes = bytes_of(tmf_test::log_path(path));
  const tmf::detail::file_header h = data_header(path);
  CHILD_CHECK(log_bytes >= data_bytes, "precondition: the log (%llu bytes) is smaller than the data file (%llu)",
              ull(log_bytes), ull(data_bytes));
  CHILD_CHECK(h.log_end + bulk > log_bytes, "precondition: a %zu-byte record fits after log offset %llu", bulk,
              ull(h.log_end));
  const std::uint64_t limit = log_bytes + page_size;
  CHILD_CHECK(set_file_size_limit(limit), "setrlimit(RLIMIT_FSIZE, %llu) failed", ull(limit));
  const std::vector<char> committed = tmf_test::read_bytes(path);

  w->value = 2;
  std::fill(w->data.begin(), w->data.end(), 2);
  try {
    w.commit();
    CHILD_CHECK(false, "a commit whose log record crosses the file-size limit succeeded");
  } catch (const tmf::error& e) {
    CHILD_CHECK(e.code() == std::errc::file_too_large, "the failed commit threw '%s', expected EFBIG", e.what());
  }
  CHILD_CHECK(w->value == 1 && all_equal(w->data, 1), "the failed commit was not rolled back");
  CHILD_CHECK(s.stats().rollbacks == 1, "rollbacks = %llu, expected 1 (the failed commit)",
              ull(s.stats().rollbacks));
  CHILD_CHECK(tmf_test::read_bytes(path) == committed, "the failed commit modified the data file");
  CHILD_CHECK(bytes_of(tmf_test::log_path(path)) <= limit, "the log went beyond the limit");
  s.check();

  if (!raise) {
    w->value = 3;  // a small commit still fits in the log
    w.commit();
    ::_exit(0);  // crash: the next open recovers from the log
  }
  CHILD_CHECK(raise_file_size_limit(), "cannot raise RLIMIT_FSIZE again");
  w->value = 2;
  std::fill(w->data.begin(), w->data.end(), 2);
  w.commit();
  CHILD_CHECK(bytes_of(tmf_test::log_path(path)) > limit, "the log did not grow once the limit was raised");
  return 0;
}

TEST(DiskFull, CommitWhoseLogRecordCrossesTheLimitFailsWithEfbigAndRollsBack) {
  tmf_test::scoped_path path;
  const int rc = tmf_test::run_in_child([&] { return commit_beyond_the_limit(path, false); });
  ASSERT_EQ(rc, 0) << "a commit beyond the file-size limit (see the child's message above)";
  EXPECT_EQ(verify_in_child(path, 3, words(2 << 20), 1), 0)
      << "after a crash, the reopened file is not exactly the committed state (value 3, data 1)";
}

TEST(DiskFull, AfterTheLimitIsRaisedTheSameCommitSucceeds) {
  tmf_test::scoped_path path;
  const int rc = tmf_test::run_in_child([&] { return commit_beyond_the_limit(path, true); });
  ASSERT_EQ(rc, 0) << "work after the limit was raised (see the child's message above)";
  EXPECT_EQ(verify_in_child(path, 2, words(2 << 20), 2), 0) << "the commit made after raising the limit is lost";
}

// -- a full tmpfs ----------------------------------------------------------------------------


/// Mounts an 8 MiB tmpfs on `dir` in a private mount namespace (nothing leaks out of this
/// process). False where that is not permitted (not root, no CAP_SYS_ADMIN, seccomp...).
bool mount_small_tmpfs(const fs::path& dir) {
  if (::unshare(CLONE_NEWNS) != 0) return false;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  return ::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=0700") == 0;
}

TEST(DiskFull, FullTmpfsGivesBadAllocAndEnospcThenWorkContinuesWhenSpaceIsFreed) {
  const fs::path dir = tmf_test::test_path("mnt");
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const fs::path path = dir / "s.tmf", filler = dir / "filler";
  constexpr std::size_t bulk = 1 << 20, grown = 3 << 19;  // 8 MiB hold the file, its log and both
  tmf::options o;
  o.checkpoint_bytes = 256 << 10;  // a checkpoint gives the log's preallocated space back

  const int rc = tmf_test::run_in_child([&] {
    if (!mount_small_tmpfs(dir)) return skip_code;
    // Each step in its own process: a storage is opened once per process.
    int step = tmf_test::run_in_child([&] {
      tmf::storage<root> s(path, o);
      auto w = s.write();
      w->value = 1;
      w->data.assign(words(bulk), 1);
      w.commit();  // 1 MiB of log: checkpoints, and the log shrinks back
      const std::uint64_t log_bytes = bytes_of(tmf_test::log_path(path));
      CHILD_CHECK(log_bytes < bulk, "precondition: the log (%llu bytes) was not shrunk by the checkpoint",
                  ull(log_bytes));
      const std::uint64_t filled = tmf_test::fill_up(filler);
      CHILD_CHECK(filled > 0, "cannot fill the tmpfs");
      const std::vector<char> committed = tmf_test::read_bytes(path);

      w->value = 7;
      try {
        w->data.reserve(words(4 << 20));
        CHILD_CHECK(false, "growth succeeded on a full file system");
      } catch (const std::bad_alloc&) {
      }
      CHILD_CHECK(w->data.size() == words(bulk) && all_equal(w->data, 1), "bad_alloc damaged the data");
      w.rollback();

      w->value = 2;
      std::fill(w->data.begin(), w->data.end(), 2);
      try {
        w.commit();
        CHILD_CHECK(false, "a 1 MiB commit succeeded on a full file system");
      } catch (const tmf::error& e) {
        CHILD_CHECK(e.code() == std::errc::no_space_on_device, "the failed commit threw '%s', expected ENOSPC",
                    e.what());
      }
      CHILD_CHECK(w->value == 1 && all_equal(w->data, 1), "the failed commit was not rolled back");
      CHILD_CHECK(tmf_test::read_bytes(path) == committed, "the failed commit modified the data file");
      s.check();
      w->value = 3;  // a small commit fits in the log's space
      w.commit();
      return 0;  // clean close on the full file system
    });
    CHILD_CHECK(step == 0, "step 1 (failures on the full tmpfs) failed: %d", step);
    step = verify_in_child(path, 3, words(bulk), 1, o);
    CHILD_CHECK(step == 0, "step 2: reopening on the full tmpfs does not show value 3, data 1: %d", step);

    CHILD_CHECK(::unlink(filler.c_str()) == 0, "cannot remove the filler");
    step = tmf_test::run_in_child([&] {
      tmf::storage<root> s(path, o);
      auto w = s.write();
      w->value = 4;
      std::fill(w->data.begin(), w->data.end(), 4);
      w.commit();  // the commit that failed before
      w->value = 5;
      w->data.assign(words(grown), 5);  // growth, which failed before
      w.commit();
      s.check();
      return 0;
    });
    CHILD_CHECK(step == 0, "step 3 (work after freeing space) failed: %d", step);
    step = verify_in_child(path, 5, words(grown), 5, o);
    CHILD_CHECK(step == 0, "step 4: the commits made after freeing space are not there: %d", step);
    return 0;
  });
  fs::remove_all(dir, ec);  // the mount went away with the child's namespace
  if (rc == skip_code) GTEST_SKIP() << "cannot mount a tmpfs in a private mount namespace here (needs root)";
  EXPECT_EQ(rc, 0) << "full tmpfs scenario (see the child's message above)";
}
#endif  // !_WIN32

// -- fdatasync failures of the data file during a checkpoint ---------------------------------

struct sync_hook_state {
  os::file_info data;  ///< the data file's identity
  int fail_data_syncs = 0;  ///< data-file syncs still to fail with EIO
  int failed_data_syncs = 0;
  int replay_writes = 0;  ///< data-file writes from outside the mapping: log replays
  const unsigned char* map_begin = nullptr;
  const unsigned char* map_end = nullptr;
  /// If not empty, a failed data sync also writes these bytes over the data file: the kernel
  /// dropped the pages it could not write, and the file reads as it was on disk.
  std::vector<char> on_disk;
  int pause_at_replay_write = -1;  ///< at this replay write, signal "p" on `pause` and wait for its "g"
  const tmf_test::handshake* pause = nullptr;
};
sync_hook_state g_sync;

bool is_data_file(const os::file& f) {
  os::file_info fi;
  return !os::stat_file(f, fi) && fi.inode == g_sync.data.inode && fi.device == g_sync.data.device;
}

std::error_code sync_hook(os::io_op op, const os::file& f, std::uint64_t, std::uint64_t, const void* data) {
  if (!is_data_file(f)) return {};
  if (op == os::io_op::sync && g_sync.fail_data_syncs > 0) {
    --g_sync.fail_data_syncs;
    ++g_sync.failed_data_syncs;
    if (!g_sync.on_disk.empty()) {
      os::io_hook = nullptr;  // this write is the test's, not a replay
      const std::error_code ec = os::pwrite_all(f, g_sync.on_disk.data(), g_sync.on_disk.size(), 0);
      os::io_hook = &sync_hook;
      if (ec) die_here(90);
    }
    return std::make_error_code(std::errc::io_error);
  }
  if (op == os::io_op::write) {
    const auto* p = static_cast<const unsigned char*>(data);
    if (p < g_sync.map_begin || p >= g_sync.map_end) {  // a page read back from the log
      if (g_sync.replay_writes++ == g_sync.pause_at_replay_write) {
        g_sync.pause->signal("p");
        if (!g_sync.pause->wait("g")) die_here(91);
      }
    }
  }
  return {};
}

constexpr std::size_t sync_pages = 8;

tmf::options every_commit_checkpoints() {
  tmf::options o;
  o.checkpoint_bytes = page_size;  // every commit's record is larger: every commit checkpoints
  return o;
}

void set_all(tmf::writer<root>& w, std::uint64_t v) {
  w->value = v;
  std::fill(w->data.begin(), w->data.end(), v);
}

/// Opens, commits value 1 (checkpointed: the data file is synced) and arms the hook.
/// Returns the log's base transaction after that checkpoint.
std::uint64_t arm_sync_hook(tmf::storage<root>& s, tmf::writer<root>& w, const fs::path& path, bool drop_pages) {
  w->value = 1;
  w->data.assign(words(sync_pages * page_size), 1);
  w.commit();
  g_sync = {};
  g_sync.data = tmf_test::file_identity(path);
  g_sync.map_begin = static_cast<const unsigned char*>(s.address());
  g_sync.map_end = g_sync.map_begin + tmf::options{}.max_size;  // the reservation
  if (drop_pages) g_sync.on_disk = tmf_test::read_bytes(path);  // synced by the checkpoint
  g_sync.fail_data_syncs = 1;
  os::io_hook = &sync_hook;
  return log_header(path).base_txn;
}

TEST(DataSyncFailure, CheckpointKeepsTheLogAndTheNextCheckpointReappliesIt) {
  tmf_test::scoped_path path;
  const tmf::options o = every_commit_checkpoints();
  const int rc = tmf_test::run_in_child(tmf_test::by_value([cp = tmf_test::child_path(path.path()), o] {
    const fs::path path = cp.path();
    const fs::path log = tmf_test::log_path(path);
    tmf::storage<root> s(path, o);
    auto w = s.write();
    const std::uint64_t base = arm_sync_hook(s, w, path, false);
    CHILD_CHECK(base == data_header(path).txn, "precondition: value 1 was not checkpointed");

    set_all(w, 2);
    w.commit();  // its checkpoint's data sync fails: the commit is still durable (in the log)
    CHILD_CHECK(g_sync.failed_data_syncs == 1, "the commit did not checkpoint (no data-file sync)");
    CHILD_CHECK(log_header(path).base_txn == base,
                "the log was restarted (base %llu -> %llu) although the data file's sync failed",
                ull(base), ull(log_header(path).base_txn));
    const auto rh = read_struct<tmf::detail::record_header>(log, tmf::detail::log_start);
    CHILD_CHECK(std::memcmp(rh.magic, tmf::detail::record_magic, sizeof rh.magic) == 0 && rh.txn == base + 1,
                "the failed checkpoint's record (txn %llu) is no longer first in the log", ull(base + 1));
    CHILD_CHECK(w->value == 2 && all_equal(w->data, 2), "the writer does not see its commit");

    set_all(w, 3);
    w.commit();  // the next checkpoint re-applies the kept records, syncs, restarts the log
    CHILD_CHECK(g_sync.replay_writes >= static_cast<int>(sync_pages),
                "the next checkpoint did not re-apply the log (%d replayed page writes)",
                g_sync.replay_writes);
    CHILD_CHECK(log_header(path).base_txn == base + 2,
                "the log was not restarted after the successful checkpoint (base %llu, expected %llu)",
                ull(log_header(path).base_txn), ull(base + 2));
    os::io_hook = nullptr;
    die_here(0);  // crash
  }));
  ASSERT_EQ(rc, 0) << "data-file sync failure during a checkpoint (see the child's message above)";
  EXPECT_EQ(verify_in_child(path, 3, words(sync_pages * page_size), 3, o), 0)
      << "after the failed and the successful checkpoint and a crash, the last commit is not there";
}

TEST(DataSyncFailure, CrashAfterAFailedCheckpointThatDroppedThePagesRecoversFromTheLog) {
  tmf_test::scoped_path path;
  const tmf::options o = every_commit_checkpoints();
  const int rc = tmf_test::run_in_child(tmf_test::by_value([cp = tmf_test::child_path(path.path()), o] {
    const fs::path path = cp.path();
    tmf::storage<root> s(path, o);
    auto w = s.write();
    arm_sync_hook(s, w, path, true);
    set_all(w, 2);
    w.commit();  // returned: durable, although the data file lost its pages
    CHILD_CHECK(g_sync.failed_data_syncs == 1, "the commit did not checkpoint (no data-file sync)");
    os::io_hook = nullptr;
    die_here(0);  // crash before anything re-applies the log
  }));
  ASSERT_EQ(rc, 0) << "data-file sync failure during a checkpoint (see the child's message above)";
  EXPECT_EQ(verify_in_child(path, 2, words(sync_pages * page_size), 2, o), 0)
      << "a commit that returned was lost: the failed checkpoint's data was not recovered from the log";
}

TEST(DataSyncFailure, FailedCheckpointAtTheLastCloseKeepsTheLogForTheNextOpen) {
  tmf_test::scoped_path path;
  const int rc = tmf_test::run_in_child(tmf_test::by_value([cp = tmf_test::child_path(path.path())] {
    const fs::path path = cp.path();
    std::uint64_t base = 0;
    {
      tmf::storage<root> s(path);  // default checkpoint_bytes: only the close checkpoints
      {
        auto w = s.write();
        base = arm_sync_hook(s, w, path, false);  // this commit is not checkpointed...
        g_sync.fail_data_syncs = 0;
        set_all(w, 2);
        w.commit();
      }
      g_sync.on_disk = tmf_test::read_bytes(path);  // ... so model "synced" as value 2 on disk
      {
        auto w = s.write();
        set_all(w, 3);
        w.commit();
      }
      g_sync.fail_data_syncs = 1;  // the last close's checkpoint fails and drops commit 3's pages
    }
    os::io_hook = nullptr;
    CHILD_CHECK(g_sync.failed_data_syncs == 1, "the last close did not sync the data file");
    CHILD_CHECK(log_header(path).base_txn == base,
                "the log was restarted (base %llu -> %llu) although the data file's sync failed",
                ull(base), ull(log_header(path).base_txn));
    return 0;
  }));
  ASSERT_EQ(rc, 0) << "(see the child's message above)";
  EXPECT_EQ(verify_in_child(path, 3, words(sync_pages * page_size), 3), 0)
      << "the commit whose pages the failed close-time checkpoint dropped was not recovered from the log";
}

// Bug disk-2 (fixed): after a failed data sync the engine kept using the data file, whose
// pages may be gone, until the next checkpoint; the writer's next transaction copied a stale
// page (the root page, here shared by `value` and the start of `data`) and its commit wrote
// the stale words back over commit 2's. A failed data sync is now repaired from the log
// before anything reads the data file again; this case fails if it is not.
TEST(DataSyncFailure, PagesDroppedByAFailedCheckpointAreRestoredByTheNextOne) {
  tmf_test::scoped_path path;
  const tmf::options o = every_commit_checkpoints();
  for (const bool crash : {false, true}) {
    SCOPED_TRACE(crash ? "then a crash" : "then a clean close");
    const int rc = tmf_test::run_in_child(tmf_test::by_value([cp = tmf_test::child_path(path.path()), o, crash] {
      const fs::path path = cp.path();
      tmf::storage<root> s(path, o);
      auto w = s.write();
      arm_sync_hook(s, w, path, true);
      set_all(w, 2);
      w.commit();
      w->value = 3;  // the data pages of commit 2 are only in the log now
      w.commit();    // its checkpoint re-applies commit 2, then syncs
      CHILD_CHECK(g_sync.replay_writes > 0, "the next checkpoint did not re-apply the log");
      os::io_hook = nullptr;
      CHILD_CHECK(w->value == 3 && all_equal(w->data, 2),
                  "after the re-applying checkpoint the writer sees value %llu, data[0] %llu",
                  ull(w->value), ull(w->data.front()));
      if (crash) die_here(0);
      return 0;
    }));
    ASSERT_EQ(rc, 0) << "(see the child's message above)";
    EXPECT_EQ(verify_in_child(path, 3, words(sync_pages * page_size), 2, o), 0)
        << "the pages of a commit whose checkpoint failed were not restored from the log";
    tmf_test::remove_storage(path);
  }
}

// Bug disk-1 (fixed): checkpoint() re-applied the kept log records (oldest first) without the
// apply lock, so a reader in another process could see pages of an OLDER transaction mixed
// with the current ones. Fails if the re-apply does not take the apply lock.
TEST(DataSyncFailure, ReapplyingTheLogIsInvisibleToReadersInOtherProcesses) {
  tmf_test::scoped_path path;
  const tmf::options o = every_commit_checkpoints();
  {
    tmf::storage<root> s(path, o);
    auto w = s.write();
    set_all(w, 0);
    w->data.assign(words(sync_pages * page_size), 0);
    w.commit();
  }
  const tmf_test::handshake h(path.path());
  // The writer, started before this process opens the storage.
  const auto writer = tmf_test::spawn_child(tmf_test::by_value([cp = tmf_test::child_path(path.path()), o, h] {
    const fs::path path = cp.path();
    int rc = 0;
    try {
      tmf::storage<root> s(path, o);
      auto w = s.write();
      arm_sync_hook(s, w, path, false);
      g_sync.pause = &h;
      g_sync.pause_at_replay_write = 1;  // some pages of commit 2 rewritten, header still 3's
      set_all(w, 2);
      w.commit();  // checkpoint fails: the log is kept
      set_all(w, 3);
      w.commit();  // checkpoint re-applies commits 2 and 3, pausing while a reader looks
      os::io_hook = nullptr;
      if (g_sync.replay_writes <= 1) rc = 2;  // the pause never happened
    } catch (const std::exception& e) {
      std::fprintf(stderr, "writer: %s\n", e.what());
      rc = 3;
    }
    h.signal("x");  // if the pause never happened, release the reader
    return rc;
  }));
  // The reader: this process.
  std::string seen;
  {
    tmf::storage<root> s(path, o);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    bool paused = false, ended = false;
    while (!(paused = h.wait("p", std::chrono::milliseconds(0))) && !(ended = h.wait("x", std::chrono::milliseconds(0))) &&
           std::chrono::steady_clock::now() < end)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(paused || ended) << "no word from the writer in 60 s";
    if (paused) {
      // try_read: a re-apply done right holds the apply lock, and then the reader must be
      // kept out (read() would wait for the paused writer forever).
      if (auto r = s.try_read()) {
        std::size_t old_words = 0;
        for (auto x : (*r)->data) old_words += x != (*r)->value;
        if ((*r)->value != 3 || old_words != 0)
          seen = "value " + std::to_string((*r)->value) + " with " + std::to_string(old_words) + " of " +
                 std::to_string((*r)->data.size()) + " data words from another transaction";
      }
      h.signal("g");
    }
    const int rc = tmf_test::wait_child(writer);
    ASSERT_EQ(rc, 0) << "writer process exit code " << rc;
  }
  h.clear();
  EXPECT_EQ(seen, "") << "a reader in another process, while a checkpoint re-applied the log after a failed "
                         "data sync, saw a state that was never committed (bug disk-1)";
  EXPECT_EQ(verify_in_child(path, 3, words(sync_pages * page_size), 3, o), 0);
}

}  // namespace
