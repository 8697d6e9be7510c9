// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/detail/log.hpp: record format, checksums, torn tails, replay order, diffs.
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
  // Ascending, no overlap: page 0's header and a field, page 2 whole and page 3's first word
  // (adjacent in the file), two more pieces.
  std::vector<record_extent> ext{{0, 0, header_extent_bytes, 0}, {0, 1000, 16, 0}, {2, 0, page_size, 0},
                                 {3, 0, 8, 0}, {3, 100, 50, 0}, {7, 4000, 96, 0}};

  void SetUp() override {
    ASSERT_FALSE(os::create_file(log_file.path(), log_fd));
    ASSERT_FALSE(os::create_file(data_file.path(), data_fd));
    for (std::size_t i = 0; i < mem.size(); ++i) mem[i] = static_cast<unsigned char>(i * 31 + i / page_size);
  }
  std::uint64_t write(std::uint64_t off = log_start, std::uint64_t txn = 5) {
    EXPECT_FALSE(write_record(log_fd, off, txn, 42, 7, ext.data(), ext.size(), mem.data()));
    return off + record_size(ext.size(), extent_bytes(ext.data(), ext.size()));
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
  EXPECT_EQ(info.extent_count, ext.size());
  EXPECT_EQ(info.data_bytes, header_extent_bytes + 16 + page_size + 8 + 50 + 96);
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

// What a data file of 8 pages of 0xee looks like once `ext` of `mem` is written into it.
std::vector<unsigned char> expected_image(const std::vector<record_extent>& ext, const std::vector<unsigned char>& mem) {
  std::vector<unsigned char> img(8 * page_size, 0xee);
  for (const auto& e : ext) std::memcpy(img.data() + extent_position(e), mem.data() + extent_position(e), e.length);
  return img;
}
std::vector<unsigned char> read_image(const os::file& f) {
  std::vector<unsigned char> img(8 * page_size);
  std::size_t got;
  EXPECT_FALSE(os::pread_all(f, img.data(), img.size(), 0, got));
  return img;
}
void fill_old(const os::file& f) {
  std::vector<unsigned char> old(8 * page_size, 0xee);
  ASSERT_FALSE(os::pwrite_all(f, old.data(), old.size(), 0));
}

TEST_F(log_fixture, ApplyRecordWritesOnlyTheExtentsHeaderPageLast) {
  write();
  fill_old(data_fd);
  record_info info;
  ASSERT_TRUE(valid_at(log_start, 5, 42, &info));
  g_data_file = &data_fd;
  g_write_offsets.clear();
  os::io_hook = &record_data_writes;
  std::vector<record_extent> back;
  ASSERT_FALSE(read_record_extents(log_fd, info, back));
  ASSERT_EQ(back.size(), ext.size());
  ASSERT_FALSE(apply_record(log_fd, info, back, data_fd));
  os::io_hook = nullptr;
  // Page 2 and page 3's first word in one write; page 0's extents last, back to front.
  EXPECT_EQ(g_write_offsets, (std::vector<std::uint64_t>{2 * page_size, 3 * page_size + 100, 7 * page_size + 4000,
                                                         1000, 0}));
  EXPECT_TRUE(read_image(data_fd) == expected_image(ext, mem)) << "bytes outside the extents changed, or missing";
  // Replaying it again (recovery after a crash in the middle of a replay) changes nothing.
  ASSERT_FALSE(apply_record(log_fd, info, back, data_fd));
  EXPECT_TRUE(read_image(data_fd) == expected_image(ext, mem));
}

TEST_F(log_fixture, ApplyExtentsWritesRunsOfPagesInOneCallAndPageZeroLast) {
  // The file as committed: `mem` but for the extents' bytes (what the extents were diffed against).
  std::vector<unsigned char> committed = mem;
  for (const auto& e : ext)
    for (std::uint32_t k = 0; k < e.length; ++k) committed[extent_position(e) + k] ^= 0xff;
  ASSERT_FALSE(os::pwrite_all(data_fd, committed.data(), committed.size(), 0));
  g_data_file = &data_fd;
  g_write_offsets.clear();
  os::io_hook = &record_data_writes;
  ASSERT_FALSE(apply_extents(data_fd, ext.data(), ext.size(), mem.data()));
  os::io_hook = nullptr;
  // Pages 2-3 (three extents) as whole pages in one call, a buffer each; page 7's lone
  // extent alone; page 0's extents last, back to front.
  EXPECT_EQ(g_write_offsets, (std::vector<std::uint64_t>{2 * page_size, 3 * page_size, 7 * page_size + 4000, 1000, 0}));
  EXPECT_TRUE(read_image(data_fd) == mem) << "the file is not the committed state";
}

TEST_F(log_fixture, RecordsReplayedInOrderTwiceGiveTheLastState) {
  // Two records over the same bytes: replaying both again in order (a second recovery after a
  // cut during the first) ends at the second one's bytes.
  fill_old(data_fd);
  const std::uint64_t end = write(log_start, 5);
  const std::vector<unsigned char> first = mem;
  for (auto& b : mem) b = static_cast<unsigned char>(b ^ 0x5a);
  const std::uint64_t end2 = write(end, 6);
  ASSERT_GT(end2, end);
  for (int round = 0; round < 2; ++round)
    for (std::uint64_t off = log_start, txn = 5; txn <= 6; ++txn) {
      record_info info;
      ASSERT_TRUE(valid_at(off, txn, 42, &info));
      std::vector<record_extent> e;
      ASSERT_FALSE(read_record_extents(log_fd, info, e));
      ASSERT_FALSE(apply_record(log_fd, info, e, data_fd));
      off = info.end;
    }
  EXPECT_TRUE(read_image(data_fd) == expected_image(ext, mem));
  EXPECT_FALSE(read_image(data_fd) == expected_image(ext, first));
}

TEST_F(log_fixture, MalformedExtentListsAreRejected) {
  // Checksums right, the list wrong: each must be refused before anything is applied.
  const std::vector<std::vector<record_extent>> bad{
      {{0, 0, 64, 0}, {3, 100, 50, 0}, {3, 120, 10, 0}},  // overlap
      {{0, 0, 64, 0}, {3, 100, 50, 0}, {2, 0, 8, 0}},     // descending
      {{0, 0, 64, 0}, {3, 4090, 16, 0}},                  // past the end of its page
      {{0, 0, 64, 0}, {3, 10, 0, 0}},                     // empty
      {{0, 0, 64, 0}, {8, 0, 8, 0}},                      // past max_pages
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    auto e = bad[i];
    ASSERT_FALSE(os::truncate(log_fd, 0));
    std::vector<unsigned char> big(16 * page_size, 1);
    ASSERT_FALSE(write_record(log_fd, log_start, 5, 42, 7, e.data(), e.size(), big.data()));
    EXPECT_FALSE(valid_at(log_start)) << "malformed extent list " << i << " was accepted";
  }
}

TEST(DiffPage, LogsChangedWordsMergesSmallGapsAndFallsBackToTheWholePage) {
  std::vector<unsigned char> was(page_size, 1), now(page_size, 1);
  std::vector<record_extent> out;
  diff_page(now.data(), was.data(), 5, out);
  EXPECT_TRUE(out.empty()) << "an unchanged page logged bytes";
  now[100] = 2;   // word 96..104
  now[120] = 2;   // word 120..128: 16 bytes away, merged
  now[1000] = 2;  // far: its own extent
  diff_page(now.data(), was.data(), 5, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].page, 5u);
  EXPECT_EQ(out[0].offset, 96u);
  EXPECT_EQ(out[0].length, 32u);
  EXPECT_EQ(out[1].offset, 1000u / 8 * 8);
  EXPECT_EQ(out[1].length, 8u);
  now[page_size - 1] = 2;
  out.clear();
  diff_page(now.data(), was.data(), 5, out);
  EXPECT_EQ(out.back().offset + out.back().length, page_size) << "the last word was missed";

  out.clear();
  for (std::size_t i = 0; i < page_size * 3 / 4; ++i) now[i] = 3;
  diff_page(now.data(), was.data(), 5, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].length, page_size) << "a mostly changed page is logged whole";

  out.clear();
  now = was;
  for (std::size_t i = 0; i < 70; ++i) now[i * 56] = 9;  // 70 small pieces 48 bytes apart
  diff_page(now.data(), was.data(), 5, out);
  ASSERT_EQ(out.size(), 1u) << "more than max_extents_per_page pieces must go whole";
  EXPECT_EQ(out[0].length, page_size);

  out.clear();
  std::vector<unsigned char> zeros(page_size, 0), one = zeros;
  one[8] = 1;
  diff_page(one.data(), zeros.data(), 5, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].length, page_size) << "a page that was all zeros (new, or a hole) must go whole";
}

TEST(DiffPage, PageZeroAlwaysCarriesTheWholeHeader) {
  std::vector<unsigned char> was(page_size, 1), now(page_size, 1);
  std::vector<record_extent> out;
  diff_page(now.data(), was.data(), 0, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].offset, 0u);
  EXPECT_EQ(out[0].length, header_extent_bytes);
  now[header_extent_bytes + 8] = 2;  // close: merged into the header's extent
  now[3000] = 2;
  out.clear();
  diff_page(now.data(), was.data(), 0, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].length, header_extent_bytes + 16);
  EXPECT_EQ(out[1].offset, 3000u / 8 * 8);
}

void diff_pages_case(const os::file& data_fd, std::vector<unsigned char>& mem, committed_view* view) {
  // The file holds pages 0-3 as `mem` had them; pages 2 and 5 changed in memory.
  ASSERT_FALSE(os::pwrite_all(data_fd, mem.data(), 4 * page_size, 0));
  mem[2 * page_size + 200] ^= 1;
  mem[5 * page_size + 8] ^= 1;
  const std::uint64_t dirty[] = {0, 2, 3, 5};
  std::vector<record_extent> out;
  std::vector<unsigned char> scratch;
  ASSERT_FALSE(diff_pages(data_fd, dirty, 4, mem.data(), out, scratch, view));
  ASSERT_EQ(out.size(), 3u) << "page 3 did not change: no extent";
  EXPECT_EQ(out[0].page, 0u);
  EXPECT_EQ(out[0].length, header_extent_bytes);
  EXPECT_EQ(out[1].page, 2u);
  EXPECT_EQ(out[1].offset, 200u);
  EXPECT_EQ(out[1].length, 8u);
  EXPECT_EQ(out[2].page, 5u);
  EXPECT_EQ(out[2].length, page_size) << "a page past the file's end must go whole";
}

TEST_F(log_fixture, DiffPagesReadsTheOriginalsAndTreatsPagesPastTheEndAsNew) { diff_pages_case(data_fd, mem, nullptr); }

TEST_F(log_fixture, DiffPagesThroughASharedViewGivesTheSameExtents) {
  committed_view view;
  diff_pages_case(data_fd, mem, &view);
#if !defined(_WIN32) && UINTPTR_MAX > 0xffffffffu
  EXPECT_NE(view.get(data_fd, 4 * page_size), nullptr) << "the view path was not taken";
#endif
}

TEST_F(log_fixture, DiffChecksumsAreTheRecordsAndTheHeaderPageIsChecksummedAtWrite) {
  // The engine writes its records with extent_checksums::header_only: every extent outside
  // page 0 keeps the checksum diff_page gave it while the page was hot.
  std::vector<unsigned char> was(mem);
  for (std::size_t p = 1; p < 8; ++p) mem[p * page_size + 64 * p] ^= 0x5a;  // one word per page
  std::vector<record_extent> out;
  for (std::uint64_t p = 0; p < 8; ++p) diff_page(mem.data() + p * page_size, was.data() + p * page_size, p, out);
  ASSERT_EQ(out.size(), 8u);
  for (const auto& e : out) {
    if (e.page == 0) {
      EXPECT_EQ(e.checksum, 0u) << "page 0 was checksummed before its header is sealed";
    } else {
      EXPECT_EQ(e.checksum, extent_checksum(mem.data() + extent_position(e), e)) << "page " << e.page;
    }
  }
  mem[10] ^= 1;  // the header changes after the diff, as seal_header does
  ASSERT_FALSE(write_record(log_fd, log_start, 5, 42, 7, out.data(), out.size(), mem.data(),
                            extent_checksums::header_only));
  EXPECT_EQ(out[0].checksum, extent_checksum(mem.data(), out[0])) << "page 0 was not checksummed at write";
  EXPECT_TRUE(valid_at(log_start)) << "a record of diff_page's checksums did not validate";
  // A stale checksum outside page 0 is written as given (header_only trusts the diff), and fails.
  out[3].checksum ^= 1;
  ASSERT_FALSE(write_record(log_fd, log_start, 5, 42, 7, out.data(), out.size(), mem.data(),
                            extent_checksums::header_only));
  EXPECT_FALSE(valid_at(log_start)) << "header_only recomputed a checksum outside page 0";
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
  record_extent ext[] = {{0, 0, header_extent_bytes, 0}, {1, 0, page_size, 0}};
  ASSERT_FALSE(log.append(1, 42, ext, 2, mem.data()));
  os::file_info fi;
  ASSERT_FALSE(os::stat_file(log.file(), fi));
  EXPECT_GE(fi.size, log_growth_step) << "the log was not preallocated by a whole step";
  bool valid = false;
  record_info info;
  ASSERT_FALSE(check_record(log.file(), log_start, 1, 42, 0, 8, valid, info));
  EXPECT_TRUE(valid);
  EXPECT_EQ(info.end, log_start + record_size(2, header_extent_bytes + page_size));
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
