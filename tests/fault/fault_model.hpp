// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The data of the fault-injection stage, shared by the workload (tests/fault/fiu_workload.cpp)
/// and its verifier (tests/fault/fiu_test.cpp): the Root kept in the storage, a plain-std
/// model of it, the transaction that changes both the same way, and their comparison.
///
/// Transaction `seq` made by attempt `attempt` (a number unique within a workload run: every
/// try of a commit, rolled back or not, has its own) sets the stamp (seq, attempt, stamp),
/// rewrites `values` entirely, writes a few scattered pages of the 256 KiB `block` (each page
/// starts with the seq and attempt that wrote it) and now and then (re)allocates or frees the
/// big `extra` vector. So the state after seq S is a function of the attempt that committed
/// each of 1..S, which the verifier learns from the workload's report, and a page written by
/// a rolled-back attempt is recognisable by its first two words.
#ifndef TMF_TESTS_FAULT_FAULT_MODEL_HPP
#define TMF_TESTS_FAULT_FAULT_MODEL_HPP

#include <tmf/tmf.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "crash/workload.hpp"

namespace tmf_fault {

// The crash tests' deterministic generator (splitmix64 over a seed of two words).
using tmf_test::crash::mix64;
using tmf_test::crash::prng;

constexpr std::size_t page_words = 4096 / sizeof(std::uint64_t);
constexpr std::size_t block_pages = 64;  // 256 KiB
constexpr std::size_t block_words = block_pages * page_words;

/// The Root in the storage.
struct disk_root {
  std::uint64_t seq = 0;
  std::uint64_t attempt = 0;
  std::uint64_t stamp = 0;  // stamp_of(salt, seq, attempt); 0 for the empty state
  tmf::vector<std::uint64_t> values;
  tmf::vector<std::uint64_t> block;
  tmf::vector<std::uint64_t> extra;
};

/// The same data in plain memory.
struct model_root {
  std::uint64_t seq = 0;
  std::uint64_t attempt = 0;
  std::uint64_t stamp = 0;
  std::vector<std::uint64_t> values;
  std::vector<std::uint64_t> block;
  std::vector<std::uint64_t> extra;
};

inline std::uint64_t stamp_of(std::uint64_t salt, std::uint64_t seq, std::uint64_t attempt) noexcept {
  return mix64(salt ^ mix64(seq * 0x100000001b3ULL + attempt)) | 1;
}

inline std::uint64_t word_of(std::uint64_t salt, std::uint64_t seq, std::uint64_t attempt, std::uint64_t where) noexcept {
  return mix64(stamp_of(salt, seq, attempt) + where * 0x9e3779b97f4a7c15ULL);
}

/// Transaction `seq` by attempt `attempt`, on the storage's Root (inside a writer) or on the
/// model: the same operations, so the same contents.
template <class Root>
void apply_txn(Root& r, std::uint64_t salt, std::uint64_t seq, std::uint64_t attempt) {
  prng g(salt ^ seq, attempt);
  r.seq = seq;
  r.attempt = attempt;
  r.stamp = stamp_of(salt, seq, attempt);

  // values: freed and rebuilt (allocation traffic), a few pages.
  const std::size_t len = 1 + static_cast<std::size_t>(g.below(g.below(8) == 0 ? 6000 : 600));
  r.values.clear();
  r.values.shrink_to_fit();
  r.values.reserve(len);
  for (std::size_t i = 0; i < len; ++i) r.values.push_back(word_of(salt, seq, attempt, i));

  // block: scattered pages, sometimes many (bigger records, earlier checkpoints).
  if (r.block.size() != block_words) r.block.assign(block_words, 0);
  std::size_t pages = 1 + static_cast<std::size_t>(g.below(6));
  if (g.below(12) == 0) pages += 12 + static_cast<std::size_t>(g.below(20));
  for (std::size_t k = 0; k < pages; ++k) {
    const std::size_t p = static_cast<std::size_t>(g.below(block_pages));
    std::uint64_t* w = r.block.data() + p * page_words;
    w[0] = seq;
    w[1] = attempt;
    for (std::size_t i = 2; i < page_words; ++i) w[i] = word_of(salt, seq, attempt, (p << 16) + i);
  }

  // extra: a big allocation every 20 transactions (the file grows), freed 9 later.
  if (seq % 20 == 0) {
    r.extra.assign(4000 + static_cast<std::size_t>(g.below(24000)), stamp_of(salt, seq, attempt));
  } else if (seq % 20 == 9) {
    r.extra.clear();
    r.extra.shrink_to_fit();
  }
}

/// The model after transactions 1..committed.size()-1, transaction s made by attempt
/// committed[s] (committed[0] is unused).
inline model_root model_for(std::uint64_t salt, const std::vector<std::uint64_t>& committed) {
  model_root m;
  for (std::uint64_t s = 1; s < committed.size(); ++s) apply_txn(m, salt, s, committed[s]);
  return m;
}

/// Empty if the storage's Root equals the model, else the first difference.
inline std::string compare(const disk_root& d, const model_root& m) {
  char buf[256];
  if (d.seq != m.seq || d.attempt != m.attempt || d.stamp != m.stamp) {
    std::snprintf(buf, sizeof buf, "stamp: seq %llu attempt %llu stamp %016llx, expected seq %llu attempt %llu stamp %016llx",
                  static_cast<unsigned long long>(d.seq), static_cast<unsigned long long>(d.attempt),
                  static_cast<unsigned long long>(d.stamp), static_cast<unsigned long long>(m.seq),
                  static_cast<unsigned long long>(m.attempt), static_cast<unsigned long long>(m.stamp));
    return buf;
  }
  auto vec = [&](const char* name, const auto& a, const std::vector<std::uint64_t>& b, bool paged) -> std::string {
    if (a.size() != b.size()) {
      std::snprintf(buf, sizeof buf, "%s: %zu words, expected %zu", name, a.size(), b.size());
      return buf;
    }
    for (std::size_t i = 0; i < b.size(); ++i) {
      if (a[i] == b[i]) continue;
      if (paged) {  // a block page names its writer in its first two words
        const std::size_t p = i / page_words;
        std::snprintf(buf, sizeof buf,
                      "block page %zu word %zu: the page is from seq %llu attempt %llu, expected seq %llu attempt %llu",
                      p, i % page_words, static_cast<unsigned long long>(a[p * page_words]),
                      static_cast<unsigned long long>(a[p * page_words + 1]),
                      static_cast<unsigned long long>(b[p * page_words]),
                      static_cast<unsigned long long>(b[p * page_words + 1]));
      } else {
        std::snprintf(buf, sizeof buf, "%s[%zu] = %016llx, expected %016llx", name, i,
                      static_cast<unsigned long long>(a[i]), static_cast<unsigned long long>(b[i]));
      }
      return buf;
    }
    return {};
  };
  if (auto e = vec("values", d.values, m.values, false); !e.empty()) return e;
  if (auto e = vec("block", d.block, m.block, true); !e.empty()) return e;
  return vec("extra", d.extra, m.extra, false);
}

/// The options of the stage: durable commits, a checkpoint (data-file sync and log restart)
/// after every 64 KiB of log.
inline tmf::options stage_options(tmf::open_mode mode = tmf::open_mode::open_or_create) {
  tmf::options o;
  o.mode = mode;
  o.sync = tmf::durability::full;
  o.checkpoint_bytes = std::size_t{64} << 10;
  o.max_size = std::size_t{256} << 20;
  return o;
}

}  // namespace tmf_fault

#endif  // TMF_TESTS_FAULT_FAULT_MODEL_HPP
