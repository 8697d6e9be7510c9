// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/detail/log.hpp: record format, checksums, torn tails, replay order.
#include <tmf/detail/log.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace tmf::detail;

struct log_fixture : ::testing::Test {
  tmf_test::scoped_path log_file{std::string_view("log")};
  tmf_test::scoped_path data_file{std::string_view("data")};
  os::file log_fd, data_fd;
  std::vector<unsigned char> mem = std::vector<unsigned char>(8 * page_size);
  std::vector<std::uint64_t> pages{0, 2, 3, 7};

  void SetUp() override {
    ASSERT_FALSE(os::create_file(log_file.path(), log_fd));
    ASSERT_FALSE(os::create_file(data_file.path(), data_fd));
    for (std::size_t i = 0; i < mem.size(); ++i) mem[i] = static_cast<unsigned char>(i * 31 + i / page_size);
  }
  std::uint64_t write(std::uint64_t off = log_start, std::uint64_t txn = 5) {
    EXPECT_FALSE(write_record(log_fd, off, txn, 42, 7, pages.data(), pages.size(), mem.data()));
    return off + record_size(pages.size());
  }
  bool valid_at(std::uint64_t off, std::uint64_t txn = 5, std::uint64_t file_id = 42, record_info* out = nullptr) {
    bool valid = false;
    record_info info;
    EXPECT_FALSE(check_record(log_fd, off, txn, file_id, 7, 8, valid, info));
    if (out) *out = info;
    return valid;
  }
};

TEST_F(log_fixture, HeaderRoundTripAndValidation) {
  log_control c;
  bool valid = true;
  ASSERT_FALSE(read_log_control(log_fd, 42, c, valid));
  EXPECT_FALSE(valid) << "an empty log has no valid header";
  ASSERT_FALSE(write_log_header(log_fd, 42, 17, 3, true));
  ASSERT_FALSE(read_log_control(log_fd, 42, c, valid));
  EXPECT_TRUE(valid);
  EXPECT_EQ(c.header.base_txn, 17u);
  EXPECT_EQ(c.header.generation, 3u);
  ASSERT_FALSE(read_log_control(log_fd, 43, c, valid));
  EXPECT_FALSE(valid) << "a log of another data file was accepted";
  ASSERT_FALSE(os::pwrite_all(log_fd, "X", 1, 20));
  ASSERT_FALSE(read_log_control(log_fd, 42, c, valid));
  EXPECT_FALSE(valid) << "a damaged header was accepted";
}

TEST_F(log_fixture, RecordRoundTrip) {
  std::uint64_t end = write();
  record_info info;
  ASSERT_TRUE(valid_at(log_start, 5, 42, &info));
  EXPECT_EQ(info.txn, 5u);
  EXPECT_EQ(info.page_count, pages.size());
  EXPECT_EQ(info.end, end);
  EXPECT_FALSE(valid_at(log_start, 6)) << "wrong transaction id accepted";
  EXPECT_FALSE(valid_at(log_start, 5, 41)) << "wrong file id accepted";
  EXPECT_FALSE(valid_at(end)) << "nothing after the record";
}

TEST_F(log_fixture, EveryTornTailIsRejected) {
  std::uint64_t end = write();
  // A crash can leave any prefix of the record: only the whole of it counts.
  for (std::uint64_t cut = log_start; cut < end; cut += 509) {
    ASSERT_FALSE(os::truncate(log_fd, cut));
    EXPECT_FALSE(valid_at(log_start)) << "record cut at " << cut - log_start << " of " << end - log_start
                                      << " bytes was accepted";
    write();
  }
}

TEST_F(log_fixture, AnyFlippedByteIsRejected) {
  std::uint64_t end = write();
  for (std::uint64_t at = log_start; at < end; at += 97) {
    unsigned char b;
    std::size_t got;
    ASSERT_FALSE(os::pread_all(log_fd, &b, 1, at, got));
    unsigned char f = b ^ 0x10;
    ASSERT_FALSE(os::pwrite_all(log_fd, &f, 1, at));
    EXPECT_FALSE(valid_at(log_start)) << "flipped byte at record offset " << at - log_start << " accepted";
    ASSERT_FALSE(os::pwrite_all(log_fd, &b, 1, at));
  }
  EXPECT_TRUE(valid_at(log_start));
}

std::vector<std::uint64_t> g_write_offsets;
const os::file* g_data_file = nullptr;
std::error_code record_data_writes(os::io_op op, const os::file& f, std::uint64_t off, std::uint64_t, const void*) {
  if (op == os::io_op::write && &f == g_data_file) g_write_offsets.push_back(off);
  return {};
}

TEST_F(log_fixture, ApplyRecordCopiesPagesAndWritesTheHeaderPageLast) {
  write();
  record_info info;
  ASSERT_TRUE(valid_at(log_start, 5, 42, &info));
  g_data_file = &data_fd;
  g_write_offsets.clear();
  os::io_hook = &record_data_writes;
  std::vector<record_entry> entries;
  ASSERT_FALSE(read_record_entries(log_fd, info, entries));
  ASSERT_EQ(entries.size(), pages.size());
  ASSERT_FALSE(apply_record(log_fd, info, entries, data_fd));
  os::io_hook = nullptr;
  ASSERT_EQ(g_write_offsets.size(), pages.size());
  EXPECT_EQ(g_write_offsets.back(), 0u) << "page 0 must be applied last";
  std::vector<unsigned char> page(page_size);
  for (auto p : pages) {
    std::size_t got;
    ASSERT_FALSE(os::pread_all(data_fd, page.data(), page_size, p * page_size, got));
    EXPECT_EQ(0, std::memcmp(page.data(), mem.data() + p * page_size, page_size)) << "page " << p;
  }
}

TEST_F(log_fixture, ApplyPagesCoalescesRunsAndWritesPageZeroLast) {
  g_data_file = &data_fd;
  g_write_offsets.clear();
  os::io_hook = &record_data_writes;
  std::vector<std::uint64_t> run{0, 1, 2, 3, 5, 6};
  ASSERT_FALSE(apply_pages(data_fd, run.data(), run.size(), mem.data()));
  os::io_hook = nullptr;
  // The seam sees each page of a run (pages 1-3, then 5-6), then page 0 last.
  EXPECT_EQ(g_write_offsets,
            (std::vector<std::uint64_t>{page_size, 2 * page_size, 3 * page_size, 5 * page_size, 6 * page_size, 0}));
  std::vector<unsigned char> back(7 * page_size);
  std::size_t got;
  ASSERT_FALSE(os::pread_all(data_fd, back.data(), back.size(), 0, got));
  for (auto p : run)
    EXPECT_EQ(0, std::memcmp(back.data() + p * page_size, mem.data() + p * page_size, page_size)) << "page " << p;
}

TEST_F(log_fixture, RecordOfAnotherGenerationIsNeverValid) {
  write();
  bool valid = true;
  record_info info;
  ASSERT_FALSE(check_record(log_fd, log_start, 5, 42, 8, 8, valid, info));
  EXPECT_FALSE(valid) << "a record of an earlier log generation was accepted";
  EXPECT_NE(next_generation(0, 42, 5), next_generation(next_generation(0, 42, 5), 42, 5))
      << "a restart at the same transaction reused the generation";
}

TEST_F(log_fixture, ConsecutiveRecordsChain) {
  std::uint64_t end = write(log_start, 5);
  std::uint64_t end2 = write(end, 6);
  record_info info;
  ASSERT_TRUE(valid_at(end, 6, 42, &info));
  EXPECT_EQ(info.end, end2);
  EXPECT_FALSE(valid_at(end, 7));
}

TEST_F(log_fixture, ControlPageWordsRoundTrip) {
  log_control c;
  bool valid = true;
  ASSERT_FALSE(read_log_control(log_fd, 42, c, valid));
  EXPECT_FALSE(valid);
  EXPECT_EQ(c.marker.txn, 0u) << "an absent marker must read as transaction 0";
  ASSERT_FALSE(write_log_header(log_fd, 42, 9, 3, false));
  ASSERT_FALSE(write_apply_marker(log_fd, 11));
  ASSERT_FALSE(set_commit_pending(log_fd, 1));
  ASSERT_FALSE(set_reapply_needed(log_fd, 1));
  ASSERT_FALSE(read_log_control(log_fd, 42, c, valid));
  EXPECT_TRUE(valid);
  EXPECT_EQ(c.header.base_txn, 9u);
  EXPECT_EQ(c.marker.txn, 11u);
  EXPECT_EQ(c.commit_pending, 1u);
  EXPECT_EQ(c.reapply_needed, 1u);
  ASSERT_FALSE(os::pwrite_all(log_fd, "X", 1, offsetof(log_control, marker)));  // a damaged marker magic
  ASSERT_FALSE(read_log_control(log_fd, 42, c, valid));
  EXPECT_EQ(c.marker.txn, 0u) << "a marker with a bad magic was trusted";
}

TEST(LogFile, AppendsPreallocatesAndShowsTheControlPageThroughItsView) {
  tmf_test::scoped_path p;
  log_file log;
  ASSERT_FALSE(log.open(p.path(), true));
  ASSERT_FALSE(write_log_header(log.file(), 42, 0, 1, false));
  ASSERT_FALSE(write_apply_marker(log.file(), 3));
  ASSERT_FALSE(set_commit_pending(log.file(), 0));
  ASSERT_FALSE(set_reapply_needed(log.file(), 0));
  EXPECT_EQ(log.marker_txn(), 3u) << "marker read through pread";
  log.map_view();
  EXPECT_FALSE(log.commit_pending());
  // Another open file (another process) raises the word: the view shows it at once.
  os::file other;
  ASSERT_FALSE(os::open_file(p.path(), os::access::read_write, other));
  ASSERT_FALSE(set_commit_pending(other, 1));
  EXPECT_TRUE(log.commit_pending()) << "the shared view did not show another file's write";
  ASSERT_FALSE(write_apply_marker(other, 4));
  EXPECT_EQ(log.marker_txn(), 4u);

  std::vector<unsigned char> mem(2 * page_size, 7);
  const std::uint64_t pages[] = {0, 1};
  ASSERT_FALSE(log.append(1, 42, pages, 2, mem.data()));
  os::file_info fi;
  ASSERT_FALSE(os::stat_file(log.file(), fi));
  EXPECT_GE(fi.size, log_growth_step) << "the log was not preallocated by a whole step";
  bool valid = false;
  record_info info;
  ASSERT_FALSE(check_record(log.file(), log_start, 1, 42, 0, 8, valid, info));
  EXPECT_TRUE(valid);
  EXPECT_EQ(info.end, log_start + record_size(2));
  log.shrink_to(log_start, 0);
  ASSERT_FALSE(os::stat_file(log.file(), fi));
#if defined(_WIN32)
  (void)fi;  // Windows (Wine at least) refuses to truncate a file that a view maps: the log keeps its size
#else
  EXPECT_EQ(fi.size, log_start);
#endif
}

TEST(LogFile, ReadOnlyOpenOfAMissingLogIsNotAnError) {
  tmf_test::scoped_path p;
  log_file log;
  EXPECT_FALSE(log.open(p.path(), false));
  EXPECT_FALSE(log.is_open());
  EXPECT_EQ(log.marker_txn(), 0u);
  EXPECT_FALSE(log.commit_pending());
}

}  // namespace
