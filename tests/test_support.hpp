// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// Helpers shared by tmf's tests: per-test storage paths, cleanup, running code in a child.
// A classic guard, not only #pragma once: GCC does not match a file included through the
// precompiled header with the same file included again by path.
#ifndef TMF_TESTS_TEST_SUPPORT_HPP
#define TMF_TESTS_TEST_SUPPORT_HPP

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/types.h>
#include <unistd.h>

#include <tmf/detail/os.hpp>
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

/// The file identity (device, inode; Windows: volume serial, file index) of `path`, as the
/// OS layer reports it: what an os::io_hook compares to tell the data file from the others.
inline tmf::detail::os::file_info file_identity(const std::filesystem::path& path) {
  namespace os = tmf::detail::os;
  os::file f;
  os::file_info fi;
  if (auto ec = os::open_file(path, os::access::read_only, f)) throw std::system_error(ec, "open " + path.string());
  if (auto ec = os::stat_file(f, fi)) throw std::system_error(ec, "stat " + path.string());
  return fi;
}

/// Ends this process at once with `code`, as a crash would leave its files: no destructor
/// runs and tmf writes nothing more (what it wrote is in the page cache). stdio is flushed.
[[noreturn]] inline void die_here(int code) {
  std::fflush(nullptr);
#if defined(_WIN32)
  ::TerminateProcess(::GetCurrentProcess(), static_cast<UINT>(code));
  std::abort();
#else
  ::_exit(code);
#endif
}

/// A path that a lambda can capture by value and carry into a child process (see by_value):
/// trivially copyable, its text held in place. Converts to and from std::filesystem::path.
class child_path {
 public:
  child_path() = default;
  child_path(const std::filesystem::path& p) {  // NOLINT(google-explicit-constructor)
    const std::string s = p.string();
    if (s.size() >= sizeof m_text) throw std::length_error("tmf_test::child_path: path too long: " + s);
    s.copy(m_text, s.size());
    m_text[s.size()] = '\0';
  }
  std::filesystem::path path() const { return std::filesystem::path(std::string(m_text)); }
  operator std::filesystem::path() const { return path(); }  // NOLINT(google-explicit-constructor)

 private:
  char m_text[1024] = {};
};

/// A callable run in a child process by copying its bytes there: `fn` must be trivially
/// copyable and capture by value only ([=], no references, no `this`; paths as child_path).
/// On POSIX the child is forked and `fn` runs there as any callable would; on Windows the
/// test binary re-executes itself (spawn_child), which needs the copy.
template <class F>
struct by_value_fn {
  static_assert(std::is_trivially_copyable_v<F>,
                "tmf_test::by_value: the child gets a byte copy of the callable: capture by value only "
                "(tmf_test::child_path for paths, no std::string, containers or references)");
  F fn;
  int operator()() const { return fn(); }
};
/// Marks `fn` as runnable in a child process on every system (see by_value_fn).
template <class F>
by_value_fn<F> by_value(F fn) {
  return by_value_fn<F>{std::move(fn)};
}

/// Whether the tests run on Windows (some do fewer rounds there: a child process starts in
/// ~0.1 s under Wine, against ~1 ms for a fork).
#if defined(_WIN32)
inline constexpr bool is_windows = true;
#else
inline constexpr bool is_windows = false;
#endif

/// Whether this Windows program runs under Wine (ntdll exports wine_get_version); false on POSIX.
inline bool under_wine() {
#if defined(_WIN32)
  const HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
  return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
#else
  return false;
#endif
}

/// wait_child's result for a child ended by kill_child (128 + SIGKILL, on every system).
inline constexpr int killed_status = 128 + 9;

/// A parent and its child (spawn_child) waiting for each other through marker files beside
/// the test's files, on every system: trivially copyable, so a by_value lambda can capture it.
/// signal("x") creates the marker "x"; wait("x") polls until it exists (false after `timeout`).
class handshake {
 public:
  explicit handshake(const std::filesystem::path& base) : m_base(base) { clear(); }
  void signal(std::string_view name) const { std::ofstream(marker(name)).put('x'); }
  bool wait(std::string_view name, std::chrono::milliseconds timeout = std::chrono::seconds(60)) const {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (std::error_code ec; !std::filesystem::exists(marker(name), ec);) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }
  /// Removes the markers (the names used by one test: "0".."9", "a".."z").
  void clear() const {
    std::error_code ec;
    for (char c : std::string_view("0123456789abcdefghijklmnopqrstuvwxyz"))
      std::filesystem::remove(marker(std::string_view(&c, 1)), ec);
  }

 private:
  std::filesystem::path marker(std::string_view name) const {
    return std::filesystem::path(m_base.path().string() + ".signal-" + std::string(name));
  }
  child_path m_base;
};

template <class F>
struct is_by_value : std::false_type {};
template <class F>
struct is_by_value<by_value_fn<F>> : std::true_type {};

#if defined(_WIN32)
/// The message of a test whose child body cannot be carried to a Windows child (not wrapped
/// in by_value): ctest's SKIP_REGULAR_EXPRESSION (tests/CMakeLists.txt) turns the failure
/// that follows it into a skip.
inline constexpr const char* no_fork_message = "tmf_test: skipped on Windows: the test forks a child process";

namespace detail {

/// The command-line flag that makes a re-executed test binary a child:
/// --tmf-child=<entry offset in the image, hex>:<the callable's bytes, hex>.
inline constexpr std::wstring_view child_flag = L"--tmf-child=";

/// Runs the byte copy of a by_value callable in the child; its address is sent to the child
/// as an offset from the image base, which is the same in both processes.
template <class F>
int child_entry(const unsigned char* bytes) {
  alignas(F) unsigned char storage[sizeof(F)];
  std::memcpy(storage, bytes, sizeof(F));
  return (*std::launder(reinterpret_cast<const F*>(storage)))();
}
using child_entry_fn = int (*)(const unsigned char*);

inline std::uintptr_t image_base() { return reinterpret_cast<std::uintptr_t>(::GetModuleHandleW(nullptr)); }

/// The child's side: started with child_flag, at the start of the test the parent named in
/// --gtest_filter (so that test_path() is the same as in the parent, and every static object
/// of the test program is built), runs the callable and ends the process with its code,
/// as a forked child `_exit`s.
class child_listener : public ::testing::EmptyTestEventListener {
 public:
  child_listener(child_entry_fn entry, std::vector<unsigned char> bytes) : m_entry(entry), m_bytes(std::move(bytes)) {}
  void OnTestStart(const ::testing::TestInfo&) override {
    int rc = 100;
    try {
      rc = m_entry(m_bytes.data());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tmf_test child %lu: uncaught exception: %s\n", ::GetCurrentProcessId(), e.what());
    } catch (...) {
      std::fprintf(stderr, "tmf_test child %lu: uncaught exception of unknown type\n", ::GetCurrentProcessId());
    }
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    ::TerminateProcess(::GetCurrentProcess(), static_cast<UINT>(rc & 0xff));
  }

 private:
  child_entry_fn m_entry;
  std::vector<unsigned char> m_bytes;
};

inline int hex_digit(wchar_t c) {
  if (c >= L'0' && c <= L'9') return c - L'0';
  if (c >= L'a' && c <= L'f') return c - L'a' + 10;
  return -1;
}

/// At program start: in a child (child_flag on the command line), installs child_listener in
/// place of GoogleTest's printer (the child's output is only what its body prints).
inline bool install_child_listener() {
  const std::wstring_view line = ::GetCommandLineW();
  const std::size_t at = line.find(child_flag);
  if (at == std::wstring_view::npos) return false;
  std::wstring_view arg = line.substr(at + child_flag.size());
  arg = arg.substr(0, arg.find_first_of(L" \t\""));
  const std::size_t colon = arg.find(L':');
  std::uintptr_t offset = 0;
  for (wchar_t c : arg.substr(0, colon)) offset = offset * 16 + static_cast<std::uintptr_t>(hex_digit(c));
  std::vector<unsigned char> bytes;
  const std::wstring_view hex = colon == std::wstring_view::npos ? std::wstring_view{} : arg.substr(colon + 1);
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    bytes.push_back(static_cast<unsigned char>(hex_digit(hex[i]) * 16 + hex_digit(hex[i + 1])));
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new child_listener(reinterpret_cast<child_entry_fn>(image_base() + offset), std::move(bytes)));
  return true;
}
inline const bool g_is_child = install_child_listener();

/// The children started by spawn_child, by process id, until wait_child closes them.
struct child_table {
  std::mutex mutex;
  std::map<int, HANDLE> handles;
};
inline child_table& children() {
  static child_table t;
  return t;
}

inline std::wstring quote_arg(const std::wstring& s) {
  // Enough for a path and a test name (no quotes or trailing backslashes in them).
  return L"\"" + s + L"\"";
}

/// Re-executes this test binary, running only the current test, with `flag` (child_flag...).
inline int start_child(const std::wstring& flag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) throw std::logic_error("tmf_test::spawn_child: not inside a test");
  std::wstring exe(MAX_PATH, L'\0');
  for (;;) {
    const DWORD n = ::GetModuleFileNameW(nullptr, exe.data(), static_cast<DWORD>(exe.size()));
    if (n == 0) throw std::system_error(static_cast<int>(::GetLastError()), std::system_category(), "GetModuleFileNameW");
    if (n < exe.size()) {
      exe.resize(n);
      break;
    }
    exe.resize(exe.size() * 2);
  }
  const std::string name = std::string(info->test_suite_name()) + "." + info->name();
  std::wstring cmd = detail::quote_arg(exe) + L" --gtest_filter=" + std::wstring(name.begin(), name.end()) + L" " + flag;
  STARTUPINFOW si{};
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = ::GetStdHandle(STD_INPUT_HANDLE);
  si.hStdOutput = ::GetStdHandle(STD_OUTPUT_HANDLE);
  si.hStdError = ::GetStdHandle(STD_ERROR_HANDLE);
  for (HANDLE h : {si.hStdInput, si.hStdOutput, si.hStdError})
    if (h != nullptr && h != INVALID_HANDLE_VALUE) ::SetHandleInformation(h, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT);
  PROCESS_INFORMATION pi{};
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  // Inherits only what is inheritable: the standard handles; tmf opens its files without.
  // Wine's CreateProcessW now and then fails with ERROR_INTERNAL_ERROR when processes start
  // and end at a high rate (the kill test): tried again after a pause.
  for (int attempt = 0;; ++attempt) {
    if (::CreateProcessW(exe.c_str(), cmd.data(), nullptr, nullptr, TRUE, 0, nullptr, nullptr, &si, &pi)) break;
    const DWORD err = ::GetLastError();
    if (attempt == 20) throw std::system_error(static_cast<int>(err), std::system_category(), "CreateProcessW");
    ::Sleep(10);
  }
  ::CloseHandle(pi.hThread);
  const int pid = static_cast<int>(pi.dwProcessId);
  std::lock_guard lock(children().mutex);
  children().handles[pid] = pi.hProcess;
  return pid;
}

inline HANDLE child_handle(int pid) {
  std::lock_guard lock(children().mutex);
  auto it = children().handles.find(pid);
  if (it == children().handles.end()) throw std::logic_error("tmf_test: not a child of spawn_child: " + std::to_string(pid));
  return it->second;
}

}  // namespace detail

/// Starts a child process that runs `fn` and exits with its return value (an escaping
/// exception is printed and gives 100); returns its process id, for wait_child and
/// kill_child. On Windows the test binary re-executes itself and runs only the current test,
/// whose start runs a byte copy of `fn` (see by_value): `fn` must come from by_value;
/// any other callable prints no_fork_message and throws (the test is skipped).
/// GoogleTest assertions inside the child do not reach the parent: return a non-zero code instead.
template <class F>
int spawn_child(const F& fn) {
  if constexpr (is_by_value<F>::value) {
    const auto offset = reinterpret_cast<std::uintptr_t>(&detail::child_entry<F>) - detail::image_base();
    static constexpr wchar_t digits[] = L"0123456789abcdef";
    std::wstring flag(detail::child_flag);
    std::wstring off;
    for (std::uintptr_t v = offset; v != 0 || off.empty(); v /= 16) off.insert(off.begin(), digits[v % 16]);
    flag += off;
    flag += L':';
    const auto* bytes = reinterpret_cast<const unsigned char*>(&fn);
    for (std::size_t i = 0; i < sizeof(F); ++i) {
      flag += digits[bytes[i] >> 4];
      flag += digits[bytes[i] & 15];
    }
    return detail::start_child(flag);
  } else {
    std::fprintf(stderr, "%s\n", no_fork_message);
    std::fflush(stderr);
    throw std::runtime_error(no_fork_message);
  }
}

/// Waits for a child of spawn_child: its exit code (128 + 9 when kill_child ended it, as
/// for SIGKILL on POSIX; 139 for a crash, see windows_crash_exit.cpp).
inline int wait_child(int pid) {
  const HANDLE h = detail::child_handle(pid);
  if (::WaitForSingleObject(h, INFINITE) != WAIT_OBJECT_0)
    throw std::system_error(static_cast<int>(::GetLastError()), std::system_category(), "WaitForSingleObject");
  DWORD code = 0;
  if (!::GetExitCodeProcess(h, &code))
    throw std::system_error(static_cast<int>(::GetLastError()), std::system_category(), "GetExitCodeProcess");
  {
    std::lock_guard lock(detail::children().mutex);
    detail::children().handles.erase(pid);
  }
  ::CloseHandle(h);
  return static_cast<int>(code);
}

/// Whether a child of spawn_child has ended, without waiting: if so, sets `code` as
/// wait_child would and reaps the child.
inline bool try_wait_child(int pid, int& code) {
  const DWORD r = ::WaitForSingleObject(detail::child_handle(pid), 0);
  if (r == WAIT_TIMEOUT) return false;
  if (r != WAIT_OBJECT_0)
    throw std::system_error(static_cast<int>(::GetLastError()), std::system_category(), "WaitForSingleObject");
  code = wait_child(pid);
  return true;
}

/// Ends a child of spawn_child at once (TerminateProcess; SIGKILL on POSIX). Reap it with
/// wait_child. A child that has already ended is left as it is (as kill(2) leaves a zombie):
/// wait_child then gives its own exit code.
inline void kill_child(int pid) {
  const HANDLE h = detail::child_handle(pid);
  if (!::TerminateProcess(h, killed_status) && ::WaitForSingleObject(h, 0) != WAIT_OBJECT_0)
    throw std::system_error(static_cast<int>(::GetLastError()), std::system_category(), "TerminateProcess");
}

/// Runs `fn` in a child process (see spawn_child) and returns its exit code.
template <class F>
int run_in_child(const F& fn) {
  return wait_child(spawn_child(fn));
}
#else
/// Forks a child that runs `fn` and `_exit`s with its return value (an escaping exception is
/// printed and gives 100). Returns the child's pid; reap it with `wait_child`. Wrap `fn` in
/// by_value for the test to run on Windows too.
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

namespace detail {
/// waitpid's status as wait_child reports it.
inline int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}
}  // namespace detail

/// Waits for a child: its exit code, or 128 + the signal that killed it.
inline int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "waitpid");
  }
  return detail::exit_code(status);
}

/// Whether a child has ended, without waiting: if so, sets `code` as wait_child would and
/// reaps the child.
inline bool try_wait_child(pid_t pid, int& code) {
  int status = 0;
  pid_t got;
  while ((got = ::waitpid(pid, &status, WNOHANG)) < 0) {
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "waitpid");
  }
  if (got == 0) return false;
  code = detail::exit_code(status);
  return true;
}

/// Ends a child of spawn_child at once (SIGKILL). Reap it with wait_child.
inline void kill_child(pid_t pid) {
  if (::kill(pid, SIGKILL) != 0) throw std::system_error(errno, std::generic_category(), "kill");
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
