// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// `tmf::storage<Root>` and its transactions, `tmf::writer<Root>` and `tmf::reader<Root>`.
#ifndef TMF_STORAGE_HPP
#define TMF_STORAGE_HPP

#include <filesystem>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "allocator.hpp"
#include "detail/engine.hpp"
#include "detail/maintenance.hpp"
#include "error.hpp"
#include "options.hpp"
#include "schema.hpp"

namespace tmf {

template <class Root>
class storage;

namespace detail {
struct storage_access;
}

/// The one write transaction of a storage. Move-only; bound to the thread that created it.
/// Changes are private to this process until commit().
namespace detail {
/// What writer and reader share: the engine they are a transaction of, moved on move, and
/// the call that ends the transaction (`End`) when the handle is destroyed or assigned to.
template <void (engine::*End)() noexcept>
class txn_handle {
 public:
  txn_handle(txn_handle&& other) noexcept : m_engine(std::exchange(other.m_engine, nullptr)) {}
  txn_handle& operator=(txn_handle&& other) noexcept {
    if (this != &other) {
      release();
      m_engine = std::exchange(other.m_engine, nullptr);
    }
    return *this;
  }
  txn_handle(const txn_handle&) = delete;
  txn_handle& operator=(const txn_handle&) = delete;
  ~txn_handle() { release(); }

 protected:
  explicit txn_handle(engine* e) noexcept : m_engine(e) {}
  /// The engine, after refusing a moved-from handle, a forked child and a storage that must
  /// be reopened.
  engine& checked(const char* what) const {
    if (!m_engine) throw error(errc::no_writer, std::string("tmf: use of a moved-from ") + what);
    m_engine->check_usable();
    return *m_engine;
  }
  void release() noexcept {
    if (m_engine) (m_engine->*End)();
    m_engine = nullptr;
  }
  engine* m_engine;
};
}  // namespace detail

/// The one write transaction of a storage. Move-only; bound to the thread that created it.
/// Changes are private to this process until commit().
template <class Root>
class writer : private detail::txn_handle<&detail::engine::end_write> {
  using base = detail::txn_handle<&detail::engine::end_write>;

 public:
  writer(writer&&) noexcept = default;
  writer& operator=(writer&&) noexcept = default;
  /// Rolls back what was not committed, then releases the write lock.
  ~writer() = default;

  Root& operator*() { return root(); }
  Root* operator->() { return &root(); }
  /// \throws tmf::error{errc::forked} in a child process.
  Root& root() { return *static_cast<Root*>(checked("writer").root()); }

  /// Makes everything since the last commit atomic and, with durability::full, durable
  /// (one fdatasync). The writer stays open.
  /// \throws tmf::error with the system error if the log cannot be written or synced; the
  ///         transaction is then rolled back, the writer usable and the files unchanged.
  void commit() { checked("writer").commit(); }

  /// Undoes everything since the last commit, allocations included. No copying: the
  /// private copies of the written pages are dropped.
  void rollback() { checked("writer").rollback(); }

  /// An allocator bound to this storage (usable while this writer is active).
  template <class T = std::byte>
  allocator<T> get_allocator() const noexcept {
    return allocator<T>(m_engine->base());
  }

 private:
  friend class storage<Root>;
  explicit writer(detail::engine* e) noexcept : base(e) {}
};

/// A read transaction: a consistent view of the last commit. Move-only.
template <class Root>
class reader : private detail::txn_handle<&detail::engine::end_read> {
  using base = detail::txn_handle<&detail::engine::end_read>;

 public:
  reader(reader&&) noexcept = default;
  reader& operator=(reader&&) noexcept = default;
  ~reader() = default;

  const Root& operator*() const { return root(); }
  const Root* operator->() const { return &root(); }
  const Root& root() const { return *static_cast<const Root*>(checked("reader").root()); }

 private:
  friend class storage<Root>;
  explicit reader(detail::engine* e) noexcept : base(e) {}
};

/// A file mapped at a fixed address holding one `Root` object and everything it reaches
/// through `tmf::allocator`. Not copyable, not movable.
///
/// \pre Root is default-constructible. Nothing reachable from it (members, recursively;
///      the element types of tmf containers, std::array, std::pair, std::tuple, ...) may own
///      memory of the process: std::allocator containers (std::string, std::vector, ...),
///      std::unique_ptr, std::shared_ptr, std::function, std::any, references, polymorphic
///      types and function pointers are refused at compile time (schema.hpp). Raw pointers
///      are allowed; they must point into the storage (they would dangle after a restart).
template <class Root>
class storage {
  static_assert(std::is_default_constructible_v<Root>, "tmf::storage<Root>: Root must be default-constructible");
  static_assert(detail::check_storable<Root>(), "tmf::storage<Root>: Root reaches a type that owns process memory");

 public:
  /// Opens or creates `file` (and its log `file-log`). A new file's Root is
  /// default-constructed in a first write transaction, committed before this returns.
  /// An existing file must hold this Root: same name, size, alignment and structural
  /// fingerprint (tmf::schema_fingerprint<Root>(): the layout of every type Root reaches),
  /// else errc::root_mismatch names both types and both fingerprints.
  /// \throws tmf::error: errc::not_a_storage, incompatible_format, root_mismatch,
  ///         address_unavailable, already_open, corrupted, read_only (open_mode::read_only
  ///         on a file whose last writer did not close cleanly: open it writable once), or
  ///         the system error (no such file, permission denied, file exists, ...). On any
  ///         refusal the file is left byte-for-byte untouched.
  explicit storage(const std::filesystem::path& file, const options& opt = {})
      : m_engine(file, opt, detail::fingerprint_of<Root>()) {
    if (m_engine.root() == nullptr) make_root();
  }
  storage(const storage&) = delete;
  storage& operator=(const storage&) = delete;

  /// Waits until this is the only writer (all threads, all processes).
  /// \throws tmf::error{errc::read_only}, {errc::already_open} if this thread already holds
  ///         the writer or a reader of this storage, {errc::forked}.
  writer<Root> write() {
    m_engine.begin_write(true);
    return writer<Root>(&m_engine);
  }
  /// Like write(), but empty instead of waiting.
  std::optional<writer<Root>> try_write() {
    if (!m_engine.begin_write(false)) return std::nullopt;
    return writer<Root>(&m_engine);
  }
  /// A consistent view of the last commit. Waits while a writer of this process is active
  /// (readers share its mapping) or while another process applies a commit.
  /// \throws tmf::error{errc::already_open} if this thread holds the writer, {errc::forked},
  ///         {errc::read_only} in a read_only storage when a writer process died while
  ///         applying a commit (only a writable process can repair that).
  reader<Root> read() {
    m_engine.begin_read(true);
    return reader<Root>(&m_engine);
  }
  /// Like read(), but empty instead of waiting.
  std::optional<reader<Root>> try_read() {
    if (!m_engine.begin_read(false)) return std::nullopt;
    return reader<Root>(&m_engine);
  }

  /// Sizes and counters (a consistent snapshot).
  storage_stats stats() const { return engine().stats(); }
  /// Full audit of the header and the heap. \throws tmf::error{errc::corrupted} naming the problem.
  void check() const {
    engine().check_fork();
    engine().check();
  }
  /// Writes a consistent copy of the last commit to `dst` (and `dst`-log), taken inside one
  /// read transaction while writers keep committing (their commits wait for the copy to
  /// finish before they apply). The copy is a cleanly closed storage with an empty log and
  /// the same address: open it in another process, or after closing this storage.
  /// \throws tmf::error: std::errc::file_exists if `dst` or `dst`-log exists, the system
  ///         error of a failed write (no file is left behind), errc::already_open on the
  ///         thread holding the writer (commit first, then copy from a reader's thread).
  void copy_to(const std::filesystem::path& dst) const { detail::copy_storage(engine(), dst); }
  /// Gives back the file space the heap does not use; objects never move. In one write
  /// transaction (waits for the writer) the free tail of the arena is cut back and committed,
  /// then the data file is truncated and the pages inside free blocks are punched out
  /// (fallocate PUNCH_HOLE, where the file system supports it).
  /// \throws tmf::error{errc::read_only}, {errc::corrupted} if the heap fails its audit,
  ///         the system error of a failed truncate or punch (the commit stands).
  void compact() { detail::compact_storage(m_engine); }
  void* address() const noexcept { return m_engine.base(); }
  /// Current arena bytes (header page included).
  std::size_t size() const noexcept { return m_engine.size(); }
  const std::filesystem::path& path() const noexcept { return m_engine.path(); }

 private:
  friend struct detail::storage_access;
  detail::engine& engine() const noexcept { return const_cast<detail::engine&>(m_engine); }

  void make_root() {
    if (!m_engine.writable())
      throw error(errc::read_only, "tmf: " + m_engine.path().string() + " has no Root yet; open it writable once");
    writer<Root> w = write();
    if (m_engine.root() != nullptr) return;  // another process made it first
    m_engine.init_heap();
    void* p = m_engine.allocate(sizeof(Root), alignof(Root));
    ::new (p) Root();  // throws: the writer's destructor rolls the heap back
    m_engine.set_root(p);
    w.commit();
  }

  detail::engine m_engine;
};

namespace detail {
/// The engine under a storage, for tmf::migrate.
struct storage_access {
  template <class Root>
  static engine& of(storage<Root>& s) noexcept {
    return s.m_engine;
  }
};
}  // namespace detail

}  // namespace tmf

#endif  // TMF_STORAGE_HPP
