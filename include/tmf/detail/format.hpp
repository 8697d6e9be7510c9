// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// The on-disk header of a data file (page 0) and its validation.
///
/// Page 0 starts with `file_header`, smaller than one 512-byte sector so that a torn page
/// write leaves it either wholly old or wholly new. The header is an ordinary part of the
/// mapped arena: it changes inside write transactions and is committed through the log like
/// any other page, so its checksum is recomputed at every commit. The heap's state (tree
/// roots and counters) lives inside it.
#ifndef TMF_DETAIL_FORMAT_HPP
#define TMF_DETAIL_FORMAT_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "../error.hpp"
#include "checksum.hpp"
#include "config.hpp"

namespace tmf::detail {

inline constexpr char data_magic[8] = {'t', 'm', 'f', '-', 'd', 'a', 't', 'a'};
/// Bumped on any change of the file or log layout; a mismatch is errc::incompatible_format.
inline constexpr std::uint32_t format_version = 7;  // 2: log generations; 3: structural Root fingerprint;
                                                    // 4: size-class runs in the heap;
                                                    // 5: free blocks record holes punched in the file;
                                                    //    btree_map nodes with integer-like keys hold key copies
                                                    // 6: blocks of 1 KiB to 64 KiB in size-class runs
                                                    // 7: log records of changed byte ranges
inline constexpr std::uint32_t byte_order_mark = 0x01020304;
inline constexpr std::size_t root_name_capacity = 128;
inline constexpr std::size_t heap_state_capacity = 192;

/// What identifies a Root type across processes and builds (made by fingerprint_of<Root>()
/// in schema.hpp): size, alignment and the structural fingerprint `schema`, a hash of Root's
/// name and of the layout of every type it reaches.
struct root_fingerprint {
  std::uint64_t size = 0;
  std::uint64_t align = 0;
  std::uint64_t schema = 0;
  std::string name;    ///< demangled, for messages (the header keeps its first 127 bytes)
  std::string layout;  ///< the layout `schema` hashes, for messages
  /// The untyped open: take the identity (Root and user magic) of the header as recovery
  /// leaves it, whatever it is. The header on disk before recovery may differ from it when the
  /// log holds a committed header page.
  bool adopt = false;
};

struct file_header {
  // Identity: written at creation, never changed.
  char magic[8];
  std::uint32_t version;
  std::uint32_t byte_order;
  std::uint32_t word_size;
  std::uint32_t page_size;
  std::uint64_t file_id;  ///< random; pairs the log with its data file
  std::uint64_t address;  ///< where the file is mapped; pointers inside depend on it
  std::uint64_t user_magic;
  std::uint64_t root_size;
  std::uint64_t root_align;
  std::uint64_t root_schema;           ///< the structural fingerprint (root_fingerprint::schema)
  char root_name[root_name_capacity];  ///< demangled, truncated, NUL-padded; for messages
  // State: changes in write transactions.
  std::uint64_t max_size;    ///< address range reserved on open (may only grow)
  std::uint64_t txn;         ///< id of the last committed transaction
  std::uint64_t arena_size;  ///< bytes in use from `address`, header page included
  std::uint64_t log_base;    ///< the log generation the last commit was written to
  std::uint64_t log_end;     ///< the log offset right after that commit's record
  std::uint64_t root;        ///< address of the Root object; 0 until constructed
  std::uint64_t last_sync;   ///< durability of the last commit's writer: 0 none yet, 1 full, 2 no_sync
  alignas(16) unsigned char heap[heap_state_capacity];
  std::uint64_t checksum;  ///< of every byte above
};
static_assert(sizeof(file_header) <= 512, "the header must fit in one sector");

inline std::uint64_t header_checksum(const file_header& h) noexcept {
  return checksum(&h, offsetof(file_header, checksum), 0x746d662d68647200ULL);
}

inline void seal_header(file_header& h) noexcept { h.checksum = header_checksum(h); }

/// Records `root` as the header's Root type (at creation, and when tmf::migrate installs a new Root).
inline void set_header_root(file_header& h, const root_fingerprint& root) noexcept {
  h.root_size = root.size;
  h.root_align = root.align;
  h.root_schema = root.schema;
  std::memset(h.root_name, 0, sizeof h.root_name);
  std::size_t n = root.name.size() < root_name_capacity - 1 ? root.name.size() : root_name_capacity - 1;
  std::memcpy(h.root_name, root.name.data(), n);
}

/// Fills the identity part of a new header (the state part is zero).
inline void init_header(file_header& h, std::uint64_t file_id, std::uint64_t address, std::uint64_t max_size,
                        std::uint64_t user_magic, const root_fingerprint& root) noexcept {
  std::memset(&h, 0, sizeof h);
  std::memcpy(h.magic, data_magic, sizeof data_magic);
  h.version = format_version;
  h.byte_order = byte_order_mark;
  h.word_size = sizeof(void*);
  h.page_size = page_size;
  h.file_id = file_id;
  h.address = address;
  h.max_size = max_size;
  h.user_magic = user_magic;
  set_header_root(h, root);
  h.arena_size = page_size;
}

/// The byte-level identity checks on a header read from disk, in order: magic, checksum,
/// version, byte order, word size, page size. Throws the matching errc.
inline void validate_header_format(const file_header& h, const std::string& file) {
  if (std::memcmp(h.magic, data_magic, sizeof data_magic) != 0)
    throw error(errc::not_a_storage, "tmf: " + file + " is not a tmf storage (bad magic)");
  if (h.byte_order != byte_order_mark)
    throw error(errc::incompatible_format, "tmf: " + file + " was written with another byte order");
  if (h.version != format_version)
    throw error(errc::incompatible_format, "tmf: " + file + " has format version " + std::to_string(h.version) +
                                               ", this build reads version " + std::to_string(format_version));
  if (h.word_size != sizeof(void*))
    throw error(errc::incompatible_format, "tmf: " + file + " was written by a " + std::to_string(8 * h.word_size) +
                                               "-bit program; this one is " + std::to_string(8 * sizeof(void*)) + "-bit");
  if (h.page_size != page_size)
    throw error(errc::incompatible_format, "tmf: " + file + " uses page size " + std::to_string(h.page_size));
  if (header_checksum(h) != h.checksum)
    throw error(errc::corrupted, "tmf: " + file + ": header checksum mismatch");
  if (h.address == 0 || h.address % page_size != 0 || h.max_size % page_size != 0 || h.arena_size < page_size ||
      h.arena_size % page_size != 0 || h.arena_size > h.max_size || h.address + h.max_size < h.address ||
      (h.root_align & (h.root_align - 1)) != 0)
    throw error(errc::corrupted, "tmf: " + file + ": header fields out of range");
}

/// "0x" and 16 hex digits.
inline std::string fingerprint_hex(std::uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string s = "0x";
  for (int shift = 60; shift >= 0; shift -= 4) s += digits[(v >> shift) & 0xf];
  return s;
}

/// The application-level checks: the user's magic and the Root fingerprint (size,
/// alignment, structure). A mismatch names both types, demangled, with both fingerprints.
inline void validate_header_identity(const file_header& h, const std::string& file, std::uint64_t user_magic,
                                     const root_fingerprint& root) {
  if (h.user_magic != user_magic)
    throw error(errc::incompatible_format, "tmf: " + file + " has application magic " + std::to_string(h.user_magic) +
                                               ", expected " + std::to_string(user_magic));
  if (h.root_size == root.size && h.root_align == root.align && h.root_schema == root.schema) return;
  const std::string stored(h.root_name, ::strnlen(h.root_name, root_name_capacity));
  const std::string expected = root.name.size() < root_name_capacity ? root.name : root.name.substr(0, root_name_capacity - 1);
  std::string why;
  if (stored != expected)
    why = "another Root type";
  else if (h.root_size != root.size || h.root_align != root.align)
    why = "the same Root name with another size or alignment";
  else
    why = "the same Root name, size and alignment, but the layout of Root or of a type it reaches (a member added, "
          "removed, reordered or retyped, a nested type changed, a tmf::schema_version bumped) differs";
  constexpr std::size_t layout_limit = 2000;
  std::string layout = root.layout.size() <= layout_limit ? root.layout : root.layout.substr(0, layout_limit) + "...";
  throw error(errc::root_mismatch,
              "tmf: " + file + " holds Root '" + stored + "' (size " + std::to_string(h.root_size) + ", align " +
                  std::to_string(h.root_align) + ", fingerprint " + fingerprint_hex(h.root_schema) +
                  "), the program asks for '" + root.name + "' (size " + std::to_string(root.size) + ", align " +
                  std::to_string(root.align) + ", fingerprint " + fingerprint_hex(root.schema) + "): " + why +
                  ". The program's layout: " + layout + ". To change a Root, convert the file with tmf::migrate");
}

}  // namespace tmf::detail

#endif  // TMF_DETAIL_FORMAT_HPP
