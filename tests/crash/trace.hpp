// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Power-cut simulation for powerloss_test.cpp, and the crash tests' I/O hook.
///
/// Recording: `observe_io` has a function called before every file operation of the process
/// (tmf's os::io_hook; kill_test.cpp kills itself there). A `recorder` uses it to note, in
/// order, every write (offset and a copy of the bytes), fdatasync, allocate and truncate of a
/// storage's data file and log (told apart by inode) into a `trace`, with the trace's
/// position at each commit (`commit_mark`).
///
/// Replay: a cut point k keeps the first k operations of the trace. Per file, everything up
/// to that file's last fdatasync before k is durable (applied to the baseline); each later
/// operation is, as a `fate` decides, kept, dropped, or (a write) torn: only some of its
/// 512-byte sectors (absolute file offsets) reach the disk. An unsynced allocate/truncate may
/// or may not have happened, and so may an unsynced hole punch (a hole reads as zeros). Later writes land over earlier ones in trace order, so every
/// sector ends up as one of the versions it went through. `image_builder` writes the files
/// so rebuilt; `random_fate` draws random combinations (a random subset of sectors, a prefix
/// or a suffix).
#ifndef TMF_TESTS_CRASH_TRACE_HPP
#define TMF_TESTS_CRASH_TRACE_HPP

#include <tmf/tmf.hpp>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "test_support.hpp"
#include "workload.hpp"

namespace tmf_test::crash {

using tmf::detail::os::io_op;

// -- the I/O hook ---------------------------------------------------------------------------

/// A file operation, reported before it is made.
struct io_event {
  io_op op;
  int fd;
  std::uint64_t offset;  ///< write/allocate: offset; truncate: the new size
  std::uint64_t length;
  const void* data;  ///< write: the bytes
  bool failed = false;  ///< sync: it failed (reported by a fault-injecting hook; see trace_op::failed)
};

using io_observer = void (*)(const io_event&);

inline io_observer g_io_observer = nullptr;

/// The crash tests' only function with os::io_hook's signature (a change of that signature is
/// fixed here): reports each operation to g_io_observer and never makes one fail.
inline std::error_code forward_io(io_op op, const tmf::detail::os::file& file, std::uint64_t offset,
                                  std::uint64_t length, const void* data) {
  if (op == io_op::read) return {};  // reads change nothing on disk
  if (io_observer f = g_io_observer) f(io_event{op, file.native(), offset, length, data});
  return {};
}

/// Has `f` called before every write, sync, allocate and truncate of this process (nullptr:
/// no more). Not thread-safe; set it while no storage is in use by another thread.
inline void observe_io(io_observer f) {
  g_io_observer = f;
  tmf::detail::os::io_hook = f != nullptr ? &forward_io : nullptr;
}

// -- the trace ------------------------------------------------------------------------------

enum file_id : int { data_file = 0, log_file = 1 };
inline const char* const file_names[2] = {"data", "log"};
inline const char* op_name(io_op op) {
  switch (op) {
    case io_op::write: return "write";
    case io_op::sync: return "sync";
    case io_op::allocate: return "allocate";
    case io_op::truncate: return "truncate";
    case io_op::punch: return "punch";
    case io_op::read: return "read";
  }
  return "?";
}

struct trace_op {
  int file;
  io_op op;
  std::uint64_t offset;  ///< write/allocate: offset; truncate: the new size
  std::uint64_t length;
  std::size_t bytes;  ///< write: offset of the copy in trace::bytes
  /// sync: it failed. The kernel may then have dropped the file's unsynced writes: they never
  /// become durable, not even by a later sync (Linux marks the pages clean).
  bool failed = false;
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
  std::uint64_t lock_file = 0;       // operations on the lock file (the reader table: no durable state)

  /// Snapshots both files as they are now (closed cleanly: everything synced).
  void take_baseline(const std::filesystem::path& data, const std::filesystem::path& log) {
    auto b0 = tmf_test::read_bytes(data);
    auto b1 = tmf_test::read_bytes(log);
    baseline[0].assign(b0.begin(), b0.end());
    baseline[1].assign(b1.begin(), b1.end());
  }

  /// Notes commit `seq`, whose commit() was called when the trace had `start` operations and
  /// has just returned.
  void mark_commit(std::uint64_t seq, std::size_t start) {
    commit_mark cm{seq, start, ops.size(), ops.size()};
    for (std::size_t i = cm.start; i < cm.end; ++i)
      if (ops[i].file == log_file && ops[i].op == io_op::sync) {
        cm.sync = i;
        break;
      }
    commits.push_back(cm);
  }
};

/// Bounds on the seq that recovery must find at cut point k: at least the last commit that
/// returned or whose log fdatasync is before k (durable means durable), at most the last one
/// that had started.
struct seq_bounds {
  std::uint64_t lower = 0, upper = 0;
};
inline seq_bounds bounds_at(const trace& t, std::size_t k) {
  seq_bounds b;
  for (const commit_mark& c : t.commits) {
    if (c.end <= k || c.sync < k) b.lower = c.seq;
    if (c.start < k) b.upper = c.seq;
  }
  return b;
}

/// For each cut point k = 0..N, how many of the first k operations are not yet synced.
inline std::vector<std::size_t> unsynced_counts(const trace& t) {
  std::vector<std::size_t> out(t.ops.size() + 1, 0);
  std::size_t since[2] = {0, 0};
  for (std::size_t k = 0; k < t.ops.size(); ++k) {
    const trace_op& op = t.ops[k];
    if (op.op == io_op::sync)
      since[op.file] = 0;
    else
      ++since[op.file];
    out[k + 1] = since[0] + since[1];
  }
  return out;
}

/// "cut k/N (after <file> <op> @offset+length)", for messages.
inline std::string describe_cut(const trace& t, std::size_t k) {
  std::ostringstream o;
  o << "cut " << k << "/" << t.ops.size();
  if (k > 0) {
    const trace_op& op = t.ops[k - 1];
    o << " (after " << file_names[op.file] << " " << op_name(op.op);
    if (op.op != io_op::sync) o << " @" << op.offset << "+" << op.length;
    o << ")";
  }
  return o.str();
}

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
    observe_io(&on_io);
  }
  ~recorder() {
    observe_io(nullptr);
    s_current = nullptr;
  }
  recorder(const recorder&) = delete;
  recorder& operator=(const recorder&) = delete;

 private:
  static void on_io(const io_event& e) {
    recorder* r = s_current;
    struct stat st;
    if (r == nullptr || ::fstat(e.fd, &st) != 0) return;
    int f = -1;
    for (int i = 0; i < 2; ++i)
      if (st.st_dev == r->m_dev[i] && st.st_ino == r->m_ino[i]) f = i;
    if (f < 0) {
      ++(is_lock_file(e.fd) ? r->m_trace.lock_file : r->m_trace.ignored);
      return;
    }
    trace_op t{f, e.op, e.offset, e.length, r->m_trace.bytes.size(), e.failed};
    if (e.op == io_op::write) {
      const auto* p = static_cast<const unsigned char*>(e.data);
      r->m_trace.bytes.insert(r->m_trace.bytes.end(), p, p + e.length);
    }
    r->m_trace.ops.push_back(t);
  }
  /// Whether `fd` is open on a storage's lock file (`<path>-lock`).
  static bool is_lock_file(int fd) {
    char link[64], target[4096];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    const ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n < 5) return false;
    return std::string_view(target, static_cast<std::size_t>(n)).ends_with("-lock");
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

inline constexpr std::uint64_t sector = 512;

/// The durable content of each file at a cut point, advanced through the trace in order.
class image_builder {
 public:
  /// `failed_sync_writes`: a failed sync made the file's pending writes durable after all
  /// (the error came after them); otherwise the kernel dropped them, never to be written.
  explicit image_builder(const trace& t, bool failed_sync_writes = false)
      : m_t(t), m_failed_sync_writes(failed_sync_writes) {
    for (int f = 0; f < 2; ++f) m_durable[f] = t.baseline[f];
  }

  void advance_to(std::size_t k) {
    while (m_pos < k) {
      const trace_op& op = m_t.ops[m_pos];
      if (op.op == io_op::sync && op.failed && !m_failed_sync_writes) {
        m_pending[op.file].clear();  // dropped by the kernel: never durable
      } else if (op.op == io_op::sync) {
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
        } else if (op.op == io_op::punch) {
          if (fa.happened(i) && op.offset < size) {  // a hole reads as zeros
            const std::vector<unsigned char> zeros(static_cast<std::size_t>(std::min(op.length, size - op.offset)));
            pwrite_exact(fd, zeros.data(), zeros.size(), op.offset);
          }
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
      case io_op::punch:  // the file keeps its size; the range reads as zeros
        if (op.offset < d.size())
          std::memset(d.data() + op.offset, 0, static_cast<std::size_t>(std::min<std::uint64_t>(op.length, d.size() - op.offset)));
        break;
      case io_op::sync:
      case io_op::read: break;
    }
  }

  const trace& m_t;
  bool m_failed_sync_writes;
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

/// Bytes [b, e) of a file (shorter if the file is).
inline std::vector<unsigned char> read_range(const std::filesystem::path& p, std::uint64_t b, std::uint64_t e) {
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

}  // namespace tmf_test::crash

#endif  // TMF_TESTS_CRASH_TRACE_HPP
