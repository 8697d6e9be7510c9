// SPDX-License-Identifier: Apache-2.0 OR MIT
// tests/test_support.hpp's child processes: fork on POSIX, the test binary re-executed on
// Windows (by_value callables, exit codes, kill_child, a crash, test_path in the child).
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "test_support.hpp"

namespace {

using tmf_test::by_value;
using tmf_test::run_in_child;

TEST(ChildProcess, ExitCodeOfTheBodyReachesTheParent) {
  EXPECT_EQ(run_in_child(by_value([] { return 0; })), 0);
  EXPECT_EQ(run_in_child(by_value([] { return 7; })), 7);
  EXPECT_EQ(run_in_child(by_value([] { return 255; })), 255);
}

TEST(ChildProcess, CapturedValuesArriveInTheChild) {
  std::uint64_t big = 0x0123456789abcdefULL;  // not const: clang need not capture a constant
  int small = -42;
  const double half = 0.5;
  struct pod {
    char text[8];
    std::uint32_t n;
  } record{"abcdefg", 99};
  const int rc = run_in_child(by_value([big, small, half, record] {
    if (big != 0x0123456789abcdefULL) return 1;
    if (small != -42) return 2;
    if (half != 0.5) return 3;
    if (std::string(record.text) != "abcdefg" || record.n != 99) return 4;
    return 0;
  }));
  EXPECT_EQ(rc, 0) << "a captured value differs in the child (1 uint64, 2 int, 3 double, 4 struct)";
}

TEST(ChildProcess, ChildPathCarriesAPathAndTheChildSeesTheParentsFiles) {
  tmf_test::scoped_path p;
  {
    std::ofstream out(p.path(), std::ios::binary);
    out << "from the parent";
  }
  const int rc = run_in_child(by_value([path = tmf_test::child_path(p.path())] {
    if (path.path() != tmf_test::test_path()) return 1;  // the child runs within the same test
    std::ifstream in(path.path(), std::ios::binary);
    std::string text;
    std::getline(in, text);
    if (text != "from the parent") return 2;
    std::ofstream(path.path(), std::ios::binary | std::ios::app) << "\nfrom the child";
    return 0;
  }));
  ASSERT_EQ(rc, 0) << "1: test_path() differs in the child, 2: the child did not read the parent's file";
  std::ifstream in(p.path(), std::ios::binary);
  std::string first, second;
  std::getline(in, first);
  std::getline(in, second);
  EXPECT_EQ(second, "from the child");
}

TEST(ChildProcess, AnEscapingExceptionGives100) {
  EXPECT_EQ(run_in_child(by_value([]() -> int { throw std::runtime_error("thrown in the child"); })), 100);
}

TEST(ChildProcess, ACrashGives139) {
  const int rc = run_in_child(by_value([] {
    std::fflush(nullptr);
#if defined(_WIN32)
    volatile int* null = nullptr;
    *null = 1;  // an access violation (the test main's unhandled-exception filter gives 139)
#else
    // The default action of SIGSEGV: a null store would be caught by UBSan / ASan first in
    // the sanitizer stages, which exit with 1 instead of dying of the signal.
    std::signal(SIGSEGV, SIG_DFL);
    std::raise(SIGSEGV);
#endif
    return 0;
  }));
  EXPECT_EQ(rc, 139) << "a crashing child must not look like a success";
}

TEST(ChildProcess, KillChildEndsAChildThatWouldRunForeverWith137) {
  const auto pid = tmf_test::spawn_child(by_value([] {
    for (;;) std::fflush(nullptr);
    return 0;
  }));
  tmf_test::kill_child(pid);
  EXPECT_EQ(tmf_test::wait_child(pid), 128 + 9);
}

TEST(ChildProcess, TryWaitChildTellsARunningChildFromAnEndedOne) {
  const tmf_test::handshake h(tmf_test::test_path());
  const auto pid = tmf_test::spawn_child(by_value([h] { return h.wait("g") ? 7 : 1; }));
  int code = -1;
  EXPECT_FALSE(tmf_test::try_wait_child(pid, code)) << "a child waiting for the parent was reported ended";
  h.signal("g");
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool ended = false;
  while (!(ended = tmf_test::try_wait_child(pid, code)) && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  h.clear();
  ASSERT_TRUE(ended) << "the child never ended";
  EXPECT_EQ(code, 7);
}

TEST(ChildProcess, KillChildLeavesAnEndedChildsExitCode) {
  const auto pid = tmf_test::spawn_child(by_value([] { return 5; }));
  // Ended, not yet reaped (a zombie on POSIX): kill_child must neither throw nor change its code.
#if defined(_WIN32)
  ASSERT_EQ(::WaitForSingleObject(tmf_test::detail::child_handle(pid), 60000), WAIT_OBJECT_0);
#else
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
#endif
  EXPECT_NO_THROW(tmf_test::kill_child(pid));
  EXPECT_EQ(tmf_test::wait_child(pid), 5);
}

TEST(ChildProcess, SeveralChildrenAtOnce) {
  std::vector<decltype(tmf_test::spawn_child(by_value([] { return 0; })))> pids;
  for (int i = 0; i < 4; ++i) pids.push_back(tmf_test::spawn_child(by_value([i] { return 10 + i; })));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(tmf_test::wait_child(pids[static_cast<std::size_t>(i)]), 10 + i);
}

}  // namespace
