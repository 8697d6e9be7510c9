// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Shared by the storage-level fuzz targets (fuzz_header, fuzz_log) and make_seeds: the Root
/// type, the deterministic template files they start from, file helpers and the oracle for
/// the errors an open may legitimately report.
///
/// The template: a storage created at a fixed address with a small max_size, then four
/// commits (the Root's creation and three transactions that allocate, write and free). Its
/// data file is copied twice (after the first commit and after the last) and its log while
/// the storage is still open, so that the log still holds the records of every commit. The
/// random file id is then replaced by a constant everywhere (data header, log header,
/// records, the header page images inside records) and every checksum resealed, so that the
/// template is byte-for-byte the same in every process and the seed corpora stay valid.
#ifndef TMF_FUZZ_FUZZ_COMMON_HPP
#define TMF_FUZZ_FUZZ_COMMON_HPP

#include <tmf/tmf.hpp>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

namespace tmf_fuzz {

namespace td = tmf::detail;

/// The Root of every fuzzed storage: plain words only, so that reading it never follows a
/// pointer (a forged but checksum-valid log may write anything into the arena).
struct fuzz_root {
  std::uint64_t generation = 0;   ///< number of the template commit that wrote it last
  std::uint64_t blocks[4] = {};   ///< addresses of blocks allocated by the template commits
  std::uint64_t sizes[4] = {};    ///< their sizes
  std::uint64_t seal = 0;         ///< seal_of(*this): a consistent root has a matching seal
};

inline std::uint64_t seal_of(const fuzz_root& r) noexcept { return td::checksum(&r, offsetof(fuzz_root, seal), 77); }

/// Where the template (and so every fuzzed file) is mapped: in tmf's default zone, above
/// the 0x600000000000-0x640000000000 range ASan's allocator reserves on x86-64.
inline constexpr std::uintptr_t template_address = 0x6f0000000000;
/// The template's max_size: recovery never replays a page past it, so no fuzzed log can
/// grow a data file beyond 1 MiB.
inline constexpr std::size_t template_max_size = std::size_t{1} << 20;
/// The constant file id that replaces the random one.
inline constexpr std::uint64_t fixed_file_id = 0x7a7a75662d666d74ULL;  // "tmf-fuzz"

inline tmf::options fuzz_options(tmf::open_mode mode) {
  tmf::options o;
  o.mode = mode;
  o.address = reinterpret_cast<void*>(template_address);
  o.max_size = template_max_size;
  o.sync = tmf::durability::no_sync;  // no fsync per iteration; durability is not what is fuzzed
  return o;
}

// -- files ------------------------------------------------------------------------------------

/// Reads a whole file into `v`, reusing its capacity (no fresh megabyte per iteration).
inline void read_file_into(const std::filesystem::path& p, std::vector<unsigned char>& v) {
  // Plain stdio in bulk (an istreambuf_iterator costs a coverage callback per byte).
  v.clear();
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (f == nullptr) return;
  unsigned char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
  std::fclose(f);
}

inline std::vector<unsigned char> read_file(const std::filesystem::path& p) {
  std::vector<unsigned char> v;
  read_file_into(p, v);
  return v;
}

/// Whether the file at `p` holds exactly `expected`.
inline bool file_equals(const std::filesystem::path& p, const std::vector<unsigned char>& expected) {
  static std::vector<unsigned char>* buf = new std::vector<unsigned char>;
  read_file_into(p, *buf);
  return *buf == expected;
}

inline void write_file(const std::filesystem::path& p, const unsigned char* data, std::size_t n) {
  // Plain stdio: a crash report here must not come from the library under test.
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (f == nullptr) {
    std::perror(p.c_str());
    std::abort();
  }
  if (n != 0 && std::fwrite(data, 1, n, f) != n) {
    std::perror(p.c_str());
    std::abort();
  }
  std::fclose(f);
}

inline void write_file(const std::filesystem::path& p, const std::vector<unsigned char>& v) {
  write_file(p, v.data(), v.size());
}

inline void remove_files(const std::filesystem::path& data) {
  std::error_code ec;
  std::filesystem::remove(data, ec);
  std::filesystem::remove(data.string() + "-log", ec);
}

/// A path unique to this process: /tmp/tmf-fuzz-<pid>-<tag>.tmf (or under $TMF_FUZZ_DIR).
inline std::filesystem::path process_path(const char* tag) {
  std::filesystem::path dir = "/tmp";
  if (const char* env = std::getenv("TMF_FUZZ_DIR"); env != nullptr && *env != '\0') dir = env;
  return dir / ("tmf-fuzz-" + std::to_string(::getpid()) + "-" + tag + ".tmf");
}

/// Files this process created, removed at exit (libFuzzer leaves through exit()).
inline std::vector<std::filesystem::path>& files_to_remove() {
  static auto* v = new std::vector<std::filesystem::path>;  // never destroyed: used by the atexit handler
  return *v;
}

inline void remove_at_exit(const std::filesystem::path& p) {
  static const bool registered = [] {
    std::atexit([] {
      for (const auto& f : files_to_remove()) remove_files(f);
    });
    return true;
  }();
  (void)registered;
  files_to_remove().push_back(p);
}

/// Caps the size of any file this process writes (fallocate or write past it: EFBIG, not
/// SIGXFSZ), so that no forged header or log can fill the disk.
inline void limit_file_size(std::size_t bytes) {
  std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit rl;
  rl.rlim_cur = bytes;
  rl.rlim_max = bytes;
  if (::getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max < bytes) bytes = rl.rlim_max;
  rl.rlim_cur = bytes;
  ::setrlimit(RLIMIT_FSIZE, &rl);
}

/// $TMF_FUZZ_VERBOSE set: the targets print each input's outcome (to check what seeds reach).
inline bool verbose() {
  static const bool v = std::getenv("TMF_FUZZ_VERBOSE") != nullptr;
  return v;
}

[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "tmf fuzz: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// -- resealing --------------------------------------------------------------------------------

/// Recomputes the checksum of a data-file header held in `page` (at least sizeof(file_header)).
inline void reseal_header(unsigned char* page) {
  td::file_header h;
  std::memcpy(&h, page, sizeof h);
  td::seal_header(h);
  std::memcpy(page, &h, sizeof h);
}

/// Recomputes every checksum of a log image in place: the log header, and for each record
/// found from log_start on (record magic, an extent count and data size that fit the image)
/// its extent checksums, entries checksum, header checksum and the trailer's copy of it.
/// With `file_id`, also stamps that id into the log header, the records and the file
/// headers their page-0 extents carry (whose own checksum is resealed), and a generation derived from it. Returns the offset after the last record seen.
inline std::size_t reseal_log(std::vector<unsigned char>& log, const std::uint64_t* file_id = nullptr) {
  if (log.size() < sizeof(td::log_header)) return log.size();
  td::log_header lh;
  std::memcpy(&lh, log.data(), sizeof lh);
  if (file_id) {
    lh.file_id = *file_id;
    lh.generation = td::next_generation(0, *file_id, lh.base_txn);  // deterministic, like the id
  }
  lh.checksum = td::log_header_checksum(lh);
  std::memcpy(log.data(), &lh, sizeof lh);
  std::size_t off = td::log_start;
  while (off + sizeof(td::record_header) <= log.size()) {
    td::record_header rh;
    std::memcpy(&rh, log.data() + off, sizeof rh);
    if (std::memcmp(rh.magic, td::record_magic, sizeof rh.magic) != 0) break;
    const std::size_t room = log.size() - off - sizeof rh;
    if (rh.extent_count > room / sizeof(td::record_extent) || rh.data_bytes > room) break;
    const std::size_t n = static_cast<std::size_t>(rh.extent_count);
    const std::size_t bytes = static_cast<std::size_t>(rh.data_bytes);
    if (td::record_size(n, bytes) > log.size() - off) break;
    unsigned char* entries = log.data() + off + sizeof rh;
    unsigned char* data = entries + n * sizeof(td::record_extent);
    std::size_t at = 0;  // where the next extent's bytes are, from `data`
    for (std::size_t i = 0; i < n; ++i) {
      td::record_extent e;
      std::memcpy(&e, entries + i * sizeof e, sizeof e);
      if (e.length > bytes - at) break;  // a fuzzed list: leave the rest as it is
      unsigned char* p = data + at;
      if (file_id && e.page == 0 && e.offset == 0 && e.length >= sizeof(td::file_header)) {
        td::file_header h;
        std::memcpy(&h, p, sizeof h);
        h.file_id = *file_id;
        td::seal_header(h);
        std::memcpy(p, &h, sizeof h);
      }
      e.checksum = td::extent_checksum(p, e);
      std::memcpy(entries + i * sizeof e, &e, sizeof e);
      at += e.length;
    }
    if (file_id) {
      rh.file_id = *file_id;
      rh.generation = lh.generation;
    }
    rh.entries_checksum = td::checksum(entries, n * sizeof(td::record_extent));
    rh.checksum = td::record_header_checksum(rh);
    std::memcpy(log.data() + off, &rh, sizeof rh);
    td::record_trailer tr;
    unsigned char* trailer = data + bytes;
    std::memcpy(&tr, trailer, sizeof tr);
    tr.header_checksum = rh.checksum;
    std::memcpy(trailer, &tr, sizeof tr);
    off += td::record_size(n, bytes);
  }
  return off;
}

// -- the template -----------------------------------------------------------------------------

struct template_files {
  std::vector<unsigned char> data_first;  ///< the data file after the first commit (txn 1)
  std::vector<unsigned char> data_last;   ///< the data file after the last commit
  std::vector<unsigned char> log;         ///< the log with the records of every commit
  std::uint64_t last_txn = 0;
};

/// Builds the template at `path` (removed afterwards). Aborts if anything fails.
inline template_files make_template(const std::filesystem::path& path) {
  template_files t;
  remove_files(path);
  try {
    // Durable commits log every page: the first data file plus any prefix of the log is then
    // a committed state (a no_sync commit writes its fresh pages into the data file instead).
    tmf::options o = fuzz_options(tmf::open_mode::create_only);
    o.sync = tmf::durability::full;
    tmf::storage<fuzz_root> s(path, o);
    t.data_first = read_file(path);
    const std::size_t sizes[3] = {200, 5000, 100};
    for (std::size_t i = 0; i < 3; ++i) {
      auto w = s.write();
      auto a = w.get_allocator<unsigned char>();
      fuzz_root& r = *w;
      if (i == 2) {  // free the first block: the last record carries a freed block's node
        a.deallocate(reinterpret_cast<unsigned char*>(static_cast<std::uintptr_t>(r.blocks[0])),
                     static_cast<std::size_t>(r.sizes[0]));
        r.blocks[0] = r.sizes[0] = 0;
      }
      unsigned char* p = a.allocate(sizes[i]);
      std::memset(p, 0x41 + static_cast<int>(i), sizes[i]);
      r.blocks[i + 1] = reinterpret_cast<std::uintptr_t>(p);
      r.sizes[i + 1] = sizes[i];
      if (i == 0) {
        unsigned char* q = a.allocate(64);
        std::memset(q, 0x5a, 64);
        r.blocks[0] = reinterpret_cast<std::uintptr_t>(q);
        r.sizes[0] = 64;
      }
      r.generation = i + 2;
      r.seal = seal_of(r);
      w.commit();
    }
    s.check();
    t.data_last = read_file(path);
    t.log = read_file(path.string() + "-log");
    t.last_txn = 4;
  } catch (const std::exception& e) {
    fail(std::string("cannot build the template: ") + e.what());
  }
  remove_files(path);

  // Deterministic bytes: the constant file id everywhere, checksums resealed, the log cut
  // after its last record (it is preallocated in 4 MiB steps).
  for (auto* d : {&t.data_first, &t.data_last}) {
    if (d->size() < td::page_size) fail("template data file too short");
    td::file_header h;
    std::memcpy(&h, d->data(), sizeof h);
    h.file_id = fixed_file_id;
    td::seal_header(h);
    std::memcpy(d->data(), &h, sizeof h);
  }
  const std::size_t end = reseal_log(t.log, &fixed_file_id);
  t.log.resize(end);
  // The apply marker and the commit-pending word hold nothing random; leave them.
  return t;
}

// -- leak checks ------------------------------------------------------------------------------

/// Called at the start of each iteration: the previous one destroyed its storage, so no
/// registry slot may still be owned and the template's address range must be free again.
inline void expect_nothing_left_open() {
  // libFuzzer installs its SIGXFSZ handler (-handle_xfsz) after LLVMFuzzerInitialize: ignore
  // the signal again, so that the file size limit shows as EFBIG to the library.
  static const bool xfsz_ignored = (std::signal(SIGXFSZ, SIG_IGN), true);
  (void)xfsz_ignored;
  const td::storage_slot* slots = td::registry();
  for (std::size_t i = 0; i < td::max_open_storages; ++i)
    if (slots[i].owner.load() != nullptr) fail("a storage registry slot is still owned after its storage was destroyed");
  void* out = nullptr;
  if (auto ec = td::os::reserve(reinterpret_cast<void*>(template_address), template_max_size, true, out))
    fail("the template's address range is still mapped after its storage was destroyed: " + ec.message());
  td::os::release(out, template_max_size);
}

// -- the oracle -------------------------------------------------------------------------------

/// Whether `e` is a refusal an open of a damaged file may report.
inline bool is_expected_open_error(const std::system_error& e) {
  const std::error_code c = e.code();
  return c == tmf::errc::not_a_storage || c == tmf::errc::incompatible_format || c == tmf::errc::corrupted ||
         c == tmf::errc::root_mismatch || c == tmf::errc::address_unavailable;
}

// Misaligned Root pointers (once accepted by check() and read(); now refused as corrupted at
// open). Set to 0 to skip such inputs.
#ifndef FUZZ_MISALIGNED_ROOT
#define FUZZ_MISALIGNED_ROOT 1
#endif

/// Reads the Root through a read transaction, touching only its own words; returns its
/// generation.
inline std::uint64_t read_root(tmf::storage<fuzz_root>& s, bool require_seal) {
  if (!FUZZ_MISALIGNED_ROOT) {
    const auto* h = static_cast<const td::file_header*>(s.address());
    if (h->root % alignof(fuzz_root) != 0) return 0;
  }
  auto r = s.read();
  const fuzz_root& root = *r;
  std::uint64_t sum = root.generation;
  for (int i = 0; i < 4; ++i) sum += root.blocks[i] + root.sizes[i];
  if (require_seal && root.generation != 0 && root.seal != seal_of(root))
    fail("the Root read after a successful open is inconsistent (seal mismatch, generation " +
         std::to_string(root.generation) + ")");
  static volatile std::uint64_t sink;
  sink = sum;
  (void)sink;
  return root.generation;
}

}  // namespace tmf_fuzz

#endif  // TMF_FUZZ_FUZZ_COMMON_HPP
