#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR MIT
#
# Builds and runs every test. Stages, each in its own build directory build/<stage>:
#   release  what a user types: -DCMAKE_BUILD_TYPE=Release and nothing else (so warnings are
#            not fatal; their number is in the summary, the log in build/release/build.log);
#            tests, examples, tools and benchmarks; every test (ctest -j2), then the
#            fault-injection stage on its own (ctest -L fault -V: libfiu's fiu-run; its
#            "fault stage" summary lines are printed and kept in build/release/fault.log)
#   asan     clang++ -Werror, Debug -O1, TMF_SANITIZE="address;undefined"; tests and the libFuzzer
#            targets (short runs, label fuzz); every label but package, fault; run with
#            TMF_TRACKER=fallback, so that the whole suite also runs on the mprotect write tracker
#            (the other stages use the kernel's where it has one). One stage for Clang's warnings,
#            the sanitizers and the fuzzers: the test build is most of CI's time, and a separate
#            clang stage compiled every test once more
#   tsan     RelWithDebInfo, TMF_SANITIZE=thread; the concurrency tests (ctest -L concurrency)
#   m32      -O2 without -g, -m32, GoogleTest built from source; tests and examples; all but fault
#   debug    what a user types: -DCMAKE_BUILD_TYPE=Debug, with TMF_BUILD_TESTS=OFF only
#            because the asan stage already builds every test in Debug; examples, tools and
#            benchmarks built, warnings on but not fatal; nothing run.
#            Fails only if the build fails; the warnings are counted (build/debug/build.log)
#   windows  cross-built for 64-bit Windows with mingw-w64
#            (cmake/toolchain-mingw-w64.cmake, -O1, GoogleTest from source): the tests listed in
#            TMF_WINDOWS_TESTS (tests/CMakeLists.txt), the examples and the tmf command, run under Wine
#            (ctest through CMAKE_CROSSCOMPILING_EMULATOR, a Wine prefix in build/windows/wine,
#            one persistent wineserver); tests that fork are reported as skipped. Its packages
#            (TMF_DEPS_WINDOWS) are installed by this stage only
# -Werror (TMF_WERROR=ON) is set in the asan (Clang) and m32 (GCC) stages: GCC and Clang warnings fail CI
# there, while the release and debug stages show that a user's plain build passes.
#
# Usage: scripts/test.sh [--quick | --stage NAME]...
#   --quick       the release stage only
#   --stage NAME  only this stage (repeatable)
# Environment: TMF_JOBS (default 2) parallel jobs; CMAKE_GENERATOR as usual; TMF_FAULT_ROUNDS
# (default 60) rounds of the fault stage.
# Prints one summary line per stage and "N passed, N failed" over all stages; exits non-zero if
# any stage failed (configure, build or tests). A stage whose build fails still runs its tests:
# the targets that did not build show up as <target>_NOT_BUILT failures.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

all_stages=(release asan tsan m32 debug windows)
opt_in_stages=()  # stages run only when named with --stage
stages=()
usage() { awk 'NR >= 4 && !/^#/ { exit } NR >= 4 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) stages=(release) ;;
    --stage)
      [[ $# -ge 2 ]] || { echo "test.sh: --stage needs a name (${all_stages[*]})" >&2; exit 2; }
      stages+=("$2")
      shift ;;
    --stage=*) stages+=("${1#--stage=}") ;;
    -h|--help) usage; exit 0 ;;
    *) echo "test.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ ${#stages[@]} -gt 0 ]] || stages=("${all_stages[@]}")
for s in "${stages[@]}"; do
  case " ${all_stages[*]} ${opt_in_stages[*]} " in
    *" $s "*) ;;
    *) echo "test.sh: unknown stage '$s' (stages: ${all_stages[*]} ${opt_in_stages[*]})" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/deps.sh
source scripts/deps.sh
tmf_require_packages "${TMF_DEPS_ALL[@]}"
case " ${stages[*]} " in
  *" windows "*) TMF_DEPS_NO_RECOMMENDS=1 tmf_require_packages "${TMF_DEPS_WINDOWS[@]}" ;;
esac

jobs=${TMF_JOBS:-2}
total_passed=0
total_failed=0
failed_stages=()
summary=()

# The options of a stage: its CMake arguments, build target and ctest arguments.
stage_config() {
  local stage=$1
  build_target=()
  ctest_args=()
  stage_env=()
  fault_step=0
  build_only=0
  count_warnings=0
  case "$stage" in
    release)
      # The plain Release build (-O3, TMF_WERROR off by default): GCC 12 reports false
      # -Wrestrict / -Wstringop-overflow warnings inside libstdc++ at -O3 (bug 105329).
      # TMF_WERROR=OFF is the default, given only because an older build directory may cache ON.
      cmake_args=(-DCMAKE_BUILD_TYPE=Release -DTMF_WERROR=OFF)
      count_warnings=1
      # The fault stage runs after the other tests, alone and verbose (see run_fault_step).
      ctest_args=(-LE fault)
      fault_step=1 ;;
    asan)
      # Clang: its warnings (-Werror) and the libFuzzer targets come with the sanitizer build
      # (GCC's warnings under -fsanitize have false positives; GCC's -Werror is the m32 stage's).
      cmake_args=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" -DCMAKE_CXX_COMPILER=clang++
                  "-DTMF_SANITIZE=address;undefined" -DTMF_WERROR=ON
                  -DTMF_BUILD_TESTS=ON -DTMF_BUILD_EXAMPLES=ON -DTMF_BUILD_BENCHMARKS=OFF
                  -DTMF_BUILD_FUZZERS=ON)
      ctest_args=(-LE 'package|fault')
      stage_env=(TMF_TRACKER=fallback) ;;
    tsan)
      cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTMF_SANITIZE=thread -DTMF_WERROR=OFF
                  -DTMF_BUILD_TESTS=ON -DTMF_BUILD_EXAMPLES=OFF -DTMF_BUILD_BENCHMARKS=OFF)
      build_target=(--target tmf_concurrency_tests)
      ctest_args=(-L concurrency --no-tests=ignore) ;;
    m32)
      # No fault stage: the fiu preload on the system is 64-bit. No -g: debug information is a
      # large part of compiling the tests, and a failure here is read from its message.
      cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -DNDEBUG" -DCMAKE_CXX_FLAGS=-m32 -DTMF_GTEST_FROM_SOURCE=ON -DTMF_WERROR=ON
                  -DTMF_BUILD_TESTS=ON -DTMF_BUILD_EXAMPLES=ON -DTMF_BUILD_BENCHMARKS=OFF)
      ctest_args=(-LE fault) ;;
    debug)
      # The defaults, the build a user gets, but for the tests: the asan stage compiles
      # every one of them in Debug already, and CI's time is short.
      cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DTMF_WERROR=OFF -DTMF_BUILD_TESTS=OFF)
      build_only=1 ;;
    windows)
      # -O1: the cross build is most of this stage's time; the tests only need it correct.
      cmake_args=(-DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-mingw-w64.cmake -DCMAKE_BUILD_TYPE=Release
                  -DCMAKE_CXX_FLAGS_RELEASE=-O1 -DTMF_GTEST_FROM_SOURCE=ON -DTMF_WERROR=OFF
                  -DTMF_BUILD_TESTS=ON -DTMF_BUILD_EXAMPLES=ON -DTMF_BUILD_TOOLS=ON -DTMF_BUILD_BENCHMARKS=OFF)
      # One retry: Wine now and then fails to start a test process (it exits at once, no output,
      # as btree_test's std::allocator case once did in 0.01 s); a real failure fails twice.
      ctest_args=(--no-tests=error --repeat until-pass:2)
      stage_env=(WINEDEBUG=-all "WINEPREFIX=$root/build/windows/wine" WINEDLLOVERRIDES=mscoree,mshtml=) ;;
  esac
}

# ThreadSanitizer (GCC 12, Clang 14) aborts with "unexpected memory mapping" when the kernel
# randomises mmap with more than 28 bits; run the tsan tests without ASLR then, if allowed.
tsan_wrapper() {
  tsan_prefix=()
  local bits
  bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)
  if [[ "$bits" -gt 28 ]] && setarch "$(uname -m)" -R true 2>/dev/null; then
    echo "test.sh: vm.mmap_rnd_bits=$bits: running the tsan tests under setarch -R"
    tsan_prefix=(setarch "$(uname -m)" -R)
  fi
}

# The fault-injection stage of a build directory: ctest -L fault -V into $dir/fault.log. Prints
# its "fault stage" summary lines (and the whole log if it failed); sets fault_passed,
# fault_failed, fault_rc and fault_lines.
run_fault_step() {
  local dir=$1
  local log="$dir/fault.log"
  fault_passed=0 fault_failed=0 fault_rc=0 fault_lines=()
  echo
  echo "------------------- fault stage (ctest -L fault -V, log: $log) -------------------"
  (cd "$dir" && ctest -L fault -V --no-tests=error </dev/null) >"$log" 2>&1 || fault_rc=$?
  mapfile -t fault_lines < <(sed -n 's/^[0-9]*: \(fault stage.*\)/\1/p' "$log")
  # A skipped test says why on the line after GoogleTest's "<file>:<line>: Skipped".
  local skipped=()
  mapfile -t skipped < <(grep -A1 -E '^[0-9]+: .*: Skipped$' "$log" | sed -n 's/^[0-9]*: \(.*\)/\1/p' |
    grep -v ': Skipped$' | sort -u)
  local s
  for s in "${skipped[@]}"; do
    fault_lines+=("fault stage skipped: $s")
  done
  if [[ $fault_rc -ne 0 ]]; then
    cat "$log"
  else
    grep -E 'tests passed|tests failed' "$log" || true
  fi
  printf '%s\n' "${fault_lines[@]}"
  local line
  line=$(grep -Eo '[0-9]+ tests failed out of [0-9]+' "$log" | tail -n 1 || true)
  if [[ -n "$line" ]]; then
    fault_failed=$(awk '{print $1}' <<<"$line")
    fault_passed=$(( $(awk '{print $NF}' <<<"$line") - fault_failed ))
  fi
}

run_stage() {
  local stage=$1
  local dir="build/$stage"
  local log="$dir/ctest.log"
  local status=ok what=""
  local t0 t1 t2 t3
  stage_config "$stage"
  echo
  echo "=================== stage $stage ($dir) ==================="

  t0=$SECONDS
  if ! cmake -S . -B "$dir" "${cmake_args[@]}"; then
    summary+=("$(printf '%-8s FAILED at configure (%ss)' "$stage" $((SECONDS - t0)))")
    failed_stages+=("$stage")
    return
  fi
  t1=$SECONDS

  # Keep going past a file that does not compile, so that the other tests still run.
  local keep_going=()
  case "$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$dir/CMakeCache.txt")" in
    *Makefiles*) keep_going=(-- -k) ;;
    Ninja*) keep_going=(-- -k 0) ;;
  esac
  local build_rc=0
  cmake --build "$dir" -j"$jobs" "${build_target[@]}" "${keep_going[@]}" 2>&1 | tee "$dir/build.log" ||
    build_rc=$?
  if [[ $build_rc -ne 0 ]]; then
    status=failed
    what="build failed; "
  fi
  t2=$SECONDS
  local warnings=""
  if [[ $build_only -eq 1 || $count_warnings -eq 1 ]]; then
    warnings="$(grep -c 'warning:' "$dir/build.log" || true) warnings, "
  fi
  if [[ $build_only -eq 1 ]]; then
    [[ $status == ok ]] || failed_stages+=("$stage")
    summary+=("$(printf '%-8s %-6s %sbuilt, %s(configure %ss, build %ss)' "$stage" \
      "$([[ $status == ok ]] && echo OK || echo FAILED)" "$what" "$warnings" $((t1 - t0)) $((t2 - t1)))")
    return
  fi

  local prefix=()
  if [[ "$stage" == tsan ]]; then
    tsan_wrapper
    prefix=("${tsan_prefix[@]}")
  fi
  if [[ "$stage" == windows ]]; then
    # One wineserver for the whole stage (a Wine process then starts in ~0.1 s instead of
    # seconds); it exits by itself 30 s after its last client.
    mkdir -p "$root/build/windows/wine"
    env "${stage_env[@]}" wineserver -p30 || true
    env "${stage_env[@]}" wineboot -i >/dev/null 2>&1 || true
  fi
  local ctest_rc=0
  [[ ${#stage_env[@]} -eq 0 ]] || echo "test.sh: stage $stage runs its tests with ${stage_env[*]}"
  (cd "$dir" && env "${stage_env[@]}" "${prefix[@]}" ctest -j"$jobs" --output-on-failure "${ctest_args[@]}" </dev/null) 2>&1 |
    tee "$log" || ctest_rc=$?
  t3=$SECONDS
  local fault_time=""
  fault_passed=0 fault_failed=0 fault_rc=0 fault_lines=()
  if [[ $fault_step -eq 1 ]]; then
    run_fault_step "$dir"
    fault_time=", fault stage $((SECONDS - t3))s"
    if [[ $fault_rc -ne 0 ]]; then
      status=failed
      [[ $fault_failed -gt 0 ]] || what+="fault stage ctest exited with $fault_rc; "
    fi
  fi

  local passed=0 failed=0 line
  line=$(grep -Eo '[0-9]+ tests failed out of [0-9]+' "$log" | tail -n 1 || true)
  if [[ -n "$line" ]]; then
    failed=$(awk '{print $1}' <<<"$line")
    passed=$(( $(awk '{print $NF}' <<<"$line") - failed ))
  fi
  if [[ $ctest_rc -ne 0 ]]; then
    status=failed
    [[ $failed -gt 0 ]] || what+="ctest exited with $ctest_rc; "
  fi
  passed=$((passed + fault_passed))
  failed=$((failed + fault_failed))
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  [[ $status == ok ]] || failed_stages+=("$stage")
  summary+=("$(printf '%-8s %-6s %s%d passed, %d failed (%sconfigure %ss, build %ss, tests %ss%s)%s' \
    "$stage" "$([[ $status == ok ]] && echo OK || echo FAILED)" "$what" "$passed" "$failed" "$warnings" \
    $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) "$fault_time" "${stage_env[*]:+ with ${stage_env[*]}}")")
  local l
  for l in "${fault_lines[@]}"; do
    summary+=("         $l")
  done
}

for stage in "${stages[@]}"; do
  run_stage "$stage"
done

echo
echo "=================== summary ==================="
printf '%s\n' "${summary[@]}"
echo "$total_passed passed, $total_failed failed"
if [[ ${#failed_stages[@]} -gt 0 ]]; then
  echo "failed stages: ${failed_stages[*]}"
  exit 1
fi
