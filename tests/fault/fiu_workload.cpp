// SPDX-License-Identifier: Apache-2.0 OR MIT
// The workload of the fault-injection stage: run under libfiu's `fiu-run -x` (its POSIX
// preload makes pread/pwritev/fdatasync/fsync/ftruncate fail at random) by
// tests/fault/fiu_test.cpp, which checks its report against the files afterwards.
//
//   tmf_fiu_workload FILE SALT TRANSACTIONS [POINT N ERRNO]
//
// Opens FILE (durability::full, 64 KiB checkpoints, see fault_model.hpp) and commits
// transactions 1..TRANSACTIONS of the model, in writers of 1 to 5 transactions, with a read
// transaction between writers. Every outcome is one line on stdout, written with write(2)
// (the stage never injects faults into write(2)):
//
//   start preload=P nth=K          P: 1 if the fiu POSIX preload is in front of libc
//   open-failed E f=F TEXT         the constructor threw the system error E (retried); F: the
//                                  calls that failed (were injected) during it, also below
//   open-misreported CODE f=F TEXT the constructor threw tmf's CODE under injected I/O errors
//   settled S A ok|bad TEXT|unverified TEXT
//                                  after each open: the state's seq and attempt, and whether
//                                  the whole content equals the model and check() passed
//   ack S A                        commit() of seq S by attempt A returned
//   rolledback S A E f=F TEXT      commit() threw the system error E (the writer goes on)
//   unknown S A f=F                commit() threw errc::commit_unknown (then a reopen)
//   reopen S A WHERE [f=F] TEXT    errc::needs_reopen from WHERE (begin, body, commit, read);
//                                  S A: the attempt whose commit threw it, else 0 0
//   stuck S A N                    N commits in a row threw a system error (then a reopen)
//   begin-failed S E f=F TEXT      write() threw the system error E (retried)
//   read-failed E f=F TEXT         read() threw the system error E
//   read-mismatch TEXT             a read transaction saw another state than the last ack
//                                  (then the workload stops: exit status 7)
//   unexpected WHERE TEXT          any other exception (exit status 3)
//                                  (a "bad" settle stops the workload: exit status 6)
//   giveup TEXT                    a retry bound was reached (exit status 2)
//   done S A                       the last state, before the storage is closed
//   closed                         the storage object is destroyed (final checkpoint)
//   faults pread=.. pwritev=.. fdatasync=.. fsync=.. ftruncate=.. short=..
//                                  calls that failed or transferred less than asked (injected:
//                                  nothing else fails on the test's file system)
//   nth calls=C hit=H              with POINT N ERRNO: calls of POINT seen, whether the Nth failed
//
// With TMF_FIU_TRACE=1 in the environment, every call counted above is traced to stderr.
//
// With POINT N ERRNO (built with libfiu's control API, TMF_FIU_CONTROL), only the Nth call
// of the libfiu failure point POINT fails, with errno ERRNO (fiu_enable_external with a
// counter: fiu-run 1.1 has no "fail the Nth call" command of its own).

#include <tmf/tmf.hpp>

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(TMF_FIU_CONTROL)
#include <fiu-control.h>
#include <fiu.h>
#endif

#include "fault_model.hpp"

// -- counting what was injected ----------------------------------------------------------
//
// These definitions in the executable come before every LD_PRELOAD library in the lookup
// order, so tmf's calls reach them first; each calls the next definition (libfiu's wrapper
// under fiu-run, else libc's) and counts the calls that failed or came back short.

namespace {

struct fault_counts {
  unsigned long pread = 0, pwritev = 0, fdatasync = 0, fsync = 0, ftruncate = 0, short_io = 0;
  unsigned long total() const { return pread + pwritev + fdatasync + fsync + ftruncate + short_io; }
} g_faults;

template <class Fn>
Fn next_symbol(const char* name) {
  void* p = ::dlsym(RTLD_NEXT, name);
  if (p == nullptr) {
    static const char msg[] = "tmf_fiu_workload: dlsym(RTLD_NEXT) failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    std::abort();
  }
  return reinterpret_cast<Fn>(p);
}

using pread64_fn = ssize_t (*)(int, void*, size_t, off64_t);
using pwritev64_fn = ssize_t (*)(int, const struct iovec*, int, off64_t);
using int_fd_fn = int (*)(int);
using ftruncate64_fn = int (*)(int, off64_t);

/// With TMF_FIU_TRACE set, every counted call is traced to stderr (to see a schedule).
bool tracing() {
  static const bool on = [] {
    const char* v = std::getenv("TMF_FIU_TRACE");
    return v != nullptr && *v != '\0';
  }();
  return on;
}

void trace(const char* call, int fd, long long n, long long off, long long r) {
  if (!tracing()) return;
  const int saved = errno;
  char buf[160];
  const int len = std::snprintf(buf, sizeof buf, "trace %s fd=%d n=%lld off=%lld -> %lld%s%s\n", call, fd, n, off, r,
                                r < 0 ? " " : "", r < 0 ? std::strerror(saved) : "");
  if (len > 0) (void)!::write(2, buf, static_cast<std::size_t>(len));
  errno = saved;
}

pread64_fn real_pread64() {
  static const pread64_fn f = next_symbol<pread64_fn>("pread64");
  return f;
}

}  // namespace

extern "C" {

ssize_t pread64(int fd, void* buf, size_t n, off64_t off) {
  const ssize_t r = real_pread64()(fd, buf, n, off);
  trace("pread64", fd, static_cast<long long>(n), off, r);
  if (r < 0) {
    ++g_faults.pread;
  } else if (static_cast<size_t>(r) < n) {
    struct stat st;  // short before the end of the file: a reduced count
    const int saved = errno;
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && off + r < st.st_size) ++g_faults.short_io;
    errno = saved;
  }
  return r;
}

ssize_t pwritev64(int fd, const struct iovec* iov, int count, off64_t off) {
  static const pwritev64_fn next = next_symbol<pwritev64_fn>("pwritev64");
  const ssize_t r = next(fd, iov, count, off);
  size_t want = 0;
  for (int i = 0; i < count; ++i) want += iov[i].iov_len;
  trace("pwritev64", fd, static_cast<long long>(want), off, r);
  if (r < 0) {
    ++g_faults.pwritev;
  } else if (static_cast<size_t>(r) < want) {
    ++g_faults.short_io;
  }
  return r;
}

int fdatasync(int fd) {
  static const int_fd_fn next = next_symbol<int_fd_fn>("fdatasync");
  const int r = next(fd);
  trace("fdatasync", fd, 0, 0, r);
  if (r != 0) ++g_faults.fdatasync;
  return r;
}

int fsync(int fd) {
  static const int_fd_fn next = next_symbol<int_fd_fn>("fsync");
  const int r = next(fd);
  trace("fsync", fd, 0, 0, r);
  if (r != 0) ++g_faults.fsync;
  return r;
}

int ftruncate64(int fd, off64_t size) noexcept {
  static const ftruncate64_fn next = next_symbol<ftruncate64_fn>("ftruncate64");
  const int r = next(fd, size);
  trace("ftruncate64", fd, 0, size, r);
  if (r != 0) ++g_faults.ftruncate;
  return r;
}

/// libfiu 1.1's open() wrapper passes the mode only with O_CREAT, so an O_TMPFILE (how tmf
/// creates a file) would get mode 0 and, once linked into place, not be openable by a user
/// other than root. Here the mode is applied again.
int open(const char* path, int flags, ...) {
  using open_fn = int (*)(const char*, int, ...);
  static const open_fn next = next_symbol<open_fn>("open");
  mode_t mode = 0;
  const bool tmpfile = (flags & O_TMPFILE) == O_TMPFILE;
  if ((flags & O_CREAT) != 0 || tmpfile) {
    va_list ap;
    va_start(ap, flags);
    mode = static_cast<mode_t>(va_arg(ap, int));
    va_end(ap);
  }
  const int fd = next(path, flags, mode);
  if (fd >= 0 && tmpfile) {
    const int saved = errno;
    const mode_t mask = ::umask(0);
    ::umask(mask);
    (void)::fchmod(fd, mode & ~mask);
    errno = saved;
  }
  return fd;
}

}  // extern "C"

namespace {

// -- the report ----------------------------------------------------------------------------

void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  std::size_t len = static_cast<std::size_t>(n) < sizeof buf - 1 ? static_cast<std::size_t>(n) : sizeof buf - 2;
  for (std::size_t i = 0; i < len; ++i)
    if (buf[i] == '\n') buf[i] = ' ';  // one event, one line
  buf[len++] = '\n';
  if (tracing()) (void)!::write(2, buf, len);
  for (std::size_t done = 0; done < len;) {
    const ssize_t w = ::write(1, buf + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) std::_Exit(5);  // the verifier is gone
    done += static_cast<std::size_t>(w);
  }
}

using ull = unsigned long long;

bool is_system(const std::system_error& e) { return e.code().category() == std::system_category(); }
bool is_tmf(const std::system_error& e, tmf::errc c) { return e.code() == tmf::make_error_code(c); }

// -- the fixed schedules -------------------------------------------------------------------

#if defined(TMF_FIU_CONTROL)
long g_nth_target = 0;
long g_nth_calls = 0;
bool g_nth_hit = false;

int nth_callback(const char*, int*, void**, unsigned int*) {
  if (++g_nth_calls != g_nth_target) return 0;
  g_nth_hit = true;
  return 1;
}
#endif

/// Prints the injected-fault counts (and the fixed schedule's) and exits with `code`.
[[noreturn]] void finish(int code) {
  say("faults pread=%lu pwritev=%lu fdatasync=%lu fsync=%lu ftruncate=%lu short=%lu", g_faults.pread,
      g_faults.pwritev, g_faults.fdatasync, g_faults.fsync, g_faults.ftruncate, g_faults.short_io);
#if defined(TMF_FIU_CONTROL)
  if (g_nth_target > 0) say("nth calls=%ld hit=%d", g_nth_calls, g_nth_hit ? 1 : 0);
#endif
  std::_Exit(code);
}

// -- the workload --------------------------------------------------------------------------

constexpr int max_open_tries = 1000;
constexpr int max_begin_failures = 20;
constexpr int max_rollbacks_in_a_row = 20;
constexpr int max_reopens = 300;

struct workload {
  std::filesystem::path file;
  std::uint64_t salt = 0;
  std::uint64_t transactions = 0;

  std::optional<tmf::storage<tmf_fault::disk_root>> db;
  std::vector<std::uint64_t> committed{0};  // committed[s]: the attempt that made seq s
  std::uint64_t next_attempt = 1;
  int reopens = 0;

  std::uint64_t seq() const { return committed.size() - 1; }

  [[noreturn]] void giveup(const char* what) {
    say("giveup %s", what);
    finish(2);
  }
  [[noreturn]] void unexpected(const char* where, const char* what) {
    say("unexpected %s %s", where, what);
    finish(3);
  }

  /// Opens (retrying system errors), reads the settled state, verifies it against the model.
  void open() {
    if (++reopens > max_reopens) giveup("too many reopens");
    for (int tries = 0;; ++tries) {
      if (tries == max_open_tries) giveup("open keeps failing");
      const unsigned long mark = g_faults.total();
      try {
        db.emplace(file, tmf_fault::stage_options());
        break;
      } catch (const std::system_error& e) {
        const unsigned long f = g_faults.total() - mark;
        if (is_system(e))
          say("open-failed %d f=%lu %s", e.code().value(), f, e.what());
        else if (is_tmf(e, tmf::errc::needs_reopen) || is_tmf(e, tmf::errc::commit_unknown))
          say("open-failed %s f=%lu %s", e.code().message().c_str(), f, e.what());
        else
          say("open-misreported %s f=%lu %s", e.code().message().c_str(), f, e.what());
      } catch (const std::exception& e) {
        unexpected("open", e.what());
      }
    }
    settle();
  }

  /// Reports the state the open found and makes it the workload's; checks the content. A
  /// state that differs from the model stops the workload (exit status 6): the verifier
  /// reports it, and what follows could not be modelled.
  void settle() {
    std::uint64_t s = 0, a = 0;
    std::string verdict;
    try {
      auto r = db->read();
      s = r->seq;
      a = r->attempt;
      if (s > seq() + 1) {
        verdict = "bad seq " + std::to_string(s) + " was never attempted";
      } else {
        // The attempts that made 1..s-1 are known; the state names the one that made s.
        std::vector<std::uint64_t> c(committed.begin(), committed.begin() + static_cast<std::ptrdiff_t>(s));
        c.push_back(a);
        const std::string diff = tmf_fault::compare(*r, tmf_fault::model_for(salt, c));
        if (diff.empty()) {
          verdict = "ok";
          committed = std::move(c);
        } else {
          verdict = "bad " + diff;
        }
      }
    } catch (const std::system_error& e) {
      if (!is_tmf(e, tmf::errc::needs_reopen) && !is_system(e)) unexpected("settle", e.what());
      say("reopen 0 0 settle %s", e.what());
      reopen();
      return;
    }
    if (verdict == "ok") {
      try {
        db->check();
      } catch (const std::system_error& e) {
        if (e.code() == tmf::make_error_code(tmf::errc::corrupted)) verdict = std::string("bad check: ") + e.what();
        else verdict = std::string("unverified check: ") + e.what();
      }
    }
    say("settled %llu %llu %s", static_cast<ull>(s), static_cast<ull>(a), verdict.c_str());
    if (verdict.rfind("bad", 0) == 0) {
      say("done %llu %llu", static_cast<ull>(s), static_cast<ull>(a));
      finish(6);
    }
  }

  void reopen() {
    db.reset();
    open();
  }

  /// A read transaction between writers: it must see the last acknowledged state.
  void read_check() {
    const unsigned long mark = g_faults.total();
    try {
      auto r = db->read();
      if (r->seq != seq() || r->attempt != committed.back()) {
        // What the storage holds now is not modelled: stop (exit status 7); the verifier
        // reports it and still looks at the files.
        say("read-mismatch read seq %llu attempt %llu, last state seq %llu attempt %llu", static_cast<ull>(r->seq),
            static_cast<ull>(r->attempt), static_cast<ull>(seq()), static_cast<ull>(committed.back()));
        say("done %llu %llu", static_cast<ull>(seq()), static_cast<ull>(committed.back()));
        finish(7);
      }
    } catch (const std::system_error& e) {
      if (is_system(e)) {
        say("read-failed %d f=%lu %s", e.code().value(), g_faults.total() - mark, e.what());
        return;
      }
      if (!is_tmf(e, tmf::errc::needs_reopen)) unexpected("read", e.what());
      say("reopen 0 0 read %s", e.what());
      reopen();
    }
  }

  /// One writer: up to `batch` transactions (fewer when an error needs a reopen).
  void one_writer(std::uint64_t batch) {
    std::optional<tmf::writer<tmf_fault::disk_root>> w;
    for (int failures = 0; !w;) {
      const unsigned long mark = g_faults.total();
      try {
        w.emplace(db->write());
      } catch (const std::system_error& e) {
        if (is_system(e)) {
          say("begin-failed %llu %d f=%lu %s", static_cast<ull>(seq() + 1), e.code().value(), g_faults.total() - mark,
              e.what());
          if (++failures < max_begin_failures) continue;
          say("reopen 0 0 begin %s", "write() keeps failing");
        } else if (is_tmf(e, tmf::errc::needs_reopen)) {
          say("reopen 0 0 begin %s", e.what());
        } else {
          unexpected("begin", e.what());
        }
        reopen();
        return;
      } catch (const std::exception& e) {
        unexpected("begin", e.what());
      }
    }
    int rollbacks = 0;
    for (std::uint64_t done = 0; done < batch && seq() < transactions;) {
      const std::uint64_t s = seq() + 1, a = next_attempt++;
      try {
        tmf_fault::apply_txn(**w, salt, s, a);
      } catch (const std::system_error& e) {
        if (!is_tmf(e, tmf::errc::needs_reopen)) unexpected("body", e.what());
        say("reopen 0 0 body %s", e.what());
        w.reset();
        reopen();
        return;
      } catch (const std::exception& e) {
        unexpected("body", e.what());
      }
      const unsigned long mark = g_faults.total();
      try {
        w->commit();
      } catch (const std::system_error& e) {
        const unsigned long f = g_faults.total() - mark;
        if (is_system(e)) {
          say("rolledback %llu %llu %d f=%lu %s", static_cast<ull>(s), static_cast<ull>(a), e.code().value(), f,
              e.what());
          if (++rollbacks < max_rollbacks_in_a_row) continue;  // the same writer, rolled back: try again
          // The writer is not usable after all: say so (the verifier reports it) and reopen.
          say("stuck %llu %llu %d commits in a row failed", static_cast<ull>(s), static_cast<ull>(a), rollbacks);
          w.reset();
          reopen();
          return;
        }
        if (is_tmf(e, tmf::errc::commit_unknown))
          say("unknown %llu %llu f=%lu", static_cast<ull>(s), static_cast<ull>(a), f);
        else if (is_tmf(e, tmf::errc::needs_reopen))
          say("reopen %llu %llu commit f=%lu %s", static_cast<ull>(s), static_cast<ull>(a), f, e.what());
        else
          unexpected("commit", e.what());
        w.reset();
        reopen();
        return;
      } catch (const std::exception& e) {
        unexpected("commit", e.what());
      }
      say("ack %llu %llu", static_cast<ull>(s), static_cast<ull>(a));
      committed.push_back(a);
      rollbacks = 0;
      ++done;
    }
  }

  void run() {
    open();
    while (seq() < transactions) {
      one_writer(1 + (seq() * 7 + next_attempt) % 5);
      if (db) read_check();
    }
    say("done %llu %llu", static_cast<ull>(seq()), static_cast<ull>(committed.back()));
  }
};

std::uint64_t parse_number(const char* s, const char* what) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 0);
  if (errno != 0 || end == s || *end != '\0') {
    std::fprintf(stderr, "tmf_fiu_workload: bad %s '%s'\n", what, s);
    std::exit(64);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 7) {
    std::fprintf(stderr, "usage: %s FILE SALT TRANSACTIONS [POINT N ERRNO]\n", argv[0]);
    return 64;
  }
  workload wl;
  wl.file = argv[1];
  wl.salt = parse_number(argv[2], "salt");
  wl.transactions = parse_number(argv[3], "transaction count");

  Dl_info info{};
  const bool preload = ::dladdr(reinterpret_cast<void*>(real_pread64()), &info) != 0 && info.dli_fname != nullptr &&
                       std::strstr(info.dli_fname, "fiu_posix_preload") != nullptr;
  say("start preload=%d nth=%d", preload ? 1 : 0, argc == 7 ? 1 : 0);
  if (argc == 7) {
#if defined(TMF_FIU_CONTROL)
    g_nth_target = static_cast<long>(parse_number(argv[5], "N"));
    const auto err = static_cast<std::intptr_t>(parse_number(argv[6], "errno"));
    fiu_init(0);
    if (fiu_enable_external(argv[4], 1, reinterpret_cast<void*>(err), 0, nth_callback) != 0) {
      say("giveup fiu_enable_external(%s) failed", argv[4]);
      return 2;
    }
#else
    say("giveup fixed schedules need libfiu's control API (built without libfiu-dev)");
    return 4;
#endif
  }

  wl.run();
  wl.db.reset();
  say("closed");
  std::fflush(nullptr);
  finish(0);
}
