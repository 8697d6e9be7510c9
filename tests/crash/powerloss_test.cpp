// SPDX-License-Identifier: Apache-2.0 OR MIT
// Power-loss simulation (issue 3, item 1).
//
// Recording: a storage is created and closed cleanly, and both files are snapshotted (the
// baseline: everything synced). The storage is reopened with durability::full and tmf's I/O
// hook (os::io_hook) records, in order, every write (offset + a copy of the bytes), fdatasync,
// allocate and truncate of the data file and of the log (files told apart by inode). Random
// transactions run on a Root whose state is a function of its `seq` (workload.hpp: transaction
// n applies ops drawn from a PRNG seeded by (seed, n): the model replays them on std containers);
// rolled-back junk transactions are mixed in. For every commit the harness notes where in the
// trace it started, where its log fdatasync is and where it returned. The storage is closed
// at the end (its checkpoint is recorded too).
//
// Replay: a cut point k keeps the first k operations of the trace. Per file, everything up to
// that file's last fdatasync before k is durable (applied to the baseline); each later
// operation is, in random combinations, kept, dropped, or (a write) torn: only some of its
// 512-byte sectors (absolute file offsets) reach the disk -- a random subset, a prefix or a
// suffix. An unsynced allocate/truncate may or may not have happened. Later writes land over
// earlier ones in trace order, so every sector ends up as one of the versions it went through.
// The two reconstructed files are written to a scratch path, and a child process (forked by
// one of two small worker processes, themselves forked before the recording; nothing there has
// the storage open, so the recorded address is free) opens them (recovery), runs check(),
// reads seq and requires:
//   - the whole content equals model(seq): exactly one committed state;
//   - seq >= the last commit whose commit() returned before k, and >= the last commit whose
//     log fdatasync is before k (durable means durable);
//   - seq <= the last commit that had started (written anything) before k;
// then (every other image) commits transaction seq + 1 on the recovered storage, closes it,
// reopens it and checks model(seq + 1): recovery must leave a storage that keeps working.
//
// Cut points: every sync boundary (just before and just after every fdatasync), the ends, and
// random points between them; several combinations per cut point that has unsynced operations
// (combination 0: all kept, 1: all dropped, then random mixes). Three scenarios: a checkpoint
// every ~64 KiB of log, no checkpoint but at close (a long log), and a checkpoint at nearly
// every commit with the log truncated (truncate + re-allocate churn).
//
// Not modelled: directory entries (the two files' names are assumed durable) and a second power
// cut during recovery. A failure names the cut point and the combination, and the first images
// that failed are kept as <test dir>/powerloss-failure-<scenario>-<n>.tmf (+ -log); the printed
// seed reproduces the whole run.
//
// Tests: PowerLoss.RandomCutsRecoverACommittedState (prints cut points, combinations and the
// time; default >= 10,000 combinations), PowerLoss.TornLastLogRecordAtEverySector (the last
// record, cut at every sector boundary as a prefix, a suffix and with one sector missing: the
// exact expected seq is known).
// Environment: TMF_POWERLOSS_COMBINATIONS (default 10500: total over the three scenarios, shared
// 40/20/40; at least every sync boundary is verified whatever the number; e.g.
// 200000 for a long manual run), TMF_POWERLOSS_TXNS (transactions per scenario, default 90),
// TMF_POWERLOSS_SEED (fixes the seed; the seed in use is printed), TMF_POWERLOSS_SCENARIO (run only
// the named one), TMF_POWERLOSS_DIR (where the images are written; default /dev/shm if usable,
// since recovery fdatasyncs, else the test dir).

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_support.hpp"
#include "workload.hpp"

namespace {

using namespace tmf_test::crash;  // NOLINT(google-build-using-namespace)
using tmf::detail::os::io_op;

/// Several pages per transaction, blobs up to ~100 KiB (the file grows past its first MiB),
/// frees and reuse; every 16th transaction a known multi-page record (TornLastLogRecord...).
constexpr workload powerloss_workload{
    .max_ops = 6,
    .weight = {.list_put = 2, .list_append = 1, .list_erase = 1, .list_poke = 1,
               .blob_put = 2, .blob_erase = 1, .blob_rewrite = 2},
    .big_blob_every = 16, .big_blob_key = 1000, .big_blob_size = 24u << 10,
    .list_keys = 48, .list_len = 40, .long_list_odds = 8, .long_list_extra = 1500, .list_append_max = 30,
    .blob_keys = 64, .blob_min = 1024, .blob_range = 20u << 10, .long_blob_odds = 6, .long_blob_extra = 80u << 10,
    .blob_cap = std::uint64_t{1280} << 10,
};

// -- the trace ------------------------------------------------------------------------------

enum file_id : int { data_file = 0, log_file = 1 };
const char* const file_names[2] = {"data", "log"};
const char* op_name(io_op op) {
  switch (op) {
    case io_op::write: return "write";
    case io_op::sync: return "sync";
    case io_op::allocate: return "allocate";
    case io_op::truncate: return "truncate";
  }
  return "?";
}

struct trace_op {
  int file;
  io_op op;
  std::uint64_t offset;  ///< write/allocate: offset; truncate: the new size
  std::uint64_t length;
  std::size_t bytes;  ///< write: offset of the copy in trace::bytes
};

struct commit_mark {
  std::uint64_t seq;
  std::size_t start;  ///< trace size when commit() was called
  std::size_t sync;   ///< index of its log fdatasync
  std::size_t end;    ///< trace size when commit() returned
};

struct trace {
  std::vector<trace_op> ops;
  std::vector<unsigned char> bytes;
  std::vector<unsigned char> baseline[2];
  std::vector<commit_mark> commits;  // seq 1..N, in order
  std::uint64_t ignored = 0;         // operations on other files (there should be none)
};

/// Records the operations on the two files of one storage through os::io_hook.
class recorder {
 public:
  recorder(trace& t, const std::filesystem::path& data, const std::filesystem::path& log) : m_trace(t) {
    struct stat st;
    if (::stat(data.c_str(), &st) != 0) throw std::system_error(errno, std::generic_category(), "stat data");
    m_dev[0] = st.st_dev;
    m_ino[0] = st.st_ino;
    if (::stat(log.c_str(), &st) != 0) throw std::system_error(errno, std::generic_category(), "stat log");
    m_dev[1] = st.st_dev;
    m_ino[1] = st.st_ino;
    s_current = this;
    tmf::detail::os::io_hook = &hook;
  }
  ~recorder() {
    tmf::detail::os::io_hook = nullptr;
    s_current = nullptr;
  }
  recorder(const recorder&) = delete;
  recorder& operator=(const recorder&) = delete;

 private:
  static std::error_code hook(io_op op, int fd, std::uint64_t off, std::uint64_t len, const void* data) {
    recorder* r = s_current;
    struct stat st;
    if (r == nullptr || ::fstat(fd, &st) != 0) return {};
    int f = -1;
    for (int i = 0; i < 2; ++i)
      if (st.st_dev == r->m_dev[i] && st.st_ino == r->m_ino[i]) f = i;
    if (f < 0) {
      ++r->m_trace.ignored;
      return {};
    }
    trace_op t{f, op, off, len, r->m_trace.bytes.size()};
    if (op == io_op::write) {
      const auto* p = static_cast<const unsigned char*>(data);
      r->m_trace.bytes.insert(r->m_trace.bytes.end(), p, p + len);
    }
    r->m_trace.ops.push_back(t);
    return {};
  }
  static inline recorder* s_current = nullptr;
  trace& m_trace;
  dev_t m_dev[2];
  ino_t m_ino[2];
};

// -- reconstruction of the files after a power cut -------------------------------------------

/// Decides the fate of the unsynced operations of one image: per write piece (the part of a
/// write inside one 512-byte sector), kept or not; per allocate/truncate, happened or not.
struct fate {
  std::function<bool(std::size_t op, std::uint64_t begin, std::uint64_t end, std::size_t piece, std::size_t pieces)>
      keep_piece;
  std::function<bool(std::size_t op)> happened;
};

constexpr std::uint64_t sector = 512;

/// The durable content of each file at a cut point, advanced through the trace in order.
class image_builder {
 public:
  explicit image_builder(const trace& t) : m_t(t) {
    for (int f = 0; f < 2; ++f) m_durable[f] = t.baseline[f];
  }

  void advance_to(std::size_t k) {
    while (m_pos < k) {
      const trace_op& op = m_t.ops[m_pos];
      if (op.op == io_op::sync) {
        for (std::size_t i : m_pending[op.file]) apply_whole(m_durable[op.file], m_t.ops[i]);
        if (!m_pending[op.file].empty()) m_extents_valid[op.file] = false;
        m_pending[op.file].clear();
      } else {
        m_pending[op.file].push_back(m_pos);
      }
      ++m_pos;
    }
  }

  std::size_t pending() const noexcept { return m_pending[0].size() + m_pending[1].size(); }
  const std::vector<std::size_t>& pending(int f) const noexcept { return m_pending[f]; }

  /// Writes file `f` as the power cut leaves it: the durable content, then each unsynced
  /// operation (in trace order) as far as `fate` says.
  void write(int f, const std::filesystem::path& path, const fate& fa) const {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path.string());
    try {
      const std::vector<unsigned char>& d = m_durable[f];
      std::uint64_t size = d.size();
      check_io(::ftruncate(fd, static_cast<off_t>(size)), "ftruncate");
      for (const auto& [b, e] : extents(f)) pwrite_exact(fd, d.data() + b, e - b, b);  // the rest: holes (zeros)
      for (std::size_t i : m_pending[f]) {
        const trace_op& op = m_t.ops[i];
        if (op.op == io_op::write) {
          const std::uint64_t end = op.offset + op.length;
          const std::size_t pieces =
              static_cast<std::size_t>((end + sector - 1) / sector - op.offset / sector) + (op.length == 0 ? 1 : 0);
          std::uint64_t b = op.offset, run = op.offset;  // [run, b): kept pieces not yet written
          auto flush = [&] {
            if (b > run) {
              pwrite_exact(fd, m_t.bytes.data() + op.bytes + (run - op.offset), b - run, run);
              size = std::max(size, b);
            }
          };
          for (std::size_t p = 0; p < pieces; ++p) {
            const std::uint64_t e = std::min(end, (b / sector + 1) * sector);
            if (!fa.keep_piece(i, b, e, p, pieces)) {
              flush();
              run = e;
            }
            b = e;
          }
          flush();
        } else if (fa.happened(i)) {
          const std::uint64_t target = op.op == io_op::truncate ? op.offset : std::max(size, op.offset + op.length);
          check_io(::ftruncate(fd, static_cast<off_t>(target)), "ftruncate");
          size = target;
        }
      }
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }

 private:
  /// The runs of non-zero 4 KiB blocks of a durable image (cached until the next sync).
  const std::vector<std::pair<std::size_t, std::size_t>>& extents(int f) const {
    if (m_extents_valid[f]) return m_extents[f];
    static const unsigned char zero_block[4096] = {};
    const std::vector<unsigned char>& d = m_durable[f];
    auto& x = m_extents[f];
    x.clear();
    for (std::size_t off = 0; off < d.size(); off += 4096) {
      const std::size_t n = std::min<std::size_t>(4096, d.size() - off);
      if (std::memcmp(d.data() + off, zero_block, n) == 0) continue;
      if (!x.empty() && x.back().second == off)
        x.back().second = off + n;
      else
        x.emplace_back(off, off + n);
    }
    m_extents_valid[f] = true;
    return x;
  }
  static void check_io(int rc, const char* what) {
    if (rc != 0) throw std::system_error(errno, std::generic_category(), what);
  }
  static void pwrite_exact(int fd, const unsigned char* p, std::size_t n, std::uint64_t off) {
    while (n > 0) {
      ssize_t r = ::pwrite(fd, p, n, static_cast<off_t>(off));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw std::system_error(errno, std::generic_category(), "pwrite image");
      p += r;
      n -= static_cast<std::size_t>(r);
      off += static_cast<std::uint64_t>(r);
    }
  }
  void apply_whole(std::vector<unsigned char>& d, const trace_op& op) const {
    switch (op.op) {
      case io_op::write:
        if (d.size() < op.offset + op.length) d.resize(op.offset + op.length);
        std::memcpy(d.data() + op.offset, m_t.bytes.data() + op.bytes, op.length);
        break;
      case io_op::allocate:
        if (d.size() < op.offset + op.length) d.resize(op.offset + op.length);
        break;
      case io_op::truncate: d.resize(op.offset); break;
      case io_op::sync: break;
    }
  }

  const trace& m_t;
  std::vector<unsigned char> m_durable[2];
  std::vector<std::size_t> m_pending[2];
  mutable std::vector<std::pair<std::size_t, std::size_t>> m_extents[2];
  mutable bool m_extents_valid[2] = {false, false};
  std::size_t m_pos = 0;
};

/// A random fate: combination 0 keeps everything (what a process crash leaves), 1 drops
/// everything unsynced, the others mix kept, dropped and torn writes with random odds.
class random_fate {
 public:
  random_fate(std::uint64_t seed, std::size_t combination) : m_g(seed, combination), m_combination(combination) {
    m_p_keep = 0.1 + 0.8 * static_cast<double>(m_g.below(1000)) / 1000.0;
    m_p_torn = 0.6 * static_cast<double>(m_g.below(1000)) / 1000.0;
  }
  fate get() {
    fate f;
    f.keep_piece = [this](std::size_t, std::uint64_t, std::uint64_t, std::size_t piece, std::size_t pieces) {
      if (m_combination == 0) return true;
      if (m_combination == 1) return false;
      if (piece == 0) {
        m_mode = m_g.chance(m_p_keep) ? 0 : (pieces > 1 && m_g.chance(m_p_torn)) ? 2 : 1;
        if (m_mode == 0) ++kept;
        if (m_mode == 1) ++dropped;
        if (m_mode == 2) {
          ++torn;
          m_style = static_cast<int>(m_g.below(3));
          m_cut = 1 + m_g.below(pieces - 1);  // prefix/suffix split, strictly inside
        }
      }
      switch (m_mode) {
        case 0: return true;
        case 1: return false;
        default:
          if (m_style == 0) return piece < m_cut;    // the first sectors reached the disk
          if (m_style == 1) return piece >= m_cut;   // the last ones did
          return m_g.below(2) == 0;                  // any of them
      }
    };
    f.happened = [this](std::size_t) {
      if (m_combination <= 1) return m_combination == 0;
      return m_g.below(2) == 0;
    };
    return f;
  }
  std::string describe() const {
    std::ostringstream o;
    o << "combination " << m_combination;
    if (m_combination == 0)
      o << " (everything unsynced kept)";
    else if (m_combination == 1)
      o << " (everything unsynced dropped)";
    else
      o << " (writes kept " << kept << ", dropped " << dropped << ", torn " << torn << ")";
    return o.str();
  }
  std::size_t kept = 0, dropped = 0, torn = 0;

 private:
  prng m_g;
  std::size_t m_combination;
  double m_p_keep, m_p_torn;
  int m_mode = 0, m_style = 0;
  std::uint64_t m_cut = 0;
};

// -- a scenario: record, then replay cut points ----------------------------------------------

struct scenario {
  std::string name;
  std::size_t checkpoint_bytes;
  std::uint64_t txns;
  std::uint64_t seed;
};

struct recorded {
  scenario sc;
  trace t;
  std::vector<model_root> models;  // models[s] = state after transaction s; s = 0..N+1
  std::filesystem::path original;
};

tmf::options storage_options(const scenario& sc) {
  tmf::options o;
  o.sync = tmf::durability::full;
  o.checkpoint_bytes = sc.checkpoint_bytes;
  return o;
}

/// The model's state after every transaction 0..N+1.
void make_models(recorded& r) {
  r.models.assign(1, model_root{});
  for (std::uint64_t n = 1; n <= r.sc.txns + 1; ++n) {
    model_root m = r.models.back();
    apply_transaction(m, powerloss_workload, r.sc.seed, n);
    r.models.push_back(std::move(m));
  }
}

/// Creates the storage (the baseline), then runs and records the transactions.
void record(recorded& r, const std::filesystem::path& path) {
  const scenario& sc = r.sc;
  r.original = path;
  tmf_test::remove_storage(path);
  {
    // Created with the default checkpoint_bytes: its close then ends with the log's fdatasync
    // (a small checkpoint_bytes would also truncate the log after it, unsynced).
    tmf::options o;
    o.sync = tmf::durability::full;
    tmf::storage<disk_root> s(path, o);
  }
  {
    auto b0 = tmf_test::read_bytes(path);
    auto b1 = tmf_test::read_bytes(tmf_test::log_path(path));
    r.t.baseline[0].assign(b0.begin(), b0.end());
    r.t.baseline[1].assign(b1.begin(), b1.end());
  }
  prng ctl(sc.seed, 99);
  {
    recorder rec(r.t, path, tmf_test::log_path(path));
    tmf::storage<disk_root> s(path, storage_options(sc));
    std::unique_ptr<tmf::writer<disk_root>> w;  // (std::optional: a GCC 12 maybe-uninitialized false positive)
    for (std::uint64_t n = 1; n <= sc.txns; ++n) {
      if (!w || ctl.below(3) == 0) {
        w.reset();
        w = std::make_unique<tmf::writer<disk_root>>(s.write());
      }
      if (ctl.below(6) == 0) {  // junk, undone by rollback() (it may grow the file)
        apply_junk(**w, powerloss_workload, sc.seed, n, ctl);
        w->rollback();
      }
      apply_transaction(**w, powerloss_workload, sc.seed, n);
      commit_mark cm{n, r.t.ops.size(), 0, 0};
      w->commit();
      cm.end = r.t.ops.size();
      cm.sync = cm.end;
      for (std::size_t i = cm.start; i < cm.end; ++i)
        if (r.t.ops[i].file == log_file && r.t.ops[i].op == io_op::sync) {
          cm.sync = i;
          break;
        }
      r.t.commits.push_back(cm);
    }
    w.reset();
  }  // the close (a checkpoint) is recorded too
}

/// Where images are written: TMF_POWERLOSS_DIR, else /dev/shm (recovery fdatasyncs: cheap on
/// tmpfs), else the test directory.
std::filesystem::path image_dir() {
  if (const char* d = std::getenv("TMF_POWERLOSS_DIR"); d != nullptr && *d != '\0') {
    std::filesystem::create_directories(d);
    return d;
  }
  std::error_code ec;
  if (std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  return tmf_test::test_dir();
}

std::filesystem::path image_path(const std::string& tag) {
  std::string name = tmf_test::test_path(tag).filename().string();
  return image_dir() / (std::to_string(::getpid()) + "." + name);
}

/// What a verification expects.
struct expectation {
  std::uint64_t lower, upper;
  bool write_after;
  std::string what;  // for messages
};

/// In a child: recover the image, check it, compare with the model. Exit code 0 if right.
int verify_image(const recorded& r, const std::filesystem::path& path, const expectation& x, bool verbose) {
  ::alarm(60);
  const tmf::options opt = [&] {
    tmf::options o = storage_options(r.sc);
    o.mode = tmf::open_mode::open_only;
    return o;
  }();
  auto say = [&](const std::string& msg) {
    if (verbose) std::fprintf(stderr, "powerloss: %s: %s\n", x.what.c_str(), msg.c_str());
  };
  std::uint64_t seq = 0;
  try {
    tmf::storage<disk_root> s(path, opt);
    try {
      s.check();
    } catch (const std::exception& e) {
      say(std::string("check() after recovery failed: ") + e.what());
      return 12;
    }
    {
      auto rd = s.read();
      seq = rd->seq;
      if (seq < x.lower || seq > x.upper) {
        say("recovered seq " + std::to_string(seq) + ", expected " + std::to_string(x.lower) + ".." +
            std::to_string(x.upper));
        return 10;
      }
      if (std::string d = compare(*rd, r.models[seq]); !d.empty()) {
        say("recovered seq " + std::to_string(seq) + " but the content is not that state: " + d);
        return 11;
      }
    }
    if (!x.write_after) return 0;
    auto w = s.write();
    apply_transaction(*w, powerloss_workload, r.sc.seed, seq + 1);
    w.commit();
  } catch (const std::exception& e) {
    say(std::string("open/recovery failed: ") + e.what());
    return 13;
  }
  try {
    tmf::storage<disk_root> s(path, opt);
    s.check();
    auto rd = s.read();
    if (std::string d = compare(*rd, r.models[seq + 1]); !d.empty()) {
      say("after recovering seq " + std::to_string(seq) + ", committing " + std::to_string(seq + 1) +
          " and reopening: " + d);
      return 14;
    }
  } catch (const std::exception& e) {
    say("after recovering seq " + std::to_string(seq) + " and committing " + std::to_string(seq + 1) +
        ", reopen/check failed: " + e.what());
    return 15;
  }
  return 0;
}

/// Bounds on the recovered seq at cut point k.
expectation bounds_at(const recorded& r, std::size_t k) {
  expectation x{0, 0, false, {}};
  for (const commit_mark& c : r.t.commits) {
    if (c.end <= k || c.sync < k) x.lower = c.seq;
    if (c.start < k) x.upper = c.seq;
  }
  return x;
}

struct job {
  std::size_t cut;
  std::size_t combination;
};

/// Runs verifications on two worker processes, forked while this process is still small
/// (fork copies page tables: forking the recorder, with its trace, per image would cost
/// more than the verification). Each worker forks one short-lived child per image, so that a
/// verification that crashes or corrupts memory cannot affect the next one. The parent builds
/// the next image while the workers verify.
class verifier {
 public:
  explicit verifier(const recorded& r) : m_r(r) {
    for (int i = 0; i < 2; ++i) {
      worker& w = m_workers[i];
      w.path = image_path(r.sc.name + ".slot" + std::to_string(i));
      int to[2], from[2];
      if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0)
        throw std::system_error(errno, std::generic_category(), "pipe2");
      std::fflush(nullptr);
      const pid_t pid = ::fork();
      if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
      if (pid == 0) {
        ::close(to[1]);
        ::close(from[0]);
        for (int k = 0; k < i; ++k) {  // the first worker's pipes are not ours
          ::close(m_workers[k].to_fd);
          ::close(m_workers[k].from_fd);
        }
        serve(to[0], from[1], w.path);
      }
      ::close(to[0]);
      ::close(from[1]);
      w.pid = pid;
      w.to_fd = to[1];
      w.from_fd = from[0];
    }
  }
  ~verifier() {
    try {
      wait_all();
    } catch (...) {
    }
    for (auto& w : m_workers) {
      ::close(w.to_fd);  // EOF: the worker exits
      ::close(w.from_fd);
      int st;
      while (::waitpid(w.pid, &st, 0) < 0 && errno == EINTR) {
      }
      tmf_test::remove_storage(w.path);
    }
  }
  verifier(const verifier&) = delete;
  verifier& operator=(const verifier&) = delete;

  /// Builds an image with `build` into a free worker's path and has the worker verify it.
  void submit(const job& j, const std::function<expectation(const std::filesystem::path&)>& build) {
    worker& w = free_worker();
    tmf_test::remove_storage(w.path);
    w.x = build(w.path);
    w.j = j;
    request rq{w.x.lower, w.x.upper, w.x.write_after ? 1u : 0u, m_failures.size() < 5 ? 1u : 0u,
               static_cast<std::uint32_t>(w.x.what.size())};
    std::string msg(reinterpret_cast<const char*>(&rq), sizeof rq);
    msg += w.x.what;
    write_all(w.to_fd, msg.data(), msg.size());
    w.busy = true;
    ++m_verified;
  }

  void wait_all() {
    while (m_workers[0].busy || m_workers[1].busy) collect();
  }

  struct failure {
    job j;
    int code;
    std::string what;
  };
  const std::vector<failure>& failures() const noexcept { return m_failures; }
  std::uint64_t verified() const noexcept { return m_verified; }

 private:
  struct request {
    std::uint64_t lower, upper;
    std::uint32_t write_after, verbose, what_size;
  };
  struct worker {
    std::filesystem::path path;
    pid_t pid = -1;
    int to_fd = -1, from_fd = -1;
    bool busy = false;
    job j{};
    expectation x;
  };

  static void write_all(int fd, const void* p, std::size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t r = ::write(fd, c, n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw std::system_error(errno, std::generic_category(), "write to a verification worker");
      c += r;
      n -= static_cast<std::size_t>(r);
    }
  }
  static bool read_all(int fd, void* p, std::size_t n) {
    char* c = static_cast<char*>(p);
    while (n > 0) {
      ssize_t r = ::read(fd, c, n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      c += r;
      n -= static_cast<std::size_t>(r);
    }
    return true;
  }

  /// The worker: one child per request, its exit code sent back. Never returns.
  [[noreturn]] void serve(int in, int out, const std::filesystem::path& path) {
    for (;;) {
      request rq;
      if (!read_all(in, &rq, sizeof rq)) ::_exit(0);
      expectation x{rq.lower, rq.upper, rq.write_after != 0, std::string(rq.what_size, '\0')};
      if (!read_all(in, x.what.data(), x.what.size())) ::_exit(0);
      std::fflush(nullptr);
      const pid_t pid = ::fork();
      int code = 120;
      if (pid == 0) ::_exit(verify_image(m_r, path, x, rq.verbose != 0));
      if (pid > 0) {
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      const std::int32_t c = code;
      try {
        write_all(out, &c, sizeof c);
      } catch (...) {
        ::_exit(0);
      }
    }
  }

  worker& free_worker() {
    for (;;) {
      for (auto& w : m_workers)
        if (!w.busy) return w;
      collect();
    }
  }

  /// Waits for a busy worker's answer.
  void collect() {
    pollfd fds[2];
    int n = 0;
    worker* ws[2];
    for (auto& w : m_workers)
      if (w.busy) {
        fds[n] = {w.from_fd, POLLIN, 0};
        ws[n++] = &w;
      }
    if (n == 0) return;
    int r;
    do r = ::poll(fds, static_cast<nfds_t>(n), -1);
    while (r < 0 && errno == EINTR);
    if (r < 0) throw std::system_error(errno, std::generic_category(), "poll");
    for (int i = 0; i < n; ++i)
      if (fds[i].revents != 0) {
        worker& w = *ws[i];
        std::int32_t code = 0;
        if (!read_all(w.from_fd, &code, sizeof code)) throw std::runtime_error("a verification worker died");
        w.busy = false;
        if (code != 0) m_failures.push_back({w.j, code, w.x.what});
      }
  }

  const recorded& m_r;
  worker m_workers[2];
  std::vector<failure> m_failures;
  std::uint64_t m_verified = 0;
};

std::string describe_cut(const recorded& r, std::size_t k) {
  std::ostringstream o;
  o << r.sc.name << ": cut " << k << "/" << r.t.ops.size();
  if (k > 0) {
    const trace_op& op = r.t.ops[k - 1];
    o << " (after " << file_names[op.file] << " " << op_name(op.op);
    if (op.op != io_op::sync) o << " @" << op.offset << "+" << op.length;
    o << ")";
  }
  return o.str();
}

struct scenario_result {
  std::uint64_t ops = 0, commits = 0, syncs = 0, cuts = 0, combinations = 0, failures = 0;
};

/// Records the scenario and verifies `target` combinations (at least every sync boundary).
scenario_result run_scenario(const scenario& sc, std::uint64_t target) {
  scenario_result res;
  recorded r;
  r.sc = sc;
  tmf_test::scoped_path original(std::string_view(sc.name));
  make_models(r);
  verifier v(r);  // before the recording: the workers stay small
  record(r, original.path());
  EXPECT_EQ(r.t.ignored, 0u) << "the I/O hook saw operations on files other than the storage's two";
  const std::size_t T = r.t.ops.size();
  res.ops = T;
  res.commits = r.t.commits.size();

  // Unsynced operations at each cut point (without building images).
  std::vector<std::size_t> pending_at(T + 1, 0);
  {
    std::size_t since[2] = {0, 0};
    for (std::size_t k = 0; k <= T; ++k) {
      pending_at[k] = since[0] + since[1];
      if (k == T) break;
      const trace_op& op = r.t.ops[k];
      if (op.op == io_op::sync) {
        since[op.file] = 0;
        ++res.syncs;
      } else {
        ++since[op.file];
      }
    }
  }
  constexpr std::size_t combos_per_cut = 8;
  auto combos_at = [&](std::size_t k) { return pending_at[k] == 0 ? std::size_t{1} : combos_per_cut; };
  std::set<std::size_t> cuts{0, T};
  for (std::size_t i = 0; i < T; ++i)
    if (r.t.ops[i].op == io_op::sync) {
      cuts.insert(i);
      cuts.insert(i + 1);
    }
  std::uint64_t planned = 0;
  for (std::size_t k : cuts) planned += combos_at(k);
  prng cg(sc.seed, 7);
  while (planned < target && cuts.size() < T + 1) {
    const std::size_t k = static_cast<std::size_t>(cg.below(T + 1));
    if (cuts.insert(k).second) planned += combos_at(k);
  }

  image_builder b(r.t);
  std::uint64_t index = 0;
  for (std::size_t k : cuts) {
    b.advance_to(k);
    const expectation base = bounds_at(r, k);
    ++res.cuts;
    for (std::size_t c = 0; c < combos_at(k); ++c) {
      random_fate rf(sc.seed ^ mix64(k), c);
      const bool write_after = (index++ % 2) == 0;
      v.submit({k, c}, [&](const std::filesystem::path& p) {
        expectation x = base;
        x.write_after = write_after;
        fate fa = rf.get();
        b.write(data_file, p, fa);
        b.write(log_file, tmf_test::log_path(p), fa);
        x.what = describe_cut(r, k) + ", " + rf.describe() + ", unsynced ops: data " +
                 std::to_string(b.pending(data_file).size()) + ", log " + std::to_string(b.pending(log_file).size());
        return x;
      });
      ++res.combinations;
    }
  }
  v.wait_all();
  res.failures = v.failures().size();

  // Keep the images of the first failures (rebuilt from scratch: the child changed its copy).
  std::size_t kept = 0;
  for (const auto& f : v.failures()) {
    std::ostringstream msg;
    msg << "power cut " << f.what << " -> child exit code " << f.code
        << " (10: seq out of range, 11: content is not model(seq), 12: check() failed, 13: open failed, "
           "14/15: commit after recovery wrong, 128+n: killed by signal n)";
    if (kept < 3) {
      const auto keep = tmf_test::test_dir() / ("powerloss-failure-" + sc.name + "-" + std::to_string(kept) + ".tmf");
      image_builder fb(r.t);
      fb.advance_to(f.j.cut);
      random_fate rf(sc.seed ^ mix64(f.j.cut), f.j.combination);
      fate fa = rf.get();
      fb.write(data_file, keep, fa);
      fb.write(log_file, tmf_test::log_path(keep), fa);
      msg << "; image kept in " << keep << " (+ -log)";
      ++kept;
    }
    ADD_FAILURE() << msg.str();
    if (kept >= 3 && &f - v.failures().data() > 20) {
      ADD_FAILURE() << "... " << v.failures().size() << " failures in all";
      break;
    }
  }
  return res;
}

// -- tests ----------------------------------------------------------------------------------

/// Bytes [b, e) of a file (shorter if the file is).
std::vector<unsigned char> read_range(const std::filesystem::path& p, std::uint64_t b, std::uint64_t e) {
  std::vector<unsigned char> out(e - b);
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + p.string());
  std::size_t got = 0;
  while (got < out.size()) {
    ssize_t r = ::pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(b + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<std::size_t>(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

// Sanitizer builds (the asan stage of scripts/test.sh) run ~10-20x slower, with forks that
// cost far more: they run a smaller share; the release stage runs the full default.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr std::uint64_t default_combinations = 1500;
constexpr std::uint64_t torn_sector_stride = 8;
#else
constexpr std::uint64_t default_combinations = 10500;
constexpr std::uint64_t torn_sector_stride = 1;
#endif

std::uint64_t pick_seed() { return seed_from_env("TMF_POWERLOSS_SEED"); }

TEST(PowerLoss, RandomCutsRecoverACommittedState) {
  const std::uint64_t seed = pick_seed();
  const std::uint64_t total = env_u64("TMF_POWERLOSS_COMBINATIONS", default_combinations);
  const std::uint64_t txns = env_u64("TMF_POWERLOSS_TXNS", 90);
  std::cout << "powerloss: seed " << seed << " (TMF_POWERLOSS_SEED), " << txns << " transactions per scenario, images in "
            << image_dir() << std::endl;
  // The long log costs ~4x more per image (every image replays the whole log): a smaller share.
  struct weighted {
    scenario sc;
    std::uint64_t percent;
  };
  const weighted scenarios[] = {
      {{"checkpoint-64k", std::size_t{64} << 10, txns, seed}, 40},
      {{"long-log", std::size_t{64} << 20, txns, mix64(seed + 1)}, 20},
      {{"checkpoint-every-commit", std::size_t{16} << 10, txns, mix64(seed + 2)}, 40},
  };
  const auto t0 = std::chrono::steady_clock::now();
  scenario_result sum;
  const char* only = std::getenv("TMF_POWERLOSS_SCENARIO");
  for (const auto& [sc, percent] : scenarios) {
    if (only != nullptr && *only != '\0' && sc.name != only) continue;
    const auto t1 = std::chrono::steady_clock::now();
    scenario_result res = run_scenario(sc, (total * percent + 99) / 100);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    std::cout << "powerloss: " << sc.name << ": " << res.commits << " commits, " << res.ops << " file operations ("
              << res.syncs << " fdatasyncs); " << res.cuts << " cut points, " << res.combinations
              << " combinations verified, " << res.failures << " failures, " << secs << " s" << std::endl;
    sum.cuts += res.cuts;
    sum.combinations += res.combinations;
    sum.failures += res.failures;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "powerloss: total: " << sum.cuts << " cut points, " << sum.combinations << " combinations, "
            << sum.failures << " failures, " << secs << " s" << std::endl;
  RecordProperty("cut_points", std::to_string(sum.cuts));
  RecordProperty("combinations", std::to_string(sum.combinations));
  if (only == nullptr || *only == '\0') {
    EXPECT_GE(sum.combinations, total) << "fewer combinations than asked for";
  }
}

/// The last commit's record, cut at every sector boundary: only the sectors before it (a
/// prefix), only those after it (a suffix), or all but the sector there (a hole). Everything
/// else is kept. Recovery must give exactly the last commit if the record's bytes are all
/// there (a dropped sector may hold the same bytes as before), else the one before it.
TEST(PowerLoss, TornLastLogRecordAtEverySector) {
  recorded r;
  r.sc = {"torn-last-record", std::size_t{64} << 20, powerloss_workload.big_blob_every, pick_seed()};
  std::cout << "powerloss: seed " << r.sc.seed << std::endl;
  tmf_test::scoped_path original("original");
  make_models(r);
  verifier v(r);
  record(r, original.path());
  ASSERT_EQ(r.t.commits.size(), powerloss_workload.big_blob_every);
  const commit_mark& last = r.t.commits.back();
  ASSERT_LT(last.sync, last.end) << "the last commit did not fdatasync the log";
  // The record: the log writes of the last commit before its fdatasync.
  std::uint64_t lo = ~std::uint64_t{0}, hi = 0;
  std::set<std::size_t> record_ops;
  for (std::size_t i = last.start; i < last.sync; ++i) {
    const trace_op& op = r.t.ops[i];
    if (op.file != log_file || op.op != io_op::write || op.offset < tmf::detail::log_start) continue;
    record_ops.insert(i);
    lo = std::min(lo, op.offset);
    hi = std::max(hi, op.offset + op.length);
  }
  ASSERT_FALSE(record_ops.empty());
  ASSERT_GE(hi - lo, 6 * 4096u) << "the last record should span several pages";

  image_builder b(r.t);
  b.advance_to(last.sync);  // everything of the last commit written, nothing synced by it
  const auto full_path = image_path("full");
  auto keep_all = fate{[](std::size_t, std::uint64_t, std::uint64_t, std::size_t, std::size_t) { return true; },
                       [](std::size_t) { return true; }};
  b.write(log_file, full_path, keep_all);
  const auto full_record = read_range(full_path, lo, hi);
  std::filesystem::remove(full_path);

  std::vector<std::uint64_t> boundaries{lo};
  for (std::uint64_t s = (lo / sector + 1) * sector; s < hi; s += sector * torn_sector_stride) boundaries.push_back(s);
  boundaries.push_back(hi);

  std::uint64_t images = 0, complete = 0;
  for (std::uint64_t at : boundaries)
    for (int style = 0; style < 3; ++style) {
      if (style == 2 && at == hi) continue;
      fate fa = keep_all;
      fa.keep_piece = [&, at, style](std::size_t op, std::uint64_t pb, std::uint64_t, std::size_t, std::size_t) {
        if (!record_ops.count(op)) return true;
        if (style == 0) return pb < at;                            // prefix
        if (style == 1) return pb >= at;                           // suffix
        return pb < at || pb >= (at / sector + 1) * sector;        // one sector missing
      };
      static const char* const style_names[] = {"prefix before", "suffix from", "hole at"};
      v.submit({static_cast<std::size_t>(at), static_cast<std::size_t>(style)}, [&](const std::filesystem::path& p) {
        expectation x{0, 0, images % 2 == 0, {}};
        b.write(data_file, p, fa);
        b.write(log_file, tmf_test::log_path(p), fa);
        const bool whole = read_range(tmf_test::log_path(p), lo, hi) == full_record;
        x.lower = x.upper = whole ? last.seq : last.seq - 1;
        complete += whole;
        x.what = "last record [" + std::to_string(lo) + ", " + std::to_string(hi) + ") kept " + style_names[style] +
                 " " + std::to_string(at) + (whole ? " (bytes complete)" : " (bytes incomplete)");
        return x;
      });
      ++images;
    }
  v.wait_all();
  std::cout << "powerloss: last record of " << (hi - lo) << " bytes: " << images << " torn images (" << complete
            << " with all its bytes), " << v.failures().size() << " failures" << std::endl;
  for (std::size_t i = 0; i < v.failures().size() && i < 20; ++i)
    ADD_FAILURE() << "power cut: " << v.failures()[i].what << " -> child exit code " << v.failures()[i].code
                  << " (10: wrong seq, 11: content is not model(seq), 12: check() failed, 13: open failed, "
                     "14/15: commit after recovery wrong, 128+n: killed by signal n)";
  if (v.failures().size() > 20) ADD_FAILURE() << "... " << v.failures().size() << " failures in all";
  EXPECT_GT(images, 3 * (hi - lo) / (sector * torn_sector_stride) - 3) << "too few torn images were tried";
}

}  // namespace
