// SPDX-License-Identifier: Apache-2.0 OR MIT
// Public-contract tests of the container aliases (tmf::vector ... tmf::unordered_set, nested
// containers) and tmf::hash: contents survive a commit and a new process, rollback restores
// them, erasing everything frees every byte; hashing and heterogeneous lookup.

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "test_support.hpp"

namespace {

using tmf_test::run_in_child;
using tmf_test::scoped_path;

// ---------------------------------------------------------------------------------------------
// Describing elements as text, to compare a container with what is expected.

std::string describe(int v);
std::string describe(char c);
std::string describe(const tmf::string& s);
template <class T>
std::string describe(const tmf::vector<T>& v);
template <class K, class V>
std::string describe(const std::pair<const K, V>& kv);

std::string describe(int v) { return std::to_string(v); }
std::string describe(char c) { return std::string(1, c); }
/// Concatenates `parts` (GCC 12 at -O3 reports a false -Wstringop-overflow for chains of
/// `"literal" + std::string`, GCC bug 105329).
std::string join(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (auto p : parts) out.append(p);
  return out;
}

std::string describe(const tmf::string& s) { return join({"'", std::string_view(s), "'"}); }
template <class T>
std::string describe(const tmf::vector<T>& v) {
  std::string out = "[";
  for (const auto& x : v) out += describe(x) + ",";
  return out + "]";
}
template <class K, class V>
std::string describe(const std::pair<const K, V>& kv) {
  return describe(kv.first) + "=" + describe(kv.second);
}

/// A text longer than any small-string buffer, so that a tmf::string of it allocates.
std::string long_text(int i) { return join({"text-number-", std::to_string(i), "-padded-beyond-the-small-string-buffer"}); }

// ---------------------------------------------------------------------------------------------
// What each container under test holds: element i, its description, how to look it up.

template <class C>
struct spec;

template <>
struct spec<tmf::vector<int>> {
  static constexpr const char* name = "vector_int";
  static constexpr bool sequence = true;
  static constexpr int count = 1000;
  static void add(tmf::vector<int>& c, int i) { c.push_back(i * 7 - 3); }
  static std::string expect(int i) { return describe(i * 7 - 3); }
  static bool find(const tmf::vector<int>&, int) { return true; }
};

template <>
struct spec<tmf::deque<int>> {
  static constexpr const char* name = "deque_int";
  static constexpr bool sequence = true;
  static constexpr int count = 2000;  // several deque nodes
  static void add(tmf::deque<int>& c, int i) { c.push_back(i); }
  static std::string expect(int i) { return describe(i); }
  static bool find(const tmf::deque<int>&, int) { return true; }
};

template <>
struct spec<tmf::list<int>> {
  static constexpr const char* name = "list_int";
  static constexpr bool sequence = true;
  static constexpr int count = 500;
  static void add(tmf::list<int>& c, int i) { c.push_back(i * 2); }
  static std::string expect(int i) { return describe(i * 2); }
  static bool find(const tmf::list<int>&, int) { return true; }
};

template <>
struct spec<tmf::string> {
  static constexpr const char* name = "string";
  static constexpr bool sequence = true;
  static constexpr int count = 300;
  static void add(tmf::string& c, int i) { c.push_back(static_cast<char>('a' + i % 26)); }
  static std::string expect(int i) { return describe(static_cast<char>('a' + i % 26)); }
  static bool find(const tmf::string&, int) { return true; }
};

template <>
struct spec<tmf::map<int, int>> {
  static constexpr const char* name = "map_int_int";
  static constexpr bool sequence = false;
  static constexpr int count = 500;
  static void add(tmf::map<int, int>& c, int i) { c.emplace(i, i * i); }
  static std::string expect(int i) { return describe(i) + "=" + describe(i * i); }
  static bool find(const tmf::map<int, int>& c, int i) {
    auto it = c.find(i);
    return it != c.end() && it->second == i * i;
  }
};

template <>
struct spec<tmf::multimap<int, int>> {
  static constexpr const char* name = "multimap_int_int";
  static constexpr bool sequence = false;
  static constexpr int count = 500;
  static void add(tmf::multimap<int, int>& c, int i) { c.emplace(i / 3, i); }
  static std::string expect(int i) { return describe(i / 3) + "=" + describe(i); }
  static bool find(const tmf::multimap<int, int>& c, int i) {
    auto [b, e] = c.equal_range(i / 3);
    return std::any_of(b, e, [&](const auto& kv) { return kv.second == i; });
  }
};

template <>
struct spec<tmf::set<int>> {
  static constexpr const char* name = "set_int";
  static constexpr bool sequence = false;
  static constexpr int count = 500;
  static void add(tmf::set<int>& c, int i) { c.insert(i * 5); }
  static std::string expect(int i) { return describe(i * 5); }
  static bool find(const tmf::set<int>& c, int i) { return c.count(i * 5) == 1; }
};

template <>
struct spec<tmf::unordered_map<int, int>> {
  static constexpr const char* name = "unordered_map_int_int";
  static constexpr bool sequence = false;
  static constexpr int count = 500;
  static void add(tmf::unordered_map<int, int>& c, int i) { c.emplace(i, -i); }
  static std::string expect(int i) { return describe(i) + "=" + describe(-i); }
  static bool find(const tmf::unordered_map<int, int>& c, int i) {
    auto it = c.find(i);
    return it != c.end() && it->second == -i;
  }
};

template <>
struct spec<tmf::unordered_set<int>> {
  static constexpr const char* name = "unordered_set_int";
  static constexpr bool sequence = false;
  static constexpr int count = 500;
  static void add(tmf::unordered_set<int>& c, int i) { c.insert(i * 11); }
  static std::string expect(int i) { return describe(i * 11); }
  static bool find(const tmf::unordered_set<int>& c, int i) { return c.count(i * 11) == 1; }
};

template <>
struct spec<tmf::vector<tmf::string>> {
  static constexpr const char* name = "vector_string";
  static constexpr bool sequence = true;
  static constexpr int count = 200;
  static void add(tmf::vector<tmf::string>& c, int i) { c.emplace_back(long_text(i).c_str()); }
  static std::string expect(int i) { return join({"'", long_text(i), "'"}); }
  static bool find(const tmf::vector<tmf::string>&, int) { return true; }
};

template <>
struct spec<tmf::map<int, tmf::vector<int>>> {
  using C = tmf::map<int, tmf::vector<int>>;
  static constexpr const char* name = "map_int_vector_int";
  static constexpr bool sequence = false;
  static constexpr int count = 100;
  static void add(C& c, int i) {
    tmf::vector<int>& v = c[i];
    for (int j = 0; j <= i % 10; ++j) v.push_back(i * 100 + j);
  }
  static std::string expect(int i) {
    std::string out = describe(i) + "=[";
    for (int j = 0; j <= i % 10; ++j) out += describe(i * 100 + j) + ",";
    return out + "]";
  }
  static bool find(const C& c, int i) {
    auto it = c.find(i);
    return it != c.end() && it->second.size() == static_cast<std::size_t>(i % 10 + 1);
  }
};

template <>
struct spec<tmf::unordered_map<tmf::string, tmf::string>> {
  using C = tmf::unordered_map<tmf::string, tmf::string>;
  static constexpr const char* name = "unordered_map_string_string";
  static constexpr bool sequence = false;
  static constexpr int count = 200;
  static void add(C& c, int i) { c.emplace(long_text(i).c_str(), join({"value-", long_text(i)}).c_str()); }
  static std::string expect(int i) { return join({"'", long_text(i), "'='value-", long_text(i), "'"}); }
  // Needs a writer: the key is a tmf::string.
  static bool find(const C& c, int i) {
    auto it = c.find(tmf::string(long_text(i).c_str()));
    return it != c.end() && it->second == join({"value-", long_text(i)}).c_str();
  }
};

template <class C>
struct holder {
  C c;
};

template <class C>
std::vector<std::string> describe_all(const C& c) {
  std::vector<std::string> out;
  for (const auto& x : c) out.push_back(describe(x));
  if (!spec<C>::sequence) std::sort(out.begin(), out.end());
  return out;
}

/// What the container holds after add(0) ... add(n - 1), then erase(begin()) if `erased_first`.
template <class C>
std::vector<std::string> expected(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(spec<C>::expect(i));
  if (!spec<C>::sequence) std::sort(out.begin(), out.end());
  return out;
}

template <class C>
void fill(C& c, int from, int to) {
  for (int i = from; i < to; ++i) spec<C>::add(c, i);
}

/// Frees every element through the container's own erase, then the spare capacity (vector,
/// string, deque and the unordered buckets keep it after erasing) by swapping with a new one.
template <class C>
void erase_all(C& c) {
  while (!c.empty()) c.erase(c.begin());
  C().swap(c);
}

/// 0 if `c` holds exactly elements 0 .. n-1 (and, with `lookups`, each is found), else 1 or 2.
template <class C>
int verify(const C& c, int n, bool lookups) {
  if (describe_all(c) != expected<C>(n)) {
    std::fprintf(stderr, "contents differ: %zu elements, %d expected\n", c.size(), n);
    return 1;
  }
  if (lookups)
    for (int i = 0; i < n; ++i)
      if (!spec<C>::find(c, i)) {
        std::fprintf(stderr, "element %d not found by lookup\n", i);
        return 2;
      }
  return 0;
}

template <class C>
class Containers : public ::testing::Test {};

using container_types =
    ::testing::Types<tmf::vector<int>, tmf::deque<int>, tmf::list<int>, tmf::string, tmf::map<int, int>,
                     tmf::multimap<int, int>, tmf::set<int>, tmf::unordered_map<int, int>, tmf::unordered_set<int>,
                     tmf::vector<tmf::string>, tmf::map<int, tmf::vector<int>>,
                     tmf::unordered_map<tmf::string, tmf::string>>;

struct container_names {
  template <class C>
  static std::string GetName(int) {
    return spec<C>::name;
  }
};

TYPED_TEST_SUITE(Containers, container_types, container_names);

TYPED_TEST(Containers, CommittedContentsReadInANewProcess) {
  using C = TypeParam;
  scoped_path p;
  constexpr int n = spec<C>::count;
  {
    tmf::storage<holder<C>> s(p.path());
    auto w = s.write();
    fill(w->c, 0, n);
    ASSERT_EQ(verify(w->c, n, true), 0) << "the container is wrong before the commit";
    w.commit();
  }
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    tmf::storage<holder<C>> s(p.path(), {.mode = tmf::open_mode::open_only});
    {
      auto r = s.read();
      if (int e = verify(r->c, n, false)) return e;
    }
    {
      auto w = s.write();  // lookups may need to build keys (tmf::string): a writer allows it
      if (int e = verify(w->c, n, true)) return 10 + e;
    }
    s.check();
    return 0;
  }));
  EXPECT_EQ(rc, 0) << "a new process read wrong contents (1: elements, 2: lookup, 1x: in a writer, 100: exception)";
}

TYPED_TEST(Containers, ModifiedInAnotherProcessAfterReopen) {
  using C = TypeParam;
  scoped_path p;
  constexpr int n = spec<C>::count;
  {
    tmf::storage<holder<C>> s(p.path());
    auto w = s.write();
    fill(w->c, 0, n / 2);
    w.commit();
  }
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    tmf::storage<holder<C>> s(p.path());
    auto w = s.write();
    fill(w->c, n / 2, n);  // allocates through the allocators stored in the file
    w.commit();
    return 0;
  }));
  ASSERT_EQ(rc, 0) << "the child could not modify the reopened container";
  tmf::storage<holder<C>> s(p.path());
  {
    auto r = s.read();
    EXPECT_EQ(verify(r->c, n, false), 0) << "the other process's additions are missing or wrong";
  }
  auto w = s.write();
  EXPECT_EQ(verify(w->c, n, true), 0) << "lookups fail after the other process's additions";
  EXPECT_NO_THROW(s.check());
}

TYPED_TEST(Containers, RollbackLeavesContentsUnchanged) {
  using C = TypeParam;
  scoped_path p;
  constexpr int n = spec<C>::count;
  tmf::storage<holder<C>> s(p.path());
  {
    auto w = s.write();
    fill(w->c, 0, n);
    w.commit();
  }
  const std::size_t allocated = s.stats().allocated_bytes;
  {
    auto w = s.write();
    fill(w->c, n, n + 50);
    w->c.erase(w->c.begin());
    w.rollback();
    EXPECT_EQ(verify(w->c, n, true), 0) << "an explicit rollback did not restore the container";
    EXPECT_EQ(s.stats().allocated_bytes, allocated) << "an explicit rollback did not undo the allocations";
    erase_all(w->c);
    fill(w->c, 0, 3);
  }  // destructor rollback
  {
    auto r = s.read();
    EXPECT_EQ(verify(r->c, n, false), 0) << "the writer's destructor did not restore the container";
  }
  EXPECT_EQ(s.stats().allocated_bytes, allocated) << "the writer's destructor did not undo the allocations";
  EXPECT_NO_THROW(s.check());
}

TYPED_TEST(Containers, EraseEverythingFreesEveryByte) {
  using C = TypeParam;
  scoped_path p;
  constexpr int n = spec<C>::count;
  std::size_t empty = 0;
  {
    tmf::storage<holder<C>> s(p.path());
    empty = s.stats().allocated_bytes;  // the new Root with its empty container
    {
      auto w = s.write();
      fill(w->c, 0, n);
      w.commit();
      EXPECT_GT(s.stats().allocated_bytes, empty) << "filling the container allocated nothing";
      erase_all(w->c);
      w.commit();
      EXPECT_TRUE(w->c.empty());
    }
    EXPECT_EQ(s.stats().allocated_bytes, empty) << "erasing everything leaked";
    // Again, committed in between, in several transactions.
    for (int round = 0; round < 3; ++round) {
      auto w = s.write();
      fill(w->c, 0, n);
      w.commit();
      erase_all(w->c);
      w.commit();
    }
    EXPECT_EQ(s.stats().allocated_bytes, empty) << "repeated fill + erase leaked";
    EXPECT_NO_THROW(s.check());
  }
  tmf::storage<holder<C>> s(p.path());
  EXPECT_EQ(s.stats().allocated_bytes, empty) << "after reopening";
  EXPECT_TRUE(s.read()->c.empty());
}

// ---------------------------------------------------------------------------------------------
// tmf::hash and lookups by text.

struct string_root {
  tmf::string text;
};

static_assert(std::is_same_v<tmf::unordered_map<tmf::string, int>::hasher, tmf::hash<tmf::string>>,
              "the unordered aliases hash tmf::string with tmf::hash");
static_assert(std::is_same_v<tmf::unordered_set<int>::hasher, tmf::hash<int>>);
static_assert(std::is_base_of_v<std::hash<int>, tmf::hash<int>> || std::is_same_v<tmf::hash<int>, std::hash<int>>,
              "tmf::hash<K> is std::hash<K> for other keys");

TEST(Hash, StringHashEqualsStringViewHash) {
  scoped_path p;
  tmf::storage<string_root> s(p.path());
  auto w = s.write();
  for (const std::string& text : {std::string(), std::string("a"), std::string("short"), long_text(1), long_text(2),
                                  std::string(1000, 'x'), std::string("with\0nul", 8)}) {
    const tmf::string t(text.data(), text.size());
    const std::size_t expected = std::hash<std::string_view>{}(std::string_view(text));
    EXPECT_EQ(tmf::hash<tmf::string>{}(t), expected) << "for \"" << text << "\"";
    EXPECT_EQ(tmf::hash<tmf::string>{}(std::string_view(text)), expected) << "transparent hash for \"" << text << "\"";
    EXPECT_EQ(tmf::hash<tmf::string>{}(t), std::hash<std::string>{}(text)) << "tmf::string and std::string differ";
  }
  for (int k : {0, 1, -5, 1 << 30}) EXPECT_EQ(tmf::hash<int>{}(k), std::hash<int>{}(k));
  const std::size_t here = tmf::hash<tmf::string>{}(tmf::string(long_text(7).c_str()));
  w.rollback();
  const int rc = run_in_child(tmf_test::by_value([here] {
    // The same text hashes the same in another process (no per-process seed).
    return tmf::hash<tmf::string>{}(std::string_view(long_text(7))) == here ? 0 : 1;
  }));
  EXPECT_EQ(rc, 0);
}

struct lookup_root {
  tmf::map<tmf::string, int, std::less<>> map;
  tmf::set<tmf::string, std::less<>> set;
  tmf::multimap<tmf::string, int, std::less<>> multimap;
  tmf::unordered_map<tmf::string, int, tmf::hash<tmf::string>, std::equal_to<>> umap;
  tmf::unordered_set<tmf::string, tmf::hash<tmf::string>, std::equal_to<>> uset;
};

TEST(Hash, HeterogeneousLookupWithStringView) {
  scoped_path p;
  {
    tmf::storage<lookup_root> s(p.path());
    auto w = s.write();
    for (int i = 0; i < 100; ++i) {
      const std::string k = long_text(i);
      w->map.emplace(k.c_str(), i);
      w->set.emplace(k.c_str());
      w->multimap.emplace(k.c_str(), i);
      w->multimap.emplace(k.c_str(), -i);
      w->umap.emplace(k.c_str(), i);
      w->uset.emplace(k.c_str());
    }
    w.commit();
  }
  // In a new process and a reader: no tmf::string can be built there, string_views need none.
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    tmf::storage<lookup_root> s(p.path());
    auto r = s.read();
    for (int i = 0; i < 100; ++i) {
      const std::string k = long_text(i);
      const std::string_view key = k;
      auto m = r->map.find(key);
      if (m == r->map.end() || m->second != i) return 1;
      if (!r->set.contains(key)) return 2;
      if (r->multimap.count(key) != 2) return 3;
      auto u = r->umap.find(key);
      if (u == r->umap.end() || u->second != i) return 4;
      if (!r->umap.contains(key) || r->umap.count(key) != 1) return 5;
      if (!r->uset.contains(key)) return 6;
      if (r->umap.equal_range(key).first == r->umap.end()) return 7;
    }
    const std::string_view missing = "not-a-key";
    if (r->map.contains(missing) || r->umap.contains(missing) || r->uset.contains(missing)) return 8;
    return 0;
  }));
  EXPECT_EQ(rc, 0) << "heterogeneous lookup by std::string_view failed (1 map, 2 set, 3 multimap, 4-7 unordered_map, "
                      "6 unordered_set, 8 found a missing key)";
}

struct default_string_map_root {
  tmf::unordered_map<tmf::string, int> umap;  // no hash given
  tmf::map<tmf::string, int> map;
};

TEST(Hash, UnorderedMapOfStringWorksWithoutAHash) {
  scoped_path p;
  {
    tmf::storage<default_string_map_root> s(p.path());
    auto w = s.write();
    for (int i = 0; i < 200; ++i) w->umap[tmf::string(long_text(i).c_str())] = i;
    w->umap.emplace("short", -1);
    w.commit();
  }
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    tmf::storage<default_string_map_root> s(p.path());
    auto w = s.write();  // keys are tmf::strings: building them needs the writer
    for (int i = 0; i < 200; ++i) {
      auto it = w->umap.find(tmf::string(long_text(i).c_str()));
      if (it == w->umap.end() || it->second != i) return 1;
    }
    if (w->umap.at("short") != -1) return 2;
    if (w->umap.size() != 201) return 3;
    return 0;
  }));
  EXPECT_EQ(rc, 0) << "a tmf::unordered_map<tmf::string, int> lost entries across processes";
}

/// Runs `f`, a lookup; a failure names `what` and the exception.
template <class F>
::testing::AssertionResult lookup_works(F&& f, const char* what) {
  try {
    if (f()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << what << ": not found";
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << what << " threw: " << e.what();
  }
}

// Lookup by text in a read transaction with the default aliases. Were their defaults the
// non-transparent std::less<K> and std::equal_to<K>, find("text") would first build a tmf::string
// key, whose allocator needs a writer: errc::no_writer in a reader.
TEST(Hash, DefaultStringKeyedLookupInAReader) {
  scoped_path p;
  {
    tmf::storage<default_string_map_root> s(p.path());
    auto w = s.write();
    w->umap.emplace("key", 1);
    w->map.emplace("key", 2);
    w->umap.emplace(long_text(3).c_str(), 3);
    w->map.emplace(long_text(3).c_str(), 3);
    w.commit();
  }
  tmf::storage<default_string_map_root> s(p.path());
  auto r = s.read();
  EXPECT_TRUE(lookup_works(
      [&] {
        auto it = r->umap.find("key");
        return it != r->umap.end() && it->second == 1;
      },
      "tmf::unordered_map<tmf::string, int>::find(\"key\") in a reader"));
  EXPECT_TRUE(lookup_works(
      [&] {
        auto it = r->map.find("key");
        return it != r->map.end() && it->second == 2;
      },
      "tmf::map<tmf::string, int>::find(\"key\") in a reader"));
  EXPECT_TRUE(lookup_works([&] { return r->umap.count(long_text(3).c_str()) == 1; },
                           "tmf::unordered_map<tmf::string, int>::count(long text) in a reader"));
  EXPECT_TRUE(lookup_works([&] { return r->map.count(long_text(3).c_str()) == 1; },
                           "tmf::map<tmf::string, int>::count(long text) in a reader"));
  const std::string long_key = long_text(3);
  EXPECT_TRUE(lookup_works([&] { return r->umap.contains(std::string_view(long_key)); },
                           "tmf::unordered_map<tmf::string, int>::contains(std::string_view) in a reader"));
  EXPECT_TRUE(lookup_works([&] { return r->map.contains(std::string_view(long_key)); },
                           "tmf::map<tmf::string, int>::contains(std::string_view) in a reader"));
}

}  // namespace
