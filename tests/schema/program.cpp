// SPDX-License-Identifier: Apache-2.0 OR MIT
// A program of schema_test: built twice, as schema_program_v1 and schema_program_v2, whose
// `inner` differ by one member while the Root keeps its name and size (`docs_root` holds a
// tmf::vector<inner>): the change only the structural fingerprint sees.
//
//   schema_program_vN create <file>   creates <file> with 3 docs; exit 0
//   schema_program_vN open <file>     opens <file>: exit 0 and prints the docs' count, or
//                                     exit 3 and prints the root_mismatch message
//   schema_program_vN fingerprint     prints tmf::schema_fingerprint<docs_root>() in hex
#include <tmf/tmf.hpp>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <exception>

#ifndef TMF_SCHEMA_VARIANT
#error "build with -DTMF_SCHEMA_VARIANT=1 or 2"
#endif

namespace schema_program {
#if TMF_SCHEMA_VARIANT == 1
struct inner {
  std::uint64_t id = 0;
};
#else
struct inner {
  std::uint64_t id = 0;
  std::uint64_t added = 0;  // the new field
};
#endif
struct docs_root {
  tmf::vector<inner> docs;
};
}  // namespace schema_program

int main(int argc, char** argv) {
  using schema_program::docs_root;
  static_assert(sizeof(docs_root) == sizeof(tmf::vector<int>), "the Root's size does not depend on inner");
  try {
    if (argc == 2 && std::strcmp(argv[1], "fingerprint") == 0) {
      std::printf("%016" PRIx64 "\n", tmf::schema_fingerprint<docs_root>());
      return 0;
    }
    if (argc != 3) return 2;
    if (std::strcmp(argv[1], "create") == 0) {
      tmf::storage<docs_root> s(argv[2], {.mode = tmf::open_mode::create_only});
      auto w = s.write();
      for (std::uint64_t i = 0; i < 3; ++i) w->docs.emplace_back().id = i;
      w.commit();
      return 0;
    }
    if (std::strcmp(argv[1], "open") == 0) {
      tmf::storage<docs_root> s(argv[2], {.mode = tmf::open_mode::open_only});
      s.check();
      std::printf("%zu\n", s.read()->docs.size());
      return 0;
    }
  } catch (const tmf::error& e) {
    std::printf("%s\n", e.what());
    return e.code() == tmf::errc::root_mismatch ? 3 : 4;
  } catch (const std::exception& e) {
    std::printf("%s\n", e.what());
    return 5;
  }
  return 2;
}
