# SPDX-License-Identifier: Apache-2.0 OR MIT
# shellcheck shell=bash
#
# Sourced by scripts/test.sh and scripts/demo.sh:
#   source scripts/deps.sh; tmf_require_packages "${TMF_DEPS_DEMO[@]}"
# Checks that the Debian packages are installed. Missing ones are installed when running as
# root (apt-get, non-interactive); otherwise the exact install command is printed and the
# calling script exits with status 1. On a system without dpkg the check is skipped with a note;
# TMF_SKIP_DEPS=1 skips it everywhere.

# shellcheck disable=SC2034  # used by the scripts that source this file
# Everything scripts/test.sh needs (tests, benchmarks against LMDB, the -m32 stage, clang and
# its sanitizer and libFuzzer runtimes for the asan stage, libfiu's fiu-run and control API for the fault
# stage).
TMF_DEPS_ALL=(cmake g++ make libboost-dev libgtest-dev libbenchmark-dev liblmdb-dev g++-multilib clang libclang-rt-14-dev
              fiu-utils libfiu-dev)
# shellcheck disable=SC2034
# What scripts/demo.sh needs.
TMF_DEPS_DEMO=(cmake g++ make libboost-dev)
# shellcheck disable=SC2034
# What scripts/plot_bench.py needs (the README's benchmark charts; not CI): gnuplot draws, and
# python3 reads Google Benchmark's JSON (a shell script cannot parse JSON without another tool).
TMF_DEPS_PLOT=(gnuplot-nox python3)

# shellcheck disable=SC2034
# The windows stage of scripts/test.sh (installed by that stage only, without recommended
# packages): the mingw-w64 cross compiler with posix threads and its Windows headers and
# libraries, and Wine 8 (64-bit) to run the cross-built tests.
TMF_DEPS_WINDOWS=(g++-mingw-w64-x86-64 mingw-w64-x86-64-dev wine wine64)

# tmf_missing_packages PKG...: prints the packages that are not installed, one per line.
tmf_missing_packages() {
  local pkg status
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
      printf '%s\n' "$pkg"
    fi
  done
}

# tmf_require_packages PKG...: installs or asks for the missing packages (see above).
tmf_require_packages() {
  if [[ "${TMF_SKIP_DEPS:-}" == 1 ]]; then
    return 0
  fi
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: dpkg-query not found (not Debian/Ubuntu?); not checking for: $*" >&2
    echo "deps: make sure the equivalents of these packages are installed." >&2
    return 0
  fi
  local missing=()
  mapfile -t missing < <(tmf_missing_packages "$@")
  if [[ ${#missing[@]} -eq 0 ]]; then
    return 0
  fi
  if [[ "$(id -u)" -eq 0 ]]; then
    echo "deps: installing ${missing[*]}" >&2
    local no_recommends=()
    [[ "${TMF_DEPS_NO_RECOMMENDS:-}" != 1 ]] || no_recommends=(--no-install-recommends)
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${no_recommends[@]}" "${missing[@]}"; }; then
      echo "deps: apt-get failed to install: ${missing[*]}" >&2
      exit 1
    fi
    local still_missing=()
    mapfile -t still_missing < <(tmf_missing_packages "$@")
    if [[ ${#still_missing[@]} -ne 0 ]]; then
      echo "deps: still missing after apt-get: ${still_missing[*]}" >&2
      exit 1
    fi
  else
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: install them with:" >&2
    echo "sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
}
