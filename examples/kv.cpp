// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// kv: a persistent key-value store on tmf::unordered_map<tmf::string, tmf::string>.
//
//   kv [--file PATH] put KEY VALUE   set KEY (replacing its value)
//   kv [--file PATH] get KEY         print KEY's value; exit 1 if it is missing
//   kv [--file PATH] del KEY         remove KEY (exit 1 if it is missing)
//   kv [--file PATH] list            print every KEY<TAB>VALUE, sorted by key
//   kv [--file PATH] count           print the number of keys
//
// The default file is kv.tmf in the current directory. Reads (get, list, count) use a read
// transaction; they look keys up as std::string_view, since a tmf::string can only be
// constructed where a writer is active (its allocator allocates in the file).

#include <tmf/tmf.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <iostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// tmf::hash<tmf::string> is transparent; with std::equal_to<> as well, find() accepts a
// std::string_view without building a tmf::string.
using table = tmf::unordered_map<tmf::string, tmf::string, tmf::hash<tmf::string>, std::equal_to<>>;

struct kv_root {
  table entries;
};

// The application's schema tag: opening a file made by another program throws
// tmf::errc::incompatible_format instead of misreading it.
constexpr std::uint64_t kv_magic = 0x6b762d7631;  // "kv-v1"

static int usage() {
  std::cerr << "usage: kv [--file PATH] put KEY VALUE\n"
               "       kv [--file PATH] get KEY\n"
               "       kv [--file PATH] del KEY\n"
               "       kv [--file PATH] list\n"
               "       kv [--file PATH] count\n";
  return 2;
}

int main(int argc, char** argv) {
  std::string file = "kv.tmf";
  int i = 1;
  if (i < argc && std::string_view(argv[i]) == "--file") {
    if (i + 1 >= argc) return usage();
    file = argv[i + 1];
    i += 2;
  }
  if (i >= argc) return usage();
  const std::string_view cmd = argv[i];
  const int nargs = argc - i - 1;
  const bool known = (cmd == "put" && nargs == 2) || ((cmd == "get" || cmd == "del") && nargs == 1) ||
                     ((cmd == "list" || cmd == "count") && nargs == 0);
  if (!known) return usage();
  const std::string_view key = nargs >= 1 ? argv[i + 1] : "";

  try {
    tmf::storage<kv_root> store(file, {.magic = kv_magic});

    if (cmd == "put") {
      auto w = store.write();
      // tmf::string(key) and tmf::string(value) allocate in the file: fine inside a writer.
      w->entries.insert_or_assign(tmf::string(key), tmf::string(argv[i + 2]));
      w.commit();
    } else if (cmd == "del") {
      auto w = store.write();
      auto it = w->entries.find(key);
      if (it == w->entries.end()) {
        std::cerr << "kv: no such key: " << key << '\n';
        return 1;
      }
      w->entries.erase(it);
      w.commit();
    } else {
      auto r = store.read();  // a consistent snapshot of the last commit
      const table& entries = r->entries;
      if (cmd == "get") {
        auto it = entries.find(key);
        if (it == entries.end()) {
          std::cerr << "kv: no such key: " << key << '\n';
          return 1;
        }
        std::cout << it->second << '\n';
      } else if (cmd == "count") {
        std::cout << entries.size() << '\n';
      } else {  // list
        std::vector<std::pair<std::string_view, std::string_view>> sorted(entries.begin(), entries.end());
        std::sort(sorted.begin(), sorted.end());
        for (const auto& [k, v] : sorted) std::cout << k << '\t' << v << '\n';
      }
    }
    return 0;
  } catch (const tmf::error& e) {
    std::cerr << "kv: " << e.what() << '\n';
    return 1;
  }
}
