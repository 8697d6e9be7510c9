// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// Consumes tmf (the installed package, the build tree's export, or the sources added with
// add_subdirectory: see run.cmake): creates a storage in the file named by argv[1], commits a
// counter, reopens the file and reads the counter back. Exit status 0 on success.

#include <tmf/tmf.hpp>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>

namespace {

struct root {
  std::uint64_t counter = 0;
};

void remove_storage(const std::filesystem::path& file) {
  std::error_code ec;
  std::filesystem::remove(file, ec);
  std::filesystem::remove(std::filesystem::path(file.string() + "-log"), ec);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << (argc > 0 ? argv[0] : "tmf_package_test") << " FILE\n";
    return 2;
  }
  const std::filesystem::path file = argv[1];
  remove_storage(file);
  try {
    {
      tmf::options create;
      create.mode = tmf::open_mode::create_only;
      tmf::storage<root> storage(file, create);
      auto writer = storage.write();
      writer->counter = 41;
      writer.commit();
      ++writer->counter;
      writer.commit();
    }
    {
      tmf::options reopen;
      reopen.mode = tmf::open_mode::open_only;
      tmf::storage<root> storage(file, reopen);
      const auto reader = storage.read();
      if (reader->counter != 42) {
        std::cerr << "tmf_package_test: read " << reader->counter << " after reopening, expected 42\n";
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "tmf_package_test: " << e.what() << '\n';
    return 1;
  }
  remove_storage(file);
  std::cout << "tmf_package_test: ok\n";
  return 0;
}
