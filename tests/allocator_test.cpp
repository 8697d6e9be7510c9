// SPDX-License-Identifier: Apache-2.0 OR MIT
// Public-contract tests of tmf::allocator<T>: binding to the innermost active writer, equality,
// propagation traits, alignment, limits, threads without the writer, std::allocator_traits.

#include <tmf/tmf.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

#include "test_support.hpp"

namespace {

using tmf_test::scoped_path;

struct root {
  std::uint64_t value = 0;
  void* block = nullptr;
};

// The allocator's public traits.
static_assert(std::is_same_v<tmf::allocator<int>::value_type, int>);
static_assert(std::is_same_v<tmf::allocator<int>::propagate_on_container_copy_assignment, std::false_type>);
static_assert(std::is_same_v<tmf::allocator<int>::propagate_on_container_move_assignment, std::false_type>);
static_assert(std::is_same_v<tmf::allocator<int>::propagate_on_container_swap, std::false_type>);
static_assert(std::is_same_v<tmf::allocator<int>::is_always_equal, std::false_type>);
static_assert(!std::allocator_traits<tmf::allocator<int>>::propagate_on_container_copy_assignment::value);
static_assert(!std::allocator_traits<tmf::allocator<int>>::propagate_on_container_move_assignment::value);
static_assert(!std::allocator_traits<tmf::allocator<int>>::propagate_on_container_swap::value);
static_assert(!std::allocator_traits<tmf::allocator<int>>::is_always_equal::value);
static_assert(std::is_same_v<std::allocator_traits<tmf::allocator<int>>::rebind_alloc<double>, tmf::allocator<double>>);
static_assert(std::is_nothrow_copy_constructible_v<tmf::allocator<int>>);
static_assert(std::is_nothrow_constructible_v<tmf::allocator<int>, const tmf::allocator<double>&>);
static_assert(std::is_same_v<decltype(std::declval<tmf::allocator<int>&>().allocate(1)), int*>);

template <class F, class Code>
::testing::AssertionResult throws_code(F&& f, Code expected) {
  try {
    f();
  } catch (const tmf::error& e) {
    if (e.code() == expected) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "threw tmf::error " << e.code() << " (" << e.what() << ")";
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

TEST(Allocator, DefaultConstructorWithoutWriterThrowsNoWriter) {
  EXPECT_TRUE(throws_code([] { tmf::allocator<int> a; (void)a; }, tmf::errc::no_writer));
  scoped_path p;
  tmf::storage<root> s(p.path());
  EXPECT_TRUE(throws_code([] { tmf::allocator<int> a; (void)a; }, tmf::errc::no_writer)) << "an open storage is not a writer";
  {
    auto r = s.read();
    EXPECT_TRUE(throws_code([] { tmf::allocator<int> a; (void)a; }, tmf::errc::no_writer)) << "a reader is not a writer";
  }
  {
    auto w = s.write();
    EXPECT_NO_THROW({ tmf::allocator<int> a; (void)a; });
  }
  EXPECT_TRUE(throws_code([] { tmf::allocator<int> a; (void)a; }, tmf::errc::no_writer)) << "after the writer ended";
}

TEST(Allocator, DefaultConstructorBindsToTheInnermostWriter) {
  scoped_path pa(tmf_test::test_path("a")), pb(tmf_test::test_path("b"));
  tmf::storage<root> a(pa.path()), b(pb.path());
  ASSERT_NE(a.address(), b.address());
  auto wa = a.write();
  EXPECT_EQ(tmf::allocator<int>().address(), a.address());
  {
    auto wb = b.write();
    EXPECT_EQ(tmf::allocator<int>().address(), b.address()) << "not bound to the innermost writer";
    tmf::allocator<long> in_b;
    long* q = in_b.allocate(4);
    auto addr = reinterpret_cast<std::uintptr_t>(q);
    auto base = reinterpret_cast<std::uintptr_t>(b.address());
    EXPECT_TRUE(addr >= base && addr < base + b.size()) << "allocation is not inside storage b";
    in_b.deallocate(q, 4);
  }
  EXPECT_EQ(tmf::allocator<int>().address(), a.address()) << "not bound to the outer writer after the inner one ended";
  tmf::allocator<char> in_a;
  char* q = in_a.allocate(10);
  auto addr = reinterpret_cast<std::uintptr_t>(q);
  auto base = reinterpret_cast<std::uintptr_t>(a.address());
  EXPECT_TRUE(addr >= base && addr < base + a.size()) << "allocation is not inside storage a";
  in_a.deallocate(q, 10);
}

TEST(Allocator, Equality) {
  scoped_path pa(tmf_test::test_path("a")), pb(tmf_test::test_path("b"));
  tmf::storage<root> a(pa.path()), b(pb.path());
  auto wa = a.write();
  tmf::allocator<int> a1;
  tmf::allocator<int> a2 = wa.get_allocator<int>();
  tmf::allocator<double> a3(a1);
  tmf::allocator<int> a4(a3);
  EXPECT_TRUE(a1 == a2) << "allocators of the same storage must be equal";
  EXPECT_FALSE(a1 != a2);
  EXPECT_TRUE(a1 == a3) << "a rebinding copy must be equal";
  EXPECT_TRUE(a3 == a1);
  EXPECT_TRUE(a4 == a1);
  EXPECT_EQ(a3.address(), a.address());
  auto wb = b.write();
  tmf::allocator<int> b1;
  EXPECT_FALSE(a1 == b1) << "allocators of different storages must differ";
  EXPECT_TRUE(a1 != b1);
  EXPECT_TRUE(a3 != b1);
  EXPECT_TRUE(b1 == wb.get_allocator<int>());
  EXPECT_TRUE(wb.get_allocator() == wb.get_allocator<long double>());
  // Memory from one allocator is freed by an equal one.
  double* q = a3.allocate(3);
  tmf::allocator<double>(a2).deallocate(q, 3);
}

template <std::size_t N>
struct alignas(N) aligned {
  unsigned char bytes[N];
};

template <std::size_t N>
void check_alignment(tmf::storage<root>& s) {
  SCOPED_TRACE("alignment " + std::to_string(N));
  static_assert(alignof(aligned<N>) == N);
  auto w = s.write();
  tmf::allocator<aligned<N>> a = w.get_allocator<aligned<N>>();
  const std::size_t before = s.stats().allocated_bytes;
  aligned<N>* ps[6];
  for (std::size_t i = 0; i < 6; ++i) {
    ps[i] = a.allocate(i + 1);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(ps[i]) % N, 0u) << "allocate(" << i + 1 << ") ignored alignof(T) " << N;
    std::memset(ps[i], static_cast<int>(i), (i + 1) * sizeof(aligned<N>));
  }
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(ps[i][i].bytes[N - 1], static_cast<unsigned char>(i)) << "allocations overlap";
    a.deallocate(ps[i], i + 1);
  }
  EXPECT_EQ(s.stats().allocated_bytes, before) << "leak after freeing every block";
  w.commit();
}

TEST(Allocator, AlignmentIsHonoured) {
  scoped_path p;
  tmf::storage<root> s(p.path());
  check_alignment<1>(s);
  check_alignment<2>(s);
  check_alignment<4>(s);
  check_alignment<8>(s);
  check_alignment<16>(s);
  check_alignment<32>(s);
  check_alignment<64>(s);
  check_alignment<128>(s);
  check_alignment<256>(s);
  check_alignment<512>(s);
  check_alignment<1024>(s);
  check_alignment<2048>(s);
  check_alignment<4096>(s);
  EXPECT_NO_THROW(s.check());
}

TEST(Allocator, BeyondMaxSizeThrowsBadAlloc) {
  scoped_path p;
  tmf::storage<root> s(p.path(), {.max_size = std::size_t{16} << 20});
  auto w = s.write();
  tmf::allocator<int> a = w.get_allocator<int>();
  EXPECT_THROW((void)a.allocate((std::size_t{32} << 20) / sizeof(int)), std::bad_alloc);
  EXPECT_THROW((void)a.allocate(std::numeric_limits<std::size_t>::max() / sizeof(int)), std::bad_alloc);
  EXPECT_THROW((void)a.allocate(std::numeric_limits<std::size_t>::max()), std::bad_alloc) << "n * sizeof(T) overflows";
  int* q = a.allocate(100);  // still usable
  q[99] = 1;
  a.deallocate(q, 100);
  w.commit();
  EXPECT_NO_THROW(s.check());
}

TEST(Allocator, AllocateOnAThreadWithoutTheWriterThrowsNoWriter) {
  scoped_path p;
  tmf::storage<root> s(p.path());
  auto w = s.write();
  tmf::allocator<int> a = w.get_allocator<int>();
  bool refused = false;
  std::thread t([&] { refused = throws_code([&] { (void)a.allocate(1); }, tmf::errc::no_writer); });
  t.join();
  EXPECT_TRUE(refused) << "allocate() from a thread that does not hold the writer";
  int* q = a.allocate(1);  // the writer's own thread still can
  a.deallocate(q, 1);
}

TEST(Allocator, AllocateWithoutAnyWriterThrowsNoWriter) {
  scoped_path p;
  tmf::storage<root> s(p.path());
  tmf::allocator<int> a = s.write().get_allocator<int>();  // the writer ends here
  EXPECT_TRUE(throws_code([&] { (void)a.allocate(1); }, tmf::errc::no_writer)) << "allocate() after the writer ended";
  {
    auto r = s.read();
    EXPECT_TRUE(throws_code([&] { (void)a.allocate(1); }, tmf::errc::no_writer)) << "allocate() in a reader";
  }
}

TEST(Allocator, AllocateInAStorageWhoseWriterThisThreadDoesNotHold) {
  scoped_path pa(tmf_test::test_path("a")), pb(tmf_test::test_path("b"));
  tmf::storage<root> a(pa.path()), b(pb.path());
  tmf::allocator<int> in_b = b.write().get_allocator<int>();
  auto wa = a.write();  // a writer of another storage does not make b writable
  EXPECT_TRUE(throws_code([&] { (void)in_b.allocate(1); }, tmf::errc::no_writer));
  int* q = wa.get_allocator<int>().allocate(1);
  wa.get_allocator<int>().deallocate(q, 1);
}

TEST(Allocator, AllocateWhenTheStorageIsClosedThrowsNoWriter) {
  std::optional<tmf::allocator<int>> a;
  {
    scoped_path p;
    tmf::storage<root> s(p.path());
    a.emplace(s.write().get_allocator<int>());
  }
  EXPECT_TRUE(throws_code([&] { (void)a->allocate(1); }, tmf::errc::no_writer)) << "allocate() for a closed storage";
}

// A storage closed after allocating, its memory reused, then another storage opened at the
// same address (the default zone gives the same address): allocating in the new one must use
// the new one. (Regression: a thread-local cache of the storage looked up by address once kept
// a dangling pointer to the closed storage.)
TEST(Allocator, WorksInAStorageOpenedAtTheAddressOfAClosedOne) {
  scoped_path pa(tmf_test::test_path("a")), pb(tmf_test::test_path("b"));
  using storage_t = tmf::storage<root>;
  // Static, never freed, zeroed at the end: the dangling pointer must not disturb later tests.
  alignas(storage_t) static unsigned char memory[sizeof(storage_t)];
  auto* a = ::new (memory) storage_t(pa.path());
  void* const address = a->address();
  {
    auto w = a->write();
    tmf::allocator<int> in_a;
    in_a.deallocate(in_a.allocate(10), 10);
    w.commit();
  }
  a->~storage_t();
  // The closed storage's memory is reused by the program: here, for copies of the address.
  for (std::size_t i = 0; i + sizeof(void*) <= sizeof(storage_t); i += sizeof(void*))
    std::memcpy(memory + i, &address, sizeof(void*));
  {
    storage_t b(pb.path());
    ASSERT_EQ(b.address(), address) << "the test needs the second storage at the first one's address";
    auto w = b.write();
    tmf::allocator<int> in_b;
    int* q = nullptr;
    try {
      q = in_b.allocate(10);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "allocate() in a storage opened where a closed one was threw: " << e.what();
    }
    if (q != nullptr) {
      q[9] = 1;
      in_b.deallocate(q, 10);
    }
    w.commit();
    EXPECT_NO_THROW(b.check());
  }
  std::memset(memory, 0, sizeof memory);
}

TEST(Allocator, GetAllocatorOfWriter) {
  scoped_path p;
  tmf::storage<root> s(p.path());
  auto w = s.write();
  tmf::allocator<std::byte> bytes = w.get_allocator();
  static_assert(std::is_same_v<decltype(w.get_allocator()), tmf::allocator<std::byte>>);
  EXPECT_EQ(bytes.address(), s.address());
  tmf::allocator<std::uint64_t> words = w.get_allocator<std::uint64_t>();
  EXPECT_TRUE(words == bytes);
  std::uint64_t* q = words.allocate(8);
  w->block = q;
  for (std::uint64_t i = 0; i < 8; ++i) q[i] = i;
  w.commit();
  auto r = std::move(w);  // keep the writer alive under another name
  EXPECT_EQ(static_cast<std::uint64_t*>(r->block)[7], 7u);
}

struct tracked {
  static inline int live = 0;
  std::uint64_t v;
  explicit tracked(std::uint64_t x) : v(x) { ++live; }
  ~tracked() { --live; }
};

TEST(Allocator, WorksThroughAllocatorTraits) {
  scoped_path p;
  tmf::storage<root> s(p.path());
  auto w = s.write();
  using traits = std::allocator_traits<tmf::allocator<tracked>>;
  tmf::allocator<tracked> a;
  const std::size_t before = s.stats().allocated_bytes;
  tracked* q = traits::allocate(a, 4);
  for (std::uint64_t i = 0; i < 4; ++i) traits::construct(a, q + i, i * 3);
  EXPECT_EQ(tracked::live, 4);
  EXPECT_EQ(q[3].v, 9u);
  for (std::size_t i = 0; i < 4; ++i) traits::destroy(a, q + i);
  EXPECT_EQ(tracked::live, 0);
  traits::deallocate(a, q, 4);
  EXPECT_EQ(s.stats().allocated_bytes, before);
  EXPECT_GE(traits::max_size(a), std::size_t{1} << 20);
  tmf::allocator<tracked> copy = traits::select_on_container_copy_construction(a);
  EXPECT_TRUE(copy == a);
  traits::rebind_alloc<int> ints(a);
  int* n = std::allocator_traits<decltype(ints)>::allocate(ints, 1);
  std::allocator_traits<decltype(ints)>::deallocate(ints, n, 1);
  // std::allocate_shared is not meant for persistent data, but must work with the allocator.
  auto sp = std::allocate_shared<std::uint64_t>(tmf::allocator<std::uint64_t>(a), 5);
  EXPECT_EQ(*sp, 5u);
  sp.reset();
  EXPECT_EQ(s.stats().allocated_bytes, before);
}

}  // namespace
