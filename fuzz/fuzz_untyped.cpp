// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// libFuzzer target: the untyped read-only open (tmf::untyped_storage, what the tmf command
/// uses) of a mutated data file, with or without a log.
///
/// Input: one flags byte, then bytes.
///   flags & 1: reseal the header checksum after the mutation
///   flags & 2: the bytes are the whole data file; else they are laid over the template's
///              data file (which keeps its length), at offset 0 or (flags & 4) at page 1,
///              where the heap's free blocks and the Root live
///   flags & 8: the template's log (its records, sealed) is written beside the data file
/// Oracle: the open succeeds (then info() works, check() passes or reports errc::corrupted,
/// and after a passing check stats() and free_extents() work) or throws tmf::error with
/// not_a_storage, incompatible_format, corrupted, address_unavailable or read_only. Neither
/// file may change, and no log may appear where there was none: the open never writes.
#include <tmf/inspect.hpp>

#include "fuzz_common.hpp"

namespace {

using namespace tmf_fuzz;

struct state {
  std::filesystem::path path = process_path("untyped");
  template_files t;
};

state& the_state() {
  static state* s = [] {
    auto* st = new state;
    limit_file_size(std::size_t{16} << 20);
    st->t = make_template(process_path("untyped-template"));
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
  const bool reseal = flags & 1, whole = flags & 2, heap_page = flags & 4, with_log = flags & 8;

  static std::vector<unsigned char>& file = *new std::vector<unsigned char>;
  if (whole) {
    file.assign(input, input + size);
  } else {
    file = st.t.data_last;
    const std::size_t at = heap_page ? td::page_size : 0;
    std::memcpy(file.data() + at, input, std::min(size, file.size() - at));
  }
  if (reseal && file.size() >= sizeof(td::file_header)) reseal_header(file.data());
  remove_files(st.path);
  write_file(st.path, file);
  const std::filesystem::path log_path = st.path.string() + "-log";
  if (with_log) write_file(log_path, st.t.log);

  bool opened = false;
  try {
    tmf::untyped_storage s(st.path);
    opened = true;
    (void)s.info();
    bool sound = true;
    try {
      s.check();
    } catch (const tmf::error& e) {
      if (e.code() != tmf::errc::corrupted) fail(std::string("check() threw an unexpected error: ") + e.what());
      sound = false;
    }
    if (sound) {
      (void)s.stats();
      (void)s.free_extents();
    }
  } catch (const tmf::error& e) {
    if (opened) fail(std::string("unexpected error after a successful open: ") + e.what());
    if (verbose()) std::fprintf(stderr, "tmf fuzz: refused: %s\n", e.what());
    const std::error_code c = e.code();
    const bool ok = c == tmf::errc::not_a_storage || c == tmf::errc::incompatible_format ||
                    c == tmf::errc::corrupted || c == tmf::errc::address_unavailable || c == tmf::errc::read_only;
    if (!ok) fail(std::string("the untyped open threw an unexpected error: ") + e.what());
  } catch (const std::exception& e) {
    fail(std::string(opened ? "after a successful open: " : "open: ") + "unexpected exception: " + e.what());
  }
  if (!file_equals(st.path, file)) fail("the untyped read-only open changed the data file");
  if (with_log ? !file_equals(log_path, st.t.log) : std::filesystem::exists(log_path))
    fail("the untyped read-only open wrote the log");
  return 0;
}
