// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Writes the seed corpora of the fuzz targets: make_seeds <dir> fills <dir>/fuzz_header,
/// <dir>/fuzz_log, <dir>/fuzz_heap, <dir>/fuzz_untyped and <dir>/fuzz_btree (existing seeds of the same
/// names are overwritten).
/// The storage seeds come from the same deterministic template the targets build (see
/// fuzz_common.hpp), so they stay valid as long as the file format and the template do;
/// regenerate them after a format change:  make_seeds fuzz/corpus  (target make_fuzz_seeds).
#include "fuzz_common.hpp"

#include <iostream>
#include <stdlib.h>  // setenv (POSIX)

namespace {

using namespace tmf_fuzz;
using bytes = std::vector<unsigned char>;

void put(const std::filesystem::path& dir, const std::string& name, unsigned char flags, const bytes& body) {
  bytes out;
  out.reserve(body.size() + 1);
  out.push_back(flags);
  out.insert(out.end(), body.begin(), body.end());
  write_file(dir / name, out);
}

bytes prefix(const bytes& b, std::size_t n) { return bytes(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(std::min(n, b.size()))); }

td::file_header header_of(const bytes& page) {
  td::file_header h;
  std::memcpy(&h, page.data(), sizeof h);
  return h;
}

bytes with_header(bytes page, const td::file_header& h) {
  std::memcpy(page.data(), &h, sizeof h);
  return page;
}

/// Offsets right after each record of a log image.
std::vector<std::size_t> record_ends(const bytes& log) {
  std::vector<std::size_t> ends;
  std::size_t off = td::log_start;
  while (off + sizeof(td::record_header) <= log.size()) {
    td::record_header rh;
    std::memcpy(&rh, log.data() + off, sizeof rh);
    if (std::memcmp(rh.magic, td::record_magic, sizeof rh.magic) != 0) break;
    if (rh.data_bytes > log.size() || rh.extent_count > log.size()) break;
    off += td::record_size(rh.extent_count, rh.data_bytes);
    if (off > log.size()) break;
    ends.push_back(off);
  }
  return ends;
}

void header_seeds(const std::filesystem::path& dir, const template_files& t) {
  const bytes page = prefix(t.data_last, td::page_size);
  put(dir, "valid_page", 0, page);
  put(dir, "valid_page_resealed", 1, page);
  put(dir, "valid_page_read_only", 4, page);
  put(dir, "header_struct_only", 0, prefix(page, sizeof(td::file_header)));
  put(dir, "whole_empty_file", 2, {});
  put(dir, "whole_short_file", 3, prefix(page, 100));
  put(dir, "whole_one_page_truncated", 3, page);
  put(dir, "whole_garbage", 2, bytes(td::page_size, 0x5a));
  td::file_header h = header_of(page);
  {
    td::file_header x = h;
    x.root = 0;  // a file whose creation stopped before its Root: opening creates it
    put(dir, "no_root_resealed", 1, with_header(page, x));
  }
  {
    td::file_header x = h;
    x.version = td::format_version + 1;
    put(dir, "other_version_resealed", 1, with_header(page, x));
  }
  {
    td::file_header x = h;
    x.root_size += 8;
    put(dir, "other_root_resealed", 1, with_header(page, x));
  }
  {
    td::file_header x = h;
    x.root_schema ^= 1;  // same Root name and size, another structural fingerprint
    put(dir, "other_schema_resealed", 1, with_header(page, x));
  }
  {
    td::file_header x = h;
    x.address += std::uint64_t{1} << 30;
    put(dir, "other_address_resealed", 1, with_header(page, x));
    put(dir, "other_address_resealed_any_address", 9, with_header(page, x));
  }
  {
    td::file_header x = h;
    x.arena_size = x.max_size + td::page_size;
    put(dir, "arena_past_max_resealed", 1, with_header(page, x));
  }
  {
    td::file_header x = h;
    x.heap[40] ^= 0x40;  // a tree link in the heap state
    put(dir, "heap_link_resealed", 1, with_header(page, x));
  }
}

void log_seeds(const std::filesystem::path& dir, const template_files& t) {
  const std::vector<std::size_t> ends = record_ends(t.log);
  if (ends.size() != t.last_txn) fail("the template log does not hold one record per commit");
  put(dir, "log_all_records", 0, t.log);
  put(dir, "log_all_records_resealed", 1, t.log);
  for (std::size_t k = 1; k <= 3 && k < ends.size(); ++k)
    put(dir, "log_" + std::to_string(k) + "_records", 0, prefix(t.log, ends[k - 1]));
  put(dir, "log_torn_last_record", 0, prefix(t.log, ends.back() - 100));
  put(dir, "log_header_page_only", 0, prefix(t.log, td::page_size));
  put(dir, "log_header_only", 0, prefix(t.log, sizeof(td::log_header)));
  put(dir, "log_empty", 0, {});
  bytes skipped = prefix(t.log, ends[0]);  // record 1, then record 3: replay stops after 1
  skipped.insert(skipped.end(), t.log.begin() + static_cast<std::ptrdiff_t>(ends[1]),
                 t.log.begin() + static_cast<std::ptrdiff_t>(ends[2]));
  put(dir, "log_gap", 0, skipped);
  // The extent list of record 1 made malformed, then resealed (flag 1): only the list's own
  // checks (ascending, no overlap, within its page) can refuse it.
  auto with_extent = [&](const char* name, auto&& change) {
    bytes b = t.log;
    td::record_extent e;
    const std::size_t at = td::log_start + sizeof(td::record_header) + sizeof e;  // its second extent
    std::memcpy(&e, b.data() + at, sizeof e);
    change(e);
    std::memcpy(b.data() + at, &e, sizeof e);
    put(dir, name, 1, b);
  };
  with_extent("log_extent_overlaps", [](td::record_extent& e) { e.page = 0, e.offset = 8; });
  with_extent("log_extent_past_its_page", [](td::record_extent& e) { e.offset = td::page_size - e.length / 2; });
  with_extent("log_extent_empty", [](td::record_extent& e) { e.length = 0; });
}

void heap_seeds(const std::filesystem::path& dir) {
  // Set-up bytes (arena in units of 16 quanta, offset), then ops (see fuzz_heap.cpp).
  put(dir, "alloc_free", 4, {0, 0, 100, 0, 0, 3, 1, 0, 3});
  put(dir, "empty_arena_grows", 0, {0, 0, 0, 1, 0, 2, 3});
  put(dir, "aligned", 8, {3, 0, 64, 0, 12, 0, 200, 0, 9, 0, 10, 0, 11, 3, 4, 3});
  put(dir, "bad_alignment", 2, {0, 0, 0x3f, 0, 0x3f, 0, 16, 0, 0x3f, 3});
  put(dir, "big_requests", 1, {0, 0xff, 0xff, 0xc0, 0, 0, 0x10, 0x80, 3, 4, 3});
  put(dir, "corrupt_links", 16,
      {0, 0, 64, 0, 0, 0, 64, 0, 0, 0, 64, 0, 0, 0, 64, 0, 0, 0, 64, 0, 0, 1, 1, 1, 2, 3,
       5, 1, 0, 0x40, 5, 2, 8, 0x80, 5, 0, 3, 0x01, 5, 3, 48, 0x40, 3});
  // Size-class runs: a run of 24-byte blocks, 112- and 1024-byte ones, frees, then a corrupted
  // run header.
  bytes runs = {0};
  for (int i = 0; i < 30; ++i) runs.insert(runs.end(), {0, 24, 0, 3});
  for (int i = 0; i < 10; ++i) runs.insert(runs.end(), {0, 100, 0, 4});
  for (int i = 0; i < 5; ++i) runs.insert(runs.end(), {0, 0, 4, 0});
  runs.insert(runs.end(), {3, 4, 3, 1, 5, 1, 9, 3});
  put(dir, "small_runs", 0, runs);
  bytes runs_corrupt = runs;
  runs_corrupt.insert(runs_corrupt.end(), {5, 1, 20, 0x01, 5, 5, 8, 0x10, 3});
  put(dir, "small_runs_corrupt", 0, runs_corrupt);
  // The large tier: 1-64 KiB blocks in runs of 128 KiB to 1 MiB (1500, 5000 and 40000 bytes,
  // some page-aligned), frees, then corrupted run headers.
  bytes large = {0};
  for (int i = 0; i < 8; ++i) large.insert(large.end(), {0, 0xdc, 0x05, 3, 0, 0x88, 0x13, 3, 0, 0x40, 0x9c, 3});
  for (int i = 0; i < 3; ++i) large.insert(large.end(), {0, 0x88, 0x13, 12, 0, 0xdc, 0x05, 12});
  large.insert(large.end(), {3, 4, 3, 1, 2, 1, 7, 3, 0, 0xff, 0xfe, 3, 3});
  put(dir, "large_runs", 0, large);
  bytes large_corrupt = large;
  large_corrupt.insert(large_corrupt.end(), {5, 1, 4, 0x01, 5, 5, 40, 0x08, 5, 9, 16, 0x20, 3});
  put(dir, "large_runs_corrupt", 0, large_corrupt);
  // A longer pseudo-random mix (fixed generator: reproducible).
  bytes mix = {3};
  std::uint32_t x = 12345;
  for (int i = 0; i < 400; ++i) {
    x = x * 1103515245u + 12345u;
    mix.push_back(static_cast<unsigned char>(x >> 16));
  }
  put(dir, "random_mix", 32, mix);
}

void untyped_seeds(const std::filesystem::path& dir, const template_files& t) {
  const bytes page = prefix(t.data_last, td::page_size);
  put(dir, "valid_page", 0, page);
  put(dir, "valid_page_with_log", 8, page);
  put(dir, "whole_file", 2, t.data_last);
  put(dir, "whole_file_with_log", 10, t.data_last);
  put(dir, "first_commit_with_log", 10, t.data_first);
  put(dir, "heap_page", 4, prefix(bytes(t.data_last.begin() + td::page_size, t.data_last.end()), 512));
  put(dir, "header_resealed", 1, prefix(page, sizeof(td::file_header)));
  put(dir, "whole_empty_file", 2, {});
  put(dir, "whole_short_file", 2, prefix(page, 100));
  put(dir, "truncated_file", 2, prefix(t.data_last, td::page_size + 100));
}

void btree_seeds(const std::filesystem::path& dir) {
  // A configuration byte (bit 0 multimap, bit 1 string values, bit 2 descending), then ops
  // (see fuzz_btree.cpp); put() adds the configuration byte.
  // Ascending, then descending keys, enough for splits on three levels, then erasures.
  bytes grow;
  for (int k = 0; k < 120; ++k) grow.insert(grow.end(), {0, static_cast<unsigned char>(k)});
  for (int k = 255; k > 135; --k) grow.insert(grow.end(), {0, static_cast<unsigned char>(k)});
  grow.insert(grow.end(), {8, 60, 9, 100, 30, 7, 10, 200, 6, 0, 6, 255, 5, 17, 14, 3, 1, 9, 0, 0});
  for (int k = 0; k < 256; k += 2) grow.insert(grow.end(), {5, static_cast<unsigned char>(k)});
  grow.insert(grow.end(), {9, 50, 20, 7, 0, 255});
  put(dir, "grow_shrink_map", 0, grow);
  put(dir, "grow_shrink_multimap_strings", 3, grow);
  put(dir, "grow_shrink_map_descending", 4, grow);
  // Bulk construction, merges both ways, copy/move/swap, lookups, erase while iterating.
  const bytes bulk = {12, 200, 1, 1, 8, 100, 8, 255, 10, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
                      18, 19, 20, 10, 31, 200, 201, 202, 203, 15, 0, 15, 1, 15, 2, 15, 3, 30, 1, 2, 3, 14, 3, 1,
                      12, 90, 0, 0, 9, 40, 40, 13, 50, 1, 13, 60, 0, 7, 10, 200, 11, 12, 3, 2, 8};
  put(dir, "bulk_merge_map", 0, bulk);
  put(dir, "bulk_merge_multimap", 1, bulk);
  put(dir, "bulk_merge_map_strings_descending", 6, bulk);
  put(dir, "bulk_merge_multimap_strings_descending", 7, bulk);
  // A pseudo-random mix (fixed generator: reproducible).
  bytes mix;
  std::uint32_t x = 4242;
  for (int i = 0; i < 1500; ++i) {
    x = x * 1103515245u + 12345u;
    mix.push_back(static_cast<unsigned char>(x >> 16));
  }
  put(dir, "random_mix_map", 0, mix);
  put(dir, "random_mix_multimap", 1, mix);
  put(dir, "random_mix_map_strings", 2, mix);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds <corpus dir>\n";
    return 2;
  }
  const std::filesystem::path out = argv[1];
  // The kernel's tracker logs more pages for a storage's creation than the mprotect one (whole
  // chunks), so the records and the headers' log offsets would depend on the machine: the
  // seeds are always written with the tracker every machine has.
  ::setenv("TMF_TRACKER", "fallback", 1);
  const template_files t = make_template(process_path("seeds-template"));
  for (const char* target : {"fuzz_header", "fuzz_log", "fuzz_heap", "fuzz_untyped", "fuzz_btree"})
    std::filesystem::create_directories(out / target);
  header_seeds(out / "fuzz_header", t);
  log_seeds(out / "fuzz_log", t);
  heap_seeds(out / "fuzz_heap");
  untyped_seeds(out / "fuzz_untyped", t);
  btree_seeds(out / "fuzz_btree");
  std::cout << "seeds written to " << out << " (template: " << t.data_last.size() << "-byte data file, "
            << t.log.size() << "-byte log)\n";
  return 0;
}
