// SPDX-License-Identifier: Apache-2.0 OR MIT
// The tmf command (tools/tmf.cpp), run as a program: each subcommand on a good file, and on
// empty, foreign, garbage, truncated and damaged ones, with its exit status and message;
// the inspecting subcommands leave both files byte-for-byte as they were.
#include <tmf/inspect.hpp>
#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#if !defined(_WIN32)
#include <sys/wait.h>
#endif

#include "test_support.hpp"

namespace {

using tmf_test::read_bytes;
using tmf_test::scoped_path;

struct command_root {
  std::uint64_t runs = 0;
  tmf::vector<tmf::string> items;
  std::array<unsigned char*, 16> blocks{};
};

struct result {
  int status = -1;
  std::string out, err;
};

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

class TmfCommand : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef TMF_COMMAND
    GTEST_SKIP() << "the tmf command is not built (TMF_BUILD_TOOLS=OFF)";
#endif
  }

  /// Runs `tmf <args>` (arguments without spaces or quotes).
  result tmf(const std::string& args) {
    result r;
#ifdef TMF_COMMAND
    const std::string out = m_out.path().string() + ".stdout", err = m_out.path().string() + ".stderr";
#if defined(_WIN32)
    // cmd.exe runs the line: the program by its Windows path (Wine: a path from the root is
    // on the current drive); std::system returns its exit code.
    const std::string exe = std::filesystem::absolute(TMF_COMMAND).string();
    const std::string cmd = exe + " " + args + " >" + out + " 2>" + err;
    r.status = std::system(cmd.c_str());
#else
    const std::string cmd = std::string(TMF_COMMAND) + " " + args + " >" + out + " 2>" + err;
    const int rc = std::system(cmd.c_str());
    r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
#endif
    r.out = slurp(out);
    r.err = slurp(err);
#if defined(_WIN32)
    std::erase(r.out, '\r');  // the command's output is in text mode: "\r\n" line ends
    std::erase(r.err, '\r');
#endif
    std::filesystem::remove(out);
    std::filesystem::remove(err);
#else
    (void)args;
#endif
    return r;
  }

  /// A storage with some strings, a few freed blocks, cleanly closed.
  void make_good(const std::filesystem::path& p) {
    tmf::storage<command_root> s(p);
    auto w = s.write();
    for (int i = 0; i < 200; ++i) w->items.emplace_back(std::string(50 + i, 'a' + i % 26));
    for (auto& b : w->blocks) b = w.get_allocator<unsigned char>().allocate(64 * 1024);
    for (std::size_t i = 0; i < w->blocks.size(); i += 2) {
      w.get_allocator<unsigned char>().deallocate(w->blocks[i], 64 * 1024);
      w->blocks[i] = nullptr;
    }
    ++w->runs;
    w.commit();
  }

  scoped_path m_out{"out"};
};

const char* const inspecting[] = {"info", "stats", "check", "map"};

std::string args_for(const std::string& cmd, const std::filesystem::path& file, const std::filesystem::path& other) {
  if (cmd == "map") return "map " + file.string() + " --out " + other.string() + ".svg";
  if (cmd == "copy") return "copy " + file.string() + " " + other.string();
  return cmd + " " + file.string();
}

TEST_F(TmfCommand, GoodFile) {
  scoped_path file, copy("copy");
  make_good(file);
  const auto data = read_bytes(file), log = read_bytes(file.log());

  result r = tmf("info " + file.path().string());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("format       version " + std::to_string(tmf::detail::format_version)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("durability   "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("command_root"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("transaction  2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("log          clean"), std::string::npos) << r.out;
  r = tmf("info " + file.path().string() + " --json");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("{\"file\": ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("\"txn\": 2,"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"state\": \"clean\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"root_fingerprint\": \"0x"), std::string::npos) << r.out;

  r = tmf("stats " + file.path().string());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("free blocks by size"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("size classes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" runs "), std::string::npos) << "the strings' size classes are not listed:\n" << r.out;
  r = tmf("stats --json " + file.path().string());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\"free_by_size\": [{\"min_bytes\": "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"size_classes\": [{\"block_size\": "), std::string::npos) << r.out;

  r = tmf("check " + file.path().string());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find(": ok (transaction 2"), std::string::npos) << r.out;

  r = tmf("map " + file.path().string() + " --out " + m_out.path().string() + ".svg");
  EXPECT_EQ(r.status, 0) << r.err;
  const std::string svg = slurp(m_out.path().string() + ".svg");
  EXPECT_EQ(svg.rfind("<svg ", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  std::filesystem::remove(m_out.path().string() + ".svg");

  r = tmf("copy " + file.path().string() + " " + copy.path().string());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_bytes(file), data) << "an inspecting subcommand wrote the data file";
  EXPECT_EQ(read_bytes(file.log()), log) << "an inspecting subcommand wrote the log";
  r = tmf("check " + copy.path().string());
  EXPECT_EQ(r.status, 0) << r.err;
  r = tmf("copy " + file.path().string() + " " + copy.path().string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("tmf copy: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("File exists"), std::string::npos) << r.err;

  r = tmf("compact " + file.path().string());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find(" -> "), std::string::npos) << r.out;
  r = tmf("check " + file.path().string());
  EXPECT_EQ(r.status, 0) << r.err;
  tmf::storage<command_root> s(file);
  s.check();
  EXPECT_EQ(s.read()->items.size(), 200u);
}

TEST_F(TmfCommand, RefusesBadFilesWithAMessageAndWritesNothing) {
  scoped_path good("good"), bad("bad"), other("other");
  make_good(good);
  const auto g = read_bytes(good);
  std::string garbage(3 * 4096, '\0');
  for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>((i * 2654435761u) >> 11);
  std::string damaged(g.begin(), g.end());
  damaged[offsetof(tmf::detail::file_header, txn)] ^= 0x01;  // without resealing: the checksum catches it
  struct kind {
    const char* name;
    std::string bytes;
    const char* message;
  };
  const std::vector<kind> kinds = {
      {"empty", "", "is empty"},
      {"foreign", "%PDF-1.7 not a storage at all\n", "is shorter than one page"},
      {"garbage", garbage, "not a tmf storage"},
      {"truncated", std::string(g.begin(), g.begin() + 2 * 4096), "is truncated"},
      {"header page only", std::string(g.begin(), g.begin() + 4096), "is truncated"},
      {"damaged", damaged, "header checksum mismatch"},
  };
  for (const auto& k : kinds) {
    for (const std::string cmd : {"info", "stats", "check", "map", "copy", "compact"}) {
      SCOPED_TRACE(std::string(k.name) + " file, tmf " + cmd);
      tmf_test::remove_storage(bad);
      write_file(bad, k.bytes);
      const result r = tmf(args_for(cmd, bad, other));
      EXPECT_EQ(r.status, 1) << r.out << r.err;
      EXPECT_EQ(r.err.rfind("tmf " + cmd + ": ", 0), 0u) << r.err;
      EXPECT_NE(r.err.find(k.message), std::string::npos) << r.err;
      EXPECT_EQ(slurp(bad), k.bytes) << "the data file changed";
      EXPECT_FALSE(std::filesystem::exists(bad.log())) << "a log was created";
      EXPECT_FALSE(std::filesystem::exists(other)) << "a copy was made of a bad file";
      EXPECT_FALSE(std::filesystem::exists(other.path().string() + ".svg")) << "a map was drawn of a bad file";
    }
  }
  // A missing file: the system's message.
  tmf_test::remove_storage(bad);
  for (const char* cmd : inspecting) {
    const result r = tmf(args_for(cmd, bad, other));
    EXPECT_EQ(r.status, 1) << cmd;
    EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(bad)) << cmd << " created the file";
  }
}

TEST_F(TmfCommand, ADamagedHeapIsNamed) {
  scoped_path file, other("other");
  make_good(file);
  std::vector<tmf::free_extent> extents;
  {
    tmf::untyped_storage u(file);
    extents = u.free_extents();
  }
  ASSERT_FALSE(extents.empty());
  auto bytes = read_bytes(file);
  for (std::size_t k = 0; k < 24; ++k) bytes[extents[0].offset + k] = static_cast<char>(0x11 * (k + 1));
  write_file(file, std::string(bytes.begin(), bytes.end()));
  const auto log = read_bytes(file.log());
  // The header is intact: info shows it; every subcommand that reads the heap names the damage.
  result r = tmf("info " + file.path().string());
  EXPECT_EQ(r.status, 0) << r.err;
  for (const std::string cmd : {"check", "stats", "map", "compact"}) {
    r = tmf(args_for(cmd, file, other));
    EXPECT_EQ(r.status, 1) << cmd << ": " << r.out;
    EXPECT_EQ(r.err.rfind("tmf " + cmd + ": ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find("heap: "), std::string::npos) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find("the storage is corrupted"), std::string::npos) << r.err;
    const auto now = read_bytes(file);
    EXPECT_TRUE(now == bytes) << cmd << " changed the data file";
  }
  EXPECT_EQ(read_bytes(file.log()), log);
}

TEST_F(TmfCommand, UsageErrors) {
  scoped_path file;
  make_good(file);
  const auto data = read_bytes(file);
  EXPECT_EQ(tmf("").status, 2);
  result r = tmf("frobnicate " + file.path().string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("usage: tmf"), std::string::npos) << r.err;
  EXPECT_EQ(tmf("info").status, 2);
  EXPECT_EQ(tmf("copy " + file.path().string()).status, 2);
  EXPECT_EQ(tmf("check --json " + file.path().string()).status, 2);
  EXPECT_EQ(tmf("map " + file.path().string()).status, 2);
  r = tmf("map " + file.path().string() + " --out " + file.path().string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--out names the storage"), std::string::npos) << r.err;
  r = tmf("map " + file.path().string() + " --out " + file.log().string());
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(read_bytes(file), data);
  r = tmf("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("tmf compact FILE"), std::string::npos);
}

}  // namespace
