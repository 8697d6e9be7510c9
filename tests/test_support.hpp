// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Helpers shared by tmf's tests: per-test storage paths, cleanup, running code in a child.
// A classic guard, not only #pragma once: GCC does not match a file included through the
// precompiled header with the same file included again by path.
#ifndef TMF_TESTS_TEST_SUPPORT_HPP
#define TMF_TESTS_TEST_SUPPORT_HPP

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <sys/types.h>
#include <unistd.h>
#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/wait.h>
#endif

/// In a child process (run_in_child and the like): if `cond` is false, prints where and
/// what broke (printf-style message) and makes the child return 1.
#define CHILD_CHECK(cond, ...)                                                      \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                            \
      std::fputc('\n', stderr);                                                     \
      return 1;                                                                     \
    }                                                                               \
  } while (0)

namespace tmf_test {

/// The directory for test files: $TMF_TEST_DIR (set by ctest to <build>/test-files), else
/// <temp>/tmf-tests. Created if missing.
inline std::filesystem::path test_dir() {
  std::filesystem::path dir;
  if (const char* env = std::getenv("TMF_TEST_DIR"); env != nullptr && *env != '\0') {
    dir = env;
  } else {
    dir = std::filesystem::temp_directory_path() / "tmf-tests";
  }
  std::filesystem::create_directories(dir);
  return dir;
}

/// `name` with every character that is not [A-Za-z0-9._-] replaced by '_' ('/' of typed and
/// parameterized tests, '<' '>' ' ' of type names...).
inline std::string sanitize_file_name(std::string_view name) {
  std::string out(name);
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return out;
}

/// A storage path unique to the running GoogleTest test: $TMF_TEST_DIR/<TestSuite>.<TestName>.tmf,
/// or <TestSuite>.<TestName>.<tag>.tmf when a test needs several files. Outside a test
/// (a global fixture...) the name is "no-test.<pid>". Does not create or remove the file.
inline std::filesystem::path test_path(std::string_view tag = {}) {
  std::string name;
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info(); info != nullptr) {
    name = std::string(info->test_suite_name()) + "." + info->name();
  } else {
    name = "no-test." + std::to_string(::getpid());
  }
  if (!tag.empty()) {
    name += ".";
    name += tag;
  }
  return test_dir() / (sanitize_file_name(name) + ".tmf");
}

/// The log file of a storage: beside it, named after the full file name plus "-log".
inline std::filesystem::path log_path(const std::filesystem::path& path) {
  return std::filesystem::path(path.string() + "-log");
}

/// The lock file of a storage (its reader table): the full file name plus "-lock".
inline std::filesystem::path lock_path(const std::filesystem::path& path) {
  return std::filesystem::path(path.string() + "-lock");
}

inline void remove_storage(const std::filesystem::path& path);

/// Removes a file; a missing file is not an error.
inline void remove_file(const std::filesystem::path& path) {
  std::error_code ec;
#if defined(_WIN32)
  // A file still open elsewhere keeps its name until closed ("delete pending"): renamed
  // first, its name is free at once, as after unlink(2).
  static unsigned counter = 0;
  std::filesystem::path gone = path;
  gone += ".removed-" + std::to_string(::GetCurrentProcessId()) + "-" + std::to_string(++counter);
  std::filesystem::rename(path, gone, ec);
  if (!ec) {
    std::filesystem::remove(gone, ec);
    return;
  }
#endif
  std::filesystem::remove(path, ec);
}

inline void remove_storage(const std::filesystem::path& path) {
  remove_file(path);
  remove_file(log_path(path));
  remove_file(lock_path(path));
}

/// A test's storage path, removed (with its log and lock file) on construction and destruction.
/// With TMF_TEST_KEEP_FILES set in the environment, the files are left after the test.
class scoped_path {
 public:
  scoped_path() : scoped_path(test_path()) {}
  explicit scoped_path(std::string_view tag) : scoped_path(test_path(tag)) {}
  explicit scoped_path(const char* tag) : scoped_path(std::string_view(tag)) {}  // a literal is a tag, not a path
  explicit scoped_path(std::filesystem::path path) : path_(std::move(path)) { remove_storage(path_); }
  scoped_path(const scoped_path&) = delete;
  scoped_path& operator=(const scoped_path&) = delete;
  ~scoped_path() {
    const char* keep = std::getenv("TMF_TEST_KEEP_FILES");
    if (keep == nullptr || *keep == '\0') remove_storage(path_);
  }

  const std::filesystem::path& path() const noexcept { return path_; }
  std::filesystem::path log() const { return log_path(path_); }
  operator const std::filesystem::path&() const noexcept { return path_; }  // NOLINT(google-explicit-constructor)

 private:
  std::filesystem::path path_;
};

/// Sets (or with nullptr, removes) an environment variable of this process.
inline void set_env(const char* name, const char* value) {
#if defined(_WIN32)
  ::_putenv_s(name, value ? value : "");
#else
  if (value)
    ::setenv(name, value, 1);
  else
    ::unsetenv(name);
#endif
}

/// std::aligned_alloc, which Windows's C library lacks; free with aligned_free.
inline void* aligned_alloc(std::size_t align, std::size_t size) {
#if defined(_WIN32)
  return ::_aligned_malloc(size, align);
#else
  return std::aligned_alloc(align, size);
#endif
}
inline void aligned_free(void* p) {
#if defined(_WIN32)
  ::_aligned_free(p);
#else
  std::free(p);
#endif
}

/// The whole content of a file (to check that a failed open left it byte-for-byte untouched).
inline std::vector<char> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::system_error(errno, std::generic_category(), "cannot open " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

#if defined(_WIN32)
/// The message of a test that needs fork(): ctest's SKIP_REGULAR_EXPRESSION (tests/CMakeLists.txt)
/// turns the failure that follows it into a skip.
inline constexpr const char* no_fork_message = "tmf_test: skipped on Windows: the test forks a child process";

/// Windows has no fork: prints `no_fork_message` and throws (the test ends there).
inline int spawn_child(const std::function<int()>&) {
  std::fprintf(stderr, "%s\n", no_fork_message);
  std::fflush(stderr);
  throw std::runtime_error(no_fork_message);
}
inline int wait_child(int) { throw std::runtime_error(no_fork_message); }
inline int run_in_child(const std::function<int()>& fn) { return wait_child(spawn_child(fn)); }
#else
/// Forks a child that runs `fn` and `_exit`s with its return value (an escaping exception is
/// printed and gives 100). Returns the child's pid; reap it with `wait_child`.
/// GoogleTest assertions inside the child do not reach the parent: return a non-zero code instead.
inline pid_t spawn_child(const std::function<int()>& fn) {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    int rc = 100;
    try {
      rc = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tmf_test child %d: uncaught exception: %s\n", static_cast<int>(::getpid()), e.what());
      rc = 100;
    } catch (...) {
      std::fprintf(stderr, "tmf_test child %d: uncaught exception of unknown type\n", static_cast<int>(::getpid()));
      rc = 100;
    }
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    ::_exit(rc & 0xff);
  }
  return pid;
}

/// Waits for a child: its exit code, or 128 + the signal that killed it.
inline int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "waitpid");
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/// Runs `fn` in a forked child (see spawn_child) and returns its exit code, or 128 + the
/// signal that killed it.
inline int run_in_child(const std::function<int()>& fn) { return wait_child(spawn_child(fn)); }

#endif

#if !defined(_WIN32)
/// Fills the file system of `p` with a file written until ENOSPC. Returns its size.
inline std::uint64_t fill_up(const std::filesystem::path& p) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return 0;
  static const char chunk[64 << 10] = {};
  std::uint64_t total = 0;
  for (std::size_t n = sizeof chunk; n > 0;) {
    ssize_t r = ::write(fd, chunk, n);
    if (r > 0) {
      total += static_cast<std::uint64_t>(r);
    } else if (r < 0 && errno == ENOSPC) {
      n /= 2;  // fill the last pages too
    } else if (r < 0 && errno != EINTR) {
      break;
    }
  }
  ::close(fd);
  return total;
}
#endif

}  // namespace tmf_test

#endif  // TMF_TESTS_TEST_SUPPORT_HPP
