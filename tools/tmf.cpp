// SPDX-License-Identifier: Apache-2.0 OR MIT
// The `tmf` command: looks at, audits, copies and compacts tmf storages without their Root
// type (tmf::untyped_storage, <tmf/inspect.hpp>).
//
//   tmf info FILE [--json]       format, address, sizes, Root, last transaction and its
//                                durability, log state
//   tmf stats FILE [--json]      heap sizes and free blocks by size class
//   tmf check FILE               full audit: exit 0 if clean, 1 with the problem named
//   tmf copy SRC DST             consistent hot copy (also while another process writes)
//   tmf compact FILE             give back the space the heap does not use
//   tmf map FILE --out F.svg     a picture of the arena: allocated and free extents, the log
//
// Exit status: 0 done, 1 the file was refused or a problem was found (the message names
// it), 2 wrong usage. info, stats, check, map and the source of copy are opened read-only:
// neither file is ever written.
#include <tmf/inspect.hpp>
#include <tmf/version.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

constexpr int exit_ok = 0, exit_problem = 1, exit_usage = 2;

const char* const usage_text =
    "usage: tmf <command> [arguments]\n"
    "  tmf info FILE [--json]      format, address, sizes, Root type, last transaction, log state\n"
    "  tmf stats FILE [--json]     heap sizes and free blocks by size class\n"
    "  tmf check FILE              full audit: exit 0 if clean, 1 with the problem named\n"
    "  tmf copy SRC DST            consistent copy, also while another process writes SRC\n"
    "  tmf compact FILE            truncate the free tail, punch out free extents (nothing moves)\n"
    "  tmf map FILE --out OUT.svg  a picture of the arena: allocated and free extents, the log's share\n"
    "Exit status: 0 done, 1 the file was refused or a problem was found, 2 wrong usage.\n"
    "info, stats, check, map and copy's SRC are opened read-only and never written.\n";

struct usage_error {
  std::string what;
};

/// "tmf: x: y" from the library becomes "tmf <command>: x: y".
std::string strip_prefix(std::string_view what) {
  if (what.substr(0, 5) == "tmf: ") what.remove_prefix(5);
  return std::string(what);
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string human(std::uint64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[48];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

const char* log_state_name(tmf::log_state s) {
  switch (s) {
    case tmf::log_state::absent: return "absent";
    case tmf::log_state::unused: return "unused";
    case tmf::log_state::clean: return "clean";
    case tmf::log_state::applied: return "applied";
    case tmf::log_state::unapplied: return "unapplied";
  }
  return "unknown";
}

std::string log_state_text(const tmf::storage_info& i) {
  switch (i.log) {
    case tmf::log_state::absent: return "absent (never opened writable, or the log was removed)";
    case tmf::log_state::unused: return "no valid header (the next writable open starts a new generation)";
    case tmf::log_state::clean: return "clean: no record since the last checkpoint";
    case tmf::log_state::applied:
    case tmf::log_state::unapplied: {
      std::string s = std::to_string(i.log_records) + " record" + (i.log_records == 1 ? "" : "s") + " (" +
                      human(i.log_record_bytes) + ", transactions " + std::to_string(i.log_base_txn + 1) + ".." +
                      std::to_string(i.log_last_txn) + ") since the last checkpoint, ";
      if (i.log == tmf::log_state::applied) return s + "all in the data file";
      return s + "not all in the data file: the next writable open replays them" +
             (i.recovered_in_memory ? " (this view replayed them in memory)" : "");
    }
  }
  return "unknown";
}

// -- subcommands ------------------------------------------------------------------------

int cmd_info(const std::filesystem::path& file, bool json) {
  const tmf::untyped_storage s(file);
  const tmf::storage_info i = s.info();
  if (json) {
    std::printf("{\"file\": %s, \"format_version\": %u, \"word_size\": %u, \"page_size\": %u, "
                "\"file_id\": \"%s\", \"address\": \"%s\", \"max_size\": %llu, \"arena_bytes\": %llu, "
                "\"file_bytes\": %llu, \"disk_bytes\": %llu, \"user_magic\": %llu, \"has_root\": %s, "
                "\"root_name\": %s, \"root_size\": %llu, \"root_align\": %llu, \"root_fingerprint\": \"%s\", "
                "\"txn\": %llu, \"last_durability\": \"%s\", \"recovered_in_memory\": %s, \"open_elsewhere\": %s, "
                "\"log\": {\"state\": \"%s\", \"bytes\": %llu, \"generation\": \"%s\", \"base_txn\": %llu, "
                "\"records\": %llu, \"last_txn\": %llu, \"record_bytes\": %llu}}\n",
                json_string(file.string()).c_str(), i.format_version, i.word_size, i.page_size, hex(i.file_id).c_str(),
                hex(i.address).c_str(), static_cast<unsigned long long>(i.max_size),
                static_cast<unsigned long long>(i.arena_bytes), static_cast<unsigned long long>(i.file_bytes),
                static_cast<unsigned long long>(i.disk_bytes), static_cast<unsigned long long>(i.user_magic),
                i.has_root ? "true" : "false", json_string(i.root_name).c_str(),
                static_cast<unsigned long long>(i.root_size), static_cast<unsigned long long>(i.root_align),
                hex(i.root_fingerprint).c_str(), static_cast<unsigned long long>(i.txn), i.last_durability.c_str(),
                i.recovered_in_memory ? "true" : "false", i.open_elsewhere ? "true" : "false", log_state_name(i.log),
                static_cast<unsigned long long>(i.log_bytes), hex(i.log_generation).c_str(),
                static_cast<unsigned long long>(i.log_base_txn), static_cast<unsigned long long>(i.log_records),
                static_cast<unsigned long long>(i.log_last_txn), static_cast<unsigned long long>(i.log_record_bytes));
    return exit_ok;
  }
  std::printf("file         %s\n", file.string().c_str());
  std::printf("format       version %u, %u-bit, page size %u\n", i.format_version, 8 * i.word_size, i.page_size);
  std::printf("address      %s (reserves %s)\n", hex(i.address).c_str(), human(i.max_size).c_str());
  std::printf("arena        %s (%llu bytes); data file %llu bytes, %s on disk\n", human(i.arena_bytes).c_str(),
              static_cast<unsigned long long>(i.arena_bytes), static_cast<unsigned long long>(i.file_bytes),
              human(i.disk_bytes).c_str());
  if (i.has_root)
    std::printf("root         %s (size %llu, align %llu, fingerprint %s)\n", i.root_name.c_str(),
                static_cast<unsigned long long>(i.root_size), static_cast<unsigned long long>(i.root_align),
                hex(i.root_fingerprint).c_str());
  else
    std::printf("root         none yet (%s: made by the first writable open)\n", i.root_name.c_str());
  std::printf("magic        %llu (the application's tmf::options::magic)\n", static_cast<unsigned long long>(i.user_magic));
  std::printf("transaction  %llu (the last commit)%s\n", static_cast<unsigned long long>(i.txn),
              i.recovered_in_memory ? ", recovered from the log in memory" : "");
  std::printf("durability   %s (the last commit's writer)\n", i.last_durability.c_str());
  std::printf("log          %s; %s\n", log_state_text(i).c_str(), human(i.log_bytes).c_str());
  std::printf("open         %s\n", i.open_elsewhere ? "by a writable process now" : "by no writable process");
  std::printf("file id      %s\n", hex(i.file_id).c_str());
  return exit_ok;
}

struct size_class {
  std::uint64_t min, blocks = 0, bytes = 0;
};

int cmd_stats(const std::filesystem::path& file, bool json) {
  const tmf::untyped_storage s(file);
  const tmf::storage_stats st = s.stats();
  const std::vector<tmf::free_extent> extents = s.free_extents();  // audits the heap first
  // Free blocks by power-of-two size: 64, 128, ... bytes up to 1 GiB and more.
  std::vector<size_class> classes;
  for (std::uint64_t m = 64; m <= (std::uint64_t{1} << 30); m *= 2) classes.push_back({m});
  for (const auto& x : extents) {
    std::size_t k = 0;
    while (k + 1 < classes.size() && x.size >= classes[k + 1].min) ++k;
    ++classes[k].blocks;
    classes[k].bytes += x.size;
  }
  const double frag = st.free_bytes == 0 ? 0.0 : 1.0 - static_cast<double>(st.largest_free_block) / static_cast<double>(st.free_bytes);
  if (json) {
    std::printf("{\"file\": %s, \"file_bytes\": %zu, \"disk_bytes\": %zu, \"arena_bytes\": %zu, \"allocated_bytes\": %zu, \"free_bytes\": %zu, "
                "\"free_blocks\": %zu, \"largest_free_block\": %zu, \"fragmentation\": %.4f, \"free_by_size\": [",
                json_string(file.string()).c_str(), st.file_bytes, st.disk_bytes, st.arena_bytes, st.allocated_bytes, st.free_bytes,
                st.free_blocks, st.largest_free_block, frag);
    bool first = true;
    for (const auto& c : classes) {
      if (c.blocks == 0) continue;
      std::printf("%s{\"min_bytes\": %llu, \"blocks\": %llu, \"bytes\": %llu}", first ? "" : ", ",
                  static_cast<unsigned long long>(c.min), static_cast<unsigned long long>(c.blocks),
                  static_cast<unsigned long long>(c.bytes));
      first = false;
    }
    std::printf("], \"spare_bytes\": %zu, \"size_classes\": [", st.spare_bytes);
    first = true;
    for (const auto& c : st.size_classes) {
      if (c.runs == 0) continue;
      std::printf("%s{\"block_size\": %zu, \"runs\": %zu, \"blocks\": %zu, \"bytes\": %zu}", first ? "" : ", ",
                  c.block_size, c.runs, c.blocks, c.bytes);
      first = false;
    }
    std::printf("]}\n");
    return exit_ok;
  }
  std::printf("file                %s\n", file.string().c_str());
  std::printf("data file           %zu bytes, %zu on disk (%s; freed extents are punched out)\n", st.file_bytes,
              st.disk_bytes, human(st.disk_bytes).c_str());
  std::printf("arena               %zu bytes (%s)\n", st.arena_bytes, human(st.arena_bytes).c_str());
  std::printf("allocated           %zu bytes (%.1f%% of the arena)\n", st.allocated_bytes,
              st.arena_bytes ? 100.0 * static_cast<double>(st.allocated_bytes) / static_cast<double>(st.arena_bytes) : 0.0);
  std::printf("free                %zu bytes in %zu blocks, the largest %zu bytes\n", st.free_bytes, st.free_blocks,
              st.largest_free_block);
  std::printf("fragmentation       %.1f%% (1 - largest free block / free bytes)\n", 100.0 * frag);
  std::printf("free blocks by size\n");
  for (const auto& c : classes) {
    if (c.blocks == 0) continue;
    std::printf("  >= %-12s %8llu blocks %14llu bytes\n", human(c.min).c_str(), static_cast<unsigned long long>(c.blocks),
                static_cast<unsigned long long>(c.bytes));
  }
  std::printf("size classes        %zu bytes spare in runs (headers and free slots)\n", st.spare_bytes);
  for (const auto& c : st.size_classes) {
    if (c.runs == 0) continue;
    std::printf("  %6zu B  %6zu runs %10zu blocks %14zu bytes in use\n", c.block_size, c.runs, c.blocks, c.bytes);
  }
  return exit_ok;
}

int cmd_check(const std::filesystem::path& file) {
  const tmf::untyped_storage s(file);
  s.check();
  const tmf::storage_stats st = s.stats();
  std::printf("%s: ok (transaction %llu, %zu bytes allocated, %zu free in %zu blocks)\n", file.string().c_str(),
              static_cast<unsigned long long>(s.info().txn), st.allocated_bytes, st.free_bytes, st.free_blocks);
  return exit_ok;
}

int cmd_copy(const std::filesystem::path& src, const std::filesystem::path& dst) {
  const tmf::untyped_storage s(src);
  s.copy_to(dst);
  std::printf("copied %s (transaction %llu) to %s and %s-log\n", src.string().c_str(),
              static_cast<unsigned long long>(s.info().txn), dst.string().c_str(), dst.string().c_str());
  return exit_ok;
}

int cmd_compact(const std::filesystem::path& file) {
  tmf::untyped_storage s(file, tmf::open_mode::open_only);
  const tmf::compact_result r = s.compact();
  std::printf("%s: file %llu -> %llu bytes, disk %s -> %s (%s of free extents punched out)\n", file.string().c_str(),
              static_cast<unsigned long long>(r.file_bytes_before), static_cast<unsigned long long>(r.file_bytes_after),
              human(r.disk_bytes_before).c_str(), human(r.disk_bytes_after).c_str(), human(r.punched_bytes).c_str());
  return exit_ok;
}

/// Whether `out` names `file` or its log (the map must never overwrite what it shows).
bool same_file(const std::filesystem::path& out, const std::filesystem::path& file) {
  std::error_code ec;
  for (const auto& p : {file, std::filesystem::path(file.string() + "-log")})
    if (std::filesystem::equivalent(out, p, ec) || std::filesystem::absolute(out, ec) == std::filesystem::absolute(p, ec))
      return true;
  return false;
}

int cmd_map(const std::filesystem::path& file, const std::filesystem::path& out) {
  if (same_file(out, file)) throw usage_error{"--out names the storage or its log: " + out.string()};
  const tmf::untyped_storage s(file);
  const tmf::storage_info i = s.info();
  const std::vector<tmf::free_extent> extents = s.free_extents();  // audited
  const std::uint64_t arena = i.arena_bytes;
  // At most 128 x 64 cells, each a page or more; a cell's shade is its free share.
  constexpr std::uint64_t columns = 128, max_rows = 64, cell_px = 7;
  std::uint64_t cell = 4096;
  while ((arena + cell - 1) / cell > columns * max_rows) cell *= 2;
  const std::uint64_t cells = (arena + cell - 1) / cell;
  std::vector<std::uint64_t> free_in(cells, 0);
  for (const auto& x : extents) {
    for (std::uint64_t a = x.offset, end = x.offset + x.size; a < end;) {
      const std::uint64_t k = a / cell;
      const std::uint64_t stop = std::min(end, (k + 1) * cell);
      free_in[k] += stop - a;
      a = stop;
    }
  }
  const std::uint64_t rows = (cells + columns - 1) / columns;
  const std::uint64_t width = columns * cell_px + 20, grid_h = rows * cell_px;
  const std::uint64_t height = grid_h + 120;
  std::string svg;
  auto add = [&](const std::string& s) { svg += s; };
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%llu\" height=\"%llu\" font-family=\"sans-serif\" "
                "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                static_cast<unsigned long long>(width), static_cast<unsigned long long>(height));
  add(buf);
  std::snprintf(buf, sizeof buf, "<text x=\"10\" y=\"16\">%s: arena %s, one cell = %s, transaction %llu</text>\n",
                file.filename().string().c_str(), human(arena).c_str(), human(cell).c_str(),
                static_cast<unsigned long long>(i.txn));
  add(buf);
  for (std::uint64_t k = 0; k < cells; ++k) {
    const std::uint64_t span = std::min(cell, arena - k * cell);
    const double f = static_cast<double>(free_in[k]) / static_cast<double>(span);
    // Allocated: dark blue; free: light grey; the header page: black.
    int r = static_cast<int>(40 + f * (230 - 40)), g = static_cast<int>(90 + f * (230 - 90)),
        b = static_cast<int>(170 + f * (230 - 170));
    if (k == 0 && cell == 4096) r = g = b = 20;
    std::snprintf(buf, sizeof buf, "<rect x=\"%llu\" y=\"%llu\" width=\"%llu\" height=\"%llu\" fill=\"#%02x%02x%02x\"/>\n",
                  static_cast<unsigned long long>(10 + (k % columns) * cell_px),
                  static_cast<unsigned long long>(26 + (k / columns) * cell_px), static_cast<unsigned long long>(cell_px - 1),
                  static_cast<unsigned long long>(cell_px - 1), r, g, b);
    add(buf);
  }
  // The files' shares: data (allocated, free) and log.
  const double total = static_cast<double>(i.file_bytes + i.log_bytes);
  const tmf::storage_stats st = s.stats();
  const double bar = static_cast<double>(columns * cell_px);
  const double w_alloc = total > 0 ? bar * static_cast<double>(st.allocated_bytes + 4096) / total : 0;
  const double w_free = total > 0 ? bar * static_cast<double>(st.free_bytes) / total : 0;
  const double w_log = total > 0 ? bar * static_cast<double>(i.log_bytes) / total : 0;
  const std::uint64_t y = 36 + grid_h;
  std::snprintf(buf, sizeof buf,
                "<rect x=\"10\" y=\"%llu\" width=\"%.1f\" height=\"16\" fill=\"#285aaa\"/>\n"
                "<rect x=\"%.1f\" y=\"%llu\" width=\"%.1f\" height=\"16\" fill=\"#e6e6e6\"/>\n"
                "<rect x=\"%.1f\" y=\"%llu\" width=\"%.1f\" height=\"16\" fill=\"#d08a2a\"/>\n",
                static_cast<unsigned long long>(y), w_alloc, 10 + w_alloc, static_cast<unsigned long long>(y), w_free,
                10 + w_alloc + w_free, static_cast<unsigned long long>(y), w_log);
  add(buf);
  std::snprintf(buf, sizeof buf,
                "<text x=\"10\" y=\"%llu\">allocated %s (dark)   free %s in %zu blocks (light)   log %s (orange, %s)</text>\n"
                "<text x=\"10\" y=\"%llu\">fragmentation %.1f%%: the largest free block is %s</text>\n</svg>\n",
                static_cast<unsigned long long>(y + 34), human(st.allocated_bytes).c_str(), human(st.free_bytes).c_str(),
                st.free_blocks, human(i.log_bytes).c_str(), log_state_name(i.log),
                static_cast<unsigned long long>(y + 52),
                st.free_bytes ? 100.0 * (1.0 - static_cast<double>(st.largest_free_block) / static_cast<double>(st.free_bytes)) : 0.0,
                human(st.largest_free_block).c_str());
  add(buf);
  std::ofstream o(out, std::ios::binary | std::ios::trunc);
  o << svg;
  o.close();
  if (!o) throw std::system_error(errno, std::generic_category(), "cannot write " + out.string());
  std::printf("wrote %s: %llu cells of %s, %zu free extents\n", out.string().c_str(), static_cast<unsigned long long>(cells),
              human(cell).c_str(), extents.size());
  return exit_ok;
}

int run(const std::vector<std::string>& args) {
  if (args.empty()) throw usage_error{"no command"};
  const std::string& cmd = args[0];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::fputs(usage_text, stdout);
    return exit_ok;
  }
  if (cmd == "--version") {
    std::printf("tmf %d.%d.%d (format version %u)\n", TMF_VERSION_MAJOR, TMF_VERSION_MINOR, TMF_VERSION_PATCH,
                tmf::detail::format_version);
    return exit_ok;
  }
  bool json = false;
  std::string out;
  std::vector<std::string> pos;
  for (std::size_t k = 1; k < args.size(); ++k) {
    const std::string& a = args[k];
    if (a == "--json") {
      json = true;
    } else if (a == "--out" || a == "-o") {
      if (k + 1 == args.size()) throw usage_error{a + " needs a file name"};
      out = args[++k];
    } else if (a.rfind("--out=", 0) == 0) {
      out = a.substr(6);
    } else if (a.size() > 1 && a[0] == '-') {
      throw usage_error{"unknown option " + a};
    } else {
      pos.push_back(a);
    }
  }
  auto want = [&](std::size_t n) {
    if (pos.size() != n)
      throw usage_error{cmd + " takes " + std::to_string(n) + " file name" + (n == 1 ? "" : "s") + ", got " +
                        std::to_string(pos.size())};
  };
  auto no_json = [&] {
    if (json) throw usage_error{"--json is for info and stats"};
  };
  if (cmd != "map" && !out.empty()) throw usage_error{"--out is for map"};
  if (cmd == "info") return want(1), cmd_info(pos[0], json);
  if (cmd == "stats") return want(1), cmd_stats(pos[0], json);
  if (cmd == "check") return want(1), no_json(), cmd_check(pos[0]);
  if (cmd == "copy") return want(2), no_json(), cmd_copy(pos[0], pos[1]);
  if (cmd == "compact") return want(1), no_json(), cmd_compact(pos[0]);
  if (cmd == "map") {
    want(1);
    no_json();
    if (out.empty()) throw usage_error{"map needs --out FILE.svg"};
    return cmd_map(pos[0], out);
  }
  throw usage_error{"unknown command '" + cmd + "'"};
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  const std::string cmd = args.empty() ? "" : args[0];
  try {
    return run(args);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "tmf%s%s: %s\n%s", cmd.empty() ? "" : " ", cmd.c_str(), e.what.c_str(), usage_text);
    return exit_usage;
  } catch (const tmf::error& e) {
    std::fprintf(stderr, "tmf %s: %s\n", cmd.c_str(), strip_prefix(e.what()).c_str());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "tmf %s: out of memory\n", cmd.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tmf %s: %s\n", cmd.c_str(), strip_prefix(e.what()).c_str());
  }
  return exit_problem;
}
