// SPDX-License-Identifier: Apache-2.0 OR MIT
// Public-contract tests of tmf::writer and tmf::reader: transactions (commit, rollback, seen
// from other processes), locking between threads and processes, misuse, move semantics,
// statistics and allocation limits. Opening a storage: storage_open_test.cpp.

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <limits>
#include <new>
#include <optional>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>


#include "storage_test_support.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;

namespace {

using namespace tmf_test::storage_tests;  // NOLINT(google-build-using-namespace)
using tmf_test::run_in_child;
using tmf_test::scoped_path;

static_assert(!std::is_copy_constructible_v<tmf::storage<basic_root>>);
static_assert(!std::is_move_constructible_v<tmf::storage<basic_root>>);
static_assert(!std::is_copy_assignable_v<tmf::storage<basic_root>>);
static_assert(!std::is_copy_constructible_v<tmf::writer<basic_root>>);
static_assert(std::is_nothrow_move_constructible_v<tmf::writer<basic_root>>);
static_assert(std::is_nothrow_move_assignable_v<tmf::writer<basic_root>>);
static_assert(!std::is_copy_constructible_v<tmf::reader<basic_root>>);
static_assert(std::is_nothrow_move_constructible_v<tmf::reader<basic_root>>);
static_assert(std::is_nothrow_move_assignable_v<tmf::reader<basic_root>>);
static_assert(std::is_base_of_v<std::system_error, tmf::error>);

/// A child process (tmf_test::spawn_child) that is killed and reaped if the test ends before
/// join(): a failed assertion must not leave it waiting.
class child_guard {
 public:
  template <class F>
  explicit child_guard(const F& fn) : m_pid(tmf_test::spawn_child(fn)) {}
  child_guard(const child_guard&) = delete;
  child_guard& operator=(const child_guard&) = delete;
  ~child_guard() {
    if (m_joined) return;
    tmf_test::kill_child(m_pid);
    tmf_test::wait_child(m_pid);
  }
  /// Waits for the child; its exit code.
  int join() {
    m_joined = true;
    return tmf_test::wait_child(m_pid);
  }

 private:
  decltype(tmf_test::spawn_child(tmf_test::by_value([] { return 0; }))) m_pid;
  bool m_joined = false;
};

// ---------------------------------------------------------------------------------------------
// Transactions.

TEST(StorageTransactions, CommitMakesChangesVisibleToLaterReaders) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  {
    auto w = s.write();
    w->value = 11;
    w->items.push_back(1);
    EXPECT_EQ(w.root().value, 11u);
    EXPECT_EQ((*w).value, 11u);
    w.commit();
  }
  auto r = s.read();
  EXPECT_EQ(r->value, 11u);
  EXPECT_EQ(r.root().items.size(), 1u);
  EXPECT_EQ((*r).items[0], 1u);
}

TEST(StorageTransactions, RollbackUndoesValuesAndAllocations) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  {
    auto w = s.write();
    w->value = 1;
    w->items.assign(4, 4);
    w.commit();
  }
  const std::size_t allocated = s.stats().allocated_bytes;
  {
    auto w = s.write();
    w->value = 2;
    for (int i = 0; i < 10000; ++i) w->items.push_back(static_cast<std::uint64_t>(i));
    auto a = w.get_allocator<char>();
    w->block = a.allocate(100000);
    EXPECT_GT(s.stats().allocated_bytes, allocated) << "allocations inside the writer are not counted";
    w.rollback();
    EXPECT_EQ(w->value, 1u) << "rollback did not restore a value";
    EXPECT_EQ(w->items.size(), 4u) << "rollback did not restore a container";
    EXPECT_EQ(w->block, nullptr);
    EXPECT_EQ(s.stats().allocated_bytes, allocated) << "rollback did not undo the allocations";
    EXPECT_NO_THROW(s.check());
    // The writer stays usable after a rollback.
    w->value = 3;
    w.commit();
  }
  EXPECT_EQ(s.read()->value, 3u);
  EXPECT_EQ(s.stats().allocated_bytes, allocated);
}

TEST(StorageTransactions, WriterDestructorRollsBack) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  const std::size_t allocated = s.stats().allocated_bytes;
  {
    auto w = s.write();
    w->value = 99;
    w->items.resize(1000, 5);
  }
  {
    auto r = s.read();
    EXPECT_EQ(r->value, 0u) << "uncommitted change survived the writer";
    EXPECT_TRUE(r->items.empty());
  }
  EXPECT_EQ(s.stats().allocated_bytes, allocated) << "uncommitted allocation survived the writer";
  EXPECT_NO_THROW(s.check());
}

TEST(StorageTransactions, CommitKeepsTheWriterOpenAndCanBeRepeated) {
  scoped_path p;
  {
    tmf::storage<basic_root> s(p.path());
    auto w = s.write();
    w->value = 1;
    w.commit();
    w->value = 2;
    w->items.push_back(2);
    w.commit();
    w->value = 3;  // not committed
    w.rollback();
    EXPECT_EQ(w->value, 2u) << "rollback went past the second commit";
    w.commit();  // nothing to commit: still fine
  }
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    tmf::storage<basic_root> s(p.path());
    auto r = s.read();
    return r->value == 2 && r->items.size() == 1 ? 0 : 1;
  }));
  EXPECT_EQ(rc, 0) << "the second commit is not in the file";
}

TEST(StorageTransactions, UncommittedChangesInvisibleToAnotherProcess) {
  scoped_path p;
  make_storage(p.path(), 7);
  const tmf_test::handshake h(p.path());
  child_guard child(tmf_test::by_value([p = tmf_test::child_path(p.path()), h] {
    tmf::storage<basic_root> s(p.path());
    auto w = s.write();
    w->value = 1000;  // never visible to the parent until committed
    h.signal("1");
    if (!h.wait("2")) return 1;
    w.commit();
    h.signal("3");
    if (!h.wait("4")) return 2;
    return 0;
  }));
  ASSERT_TRUE(h.wait("1")) << "the child failed before taking the writer";
  tmf::storage<basic_root> s(p.path());
  {
    auto r = s.try_read();
    ASSERT_TRUE(r.has_value()) << "another process's writer must not block readers";
    EXPECT_EQ((*r)->value, 7u) << "a reader saw another process's uncommitted change";
  }
  EXPECT_FALSE(s.try_write().has_value()) << "try_write succeeded while a child process holds the writer";
  h.signal("2");
  ASSERT_TRUE(h.wait("3")) << "the child failed to commit";
  EXPECT_EQ(s.read()->value, 1000u) << "a new read transaction does not see the other process's commit";
  EXPECT_FALSE(s.try_write().has_value()) << "the child still holds the writer";
  h.signal("4");
  EXPECT_EQ(child.join(), 0);
  auto w = s.try_write();
  ASSERT_TRUE(w.has_value()) << "the writer was not released by the exited child";
  EXPECT_EQ((*w)->value, 1000u);
}

// ---------------------------------------------------------------------------------------------
// Locking between threads, and misuse.

TEST(StorageLocking, TryWriteEmptyWhileAnotherThreadHoldsTheWriter) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  std::promise<void> taken, release;
  std::thread t([&] {
    auto w = s.write();
    taken.set_value();
    release.get_future().wait();
  });
  taken.get_future().wait();
  EXPECT_FALSE(s.try_write().has_value()) << "try_write succeeded while another thread holds the writer";
  EXPECT_FALSE(s.try_read().has_value()) << "try_read succeeded while a writer of this process is active";
  release.set_value();
  t.join();
  EXPECT_TRUE(s.try_write().has_value()) << "the writer was not released";
  EXPECT_TRUE(s.try_read().has_value());
}

TEST(StorageLocking, WriteWaitsForTheCurrentWriter) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  std::optional<tmf::writer<basic_root>> w(s.write());
  std::uint64_t seen = 0;
  std::thread t([&] {
    auto w2 = s.write();  // must wait until the main thread's writer is gone
    seen = w2->value;
  });
  (*w)->value = 123;
  w->commit();
  w.reset();
  t.join();
  EXPECT_EQ(seen, 123u) << "a second write() did not wait for the first writer to finish";
}

TEST(StorageLocking, ReadWaitsForTheWriterOfThisProcess) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  std::optional<tmf::writer<basic_root>> w(s.write());
  std::uint64_t seen = 0;
  std::thread t([&] {
    auto r = s.read();
    seen = r->value;
  });
  (*w)->value = 9;
  w->commit();
  w.reset();
  t.join();
  EXPECT_EQ(seen, 9u) << "read() did not wait for this process's writer";
}

TEST(StorageLocking, TryWriteEmptyWhileAChildProcessHoldsTheWriter) {
  scoped_path p;
  make_storage(p.path());
  const tmf_test::handshake h(p.path());
  child_guard child(tmf_test::by_value([p = tmf_test::child_path(p.path()), h] {
    tmf::storage<basic_root> s(p.path());
    auto w = s.write();
    h.signal("1");
    return h.wait("2") ? 0 : 1;
  }));
  ASSERT_TRUE(h.wait("1")) << "the child could not take the writer";
  tmf::storage<basic_root> s(p.path());
  EXPECT_FALSE(s.try_write().has_value()) << "try_write succeeded while a child process holds the writer";
  h.signal("2");
  EXPECT_EQ(child.join(), 0);
  EXPECT_TRUE(s.try_write().has_value()) << "the writer lock was not released when the child exited";
}

TEST(StorageMisuse, NestedTransactionsOnOneThreadAreRefused) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  {
    auto w = s.write();
    EXPECT_TRUE(throws_code([&] { (void)s.write(); }, tmf::errc::already_open)) << "write() while holding the writer";
    EXPECT_TRUE(throws_code([&] { (void)s.try_write(); }, tmf::errc::already_open)) << "try_write() while holding the writer";
    EXPECT_TRUE(throws_code([&] { (void)s.read(); }, tmf::errc::already_open)) << "read() while holding the writer";
    EXPECT_TRUE(throws_code([&] { (void)s.try_read(); }, tmf::errc::already_open)) << "try_read() while holding the writer";
    w->value = 5;  // the writer is still fine after the refusals
    w.commit();
  }
  {
    auto r = s.read();
    EXPECT_TRUE(throws_code([&] { (void)s.write(); }, tmf::errc::already_open)) << "write() while holding a reader";
    EXPECT_TRUE(throws_code([&] { (void)s.try_write(); }, tmf::errc::already_open)) << "try_write() while holding a reader";
    auto r2 = s.read();  // nested readers are fine
    EXPECT_EQ(r2->value, 5u);
    EXPECT_EQ(r->value, 5u);
  }
  // Everything released: a writer is available again.
  EXPECT_TRUE(s.try_write().has_value());
}

TEST(StorageMisuse, WriterUsedFromAnotherThreadIsRefused) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  auto w = s.write();
  bool commit_refused = false, rollback_refused = false;
  std::thread t([&] {
    commit_refused = throws_code([&] { w.commit(); }, tmf::errc::no_writer);
    rollback_refused = throws_code([&] { w.rollback(); }, tmf::errc::no_writer);
  });
  t.join();
  EXPECT_TRUE(commit_refused) << "commit() from a thread that did not create the writer";
  EXPECT_TRUE(rollback_refused) << "rollback() from a thread that did not create the writer";
  w->value = 1;
  EXPECT_NO_THROW(w.commit());
}

// ---------------------------------------------------------------------------------------------
// Move semantics.

TEST(StorageMove, WriterMoveTransfersTheLock) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  tmf::writer<basic_root> w1 = s.write();
  tmf::writer<basic_root> w2 = std::move(w1);
  w2->value = 8;
  w2.commit();
  EXPECT_TRUE(throws_code([&] { (void)w1.root(); }, tmf::errc::no_writer)) << "a moved-from writer is still usable";
  EXPECT_TRUE(throws_code([&] { w1.commit(); }, tmf::errc::no_writer));
  {
    tmf::writer<basic_root> dead = std::move(w1);  // moving a moved-from writer is harmless
    (void)dead;
  }
  bool other_got = true;
  std::thread([&] { other_got = s.try_write().has_value(); }).join();
  EXPECT_FALSE(other_got) << "destroying a moved-from writer released the lock";
  {
    tmf::writer<basic_root> w3 = std::move(w2);
    EXPECT_EQ(w3->value, 8u);
  }
  std::thread([&] { other_got = s.try_write().has_value(); }).join();
  EXPECT_TRUE(other_got) << "destroying the moved-to writer did not release the lock";
}

TEST(StorageMove, WriterMoveAssignmentReleasesTheTarget) {
  scoped_path a(tmf_test::test_path("a")), b(tmf_test::test_path("b"));
  tmf::storage<basic_root> sa(a.path()), sb(b.path());
  tmf::writer<basic_root> wa = sa.write();
  tmf::writer<basic_root> wb = sb.write();
  wa->value = 1;  // uncommitted: rolled back when wa's transaction is released
  wa = std::move(wb);
  wa->value = 2;
  wa.commit();
  bool a_free = false, b_free = true;
  std::thread([&] {
    a_free = sa.try_write().has_value();
    b_free = sb.try_write().has_value();
  }).join();
  EXPECT_TRUE(a_free) << "move assignment did not release the writer it replaced";
  EXPECT_FALSE(b_free) << "move assignment lost the writer it took";
  EXPECT_EQ(sa.read()->value, 0u) << "the replaced writer's uncommitted change survived";
  wa = tmf::writer<basic_root>(std::move(wa));  // self-move through a temporary
  EXPECT_EQ(wa->value, 2u);
}

TEST(StorageMove, ReaderMove) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  {
    auto w = s.write();
    w->value = 4;
    w.commit();
  }
  {
    tmf::reader<basic_root> r1 = s.read();
    tmf::reader<basic_root> r2 = std::move(r1);
    EXPECT_EQ(r2->value, 4u);
    EXPECT_TRUE(throws_code([&] { (void)r1.root(); }, tmf::errc::no_writer)) << "a moved-from reader is still usable";
    tmf::reader<basic_root> r3 = s.read();
    r3 = std::move(r2);
    EXPECT_EQ(r3->value, 4u);
  }
  // All readers gone: this thread may write.
  auto w = s.try_write();
  ASSERT_TRUE(w.has_value()) << "a moved reader left a read transaction behind";
}

// ---------------------------------------------------------------------------------------------
// Statistics and accessors.

TEST(StorageStats, SizesAreConsistent) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  const tmf::storage_stats st = s.stats();
  EXPECT_EQ(st.arena_bytes, s.size());
  EXPECT_GE(st.arena_bytes, 2 * page) << "the arena holds at least the header page and the Root";
  EXPECT_EQ(st.arena_bytes % page, 0u);
  EXPECT_GE(st.file_bytes, st.arena_bytes);
  EXPECT_EQ(st.file_bytes, fs::file_size(p.path()));
  EXPECT_GE(st.allocated_bytes, sizeof(basic_root));
  EXPECT_EQ(st.allocated_bytes + st.free_bytes + st.spare_bytes + page, st.arena_bytes)
      << "allocated + free + spare bytes must cover the arena after the header page";
  ASSERT_EQ(st.size_classes.size(), tmf::detail::heap::size_class_count());
  std::size_t class_bytes = 0;
  for (const auto& c : st.size_classes) {
    EXPECT_EQ(c.bytes, c.blocks * c.block_size);
    EXPECT_LE(c.blocks, c.runs * (16384 / c.block_size));
    class_bytes += c.bytes;
  }
  EXPECT_LE(class_bytes, st.allocated_bytes);
  EXPECT_LE(st.largest_free_block, st.free_bytes);
  if (st.free_bytes > 0) {
    EXPECT_GE(st.free_blocks, 1u);
    EXPECT_GT(st.largest_free_block, 0u);
  }
}

TEST(StorageStats, Counters) {
  scoped_path p;
  {
    tmf::storage<basic_root> s(p.path());
    const tmf::storage_stats s0 = s.stats();
    {
      auto w = s.write();
      w->value = 1;
      w.commit();
    }
    const tmf::storage_stats s1 = s.stats();
    EXPECT_EQ(s1.commits, s0.commits + 1);
    EXPECT_GE(s1.pages_logged, s0.pages_logged + 1) << "a commit that changed a page logged nothing";
    EXPECT_EQ(s1.rollbacks, s0.rollbacks);
    {
      auto w = s.write();
      w.commit();  // nothing changed
    }
    const tmf::storage_stats s2 = s.stats();
    EXPECT_EQ(s2.commits, s1.commits + 1);
    EXPECT_EQ(s2.pages_logged, s1.pages_logged) << "an empty commit logged pages";
    {
      auto w = s.write();
      w->value = 2;
      w.rollback();
      w->value = 3;
    }  // destructor rollback
    const tmf::storage_stats s3 = s.stats();
    EXPECT_EQ(s3.rollbacks, s2.rollbacks + 2) << "an explicit and a destructor rollback";
    EXPECT_EQ(s3.commits, s2.commits);
    {
      auto w = s.write();
      auto a = w.get_allocator<std::uint64_t>();
      const std::size_t before = s.stats().allocated_bytes;
      std::uint64_t* q = a.allocate(100);
      EXPECT_GE(s.stats().allocated_bytes, before + 100 * sizeof(std::uint64_t));
      a.deallocate(q, 100);
      EXPECT_EQ(s.stats().allocated_bytes, before) << "deallocate did not return the bytes";
    }
  }
  tmf::storage<basic_root> s(p.path());
  const tmf::storage_stats fresh = s.stats();
  EXPECT_EQ(fresh.commits, 0u) << "counters are per storage object";
  EXPECT_EQ(fresh.rollbacks, 0u);
  EXPECT_EQ(fresh.pages_logged, 0u);
}

TEST(StorageStats, AccessorsAndGrowth) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  EXPECT_EQ(s.path(), p.path());
  auto base = reinterpret_cast<std::uintptr_t>(s.address());
  const std::size_t size0 = s.size();
  {
    auto r = s.read();
    auto root = reinterpret_cast<std::uintptr_t>(&r.root());
    EXPECT_GE(root, base + page) << "Root lies in the header page or before the arena";
    EXPECT_LE(root + sizeof(basic_root), base + size0) << "Root lies beyond the arena";
  }
  {
    auto w = s.write();
    w->block = w.get_allocator<char>().allocate(8u << 20);
    std::memset(w->block, 0xab, 8u << 20);
    w.commit();
  }
  EXPECT_GE(s.size(), page + (8u << 20)) << "the arena did not grow for an 8 MiB allocation";
  EXPECT_GT(s.size(), size0);
  EXPECT_EQ(s.size(), s.stats().arena_bytes);
  EXPECT_GE(fs::file_size(p.path()), s.size()) << "the file is shorter than its arena";
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(s.address()), base) << "growth moved the storage";
  auto r = s.read();
  EXPECT_EQ(static_cast<unsigned char*>(r->block)[(8u << 20) - 1], 0xab);
}

// ---------------------------------------------------------------------------------------------
// Allocation limits.

TEST(StorageAllocation, TooLargeAllocationThrowsBadAllocAndWriterStaysUsable) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path(), {.max_size = std::size_t{32} << 20});
  auto w = s.write();
  auto a = w.get_allocator<std::uint64_t>();
  const std::size_t allocated = s.stats().allocated_bytes;
  EXPECT_THROW((void)a.allocate(std::size_t{64} << 20), std::bad_alloc);
  EXPECT_THROW((void)a.allocate(std::numeric_limits<std::size_t>::max() / 16), std::bad_alloc);
  EXPECT_EQ(s.stats().allocated_bytes, allocated) << "a failed allocation changed the heap";
  w->items.assign(100, 1);
  w.commit();
  EXPECT_NO_THROW(s.check());
  EXPECT_EQ(w->items.size(), 100u);
}

TEST(StorageAllocation, ZeroSizeAllocationWorks) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  auto w = s.write();
  auto a = w.get_allocator<char>();
  const std::size_t allocated = s.stats().allocated_bytes;
  char* q = nullptr;
  ASSERT_NO_THROW(q = a.allocate(0));
  a.deallocate(q, 0);
  EXPECT_EQ(s.stats().allocated_bytes, allocated) << "allocate(0) + deallocate(p, 0) leaked";
  w.commit();
  EXPECT_NO_THROW(s.check());
}

}  // namespace
