// SPDX-License-Identifier: Apache-2.0 OR MIT
// Compile-failure cases of schema_test (ctest entries schema_refuses.<case>, see
// tests/CMakeLists.txt): each TMF_REFUSE_CASE puts one member that owns process memory
// somewhere reachable from a Root, and the build must fail with tmf's static_assert.
// TMF_REFUSE_CASE=0 is the control: the same program with tmf types compiles.
#include <tmf/tmf.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#ifndef TMF_REFUSE_CASE
#error "build with -DTMF_REFUSE_CASE=<n>"
#endif

namespace refuse_case {

struct polymorphic_base {
  virtual ~polymorphic_base() = default;
  int x = 0;
};

struct inner {
  std::uint64_t id = 0;
#if TMF_REFUSE_CASE == 0
  tmf::string name;
#elif TMF_REFUSE_CASE == 1
  std::string name;  // reached through tmf::vector<inner>
#endif
};

struct root {
  tmf::vector<inner> docs;
  tmf::map<tmf::string, tmf::vector<int>> index;
  int* raw = nullptr;  // raw pointers stay allowed
#if TMF_REFUSE_CASE == 2
  std::string title;
#elif TMF_REFUSE_CASE == 3
  std::vector<int> numbers;
#elif TMF_REFUSE_CASE == 4
  std::unique_ptr<int> owned;
#elif TMF_REFUSE_CASE == 5
  std::shared_ptr<int> shared;
#elif TMF_REFUSE_CASE == 6
  std::function<void()> callback;
#elif TMF_REFUSE_CASE == 7
  static inline int target = 0;
  int& ref = target;
#elif TMF_REFUSE_CASE == 8
  tmf::vector<polymorphic_base> shapes;
#elif TMF_REFUSE_CASE == 9
  tmf::map<tmf::string, std::pair<int, std::string>> nested;
#endif
};

}  // namespace refuse_case

int main() {
  tmf::storage<refuse_case::root> s("never-opened.tmf");
  return 0;
}
