// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of include/tmf/migrate.hpp: a storage converted from root_v1 to root_v2 (a member
// added to Root and to the element type of its vector) reopens in a new process as root_v2
// with its contents and a clean check(), and is refused as root_v1; a wrong Old or a
// throwing fn change nothing; a migration killed with SIGKILL at random instants leaves,
// on every reopen, exactly the old schema or the new one, with check() clean.
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>

#include <thread>

#include "test_support.hpp"

namespace migrate_test_types {

struct doc_v1 {
  std::uint64_t id = 0;
  tmf::string title;
};
struct root_v1 {
  tmf::vector<doc_v1> docs;
  std::uint64_t runs = 0;
};

struct doc_v2 {
  std::uint64_t id = 0;
  tmf::string title;
  std::uint32_t stars = 0;  // added
};
struct root_v2 {
  tmf::vector<doc_v2> docs;
  std::uint64_t runs = 0;
  tmf::string note;  // added
};

}  // namespace migrate_test_types

namespace {

using namespace migrate_test_types;  // NOLINT(google-build-using-namespace)
using tmf_test::run_in_child;
using tmf_test::scoped_path;

std::string title_of(std::uint64_t i) { return "document number " + std::to_string(i) + " with a long title"; }

void fill(const std::filesystem::path& p, std::uint64_t n) {
  tmf::storage<root_v1> s(p, {.sync = tmf::durability::no_sync});
  auto w = s.write();
  for (std::uint64_t i = 0; i < n; ++i) {
    auto& d = w->docs.emplace_back();
    d.id = i;
    d.title = title_of(i);
  }
  w->runs = 42;
  w.commit();
}

void convert(root_v1& o, root_v2& n) {
  n.runs = o.runs + 1;
  n.docs.reserve(o.docs.size());
  for (doc_v1& d : o.docs) {
    doc_v2& e = n.docs.emplace_back();
    e.id = d.id;
    e.title = std::move(d.title);
    e.stars = static_cast<std::uint32_t>(d.id % 5);
  }
  n.note = "migrated from root_v1 by tmf::migrate";
}

/// Empty if `r` is `fill(n)`'s content.
std::string v1_error(const root_v1& r, std::uint64_t n) {
  if (r.runs != 42) return "v1 runs " + std::to_string(r.runs);
  if (r.docs.size() != n) return "v1 has " + std::to_string(r.docs.size()) + " docs";
  for (std::uint64_t i = 0; i < n; ++i)
    if (r.docs[i].id != i || std::string_view(r.docs[i].title) != title_of(i)) return "v1 doc " + std::to_string(i);
  return {};
}

/// Empty if `r` is `fill(n)`'s content after `convert`.
std::string v2_error(const root_v2& r, std::uint64_t n) {
  if (r.runs != 43) return "v2 runs " + std::to_string(r.runs);
  if (std::string_view(r.note) != "migrated from root_v1 by tmf::migrate") return "v2 note";
  if (r.docs.size() != n) return "v2 has " + std::to_string(r.docs.size()) + " docs";
  for (std::uint64_t i = 0; i < n; ++i)
    if (r.docs[i].id != i || std::string_view(r.docs[i].title) != title_of(i) || r.docs[i].stars != i % 5)
      return "v2 doc " + std::to_string(i);
  return {};
}

/// In a new process: 1 if the file holds root_v1 with fill(n)'s content, 2 if root_v2 with
/// its conversion, each with check() clean; 10+ with a message on stderr otherwise.
int reopen_and_classify(const std::filesystem::path& p, std::uint64_t n) {
  return run_in_child(tmf_test::by_value([p = tmf_test::child_path(p), n] {
    try {
      tmf::storage<root_v2> s(p);
      s.check();
      if (auto e = v2_error(*s.read(), n); !e.empty()) {
        std::fprintf(stderr, "root_v2: %s\n", e.c_str());
        return 12;
      }
      return 2;
    } catch (const tmf::error& e) {
      if (e.code() != tmf::errc::root_mismatch) {
        std::fprintf(stderr, "opening as root_v2: %s\n", e.what());
        return 10;
      }
    }
    tmf::storage<root_v1> s(p);
    s.check();
    if (auto e = v1_error(*s.read(), n); !e.empty()) {
      std::fprintf(stderr, "root_v1: %s\n", e.c_str());
      return 11;
    }
    return 1;
  }));
}

TEST(Migrate, ConvertsAndReopensInANewProcess) {
  scoped_path p;
  fill(p.path(), 500);
  std::size_t allocated_before = 0;
  {
    tmf::storage<root_v1> s(p.path());
    allocated_before = s.stats().allocated_bytes;
  }
  tmf::migrate<root_v1, root_v2>(p.path(), convert);
  EXPECT_EQ(reopen_and_classify(p.path(), 500), 2) << "1: still root_v1; 10+: see stderr";
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    try {
      tmf::storage<root_v1> s(p.path());
      return 1;
    } catch (const tmf::error& e) {
      return e.code() == tmf::errc::root_mismatch ? 0 : 2;
    }
  }));
  EXPECT_EQ(rc, 0) << "after the migration, opening as root_v1 must be refused with root_mismatch";
  tmf::storage<root_v2> s(p.path());
  // root_v1 was destroyed and freed: what remains is root_v2 and its docs (the titles moved).
  const std::size_t v2_bytes = sizeof(root_v2) + 500 * sizeof(doc_v2) + s.read()->note.capacity() + 1;
  EXPECT_LT(s.stats().allocated_bytes, allocated_before + v2_bytes)
      << "root_v1 (or its vector of docs) was not freed";
}

TEST(Migrate, WrongOldRefusedAndFileUntouched) {
  scoped_path p;
  fill(p.path(), 10);
  const std::vector<char> before = tmf_test::read_bytes(p.path());
  bool called = false;
  try {
    tmf::migrate<root_v2, root_v1>(p.path(), [&](root_v2&, root_v1&) { called = true; });
    ADD_FAILURE() << "migrating from a type the file does not hold was accepted";
  } catch (const tmf::error& e) {
    EXPECT_EQ(e.code(), tmf::errc::root_mismatch) << e.what();
  }
  EXPECT_FALSE(called);
  EXPECT_TRUE(before == tmf_test::read_bytes(p.path())) << "the refused migration modified the file";
  scoped_path missing("missing");
  EXPECT_THROW((tmf::migrate<root_v1, root_v2>(missing.path(), convert)), tmf::error) << "a missing file was created";
  EXPECT_FALSE(std::filesystem::exists(missing.path()));
}

TEST(Migrate, ThrowingFnRollsBack) {
  scoped_path p;
  fill(p.path(), 100);
  EXPECT_THROW((tmf::migrate<root_v1, root_v2>(p.path(),
                                               [](root_v1& o, root_v2& n) {
                                                 convert(o, n);
                                                 throw std::runtime_error("half-way");
                                               })),
               std::runtime_error);
  EXPECT_EQ(reopen_and_classify(p.path(), 100), 1) << "2: the failed migration was committed; 10+: see stderr";
}

void sleep_us(std::uint64_t us) { std::this_thread::sleep_for(std::chrono::microseconds(us)); }

TEST(Migrate, KilledAtRandomInstantsLeavesOldOrNew) {
  constexpr std::uint64_t docs = 4000;
  scoped_path pristine("pristine"), p("victim");
  fill(pristine.path(), docs);
  auto reset = [&] {
    tmf_test::remove_storage(p.path());
    std::filesystem::copy_file(pristine.path(), p.path());
    std::filesystem::copy_file(pristine.log(), p.log());
  };
  // How long a whole migration takes in a child (open, convert, commit, close).
  reset();
  const auto t0 = std::chrono::steady_clock::now();
  auto migrate_in_child = tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    tmf::migrate<root_v1, root_v2>(p.path(), convert);
    return 0;
  });
  ASSERT_EQ(run_in_child(migrate_in_child), 0);
  const auto whole = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  ASSERT_EQ(reopen_and_classify(p.path(), docs), 2);

  const char* env = std::getenv("TMF_CRASH_ROUNDS");
  // Windows (Wine): a child costs ~0.1 s to start, more than a whole migration: fewer rounds.
  const int rounds = env != nullptr ? std::atoi(env) / 2 + 1 : tmf_test::is_windows ? 40 : 100;
  std::mt19937_64 rng(std::random_device{}());
  // The kills are drawn in [0, bound]. One timed migration is a poor estimate on a loaded
  // machine (the first run is cold, or a neighbour slows it), so the bound adapts: a child that
  // finished before its kill shrinks it. Most kills then land inside the migration on any load.
  std::uint64_t bound = static_cast<std::uint64_t>(whole.count()) * 5 / 4 + 1;
  int old_seen = 0, new_seen = 0, killed = 0;
  for (int round = 0; round < rounds; ++round) {
    reset();
    const std::uint64_t us = std::uniform_int_distribution<std::uint64_t>(0, bound)(rng);
    const auto pid = tmf_test::spawn_child(migrate_in_child);
    sleep_us(us);
    tmf_test::kill_child(pid);
    if (tmf_test::wait_child(pid) == tmf_test::killed_status)
      ++killed;
    else
      bound = std::max<std::uint64_t>(bound * 3 / 4, 100);
    const int outcome = reopen_and_classify(p.path(), docs);
    ASSERT_TRUE(outcome == 1 || outcome == 2)
        << "round " << round << ", killed after " << us << " us: the reopen saw neither the old schema nor the new "
        << "one whole (" << outcome << "; see stderr)";
    (outcome == 1 ? old_seen : new_seen)++;
  }
  std::printf("migrate kill test: %d rounds (a whole migration: %lld us, final bound %llu us), %d kills before "
              "the end; reopened as root_v1 %d times, as root_v2 %d times\n",
              rounds, static_cast<long long>(whole.count()), static_cast<unsigned long long>(bound), killed, old_seen,
              new_seen);
  EXPECT_GT(killed, rounds / 4) << "too few kills landed inside the migration to test anything";
}

}  // namespace
