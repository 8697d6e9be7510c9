// SPDX-License-Identifier: Apache-2.0 OR MIT
/// \file
/// libFuzzer target: recovery from a mutated log.
///
/// Each iteration writes the template's data file as it was after its first commit, and a
/// log built from the input, then opens the storage (open_only: this process is the first
/// opener, so it runs full recovery).
///
/// Input: one flags byte, then the log file's bytes.
///   flags & 1: reseal every checksum of the log (header; for each record whose magic and
///              extent count and size make sense: extents, entries, header, trailer) after the mutation,
///              so that mutated records are replayed rather than ignored
///
/// Oracle, raw mode (flags & 1 == 0): the open succeeds or throws tmf::error with
/// not_a_storage, incompatible_format, corrupted, root_mismatch or address_unavailable.
/// After a success check() passes and the Root is one of the template's committed states
/// (a prefix of the log was replayed: its seal matches). A refusal leaves the data file
/// unchanged.
/// Resealed mode: the records are valid by construction, so recovery may write anything the
/// log says (the data file may change even when the open is then refused), and check() may
/// report errc::corrupted. Still only those error codes; never a crash or a hang. (Files are
/// capped at 16 MiB by RLIMIT_FSIZE: a forged header must not make recovery fill the disk.)
#include "fuzz_common.hpp"

namespace {

using namespace tmf_fuzz;

struct state {
  std::filesystem::path path = process_path("log");
  template_files t;
};

state& the_state() {
  static state* s = [] {
    auto* st = new state;
    limit_file_size(std::size_t{16} << 20);
    st->t = make_template(process_path("log-template"));
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
  const bool reseal = flags & 1;
  static std::vector<unsigned char>& log = *new std::vector<unsigned char>;  // reused across iterations
  log.assign(input + 1, input + size);
  if (reseal) reseal_log(log);

  const std::vector<unsigned char>& data = st.t.data_first;
  remove_files(st.path);
  write_file(st.path, data);
  write_file(st.path.string() + "-log", log);

  bool opened = false;
  const char* outcome = "opened";
  try {
    tmf::storage<fuzz_root> s(st.path, fuzz_options(tmf::open_mode::open_only));
    opened = true;
    bool sound = true;
    try {
      s.check();
    } catch (const tmf::error& e) {
      if (e.code() != tmf::errc::corrupted) fail(std::string("check() threw an unexpected error: ") + e.what());
      if (!reseal) fail(std::string("check() failed after recovery from an unsealed log: ") + e.what());
      sound = false;
      outcome = "opened, check() reports corrupted";
    }
    if (sound) {  // stats() follows the heap's links: only on a heap check() passed
      (void)s.stats();
      const std::uint64_t generation = read_root(s, /*require_seal=*/!reseal);
      if (verbose()) std::fprintf(stderr, "tmf fuzz: the Root is at generation %llu\n", static_cast<unsigned long long>(generation));
    }
  } catch (const tmf::error& e) {
    if (opened) fail(std::string("unexpected error after a successful open: ") + e.what());
    if (verbose()) std::fprintf(stderr, "tmf fuzz: refused: %s\n", e.what());
    outcome = nullptr;
    if (!is_expected_open_error(e)) fail(std::string("open threw an unexpected error: ") + e.what() + " (" + e.code().message() + ")");
  } catch (const std::exception& e) {
    fail(std::string(opened ? "after a successful open: " : "open: ") + "unexpected exception: " + e.what());
  }

  if (verbose() && outcome) std::fprintf(stderr, "tmf fuzz: %s\n", outcome);
  if (!opened && !reseal && !file_equals(st.path, data)) fail("a refused open changed the data file");
  return 0;
}
