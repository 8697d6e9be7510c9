// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Helpers shared by tmf's benchmarks: where their files go, and removing them.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include <unistd.h>

#include <tmf/options.hpp>

namespace tmf_bench {

/// The directory for benchmark files: $TMF_BENCH_DIR, else /tmp.
/// `opt` with options::kept_pages from TMF_BENCH_KEPT_PAGES if set (0: off), to compare the
/// kept pages with today's drop-everything commit in one binary.
inline tmf::options with_kept_env(tmf::options opt) {
  if (const char* v = std::getenv("TMF_BENCH_KEPT_PAGES")) opt.kept_pages = static_cast<std::size_t>(std::strtoull(v, nullptr, 10));
  return opt;
}

inline std::filesystem::path bench_dir() {
  const char* d = std::getenv("TMF_BENCH_DIR");
  return (d && *d) ? std::filesystem::path(d) : std::filesystem::path("/tmp");
}

/// Removes `p` and everything tmf or the peers put beside it (`p-log`, LMDB's `p-lock`).
inline void remove_files(const std::filesystem::path& p) {
  std::error_code ec;
  std::filesystem::remove_all(p, ec);
  std::filesystem::remove(p.string() + "-log", ec);
  std::filesystem::remove(p.string() + "-lock", ec);
}

/// A file path unique to this process and `tag`, removed (with its companions) before use and
/// when this object is destroyed.
class scoped_file {
 public:
  explicit scoped_file(const std::string& tag)
      : m_path(bench_dir() / ("tmf-bench-" + std::to_string(::getpid()) + "-" + tag)) {
    remove_files(m_path);
  }
  ~scoped_file() { remove_files(m_path); }
  scoped_file(const scoped_file&) = delete;
  scoped_file& operator=(const scoped_file&) = delete;

  const std::filesystem::path& path() const noexcept { return m_path; }
  std::string str() const { return m_path.string(); }
  const char* c_str() const noexcept { return m_path.c_str(); }

 private:
  std::filesystem::path m_path;
};

}  // namespace tmf_bench

#if defined(TMF_HAVE_LMDB)
#include <lmdb.h>

#include <stdexcept>

namespace tmf_bench {

/// Throws on an LMDB error, naming the call.
inline void mdb_check(int rc, const char* what) {
  if (rc != MDB_SUCCESS) throw std::runtime_error(std::string(what) + ": " + mdb_strerror(rc));
}

/// An LMDB environment in one file (MDB_NOSUBDIR) with its unnamed database.
class lmdb_env {
 public:
  lmdb_env(const std::string& path, unsigned flags, std::size_t map_size = std::size_t{1} << 30) {
    mdb_check(mdb_env_create(&env), "mdb_env_create");
    mdb_check(mdb_env_set_mapsize(env, map_size), "mdb_env_set_mapsize");
    mdb_check(mdb_env_open(env, path.c_str(), flags | MDB_NOSUBDIR, 0644), "mdb_env_open");
    MDB_txn* txn;
    mdb_check(mdb_txn_begin(env, nullptr, 0, &txn), "mdb_txn_begin");
    mdb_check(mdb_dbi_open(txn, nullptr, MDB_INTEGERKEY, &dbi), "mdb_dbi_open");
    mdb_check(mdb_txn_commit(txn), "mdb_txn_commit");
  }
  ~lmdb_env() { mdb_env_close(env); }
  lmdb_env(const lmdb_env&) = delete;
  lmdb_env& operator=(const lmdb_env&) = delete;

  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;
};

}  // namespace tmf_bench
#endif
