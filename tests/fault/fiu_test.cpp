// SPDX-License-Identifier: Apache-2.0 OR MIT
// Fault-injection stage (label `fault`): tests/fault/fiu_workload.cpp runs under libfiu's
// `fiu-run -x`, whose POSIX preload makes the calls tmf makes on its files fail (pread,
// pwritev, fdatasync, fsync, ftruncate; pread and pwritev also come back short). After every
// round this process reads the workload's report and opens the storage without faults,
// checking the commit contract:
//  - every acknowledged commit is there (after each reopen of the workload and at the end);
//  - a rolled-back commit (commit() threw a system error) is never there;
//  - a commit whose outcome was unknown (errc::commit_unknown, or errc::needs_reopen from
//    commit()) is wholly there or wholly absent, the same for every later open;
//  - the whole content equals the model for that state, and check() passes.
//
// Tests:
//  - RandomFaults: TMF_FAULT_ROUNDS rounds (default 60) of 150 to 300 transactions, each
//    with its own seed, fault probability (0.002 to 0.02 per call), errno per call and
//    libfiu PRNG seed; two rounds run at a time.
//  - FixedSchedules: only the Nth call of one failure point fails (fdatasync, pwritev,
//    pread, fsync, ftruncate; EIO and ENOSPC) in the same 12-transaction run, N = 1, 2, ...
//    up to the number of such calls in the run (at most 200). fiu-run 1.1 has no counter of its own: the workload counts through
//    libfiu's fiu_enable_external; built without libfiu-dev, this test is skipped.
// Each prints a summary line starting with "fault stage". Both skip themselves when fiu-run
// is not installed (Debian: fiu-utils), when its preload does not load into the workload (a
// 32-bit build: the preload is 64-bit) and in sanitized builds (libfiu's preload crashes them).
// Environment: TMF_FAULT_ROUNDS, TMF_FAULT_SEED (the seed in use is printed; a round's fault
// sequence is reproducible from its seed), TMF_FAULT_PMIN and TMF_FAULT_PMAX (the range of
// the probabilities), TMF_FAULT_SECONDS (no round starts after this many seconds; default
// 110 unless TMF_FAULT_ROUNDS is set, so that CI's stage stays within ~3 minutes on a slow
// disk), TMF_FAULT_JOBS (rounds at a time,
// default 2), TMF_FIU_RUN (the fiu-run to use). The files of a round with a violation are kept, and its
// fiu-run command line is printed.

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault/fault_model.hpp"
#include "test_support.hpp"

#ifndef TMF_FIU_WORKLOAD
#error "TMF_FIU_WORKLOAD (the path of tmf_fiu_workload) is set by tests/CMakeLists.txt"
#endif

namespace {

using ull = unsigned long long;
namespace fs = std::filesystem;

// -- environment ---------------------------------------------------------------------------

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 0);
}

double env_double(const char* name, double fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  const double d = std::strtod(v, nullptr);
  return d > 0 && d < 1 ? d : fallback;
}

/// fiu-run: $TMF_FIU_RUN, else the first in $PATH; empty if none.
std::string find_fiu_run() {
  if (const char* v = std::getenv("TMF_FIU_RUN"); v != nullptr && *v != '\0') return ::access(v, X_OK) == 0 ? v : "";
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/fiu-run";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-=:,") ==
                        std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// -- running the workload ------------------------------------------------------------------

/// One run of the workload under fiu-run.
struct run_spec {
  std::string name;                  // for messages: "round 7", "fdatasync #3 EIO"
  fs::path dir;                      // its files: store.tmf, store.tmf-log, stderr.txt
  std::uint64_t salt = 0;            // content salt
  std::uint64_t transactions = 0;
  std::uint64_t fiu_seed = 0;        // FIU_PRNG_SEED
  std::vector<std::string> commands; // fiu-run -c commands
  std::vector<std::string> nth;      // POINT N ERRNO, or empty

  fs::path file() const { return dir / "store.tmf"; }
  std::vector<std::string> argv(const std::string& fiu_run) const {
    std::vector<std::string> a{fiu_run, "-x", "-f", ""};
    for (const auto& c : commands) {
      a.push_back("-c");
      a.push_back(c);
    }
    a.insert(a.end(), {TMF_FIU_WORKLOAD, file().string(), std::to_string(salt), std::to_string(transactions)});
    a.insert(a.end(), nth.begin(), nth.end());
    return a;
  }
  /// The command line to repeat this run by hand.
  std::string command_line(const std::string& fiu_run) const {
    std::string s = "FIU_PRNG_SEED=" + std::to_string(fiu_seed);
    for (const auto& a : argv(fiu_run)) s += " " + shell_quote(a);
    return s;
  }
};

struct run_output {
  int status = -1;  // exit code, or 128 + signal
  bool timed_out = false;
  std::vector<std::string> lines;
  std::string stderr_text;
  double seconds = 0;
};

constexpr int run_timeout_seconds = 120;

/// Runs the specs, `jobs` at a time; calls `done` (in this thread, one at a time, in the order
/// they finish) with each spec's index and output. No spec is started once `more` (if set)
/// returns false. Returns the number of specs started.
std::size_t run_all(const std::string& fiu_run, const std::vector<run_spec>& specs, std::size_t jobs,
                    const std::function<void(std::size_t, run_output&)>& done,
                    const std::function<bool()>& more = {}) {
  struct running {
    std::size_t index;
    pid_t pid;
    int fd;
    std::string buffer;
    run_output out;
    std::chrono::steady_clock::time_point start;
  };
  std::vector<running> live;
  std::size_t next = 0;
  auto start = [&](std::size_t i) {
    const run_spec& spec = specs[i];
    fs::remove_all(spec.dir);
    fs::create_directories(spec.dir);
    const std::vector<std::string> args = spec.argv(fiu_run);
    const std::string err_path = (spec.dir / "stderr.txt").string();
    const std::string seed = std::to_string(spec.fiu_seed);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
    if (pid == 0) {
      const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int in = ::open("/dev/null", O_RDONLY);
      if (err < 0 || in < 0 || ::dup2(p[1], 1) < 0 || ::dup2(err, 2) < 0 || ::dup2(in, 0) < 0) ::_exit(126);
      ::setenv("FIU_PRNG_SEED", seed.c_str(), 1);
      std::vector<char*> cargs;
      for (const auto& a : args) cargs.push_back(const_cast<char*>(a.c_str()));
      cargs.push_back(nullptr);
      ::execv(cargs[0], cargs.data());
      ::_exit(127);
    }
    ::close(p[1]);
    live.push_back({i, pid, p[0], {}, {}, std::chrono::steady_clock::now()});
  };
  auto finish = [&](std::size_t k) {
    running r = std::move(live[k]);
    live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    ::close(r.fd);
    if (!r.buffer.empty()) r.out.lines.push_back(r.buffer);
    r.out.status = tmf_test::wait_child(r.pid);
    r.out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.start).count();
    std::ifstream err(specs[r.index].dir / "stderr.txt");
    r.out.stderr_text.assign(std::istreambuf_iterator<char>(err), std::istreambuf_iterator<char>());
    done(r.index, r.out);
  };
  std::size_t end = specs.size();
  while (next < end || !live.empty()) {
    if (next < end && more && !more()) end = next;
    while (next < end && live.size() < jobs) start(next++);
    std::vector<pollfd> fds;
    for (const auto& r : live) fds.push_back({r.fd, POLLIN, 0});
    const int n = ::poll(fds.data(), fds.size(), 1000);
    if (n < 0 && errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll");
    for (std::size_t k = live.size(); k-- > 0;) {
      running& r = live[k];
      bool eof = false;
      if (n > 0 && (fds[k].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        char buf[65536];
        const ssize_t got = ::read(r.fd, buf, sizeof buf);
        if (got > 0) {
          r.buffer.append(buf, static_cast<std::size_t>(got));
          for (std::size_t nl; (nl = r.buffer.find('\n')) != std::string::npos;) {
            r.out.lines.push_back(r.buffer.substr(0, nl));
            r.buffer.erase(0, nl + 1);
          }
        } else if (got == 0 || errno != EINTR) {
          eof = true;
        }
      }
      if (!eof && std::chrono::steady_clock::now() - r.start > std::chrono::seconds(run_timeout_seconds)) {
        ::kill(r.pid, SIGKILL);
        r.out.timed_out = true;
        eof = true;
      }
      if (eof) finish(k);
    }
  }
  return next;
}

// -- judging a run ---------------------------------------------------------------------------

struct counts {
  std::uint64_t runs = 0, acks = 0, rolled_back = 0, unknown = 0, reopen = 0, open_failed = 0, begin_failed = 0,
                read_failed = 0, unverified = 0, giveups = 0, violations = 0, violated_runs = 0;
  std::map<std::string, std::uint64_t> injected;  // by call, from the workload's "faults" line
  std::uint64_t injected_total() const {
    std::uint64_t t = 0;
    for (const auto& [k, v] : injected) t += v;
    return t;
  }
  void add(const counts& o) {
    runs += o.runs;
    acks += o.acks;
    rolled_back += o.rolled_back;
    unknown += o.unknown;
    reopen += o.reopen;
    open_failed += o.open_failed;
    begin_failed += o.begin_failed;
    read_failed += o.read_failed;
    unverified += o.unverified;
    giveups += o.giveups;
    violations += o.violations;
    violated_runs += o.violated_runs;
    for (const auto& [k, v] : o.injected) injected[k] += v;
  }
};

/// The workload's report, replayed: what must be in the files.
class judge {
 public:
  explicit judge(const run_spec& spec) : m_spec(spec) {}

  counts c;
  std::vector<std::string> violations;
  bool preload = false, started = false, nth_hit = false, stopped_bad = false, finished = false;
  std::uint64_t nth_calls = 0;

  void violation(std::string what) {
    violations.push_back(std::move(what));
    ++c.violations;
  }

  std::uint64_t seq() const { return m_committed.size() - 1; }

  void event(const std::string& line) {
    struct remember {
      std::string& last;
      const std::string& line;
      ~remember() { last = line; }
    } keep{m_last_line, line};
    std::istringstream in(line);
    std::string kind;
    in >> kind;
    std::uint64_t s = 0, a = 0;
    auto rest = [&] {
      std::string r;
      std::getline(in, r);
      return r.empty() ? r : r.substr(1);
    };
    if (kind == "start") {
      started = true;
      preload = line.find("preload=1") != std::string::npos;
    } else if (kind == "ack") {
      in >> s >> a;
      ++c.acks;
      if (s != seq() + 1) violation("report out of order: ack " + std::to_string(s) + " at seq " + std::to_string(seq()));
      m_committed.resize(s);
      m_committed.push_back(a);
      m_last_ack = s;
      m_last_ack_attempt = a;
      m_pending.reset();
    } else if (kind == "rolledback") {
      in >> s >> a;
      ++c.rolled_back;
      m_rolled_back[a] = line;
      no_fault_check("commit() threw a system error", line);
    } else if (kind == "unknown") {
      in >> s >> a;
      ++c.unknown;
      m_pending = {s, a};
      m_pending_what = line;
    } else if (kind == "reopen") {
      std::string where;
      in >> s >> a >> where;
      ++c.reopen;
      if (where == "commit") {
        m_pending = {s, a};
        m_pending_what = line;
      }
    } else if (kind == "settled") {
      std::string verdict;
      in >> s >> a >> verdict;
      const std::string detail = rest();
      if (!m_opened) {
        m_opened = true;  // the first open of a new file: an empty state
        if (s != 0 || a != 0) violation("the new file opened at seq " + std::to_string(s));
      } else {
        check_state("reopen in the workload", s, a);
      }
      if (verdict == "bad") {
        violation("the reopen in the workload found an inconsistent state at seq " + std::to_string(s) + " attempt " +
                  std::to_string(a) + ": " + detail);
        stopped_bad = true;
      } else if (verdict == "unverified") {
        ++c.unverified;
      }
      if (s <= seq() + 1) {
        // The workload goes on from what it found (a violation was reported if it is wrong).
        m_committed.resize(s);
        m_committed.push_back(a);
        m_last_ack = std::min(m_last_ack, s);
      }
      m_pending.reset();
    } else if (kind == "open-failed") {
      ++c.open_failed;
      no_fault_check("an open failed", line);
    } else if (kind == "open-misreported") {
      violation("an open under injected I/O errors failed with a tmf error, not the system error: " + rest());
    } else if (kind == "stuck") {
      // 20 failures in a row are far beyond what the injected probabilities can cause.
      violation("commit() failed again and again on a writer that a rolled-back commit leaves usable: " + rest() +
                " (the last: \"" + m_last_line + "\")");
    } else if (kind == "begin-failed") {
      ++c.begin_failed;
      no_fault_check("write() threw a system error", line);
    } else if (kind == "read-failed") {
      ++c.read_failed;
      no_fault_check("read() threw a system error", line);
    } else if (kind == "read-mismatch") {
      violation("a read transaction did not see the last commit: " + rest());
    } else if (kind == "unexpected") {
      violation("the workload got an exception outside the contract: " + rest());
    } else if (kind == "giveup") {
      // 1000 failed opens in a row, or 300 reopens: a recovery that needs many calls can
      // fail that often at 2 % per call. Not a violation by itself: a failure without an
      // injected fault is one (no_fault_check).
      ++c.giveups;
      m_giveup = rest();
    } else if (kind == "done") {
      in >> s >> a;
      finished = true;
      if (!stopped_bad && (s != seq() || a != m_committed.back()))
        violation("the harness lost track: the workload ended at seq " + std::to_string(s) + " attempt " +
                  std::to_string(a) + ", its report replayed gives seq " + std::to_string(seq()) + " attempt " +
                  std::to_string(m_committed.back()));
    } else if (kind == "faults") {
      for (std::string kv; in >> kv;) {
        const auto eq = kv.find('=');
        if (eq != std::string::npos) c.injected[kv.substr(0, eq)] += std::strtoull(kv.c_str() + eq + 1, nullptr, 10);
      }
    } else if (kind == "nth") {
      for (std::string kv; in >> kv;) {
        if (kv.rfind("calls=", 0) == 0) nth_calls = std::strtoull(kv.c_str() + 6, nullptr, 10);
        if (kv == "hit=1") nth_hit = true;
      }
    } else if (kind != "closed") {
      violation("unknown report line: " + line);
    }
  }

  /// The workload ended with `out`; now the files, opened here without faults.
  void verify_files(const run_output& out) {
    for (const auto& [what, n] : m_no_fault)
      violation(std::to_string(n.first) + " times " + what +
                " although no call failed during it (an error left over, where the contract says the writer is "
                "usable or the storage must be reopened); the first: \"" + n.second + "\"");
    if (!m_spec.nth.empty()) {
      // One injected fault can fail one commit (rolled back or unknown), not more: after a
      // rolled-back commit the writer is usable.
      const std::uint64_t failed = c.rolled_back + c.unknown;
      if (failed > c.injected_total())
        violation(std::to_string(failed) + " commits failed (rolled back " + std::to_string(c.rolled_back) +
                  ", unknown " + std::to_string(c.unknown) + ") for " + std::to_string(c.injected_total()) +
                  " injected fault(s)");
    }
    if (out.timed_out) violation("the workload hung (killed after " + std::to_string(run_timeout_seconds) + " s)");
    else if (out.status >= 128) violation("the workload died of signal " + std::to_string(out.status - 128));
    else if (out.status != 0 && out.status != 2 && out.status != 3 && out.status != 6 && out.status != 7)
      violation("the workload exited with status " + std::to_string(out.status));
    if (!started) return;
    if (stopped_bad) return;  // reported; the files are kept for a look
    std::uint64_t s = 0, a = 0;
    std::string diff;
    try {
      tmf::storage<tmf_fault::disk_root> db(m_spec.file(), tmf_fault::stage_options(tmf::open_mode::open_only));
      {
        auto r = db.read();
        s = r->seq;
        a = r->attempt;
        if (!check_state("the final open (no faults)", s, a)) return;
        std::vector<std::uint64_t> committed(m_committed.begin(),
                                             m_committed.begin() + static_cast<std::ptrdiff_t>(std::min(s, seq() + 1)));
        committed.push_back(a);
        diff = tmf_fault::compare(*r, tmf_fault::model_for(m_spec.salt, committed));
      }
      if (!diff.empty())
        violation("the final state (seq " + std::to_string(s) + " attempt " + std::to_string(a) +
                  ") differs from the model: " + diff);
      db.check();
    } catch (const std::exception& e) {
      violation(std::string("the final open, read or check() without faults failed: ") + e.what());
    }
  }

 private:
  /// An error event whose call saw no injected fault (its f=0): collected per kind.
  void no_fault_check(const std::string& what, const std::string& line) {
    const auto at = line.find(" f=");
    if (at == std::string::npos || std::strtoull(line.c_str() + at + 3, nullptr, 10) != 0) return;
    auto& n = m_no_fault[what];
    if (n.first++ == 0) n.second = line;
  }

  /// The state (s, a) found by an open: legal after this report? False if not.
  bool check_state(const std::string& who, std::uint64_t s, std::uint64_t a) {
    const std::string at = who + " found seq " + std::to_string(s) + " attempt " + std::to_string(a);
    if (auto it = m_rolled_back.find(a); it != m_rolled_back.end()) {
      violation("rolled-back commit present: " + at + ", which the workload reported as \"" + it->second + "\"");
      return false;
    }
    if (s < m_last_ack) {
      violation("acknowledged commit lost: " + at + ", but seq " + std::to_string(m_last_ack) + " (attempt " +
                std::to_string(m_last_ack_attempt) + ") was acknowledged");
      return false;
    }
    if (s < seq()) {
      violation("settled commit lost: " + at + ", but an earlier reopen had found seq " + std::to_string(seq()));
      return false;
    }
    if (s == seq() && a == m_committed.back()) return true;
    if (m_pending && s == m_pending->first && a == m_pending->second) return true;
    if (s == seq())
      violation(at + ", but seq " + std::to_string(s) + " was made by attempt " + std::to_string(m_committed.back()));
    else
      violation(at + ", which no commit was reported to have made (at most seq " + std::to_string(seq()) +
                (m_pending ? " or the unknown " + m_pending_what : std::string()) + ")");
    return false;
  }

  const run_spec& m_spec;
  std::vector<std::uint64_t> m_committed{0};  // the workload's state: committed[s] made seq s
  std::uint64_t m_last_ack = 0, m_last_ack_attempt = 0;
  std::map<std::uint64_t, std::string> m_rolled_back;  // attempt -> its report line
  std::optional<std::pair<std::uint64_t, std::uint64_t>> m_pending;  // a commit of unknown outcome
  std::string m_pending_what;
  std::string m_last_line;
  std::map<std::string, std::pair<std::uint64_t, std::string>> m_no_fault;  // what -> count, first line

 public:
  std::string m_giveup;  // why the workload gave up, if it did

 private:
  bool m_opened = false;
};

std::string first_lines(const std::string& text, std::size_t max_chars) {
  if (text.size() <= max_chars) return text;
  return text.substr(0, max_chars) + "...";
}

/// Judges one finished run; prints its line and, for a violation, the details.
counts judge_run(const std::string& fiu_run, const run_spec& spec, const run_output& out, judge& j,
                 const std::string& params) {
  for (const auto& line : out.lines) j.event(line);
  j.verify_files(out);
  j.c.runs = 1;
  j.c.violated_runs = j.violations.empty() ? 0 : 1;
  std::ostringstream line;
  line << spec.name << " (" << params << "): " << j.c.acks << " acks, " << j.c.injected_total() << " injected, rolled back "
       << j.c.rolled_back << ", unknown " << j.c.unknown << ", reopen " << j.c.reopen << ", open failures "
       << j.c.open_failed << (j.c.giveups ? ", gave up (" + j.m_giveup + ")" : std::string()) << ", final seq "
       << j.seq() << ", "
       << out.seconds << " s: " << (j.violations.empty() ? "ok" : "VIOLATION");
  std::cout << line.str() << std::endl;
  if (!j.violations.empty()) {
    for (const auto& v : j.violations) std::cout << "  violation: " << v << "\n";
    std::cout << "  repeat: " << spec.command_line(fiu_run) << "\n"
              << "  files kept in " << spec.dir.string() << "\n";
    if (!out.stderr_text.empty()) std::cout << "  workload stderr: " << first_lines(out.stderr_text, 2000) << "\n";
    std::cout << "  report (last 12 lines):\n";
    for (std::size_t i = out.lines.size() > 12 ? out.lines.size() - 12 : 0; i < out.lines.size(); ++i)
      std::cout << "    " << out.lines[i] << "\n";
    std::cout << std::flush;
  } else {
    fs::remove_all(spec.dir);
  }
  return j.c;
}

// -- the stage ------------------------------------------------------------------------------

/// The failure points of the calls tmf makes on its files (libfiu 1.1 names), each with the
/// errnos libfiu may give it. fallocate has no point in libfiu 1.1: growth failures are not
/// injected. A round gives each point one errno (failinfo): left to libfiu, the errno would
/// come from random() seeded with the time, and a round would not be reproducible.
struct fault_point {
  const char* name;
  bool reduce;  // a short transfer, not an error
  std::vector<int> errnos;
};
const std::vector<fault_point> random_points = {
    {"posix/io/rw/pread", false, {EIO, EIO, EINTR, EBADFD, EFAULT, EINVAL, EOVERFLOW, ENXIO}},
    {"posix/io/rw/pread/reduce", true, {}},
    {"posix/io/rw/pwritev", false, {EIO, EIO, ENOSPC, EDQUOT, EFBIG, EINTR, EBADFD, EFAULT, EINVAL, EOVERFLOW, ENXIO}},
    {"posix/io/rw/pwritev/reduce", true, {}},
    {"posix/io/sync/fdatasync", false, {EIO, EIO, EROFS, EINVAL, EBADFD}},
    {"posix/io/sync/fsync", false, {EIO, EROFS, EINVAL, EBADFD}},
    {"posix/io/rw/ftruncate", false, {EIO, EINTR, EFBIG, EPERM, EROFS, EINVAL}},
};

struct stage_setup {
  std::string fiu_run;
  fs::path dir;
};

/// fiu-run and a first run that shows the preload in the workload; else the reason to skip.
std::string prepare(stage_setup& st, const char* sub) {
#if defined(TMF_FAULT_SANITIZED)
  return "a sanitized build: libfiu 1.1's POSIX preload crashes sanitized programs at startup (even an empty main "
         "built with -fsanitize=address); the fault stage runs in builds without sanitizers";
#endif
  st.fiu_run = find_fiu_run();
  if (st.fiu_run.empty())
    return "fiu-run is not installed (Debian: apt-get install fiu-utils libfiu-dev); the fault stage is skipped";
  st.dir = tmf_test::test_dir() / "fault" / sub;
  run_spec probe;
  probe.name = "probe";
  probe.dir = st.dir / "probe";
  probe.transactions = 1;
  bool preload = false;
  std::string why;
  run_all(st.fiu_run, {probe}, 1, [&](std::size_t, run_output& out) {
    for (const auto& l : out.lines) preload = preload || l == "start preload=1 nth=0";
    if (!preload) why = "status " + std::to_string(out.status) + ", stderr: " + first_lines(out.stderr_text, 500);
  });
  fs::remove_all(probe.dir);
  if (!preload)
    return "fiu's POSIX preload does not load into " TMF_FIU_WORKLOAD
           " under fiu-run -x (another word size? /usr/lib/fiu missing?): " + why;
  return {};
}

void print_summary(const char* what, const counts& t, std::uint64_t rounds, double seconds) {
  std::cout << "fault stage" << what << ": " << rounds << (what[0] ? " runs, " : " rounds, ") << t.acks
            << " commits acknowledged, " << t.injected_total() << " errors injected (rolled back " << t.rolled_back
            << ", unknown " << t.unknown << ", reopen " << t.reopen << "), " << t.violations << " violations\n";
  std::cout << "fault stage" << what << " details: injected";
  for (const auto& [k, v] : t.injected) std::cout << " " << k << "=" << v;
  std::cout << "; open failures " << t.open_failed << ", write() failures " << t.begin_failed << ", read() failures "
            << t.read_failed << ", states not checked under faults " << t.unverified << ", runs that gave up "
            << t.giveups << ", runs with violations " << t.violated_runs << "; " << seconds << " s" << std::endl;
}

TEST(fiu, RandomFaults) {
  stage_setup st;
  if (auto skip = prepare(st, "random"); !skip.empty()) GTEST_SKIP() << skip;
  const std::uint64_t rounds = env_number("TMF_FAULT_ROUNDS", 60);
  const std::uint64_t jobs = std::max<std::uint64_t>(1, env_number("TMF_FAULT_JOBS", 2));
  const double pmin = env_double("TMF_FAULT_PMIN", 0.002), pmax = std::max(pmin, env_double("TMF_FAULT_PMAX", 0.02));
  std::uint64_t seed = env_number("TMF_FAULT_SEED", 0);
  if (seed == 0) seed = (static_cast<std::uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
  std::cout << "fault stage: seed " << seed << ", " << rounds << " rounds, fault probability " << pmin << " to "
            << pmax << " per call (TMF_FAULT_SEED=" << seed << " TMF_FAULT_ROUNDS=" << rounds
            << " to repeat)" << std::endl;

  std::vector<run_spec> specs;
  std::vector<std::string> params;
  for (std::uint64_t i = 0; i < rounds; ++i) {
    tmf_fault::prng g(seed, i);
    run_spec s;
    s.name = "round " + std::to_string(i);
    s.dir = st.dir / ("round-" + std::to_string(i));
    s.salt = g.next();
    s.transactions = 150 + g.below(150);
    s.fiu_seed = g.below(1u << 30) + 1;
    // Log-uniform in [pmin, pmax); the short-transfer points at a third of it.
    const double p = pmin * std::pow(pmax / pmin, static_cast<double>(g.below(1000)) / 1000.0);
    char buf[32];
    for (const auto& point : random_points) {
      std::snprintf(buf, sizeof buf, "%.5f", point.reduce ? p / 3 : p);
      std::string c = std::string("enable_random name=") + point.name + ",probability=" + buf;
      if (!point.reduce) c += ",failinfo=" + std::to_string(point.errnos[g.below(point.errnos.size())]);
      s.commands.push_back(std::move(c));
    }
    std::snprintf(buf, sizeof buf, "%.4f", p);
    params.push_back("p=" + std::string(buf) + ", " + std::to_string(s.transactions) + " transactions, FIU_PRNG_SEED=" +
                     std::to_string(s.fiu_seed));
    specs.push_back(std::move(s));
  }
  std::cout << "round 0 runs: " << specs[0].command_line(st.fiu_run) << std::endl;

  counts total;
  const auto t0 = std::chrono::steady_clock::now();
  // A time budget for the default run (CI); an explicit TMF_FAULT_ROUNDS runs them all.
  const bool rounds_given = std::getenv("TMF_FAULT_ROUNDS") != nullptr && *std::getenv("TMF_FAULT_ROUNDS") != '\0';
  const auto budget = std::chrono::seconds(env_number("TMF_FAULT_SECONDS", rounds_given ? 1000000 : 110));
  const std::size_t started = run_all(
      st.fiu_run, specs, jobs,
      [&](std::size_t i, run_output& out) {
        judge j(specs[i]);
        total.add(judge_run(st.fiu_run, specs[i], out, j, params[i]));
      },
      [&] { return std::chrono::steady_clock::now() - t0 < budget; });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (started < specs.size())
    std::cout << "fault stage: the time budget (TMF_FAULT_SECONDS=" << budget.count() << ") ended the run after "
              << started << " of " << rounds << " rounds" << std::endl;
  print_summary("", total, started, seconds);
  EXPECT_EQ(total.violations, 0u) << "see the violations above";
  EXPECT_GT(total.injected_total(), 0u) << "no fault was injected: is fiu's preload active?";
}

TEST(fiu, FixedSchedules) {
  stage_setup st;
  if (auto skip = prepare(st, "fixed"); !skip.empty()) GTEST_SKIP() << skip;
  // Does the workload have libfiu's control API?
  {
    run_spec probe;
    probe.name = "probe";
    probe.dir = st.dir / "probe-nth";
    probe.transactions = 1;
    probe.nth = {"posix/io/sync/fdatasync", "1000000", "5"};
    int status = -1;
    run_all(st.fiu_run, {probe}, 1, [&](std::size_t, run_output& out) { status = out.status; });
    fs::remove_all(probe.dir);
    if (status == 4)
      GTEST_SKIP() << "tmf_fiu_workload was built without libfiu's control API (Debian: libfiu-dev), which the "
                      "fixed schedules need (fiu-run 1.1 cannot fail only the Nth call); skipped";
  }
  struct schedule {
    const char* point;
    int err;
    const char* err_name;
    std::uint64_t max_n;  // the calls tried: 1..max_n, or fewer if a run makes fewer
  };
  const std::vector<schedule> schedules = {
      {"posix/io/sync/fdatasync", EIO, "EIO", 80}, {"posix/io/rw/pwritev", EIO, "EIO", 200},
      {"posix/io/rw/pwritev", ENOSPC, "ENOSPC", 200}, {"posix/io/rw/pread", EIO, "EIO", 200},
      {"posix/io/sync/fsync", EIO, "EIO", 10},      {"posix/io/rw/ftruncate", EIO, "EIO", 10}};
  // The same run for every N of a schedule (same salt): the Nth call is the same operation.
  constexpr std::uint64_t transactions = 12;  // two or three checkpoints (64 KiB of log)
  constexpr std::uint64_t salt = 0x5eed;
  const std::uint64_t jobs = std::max<std::uint64_t>(1, env_number("TMF_FAULT_JOBS", 2));

  counts total;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& sc : schedules) {
    // N = 1, 2, ...: in batches of `jobs`, until a run makes fewer than N such calls.
    std::uint64_t calls_seen = 0, runs = 0, hits = 0;
    bool more = true;
    for (std::uint64_t n = 1; more && n <= sc.max_n; n += jobs) {
      std::vector<run_spec> specs;
      for (std::uint64_t k = n; k < n + jobs && k <= sc.max_n; ++k) {
        run_spec s;
        s.name = std::string(sc.point) + " #" + std::to_string(k) + " " + sc.err_name;
        s.dir = st.dir / ("run-" + std::to_string(k));
        s.salt = salt;
        s.transactions = transactions;
        s.nth = {sc.point, std::to_string(k), std::to_string(sc.err)};
        specs.push_back(std::move(s));
      }
      run_all(st.fiu_run, specs, jobs, [&](std::size_t i, run_output& out) {
        judge j(specs[i]);
        for (const auto& line : out.lines) j.event(line);
        if (!j.nth_hit && j.violations.empty() && out.status == 0) {
          // Fewer than N calls: nothing was injected, nothing to judge.
          more = false;
          calls_seen = std::max(calls_seen, j.nth_calls);
          fs::remove_all(specs[i].dir);
          return;
        }
        judge j2(specs[i]);
        total.add(judge_run(st.fiu_run, specs[i], out, j2, "fail call " + std::to_string(n + i) + " only"));
        ++runs;
        hits += j2.nth_hit ? 1 : 0;
        calls_seen = std::max(calls_seen, j2.nth_calls);
      });
    }
    std::cout << "fixed schedule " << sc.point << " " << sc.err_name << ": " << runs << " runs ("
              << hits << " hit), " << calls_seen << " calls in a run"
              << (more ? " (stopped at N = " + std::to_string(sc.max_n) + ")" : std::string()) << std::endl;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  print_summary(", fixed schedules", total, total.runs, seconds);
  EXPECT_EQ(total.violations, 0u) << "see the violations above";
}

}  // namespace
