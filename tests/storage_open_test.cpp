// SPDX-License-Identifier: Apache-2.0 OR MIT
// Public-contract tests of opening a tmf::storage: creation and reopening (in other processes
// too), options, read-only opens, the refusal of bad input (leaving the file byte-for-byte
// intact), and the files and descriptors a storage uses. Transactions: storage_txn_test.cpp.

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#if defined(_WIN32)
#include <windows.h>
#else
#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#endif

#include "storage_test_support.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;

namespace {

using namespace tmf_test::storage_tests;  // NOLINT(google-build-using-namespace)
using tmf_test::run_in_child;
using tmf_test::scoped_path;

// Same size and alignment as basic_root, another type name.
struct other_root {
  std::uint64_t value = 0;
  tmf::vector<std::uint64_t> items;
  void* block = nullptr;
};
static_assert(sizeof(other_root) == sizeof(basic_root) && alignof(other_root) == alignof(basic_root));

// Counts its constructions in this process, and records in the file that it was constructed.
inline std::atomic<int> g_counted_constructions{0};
struct counted_root {
  counted_root() : constructed_marker(0xC0FFEE), constructions_seen(++g_counted_constructions) {}
  std::uint64_t constructed_marker;
  std::uint64_t constructions_seen;
  std::uint64_t value = 0;
};

/// Returns 0 if `f()` throws a tmf::error with `expected`, else `fail_code` (for children).
template <class F, class Code>
int child_expect_code(F&& f, Code expected, int fail_code) {
  try {
    f();
  } catch (const tmf::error& e) {
    if (e.code() == expected) return 0;
    std::fprintf(stderr, "child: unexpected tmf::error: %s\n", e.what());
    return fail_code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: unexpected exception: %s\n", e.what());
    return fail_code;
  }
  std::fprintf(stderr, "child: no exception (check %d)\n", fail_code);
  return fail_code;
}

void write_file(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << p;
}

bool same_bytes(const std::vector<char>& a, const std::vector<char>& b) { return a == b; }

/// Opens `p` as storage<Root> with `opt`, expects the refusal `code`, and that the data file
/// is byte-for-byte what it was.
template <class Root = basic_root, class Code>
void expect_open_refused(const fs::path& p, const tmf::options& opt, Code code, const char* what) {
  SCOPED_TRACE(what);
  const std::vector<char> before = tmf_test::read_bytes(p);
  EXPECT_TRUE(throws_code([&] { tmf::storage<Root> s(p, opt); }, code)) << what;
  const std::vector<char> after = tmf_test::read_bytes(p);
  EXPECT_TRUE(same_bytes(before, after)) << what << ": the refused open modified " << p << " (" << before.size()
                                         << " bytes before, " << after.size() << " after)";
}

#if UINTPTR_MAX > 0xffffffffu
constexpr std::uintptr_t chosen_address = 0x6a0000000000;
constexpr std::uintptr_t other_address = 0x6b0000000000;
#else
constexpr std::uintptr_t chosen_address = 0x70000000;
constexpr std::uintptr_t other_address = 0x90000000;
#endif

// ---------------------------------------------------------------------------------------------
// Creation and reopening.

TEST(StorageCreate, NewFileHasDefaultRootAndReopensInAnotherProcess) {
  scoped_path p;
  void* address = nullptr;
  {
    tmf::storage<basic_root> s(p.path());
    address = s.address();
    ASSERT_NE(address, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(address) % page, 0u) << "the storage address is not page-aligned";
    ASSERT_TRUE(fs::exists(p.path())) << "the data file was not created";
    EXPECT_TRUE(fs::exists(p.log())) << "the log file was not created";
    {
      auto r = s.read();
      EXPECT_EQ(r->value, 0u) << "the new Root is not value-initialised";
      EXPECT_TRUE(r->items.empty());
      EXPECT_EQ(r->block, nullptr);
    }
    auto w = s.write();
    w->value = 42;
    for (std::uint64_t i = 0; i < 100; ++i) w->items.push_back(i * i);
    w.commit();
  }
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path()), address] {
    tmf::storage<basic_root> s(p.path(), {.mode = tmf::open_mode::open_only});
    if (s.address() != address) return 1;
    auto r = s.read();
    if (r->value != 42) return 2;
    if (r->items.size() != 100) return 3;
    for (std::uint64_t i = 0; i < 100; ++i)
      if (r->items[i] != i * i) return 4;
    s.check();
    return 0;
  }));
  EXPECT_EQ(rc, 0) << "the child could not read the committed data (1 address, 2 value, 3-4 items, 100 exception)";
}

TEST(StorageCreate, CreatedInAnotherProcessReopensHere) {
  scoped_path p;
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    tmf::storage<basic_root> s(p.path(), {.mode = tmf::open_mode::create_only});
    auto w = s.write();
    w->value = 5;
    w->items.assign(10, 9);
    w.commit();
    return 0;
  }));
  ASSERT_EQ(rc, 0) << "the child could not create the storage";
  tmf::storage<basic_root> s(p.path(), {.mode = tmf::open_mode::open_only});
  auto r = s.read();
  EXPECT_EQ(r->value, 5u);
  EXPECT_EQ(r->items.size(), 10u);
  EXPECT_NO_THROW(s.check());
}

TEST(StorageCreate, RootIsDefaultConstructedExactlyOnce) {
  scoped_path p;
  const int before = g_counted_constructions.load();
  {
    tmf::storage<counted_root> s(p.path());
    EXPECT_EQ(g_counted_constructions.load(), before + 1) << "creating a storage must construct Root once";
    auto w = s.write();
    EXPECT_EQ(w->constructed_marker, 0xC0FFEEu);
    w->value = 77;
    w.commit();
  }
  {
    tmf::storage<counted_root> s(p.path());
    EXPECT_EQ(g_counted_constructions.load(), before + 1) << "reopening must not construct Root again";
    auto r = s.read();
    EXPECT_EQ(r->value, 77u) << "Root was reset on reopen";
    EXPECT_EQ(r->constructions_seen, static_cast<std::uint64_t>(before + 1));
  }
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    const int in_child = g_counted_constructions.load();
    tmf::storage<counted_root> s(p.path());
    if (g_counted_constructions.load() != in_child) return 1;
    auto r = s.read();
    return r->value == 77 && r->constructed_marker == 0xC0FFEE ? 0 : 2;
  }));
  EXPECT_EQ(rc, 0) << "reopening in another process constructed Root again (1) or lost its value (2)";
}

TEST(StorageCreate, OpenModesOnExistingAndMissingFiles) {
  scoped_path p;
  make_storage(p.path(), 3);
  {
    tmf::storage<basic_root> s(p.path(), {.mode = tmf::open_mode::open_only});
    EXPECT_EQ(s.read()->value, 3u);
  }
  {
    tmf::storage<basic_root> s(p.path(), {.mode = tmf::open_mode::open_or_create});
    EXPECT_EQ(s.read()->value, 3u) << "open_or_create replaced an existing file";
  }
  scoped_path q(tmf_test::test_path("fresh"));
  {
    tmf::storage<basic_root> s(q.path(), {.mode = tmf::open_mode::create_only});
    EXPECT_EQ(s.read()->value, 0u);
  }
  EXPECT_TRUE(fs::exists(q.path()));
}

// ---------------------------------------------------------------------------------------------
// Options.

TEST(StorageOptions, MaxSizeIsEnforcedAndCanBeRaisedOnReopen) {
  scoped_path p;
  constexpr std::size_t small = 8u << 20, big = 16u << 20;
  {
    tmf::storage<basic_root> s(p.path(), {.max_size = small});
    auto w = s.write();
    auto a = w.get_allocator<char>();
    EXPECT_THROW((void)a.allocate(big), std::bad_alloc) << "an allocation beyond max_size";
    // The writer stays usable.
    w->value = 1;
    char* q = a.allocate(1000);
    EXPECT_NE(q, nullptr);
    w->block = q;
    w.commit();
    EXPECT_NO_THROW(s.check());
  }
  {
    tmf::storage<basic_root> s(p.path(), {.max_size = std::size_t{64} << 20});
    auto w = s.write();
    char* q = nullptr;
    EXPECT_NO_THROW(q = w.get_allocator<char>().allocate(big)) << "max_size was not raised on reopen";
    w->block = q;
    w->value = 2;
    w.commit();
  }
  {
    // A smaller max_size never shrinks what the file records.
    tmf::storage<basic_root> s(p.path(), {.max_size = small});
    EXPECT_EQ(s.read()->value, 2u);
    auto w = s.write();
    EXPECT_NO_THROW((void)w.get_allocator<char>().allocate(big)) << "reopening with a smaller max_size lowered it";
  }
}

TEST(StorageOptions, ChosenAddressIsHonouredAndRecorded) {
  scoped_path p;
  void* const chosen = reinterpret_cast<void*>(chosen_address);
  {
    tmf::storage<basic_root> s(p.path(), {.address = chosen, .max_size = std::size_t{64} << 20});
    EXPECT_EQ(s.address(), chosen) << "options.address was not honoured for a new file";
    auto w = s.write();
    w->items.push_back(1);
    w.commit();
  }
  {
    tmf::storage<basic_root> s(p.path());
    EXPECT_EQ(s.address(), chosen) << "reopening with address nullptr did not use the recorded address";
    EXPECT_EQ(s.read()->items.at(0), 1u);
  }
  {
    tmf::storage<basic_root> s(p.path(), {.address = chosen});
    EXPECT_EQ(s.address(), chosen);
  }
  expect_open_refused(p.path(), {.address = reinterpret_cast<void*>(other_address)}, tmf::errc::address_unavailable,
                      "reopen with another address");
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path()), chosen] {
    tmf::storage<basic_root> s(p.path());
    return s.address() == chosen && s.read()->items.size() == 1 ? 0 : 1;
  }));
  EXPECT_EQ(rc, 0) << "another process did not map the file at its recorded address";
}

TEST(StorageOptions, NoSyncDurabilityWorks) {
  scoped_path p;
  {
    tmf::storage<basic_root> s(p.path(), {.sync = tmf::durability::no_sync});
    auto w = s.write();
    w->value = 17;
    w->items.assign(1000, 3);
    w.commit();
    w->value = 18;
    w.commit();
  }
  const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path())] {
    tmf::storage<basic_root> s(p.path(), {.sync = tmf::durability::no_sync});
    auto r = s.read();
    return r->value == 18 && r->items.size() == 1000 ? 0 : 1;
  }));
  EXPECT_EQ(rc, 0);
  tmf::storage<basic_root> s(p.path());  // durability is not a property of the file
  EXPECT_EQ(s.read()->value, 18u);
}

TEST(StorageOptions, UserMagicIsCheckedOnOpen) {
  scoped_path p;
  make_storage(p.path(), 7, {.magic = 0x1234});
  {
    tmf::storage<basic_root> s(p.path(), {.magic = 0x1234});
    EXPECT_EQ(s.read()->value, 7u);
  }
  expect_open_refused(p.path(), {.magic = 0x1235}, tmf::errc::incompatible_format, "another magic");
  expect_open_refused(p.path(), {}, tmf::errc::incompatible_format, "magic 0 for a file with a magic");
}

TEST(StorageReadOnly, ReadsWorkWritesAreRefusedFileUntouched) {
  scoped_path p;
  make_storage(p.path(), 21);
  const std::vector<char> before = tmf_test::read_bytes(p.path());
  {
    tmf::storage<basic_root> s(p.path(), {.mode = tmf::open_mode::read_only});
    {
      auto r = s.read();
      EXPECT_EQ(r->value, 21u);
      EXPECT_EQ(r->items.at(0), 210u);
    }
    auto r = s.try_read();
    EXPECT_TRUE(r.has_value());
    EXPECT_TRUE(throws_code([&] { (void)s.write(); }, tmf::errc::read_only));
    EXPECT_TRUE(throws_code([&] { (void)s.try_write(); }, tmf::errc::read_only));
    r.reset();
    EXPECT_NO_THROW(s.check());
    EXPECT_EQ(s.stats().arena_bytes, s.size());
  }
  EXPECT_TRUE(same_bytes(before, tmf_test::read_bytes(p.path()))) << "a read_only storage modified the data file";
}

// ---------------------------------------------------------------------------------------------
// Bad input: every refusal names the right errc and leaves the data file byte-for-byte untouched.

TEST(StorageBadInput, GarbageFile) {
  scoped_path p;
  std::vector<char> bytes(3 * page);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 2654435761u) >> 13);
  write_file(p.path(), bytes);
  expect_open_refused(p.path(), {}, tmf::errc::not_a_storage, "garbage, open_or_create");
  expect_open_refused(p.path(), {.mode = tmf::open_mode::open_only}, tmf::errc::not_a_storage, "garbage, open_only");
  expect_open_refused(p.path(), {.mode = tmf::open_mode::read_only}, tmf::errc::not_a_storage, "garbage, read_only");
}

TEST(StorageBadInput, EmptyFile) {
  scoped_path p;
  write_file(p.path(), {});
  expect_open_refused(p.path(), {}, tmf::errc::not_a_storage, "empty, open_or_create");
  expect_open_refused(p.path(), {.mode = tmf::open_mode::read_only}, tmf::errc::not_a_storage, "empty, read_only");
  EXPECT_EQ(fs::file_size(p.path()), 0u);
}

TEST(StorageBadInput, FileShorterThanAPage) {
  scoped_path p;
  make_storage(p.path());
  std::vector<char> bytes = tmf_test::read_bytes(p.path());
  bytes.resize(page / 2);  // the start of a valid header page
  tmf_test::remove_storage(p.path());
  write_file(p.path(), bytes);
  expect_open_refused(p.path(), {}, tmf::errc::not_a_storage, "half a header page");
  bytes.resize(100);
  write_file(p.path(), bytes);
  expect_open_refused(p.path(), {}, tmf::errc::not_a_storage, "100 bytes of a header");
}

TEST(StorageBadInput, TruncatedFile) {
  scoped_path p;
  make_storage(p.path());
  ASSERT_GT(fs::file_size(p.path()), 2 * page) << "the test needs an arena of more than two pages";
  fs::resize_file(p.path(), 2 * page);
  expect_open_refused(p.path(), {}, tmf::errc::corrupted, "truncated, open_or_create");
  expect_open_refused(p.path(), {.mode = tmf::open_mode::read_only}, tmf::errc::corrupted, "truncated, read_only");
}

TEST(StorageBadInput, FlippedByteInTheHeader) {
  scoped_path p;
  make_storage(p.path());
  const std::vector<char> good = tmf_test::read_bytes(p.path());
  // Bytes inside the header, past its fixed leading identity words (magic, version...).
  for (std::size_t offset : {std::size_t{100}, std::size_t{300}}) {
    SCOPED_TRACE("offset " + std::to_string(offset));
    std::vector<char> bad = good;
    bad[offset] = static_cast<char>(bad[offset] ^ 0x10);
    write_file(p.path(), bad);
    expect_open_refused(p.path(), {}, tmf::errc::corrupted, "flipped header byte");
    expect_open_refused(p.path(), {.mode = tmf::open_mode::read_only}, tmf::errc::corrupted,
                        "flipped header byte, read_only");
  }
  std::vector<char> bad = good;
  bad[0] = static_cast<char>(bad[0] ^ 0x01);
  write_file(p.path(), bad);
  expect_open_refused(p.path(), {}, tmf::errc::not_a_storage, "flipped byte in the magic");
  write_file(p.path(), good);
  tmf::storage<basic_root> s(p.path());
  EXPECT_EQ(s.read()->value, 7u) << "the restored file does not open";
}

TEST(StorageBadInput, WrongRootType) {
  scoped_path p;
  make_storage(p.path());
  expect_open_refused<other_root>(p.path(), {}, tmf::errc::root_mismatch, "same size, other type name");
  expect_open_refused<counted_root>(p.path(), {}, tmf::errc::root_mismatch, "other size");
  expect_open_refused<other_root>(p.path(), {.mode = tmf::open_mode::read_only}, tmf::errc::root_mismatch,
                                  "other type, read_only");
}

TEST(StorageBadInput, WrongUserMagic) {
  scoped_path p;
  make_storage(p.path());
  expect_open_refused(p.path(), {.magic = 1}, tmf::errc::incompatible_format, "magic 1 for a file with magic 0");
}

TEST(StorageBadInput, RecordedAddressOccupied) {
  scoped_path p;
  void* const address = make_storage(p.path());
  const std::vector<char> before = tmf_test::read_bytes(p.path());
  for (std::size_t offset : {std::size_t{0}, std::size_t{1} << 20}) {
    SCOPED_TRACE("mapping at storage address + " + std::to_string(offset));
    const int rc = run_in_child(tmf_test::by_value([p = tmf_test::child_path(p.path()), address, offset] {
      void* at = static_cast<char*>(address) + offset;
#if defined(_WIN32)
      void* q = ::VirtualAlloc(at, page, MEM_RESERVE, PAGE_READONLY);
#else
      void* q = ::mmap(at, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
#endif
      if (q != at) return 50;
      return child_expect_code([&] { tmf::storage<basic_root> s(p.path()); }, tmf::errc::address_unavailable, 1);
    }));
    EXPECT_EQ(rc, 0) << "opening a storage whose address range is occupied (50: mmap failed)";
    EXPECT_TRUE(same_bytes(before, tmf_test::read_bytes(p.path()))) << "the refused open modified the file";
  }
}

TEST(StorageBadInput, SameFileTwiceInOneProcess) {
  scoped_path p;
  tmf::storage<basic_root> s(p.path());
  {
    auto w = s.write();
    w->value = 3;
    w.commit();
  }
  expect_open_refused(p.path(), {}, tmf::errc::already_open, "the same path");
  expect_open_refused(p.path(), {.mode = tmf::open_mode::read_only}, tmf::errc::already_open, "the same path, read_only");
  scoped_path link(tmf_test::test_path("link"));
  fs::create_hard_link(p.path(), link.path());
  expect_open_refused(link.path(), {}, tmf::errc::already_open, "a hard link to the same file");
  std::error_code ec;
  fs::remove(link.path(), ec);
  EXPECT_EQ(s.read()->value, 3u) << "the first storage was disturbed";
}

TEST(StorageBadInput, CreateOnlyOnExistingFile) {
  scoped_path p;
  make_storage(p.path());
  expect_open_refused(p.path(), {.mode = tmf::open_mode::create_only}, std::errc::file_exists, "create_only");
}

TEST(StorageBadInput, MissingFileWithOpenOnlyOrReadOnly) {
  scoped_path p;
  EXPECT_TRUE(throws_code([&] { tmf::storage<basic_root> s(p.path(), {.mode = tmf::open_mode::open_only}); },
                          std::errc::no_such_file_or_directory));
  EXPECT_FALSE(fs::exists(p.path())) << "open_only created the file";
  EXPECT_TRUE(throws_code([&] { tmf::storage<basic_root> s(p.path(), {.mode = tmf::open_mode::read_only}); },
                          std::errc::no_such_file_or_directory));
  EXPECT_FALSE(fs::exists(p.path())) << "read_only created the file";
}

#if !defined(_WIN32)
// Drops to uid/gid 65534 (in a child). False if that failed.
bool drop_privileges() {
  if (::setgroups(0, nullptr) != 0) return false;
  if (::setgid(65534) != 0) return false;
  if (::setuid(65534) != 0) return false;
  return ::geteuid() == 65534;
}
#endif

TEST(StorageBadInput, NoWritePermission) {
#if defined(_WIN32)
  GTEST_SKIP() << "POSIX permissions and setuid: Windows has ACLs (README, Windows)";
#else
  scoped_path p;
  make_storage(p.path(), 31);
  fs::permissions(p.path(), fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  const std::vector<char> before = tmf_test::read_bytes(p.path());
  const int reach = run_in_child([&] {
    if (!drop_privileges()) return 2;
    return ::access(p.path().c_str(), R_OK) == 0 ? 0 : 1;
  });
  if (reach == 1) GTEST_SKIP() << p.path() << " is not readable by uid 65534 (its directory is not reachable)";
  ASSERT_EQ(reach, 0) << "cannot drop privileges to uid 65534";
  const int rc = run_in_child([&] {
    if (!drop_privileges()) return 2;
    return child_expect_code([&] { tmf::storage<basic_root> s(p.path()); }, std::errc::permission_denied, 1);
  });
  EXPECT_EQ(rc, 0) << "opening writable a file without write permission must give permission_denied";
  EXPECT_TRUE(same_bytes(before, tmf_test::read_bytes(p.path()))) << "the refused open modified the file";
  const int rc2 = run_in_child([&] {
    if (!drop_privileges()) return 2;
    tmf::storage<basic_root> s(p.path(), {.mode = tmf::open_mode::read_only});
    return s.read()->value == 31 ? 0 : 3;
  });
  EXPECT_EQ(rc2, 0) << "the same file opened read_only by the same user must work";
  EXPECT_TRUE(same_bytes(before, tmf_test::read_bytes(p.path())));
#endif
}

// ---------------------------------------------------------------------------------------------
// Files and descriptors.

TEST(StorageFiles, CreatedFileModeFollowsTheUmask) {
#if defined(_WIN32)
  GTEST_SKIP() << "umask and file modes are POSIX";
#else
  for (mode_t mask : {mode_t{022}, mode_t{077}}) {
    SCOPED_TRACE("umask " + std::to_string(mask));
    scoped_path p(tmf_test::test_path("umask" + std::to_string(mask)));
    const mode_t expected = 0644 & ~mask;
    const int rc = run_in_child([&] {
      ::umask(mask);
      tmf::storage<basic_root> s(p.path());
      struct stat st {};
      if (::stat(p.path().c_str(), &st) != 0) return 10;
      if ((st.st_mode & 07777) != expected) {
        std::fprintf(stderr, "data file mode %o, expected %o\n", st.st_mode & 07777, expected);
        return 1;
      }
      if (::stat(p.log().c_str(), &st) != 0) return 11;
      if ((st.st_mode & 07777) != expected) {
        std::fprintf(stderr, "log file mode %o, expected %o\n", st.st_mode & 07777, expected);
        return 2;
      }
      return 0;
    });
    EXPECT_EQ(rc, 0) << "file modes (1: data file, 2: log)";
  }
#endif
}

#if !defined(_WIN32)
/// The descriptors of this process that point to one of `files`: (fd, target).
std::vector<std::pair<int, std::string>> descriptors_of(const std::vector<fs::path>& files) {
  std::vector<std::pair<int, std::string>> out;
  std::vector<std::string> wanted;
  for (const auto& f : files) wanted.push_back(fs::weakly_canonical(f).string());
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(entry.path(), ec);
    if (ec) continue;
    for (const auto& w : wanted)
      if (target.string() == w) out.emplace_back(std::stoi(entry.path().filename().string()), target.string());
  }
  return out;
}
#endif

TEST(StorageFiles, DescriptorsAreCloseOnExecAndClosed) {
#if defined(_WIN32)
  GTEST_SKIP() << "/proc/self/fd and FD_CLOEXEC are Linux (tmf opens its handles non-inheritable)";
#else
  scoped_path p;
  make_storage(p.path());
  {
    tmf::storage<basic_root> s(p.path());
    auto w = s.write();
    w->value = 2;
    w.commit();
    const auto fds = descriptors_of({p.path(), p.log()});
    bool data = false, log = false;
    for (const auto& [fd, target] : fds) {
      const int flags = ::fcntl(fd, F_GETFD);
      EXPECT_NE(flags, -1);
      EXPECT_TRUE(flags & FD_CLOEXEC) << "descriptor " << fd << " of " << target << " is not close-on-exec";
      data = data || target == fs::weakly_canonical(p.path()).string();
      log = log || target == fs::weakly_canonical(p.log()).string();
    }
    EXPECT_TRUE(data) << "no descriptor of the data file found in /proc/self/fd";
    EXPECT_TRUE(log) << "no descriptor of the log found in /proc/self/fd";
  }
  EXPECT_TRUE(descriptors_of({p.path(), p.log()}).empty()) << "closing the storage left descriptors open";
#endif
}

}  // namespace
