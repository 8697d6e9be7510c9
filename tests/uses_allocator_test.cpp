// SPDX-License-Identifier: Apache-2.0 OR MIT
// Tests of tmf::allocator::construct (uses-allocator construction): with two storages open
// and nested writers, elements (strings, nested containers, map values), copies and moves
// between the storages land in the storage of the container that holds them, not in the
// storage of the innermost writer. Each file is then reopened alone in a new process, where
// a pointer into the other storage would fault, and audited with check().
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "test_support.hpp"

namespace {

using tmf_test::run_in_child;
using tmf_test::scoped_path;

struct two_root {
  tmf::vector<tmf::string> strs;
  tmf::vector<tmf::string> copied;  // = the other storage's strs
  tmf::vector<tmf::string> moved;   // = std::move(the other storage's strs)
  tmf::vector<tmf::vector<std::uint64_t>> nested;
  tmf::map<tmf::string, tmf::vector<tmf::string>> index;
  tmf::deque<tmf::string> queue;
  tmf::list<tmf::vector<std::uint64_t>> chunks;
};

std::string text(char c, std::size_t n = 60) { return std::string(n, c); }  // past any small-string buffer
std::string_view sv(const tmf::string& s) { return s; }

/// Whether [p, p + n) lies in the storage mapped at [base, base + size).
bool inside(const void* base, std::size_t size, const void* p, std::size_t n = 1) {
  const auto b = reinterpret_cast<std::uintptr_t>(base), q = reinterpret_cast<std::uintptr_t>(p);
  return q >= b && q + n <= b + size;
}

/// Every heap buffer `r` reaches is inside its storage (base, size); names the first that is not.
std::string stray_buffer(const two_root& r, const void* base, std::size_t size) {
  auto str = [&](const tmf::string& s, const std::string& what) -> std::string {
    if (s.capacity() > 15 && !inside(base, size, s.data(), s.size())) return what + " '" + std::string(sv(s).substr(0, 8)) + "...'";
    if (s.get_allocator().address() != base) return what + ": allocator bound to another storage";
    return {};
  };
  auto strs = [&](const tmf::vector<tmf::string>& v, const std::string& what) -> std::string {
    if (!v.empty() && !inside(base, size, v.data(), v.size() * sizeof(tmf::string))) return what + " (its array)";
    for (std::size_t i = 0; i < v.size(); ++i)
      if (auto e = str(v[i], what + "[" + std::to_string(i) + "]"); !e.empty()) return e;
    return {};
  };
  for (auto [v, name] : {std::pair{&r.strs, "strs"}, {&r.copied, "copied"}, {&r.moved, "moved"}})
    if (auto e = strs(*v, name); !e.empty()) return e;
  for (std::size_t i = 0; i < r.nested.size(); ++i)
    if (!r.nested[i].empty() && !inside(base, size, r.nested[i].data(), r.nested[i].size() * 8))
      return "nested[" + std::to_string(i) + "]";
  for (const auto& [k, v] : r.index) {
    if (auto e = str(k, "an index key"); !e.empty()) return e;
    if (auto e = strs(v, "index[" + std::string(sv(k).substr(0, 8)) + "...]"); !e.empty()) return e;
  }
  for (const auto& s : r.queue)
    if (auto e = str(s, "a queue element"); !e.empty()) return e;
  for (const auto& c : r.chunks)
    if (!c.empty() && !inside(base, size, c.data(), c.size() * 8)) return "a chunk";
  return {};
}

/// What `fill` leaves in storage a (`mine` 'a', other 'b'), checked in a new process.
std::string content_error(const two_root& r, char mine, char other) {
  if (r.strs.size() != 4) return "strs has " + std::to_string(r.strs.size()) + " elements";
  if (sv(r.strs[0]) != text(mine) || sv(r.strs[1]) != text(mine, 70) || sv(r.strs[2]) != text(other) || sv(r.strs[3]) != text('t'))
    return "strs content";
  if (r.copied.size() != 1 || sv(r.copied[0]) != text(other, 80)) return "copied content";
  if (r.moved.size() != 1 || sv(r.moved[0]) != text(other, 90)) return "moved content";
  if (r.nested.size() != 2 || r.nested[0].size() != 100 || r.nested[1].size() != 50 || r.nested[1][49] != 3)
    return "nested content";
  if (r.index.size() != 1 || sv(r.index.begin()->first) != text('k', 40) || r.index.begin()->second.size() != 1 ||
      sv(r.index.begin()->second[0]) != text('v'))
    return "index content";
  if (r.queue.size() != 1 || sv(r.queue[0]) != text('q')) return "queue content";
  if (r.chunks.size() != 1 || r.chunks.front().size() != 64) return "chunks content";
  return {};
}

/// Fills `w` (storage a) while `o` (storage b) holds the innermost writer; `mine`/`other`
/// are the letters of a's and b's own strings.
template <class W>
void fill(W& w, W& o, char mine, char other) {
  o->strs.clear();
  o->strs.emplace_back(text(other, 80));
  w->strs.emplace_back(text(mine));        // from a std::string: tmf::string(std::string, alloc)
  w->strs.emplace_back(70, mine);          // (count, char, alloc)
  w->strs.push_back(tmf::string(text(other), o.template get_allocator<char>()));  // a temporary in b, moved in
  w->strs.emplace_back(std::string_view(text('t')));
  w->copied = o->strs;  // copy-assignment between storages: copies the elements into a
  tmf::vector<tmf::string> in_b(o.template get_allocator<tmf::string>());
  in_b.emplace_back(text(other, 90));
  w->moved = std::move(in_b);  // move-assignment, allocators unequal: element-wise into a
  w->nested.emplace_back();
  w->nested.back().assign(100, 7);
  w->nested.emplace_back(50, 3);
  w->index.emplace(std::piecewise_construct, std::forward_as_tuple(text('k', 40)), std::forward_as_tuple());
  w->index.begin()->second.emplace_back(text('v'));
  w->queue.emplace_back(text('q'));
  w->chunks.emplace_back(64, 1);
}

TEST(UsesAllocator, ElementsLandInTheirContainersStorage) {
  scoped_path pa("a"), pb("b");
  {
    tmf::storage<two_root> a(pa.path()), b(pb.path());
    {
      auto wa = a.write();
      auto wb = b.write();  // the innermost writer: a default-constructed tmf::allocator binds to b
      fill(wa, wb, 'a', 'b');
      EXPECT_EQ(stray_buffer(*wa, a.address(), a.size()), "") << "a buffer of storage a's containers is not in a";
      EXPECT_EQ(stray_buffer(*wb, b.address(), b.size()), "") << "a buffer of storage b's containers is not in b";
      wb.commit();
      wa.commit();
    }
    EXPECT_NO_THROW(a.check());
    EXPECT_NO_THROW(b.check());
  }
  for (const scoped_path* p : {&pa, &pb}) {
    const bool is_a = p == &pa;
    SCOPED_TRACE(is_a ? "storage a reopened alone" : "storage b reopened alone");
    const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p->path()), is_a] {
      tmf::storage<two_root> s(p.path());
      s.check();
      auto r = s.read();
      if (auto e = stray_buffer(*r, s.address(), s.size()); !e.empty()) {
        std::fprintf(stderr, "stray buffer: %s\n", e.c_str());
        return 1;
      }
      if (is_a) {
        if (auto e = content_error(*r, 'a', 'b'); !e.empty()) {
          std::fprintf(stderr, "storage a: %s\n", e.c_str());
          return 2;
        }
      } else if (r->strs.size() != 1 || sv(r->strs[0]) != text('b', 80) || !r->copied.empty()) {
        return 3;
      }
      return 0;
    }));
    EXPECT_EQ(rc, 0) << "1: a buffer outside the file, 2/3: wrong content, 128+11: a pointer into the other "
                        "storage faulted";
  }
}

TEST(UsesAllocator, WithoutConstructAStringElementWouldBindToTheInnermostWriter) {
  // The control of the test above: a tmf::string built on its own binds to the innermost
  // writer's storage (b); only construct() rebinds elements to their container's storage.
  scoped_path pa("a"), pb("b");
  tmf::storage<two_root> a(pa.path()), b(pb.path());
  auto wa = a.write();
  auto wb = b.write();
  tmf::string loose(text('x'));
  EXPECT_EQ(loose.get_allocator().address(), b.address());
  EXPECT_TRUE(inside(b.address(), b.size(), loose.data(), loose.size()));
  wa->strs.push_back(loose);
  EXPECT_EQ(wa->strs.back().get_allocator().address(), a.address());
  EXPECT_TRUE(inside(a.address(), a.size(), wa->strs.back().data(), loose.size()));
}

}  // namespace
