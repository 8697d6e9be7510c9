// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of detail/readers.hpp: the reader table in the lock file `<path>-lock`, and read
// transactions that make no system call.
//  - the table: created with the storage; garbage, truncated and empty lock files rebuilt by
//    the first opener; a table damaged, or a lock file deleted, while another process uses
//    it refused with errc::corrupted; more processes than blocks: errc::too_many_processes;
//  - a read transaction makes no system call (a seccomp filter kills the child otherwise);
//  - a reader of another process keeps its snapshot while a commit waits for it, with the
//    table and without (a read-only process that may not write the lock file);
//  - a reader process killed inside (or outside) a read transaction does not stall the
//    next commit, and its block is cleared; a committer killed in the middle of its apply
//    leaves a raised pending word that readers clear before they repair the file.
// Processes talk through a page of a file that each of them maps shared (`board`). Waits that must end are bounded
// by a watchdog that names what stalled.

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if !defined(_WIN32)
#include <signal.h>
#include <unistd.h>
#endif

#if defined(__linux__)
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#include "shared_object.hpp"
#include "test_support.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TMF_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TMF_TEST_SANITIZED 1
#endif
#endif

namespace {

namespace fs = std::filesystem;
namespace os = tmf::detail::os;
using tmf::detail::reader_blocks;
using tmf::detail::reader_lane;
using tmf::detail::reader_table;
using tmf::detail::reader_table_size;
using tmf_test::scoped_path;
using tmf_test::spawn_child;
using tmf_test::wait_child;

struct rt_root {
  std::uint64_t a = 0;  // invariant: a == b in every committed state
  std::uint64_t b = 0;
};

fs::path lock_of(const fs::path& p) { return tmf_test::lock_path(p); }

/// A page shared with the child processes: stage numbers to wait for.
struct board {
  std::atomic<int> stage{0};
  std::atomic<int> child_stage{0};
  std::atomic<std::uint64_t> seen{0};
};

using shared_board = tmf_test::shared_object<board>;

using child_id = decltype(spawn_child(tmf_test::by_value([] { return 0; })));

/// Ends this process as kill_child ends a child (SIGKILL; Windows: TerminateProcess, 137).
[[noreturn]] void kill_self() {
#if defined(_WIN32)
  ::TerminateProcess(::GetCurrentProcess(), tmf_test::killed_status);
#else
  ::kill(::getpid(), SIGKILL);
#endif
  std::abort();
}

/// Spins (sleeping) until `pred` holds; false after `seconds`.
template <class Pred>
bool wait_until(Pred pred, int seconds = 30) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

/// Aborts the test process, naming `what`, unless disarmed within `seconds`.
class watchdog {
 public:
  watchdog(std::string what, int seconds) : m_what(std::move(what)) {
    m_thread = std::thread([this, seconds] {
      if (!wait_until([this] { return m_done.load(); }, seconds)) {
        std::fprintf(stderr, "watchdog: %s did not finish within %d s\n", m_what.c_str(), seconds);
        std::abort();
      }
    });
  }
  ~watchdog() {
    m_done = true;
    m_thread.join();
  }

 private:
  std::string m_what;
  std::atomic<bool> m_done{false};
  std::thread m_thread;
};

void create(const fs::path& p) {
  tmf::storage<rt_root> s(p, tmf::options{.sync = tmf::durability::no_sync});
  auto w = s.write();
  w->a = w->b = 1;
  w.commit();
}

/// The sum of every lane count in the lock file at `p`.
std::uint64_t lanes_in_use(const fs::path& lock) {
  const std::vector<char> bytes = tmf_test::read_bytes(lock);
  if (bytes.size() != reader_table_size) return ~std::uint64_t{0};
  std::uint64_t sum = 0;
  for (std::size_t off = tmf::detail::page_size; off < bytes.size(); off += sizeof(reader_lane)) {
    std::uint32_t c;
    std::memcpy(&c, bytes.data() + off, sizeof c);
    sum += c;
  }
  return sum;
}

TEST(ReaderTable, CreatedBesideTheStorage) {
  scoped_path p;
  fs::remove(lock_of(p));
  create(p);
  ASSERT_TRUE(fs::exists(lock_of(p))) << "no lock file beside the storage";
  EXPECT_EQ(fs::file_size(lock_of(p)), reader_table_size);
  EXPECT_EQ(lanes_in_use(lock_of(p)), 0u) << "a closed storage left lanes in use";
}

TEST(ReaderTable, GarbageTruncatedOrEmptyLockFileIsRebuiltByTheFirstOpener) {
  for (const std::size_t size : {std::size_t{0}, std::size_t{100}, reader_table_size, std::size_t{3 * reader_table_size}}) {
    SCOPED_TRACE("lock file of " + std::to_string(size) + " garbage bytes");
    scoped_path p;
    create(p);
    {
      std::ofstream out(lock_of(p), std::ios::binary | std::ios::trunc);
      for (std::size_t i = 0; i < size; ++i) out.put(static_cast<char>(0xA5 ^ (i * 7)));
    }
    {
      tmf::storage<rt_root> s(p);
      auto w = s.write();
      w->a = w->b = 2;
      w.commit();
      EXPECT_EQ(fs::file_size(lock_of(p)), reader_table_size);
    }
    // The rebuilt table kept none of the garbage: past its header page, the lanes are zeros.
    const std::vector<char> table = tmf_test::read_bytes(lock_of(p));
    ASSERT_EQ(table.size(), reader_table_size);
    const auto garbage = std::find_if(table.begin() + tmf::detail::page_size, table.end(), [](char c) { return c != 0; });
    EXPECT_EQ(garbage, table.end()) << "old bytes survived the rebuild at offset " << (garbage - table.begin());
    // Another process trusts the rebuilt table.
    const tmf_test::child_path cp = p.path();
    EXPECT_EQ(tmf_test::run_in_child(tmf_test::by_value([cp] {
                tmf::storage<rt_root> other(cp.path());
                return other.read()->b == 2 ? 0 : 1;
              })),
              0);
  }
}

/// A child that opens the storage, reports stage 1, and waits for stage 2; then commits
/// once (its table still works) and exits 0.
child_id holder(const fs::path& path, const shared_board& sb) {
  const tmf_test::child_path p = path, bp = sb.path();
  return spawn_child(tmf_test::by_value([p, bp] {
    board& b = tmf_test::attach_shared<board>(bp);
    tmf::storage<rt_root> s(p.path());
    b.child_stage = 1;
    if (!wait_until([&] { return b.stage.load() >= 2; })) return 2;
    auto w = s.write();
    w->a += 1;
    w->b += 1;
    w.commit();
    return 0;
  }));
}

TEST(ReaderTable, DamagedWhileInUseIsRefused) {
  scoped_path p;
  create(p);
  shared_board b;
  const child_id child = holder(p, b);
  ASSERT_TRUE(wait_until([&] { return b->child_stage.load() == 1; })) << "the holder did not open the storage";
  {
    std::fstream f(lock_of(p), std::ios::binary | std::ios::in | std::ios::out);
    f.write("garbage!garbage!", 16);
  }
  try {
    tmf::storage<rt_root> s(p);
    ADD_FAILURE() << "a damaged reader table in use was trusted";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::corrupted) << e.what();
    EXPECT_NE(std::string(e.what()).find("reader table"), std::string::npos) << e.what();
  }
  b->stage = 2;
  EXPECT_EQ(wait_child(child), 0) << "the holder could not commit";
  // Alone again: the next opener rebuilds the table.
  tmf::storage<rt_root> s(p);
  EXPECT_EQ(s.read()->a, 2u);
}

TEST(ReaderTable, LockFileDeletedWhileOpenIsRefusedUntilEveryoneCloses) {
#if defined(_WIN32)
  // Windows keeps the name of a file deleted while open until its last handle closes
  // (delete pending): the lock file in use cannot be replaced under its users.
  GTEST_SKIP() << "an open file's name stays until it is closed on Windows (README, Windows)";
#endif
  scoped_path p;
  create(p);
  shared_board b;
  const child_id child = holder(p, b);
  ASSERT_TRUE(wait_until([&] { return b->child_stage.load() == 1; })) << "the holder did not open the storage";
  fs::remove(lock_of(p));
  try {
    tmf::storage<rt_root> s(p);
    ADD_FAILURE() << "opened with a new reader table while another process uses the deleted one";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::corrupted) << e.what();
    EXPECT_NE(std::string(e.what()).find("deleted or replaced"), std::string::npos) << e.what();
  }
  b->stage = 2;
  EXPECT_EQ(wait_child(child), 0) << "the holder could not commit with its deleted lock file";
  tmf::storage<rt_root> s(p);
  EXPECT_EQ(s.read()->a, 2u);
}

TEST(ReaderTable, MoreOpenersThanBlocksGetTooManyProcesses) {
  // Each reader_table has its own open file description, so its byte locks conflict with
  // the others' exactly as another process's would.
  scoped_path p;
  create(p);
  os::file data;
  ASSERT_FALSE(os::open_file(p.path(), os::access::read_write, data));
  tmf::detail::file_header h;
  const std::vector<char> bytes = tmf_test::read_bytes(p);
  ASSERT_GE(bytes.size(), sizeof h);
  std::memcpy(static_cast<void*>(&h), bytes.data(), sizeof h);
  const std::uint64_t id = h.file_id;
  std::vector<std::unique_ptr<reader_table>> tables;
  for (std::size_t i = 0; i < reader_blocks; ++i) {
    tables.push_back(std::make_unique<reader_table>());
    ASSERT_TRUE(tables.back()->open(lock_of(p), data, id, true, p.path().string())) << "opener " << i;
  }
  try {
    tmf::storage<rt_root> s(p);
    ADD_FAILURE() << "opened with every block of the reader table taken";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::too_many_processes) << e.what();
  }
  tables.pop_back();
  tmf::storage<rt_root> s(p);
  EXPECT_EQ(s.read()->a, 1u);
}

#if defined(__linux__) && !defined(TMF_TEST_SANITIZED)
TEST(ReaderLanes, ReadTransactionMakesNoSystemCall) {
  scoped_path p;
  create(p);
  const int rc = tmf_test::run_in_child([&] {
    tmf::storage<rt_root> s(p);
    std::uint64_t sum = 0;
    for (int i = 0; i < 10; ++i) sum += s.read()->a;  // first-use initialisation
    // From here on every system call but exit_group kills the process with SIGSYS.
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog prog = {static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 3;
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) return 4;
    for (int i = 0; i < 10000; ++i) {
      auto r = s.read();
      sum += r->a + r->b;
    }
    ::syscall(SYS_exit_group, sum == 10 + 20000 ? 0 : 1);
    return 5;
  });
  EXPECT_NE(rc, 128 + SIGSYS) << "a read transaction made a system call";
  EXPECT_EQ(rc, 0);
}
#endif

/// A child opens the storage (read-only, without a reader table if `no_table`), waits for
/// stage 1 (the parent has opened it: a first opener's recovery would wait for the reader),
/// reads `a` in a read transaction, reports stage 1, waits for stage 2 (the parent's commit
/// is then under way), and reads again in the same transaction: both must be equal.
child_id snapshot_reader(const fs::path& path, const shared_board& sb, bool read_only, bool no_table) {
  const tmf_test::child_path p = path, bp = sb.path();
  return spawn_child(tmf_test::by_value([p, bp, read_only, no_table] {
    board& b = tmf_test::attach_shared<board>(bp);
    if (no_table) tmf_test::set_env("TMF_TESTING_NO_READER_TABLE", "1");
    tmf::options o;
    if (read_only) o.mode = tmf::open_mode::read_only;
    tmf::storage<rt_root> s(p.path(), o);
    if (!wait_until([&] { return b.stage.load() >= 1; })) return 6;
    std::uint64_t before, after;
    {
      auto r = s.read();
      before = r->a;
      b.seen = before;
      b.child_stage = 1;
      if (!wait_until([&] { return b.stage.load() >= 2; })) return 2;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the commit try to apply
      after = r->a;
      if (r->a != r->b) return 3;
    }
    if (before != after) return 4;
    // A new transaction sees the commit once it is applied.
    if (!wait_until([&] { return s.read()->a == before + 1; })) return 5;
    return 0;
  }));
}

std::atomic<int> g_pending_raised{0};
std::error_code pending_hook(tmf::detail::os::io_op op, const tmf::detail::os::file&, std::uint64_t offset,
                             std::uint64_t length, const void* data) {
  std::uint64_t v = 0;
  if (op == tmf::detail::os::io_op::write && offset == offsetof(tmf::detail::log_control, commit_pending) &&
      length == sizeof v && data) {
    std::memcpy(&v, data, sizeof v);
    if (v != 0) ++g_pending_raised;
  }
  return {};
}

void commit_waits_for_other_process_reader(bool read_only, bool no_table) {
  scoped_path p;
  create(p);
  shared_board b;
  const child_id child = snapshot_reader(p, b, read_only, no_table);  // forked before this process opens
  tmf::storage<rt_root> s(p);
  b->stage = 1;
  ASSERT_TRUE(wait_until([&] { return b->child_stage.load() == 1; })) << "the reader did not start";
  if (no_table)
    EXPECT_EQ(lanes_in_use(lock_of(p)), 0u) << "the reader without a table used one";
  else
    EXPECT_GE(lanes_in_use(lock_of(p)), 1u) << "the reader's lane is not in the table";
  std::atomic<bool> committed{false};
  g_pending_raised = 0;
  tmf::detail::os::io_hook = &pending_hook;
  std::thread writer([&] {
    auto w = s.write();
    w->a += 1;
    w->b += 1;
    b->stage = 2;
    w.commit();
    committed = true;
  });
  const int rc = wait_child(child);
  writer.join();
  tmf::detail::os::io_hook = nullptr;
  EXPECT_TRUE(committed.load());
  // A reader without a table holds the apply lock shared: the commit must wait for it, so it
  // queues through the turnstile and raises the pending word (readers do not join meanwhile).
  if (no_table) {
    EXPECT_GE(g_pending_raised.load(), 1) << "a commit that had to wait did not raise the pending word";
  }
  EXPECT_NE(rc, 4) << "the reader's snapshot changed under it: the commit did not wait for it";
  EXPECT_EQ(rc, 0);
}

TEST(ReaderTable, CommitWaitsForAReaderOfAnotherProcess) { commit_waits_for_other_process_reader(false, false); }
TEST(ReaderTable, CommitWaitsForAReadOnlyReaderOfAnotherProcess) { commit_waits_for_other_process_reader(true, false); }
TEST(ReaderTable, CommitWaitsForAReadOnlyReaderWithoutATable) { commit_waits_for_other_process_reader(true, true); }

TEST(ReaderTable, KilledReadersNeverStallCommits) {
  constexpr int rounds = 24;
  scoped_path p;
  create(p);
  shared_board sb;
  const tmf_test::child_path cp = p.path(), bp = sb.path();
  board* const b = &*sb;
  // The writer is a child forked before any storage is open here, so that this process can
  // fork readers: for each round it commits three times and reports the round in `seen`.
  const child_id writer = spawn_child(tmf_test::by_value([cp, bp] {
    board* const b = &tmf_test::attach_shared<board>(bp);
    tmf::storage<rt_root> s(cp.path(), tmf::options{.sync = tmf::durability::no_sync});
    for (int round = 1; round <= rounds; ++round) {
      if (!wait_until([&] { return b->stage.load() >= round; }, 120)) return 2;
      for (int c = 0; c < 3; ++c) {
        auto w = s.write();
        w->a += 1;
        w->b += 1;
        w.commit();
      }
      b->seen = static_cast<std::uint64_t>(round);
    }
    return 0;
  }));
  std::mt19937 rng(11);
  for (int round = 1; round <= rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    b->child_stage = 0;
    // Odd rounds: killed while certainly inside a read transaction; even rounds: at a random
    // instant of a loop of read transactions that check the invariant.
    const bool inside = round % 2 == 1;
    const child_id child = spawn_child(tmf_test::by_value([cp, bp, inside] {
      board* const b = &tmf_test::attach_shared<board>(bp);
      tmf::storage<rt_root> r(cp.path(), tmf::options{.mode = tmf::open_mode::read_only});
      if (inside) {
        auto t = r.read();
        b->child_stage = 1;
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
      }
      for (std::uint64_t n = 0;; ++n) {
        auto t = r.read();
        if (t->a != t->b) return 3;
        if (n == 0) b->child_stage = 1;
      }
    }));
    ASSERT_TRUE(wait_until([&] { return b->child_stage.load() == 1; })) << "the reader did not start";
    if (!inside) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    tmf_test::kill_child(child);
    ASSERT_EQ(wait_child(child), tmf_test::killed_status) << "the reader failed before it was killed";
    b->stage = round;
    ASSERT_TRUE(wait_until([&] { return b->seen.load() == static_cast<std::uint64_t>(round); }, 20))
        << "the writer's commits stalled after a reader was killed";
    EXPECT_EQ(lanes_in_use(lock_of(p)), 0u) << "the dead reader's lanes were not cleared";
  }
  EXPECT_EQ(wait_child(writer), 0);
}

/// Kills the calling process at its first write to the data file (tmf's I/O hook runs
/// before each write): a commit's apply then dies with the pending word raised.
struct kill_at_data_write {
  static inline os::file_info data;
  static std::error_code hook(os::io_op op, const os::file& f, std::uint64_t, std::uint64_t, const void*) {
    os::file_info fi;
    if (op == os::io_op::write && !os::stat_file(f, fi) && fi.inode == data.inode && fi.device == data.device)
      kill_self();
    return {};
  }
};

TEST(ReaderTable, ReaderClearsThePendingWordOfADeadCommitterAndRepairs) {
  scoped_path p;
  create(p);
  shared_board sb;
  board* const b = &*sb;
  const tmf_test::child_path cp = p.path(), bp = sb.path();
  const child_id child = spawn_child(tmf_test::by_value([cp, bp] {
    board* const b = &tmf_test::attach_shared<board>(bp);
    if (!wait_until([&] { return b->stage.load() >= 1; })) return 2;
    tmf::storage<rt_root> w(cp.path());
    kill_at_data_write::data = tmf_test::file_identity(cp.path());
    auto t = w.write();
    t->a = t->b = 7;
    os::io_hook = &kill_at_data_write::hook;
    t.commit();
    return 3;
  }));
  // Open across the death (forked before): the table stays as the dead committer left it.
  tmf::storage<rt_root> s(p);
  b->stage = 1;
  ASSERT_EQ(wait_child(child), tmf_test::killed_status) << "the committer was not killed in its apply";
  watchdog dog("a read transaction after a committer died in its apply", 20);
  auto r = s.read();
  EXPECT_EQ(r->a, 7u) << "the durable commit was not repaired into the data file";
  EXPECT_EQ(r->a, r->b);
}

}  // namespace
