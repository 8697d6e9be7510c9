// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// libFuzzer target: tmf::btree_map and tmf::btree_multimap (std::allocator, small nodes so
/// that a few dozen values already make a tree of three levels) driven by a byte-coded
/// sequence of operations, against std::map / std::multimap.
///
/// Input: one set-up byte choosing the configuration (bit 0: multimap, bit 1: std::string
/// values, non-trivial to relocate, some of them on the heap; bit 2: a descending custom
/// comparator, so that the nodes keep no copy of their keys, see btree_key_cache), then operations, each an opcode byte and its operands (missing bytes read 0):
///   0 emplace(k, v)                 1 insert(v) / insert(hint, v)
///   2 try_emplace | emplace_hint    3 insert_or_assign | insert(pair&&)
///   4 operator[] | count            5 erase(key)
///   6 erase(iterator)               7 erase(first, last)
///   8 find, lower_bound, upper_bound, equal_range, count, contains of a key
///   9 iteration both ways (iterators, reverse iterators, -- from end())
///  10 merge from a tree built from the next bytes (the other variant every other time)
///  11 clear                        12 bulk construction from a sorted range (or an unsorted one)
///  13 insert(first, last) into the tree       14 erase_if (erase while iterating)
///  15 copy, move, swap
/// Keys are one byte (0..255): many repeats, trees of up to a few hundred values (a multimap
/// is capped at 1,024 values). Every value carries a serial number, so that a mismatch in
/// the order of equal keys, or a value moved to the wrong slot, shows.
/// Oracle: after every operation check() passes, and the size and the whole sequence equal the
/// model's; every iterator an operation returns names the model's element (or end()).
/// AddressSanitizer sees any value relocated twice or leaked (the std::string values).
#include <tmf/btree.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <tmf/error.hpp>

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "tmf fuzz_btree: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

struct input_reader {
  const std::uint8_t* p;
  std::size_t n;
  bool empty() const { return n == 0; }
  std::uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
};

/// Values: an int serial, or a string holding it (long ones live on the heap).
template <class V>
V make_value(unsigned serial);
template <>
int make_value<int>(unsigned serial) {
  return static_cast<int>(serial);
}
template <>
std::string make_value<std::string>(unsigned serial) {
  std::string s = std::to_string(serial);
  if (serial % 3 == 0) s.append(40, 'x');  // past the small-string buffer
  return s;
}
std::string show(int v) { return std::to_string(v); }

/// Not std::greater: a comparator of the user's (no key cache in the nodes).
struct descending {
  bool operator()(int a, int b) const { return a > b; }
};
std::string show(const std::string& v) { return '"' + v + '"'; }

template <bool Multi, class V, class Cmp>
struct types {
  using value_type = std::pair<const int, V>;
  using alloc = std::allocator<value_type>;
  // 128-byte nodes: leaves of 14 (int) or 6 (string, 256-byte nodes) values.
  using tree = std::conditional_t<Multi, tmf::btree_multimap<int, V, Cmp, alloc, 128>, tmf::btree_map<int, V, Cmp, alloc, 128>>;
  using model = std::conditional_t<Multi, std::multimap<int, V, Cmp>, std::map<int, V, Cmp>>;
  /// The other variant (merge sources).
  using other_tree = std::conditional_t<!Multi, tmf::btree_multimap<int, V, Cmp, alloc, 128>, tmf::btree_map<int, V, Cmp, alloc, 128>>;
  using other_model = std::conditional_t<!Multi, std::multimap<int, V, Cmp>, std::map<int, V, Cmp>>;
};

template <class T, class M>
void compare(const T& t, const M& m, const char* what) {
  try {
    t.check();
  } catch (const std::exception& e) {
    fail(std::string("after ") + what + ": check() threw: " + e.what());
  }
  if (t.size() != m.size())
    fail(std::string("after ") + what + ": size " + std::to_string(t.size()) + ", the model has " +
         std::to_string(m.size()));
  if (t.empty() != m.empty()) fail(std::string("after ") + what + ": empty() differs");
  auto a = t.begin();
  std::size_t i = 0;
  for (auto b = m.begin(); b != m.end(); ++a, ++b, ++i) {
    if (a == t.end()) fail(std::string("after ") + what + ": the tree ends early");
    if (a->first != b->first || !(a->second == b->second))
      fail(std::string("after ") + what + ": element " + std::to_string(i) + " is {" + std::to_string(a->first) + ", " +
           show(a->second) + "}, the model's {" + std::to_string(b->first) + ", " + show(b->second) + "}");
  }
  if (a != t.end()) fail(std::string("after ") + what + ": the tree has more elements than it counts");
}

/// `it` (of tree `t`) names the same element as `mit` (of model `m`), or both are end().
template <class T, class TI, class M, class MI>
void same_position(const T& t, TI it, const M& m, MI mit, const char* what) {
  const bool te = it == t.end(), me = mit == m.end();
  if (te != me) fail(std::string(what) + ": end() in " + (te ? "the tree" : "the model") + " only");
  if (te) return;
  if (it->first != mit->first || !(it->second == mit->second))
    fail(std::string(what) + ": names {" + std::to_string(it->first) + ", " + show(it->second) + "}, the model {" +
         std::to_string(mit->first) + ", " + show(mit->second) + "}");
}

template <class C>
auto nth(C& c, std::size_t i) {
  auto it = c.begin();
  std::advance(it, static_cast<std::ptrdiff_t>(i));
  return it;
}

template <bool Multi, class V, class Cmp>
void run(input_reader& in) {
  using ty = types<Multi, V, Cmp>;
  using tree = typename ty::tree;
  using model = typename ty::model;
  using pair_t = std::pair<int, V>;
  constexpr std::size_t max_size = 1024;

  tree t;
  model m;
  unsigned serial = 0;
  bool other_source = false;
  auto key = [&] { return static_cast<int>(in.byte()); };
  auto pick = [&](std::size_t n) { return n == 0 ? std::size_t{0} : static_cast<std::size_t>(in.byte()) % (n + 1); };
  auto room = [&] { return m.size() < max_size; };

  int ops = 0;
  while (!in.empty() && ops++ < 2048) {
    const unsigned op = in.byte() % 16u;
    const char* what = "?";
    switch (op) {
      case 0: {
        what = "emplace";
        if (!room()) break;
        const int k = key();
        const V v = make_value<V>(++serial);
        if constexpr (Multi) {
          same_position(t, t.emplace(k, v), m, m.emplace(k, v), what);
        } else {
          auto [a, ins] = t.emplace(k, v);
          auto [b, mins] = m.emplace(k, v);
          if (ins != mins) fail("emplace: inserted differs from the model");
          same_position(t, a, m, b, what);
        }
        break;
      }
      case 1: {
        what = "insert(hint, v)";
        if (!room()) break;
        const int k = key();
        const std::size_t h = pick(m.size());
        const typename tree::value_type v(k, make_value<V>(++serial));
        if (in.byte() & 1) {
          same_position(t, t.insert(nth(t, h), v), m, m.insert(nth(m, h), v), what);
        } else {
          what = "insert(v)";
          if constexpr (Multi) {
            same_position(t, t.insert(v), m, m.insert(v), what);
          } else {
            auto [a, ins] = t.insert(v);
            auto [b, mins] = m.insert(v);
            if (ins != mins) fail("insert: inserted differs from the model");
            same_position(t, a, m, b, what);
          }
        }
        break;
      }
      case 2: {
        if (!room()) break;
        const int k = key();
        const V v = make_value<V>(++serial);
        if constexpr (Multi) {
          what = "emplace_hint";
          const std::size_t h = pick(m.size());
          same_position(t, t.emplace_hint(nth(t, h), k, v), m, m.emplace_hint(nth(m, h), k, v), what);
        } else {
          what = "try_emplace";
          auto [a, ins] = t.try_emplace(k, v);
          auto [b, mins] = m.try_emplace(k, v);
          if (ins != mins) fail("try_emplace: inserted differs from the model");
          same_position(t, a, m, b, what);
        }
        break;
      }
      case 3: {
        if (!room()) break;
        const int k = key();
        const V v = make_value<V>(++serial);
        if constexpr (Multi) {
          what = "insert(pair&&)";
          same_position(t, t.insert(pair_t(k, v)), m, m.insert(pair_t(k, v)), what);
        } else {
          what = "insert_or_assign";
          auto [a, ins] = t.insert_or_assign(k, v);
          auto [b, mins] = m.insert_or_assign(k, v);
          if (ins != mins) fail("insert_or_assign: inserted differs from the model");
          same_position(t, a, m, b, what);
        }
        break;
      }
      case 4: {
        const int k = key();
        if constexpr (Multi) {
          what = "count";
          if (t.count(k) != m.count(k)) fail("count(" + std::to_string(k) + ") differs from the model");
        } else {
          what = "operator[]";
          if (!room()) break;
          const V v = make_value<V>(++serial);
          t[k] = v;
          m[k] = v;
        }
        break;
      }
      case 5: {
        what = "erase(key)";
        const int k = key();
        const auto a = t.erase(k);
        const auto b = m.erase(k);
        if (a != b) fail("erase(" + std::to_string(k) + ") erased " + std::to_string(a) + ", the model " + std::to_string(b));
        break;
      }
      case 6: {
        what = "erase(iterator)";
        if (m.empty()) break;
        const std::size_t i = pick(m.size() - 1);
        auto a = t.erase(nth(t, i));
        auto b = m.erase(nth(m, i));
        same_position(t, a, m, b, what);
        break;
      }
      case 7: {
        what = "erase(first, last)";
        std::size_t i = pick(m.size()), j = pick(m.size());
        if (i > j) std::swap(i, j);
        auto a = t.erase(nth(t, i), nth(t, j));
        auto b = m.erase(nth(m, i), nth(m, j));
        same_position(t, a, m, b, what);
        break;
      }
      case 8: {
        what = "lookups";
        const int k = key();
        const tree& ct = t;
        same_position(t, t.find(k), m, m.find(k), "find");
        same_position(t, ct.find(k), m, m.find(k), "find const");
        same_position(t, t.lower_bound(k), m, m.lower_bound(k), "lower_bound");
        same_position(t, ct.lower_bound(k), m, m.lower_bound(k), "lower_bound const");
        same_position(t, t.upper_bound(k), m, m.upper_bound(k), "upper_bound");
        same_position(t, ct.upper_bound(k), m, m.upper_bound(k), "upper_bound const");
        auto [a, b] = t.equal_range(k);
        auto [c, d] = m.equal_range(k);
        same_position(t, a, m, c, "equal_range first");
        same_position(t, b, m, d, "equal_range second");
        if (std::distance(a, b) != std::distance(c, d)) fail("equal_range: lengths differ");
        if (ct.count(k) != m.count(k)) fail("count differs");
        if (ct.contains(k) != m.contains(k)) fail("contains differs");
        break;
      }
      case 9: {
        what = "iteration";
        auto rb = m.rbegin();
        std::size_t n = 0;
        for (auto it = t.rbegin(); it != t.rend(); ++it, ++rb, ++n) {
          if (rb == m.rend()) fail("reverse iteration: the tree has more elements");
          same_position(t, std::prev(it.base()), m, std::prev(rb.base()), "reverse iteration");
        }
        if (n != m.size()) fail("reverse iteration: the tree has fewer elements");
        // -- from end(), then ++ back to end(), from a random position.
        const std::size_t i = pick(m.size());
        auto a = nth(t, i);
        auto b = nth(m, i);
        const std::size_t back = pick(i);
        for (std::size_t s = 0; s < back; ++s) {
          --a;
          --b;
        }
        same_position(t, a, m, b, "operator--");
        for (; b != m.end(); ++a, ++b) same_position(t, a, m, b, "operator++");
        if (a != t.end()) fail("operator++ does not reach end()");
        typename tree::const_iterator ca = t.cbegin();
        if (ca != t.begin()) fail("const_iterator(begin()) != begin()");
        break;
      }
      case 10: {
        what = "merge";
        const std::size_t n = in.byte() % 32u;
        other_source = !other_source;
        auto fill = [&](auto& src, auto& src_model) {
          for (std::size_t i = 0; i < n; ++i) {
            const int k = key();
            const V v = make_value<V>(++serial);
            src.emplace(k, v);
            src_model.emplace(k, v);
          }
          compare(src, src_model, "building a merge source");
          t.merge(src);
          m.merge(src_model);
          compare(src, src_model, "merge (the source)");
        };
        if (!room()) break;
        if (other_source) {
          typename ty::other_tree src;
          typename ty::other_model src_model;
          fill(src, src_model);
        } else {
          tree src;
          model src_model;
          fill(src, src_model);
        }
        break;
      }
      case 11:
        what = "clear";
        t.clear();
        m.clear();
        break;
      case 12: {
        what = "construction from a range";
        std::vector<pair_t> v;
        const std::size_t n = static_cast<std::size_t>(in.byte()) * 2;  // up to 510: several levels
        const int step = static_cast<int>(in.byte() % 4u);              // 0: every key repeated
        const bool unsorted = (in.byte() % 8u) == 0;
        int k = 0;
        for (std::size_t i = 0; i < n; ++i, k += step) v.emplace_back(k % 256, make_value<V>(++serial));
        const Cmp cmp;
        std::stable_sort(v.begin(), v.end(), [&](const pair_t& a, const pair_t& b) { return cmp(a.first, b.first); });
        if (unsorted && v.size() > 1) std::swap(v.front(), v.back());
        t = tree(v.begin(), v.end());
        m = model(v.begin(), v.end());
        break;
      }
      case 13: {
        what = "insert(first, last)";
        std::vector<pair_t> v;
        const std::size_t n = in.byte() % 64u;
        for (std::size_t i = 0; i < n; ++i) v.emplace_back(key(), make_value<V>(++serial));
        if (in.byte() & 1) std::sort(v.begin(), v.end(), [](const pair_t& a, const pair_t& b) { return Cmp{}(a.first, b.first); });
        if (m.size() + v.size() > max_size) break;
        t.insert(v.begin(), v.end());
        m.insert(v.begin(), v.end());
        break;
      }
      case 14: {
        what = "erase_if";
        const unsigned mod = in.byte() % 5u + 2u, rem = in.byte() % mod;
        auto pred = [&](const auto& e) { return static_cast<unsigned>(e.first) % mod == rem; };
        const auto a = tmf::erase_if(t, pred);
        const auto b = std::erase_if(m, pred);
        if (a != b) fail("erase_if erased " + std::to_string(a) + ", the model " + std::to_string(b));
        break;
      }
      case 15: {
        const unsigned how = in.byte() % 4u;
        if (how == 0) {
          what = "copy construction";
          tree c(t);
          compare(c, m, what);
          t = std::move(c);
        } else if (how == 1) {
          what = "copy assignment";
          tree c;
          c.emplace(1, make_value<V>(++serial));
          c = t;
          compare(c, m, what);
          if (!(c == t)) fail("a copy is not == to its source");
        } else if (how == 2) {
          what = "move construction";
          tree c(std::move(t));
          compare(c, m, what);
          if (!t.empty()) fail("a moved-from tree is not empty");
          t = std::move(c);
        } else {
          what = "swap";
          tree c;
          model cm;
          const std::size_t n = in.byte() % 40u;
          for (std::size_t i = 0; i < n; ++i) {
            const int k = key();
            const V v = make_value<V>(++serial);
            c.emplace(k, v);
            cm.emplace(k, v);
          }
          if (n % 2 == 0) {
            t.swap(c);
          } else {
            tmf::swap(c, t);
          }
          std::swap(cm, m);
          compare(c, cm, "swap (the other tree)");
        }
        break;
      }
    }
    compare(t, m, what);
  }
  compare(t, m, "the last operation");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input_reader in{data, size};
  switch (in.byte() % 8u) {
    case 0: run<false, int, std::less<>>(in); break;
    case 1: run<true, int, std::less<>>(in); break;
    case 2: run<false, std::string, std::less<>>(in); break;
    case 3: run<true, std::string, std::less<>>(in); break;
    case 4: run<false, int, descending>(in); break;
    case 5: run<true, int, descending>(in); break;
    case 6: run<false, std::string, descending>(in); break;
    default: run<true, std::string, descending>(in); break;
  }
  return 0;
}
