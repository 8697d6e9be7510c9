// SPDX-License-Identifier: Apache-2.0 OR MIT
// Crash test: a child process runs random transactions (commits, rollbacks, allocations,
// frees, big allocations that grow the file) and is killed with SIGKILL at random instants.
// After every round a fresh process reopens the storage (recovery), runs check(), and
// verifies that the state is exactly one committed state, no older than the last commit
// the child acknowledged: seq_disk is acked or acked + 1, and the whole content equals a
// plain-std model replayed to seq_disk.
//
// The state is a deterministic function of the transaction number: transaction n applies
// ops drawn from a PRNG seeded by (seed, n), so the parent's model(n) is computed by
// applying the same generator to std containers (workload.hpp; this test's mix: kill_workload).
//
// Tests: RandomTransactionsSurviveSigkill (the requirement: >= 200 SIGKILLs at random
// instants), KillDuringCreation, KillAtExactFileOperations (the worker kills itself at its
// k-th file write/sync/allocate/truncate through tmf's I/O hook).
// Environment: TMF_CRASH_ROUNDS (default 200) rounds; TMF_CRASH_SEED fixes the seed (the seed
// in use is printed; timings are not reproducible, the op sequence is).

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#if defined(_WIN32)
#include <fcntl.h>
#include <io.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>
#else
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#endif

#include "test_support.hpp"
#if !defined(_WIN32)
#include "trace.hpp"
#endif
#include "workload.hpp"

namespace {

using namespace tmf_test::crash;  // NOLINT(google-build-using-namespace)

/// Up to 12 operations a transaction over lists, strings, counters, big blobs (10-300 KiB:
/// many pages, the file grows) of at most 6, and a btree_map of up to 64Ki keys (bursts of up
/// to 64 inserts or erasures: splits and merges of its page-sized nodes).
constexpr workload kill_workload{
    .max_ops = 12,
    .weight = {.list_put = 3, .list_append = 1, .list_erase = 2, .string_put = 2, .string_append = 1,
               .string_erase = 1, .counter_add = 3, .counter_erase = 1, .blob_put = 1, .blob_poke = 1,
               .tree_put = 2, .tree_erase = 1},
    .list_keys = 256, .list_len = 48, .long_list_odds = 10, .long_list_extra = 3000, .list_append_max = 40,
    .max_strings = 200, .string_len = 60, .long_string_odds = 8, .long_string_extra = 2000,
    .counter_keys = 1024,
    .blob_keys = 1u << 20, .blob_min = 10u << 10, .blob_range = 290u << 10,
    .max_blobs = 6, .blob_erase_odds = 4,
    .tree_keys = 1u << 16, .tree_burst = 64,
};

// -- processes ------------------------------------------------------------------------------
//
// On Windows (Wine in CI) the worker is the test binary re-executed (tmf_test::spawn_child),
// ended with TerminateProcess; it reports to a file instead of a pipe, and the verification
// runs in the test process itself (no copy-on-write copy of the model to give a child).

#if defined(_WIN32)
// trace.hpp (POSIX throughout) gives the other systems this hook; only the count is needed.
struct io_event {};
using io_observer = void (*)(const io_event&);
inline io_observer g_io_observer = nullptr;
inline std::error_code forward_io(tmf::detail::os::io_op op, const tmf::detail::os::file&, std::uint64_t,
                                  std::uint64_t, const void*) {
  if (op == tmf::detail::os::io_op::read) return {};
  if (io_observer f = g_io_observer) f(io_event{});
  return {};
}
inline void observe_io(io_observer f) {
  g_io_observer = f;
  tmf::detail::os::io_hook = f != nullptr ? &forward_io : nullptr;
}
#endif

/// The default of TMF_CRASH_ROUNDS: a child costs ~0.1 s to start under Wine, ~1 ms to fork.
constexpr std::uint64_t default_rounds = tmf_test::is_windows ? 50 : 200;

constexpr std::uint64_t opened_flag = std::uint64_t{1} << 63;

#if defined(_WIN32)
void send(int fd, std::uint64_t v) noexcept { (void)::_write(fd, &v, sizeof v); }
void sleep_us(std::uint64_t us) { std::this_thread::sleep_for(std::chrono::microseconds(us)); }
#else
void send(int fd, std::uint64_t v) noexcept {
  while (::write(fd, &v, sizeof v) < 0 && errno == EINTR) {
  }
}

void sleep_us(std::uint64_t us) {
  timespec ts{static_cast<time_t>(us / 1000000), static_cast<long>(us % 1000000) * 1000};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}
#endif

/// Self-inflicted SIGKILL at the `kill_at`-th file operation (write, sync, allocate,
/// truncate: tmf's I/O hook runs before each) of the process: a kill at an exact point.
struct io_kill {
  static inline std::uint64_t kill_at = 0, ops = 0;
  static void on_io(const io_event&) {
#if defined(_WIN32)
    if (++ops >= kill_at) ::TerminateProcess(::GetCurrentProcess(), tmf_test::killed_status);
#else
    if (++ops >= kill_at) ::kill(::getpid(), SIGKILL);
#endif
  }
  static void arm(std::uint64_t at) {
    kill_at = at;
    ops = 0;
    observe_io(&on_io);
  }
};

/// The victim: opens the storage, reports the seq it found (flagged), then runs
/// transactions forever, reporting every acknowledged commit. Never returns.
[[noreturn]] void run_worker(const std::filesystem::path& path, const tmf::options& opt, std::uint64_t seed,
                             std::uint64_t worker_seed, int fd, std::uint64_t kill_at_op) {
  try {
    if (kill_at_op != 0) io_kill::arm(kill_at_op);
    tmf::storage<disk_root> s(path, opt);
    s.check();
    std::uint64_t acked;
    {
      auto r = s.read();
      acked = r->seq;
    }
    send(fd, opened_flag | acked);
    prng ctl(worker_seed);
    for (;;) {
      {
        auto w = s.write();
        const int txns = 1 + static_cast<int>(ctl.below(4));
        for (int t = 0; t < txns; ++t) {
          const std::uint64_t kind = ctl.below(12);
          if (kind == 0 || kind == 1) {  // junk, undone by rollback(); the real transaction follows
            apply_junk(*w, kill_workload, seed, w->seq + 1, ctl);
            w.rollback();
          } else if (kind == 2) {  // junk, undone by the writer's destructor
            apply_junk(*w, kill_workload, seed, w->seq + 1, ctl);
            break;
          }
          const std::uint64_t n = w->seq + 1;
          apply_transaction(*w, kill_workload, seed, n);
          if (kind == 3) {  // the real thing, rolled back: done again by a later transaction
            w.rollback();
            continue;
          }
          w.commit();
          if (n != acked + 1) {
            std::fprintf(stderr, "kill_test worker: committed %" PRIu64 " after %" PRIu64 "\n", n, acked);
            ::_exit(4);
          }
          acked = n;
          send(fd, n);
        }
      }
      const std::uint64_t k = ctl.below(16);
      if (k == 0) {
        auto r = s.read();
        if (r->seq != acked) {
          std::fprintf(stderr, "kill_test worker: read seq %" PRIu64 " after committing %" PRIu64 "\n", r->seq, acked);
          ::_exit(5);
        }
      } else if (k == 1) {
        s.check();
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kill_test worker (pid %d): %s\n", static_cast<int>(::getpid()), e.what());
    ::_exit(3);
  }
}

struct round_stats {
  std::uint64_t rounds = 0, kills = 0, acked_commits = 0, killed_before_open = 0, unacked_survived = 0,
                recovery_kills = 0;
};

/// Runs rounds of (worker killed [, second worker killed during its open/recovery]) + verify.
class kill_harness {
 public:
  kill_harness(std::filesystem::path path, std::uint64_t seed) : m_path(std::move(path)), m_seed(seed), m_ctl(seed, 77) {}

  /// One round; returns an empty string, or what went wrong.
  /// `kill_at_op` != 0: the worker kills itself at its kill_at_op-th file operation instead.
  std::string round(std::uint64_t max_delay_us, std::uint64_t kill_at_op = 0) {
    std::uint64_t lo = m_model.seq;  // the file holds exactly this (verified) state now
    ++m_stats.rounds;
    if (std::string err = kill_one(max_delay_us, lo, kill_at_op); !err.empty()) return err;
    if (m_ctl.below(8) == 0) {  // a second victim, killed while it opens (and recovers)
      ++m_stats.recovery_kills;
      if (std::string err = kill_one(3000, lo); !err.empty()) return err;
    }
    return verify(lo);
  }

  const round_stats& stats() const noexcept { return m_stats; }
  std::uint64_t seq() const noexcept { return m_model.seq; }

 private:
  tmf::options random_options() {
    tmf::options o;
    o.sync = m_ctl.below(2) == 0 ? tmf::durability::full : tmf::durability::no_sync;
    if (m_ctl.below(5) < 2) o.checkpoint_bytes = 256u << 10;
    if (m_ctl.below(2) == 0) {  // freed blobs punched at once, a free top over 1 MiB truncated
      o.give_back_bytes = 64u << 10;
      o.truncate_bytes = 1u << 20;
    }
    return o;
  }

  /// Forks a worker, kills it after a random delay, checks its reports; raises `lo` to the
  /// last acknowledged commit. The file may then hold lo or lo + 1.
  std::string kill_one(std::uint64_t max_delay_us, std::uint64_t& lo, std::uint64_t kill_at_op = 0) {
    const tmf::options opt = random_options();
    const std::uint64_t delay = m_ctl.below(6) == 0 ? 0 : m_ctl.below(max_delay_us + 1);
    const std::uint64_t worker_seed = m_ctl.next();
#if defined(_WIN32)
    const std::filesystem::path report = m_path.string() + ".reports";
    std::error_code rec;
    std::filesystem::remove(report, rec);
    const auto pid = tmf_test::spawn_child(tmf_test::by_value(
        [path = tmf_test::child_path(m_path), report = tmf_test::child_path(report), opt, seed = m_seed, worker_seed,
         kill_at_op]() -> int {
          const int fd = ::_wopen(report.path().c_str(), _O_WRONLY | _O_CREAT | _O_TRUNC | _O_BINARY, _S_IREAD | _S_IWRITE);
          if (fd < 0) return 6;
          run_worker(path.path(), opt, seed, worker_seed, fd, kill_at_op);
        }));
    if (kill_at_op == 0) {
      // A process takes 20-100 ms to start under Wine: without this most kills would land
      // before the worker's open.
      if (delay) sleep_us(3 * delay + 40000);
      tmf_test::kill_child(pid);
    }
    const int status = tmf_test::wait_child(pid);
    ++m_stats.kills;
    std::vector<std::uint64_t> msgs;
    {
      std::ifstream in(report, std::ios::binary);
      for (std::uint64_t v; in.read(reinterpret_cast<char*>(&v), sizeof v);) msgs.push_back(v);
    }
    std::filesystem::remove(report, rec);
    std::ostringstream err;
    if (status != tmf_test::killed_status) {
      err << "the worker was not ended by the kill (exit code " << status << "; see its message on stderr)";
      return err.str();
    }
#else
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return "pipe2 failed";
    std::cout.flush();
    std::cerr.flush();
    const pid_t pid = ::fork();
    if (pid < 0) return "fork failed";
    if (pid == 0) {
      ::close(fds[0]);
      run_worker(m_path, opt, m_seed, worker_seed, fds[1], kill_at_op);
    }
    ::close(fds[1]);
    if (kill_at_op == 0) {
      if (delay) sleep_us(delay);
      ::kill(pid, SIGKILL);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    ++m_stats.kills;
    std::vector<std::uint64_t> msgs;
    for (;;) {
      std::uint64_t v;
      const ssize_t got = ::read(fds[0], &v, sizeof v);
      if (got == static_cast<ssize_t>(sizeof v)) {
        msgs.push_back(v);
      } else if (got < 0 && errno == EINTR) {
        continue;
      } else {
        break;
      }
    }
    ::close(fds[0]);
    std::ostringstream err;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
      err << "the worker did not die by SIGKILL (status " << status << "; see its message on stderr)";
      return err.str();
    }
#endif
    if (msgs.empty()) {
      ++m_stats.killed_before_open;
      return {};
    }
    if ((msgs[0] & opened_flag) == 0) return "the worker's first report is not its open";
    const std::uint64_t opened = msgs[0] & ~opened_flag;
    if (opened < lo || opened > lo + 1) {
      err << "a reopened process found seq " << opened << ", expected " << lo << " or " << lo + 1;
      return err.str();
    }
    std::uint64_t last = opened;
    for (std::size_t i = 1; i < msgs.size(); ++i) {
      if (msgs[i] != last + 1) {
        err << "worker acknowledged " << msgs[i] << " after " << last;
        return err.str();
      }
      last = msgs[i];
    }
    m_stats.acked_commits += msgs.size() - 1;
    lo = last;
    return {};
  }

#if defined(_WIN32)
  /// This process opens (recovers), checks, and compares with the model: every writer is dead.
  std::string verify(std::uint64_t lo) {
    std::ostringstream err;
    try {
      tmf::storage<disk_root> s(m_path, tmf::options{});  // open_or_create: a kill during creation leaves no file
      try {
        s.check();
      } catch (const std::exception& e) {
        return std::string("check() after recovery: ") + e.what();
      }
      auto r = s.read();
      const std::uint64_t seq = r->seq;
      if (seq < lo || seq > lo + 1) {
        err << "seq on disk " << seq << ", acknowledged " << lo << " (seed " << m_seed << ")";
        return err.str();
      }
      advance(m_model, kill_workload, m_seed, seq);
      if (std::string d = compare(*r, m_model); !d.empty()) {
        err << "content at seq " << seq << " differs from the model (seed " << m_seed << "): " << d;
        return err.str();
      }
      if (seq == lo + 1) ++m_stats.unacked_survived;
    } catch (const std::exception& e) {
      return std::string("the verifier's open failed: ") + e.what();
    }
    return {};
  }
#else
  /// A fresh process opens (recovers), checks, and compares with the model.
  std::string verify(std::uint64_t lo) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return "pipe2 failed";
    const std::filesystem::path path = m_path;
    const std::uint64_t seed = m_seed;
    model_root& model = m_model;  // the child's copy-on-write copy
    const int rc = tmf_test::run_in_child([&]() -> int {
      ::close(fds[0]);
      tmf::storage<disk_root> s(path, tmf::options{});  // open_or_create: a kill during creation leaves no file
      try {
        s.check();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "kill_test verifier: check() after recovery: %s\n", e.what());
        return 10;
      }
      auto r = s.read();
      const std::uint64_t seq = r->seq;
      send(fds[1], seq);
      if (seq < lo || seq > lo + 1) {
        std::fprintf(stderr, "kill_test verifier: seq on disk %" PRIu64 ", acknowledged %" PRIu64 "\n", seq, lo);
        return 11;
      }
      advance(model, kill_workload, seed, seq);
      if (std::string d = compare(*r, model); !d.empty()) {
        std::fprintf(stderr, "kill_test verifier: content at seq %" PRIu64 " differs from the model: %s\n", seq,
                     d.c_str());
        return 12;
      }
      return 0;
    });
    ::close(fds[1]);
    std::uint64_t seq = 0;
    const bool got = ::read(fds[0], &seq, sizeof seq) == static_cast<ssize_t>(sizeof seq);
    ::close(fds[0]);
    if (rc != 0 || !got) {
      std::ostringstream err;
      err << "verifier failed with code " << rc << " (seed " << m_seed << ", acknowledged " << lo
          << (got ? ", seq on disk " + std::to_string(seq) : std::string()) << "; its message is on stderr)";
      return err.str();
    }
    if (seq == lo + 1) ++m_stats.unacked_survived;
    advance(m_model, kill_workload, m_seed, seq);
    return {};
  }
#endif

  std::filesystem::path m_path;
  std::uint64_t m_seed;
  prng m_ctl;
  model_root m_model;
  round_stats m_stats;
};

std::uint64_t test_seed() { return seed_from_env("TMF_CRASH_SEED"); }

/// Removes `<path>.new-*`, the temporary files of creations that were killed.
std::size_t remove_creation_leftovers(const std::filesystem::path& path) {
  std::size_t n = 0;
  const std::string prefix = path.filename().string() + ".new-";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(path.parent_path(), ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) {
      std::filesystem::remove(e.path(), ec);
      ++n;
    }
  return n;
}

// Requirement: at least 200 SIGKILLs per run, each followed by recovery + check() + a full
// comparison with the model (TMF_CRASH_ROUNDS overrides the round count).
TEST(KillTest, RandomTransactionsSurviveSigkill) {
  tmf_test::scoped_path path;
  const std::uint64_t seed = test_seed();
  const std::uint64_t rounds = env_u64("TMF_CRASH_ROUNDS", default_rounds);
  std::cout << "kill_test: seed " << seed << " (TMF_CRASH_SEED), " << rounds << " rounds" << std::endl;
  const auto start = std::chrono::steady_clock::now();
  kill_harness h(path, seed);
  for (std::uint64_t i = 0; i < rounds; ++i) {
    const std::string err = h.round(30000);
    ASSERT_TRUE(err.empty()) << "round " << i << " (seed " << seed << "): " << err;
  }
  remove_creation_leftovers(path);
  const auto& st = h.stats();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "kill_test: " << st.rounds << " rounds, " << st.kills << " SIGKILLs (" << st.recovery_kills
            << " of a process opening/recovering, " << st.killed_before_open << " before the open finished), "
            << st.acked_commits << " commits acknowledged, final seq " << h.seq() << ", " << st.rounds
            << " recoveries verified (" << st.unacked_survived << " found an unacknowledged commit), " << secs
            << " s" << std::endl;
  EXPECT_GE(st.kills, rounds);
  EXPECT_GT(st.acked_commits, 0u) << "no worker ever committed: the delays are too short";
}

// Kills the process that creates the file: the next open must find no file or a valid one.
TEST(KillTest, KillDuringCreation) {
  tmf_test::scoped_path path;
  const std::uint64_t seed = test_seed();
  std::cout << "kill_test: seed " << seed << std::endl;
  std::size_t leftovers = 0;
  const std::uint64_t rounds = std::max<std::uint64_t>(1, env_u64("TMF_CRASH_ROUNDS", default_rounds) / 8);
  for (std::uint64_t i = 0; i < rounds; ++i) {
    tmf_test::remove_storage(path);
    kill_harness h(path, seed + i);
    const std::string err = h.round(4000);
    ASSERT_TRUE(err.empty()) << "round " << i << " (seed " << seed + i << "): " << err;
    leftovers += remove_creation_leftovers(path);
  }
  std::cout << "kill_test: " << rounds << " creations killed; " << leftovers
            << " temporary files of killed creations were left behind" << std::endl;
  // Creation writes an unnamed O_TMPFILE and links it into place: where the file system
  // supports that, a killed creation leaves nothing behind.
  tmf::detail::os::file probe;
  if (!tmf::detail::os::create_unnamed_file(path.path().parent_path(), probe)) {
    EXPECT_EQ(leftovers, 0u) << "killed creations left temporary files although O_TMPFILE works here";
  }
}

// Kills the worker at an exact file operation (the k-th write, sync, allocate or truncate
// since it started: log records (one operation per page), apply markers, data pages, the
// header, log headers at checkpoints, growth), k log-uniform in 1..3000 so that the steps of
// the first commit are hit one by one and later commits and checkpoints too; then the same
// verification.
TEST(KillTest, KillAtExactFileOperations) {
  tmf_test::scoped_path path;
  const std::uint64_t seed = test_seed();
  const std::uint64_t rounds = std::max<std::uint64_t>(1, env_u64("TMF_CRASH_ROUNDS", default_rounds) * 3 / 10);
  std::cout << "kill_test: seed " << seed << " (TMF_CRASH_SEED), " << rounds << " rounds" << std::endl;
  kill_harness h(path, seed);
  prng pick_op(seed, 99);
  for (std::uint64_t i = 0; i < rounds; ++i) {
    const auto op = static_cast<std::uint64_t>(
        std::exp(static_cast<double>(pick_op.below(1u << 20)) / (1u << 20) * std::log(3000.0))) + 1;
    const std::string err = h.round(0, op);
    ASSERT_TRUE(err.empty()) << "round " << i << " (seed " << seed << ", killed at file operation " << op << "): " << err;
  }
  remove_creation_leftovers(path);
  const auto& st = h.stats();
  std::cout << "kill_test: " << st.rounds << " rounds killed at an exact file operation, " << st.acked_commits
            << " commits acknowledged, " << st.unacked_survived << " recoveries found an unacknowledged commit"
            << std::endl;
  EXPECT_GT(st.acked_commits, 0u);
}

}  // namespace
