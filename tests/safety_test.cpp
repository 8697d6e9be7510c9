// SPDX-License-Identifier: Apache-2.0 OR MIT
// Public-contract tests of tmf's safety nets: stores without a writer and invalid deallocations
// terminate with a message; faults outside storages reach the previous SIGSEGV handler exactly;
// after fork() the child gets errc::forked and cannot disturb the parent's locks.

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#if !defined(_WIN32)
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "test_support.hpp"

namespace fs = std::filesystem;

#if defined(__SANITIZE_ADDRESS__)
#define TMF_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TMF_TEST_ASAN 1
#endif
#endif
#ifdef TMF_TEST_ASAN
// ASan's own SIGSEGV handler would report the deliberate faults and exit(1): these tests check what
// a plain process sees (killed by SIGSEGV, the user's handler called), so ASan stays out of SIGSEGV.
extern "C" const char* __asan_default_options() { return "handle_segv=0"; }
#endif

namespace {

using tmf_test::run_in_child;
using tmf_test::scoped_path;

struct root {
  std::uint64_t value = 0;
  char* block = nullptr;  // 64 KiB, allocated by some tests
};

constexpr std::size_t block_bytes = 64 * 1024;

void use_threadsafe_death_tests() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }

/// Creates `p` with value 1 committed, and a 64 KiB block.
void make_storage(const fs::path& p) {
  tmf::storage<root> s(p);
  auto w = s.write();
  w->value = 1;
  w->block = w.get_allocator<char>().allocate(block_bytes);
  std::memset(w->block, 0, block_bytes);
  w.commit();
}

/// Stores to the null pointer: a fault outside any storage. (UBSan would stop at the store
/// itself: the deliberate null store is exempt.)
__attribute__((noinline, no_sanitize("undefined"))) void store_to_null() {
  static volatile std::uintptr_t where = 0;  // the compiler cannot see that it is null
  *reinterpret_cast<volatile int*>(where) = 1;
}

// ---------------------------------------------------------------------------------------------
// Stores without a writer.

void store_through_reader(const fs::path& p) {
  make_storage(p);
  tmf::storage<root> s(p);
  auto r = s.read();
  *const_cast<volatile std::uint64_t*>(&r->value) = 2;  // the page is read-only: dies here
  std::fprintf(stderr, "store through a reader did not fault\n");
}

TEST(SafetyDeathTest, StoreThroughAReaderDies) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_DEATH(store_through_reader(p.path()), "tmf: .*without a writer.*0x");
  // The file is unchanged.
  tmf::storage<root> s(p.path());
  EXPECT_EQ(s.read()->value, 1u) << "the refused store reached the file";
  EXPECT_NO_THROW(s.check());
}

void store_from_other_thread(const fs::path& p) {
  make_storage(p);
  tmf::storage<root> s(p);
  auto w = s.write();
  auto* target = const_cast<volatile std::uint64_t*>(&w->value);  // this thread has not written it
  std::thread([&] { *target = 3; }).join();
  std::fprintf(stderr, "store from another thread did not fault\n");
}

TEST(SafetyDeathTest, StoreFromAnotherThreadWhileThisThreadHoldsTheWriterDies) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_DEATH(store_from_other_thread(p.path()), "tmf: .*without a writer.*0x");
  tmf::storage<root> s(p.path());
  EXPECT_EQ(s.read()->value, 1u) << "the refused store reached the file";
}

void store_without_any_transaction(const fs::path& p) {
  make_storage(p);
  tmf::storage<root> s(p);
  volatile char* q = nullptr;
  {
    auto r = s.read();
    q = r->block;
  }
  q[100] = 1;
  std::fprintf(stderr, "store without a transaction did not fault\n");
}

TEST(SafetyDeathTest, StoreWithoutAnyTransactionDies) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_DEATH(store_without_any_transaction(p.path()), "tmf: .*0x");
}

void store_after_the_writer_ends(const fs::path& p) {
  make_storage(p);
  tmf::storage<root> s(p);
  volatile char* q = nullptr;
  {
    auto w = s.write();
    w->block[100] = 5;  // the block's chunk stays writable while this writer goes on
    w.commit();
    w->block[200] = 6;
    w.commit();
    q = w->block;
  }
  q[300] = 1;  // the writer ended: its chunks are read-only again
  std::fprintf(stderr, "store after the writer ended did not fault\n");
}

TEST(SafetyDeathTest, StoreAfterTheWriterEndsToAChunkItsLastCommitWroteDies) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_DEATH(store_after_the_writer_ends(p.path()), "tmf: .*without a writer.*0x");
  tmf::storage<root> s(p.path());
  EXPECT_EQ(s.read()->block[300], 0) << "the refused store reached the file";
  EXPECT_EQ(s.read()->block[200], 6);
}

// ---------------------------------------------------------------------------------------------
// Invalid deallocations.

void double_deallocate(const fs::path& p) {
  tmf::storage<root> s(p);
  auto w = s.write();
  tmf::allocator<std::uint64_t> a = w.get_allocator<std::uint64_t>();
  std::uint64_t* q = a.allocate(16);
  std::uint64_t* keep = a.allocate(16);  // a live neighbour
  a.deallocate(q, 16);
  a.deallocate(q, 16);
  std::fprintf(stderr, "double deallocate survived %p\n", static_cast<void*>(keep));
}

TEST(SafetyDeathTest, DoubleDeallocateDies) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_DEATH(double_deallocate(p.path()), "tmf: invalid deallocate");
}

void deallocate_foreign_pointer(const fs::path& p) {
  tmf::storage<root> s(p);
  auto w = s.write();
  tmf::allocator<std::uint64_t> a = w.get_allocator<std::uint64_t>();
  static std::uint64_t not_in_the_storage[16];
  a.deallocate(not_in_the_storage, 16);
  std::fprintf(stderr, "foreign deallocate survived\n");
}

TEST(SafetyDeathTest, DeallocateOfAPointerOutsideTheStorageDies) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_DEATH(deallocate_foreign_pointer(p.path()), "tmf: invalid deallocate");
}

// ---------------------------------------------------------------------------------------------
// Faults outside storages reach the previous handler exactly.

void foreign_fault_with_storage_open(const fs::path& p, bool with_writer) {
  tmf::storage<root> s(p);
  std::optional<tmf::writer<root>> w;
  if (with_writer) {
    w.emplace(s.write());
    (*w)->value = 5;  // the tracker works
  }
  store_to_null();
  std::fprintf(stderr, "the foreign store did not fault\n");
}

/// How a process ends after a fault nobody handles: SIGSEGV; on Windows the unhandled
/// access violation's exit status 139 (tests/windows_crash_exit.cpp).
#if defined(_WIN32)
const auto killed_by_the_fault = ::testing::ExitedWithCode(139);
#else
const auto killed_by_the_fault = ::testing::KilledBySignal(SIGSEGV);
#endif

TEST(SafetyDeathTest, ForeignNullWriteIsKilledBySigsegv) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_EXIT(foreign_fault_with_storage_open(p.path(), false), killed_by_the_fault, "");
  EXPECT_EXIT(foreign_fault_with_storage_open(p.path(), true), killed_by_the_fault, "");
}

#if defined(_WIN32)
// Windows has no signals: a fault tmf's vectored handler declines goes on to the next handler
// and the unhandled-exception filter (ForeignNullWriteIsKilledBySigsegv); sigaction's
// variants do not exist there.
TEST(SafetyDeathTest, UserSiginfoHandlerInstalledBeforeTheFirstStorageGetsForeignFaults) {
  GTEST_SKIP() << "POSIX signal handlers (sigaction): Windows has none (README, Windows)";
}
TEST(SafetyDeathTest, UserPlainHandlerInstalledBeforeTheFirstStorageGetsForeignFaults) {
  GTEST_SKIP() << "POSIX signal handlers (signal): Windows has none (README, Windows)";
}
TEST(SafetyDeathTest, IgnoredSigsegvStillKillsOnAForeignFault) {
  GTEST_SKIP() << "SIG_IGN for SIGSEGV: Windows has no signals (README, Windows)";
}
TEST(SafetyDeathTest, UserAltStackHandlerGetsAStackOverflow) {
  GTEST_SKIP() << "sigaltstack: Windows has no signals (README, Windows)";
}
#else
void siginfo_handler(int, siginfo_t* info, void*) {
  static const char msg[] = "user handler: foreign fault\n";
  (void)!::write(2, msg, sizeof msg - 1);
  ::_exit(info->si_addr == nullptr ? 42 : 43);
}

void plain_handler(int) {
  static const char msg[] = "plain user handler\n";
  (void)!::write(2, msg, sizeof msg - 1);
  ::_exit(44);
}

void user_handler_then_storage(const fs::path& p, bool siginfo) {
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  if (siginfo) {
    sa.sa_sigaction = siginfo_handler;
    sa.sa_flags = SA_SIGINFO;
  } else {
    sa.sa_handler = plain_handler;
  }
  if (::sigaction(SIGSEGV, &sa, nullptr) != 0) ::_exit(2);
  tmf::storage<root> s(p);  // installs tmf's handler over the user's
  {
    auto w = s.write();
    w->value = 6;  // tmf's own faults are not passed on
    w.commit();
  }
  if (s.read()->value != 6) ::_exit(3);
  store_to_null();
  ::_exit(4);
}

TEST(SafetyDeathTest, UserSiginfoHandlerInstalledBeforeTheFirstStorageGetsForeignFaults) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_EXIT(user_handler_then_storage(p.path(), true), ::testing::ExitedWithCode(42), "user handler: foreign fault");
}

TEST(SafetyDeathTest, UserPlainHandlerInstalledBeforeTheFirstStorageGetsForeignFaults) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_EXIT(user_handler_then_storage(p.path(), false), ::testing::ExitedWithCode(44), "plain user handler");
}

void ignored_sigsegv_then_storage(const fs::path& p) {
  std::signal(SIGSEGV, SIG_IGN);  // the kernel does not honour SIG_IGN for a fault
  tmf::storage<root> s(p);
  {
    auto w = s.write();
    w->value = 7;
    w.commit();
  }
  store_to_null();
  ::_exit(4);
}

TEST(SafetyDeathTest, IgnoredSigsegvStillKillsOnAForeignFault) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_EXIT(ignored_sigsegv_then_storage(p.path()), ::testing::KilledBySignal(SIGSEGV), "");
}

// Stack overflow handled on an alternate stack: tmf's handler must run there too (SA_ONSTACK)
// and pass the fault on to the user's handler.
char* g_alt_stack = nullptr;
constexpr std::size_t alt_stack_bytes = 256 * 1024;

void alt_stack_handler(int, siginfo_t*, void*) {
  char local = 0;
  const bool on_alt = &local >= g_alt_stack && &local < g_alt_stack + alt_stack_bytes;
  static const char msg[] = "user handler on the alternate stack\n";
  if (on_alt) (void)!::write(2, msg, sizeof msg - 1);
  ::_exit(on_alt ? 45 : 46);
}

[[gnu::noinline]] std::size_t recurse(std::size_t depth) {
  volatile char frame[4096];
  frame[0] = static_cast<char>(depth);
  frame[4095] = frame[0];
  if (depth == std::numeric_limits<std::size_t>::max()) return 0;
  return recurse(depth + 1) + static_cast<std::size_t>(frame[4095]);
}

void stack_overflow_with_alt_stack(const fs::path& p) {
  g_alt_stack = static_cast<char*>(
      ::mmap(nullptr, alt_stack_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (g_alt_stack == MAP_FAILED) ::_exit(2);
  stack_t ss{};
  ss.ss_sp = g_alt_stack;
  ss.ss_size = alt_stack_bytes;
  if (::sigaltstack(&ss, nullptr) != 0) ::_exit(2);
  struct sigaction sa {};
  sigemptyset(&sa.sa_mask);
  sa.sa_sigaction = alt_stack_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  if (::sigaction(SIGSEGV, &sa, nullptr) != 0) ::_exit(2);
  tmf::storage<root> s(p);
  {
    auto w = s.write();
    w->value = 8;
    w.commit();
  }
  std::fprintf(stderr, "recursion returned %zu\n", recurse(0));
  ::_exit(4);
}

TEST(SafetyDeathTest, UserAltStackHandlerGetsAStackOverflow) {
  use_threadsafe_death_tests();
  scoped_path p;
  EXPECT_EXIT(stack_overflow_with_alt_stack(p.path()), ::testing::ExitedWithCode(45),
              "user handler on the alternate stack");
}
#endif  // _WIN32

// ---------------------------------------------------------------------------------------------
// fork().

/// 0 if `f()` throws a tmf::error with errc::forked, else 1 (and a message naming `what`).
template <class F>
int expect_forked(const char* what, F&& f) {
  try {
    f();
  } catch (const tmf::error& e) {
    if (e.code() == tmf::errc::forked) return 0;
    std::fprintf(stderr, "child: %s threw %s instead of errc::forked\n", what, e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: %s threw %s instead of errc::forked\n", what, e.what());
    return 1;
  }
  std::fprintf(stderr, "child: %s did not throw errc::forked\n", what);
  return 1;
}

// stats() included: the child's only thread looks like the parent's writer thread.
TEST(Fork, EveryCallInTheChildThrowsForkedAndTheParentKeepsItsLocks) {
  scoped_path p;
  make_storage(p.path());
  std::optional<tmf::storage<root>> s(std::in_place, p.path());
  std::optional<tmf::writer<root>> w(s->write());
  (*w)->value = 2;  // uncommitted at fork time
  const int rc = run_in_child([&] {
    int failures = 0;
    failures += expect_forked("storage::read()", [&] { (void)s->read(); });
    failures += expect_forked("storage::try_read()", [&] { (void)s->try_read(); });
    failures += expect_forked("storage::write()", [&] { (void)s->write(); });
    failures += expect_forked("storage::try_write()", [&] { (void)s->try_write(); });
    failures += expect_forked("storage::stats()", [&] { (void)s->stats(); });
    failures += expect_forked("storage::check()", [&] { s->check(); });
    failures += expect_forked("writer::commit()", [&] { w->commit(); });
    failures += expect_forked("writer::rollback()", [&] { w->rollback(); });
    failures += expect_forked("writer::root()", [&] { (void)w->root(); });
    // The child's destructors must leave the parent's locks alone.
    w.reset();
    s.reset();
    return failures;
  });
  EXPECT_EQ(rc, 0) << rc << " calls in the child did not throw errc::forked (see stderr)";

  // The parent carries on: its transaction is intact.
  EXPECT_EQ((*w)->value, 2u) << "the child disturbed the parent's transaction";
  (*w)->value = 3;
  ASSERT_NO_THROW(w->commit());
  EXPECT_NO_THROW(s->check());

  // Another process cannot take the writer while the parent holds it, but can read.
  const int rc2 = run_in_child([&] {
    w.reset();  // the inherited objects go first (their destructors run in this child)
    s.reset();
    tmf::storage<root> other(p.path());
    if (other.try_write().has_value()) return 1;
    return other.read()->value == 3 ? 0 : 2;
  });
  EXPECT_EQ(rc2, 0) << "1: another process took the writer the parent holds; 2: it read a wrong value";

  (*w)->value = 4;
  w->commit();
  w.reset();
  const int rc3 = run_in_child([&] {
    s.reset();
    tmf::storage<root> other(p.path());
    auto ow = other.try_write();
    if (!ow) return 1;
    return (*ow)->value == 4 ? 0 : 2;
  });
  EXPECT_EQ(rc3, 0) << "1: the writer is not free after the parent released it; 2: wrong value";
  EXPECT_EQ(s->read()->value, 4u);
}

TEST(Fork, ReaderInTheChildThrowsForked) {
  scoped_path p;
  make_storage(p.path());
  std::optional<tmf::storage<root>> s(std::in_place, p.path());
  std::optional<tmf::reader<root>> r(s->read());
  const int rc = run_in_child([&] {
    int failures = expect_forked("reader::root()", [&] { (void)r->root(); });
    r.reset();
    s.reset();
    return failures;
  });
  EXPECT_EQ(rc, 0) << "reader::root() in the child did not throw errc::forked";
  EXPECT_EQ((*r)->value, 1u);
  r.reset();
  auto w = s->try_write();
  ASSERT_TRUE(w.has_value()) << "the parent cannot write after the child exited";
  (*w)->value = 9;
  w->commit();
}

// Without a fork check, allocate() would modify the heap (and die of SIGSEGV on a clean page).
TEST(Fork, AllocateInTheChildThrowsForked) {
  scoped_path p;
  make_storage(p.path());
  tmf::storage<root> s(p.path());
  auto w = s.write();
  tmf::allocator<std::uint64_t> a = w.get_allocator<std::uint64_t>();
  const std::size_t allocated = s.stats().allocated_bytes;
  const int rc = run_in_child([&] {
    int failures = expect_forked("allocator::allocate()", [&] { (void)a.allocate(4); });
    failures += expect_forked("tmf::allocator() in the child", [&] { tmf::allocator<int> b; (void)b.allocate(1); });
    return failures;
  });
  EXPECT_EQ(rc, 0) << "allocating in the child did not throw errc::forked";
  EXPECT_EQ(s.stats().allocated_bytes, allocated);
  w->value = 10;
  w.commit();
}

TEST(Fork, StoreInTheChildToACleanPageDies) {
  scoped_path p;
  make_storage(p.path());
  tmf::storage<root> s(p.path());
  auto w = s.write();
  w->value = 11;  // the root's page is writable in the parent (and so in the child)
  char* clean = w->block + block_bytes / 2;  // a page the parent's writer has not touched
  const int rc = run_in_child([&] {
    *reinterpret_cast<volatile char*>(clean) = 1;
    return 0;
  });
  EXPECT_EQ(rc, 128 + SIGSEGV) << "a store in the child to a page of the parent's storage did not kill it";
  EXPECT_EQ(clean[0], 0);
  w.commit();
  EXPECT_NO_THROW(s.check());
}

}  // namespace
