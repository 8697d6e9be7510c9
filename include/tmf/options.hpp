// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// How a storage is opened (`tmf::options`) and what it reports (`tmf::storage_stats`).
#ifndef TMF_OPTIONS_HPP
#define TMF_OPTIONS_HPP

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tmf {

/// What the storage constructor may do with the file.
enum class open_mode {
  open_or_create,  ///< open the file, creating it if it does not exist
  create_only,     ///< create a new file; fail with std::errc::file_exists if it exists
  open_only,       ///< open an existing file; fail with std::errc::no_such_file_or_directory
  read_only,       ///< open an existing file for reading; write() throws errc::read_only
};

/// What a returned commit() survives.
enum class durability {
  full,     ///< power loss: the log is fdatasync'ed once per commit
  no_sync,  ///< a process crash only: nothing is ever fsync'ed; a power cut may lose or corrupt recent commits
};

/// Options of `tmf::storage`. The defaults suit most programs.
struct options {
  open_mode mode = open_mode::open_or_create;
  /// Fixed mapping address. nullptr: the one recorded in the file, or a library default
  /// zone for a new file. A file can only ever be mapped at the address it was created at.
  void* address = nullptr;
  /// Address range reserved (64 GiB on 64-bit, 1 GiB on 32-bit); the file grows on demand
  /// up to it. May be raised on reopen; never lowered below what the file records.
  std::size_t max_size = sizeof(void*) == 8 ? (std::size_t{64} << 30) : (std::size_t{1} << 30);
  durability sync = durability::full;
  /// The application's own schema tag, stored at creation and checked on open.
  std::uint64_t magic = 0;
  /// (tmf extension) Log bytes after which a commit also checkpoints: syncs the data file
  /// and restarts the log. Larger: fewer data-file syncs, longer recovery and bigger log.
  std::size_t checkpoint_bytes = std::size_t{64} << 20;
  /// (tmf extension) Giving freed space back to the file system. A freed extent of at
  /// least 64 KiB has its whole pages (past its first, which holds the heap's bookkeeping)
  /// punched out of the data file once the freeing commit is durable in the data file
  /// itself: at the next checkpoint, or right after the commit that brings the bytes
  /// waiting to be punched to `give_back_bytes` (that commit then checkpoints: one more
  /// data-file sync). 0: never punch (the pages stay allocated until storage::compact).
  std::size_t give_back_bytes = std::size_t{1} << 20;
  /// (tmf extension) A commit that leaves a free block of more than this many bytes at the
  /// end of the arena cuts the arena back (to a 64 KiB boundary), checkpoints and truncates
  /// the data file. 0: never truncate (storage::compact still does).
  std::size_t truncate_bytes = std::size_t{64} << 20;
  /// (tmf extension) Pages of recent commits whose private copies this process keeps
  /// (they equal the file after the commit) instead of dropping them, so that their next
  /// write costs a protection fault rather than a copy-on-write fault and a drop: at most
  /// this many (4 KiB of memory each: 32 MiB by default), pages written again staying
  /// longest (a CLOCK ring; a commit's cost does not grow with this bound). They
  /// are dropped as soon as the file changes under another process's commit or compaction
  /// (checked by every transaction, without a system call). Only with the kernel tracker
  /// (`storage_stats::tracker` "userfaultfd"). 0: every private copy is dropped at commit.
  std::size_t kept_pages = 8192;
};

/// The counters of one size class of the heap's small-object runs.
struct size_class_stats {
  std::size_t block_size;  ///< bytes per block (requests up to it, and above the previous class)
  std::size_t runs;        ///< runs of this class (each 16 KiB of the arena)
  std::size_t blocks;      ///< blocks in use
  std::size_t bytes;       ///< blocks * block_size
};

/// A snapshot of a storage's sizes and activity.
struct storage_stats {
  std::size_t file_bytes;          ///< size of the data file
  std::size_t arena_bytes;         ///< bytes of the file in use (header page included)
  std::size_t allocated_bytes;     ///< bytes handed out by the heap (each block as its size class, or rounded to the quantum)
  std::size_t free_bytes;          ///< bytes in free blocks
  std::size_t free_blocks;         ///< number of free blocks
  std::size_t largest_free_block;  ///< bytes in the largest free block
  std::uint64_t commits;           ///< commits since this storage object was opened
  std::uint64_t rollbacks;         ///< rollbacks (explicit, by a writer's destructor, or by a failed commit)
  std::uint64_t pages_logged;      ///< pages written to the log by those commits
  /// How this process tracks the writer's stores: "userfaultfd" (the kernel's asynchronous
  /// write-protect, Linux >= 6.7) or "mprotect" (page protection and a fault per page; forced
  /// with the environment variable TMF_TRACKER=fallback).
  const char* tracker;
  std::uint64_t last_commit_pages;  ///< pages the last commit of this object wrote, logged or direct (header page included)
  /// Bytes held by small-object runs but not handed out (run headers, free slots):
  /// allocated_bytes + free_bytes + spare_bytes + the header page == arena_bytes.
  std::size_t spare_bytes;
  std::vector<size_class_stats> size_classes;  ///< every size class, smallest first
  std::size_t disk_bytes = 0;  ///< disk space the data file occupies (its allocated blocks)
  /// Bytes this storage object punched out of the data file or cut off its end
  /// (options::give_back_bytes, options::truncate_bytes); holes are counted when punched.
  std::uint64_t given_back_bytes = 0;
  /// Bytes of log records those commits wrote: only the changed bytes of each page are
  /// logged, with 24 bytes per changed range and 96 per record.
  std::uint64_t log_bytes = 0;
  /// Pages whose private copies are kept between transactions (options::kept_pages; an
  /// upper bound: some may have been dropped by a rollback since).
  std::size_t kept_pages = 0;
  /// Pages those commits wrote straight into the data file instead of logging them
  /// (durability::no_sync only): pages that were free when the transaction began (fresh
  /// space at the arena's top), written before the commit's record. pages_logged does not
  /// count them.
  std::uint64_t pages_direct = 0;
};

}  // namespace tmf

#endif  // TMF_OPTIONS_HPP
