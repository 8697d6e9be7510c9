// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The verification pool of powerloss_test.cpp: rebuilt images (see trace.hpp) are verified by
/// two worker processes, each forking one child per image, while the parent builds the next.
#ifndef TMF_TESTS_CRASH_VERIFIER_HPP
#define TMF_TESTS_CRASH_VERIFIER_HPP

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_support.hpp"

namespace tmf_test::crash {

/// What a verification expects: recovery finds a seq in [lower, upper]; with write_after,
/// committing seq + 1 on the recovered storage then works too.
struct expectation {
  std::uint64_t lower, upper;
  bool write_after;
  std::string what;  // for messages
};

/// Which image a verification was of (named again in its failure).
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
  /// In a child: verifies the image at `path` (a data file and its log) against `x`; returns
  /// the child's exit code, 0 if right. `verbose`: say what is wrong on stderr.
  using verify_fn = std::function<int(const std::filesystem::path& path, const expectation& x, bool verbose)>;

  /// Forks the two workers now; worker i verifies the images built at `slots[i]`.
  verifier(verify_fn verify, const std::array<std::filesystem::path, 2>& slots) : m_verify(std::move(verify)) {
    for (int i = 0; i < 2; ++i) {
      worker& w = m_workers[i];
      w.path = slots[static_cast<std::size_t>(i)];
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
      if (pid == 0) ::_exit(m_verify(path, x, rq.verbose != 0));
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

  verify_fn m_verify;
  worker m_workers[2];
  std::vector<failure> m_failures;
  std::uint64_t m_verified = 0;
};

}  // namespace tmf_test::crash

#endif  // TMF_TESTS_CRASH_VERIFIER_HPP
