// SPDX-License-Identifier: Apache-2.0 OR MIT
// Freed space given back to the file system (issue 14, part 3; engine.hpp give_back, the
// heap's holes): freed extents punched out of the data file after a durable commit, holes
// allocated again before reuse (a full disk stays std::bad_alloc), and the data file
// truncated when a commit leaves a large free block at the end of the arena.
// On Windows (no hole punching: os::punch_hole is not_supported) the punch cases are skipped
// or check only that nothing is lost; the cut is refused while another process maps the file
// (the truncation case checks that the file keeps its length there), and the full-disk case
// needs a small file system mounted for it (Linux): skipped there.
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#if !defined(_WIN32)
#include <sched.h>
#include <sys/mount.h>
#endif

#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
namespace os = tmf::detail::os;

struct root {
  tmf::vector<std::uintptr_t> blocks;  // addresses of blocks of block_bytes
  std::uint64_t value = 0;
};

constexpr std::size_t block_bytes = std::size_t{64} << 10;
constexpr int skip_code = 77;  // a child's "not possible here"


/// The space `p` occupies on disk (holes excluded), 0 if it cannot be opened.
std::uint64_t disk_bytes(const fs::path& p) {
  os::file f;
  os::file_info fi;
  if (os::open_file(p, os::access::read_only, f) || os::stat_file(f, fi)) return 0;
  return fi.disk_bytes;
}

/// Whether the file system of `dir` gives a punched range's blocks back (never on Windows:
/// os::punch_hole is not_supported there).
bool can_punch(const fs::path& dir) {
  const fs::path p = dir / ("punch-probe-" + std::to_string(::getpid()));
  bool ok = false;
  tmf_test::remove_file(p);
  {
    os::file f;
    os::file_info fi;
    ok = !os::create_file(p, f) && !os::allocate(f, 0, 1 << 20) && !os::punch_hole(f, 0, 1 << 20) &&
         !os::stat_file(f, fi) && fi.disk_bytes < (1 << 19);
  }
  tmf_test::remove_file(p);
  return ok;
}

std::uint8_t pattern(std::size_t block, std::size_t page) { return static_cast<std::uint8_t>(block * 7 + page + 1); }

/// Allocates `n` blocks (the writer's transaction, not committed).
void allocate_blocks(tmf::writer<root>& w, std::size_t n) {
  auto a = w.get_allocator<char>();
  w->blocks.reserve(w->blocks.size() + n);
  for (std::size_t i = 0; i < n; ++i) w->blocks.push_back(reinterpret_cast<std::uintptr_t>(a.allocate(block_bytes)));
}

void free_blocks(tmf::writer<root>& w) {
  auto a = w.get_allocator<char>();
  for (std::uintptr_t b : w->blocks) a.deallocate(reinterpret_cast<char*>(b), block_bytes);
  w->blocks.clear();
  w->blocks.shrink_to_fit();
}

/// Writes each block's pattern into one byte of each of its pages.
void fill_blocks(tmf::writer<root>& w) {
  for (std::size_t i = 0; i < w->blocks.size(); ++i) {
    auto* p = reinterpret_cast<std::uint8_t*>(w->blocks[i]);
    for (std::size_t pg = 0; pg < block_bytes / 4096; ++pg) p[pg * 4096 + 17] = pattern(i, pg);
  }
}

/// The first block whose pattern is wrong, or -1.
long bad_block(const root& r) {
  for (std::size_t i = 0; i < r.blocks.size(); ++i) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(r.blocks[i]);
    for (std::size_t pg = 0; pg < block_bytes / 4096; ++pg)
      if (p[pg * 4096 + 17] != pattern(i, pg)) return static_cast<long>(i);
  }
  return -1;
}

tmf::options no_truncation() {
  tmf::options o;
  o.truncate_bytes = 0;  // the blocks freed last lie at the arena's end: keep them there
  return o;
}

/// Where the 256 MiB test puts its file: TMF_GIVE_BACK_DIR, else /dev/shm (on a disk that
/// discards punched blocks, punching and removing 290 MiB can take 20 s of waiting under
/// load; tmpfs punches in memory), else the test directory.
fs::path big_file_dir() {
  if (const char* d = std::getenv("TMF_GIVE_BACK_DIR"); d != nullptr && *d != '\0') return d;
  std::error_code ec;
  if (!tmf_test::is_windows && fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  return tmf_test::test_dir();
}

TEST(GiveBack, FreeingBlocksPunchesThemOutOfTheDataFile) {
  const fs::path dir = big_file_dir();
  if (!can_punch(dir)) GTEST_SKIP() << "the file system of " << dir << " cannot punch holes";
  struct cleanup {
    fs::path path;
    ~cleanup() { tmf_test::remove_storage(path); }
  } p{dir / (std::to_string(::getpid()) + "." + tmf_test::test_path().filename().string())};
  tmf_test::remove_storage(p.path);
  tmf::storage<root> s(p.path, no_truncation());
  auto w = s.write();
  allocate_blocks(w, (std::size_t{256} << 20) / block_bytes);  // 256 MiB
  w.commit();
  const std::uint64_t peak = disk_bytes(p.path);
  ASSERT_GE(peak, std::uint64_t{256} << 20) << "the data file does not hold the blocks";
  free_blocks(w);
  w.commit();
  const std::uint64_t after = disk_bytes(p.path);
  std::printf("give back (in %s): 256 MiB of 64 KiB blocks freed: data file on disk %.1f MiB at the peak, %.2f MiB after\n",
              dir.string().c_str(), static_cast<double>(peak) / (1 << 20), static_cast<double>(after) / (1 << 20));
  EXPECT_LE(after, peak / 8) << "disk usage after freeing 256 MiB: " << after << " bytes of a peak of " << peak;
  const tmf::storage_stats st = s.stats();
  EXPECT_EQ(st.disk_bytes, after);
  EXPECT_GE(st.given_back_bytes, std::uint64_t{250} << 20);
  EXPECT_EQ(st.file_bytes, st.arena_bytes) << "truncation is off: the file keeps its length";
  s.check();
}

TEST(GiveBack, PunchedSpaceIsAllocatedAgainAndReusedIntact) {
  tmf_test::scoped_path p;
  const bool punches = can_punch(p.path().parent_path());
  constexpr std::size_t n = 64;  // 4 MiB
  {
    tmf::storage<root> s(p.path(), no_truncation());
    auto w = s.write();
    allocate_blocks(w, n);
    fill_blocks(w);
    w.commit();
    const std::uint64_t peak = disk_bytes(p.path());
    free_blocks(w);
    w.commit();  // 4 MiB freed: punched
    const std::uint64_t punched = disk_bytes(p.path());
    if (punches) {
      EXPECT_LT(punched + (std::uint64_t{3} << 20), peak) << "the freed blocks were not punched";
    }
    allocate_blocks(w, n);  // the same pages again, from the block that records the holes
    fill_blocks(w);
    w->value = 1;
    w.commit();
    if (punches) {
      EXPECT_GE(disk_bytes(p.path()), punched + (std::uint64_t{4} << 20)) << "the reused holes were not allocated";
    }
    EXPECT_EQ(bad_block(*w), -1);
    s.check();
  }
  // A new process sees the reused blocks as committed.
  const int rc = tmf_test::run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    tmf::storage<root> s(p.path(), no_truncation());
    auto r = s.read();
    CHILD_CHECK(r->value == 1 && r->blocks.size() == n, "value %llu, %zu blocks",
                static_cast<unsigned long long>(r->value), r->blocks.size());
    CHILD_CHECK(bad_block(*r) == -1, "block %ld lost its pattern", bad_block(*r));
    s.check();
    return 0;
  }));
  EXPECT_EQ(rc, 0) << "reopening in a new process (see the child's message above)";
}

TEST(GiveBack, ARolledBackFreePunchesNothing) {
  tmf_test::scoped_path p;
  tmf::storage<root> s(p.path(), no_truncation());
  auto w = s.write();
  allocate_blocks(w, 32);
  fill_blocks(w);
  w.commit();
  const std::uint64_t before = disk_bytes(p.path());
  free_blocks(w);
  w.rollback();
  w->value = 2;
  w.commit();
  EXPECT_GE(disk_bytes(p.path()), before) << "pages of a rolled-back free were punched";
  EXPECT_EQ(bad_block(*w), -1);
  EXPECT_EQ(s.stats().given_back_bytes, 0u);
  s.check();
}

TEST(GiveBack, ACommitLeavingALargeFreeTopTruncatesTheFileAndGrowthAndOtherProcessesStillWork) {
  tmf_test::scoped_path p;
  tmf::options o;
  o.truncate_bytes = std::size_t{16} << 20;
  const tmf_test::handshake h(p.path());
  // Another process (started before this one opens the storage) maps the whole arena and
  // reads it, reads again after the cut, then grows the file over the cut range.
  const auto child = tmf_test::spawn_child(tmf_test::by_value([p = tmf_test::child_path(p.path()), o, h] {
    CHILD_CHECK(h.wait("1"), "no signal from the parent");
    tmf::storage<root> s2(p.path(), o);
    {
      auto r = s2.read();
      CHILD_CHECK(r->blocks.size() == 512 && bad_block(*r) == -1, "before the cut: %zu blocks", r->blocks.size());
    }
    h.signal("2");
    CHILD_CHECK(h.wait("3"), "no signal from the parent");
    {
      auto r = s2.read();  // the mapping reaches past the end of the file now: never touched
      CHILD_CHECK(r->blocks.size() == 4 && bad_block(*r) == -1, "after the cut: %zu blocks", r->blocks.size());
      s2.check();
    }
    {
      auto w = s2.write();  // growth over the truncated range, through the old mapping
      allocate_blocks(w, 508);
      fill_blocks(w);
      w->value = 7;
      w.commit();
    }
    return 0;
  }));
  {
    tmf::storage<root> s(p.path(), o);
    {
      auto w = s.write();
      allocate_blocks(w, 512);  // 32 MiB
      fill_blocks(w);
      w.commit();
    }
    const std::size_t big = s.stats().file_bytes;
    ASSERT_GE(big, std::size_t{32} << 20);
    h.signal("1");
    ASSERT_TRUE(h.wait("2")) << "the other process failed before the cut (see its message above)";
    {
      auto w = s.write();
      auto a = w.get_allocator<char>();
      for (std::size_t i = 4; i < w->blocks.size(); ++i) a.deallocate(reinterpret_cast<char*>(w->blocks[i]), block_bytes);
      w->blocks.resize(4);
      w.commit();
    }
    const tmf::storage_stats st = s.stats();
    if (tmf_test::is_windows) {
      // Windows refuses to cut a file that another process maps (README, Windows): the cut is
      // skipped and the file keeps its length; the rest of the case holds all the same.
      EXPECT_EQ(st.file_bytes, big) << "the data file was cut while another process maps it";
    } else {
      EXPECT_LT(st.file_bytes, std::size_t{8} << 20) << "the data file was not truncated (" << big << " bytes before)";
      EXPECT_EQ(st.file_bytes, st.arena_bytes);
    }
    h.signal("3");
    EXPECT_EQ(tmf_test::wait_child(child), 0) << "the other process (see its message above)";
    {
      auto r = s.read();  // this process's mapping is behind the other's growth
      EXPECT_EQ(r->value, 7u);
      EXPECT_EQ(r->blocks.size(), 512u);
      EXPECT_EQ(bad_block(*r), -1);
    }
    s.check();
  }
  h.clear();
}

#if !defined(_WIN32)
/// Mounts a tmpfs of `size` on `dir` in a private mount namespace. False where not permitted.
bool mount_tmpfs(const fs::path& dir, const char* size) {
  if (::unshare(CLONE_NEWNS) != 0) return false;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  return ::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, (std::string("mode=0700,size=") + size).c_str()) == 0;
}
#endif


TEST(GiveBack, AFullDiskWhileReusingPunchedSpaceIsBadAllocNotSigbus) {
#if defined(_WIN32)
  GTEST_SKIP() << "needs a small file system mounted for the test (a Linux tmpfs) and hole punching";
#else
  const fs::path dir = tmf_test::test_path("mnt");
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  const int rc = tmf_test::run_in_child([&] {
    if (!mount_tmpfs(dir, "32m")) return skip_code;
    const fs::path path = dir / "s.tmf", filler = dir / "filler";
    tmf::options o = no_truncation();
    o.checkpoint_bytes = 256 << 10;  // a checkpoint gives the log's space back
    tmf::storage<root> s(path, o);
    auto w = s.write();
    allocate_blocks(w, 128);  // 8 MiB, allocated by growth (not written: the log stays small)
    w.commit();
    free_blocks(w);
    w.commit();  // punched: the tmpfs has those pages back
    CHILD_CHECK(s.stats().given_back_bytes >= (std::uint64_t{7} << 20), "nothing was punched");
    CHILD_CHECK(tmf_test::fill_up(filler) > 0, "cannot fill the tmpfs");
    // The holes are the only room left in the arena, and the disk is full.
    std::size_t got = 0;
    try {
      auto a = w.get_allocator<char>();
      for (; got < 128; ++got) {
        char* b = a.allocate(block_bytes);
        std::memset(b, 0x5a, block_bytes);  // SIGBUS here if a hole were handed out
        w->blocks.push_back(reinterpret_cast<std::uintptr_t>(b));
      }
      CHILD_CHECK(false, "allocated 8 MiB of holes on a full file system");
    } catch (const std::bad_alloc&) {
    }
    CHILD_CHECK(got < 128, "no bad_alloc");
    w.rollback();
    s.check();
    // Once there is room again, the same allocations succeed and commit.
    CHILD_CHECK(::unlink(filler.c_str()) == 0, "cannot remove the filler");
    allocate_blocks(w, 128);
    fill_blocks(w);
    w->value = 3;
    w.commit();
    CHILD_CHECK(bad_block(*w) == -1, "a block lost its pattern");
    s.check();
    return 0;
  });
  fs::remove_all(dir, ec);
  if (rc == skip_code) GTEST_SKIP() << "cannot mount a tmpfs in a private mount namespace here (needs root)";
  EXPECT_EQ(rc, 0) << "full tmpfs scenario (see the child's message above)";
#endif
}

}  // namespace
