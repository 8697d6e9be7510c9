// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The workload of the crash tests (kill_test.cpp, powerloss_test.cpp): a deterministic
/// PRNG, the Root on disk (tmf containers) and the same data in std containers (the model),
/// the operations of transaction n (`apply_ops`, the same code for both) and the comparison
/// of a recovered Root with the model. The state is a function of the transaction number:
/// transaction n applies ops drawn from a PRNG seeded by (seed, n). The two tests differ only
/// in their `workload` (operation mix and sizes).
#ifndef TMF_TESTS_CRASH_WORKLOAD_HPP
#define TMF_TESTS_CRASH_WORKLOAD_HPP

#include <tmf/btree.hpp>
#include <tmf/tmf.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tmf_test::crash {

// -- deterministic generator ----------------------------------------------------------------

inline std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

struct prng {
  std::uint64_t state;
  explicit prng(std::uint64_t a, std::uint64_t b = 0) noexcept : state(mix64(a + 0x9e3779b97f4a7c15ULL) ^ mix64(~b)) {}
  std::uint64_t next() noexcept { return mix64(state += 0x9e3779b97f4a7c15ULL); }
  std::uint64_t below(std::uint64_t n) noexcept { return next() % n; }
  bool chance(double p) noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }
};

/// The number in environment variable `name`, or `fallback` if it is unset or empty.
inline std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 0);
}

/// The seed in environment variable `name` (to reproduce a run), else a random one.
inline std::uint64_t seed_from_env(const char* name) {
  if (const char* v = std::getenv(name); v != nullptr && *v != '\0') return std::strtoull(v, nullptr, 0);
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) ^ rd();
}

// -- the data: the same shape in the storage (tmf containers) and in the model (std) --------

struct disk_root {
  std::uint64_t seq = 0;
  tmf::map<std::uint64_t, tmf::vector<std::uint64_t>> lists;
  tmf::vector<tmf::string> strings;
  tmf::unordered_map<std::uint64_t, std::uint64_t> counters;
  tmf::map<std::uint64_t, tmf::vector<unsigned char>> blobs;  // content: see blob_desc
  tmf::btree_map<std::uint64_t, std::uint64_t> tree;          // page-sized nodes: splits and merges
};

/// A blob of the model, described rather than stored (powerloss keeps a model per
/// transaction): `size` bytes of blob_fill(salt), then each (offset, byte) of `pokes` stored.
struct blob_desc {
  std::size_t size = 0;
  std::uint64_t salt = 0;
  std::vector<std::pair<std::size_t, unsigned char>> pokes;
};

struct model_root {
  std::uint64_t seq = 0;
  std::map<std::uint64_t, std::vector<std::uint64_t>> lists;
  std::vector<std::string> strings;
  std::unordered_map<std::uint64_t, std::uint64_t> counters;
  std::map<std::uint64_t, blob_desc> blobs;
  std::map<std::uint64_t, std::uint64_t> tree;
};

inline void blob_fill(unsigned char* p, std::size_t size, std::uint64_t salt) noexcept {
  for (std::size_t i = 0; i < size; i += 8) {
    const std::uint64_t v = mix64(salt + i);
    std::memcpy(p + i, &v, std::min<std::size_t>(8, size - i));
  }
}

// The blob operations, on disk and in the model.
inline std::size_t blob_size(const tmf::vector<unsigned char>& b) { return b.size(); }
inline std::size_t blob_size(const blob_desc& b) { return b.size; }
inline void blob_set(tmf::vector<unsigned char>& b, std::size_t size, std::uint64_t salt) {
  b.clear();
  b.shrink_to_fit();
  b.resize(size);
  blob_fill(b.data(), size, salt);
}
inline void blob_set(blob_desc& b, std::size_t size, std::uint64_t salt) { b = {size, salt, {}}; }
inline void blob_rewrite(tmf::vector<unsigned char>& b, std::uint64_t salt) { blob_fill(b.data(), b.size(), salt); }
inline void blob_rewrite(blob_desc& b, std::uint64_t salt) {
  b.salt = salt;
  b.pokes.clear();
}
inline void blob_poke(tmf::vector<unsigned char>& b, std::size_t at, unsigned char v) { b[at] = v; }
inline void blob_poke(blob_desc& b, std::size_t at, unsigned char v) { b.pokes.emplace_back(at, v); }

/// The content of a model's blob, into `out`.
inline void blob_bytes(const blob_desc& b, std::vector<unsigned char>& out) {
  out.resize(b.size);
  blob_fill(out.data(), out.size(), b.salt);
  for (const auto& [at, v] : b.pokes) out[at] = v;
}

// -- the operations -------------------------------------------------------------------------

/// The tuning of a test's transactions: how many operations, how often each kind is drawn
/// (`weight`, in proportion; 0: never) and the sizes.
struct workload {
  struct weights {
    unsigned list_put = 0;       ///< (re)place a list: allocation, and a free when it existed
    unsigned list_append = 0;    ///< append to a list: reallocation
    unsigned list_erase = 0;     ///< erase a list: frees
    unsigned list_poke = 0;      ///< 4 scattered stores into a list, no allocation
    unsigned string_put = 0;     ///< new string, or erase one when there are max_strings
    unsigned string_append = 0;  ///< append 1-100 chars (cleared past 8000)
    unsigned string_erase = 0;
    unsigned counter_add = 0;    ///< node allocations, rehashes
    unsigned counter_erase = 0;
    unsigned blob_put = 0;       ///< new or replaced blob: many pages, growth (or an erase, see below)
    unsigned blob_erase = 0;
    unsigned blob_rewrite = 0;   ///< rewrite a whole blob in place: pages without allocation
    unsigned blob_poke = 0;      ///< 8 scattered stores into a blob, no allocation
    unsigned tree_put = 0;       ///< insert or assign up to tree_burst random keys: leaf splits
    unsigned tree_erase = 0;     ///< erase up to tree_burst entries in a row: merges, rebalancing
  };

  std::uint64_t max_ops = 1;  ///< operations per transaction: 1 to max_ops
  weights weight{};
  /// Every big_blob_every-th transaction (0: none) only replaces blob big_blob_key with
  /// big_blob_size bytes: a commit of a known multi-page record.
  std::uint64_t big_blob_every = 0, big_blob_key = 0, big_blob_size = 0;
  /// Lists: keys below list_keys; below(list_len) elements, in one of long_list_odds lists
  /// below(long_list_extra) more (odds 0: never); an append adds 1 to list_append_max.
  std::uint64_t list_keys = 1, list_len = 1, long_list_odds = 0, long_list_extra = 0, list_append_max = 1;
  /// Strings: at most max_strings; below(string_len) chars, in one of long_string_odds strings
  /// below(long_string_extra) more.
  std::uint64_t max_strings = 0, string_len = 1, long_string_odds = 0, long_string_extra = 0;
  std::uint64_t counter_keys = 1;
  /// Blobs: keys below blob_keys; blob_min + below(blob_range) bytes, in one of long_blob_odds
  /// below(long_blob_extra) more. blob_put erases a blob instead when there are max_blobs, or
  /// in one of blob_erase_odds draws; it erases one first when the blobs would pass blob_cap
  /// bytes (0: no cap).
  std::uint64_t blob_keys = 1, blob_min = 0, blob_range = 1, long_blob_odds = 0, long_blob_extra = 0;
  std::uint64_t max_blobs = std::numeric_limits<std::uint64_t>::max(), blob_erase_odds = 0, blob_cap = 0;
  /// The B-tree: keys below tree_keys, 1 + below(tree_burst) entries per operation.
  std::uint64_t tree_keys = 1, tree_burst = 1;
};

/// An entry of `m` at or after `key`, else the first (m must not be empty).
template <class Map>
auto pick(Map& m, std::uint64_t key) {
  auto it = m.lower_bound(key);
  return it == m.end() ? m.begin() : it;
}

/// The ops of transaction `n` (stream 0), or junk that is rolled back (other streams). Runs
/// identically on disk_root (inside a writer) and model_root.
template <class Root>
void apply_ops(Root& r, const workload& t, std::uint64_t seed, std::uint64_t n, std::uint64_t stream) {
  prng g(seed ^ (stream * 0x5851f42d4c957f2dULL), n);
  if (stream == 0 && t.big_blob_every != 0 && n % t.big_blob_every == 0) {
    blob_set(r.blobs[t.big_blob_key], t.big_blob_size, g.next());
    return;
  }
  enum class op { list_put, list_append, list_erase, list_poke, string_put, string_append, string_erase,
                  counter_add, counter_erase, blob_put, blob_erase, blob_rewrite, blob_poke, tree_put, tree_erase };
  using w = workload::weights;
  static constexpr unsigned w::*weight_of[] = {  // in the order of `op`
      &w::list_put,    &w::list_append,   &w::list_erase,   &w::list_poke,     &w::string_put,
      &w::string_append, &w::string_erase, &w::counter_add, &w::counter_erase, &w::blob_put,
      &w::blob_erase,  &w::blob_rewrite,  &w::blob_poke,    &w::tree_put,      &w::tree_erase};
  std::uint64_t total = 0;
  for (auto k : weight_of) total += t.weight.*k;
  const int ops = 1 + static_cast<int>(g.below(t.max_ops));
  for (int i = 0; i < ops; ++i) {
    std::uint64_t x = g.below(total);
    std::size_t kind = 0;
    while (x >= t.weight.*weight_of[kind]) x -= t.weight.*weight_of[kind++];
    switch (static_cast<op>(kind)) {
      case op::list_put: {
        auto& v = r.lists[g.below(t.list_keys)];
        std::size_t len = g.below(t.list_len);
        if (t.long_list_odds != 0 && g.below(t.long_list_odds) == 0) len += g.below(t.long_list_extra);
        v.clear();
        v.shrink_to_fit();
        for (std::size_t j = 0; j < len; ++j) v.push_back(g.next());
        break;
      }
      case op::list_append: {
        if (r.lists.empty()) break;
        auto it = pick(r.lists, g.below(t.list_keys));
        const std::size_t k = 1 + g.below(t.list_append_max);
        for (std::size_t j = 0; j < k; ++j) it->second.push_back(g.next());
        break;
      }
      case op::list_erase: {
        if (r.lists.empty()) break;
        r.lists.erase(pick(r.lists, g.below(t.list_keys)));
        break;
      }
      case op::list_poke: {
        if (r.lists.empty()) break;
        auto& v = pick(r.lists, g.below(t.list_keys))->second;
        if (v.empty()) break;
        for (int k = 0; k < 4; ++k) v[g.below(v.size())] = g.next();
        break;
      }
      case op::string_put: {
        if (r.strings.size() >= t.max_strings) {
          r.strings.erase(r.strings.begin() + static_cast<std::ptrdiff_t>(g.below(r.strings.size())));
        } else {
          r.strings.emplace_back();
          std::size_t len = g.below(t.string_len);
          if (t.long_string_odds != 0 && g.below(t.long_string_odds) == 0) len += g.below(t.long_string_extra);
          r.strings.back().append(len, static_cast<char>('a' + g.below(26)));
        }
        break;
      }
      case op::string_append: {
        if (r.strings.empty()) break;
        auto& s = r.strings[g.below(r.strings.size())];
        if (s.size() > 8000) s.clear();
        s.append(1 + g.below(100), static_cast<char>('A' + g.below(26)));
        break;
      }
      case op::string_erase: {
        if (r.strings.empty()) break;
        r.strings.erase(r.strings.begin() + static_cast<std::ptrdiff_t>(g.below(r.strings.size())));
        break;
      }
      case op::counter_add: {
        r.counters[g.below(t.counter_keys)] += g.next() | 1;
        break;
      }
      case op::counter_erase: {
        r.counters.erase(g.below(t.counter_keys));
        break;
      }
      case op::blob_put: {
        if (!r.blobs.empty() &&
            (r.blobs.size() >= t.max_blobs || (t.blob_erase_odds != 0 && g.below(t.blob_erase_odds) == 0))) {
          r.blobs.erase(pick(r.blobs, g.below(t.blob_keys)));
          break;
        }
        const std::uint64_t key = g.below(t.blob_keys);
        std::size_t size = t.blob_min + g.below(t.blob_range);
        if (t.long_blob_odds != 0 && g.below(t.long_blob_odds) == 0) size += g.below(t.long_blob_extra);
        if (t.blob_cap != 0) {
          std::uint64_t sum = 0;
          for (const auto& [k, b] : r.blobs) sum += blob_size(b);
          if (sum + size > t.blob_cap && !r.blobs.empty()) r.blobs.erase(pick(r.blobs, g.below(t.blob_keys)));
        }
        blob_set(r.blobs[key], size, g.next());
        break;
      }
      case op::blob_erase: {
        if (r.blobs.empty()) break;
        r.blobs.erase(pick(r.blobs, g.below(t.blob_keys)));
        break;
      }
      case op::blob_rewrite: {
        if (r.blobs.empty()) break;
        blob_rewrite(pick(r.blobs, g.below(t.blob_keys))->second, g.next());
        break;
      }
      case op::blob_poke: {
        if (r.blobs.empty()) break;
        auto& b = pick(r.blobs, g.below(t.blob_keys))->second;
        const std::size_t size = blob_size(b);
        if (size == 0) break;
        for (int k = 0; k < 8; ++k) {
          const std::size_t at = g.below(size);
          blob_poke(b, at, static_cast<unsigned char>(g.next()));
        }
        break;
      }
      case op::tree_put: {
        const std::uint64_t k = 1 + g.below(t.tree_burst);
        for (std::uint64_t j = 0; j < k; ++j) {
          const std::uint64_t key = g.below(t.tree_keys);
          r.tree.insert_or_assign(key, g.next());
        }
        break;
      }
      case op::tree_erase: {  // erase while iterating: erase() returns the next entry
        if (r.tree.empty()) break;
        auto it = pick(r.tree, g.below(t.tree_keys));
        for (std::uint64_t k = 1 + g.below(t.tree_burst); k > 0 && it != r.tree.end(); --k) it = r.tree.erase(it);
        break;
      }
    }
  }
}

/// Transaction `n` itself: its ops, then seq = n.
template <class Root>
void apply_transaction(Root& r, const workload& t, std::uint64_t seed, std::uint64_t n) {
  apply_ops(r, t, seed, n, 0);
  r.seq = n;
}

/// Junk to be rolled back in place of transaction `n`: ops of a random other stream, a random seq.
template <class Root>
void apply_junk(Root& r, const workload& t, std::uint64_t seed, std::uint64_t n, prng& ctl) {
  apply_ops(r, t, seed, n, 1 + ctl.below(1000));
  r.seq = ctl.next();
}

/// Brings the model to transaction `target` (from scratch if it is ahead).
inline void advance(model_root& m, const workload& t, std::uint64_t seed, std::uint64_t target) {
  if (target < m.seq) m = model_root{};
  while (m.seq < target) apply_transaction(m, t, seed, m.seq + 1);
}

/// Empty if the storage's content equals the model, else what differs.
inline std::string compare(const disk_root& d, const model_root& m) {
  std::ostringstream out;
  if (d.seq != m.seq) out << "seq " << d.seq << " != model " << m.seq << "; ";
  if (d.lists.size() != m.lists.size()) {
    out << "lists.size " << d.lists.size() << " != " << m.lists.size() << "; ";
  } else {
    auto a = d.lists.begin();
    for (auto b = m.lists.begin(); b != m.lists.end(); ++a, ++b) {
      if (a->first != b->first) {
        out << "lists key " << a->first << " != " << b->first << "; ";
        break;
      }
      if (!std::equal(a->second.begin(), a->second.end(), b->second.begin(), b->second.end())) {
        out << "lists[" << a->first << "] differs (size " << a->second.size() << " vs " << b->second.size() << "); ";
        break;
      }
    }
  }
  if (d.strings.size() != m.strings.size()) {
    out << "strings.size " << d.strings.size() << " != " << m.strings.size() << "; ";
  } else {
    for (std::size_t i = 0; i < m.strings.size(); ++i)
      if (std::string_view(d.strings[i]) != std::string_view(m.strings[i])) {
        out << "strings[" << i << "] differs (size " << d.strings[i].size() << " vs " << m.strings[i].size() << "); ";
        break;
      }
  }
  if (d.counters.size() != m.counters.size()) {
    out << "counters.size " << d.counters.size() << " != " << m.counters.size() << "; ";
  } else {
    for (const auto& [k, v] : m.counters) {
      auto it = d.counters.find(k);
      if (it == d.counters.end() || it->second != v) {
        out << "counters[" << k << "] differs; ";
        break;
      }
    }
  }
  if (d.blobs.size() != m.blobs.size()) {
    out << "blobs.size " << d.blobs.size() << " != " << m.blobs.size() << "; ";
  } else {
    std::vector<unsigned char> want;
    auto a = d.blobs.begin();
    for (auto b = m.blobs.begin(); b != m.blobs.end(); ++a, ++b) {
      blob_bytes(b->second, want);
      if (a->first != b->first || a->second.size() != want.size() ||
          std::memcmp(a->second.data(), want.data(), want.size()) != 0) {
        out << "blob " << b->first << " differs; ";
        break;
      }
    }
  }
  try {
    d.tree.check();
  } catch (const std::exception& e) {
    out << "tree.check(): " << e.what() << "; ";
  }
  if (d.tree.size() != m.tree.size()) {
    out << "tree.size " << d.tree.size() << " != " << m.tree.size() << "; ";
  } else {
    auto a = d.tree.begin();
    for (auto b = m.tree.begin(); b != m.tree.end(); ++a, ++b)
      if (a->first != b->first || a->second != b->second) {
        out << "tree entry " << std::distance(m.tree.begin(), b) << " is {" << a->first << ", " << a->second
            << "}, the model's {" << b->first << ", " << b->second << "}; ";
        break;
      }
  }
  return out.str();
}

}  // namespace tmf_test::crash

#endif  // TMF_TESTS_CRASH_WORKLOAD_HPP
