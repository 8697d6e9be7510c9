// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// `tmf::migrate<Old, New>`: converts a storage's Root from one type to another in one
/// write transaction.
#ifndef TMF_MIGRATE_HPP
#define TMF_MIGRATE_HPP

#include <filesystem>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "options.hpp"
#include "schema.hpp"
#include "storage.hpp"

namespace tmf {

/// Converts the storage `file` from Root type `Old` to Root type `New`.
///
/// Opens `file` (which must exist; `opt.mode` other than read_only is ignored) as a
/// `storage<Old>` (so it must hold an `Old`: same fingerprint), then, in
/// one write transaction: default-constructs a `New` in the same heap (its tmf containers
/// bind to this storage), calls `fn(Old&, New&)` to move or copy the data across, destroys
/// the `Old` (which frees everything it owns: the one time a Root's destructor runs), frees
/// it, installs the `New` as the Root with its fingerprint, and commits. A crash at any
/// instant leaves the file holding either the `Old` or the `New`, never a mix; if `fn` or
/// anything else throws, the transaction rolls back and the file still holds the `Old`.
///
/// Run it while no other process has the file open: a process that opened it as `Old`
/// before the migration would read the `New` as an `Old` (processes opening it afterwards
/// are refused with errc::root_mismatch unless they ask for `New`).
///
/// \throws tmf::error: whatever `storage<Old>(file, opt)` throws (errc::root_mismatch if
///         the file does not hold an `Old`: nothing is changed; no such file), errc::read_only
///         for open_mode::read_only; the system error if the commit fails (rolled back);
///         std::bad_alloc if the storage is full; whatever `fn` throws.
template <class Old, class New, class F>
void migrate(const std::filesystem::path& file, F&& fn, const options& opt = {}) {
  static_assert(!std::is_same_v<Old, New>, "tmf::migrate<Old, New>: Old and New must be different types");
  static_assert(std::is_default_constructible_v<New>, "tmf::migrate<Old, New>: New must be default-constructible");
  static_assert(detail::check_storable<New>(), "tmf::migrate<Old, New>: New reaches a type that owns process memory");
  static_assert(std::is_invocable_v<F&, Old&, New&>, "tmf::migrate<Old, New>(file, fn): fn must accept (Old&, New&)");
  if (opt.mode == open_mode::read_only)
    throw error(errc::read_only, "tmf: cannot migrate " + file.string() + " with open_mode::read_only");
  options o = opt;
  o.mode = open_mode::open_only;  // never creates the file
  storage<Old> s(file, o);
  writer<Old> w = s.write();
  detail::engine& e = detail::storage_access::of(s);
  Old& old_root = w.root();
  void* p = e.allocate(sizeof(New), alignof(New));
  New* new_root = ::new (p) New();  // throws: the writer's destructor rolls everything back
  fn(old_root, *new_root);
  std::destroy_at(&old_root);
  e.deallocate(&old_root, sizeof(Old));
  e.set_root(new_root);
  detail::set_header_root(*e.header(), detail::fingerprint_of<New>());
  w.commit();
}

}  // namespace tmf

#endif  // TMF_MIGRATE_HPP
