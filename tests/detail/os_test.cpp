// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/detail/os.hpp: the system-call layer's contract.
#include <tmf/detail/os.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>
#include <vector>

#include "test_support.hpp"

namespace os = tmf::detail::os;
using tmf::detail::page_size;

namespace {

int create(const std::filesystem::path& p) {
  int fd = -1;
  EXPECT_FALSE(os::create_file(p, fd)) << "create_file " << p;
  return fd;
}

TEST(Os, OpenMissingFileReportsEnoent) {
  tmf_test::scoped_path p;
  int fd = -1;
  auto ec = os::open_file(p.path(), os::access::read_write, fd);
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory) << ec.message();
}

TEST(Os, CreateRefusesExistingFileAndSetsCloexec) {
  tmf_test::scoped_path p;
  int fd = create(p);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC) << "descriptor is not close-on-exec";
  int fd2 = -1;
  EXPECT_EQ(os::create_file(p.path(), fd2), std::errc::file_exists);
  os::close_file(fd);
}

TEST(Os, PreadPwriteRoundTripAndShortRead) {
  tmf_test::scoped_path p;
  int fd = create(p);
  const char msg[] = "hello, tmf";
  ASSERT_FALSE(os::pwrite_all(fd, msg, sizeof msg, 100));
  char buf[64] = {};
  std::size_t got = 0;
  ASSERT_FALSE(os::pread_all(fd, buf, sizeof msg, 100, got));
  EXPECT_EQ(got, sizeof msg);
  EXPECT_STREQ(buf, msg);
  ASSERT_FALSE(os::pread_all(fd, buf, sizeof buf, 100, got));
  EXPECT_EQ(got, sizeof msg) << "a read past the end must be short, not an error";
  os::close_file(fd);
}

TEST(Os, PwritevWritesMoreBuffersThanIovMax) {
  tmf_test::scoped_path p;
  int fd = create(p);
  const std::size_t n = 3000;  // > IOV_MAX (1024)
  std::vector<std::uint32_t> values(n);
  std::vector<struct iovec> iov(n);
  for (std::size_t i = 0; i < n; ++i) {
    values[i] = static_cast<std::uint32_t>(i * 7 + 1);
    iov[i] = {&values[i], sizeof values[i]};
  }
  ASSERT_FALSE(os::pwritev_all(fd, iov.data(), n, 8));
  std::vector<std::uint32_t> back(n);
  std::size_t got = 0;
  ASSERT_FALSE(os::pread_all(fd, back.data(), n * 4, 8, got));
  EXPECT_EQ(back, values);
  os::close_file(fd);
}

TEST(Os, AllocateMakesRealBlocksNotHoles) {
  tmf_test::scoped_path p;
  int fd = create(p);
  ASSERT_FALSE(os::allocate(fd, 0, 1 << 20));
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  EXPECT_GE(static_cast<long long>(st.st_blocks) * 512, 1 << 20) << "allocate left the file sparse";
  ASSERT_FALSE(os::truncate(fd, 4096));
  os::file_info fi;
  ASSERT_FALSE(os::stat_file(fd, fi));
  EXPECT_EQ(fi.size, 4096u);
  os::close_file(fd);
}

TEST(Os, RenameNoReplaceRefusesExistingTarget) {
  tmf_test::scoped_path a(std::string_view("a")), b(std::string_view("b"));
  os::close_file(create(a));
  os::close_file(create(b));
  EXPECT_EQ(os::rename_noreplace(a.path(), b.path()), std::errc::file_exists);
  std::filesystem::remove(b.path());
  EXPECT_FALSE(os::rename_noreplace(a.path(), b.path()));
  EXPECT_TRUE(std::filesystem::exists(b.path()));
  EXPECT_FALSE(std::filesystem::exists(a.path()));
}

TEST(Os, ByteLocksConflictAcrossOpenFilesAndAreIndependentPerByte) {
  tmf_test::scoped_path p;
  int fd1 = create(p);
  int fd2 = -1;
  ASSERT_FALSE(os::open_file(p.path(), os::access::read_write, fd2));
  bool got = false;
  ASSERT_FALSE(os::lock_byte(fd1, 1, os::lock_kind::exclusive, false, got));
  EXPECT_TRUE(got);
  ASSERT_FALSE(os::lock_byte(fd2, 1, os::lock_kind::exclusive, false, got));
  EXPECT_FALSE(got) << "two open files got the same exclusive byte lock";
  ASSERT_FALSE(os::lock_byte(fd2, 1, os::lock_kind::shared, false, got));
  EXPECT_FALSE(got);
  ASSERT_FALSE(os::lock_byte(fd2, 2, os::lock_kind::exclusive, false, got));
  EXPECT_TRUE(got) << "locks on different bytes must not conflict";
  ASSERT_FALSE(os::lock_byte(fd1, 0, os::lock_kind::shared, false, got));
  EXPECT_TRUE(got);
  ASSERT_FALSE(os::lock_byte(fd2, 0, os::lock_kind::shared, false, got));
  EXPECT_TRUE(got) << "shared locks must coexist";
  os::close_file(fd1);  // closing releases
  ASSERT_FALSE(os::lock_byte(fd2, 1, os::lock_kind::exclusive, false, got));
  EXPECT_TRUE(got) << "closing the descriptor did not release its lock";
  os::close_file(fd2);
}

TEST(Os, ReserveFixedNeverReplacesAnExistingMapping) {
  void* base = nullptr;
  ASSERT_FALSE(os::reserve(nullptr, 1 << 20, false, base));
  void* p = ::mmap(base, page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
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
  int fd = create(p);
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
  int pm = -1;
  if (!os::open_pagemap(pm)) {
    std::uint64_t e = 0;
    ASSERT_FALSE(os::read_pagemap(pm, m, &e, 1));
    EXPECT_TRUE(os::pagemap_is_private(e)) << "written page not seen as private";
    os::close_file(pm);
  }
  ASSERT_FALSE(os::discard(m, page_size));
  EXPECT_EQ(m[0], 'f') << "discard did not bring back the file's contents";
  // A change of the file shows through the (clean) private mapping.
  ASSERT_FALSE(os::pwrite_all(fd, "z", 1, 0));
  EXPECT_EQ(m[0], 'z');
  os::release(base, 4 * page_size);
  os::close_file(fd);
}

std::vector<std::pair<os::io_op, std::uint64_t>> g_ops;
std::error_code record_and_fail_syncs(os::io_op op, int, std::uint64_t off, std::uint64_t, const void*) {
  g_ops.emplace_back(op, off);
  return op == os::io_op::sync ? std::make_error_code(std::errc::io_error) : std::error_code{};
}

TEST(Os, IoHookSeesEveryWriteAndCanInjectFailures) {
  tmf_test::scoped_path p;
  int fd = create(p);
  g_ops.clear();
  os::io_hook = &record_and_fail_syncs;
  EXPECT_FALSE(os::pwrite_all(fd, "abc", 3, 10));
  EXPECT_EQ(os::sync_data(fd), std::errc::io_error);
  EXPECT_FALSE(os::allocate(fd, 0, 8192));
  os::io_hook = nullptr;
  ASSERT_EQ(g_ops.size(), 3u);
  EXPECT_EQ(g_ops[0].first, os::io_op::write);
  EXPECT_EQ(g_ops[0].second, 10u);
  EXPECT_EQ(g_ops[1].first, os::io_op::sync);
  EXPECT_EQ(g_ops[2].first, os::io_op::allocate);
  os::close_file(fd);
}

TEST(Os, ForkGenerationChangesInTheChildOnly) {
  const auto before = os::fork_generation();
  int rc = tmf_test::run_in_child([&] { return os::fork_generation() == before ? 1 : 0; });
  EXPECT_EQ(rc, 0) << "the child did not see a new fork generation";
  EXPECT_EQ(os::fork_generation(), before);
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
