// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// libFuzzer target: opening a data file whose header page is mutated.
///
/// Input: one flags byte, then bytes.
///   flags & 1: reseal the header checksum after the mutation (else most mutations stop at
///              the checksum check; with it, every later check and the heap audit are reached)
///   flags & 2: the bytes are the whole data file (short files, garbage); else they are laid
///              over the start of the template's data file (which keeps its length)
///   flags & 4: open read_only instead of open_only
///   flags & 8: options.address = nullptr (map wherever the header says) instead of the
///              template's address (then any other recorded address is address_unavailable)
/// The log is absent, so opening replays nothing.
///
/// Oracle: the open succeeds (then check() either passes or reports errc::corrupted, and
/// the Root is read) or throws tmf::error with not_a_storage, incompatible_format,
/// corrupted, root_mismatch or address_unavailable (read_only mode: also errc::read_only for
/// a file without a Root). Anything else aborts. The data file must be byte-for-byte
/// unchanged afterwards, unless a writable open succeeded on a file without a Root (which
/// then creates it, as designed).
#include "fuzz_common.hpp"

// Headers recording address 0 (once mapped at 0 as root: a null base pointer; now refused as
// corrupted). Set to 0 to skip such inputs.
#ifndef FUZZ_HEADER_ADDRESS_ZERO
#define FUZZ_HEADER_ADDRESS_ZERO 1
#endif
// Headers whose max_size is off the page grid (once accepted, then an assertion when the Root
// was created; now refused as corrupted). Set to 0 to skip such inputs.
#ifndef FUZZ_HEADER_UNALIGNED_MAX_SIZE
#define FUZZ_HEADER_UNALIGNED_MAX_SIZE 1
#endif

namespace {

using namespace tmf_fuzz;

struct state {
  std::filesystem::path path = process_path("header");
  std::vector<unsigned char> data;  ///< the template's last data file
};

state& the_state() {
  static state* s = [] {
    auto* st = new state;
    limit_file_size(std::size_t{16} << 20);
    st->data = make_template(process_path("header-template")).data_last;
    remove_at_exit(st->path);
    return st;
  }();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  the_state();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* input, std::size_t size) {
  state& st = the_state();
  expect_nothing_left_open();
  if (size == 0) return 0;
  const unsigned flags = input[0];
  ++input;
  --size;
  const bool reseal = flags & 1, whole = flags & 2, read_only = flags & 4, any_address = flags & 8;

  static std::vector<unsigned char>& file = *new std::vector<unsigned char>;  // reused: no fresh MiB each time
  if (whole) {
    file.assign(input, input + size);
  } else {
    file = st.data;
    std::memcpy(file.data(), input, std::min(size, file.size()));
  }
  if (reseal && file.size() >= sizeof(td::file_header)) reseal_header(file.data());
  if (file.size() >= sizeof(td::file_header)) {  // known bugs, skipped until fixed
    td::file_header h;
    std::memcpy(&h, file.data(), sizeof h);
    if (!FUZZ_HEADER_ADDRESS_ZERO && any_address && h.address == 0) return 0;
    if (!FUZZ_HEADER_UNALIGNED_MAX_SIZE && h.root == 0 && h.max_size % td::page_size != 0) return 0;
  }
  remove_files(st.path);
  write_file(st.path, file);

  bool opened = false;
  const char* outcome = "opened";
  bool had_root = false;
  if (file.size() >= sizeof(td::file_header)) {
    td::file_header h;
    std::memcpy(&h, file.data(), sizeof h);
    had_root = h.root != 0;
  }
  try {
    tmf::options o = fuzz_options(read_only ? tmf::open_mode::read_only : tmf::open_mode::open_only);
    if (any_address) o.address = nullptr;
    tmf::storage<fuzz_root> s(st.path, o);
    opened = true;
    bool sound = true;
    try {
      s.check();
    } catch (const tmf::error& e) {
      if (e.code() != tmf::errc::corrupted) fail(std::string("check() threw an unexpected error: ") + e.what());
      sound = false;
      outcome = "opened, check() reports corrupted";
    }
    if (sound) {  // stats() follows the heap's links: only on a heap check() passed
      (void)s.stats();
      (void)read_root(s, /*require_seal=*/false);
    }
  } catch (const tmf::error& e) {
    if (opened) fail(std::string("unexpected error after a successful open: ") + e.what());
    if (verbose()) std::fprintf(stderr, "tmf fuzz: refused: %s\n", e.what());
    outcome = nullptr;
    const bool ok = is_expected_open_error(e) || (read_only && e.code() == tmf::errc::read_only);
    if (!ok) fail(std::string("open threw an unexpected error: ") + e.what() + " (" + e.code().message() + ")");
  } catch (const std::exception& e) {
    fail(std::string(opened ? "after a successful open: " : "open: ") + "unexpected exception: " + e.what());
  }

  if (verbose() && outcome) std::fprintf(stderr, "tmf fuzz: %s\n", outcome);
  const bool may_change = opened && !read_only && !had_root;
  if (!may_change && !file_equals(st.path, file))
    fail(opened ? "a successful open of a file with a Root changed the data file"
                : "a refused open changed the data file");
  return 0;
}
