#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR MIT
#
# Builds the libFuzzer targets with clang in build/fuzz and runs each one, one after the
# other, for the given time on a copy of its seed corpus (fuzz/corpus/<target>/ is never
# modified). Prints, per target, libFuzzer's last status line (executions, cov: covered
# edges, ft: features, corpus size) and its final stats, then a summary table.
#
# Usage: scripts/fuzz.sh [seconds] [target...]
#   seconds  per target (default 60)
#   target   fuzz_header, fuzz_log, fuzz_heap, fuzz_untyped, fuzz_btree (default: all five)
# Environment: TMF_JOBS (default 2) build jobs; TMF_FUZZ_NICE (default 0) niceness of the runs;
#   TMF_FUZZ_ARGS extra libFuzzer arguments (e.g. "-jobs=2 -workers=2").
# Work files: build/fuzz/run/<target>/{corpus,artifacts,files,log}; a crash leaves its input in
# artifacts/ (reproduce: build/fuzz/fuzz/<target> <file>; minimise: add -minimize_crash=1
# -runs=100000). Exits non-zero if a target crashed or the build failed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(fuzz_header fuzz_log fuzz_heap fuzz_untyped fuzz_btree)
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: seconds must be a number, not '$seconds'" >&2; exit 2; }

build="$root/build/fuzz"
cxx=${CXX_FUZZ:-clang++}
command -v "$cxx" >/dev/null || { echo "fuzz.sh: $cxx not found (Debian: apt-get install clang)" >&2; exit 2; }

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DTMF_BUILD_FUZZERS=ON -DTMF_BUILD_TESTS=OFF -DTMF_BUILD_EXAMPLES=OFF -DTMF_BUILD_BENCHMARKS=OFF \
  -DTMF_INSTALL=OFF >/dev/null
cmake --build "$build" -j "${TMF_JOBS:-2}" --target "${targets[@]}"

status=0
summary=()
for t in "${targets[@]}"; do
  run="$build/run/$t"
  rm -rf "$run"
  mkdir -p "$run/corpus" "$run/artifacts" "$run/files"
  cp "$root/fuzz/corpus/$t/"* "$run/corpus/"
  echo "== $t: ${seconds}s"
  rc=0
  # shellcheck disable=SC2086
  TMF_FUZZ_DIR="$run/files" UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    nice -n "${TMF_FUZZ_NICE:-0}" "$build/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$run/artifacts/" ${TMF_FUZZ_ARGS:-} "$run/corpus" \
    >"$run/log" 2>&1 || rc=$?
  last=$(grep -E '^#[0-9]+' "$run/log" | tail -1 || true)
  grep -E '^stat::' "$run/log" || true
  echo "$last"
  if [[ $rc -ne 0 ]]; then
    status=1
    echo "$t: FAILED (exit $rc); see $run/log and $run/artifacts/"
    grep -E 'ERROR|tmf fuzz|runtime error|Test unit written' "$run/log" | head -20 || true
    summary+=("$t  FAILED  $last")
  else
    summary+=("$t  ok  $last")
  fi
done
echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit $status
