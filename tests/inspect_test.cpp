// SPDX-License-Identifier: Apache-2.0 OR MIT
// tmf::untyped_storage (inspect.hpp), storage::copy_to and storage::compact
// (detail/maintenance.hpp): the untyped open reads any storage without its Root type and
// never writes; refuses empty, garbage, foreign, truncated and damaged files; a copy taken
// while another process commits continuously is a committed state; compaction gives space
// back, and the file reopens and passes its audit.
#include <tmf/inspect.hpp>
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using tmf_test::read_bytes;
using tmf_test::scoped_path;

/// Every commit keeps: items == {1, 2, ..., count}, sum == count * (count + 1) / 2.
struct counted_root {
  std::uint64_t count = 0;
  std::uint64_t sum = 0;
  tmf::vector<std::uint64_t> items;
  std::array<unsigned char*, 64> blocks{};
};

void commit_one(tmf::storage<counted_root>& s) {
  auto w = s.write();
  const std::uint64_t n = ++w->count;
  w->sum += n;
  w->items.push_back(n);
  w.commit();
}

/// Empty string if the invariant holds.
std::string invariant_violation(const counted_root& r) {
  if (r.items.size() != r.count) return "items.size() " + std::to_string(r.items.size()) + " != count " + std::to_string(r.count);
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < r.items.size(); ++i) {
    if (r.items[i] != i + 1) return "items[" + std::to_string(i) + "] = " + std::to_string(r.items[i]);
    sum += r.items[i];
  }
  if (sum != r.sum || r.sum != r.count * (r.count + 1) / 2) return "sum " + std::to_string(r.sum) + " is not the items'";
  return {};
}

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <class F>
::testing::AssertionResult throws_code(F&& f, tmf::errc expected) {
  try {
    f();
  } catch (const tmf::error& e) {
    if (e.code() == expected) return ::testing::AssertionSuccess() << e.what();
    return ::testing::AssertionFailure() << "threw " << e.code() << ": " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// -- the untyped open -------------------------------------------------------------------

TEST(UntypedStorage, ReadsAStorageWithoutItsRootAndWritesNothing) {
  scoped_path path;
  {
    tmf::storage<counted_root> s(path);
    for (int i = 0; i < 5; ++i) commit_one(s);
  }
  std::filesystem::remove(tmf_test::lock_path(path));  // not even the lock file may appear
  const auto data = read_bytes(path);
  const auto log = read_bytes(path.log());
  {
    tmf::untyped_storage u(path);
    const tmf::storage_info i = u.info();
    EXPECT_EQ(i.format_version, tmf::detail::format_version);
    EXPECT_EQ(i.last_durability, "full");  // the default of the storage that wrote it
    EXPECT_EQ(i.word_size, sizeof(void*));
    EXPECT_TRUE(i.has_root);
    EXPECT_NE(i.root_name.find("counted_root"), std::string::npos) << i.root_name;
    EXPECT_EQ(i.root_size, sizeof(counted_root));
    EXPECT_EQ(i.root_fingerprint, tmf::schema_fingerprint<counted_root>());
    EXPECT_EQ(i.txn, 6u);  // the Root's creation, then five commits
    EXPECT_EQ(i.log, tmf::log_state::clean);
    EXPECT_EQ(i.log_base_txn, 6u);
    EXPECT_FALSE(i.recovered_in_memory);
    EXPECT_FALSE(i.open_elsewhere);
    EXPECT_EQ(i.file_bytes, data.size());
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(u.address()), i.address);
    u.check();
    const tmf::storage_stats st = u.stats();
    EXPECT_EQ(st.arena_bytes, i.arena_bytes);
    EXPECT_GT(st.allocated_bytes, sizeof(counted_root));
    std::uint64_t free = 0;
    for (const auto& x : u.free_extents()) free += x.size;
    EXPECT_EQ(free, st.free_bytes);
  }
  EXPECT_EQ(read_bytes(path), data);
  EXPECT_EQ(read_bytes(path.log()), log);
  EXPECT_FALSE(std::filesystem::exists(tmf_test::lock_path(path))) << "the untyped read-only open wrote a lock file";
}

/// Creates the storage at `path`, then commits three times in a child that exits without
/// closing, so the log keeps its three records. The child's exit code.
int die_after_three_commits(const scoped_path& path) {
  { tmf::storage<counted_root> s(path); }
  return tmf_test::run_in_child(tmf_test::by_value([path = tmf_test::child_path(path.path())] {
    tmf::storage<counted_root> s(path);
    for (int i = 0; i < 3; ++i) commit_one(s);
    std::_Exit(0);  // no close: the log keeps its records
    return 0;
  }));
}

TEST(UntypedStorage, SeesTheLogOfAWriterThatDied) {
  scoped_path path;
  ASSERT_EQ(die_after_three_commits(path), 0);
  const auto data = read_bytes(path);
  const auto log = read_bytes(path.log());
  {
    tmf::untyped_storage u(path);
    const tmf::storage_info i = u.info();
    EXPECT_EQ(i.txn, 4u);
    EXPECT_EQ(i.log_records, 3u);
    EXPECT_EQ(i.log_last_txn, 4u);
    EXPECT_TRUE(i.log == tmf::log_state::applied || i.log == tmf::log_state::unapplied);
    u.check();
  }
  EXPECT_EQ(read_bytes(path), data);
  EXPECT_EQ(read_bytes(path.log()), log);
}

// The identity checks run on the header as recovery leaves it. Here the header on disk names
// another Root and user magic (resealed), and the log's records carry the committed header
// page: the untyped open must adopt what the log installs, not compare the two (found by
// fuzz_untyped: root_mismatch against the pre-recovery header).
TEST(UntypedStorage, TakesItsIdentityFromTheRecoveredHeader) {
  scoped_path path;
  ASSERT_EQ(die_after_three_commits(path), 0);
  {
    std::vector<char> data = read_bytes(path);
    tmf::detail::file_header h;
    std::memcpy(&h, data.data(), sizeof h);
    std::memset(h.root_name, 0, sizeof h.root_name);
    std::memcpy(h.root_name, "other_root", 10);
    h.root_schema ^= 1;
    h.user_magic += 7;
    h.txn = 1;  // before the log's records, so that recovery replays all three
    tmf::detail::seal_header(h);
    std::memcpy(data.data(), &h, sizeof h);
    write_file(path, std::string(data.begin(), data.end()));
  }
  const auto data = read_bytes(path);
  const auto log = read_bytes(path.log());
  {
    tmf::untyped_storage u(path);
    const tmf::storage_info i = u.info();
    EXPECT_EQ(i.txn, 4u);
    EXPECT_NE(i.root_name.find("counted_root"), std::string::npos) << i.root_name;
    EXPECT_EQ(i.root_fingerprint, tmf::schema_fingerprint<counted_root>());
    u.check();
  }
  EXPECT_EQ(read_bytes(path), data);
  EXPECT_EQ(read_bytes(path.log()), log);
}

TEST(UntypedStorage, RefusesEmptyGarbageForeignTruncatedAndDamagedFiles) {
  scoped_path path;
  write_file(path, "");
  EXPECT_TRUE(throws_code([&] { tmf::untyped_storage u(path); }, tmf::errc::not_a_storage));
  write_file(path, "#!/bin/sh\necho this is a shell script, not a storage\n");
  EXPECT_TRUE(throws_code([&] { tmf::untyped_storage u(path); }, tmf::errc::not_a_storage));
  std::string garbage(3 * 4096, '\0');
  for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>((i * 2654435761u) >> 13);
  write_file(path, garbage);
  EXPECT_TRUE(throws_code([&] { tmf::untyped_storage u(path); }, tmf::errc::not_a_storage));
  const auto garbage_bytes = read_bytes(path);

  tmf_test::remove_storage(path);
  {
    tmf::storage<counted_root> s(path);
    commit_one(s);
  }
  auto good = read_bytes(path);
  // A flipped byte in the header (the Root's name): the checksum catches it.
  auto damaged = good;
  damaged[offsetof(tmf::detail::file_header, root_name) + 2] ^= 0x20;
  write_file(path, std::string(damaged.begin(), damaged.end()));
  EXPECT_TRUE(throws_code([&] { tmf::untyped_storage u(path); }, tmf::errc::corrupted));
  EXPECT_EQ(read_bytes(path), damaged);
  // Cut after the header: shorter than the arena the header records.
  write_file(path, std::string(good.begin(), good.begin() + 2 * 4096));
  EXPECT_TRUE(throws_code([&] { tmf::untyped_storage u(path); }, tmf::errc::corrupted));
  // Cut inside the header page.
  write_file(path, std::string(good.begin(), good.begin() + 100));
  EXPECT_TRUE(throws_code([&] { tmf::untyped_storage u(path); }, tmf::errc::not_a_storage));
  // A missing file is the system's error.
  tmf_test::remove_storage(path);
  try {
    tmf::untyped_storage u(path);
    ADD_FAILURE() << "opened a missing file";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(path)) << "the untyped open created a file";
  EXPECT_FALSE(std::filesystem::exists(path.log())) << "the untyped open created a log";
  (void)garbage_bytes;
}

TEST(UntypedStorage, ReportsAHeapThatFailsItsAudit) {
  scoped_path path;
  {
    tmf::storage<counted_root> s(path);
    auto w = s.write();
    for (int i = 0; i < 8; ++i) w->blocks[i] = w.get_allocator<unsigned char>().allocate(4096);
    for (int i = 0; i < 8; i += 2) w.get_allocator<unsigned char>().deallocate(w->blocks[i], 4096);
    w.commit();
  }
  std::vector<tmf::free_extent> extents;
  {
    tmf::untyped_storage u(path);
    extents = u.free_extents();
  }
  ASSERT_GE(extents.size(), 2u);
  // Overwrite the first free block's node (its tree links) with garbage.
  auto bytes = read_bytes(path);
  for (std::size_t k = 0; k < 24; ++k) bytes[extents[0].offset + k] = static_cast<char>(0x5a + k);
  write_file(path, std::string(bytes.begin(), bytes.end()));
  tmf::untyped_storage u(path);
  EXPECT_TRUE(throws_code([&] { u.check(); }, tmf::errc::corrupted));
  EXPECT_TRUE(throws_code([&] { (void)u.free_extents(); }, tmf::errc::corrupted));
  EXPECT_EQ(read_bytes(path), bytes);
}

// -- copy_to ----------------------------------------------------------------------------

TEST(CopyTo, IsACleanlyClosedStorageWithTheLastCommit) {
  scoped_path path, copy("copy");
  {
    tmf::storage<counted_root> s(path);
    for (int i = 0; i < 10; ++i) commit_one(s);
    {
      auto w = s.write();
      w->items.push_back(999);  // not committed: not in the copy
      EXPECT_TRUE(throws_code([&] { s.copy_to(copy.path()); }, tmf::errc::already_open));
    }
    s.copy_to(copy.path());
    try {
      s.copy_to(copy.path());
      ADD_FAILURE() << "copied over an existing file";
    } catch (const tmf::error& e) {
      EXPECT_EQ(e.code(), std::errc::file_exists) << e.what();
    }
  }
  {
    tmf::untyped_storage u(copy.path());
    const auto i = u.info();
    EXPECT_EQ(i.log, tmf::log_state::clean);
    EXPECT_EQ(i.txn, 11u);
    EXPECT_EQ(i.log_base_txn, 11u);
    u.check();
  }
  const auto copy_data = read_bytes(copy.path());
  {
    tmf::storage<counted_root> c(copy.path(), {.mode = tmf::open_mode::read_only});
    auto r = c.read();
    EXPECT_EQ(r->count, 10u);
    EXPECT_EQ(invariant_violation(*r), "");
  }
  EXPECT_EQ(read_bytes(copy.path()), copy_data);
  tmf::storage<counted_root> c(copy.path());  // writable: commits go on in the copy
  commit_one(c);
  c.check();
  EXPECT_EQ(c.read()->count, 11u);
}

TEST(CopyTo, WhileAnotherProcessCommitsContinuously) {
  scoped_path path;
  std::vector<std::unique_ptr<scoped_path>> copies;
  for (int i = 0; i < 6; ++i) {
    const std::string tag = "copy" + std::to_string(i);
    copies.push_back(std::make_unique<scoped_path>(std::string_view(tag)));
  }
  { tmf::storage<counted_root> s(path, {.sync = tmf::durability::no_sync}); }
  const auto writer = tmf_test::spawn_child(tmf_test::by_value([path = tmf_test::child_path(path.path())] {
    tmf::storage<counted_root> s(path, {.sync = tmf::durability::no_sync});
    const auto stop = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < stop) commit_one(s);
    return 0;
  }));
  {
    tmf::storage<counted_root> s(path, {.sync = tmf::durability::no_sync});
    // Wait until the writer has begun, then copy at intervals while it commits.
    for (int spin = 0; spin < 2000 && s.read()->count == 0; ++spin)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (auto& c : copies) {
      s.copy_to(c->path());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ASSERT_EQ(tmf_test::wait_child(writer), 0);
  std::set<std::uint64_t> counts;
  std::uint64_t final_count = 0;
  {
    tmf::storage<counted_root> s(path);
    final_count = s.read()->count;
  }
  for (auto& c : copies) {  // one at a time: every copy is bound to the source's address
    tmf::storage<counted_root> s(c->path(), {.mode = tmf::open_mode::read_only});
    s.check();
    auto r = s.read();
    EXPECT_EQ(invariant_violation(*r), "") << c->path();
    counts.insert(r->count);
  }
  std::printf("copies at counts");
  for (auto c : counts) std::printf(" %llu", static_cast<unsigned long long>(c));
  std::printf("; the writer ended at %llu\n", static_cast<unsigned long long>(final_count));
  EXPECT_GT(*counts.begin(), 0u);
  EXPECT_LT(*counts.rbegin(), final_count) << "the last copy was taken after the writer stopped";
  EXPECT_GE(counts.size(), 3u) << "the copies did not see the writer progress";
}

// -- compact ----------------------------------------------------------------------------

TEST(Compact, TruncatesTheFreeTailAndPunchesFreeExtents) {
  scoped_path path;
  constexpr std::size_t block = 256 * 1024;
  std::uint64_t before = 0, disk_before = 0;
  tmf::options keep;  // compaction alone: no online giving back of the freed blocks
  keep.give_back_bytes = 0;
  keep.truncate_bytes = 0;
  {
    tmf::storage<counted_root> s(path, keep);
    auto w = s.write();
    for (std::size_t i = 0; i < 64; ++i) {
      w->blocks[i] = w.get_allocator<unsigned char>().allocate(block);
      std::memset(w->blocks[i], static_cast<int>(i + 1), block);
    }
    w.commit();
    // Keep every fourth block of the lower half; free the rest, the whole upper half included.
    for (std::size_t i = 0; i < 64; ++i) {
      if (i < 32 && i % 4 == 0) continue;
      w.get_allocator<unsigned char>().deallocate(w->blocks[i], block);
      w->blocks[i] = nullptr;
    }
    w.commit();
  }
  {
    tmf::untyped_storage u(path);
    before = u.info().file_bytes;
    disk_before = u.info().disk_bytes;
  }
  {
    tmf::storage<counted_root> s(path, keep);
    const std::size_t arena_before = s.size();
    s.compact();
    EXPECT_LT(s.size(), arena_before / 2 + block) << "the free upper half is still in the arena";
    s.check();
    const auto st = std::filesystem::file_size(path);
    EXPECT_EQ(st, s.size()) << "the data file was not truncated to the arena";
    // Still usable: allocations grow the file again.
    auto w = s.write();
    w->blocks[63] = w.get_allocator<unsigned char>().allocate(4 * block);
    std::memset(w->blocks[63], 0x77, 4 * block);
    w.commit();
  }
  tmf::untyped_storage u(path, tmf::open_mode::open_only);
  const auto i = u.info();
  EXPECT_LT(i.file_bytes, before + 4 * block);
  u.check();
  const tmf::compact_result r = u.compact();
  EXPECT_LE(r.file_bytes_after, r.file_bytes_before);
  std::printf("compact: file %llu -> %llu bytes, disk %llu -> %llu bytes, %llu punched\n",
              static_cast<unsigned long long>(r.file_bytes_before), static_cast<unsigned long long>(r.file_bytes_after),
              static_cast<unsigned long long>(r.disk_bytes_before), static_cast<unsigned long long>(r.disk_bytes_after),
              static_cast<unsigned long long>(r.punched_bytes));
  if (r.punched_bytes > 0) {
    EXPECT_LT(r.disk_bytes_after, disk_before) << "punched " << r.punched_bytes << " bytes";
  }
  u.check();
}

TEST(Compact, ThenReopenAndCheck) {
  scoped_path path;
  constexpr std::size_t block = 128 * 1024;
  {
    tmf::storage<counted_root> s(path);
    auto w = s.write();
    for (std::size_t i = 0; i < 16; ++i) {
      w->blocks[i] = w.get_allocator<unsigned char>().allocate(block);
      std::memset(w->blocks[i], static_cast<int>(i + 1), block);
    }
    w.commit();
    for (std::size_t i = 1; i < 16; i += 2) {
      w.get_allocator<unsigned char>().deallocate(w->blocks[i], block);
      w->blocks[i] = nullptr;
    }
    w.commit();
  }
  {
    tmf::storage<counted_root> s(path);
    s.compact();
    s.compact();  // a second pass has nothing left to give back
  }
  tmf::storage<counted_root> s(path);
  s.check();
  auto r = s.read();
  for (std::size_t i = 0; i < 16; i += 2) {
    ASSERT_NE(r->blocks[i], nullptr);
    for (std::size_t k = 0; k < block; k += 4096) ASSERT_EQ(r->blocks[i][k], static_cast<unsigned char>(i + 1)) << i;
  }
}

}  // namespace
