// SPDX-License-Identifier: Apache-2.0 OR MIT
//
// quickstart: a persistent note list. The notes live in a file mapped into memory; each run
// opens it, changes it inside a write transaction and commits. Nothing is serialised.
//
//   quickstart [--file PATH] add "text"   append a note
//   quickstart [--file PATH] list         show the notes, numbered from 1, and the run counter
//   quickstart [--file PATH] remove N     remove note N (as numbered by list)
//
// The default file is quickstart.tmf in the current directory (its log: quickstart.tmf-log).

#include <tmf/tmf.hpp>

#include <charconv>
#include <cstdint>
#include <iostream>
#include <string>
#include <string_view>

// The root object: everything reachable from it lives in the file. Its containers use
// tmf::allocator, so their elements are allocated in the file too.
struct notes {
  std::uint64_t runs = 0;          // how many times this program opened the file
  tmf::vector<tmf::string> items;  // empty when the file is created
};

static int usage() {
  std::cerr << "usage: quickstart [--file PATH] add TEXT\n"
               "       quickstart [--file PATH] list\n"
               "       quickstart [--file PATH] remove N\n";
  return 2;
}

int main(int argc, char** argv) {
  std::string file = "quickstart.tmf";
  int i = 1;
  if (i < argc && std::string_view(argv[i]) == "--file") {
    if (i + 1 >= argc) return usage();
    file = argv[i + 1];
    i += 2;
  }
  if (i >= argc) return usage();
  const std::string_view command = argv[i];
  const int nargs = argc - i - 1;

  std::size_t index = 0;  // for remove
  if (command == "add" || command == "remove") {
    if (nargs != 1) return usage();
    if (command == "remove") {
      const std::string_view arg = argv[i + 1];
      auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), index);
      if (ec != std::errc() || end != arg.data() + arg.size() || index == 0) return usage();
    }
  } else if (command != "list" || nargs != 0) {
    return usage();
  }

  try {
    tmf::storage<notes> store(file);  // opens the file, or creates it holding an empty `notes`
    auto w = store.write();           // the one write transaction; w-> is the root object
    ++w->runs;

    if (command == "add") {
      w->items.emplace_back(argv[i + 1]);  // the new tmf::string binds to this writer's storage
      std::cout << "added note " << w->items.size() << '\n';
    } else if (command == "remove") {
      if (index > w->items.size()) {
        std::cerr << "quickstart: there is no note " << index << " (" << w->items.size() << " notes)\n";
        return 1;  // the writer's destructor rolls back the uncommitted ++runs
      }
      w->items.erase(w->items.begin() + static_cast<std::ptrdiff_t>(index - 1));
      std::cout << "removed note " << index << '\n';
    } else {  // list
      std::cout << "run #" << w->runs << ", " << w->items.size() << " notes\n";
      for (std::size_t n = 0; n < w->items.size(); ++n) std::cout << "  " << n + 1 << ". " << w->items[n] << '\n';
    }

    w.commit();  // atomic, and durable when it returns (one fdatasync)
    return 0;
  } catch (const tmf::error& e) {
    std::cerr << "quickstart: " << e.what() << '\n';
    return 1;
  }
}
