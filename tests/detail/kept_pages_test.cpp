// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of the kept pages (options::kept_pages; include/tmf/detail/tracker.hpp `choose_kept`,
// engine.hpp `kept_fresh`): after a commit a bounded set of pages keeps its private copies,
// and every transaction of the process drops them once another process changed the file.
// Two processes A and B are forked children of the test (which never opens the storage: a
// child could not map it where the parent's mapping already is); a shared word orders them.
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <string>

#include "shared_object.hpp"
#include "test_support.hpp"

namespace {

namespace os = tmf::detail::os;
using tmf::detail::page_size;

constexpr std::size_t pages = 32;
constexpr std::size_t stride = page_size / sizeof(std::uint64_t);

struct root {
  tmf::vector<std::uint64_t> words;  // one word per page: word i * stride lies in page i
  char* block = nullptr;             // (compaction case) a freed block's address
  tmf::vector<char> above;           // (compaction case) a live block above it
};

/// A word shared by the test and its children (a file each maps): the step they have reached.
struct shared_step {
  tmf_test::shared_object<std::atomic<int>> p{"step"};
  void set(int v) { p->store(v); }
  bool wait(int v) const {  // false after 20 s
    for (int i = 0; i < 20000 && p->load() < v; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return p->load() >= v;
  }
};

tmf::options opts(std::size_t kept = 2048) {
  tmf::options o{.sync = tmf::durability::no_sync};
  o.kept_pages = kept;
  o.give_back_bytes = 0;  // this process never punches: only B's compaction does
  return o;
}

/// Whether this process gets the kernel tracker (the only one that keeps pages).
bool kernel_tracker() {
  if (tmf::detail::kernel_tracker_disabled()) return false;
  tmf_test::scoped_path probe("probe");
  int rc = tmf_test::run_in_child([&] {
    tmf::storage<root> s(probe.path());
    return std::string(s.stats().tracker) == "userfaultfd" ? 0 : 3;
  });
  return rc == 0;
}

void create(const std::filesystem::path& path) {
  ASSERT_EQ(tmf_test::run_in_child([&] {
              tmf::storage<root> s(path, opts());
              auto w = s.write();
              w->words.assign(pages * stride, 1);
              w.commit();
              return 0;
            }),
            0);
}

/// Every page's word equals `v`.
template <class R>
bool all_equal(R& r, std::uint64_t v, std::uint64_t& seen) {
  for (std::size_t i = 0; i < pages; ++i)
    if ((seen = r->words[i * stride]) != v) return false;
  return true;
}

/// Pages of the arena this process holds private copies of (written MAP_PRIVATE pages).
std::size_t private_pages(const void* base, std::size_t bytes) {
  os::file pm;
  if (os::open_pagemap(pm)) return ~std::size_t{0};
  std::vector<std::uint64_t> e(bytes / page_size);
  if (os::read_pagemap(pm, base, e.data(), e.size())) return ~std::size_t{0};
  std::size_t n = 0;
  // Present and not file-backed (a dropped copy leaves a userfaultfd marker, which pagemap
  // shows as a swap entry: not counted).
  for (std::uint64_t x : e) n += ((x >> 63) & 1) && !((x >> 61) & 1);
  return n;
}

// (a) A commits the pages and keeps them; B commits new values to the same pages. A's next
// reader, and in a second round A's next writer (the first transaction after B's commit),
// see B's values, and A's writer's commit leaves the file with them.
TEST(KeptPages, AnotherProcessCommitDropsThemForReadersAndWriter) {
  if (!kernel_tracker()) GTEST_SKIP() << "pages are kept only with the kernel tracker";
  tmf_test::scoped_path path;
  create(path);
  shared_step step;
  const pid_t a = tmf_test::spawn_child([&] {
    tmf::storage<root> s(path, opts());
    for (std::uint64_t round = 0; round < 2; ++round) {
      {
        auto w = s.write();
        for (std::size_t i = 0; i < pages; ++i) w->words[i * stride] = 10 + round;
        w.commit();
      }
      CHILD_CHECK(s.stats().kept_pages >= pages, "kept %zu", s.stats().kept_pages);
      step.set(1 + 2 * static_cast<int>(round));  // B may commit
      CHILD_CHECK(step.wait(2 + 2 * static_cast<int>(round)), "B never committed");
      std::uint64_t seen = 0;
      if (round == 0) {  // the reader first
        auto r = s.read();
        CHILD_CHECK(all_equal(r, 20, seen), "A's reader saw %llu, not B's 20", static_cast<unsigned long long>(seen));
      } else {  // the writer first
        auto w = s.write();
        CHILD_CHECK(all_equal(w, 21, seen), "A's writer saw %llu, not B's 21", static_cast<unsigned long long>(seen));
        w->words[0] = 30;  // a commit of A after B's: the other pages stay B's
        w.commit();
      }
      CHILD_CHECK(s.stats().kept_pages <= pages + 1, "kept %zu", s.stats().kept_pages);
    }
    return 0;
  });
  const pid_t b = tmf_test::spawn_child([&] {
    for (int round = 0; round < 2; ++round) {
      CHILD_CHECK(step.wait(1 + 2 * round), "A never committed");
      tmf::storage<root> s(path, opts());
      auto w = s.write();
      for (std::size_t i = 0; i < pages; ++i) w->words[i * stride] = 20 + static_cast<std::uint64_t>(round);
      w.commit();
      step.set(2 + 2 * round);
    }
    return 0;
  });
  EXPECT_EQ(tmf_test::wait_child(a), 0);
  EXPECT_EQ(tmf_test::wait_child(b), 0);
  EXPECT_EQ(tmf_test::run_in_child([&] {
              tmf::storage<root> s(path, opts());
              auto r = s.read();
              CHILD_CHECK(r->words[0] == 30, "word 0 is %llu", static_cast<unsigned long long>(r->words[0]));
              for (std::size_t i = 1; i < pages; ++i)
                CHILD_CHECK(r->words[i * stride] == 21, "page %zu is %llu", i,
                            static_cast<unsigned long long>(r->words[i * stride]));
              return 0;
            }),
            0);
}

// (b) A writes a block, commits, frees it and commits (its pages kept); B compacts, which
// punches the free block's pages (a live block above it: the arena is not cut). A's next
// reader reads the holes as zeros, not its kept copies. Twice: the second time the block's
// holes are recorded already, so the compaction has nothing else to commit.
TEST(KeptPages, AnotherProcessCompactionDropsThem) {
  if (!kernel_tracker()) GTEST_SKIP() << "pages are kept only with the kernel tracker";
  tmf_test::scoped_path path;
  create(path);
  constexpr std::size_t block = 64 * page_size;
  shared_step step;
  const pid_t a = tmf_test::spawn_child([&] {
    tmf::storage<root> s(path, opts());
    for (int round = 0; round < 2; ++round) {
      {
        auto w = s.write();
        auto alloc = w.get_allocator<char>();
        w->block = alloc.allocate(block);
        if (round == 0) w->above.assign(page_size, 'x');
        std::memset(w->block, 0x5a, block);
        w.commit();
        alloc.deallocate(w->block, block);
        w.commit();
      }
      const std::size_t kept = s.stats().kept_pages;
      CHILD_CHECK(kept >= 60, "kept %zu", kept);
      step.set(1 + 2 * round);
      CHILD_CHECK(step.wait(2 + 2 * round), "B never compacted");
      auto r = s.read();
      // Past the free block's first two pages (its tree node; holes begin at the next page).
      const char* p = r->block;
      for (std::size_t off = 2 * page_size; off < block - page_size; off += page_size)
        CHILD_CHECK(p[off] == 0, "round %d: A read %d at offset %zu of the punched block, not a hole's 0", round,
                    p[off], off);
    }
    return 0;
  });
  const pid_t b = tmf_test::spawn_child([&] {
    for (int round = 0; round < 2; ++round) {
      CHILD_CHECK(step.wait(1 + 2 * round), "A never committed");
      tmf::storage<root> s(path, opts());
      const std::size_t before = s.stats().disk_bytes;
      s.compact();
      step.set(2 + 2 * round);
      if (s.stats().disk_bytes >= before) return 3;  // the file system cannot punch: nothing to see
    }
    return 0;
  });
  EXPECT_EQ(tmf_test::wait_child(a), 0);
  const int rb = tmf_test::wait_child(b);
  if (rb == 3) GTEST_SKIP() << "the test directory's file system cannot punch holes";
  EXPECT_EQ(rb, 0);
}

// (c, d) The kept pages are bounded by options::kept_pages, stats() reports them, and the
// process really holds no more private copies than that between transactions: each commit
// writes other pages, so the older kept ones must be dropped past the budget.
TEST(KeptPages, BoundedAndReported) {
  if (!kernel_tracker()) GTEST_SKIP() << "pages are kept only with the kernel tracker";
  tmf_test::scoped_path path;
  create(path);
  EXPECT_EQ(tmf_test::run_in_child([&] {
              for (std::size_t budget : {std::size_t{0}, std::size_t{8}, std::size_t{4096}}) {
                tmf::storage<root> s(path, opts(budget));
                const std::size_t arena = s.stats().arena_bytes;
                for (std::uint64_t round = 0; round < 3; ++round) {
                  auto w = s.write();
                  for (std::size_t i = round; i < pages; i += 3) w->words[i * stride] = 100 + round;
                  w.commit();
                }
                const std::size_t want = std::min(budget, pages);
                CHILD_CHECK(s.stats().kept_pages == want, "budget %zu: kept %zu, not %zu", budget,
                            s.stats().kept_pages, want);
                const std::size_t priv = private_pages(s.address(), arena);
                CHILD_CHECK(priv <= want, "budget %zu: %zu private pages", budget, priv);
                CHILD_CHECK(priv + 1 >= want, "budget %zu: only %zu private pages", budget, priv);
              }
              return 0;
            }),
            0);
}

// (e) The kept set is a CLOCK ring: a page written by every commit stays kept while a
// stream of other pages, each written once, passes through a budget smaller than the stream
// (a first-in first-out set would drop it every `budget` commits); the pages written once
// are dropped oldest first, and the set stays at the budget.
TEST(KeptPages, APageWrittenByEveryCommitStaysKept) {
  if (!kernel_tracker()) GTEST_SKIP() << "pages are kept only with the kernel tracker";
  tmf_test::scoped_path path;
  create(path);
  EXPECT_EQ(tmf_test::run_in_child([&] {
              constexpr std::size_t budget = 4;
              tmf::storage<root> s(path, opts(budget));
              const std::uint64_t* words = s.read()->words.data();  // never reallocated here
              auto page_of = [&](std::size_t i) {
                return reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(&words[i * stride]) / page_size *
                                                     page_size);
              };
              for (std::size_t i = 1; i < pages; ++i) {  // page i once, page 0 every time
                {
                  auto w = s.write();
                  w->words[0] += 1;
                  w->words[i * stride] = 50 + i;
                  w.commit();
                }
                CHILD_CHECK(s.stats().kept_pages == std::min(budget, i + 1), "commit %zu: kept %zu", i,
                            s.stats().kept_pages);
                CHILD_CHECK(private_pages(page_of(0), page_size) == 1, "commit %zu: the hot page lost its copy", i);
                // The stream's pages older than the budget allows are dropped.
                if (i > budget)
                  CHILD_CHECK(private_pages(page_of(i - budget), page_size) == 0, "commit %zu: page %zu is still private",
                              i, i - budget);
              }
              std::uint64_t seen = s.read()->words[0];
              CHILD_CHECK(seen == 1 + (pages - 1), "the hot word is %llu", static_cast<unsigned long long>(seen));
              return 0;
            }),
            0);
}

// A rollback drops the copies of kept pages it wrote; a later reader sees the commit.
TEST(KeptPages, RollbackOfAKeptPage) {
  if (!kernel_tracker()) GTEST_SKIP() << "pages are kept only with the kernel tracker";
  tmf_test::scoped_path path;
  create(path);
  EXPECT_EQ(tmf_test::run_in_child([&] {
              tmf::storage<root> s(path, opts());
              {
                auto w = s.write();
                for (std::size_t i = 0; i < pages; ++i) w->words[i * stride] = 5;
                w.commit();
                for (std::size_t i = 0; i < pages; ++i) w->words[i * stride] = 6;
                w.rollback();
                std::uint64_t seen = 0;
                CHILD_CHECK(all_equal(w, 5, seen), "after rollback the writer saw %llu",
                            static_cast<unsigned long long>(seen));
                for (std::size_t i = 0; i < pages; i += 2) w->words[i * stride] = 7;
              }  // ended without commit
              auto r = s.read();
              std::uint64_t seen = 0;
              CHILD_CHECK(all_equal(r, 5, seen), "the reader saw %llu", static_cast<unsigned long long>(seen));
              return 0;
            }),
            0);
}

}  // namespace
