// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/detail/os.hpp: the system-call layer's contract.
#include <tmf/detail/os.hpp>

#include <gtest/gtest.h>

#if !defined(_WIN32)
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#endif

#include <algorithm>
#include <cstring>
#include <vector>

#include "test_support.hpp"

namespace os = tmf::detail::os;
using tmf::detail::page_size;

namespace {

/// Whether a native handle is open (a descriptor: fcntl; a HANDLE: GetHandleInformation),
/// and whether a child process would inherit it.
template <class H>
bool handle_open(H h) {
#if defined(_WIN32)
  DWORD flags = 0;
  return ::GetHandleInformation(h, &flags) != 0;
#else
  return ::fcntl(h, F_GETFD) != -1;
#endif
}
template <class H>
bool handle_inherited(H h) {
#if defined(_WIN32)
  DWORD flags = 0;
  return ::GetHandleInformation(h, &flags) && (flags & HANDLE_FLAG_INHERIT) != 0;
#else
  return (::fcntl(h, F_GETFD) & FD_CLOEXEC) == 0;
#endif
}

os::file create(const std::filesystem::path& p) {
  os::file f;
  EXPECT_FALSE(os::create_file(p, f)) << "create_file " << p;
  return f;
}

TEST(Os, OpenMissingFileReportsEnoent) {
  tmf_test::scoped_path p;
  os::file f;
  auto ec = os::open_file(p.path(), os::access::read_write, f);
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory) << ec.message();
  EXPECT_FALSE(f.is_open());
}

TEST(Os, CreateRefusesExistingFileAndSetsCloexec) {
  tmf_test::scoped_path p;
  os::file fd = create(p);
  ASSERT_TRUE(fd.is_open());
  EXPECT_FALSE(handle_inherited(fd.native())) << "descriptor is not close-on-exec";
  os::file fd2;
  EXPECT_EQ(os::create_file(p.path(), fd2), std::errc::file_exists);
}

TEST(Os, FileHandleClosesOnDestructionAndMoves) {
  tmf_test::scoped_path p;
  decltype(os::file().native()) raw{};
  {
    os::file a = create(p);
    raw = a.native();
    os::file b = std::move(a);
    EXPECT_FALSE(a.is_open()) << "a moved-from file still owns its descriptor";
    EXPECT_EQ(b.native(), raw);
    EXPECT_TRUE(handle_open(raw));
  }
  EXPECT_FALSE(handle_open(raw)) << "the destructor did not close the descriptor";
}

TEST(Os, PreadPwriteRoundTripAndShortRead) {
  tmf_test::scoped_path p;
  os::file fd = create(p);
  const char msg[] = "hello, tmf";
  ASSERT_FALSE(os::pwrite_all(fd, msg, sizeof msg, 100));
  char buf[64] = {};
  std::size_t got = 0;
  ASSERT_FALSE(os::pread_all(fd, buf, sizeof msg, 100, got));
  EXPECT_EQ(got, sizeof msg);
  EXPECT_STREQ(buf, msg);
  ASSERT_FALSE(os::pread_all(fd, buf, sizeof buf, 100, got));
  EXPECT_EQ(got, sizeof msg) << "a read past the end must be short, not an error";
}

TEST(Os, PwritevWritesMoreBuffersThanIovMax) {
  tmf_test::scoped_path p;
  os::file fd = create(p);
  const std::size_t n = 3000;  // > IOV_MAX (1024) and > the batch on the stack
  std::vector<std::uint32_t> values(n);
  std::vector<os::buffer> iov(n);
  for (std::size_t i = 0; i < n; ++i) {
    values[i] = static_cast<std::uint32_t>(i * 7 + 1);
    iov[i] = {&values[i], sizeof values[i]};
  }
  ASSERT_FALSE(os::pwritev_all(fd, iov.data(), n, 8));
  std::vector<std::uint32_t> back(n);
  std::size_t got = 0;
  ASSERT_FALSE(os::pread_all(fd, back.data(), n * 4, 8, got));
  EXPECT_EQ(back, values);
}

TEST(Os, AllocateMakesRealBlocksNotHoles) {
  tmf_test::scoped_path p;
  os::file fd = create(p);
  ASSERT_FALSE(os::allocate(fd, 0, 1 << 20));
  os::file_info fi;
#if defined(_WIN32)
  ASSERT_FALSE(os::stat_file(fd, fi));
  EXPECT_EQ(fi.size, 1u << 20);
  // Wine extends a file with ftruncate (a sparse file) and reports no allocation size: NTFS
  // allocates an extended file's clusters (README, "Windows").
  if (!tmf_test::under_wine()) {
    EXPECT_GE(fi.disk_bytes, 1u << 20) << "allocate left the file sparse";
  }
#else
  struct stat st;
  ASSERT_EQ(::fstat(fd.native(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  EXPECT_GE(static_cast<long long>(st.st_blocks) * 512, 1 << 20) << "allocate left the file sparse";
#endif
  ASSERT_FALSE(os::truncate(fd, 4096));
  ASSERT_FALSE(os::stat_file(fd, fi));
  EXPECT_EQ(fi.size, 4096u);
}

TEST(Os, RenameNoReplaceRefusesExistingTarget) {
  tmf_test::scoped_path a(std::string_view("a")), b(std::string_view("b"));
  create(a);
  create(b);
  EXPECT_EQ(os::rename_noreplace(a.path(), b.path()), std::errc::file_exists);
  std::filesystem::remove(b.path());
  EXPECT_FALSE(os::rename_noreplace(a.path(), b.path()));
  EXPECT_TRUE(std::filesystem::exists(b.path()));
  EXPECT_FALSE(std::filesystem::exists(a.path()));
}

TEST(Os, ByteLocksConflictAcrossOpenFilesAndAreIndependentPerByte) {
  tmf_test::scoped_path p;
  os::file fd1 = create(p);
  os::file fd2;
  ASSERT_FALSE(os::open_file(p.path(), os::access::read_write, fd2));
  const auto busy = std::make_error_code(std::errc::resource_unavailable_try_again);
  EXPECT_FALSE(os::lock_byte(fd1, 1, os::lock_kind::exclusive, false));
  EXPECT_EQ(os::lock_byte(fd2, 1, os::lock_kind::exclusive, false), busy)
      << "two open files got the same exclusive byte lock";
  EXPECT_EQ(os::lock_byte(fd2, 1, os::lock_kind::shared, false), busy);
  EXPECT_FALSE(os::lock_byte(fd2, 2, os::lock_kind::exclusive, false)) << "locks on different bytes must not conflict";
  EXPECT_FALSE(os::lock_byte(fd1, 0, os::lock_kind::shared, false));
  EXPECT_FALSE(os::lock_byte(fd2, 0, os::lock_kind::shared, false)) << "shared locks must coexist";
  bool free = false;
  ASSERT_FALSE(os::lock_would_succeed(fd2, 1, os::lock_kind::shared, free));
  EXPECT_FALSE(free) << "lock_would_succeed missed the other file's exclusive lock";
  EXPECT_FALSE(os::unlock_byte(fd1, 1));
  ASSERT_FALSE(os::lock_would_succeed(fd2, 1, os::lock_kind::exclusive, free));
  EXPECT_TRUE(free) << "unlock_byte did not release the lock";
  EXPECT_FALSE(os::lock_byte(fd1, 1, os::lock_kind::exclusive, false));
  fd1.close();  // closing releases
  EXPECT_FALSE(os::lock_byte(fd2, 1, os::lock_kind::exclusive, false)) << "closing the file did not release its lock";
}

TEST(Os, ReserveFixedNeverReplacesAnExistingMapping) {
  void* base = nullptr;
  ASSERT_FALSE(os::reserve(nullptr, 1 << 20, false, base));
#if defined(_WIN32)
  void* p = ::VirtualAlloc(base, page_size, MEM_COMMIT, PAGE_READWRITE);  // inside the reservation
#else
  void* p = ::mmap(base, page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
#endif
  ASSERT_EQ(p, base);
  std::memcpy(p, "keep", 5);
  void* out = nullptr;
  EXPECT_TRUE(os::reserve(base, 1 << 20, true, out)) << "reserve replaced an existing mapping";
  EXPECT_STREQ(static_cast<char*>(p), "keep");
  ASSERT_FALSE(os::release(base, 1 << 20));
  ASSERT_FALSE(os::reserve(base, 1 << 20, true, out)) << "the range was released and must be reservable";
  EXPECT_EQ(out, base);
  os::release(out, 1 << 20);
}

TEST(Os, PrivateMappingKeepsWritesOutOfTheFileUntilDiscarded) {
  tmf_test::scoped_path p;
  os::file fd = create(p);
  std::vector<char> page(page_size, 'f');
  ASSERT_FALSE(os::pwrite_all(fd, page.data(), page_size, 0));
  void* base = nullptr;
  ASSERT_FALSE(os::reserve(nullptr, 4 * page_size, false, base));
  ASSERT_FALSE(os::map_file(base, page_size, fd, 0));
  auto* m = static_cast<char*>(base);
  EXPECT_EQ(m[0], 'f');
  ASSERT_FALSE(os::protect(m, page_size, true));
  m[0] = 'x';
  std::size_t got = 0;
  char c = 0;
  ASSERT_FALSE(os::pread_all(fd, &c, 1, 0, got));
  EXPECT_EQ(c, 'f') << "a private mapping leaked a write into the file";
  // Pagemap sees the written page as a private anonymous copy.
  os::file pm;
  if (!os::open_pagemap(pm)) {
    std::uint64_t e = 0;
    ASSERT_FALSE(os::read_pagemap(pm, m, &e, 1));
    EXPECT_TRUE(os::pagemap_is_private(e)) << "written page not seen as private";
  }
  ASSERT_FALSE(os::discard(m, page_size));
  EXPECT_EQ(m[0], 'f') << "discard did not bring back the file's contents";
  // A change of the file shows through the (clean) private mapping.
  ASSERT_FALSE(os::pwrite_all(fd, "z", 1, 0));
  EXPECT_EQ(m[0], 'z');
  os::release(base, 4 * page_size);
}

std::vector<std::pair<os::io_op, std::uint64_t>> g_ops;
std::error_code record_and_fail_syncs(os::io_op op, const os::file&, std::uint64_t off, std::uint64_t, const void*) {
  g_ops.emplace_back(op, off);
  return op == os::io_op::sync ? std::make_error_code(std::errc::io_error) : std::error_code{};
}

TEST(Os, IoHookSeesEveryWriteAndCanInjectFailures) {
  tmf_test::scoped_path p;
  os::file fd = create(p);
  g_ops.clear();
  os::io_hook = &record_and_fail_syncs;
  EXPECT_FALSE(os::pwrite_all(fd, "abc", 3, 10));
  EXPECT_EQ(os::sync_data(fd), std::errc::io_error);
  EXPECT_FALSE(os::allocate(fd, 0, 8192));
  char c;
  std::size_t got = 0;
  EXPECT_FALSE(os::pread_all(fd, &c, 1, 11, got));
  EXPECT_FALSE(os::truncate(fd, 4096));
  os::io_hook = nullptr;
  ASSERT_EQ(g_ops.size(), 5u);
  EXPECT_EQ(g_ops[0].first, os::io_op::write);
  EXPECT_EQ(g_ops[0].second, 10u);
  EXPECT_EQ(g_ops[1].first, os::io_op::sync);
  EXPECT_EQ(g_ops[2].first, os::io_op::allocate);
  EXPECT_EQ(g_ops[3].first, os::io_op::read);
  EXPECT_EQ(g_ops[3].second, 11u);
  EXPECT_EQ(g_ops[4].first, os::io_op::truncate);
}

TEST(Os, ForkGenerationChangesInTheChildOnly) {
  const auto before = os::fork_generation();
#if defined(_WIN32)
  // No fork: a child process is a new program, whose generation is 0 as the parent's stays.
  EXPECT_EQ(before, 0u);
  EXPECT_EQ(tmf_test::run_in_child(tmf_test::by_value([] { return os::fork_generation() == 0 ? 0 : 1; })), 0);
#else
  int rc = tmf_test::run_in_child([&] { return os::fork_generation() == before ? 1 : 0; });
  EXPECT_EQ(rc, 0) << "the child did not see a new fork generation";
#endif
  EXPECT_EQ(os::fork_generation(), before);
}

// A file cut under its private mapping (storage::compact, the log's shrink): written pages
// below the new end keep their bytes, the part past it reads the file again once the file
// grows back. Windows refuses to cut a mapped file: os_win32's truncate unmaps the views,
// cuts, and maps them again.
TEST(Os, TruncateUnderAPrivateMappingKeepsWrittenPagesAndTheFileGrowsBack) {
  tmf_test::scoped_path p;
  os::file fd = create(p);
  const std::size_t g = std::max(os::map_granularity, std::size_t{64} << 10);  // 64 KiB on both
  const std::vector<char> fill(4 * g, 'f');
  ASSERT_FALSE(os::pwrite_all(fd, fill.data(), fill.size(), 0));
  void* base = nullptr;
  ASSERT_FALSE(os::reserve(nullptr, 8 * g, false, base));
  ASSERT_FALSE(os::map_file(base, 4 * g, fd, 0));
  auto* m = static_cast<volatile char*>(base);
  ASSERT_FALSE(os::protect(base, 4 * g, true));
  m[0] = 'x';          // a private page that stays
  m[3 * g] = 'y';      // one in the part cut off
  ASSERT_EQ(m[page_size], 'f');  // a writable page still shared with the file
  ASSERT_FALSE(os::protect(base, page_size, false));
  ASSERT_FALSE(os::truncate(fd, g));
  os::file_info fi;
  ASSERT_FALSE(os::stat_file(fd, fi));
  EXPECT_EQ(fi.size, g) << "the file was not cut";
  EXPECT_EQ(m[0], 'x') << "the cut lost a written page below the new end";
  EXPECT_EQ(m[g - 1], 'f');
  char c = 0;
  std::size_t got = 0;
  ASSERT_FALSE(os::pread_all(fd, &c, 1, 0, got));
  EXPECT_EQ(c, 'f') << "the cut wrote a private page into the file";
  m[page_size] = 'w';  // still writable (copy-on-write) after the cut
  EXPECT_EQ(m[page_size], 'w');
  ASSERT_FALSE(os::allocate(fd, g, 3 * g));  // grows back: zeros past the old cut
  EXPECT_EQ(m[3 * g], 0) << "the part past the cut does not read the grown file";
  EXPECT_EQ(m[2 * g + 5], 0);
  EXPECT_EQ(m[0], 'x') << "growing lost a written page";
  ASSERT_FALSE(os::pwrite_all(fd, "z", 1, 2 * g));
  EXPECT_EQ(m[2 * g], 'z') << "the mapping past the cut does not follow the file";
  ASSERT_FALSE(os::protect(base, 4 * g, true));
  m[3 * g + 1] = 'v';
  ASSERT_FALSE(os::discard(base, 4 * g));
  EXPECT_EQ(m[0], 'f') << "discard did not bring back the file's contents";
  EXPECT_EQ(m[3 * g + 1], 0);
  os::release(base, 8 * g);
}

char* g_fault_page = nullptr;
int g_faults = 0;
bool make_page_writable(void* addr) noexcept {
  auto* a = static_cast<char*>(addr);
  if (a < g_fault_page || a >= g_fault_page + page_size) return false;
  ++g_faults;
  return !os::protect(g_fault_page, page_size, true);
}

TEST(Os, FaultHandlerRetriesHandledAccessesAndPassesOthersOn) {
  void* base = nullptr;
  // Read-only memory (Windows cannot change the protection of reserved, uncommitted pages);
  // the handler claims the first page only.
  ASSERT_FALSE(os::map_anonymous(2 * page_size, base));
  ASSERT_FALSE(os::protect(base, 2 * page_size, false));
  g_fault_page = static_cast<char*>(base);
  ASSERT_FALSE(os::install_fault_handler(&make_page_writable));
  *static_cast<volatile char*>(base) = 'w';  // faults once; the handler makes it writable
  EXPECT_EQ(*static_cast<volatile char*>(base), 'w');
  EXPECT_EQ(g_faults, 1);
  // A fault the handler does not claim goes on to the handler installed before (the default
  // action, SIGSEGV, or a sanitizer's report): the process dies.
  EXPECT_DEATH(*static_cast<volatile char*>(g_fault_page + page_size) = 1, "");
  os::release(base, 2 * page_size);
}

TEST(Os, MapAnonymousIsZeroedAndWritable) {
  void* p = nullptr;
  ASSERT_FALSE(os::map_anonymous(1 << 20, p));
  auto* c = static_cast<unsigned char*>(p);
  EXPECT_EQ(c[12345], 0);
  c[12345] = 7;
  EXPECT_EQ(c[12345], 7);
  os::release(p, 1 << 20);
}

}  // namespace
