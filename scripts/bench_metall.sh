#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR MIT
#
# tmf against LLNL Metall (issue 14): the adjacency-list build and the block shapes.
# Metall (header-only) needs Boost >= 1.80; Debian 12's default is 1.74 and libboost1.81-dev
# conflicts with it, so Metall is a benchmark-only peer compiled against an unpacked copy of
# Boost 1.81's headers, in its own program (bench_adjacency_metall, which also runs tmf and
# glibc compiled against the same headers). This script builds it and the 1.74 programs
# (bench_adjacency: tmf, Boost.Interprocess, std::; bench_small: tmf, glibc, Boost), runs them
# back to back, and prints the medians and the ratios. Nothing is downloaded: give it
#   METALL_INCLUDE   Metall's include/ (default /opt/metall/include), e.g.
#                      git clone --branch v0.30 https://github.com/LLNL/metall /opt/metall-src
#                      METALL_INCLUDE=/opt/metall-src/include
#   BOOST181_INCLUDE Boost 1.81's headers (default /opt/boost181/usr/include), e.g.
#                      (cd /tmp && apt-get download libboost1.81-dev)
#                      dpkg -x /tmp/libboost1.81-dev_*.deb /opt/boost181
# Usage: scripts/bench_metall.sh [REPETITIONS (default 3)]
# Environment: TMF_BENCH_DIR (default /tmp) for the files; BUILD_DIR (default build/metall);
# TMF_JOBS (default 2). Results: $BUILD_DIR/results/*.json. Not part of CI.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reps=${1:-3}
metall=${METALL_INCLUDE:-/opt/metall/include}
boost=${BOOST181_INCLUDE:-/opt/boost181/usr/include}
build=${BUILD_DIR:-$root/build/metall}
jobs=${TMF_JOBS:-2}
export TMF_BENCH_DIR=${TMF_BENCH_DIR:-/tmp}

[[ -f $metall/metall/metall.hpp ]] || { echo "bench_metall: no Metall in $metall (see the header of $0)" >&2; exit 2; }
[[ -f $boost/boost/version.hpp ]] || { echo "bench_metall: no Boost headers in $boost (see the header of $0)" >&2; exit 2; }
grep -q 'define BOOST_VERSION 10[89]\|define BOOST_VERSION 1[1-9]' "$boost/boost/version.hpp" ||
  { echo "bench_metall: $boost is older than Boost 1.80" >&2; exit 2; }

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTMF_BUILD_TESTS=OFF -DTMF_BUILD_EXAMPLES=OFF \
  -DTMF_BUILD_TOOLS=OFF -DTMF_METALL_INCLUDE_DIR="$metall" -DTMF_BOOST181_INCLUDE_DIR="$boost" >/dev/null
cmake --build "$build" -j"$jobs" --target bench_adjacency bench_small bench_adjacency_metall >/dev/null

out=$build/results
mkdir -p "$out"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
run() {  # program filter
  "$build/benchmarks/$1" --benchmark_filter="$2" --benchmark_repetitions="$reps" \
    --benchmark_display_aggregates_only=true --benchmark_out="$out/$1.json" --benchmark_out_format=json
}
run bench_adjacency_metall .
run bench_adjacency .
run bench_small 'BM_(small|large)_'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" "$reps" <<'EOF'
import json, sys, os
out = sys.argv[1]
import statistics
runs = {}
for prog in ("bench_adjacency_metall", "bench_adjacency", "bench_small"):
    with open(os.path.join(out, prog + ".json")) as f:
        for b in json.load(f)["benchmarks"]:
            if b.get("run_type") != "iteration" or b.get("error_occurred"):
                continue
            name = b["run_name"].replace("/iterations:1", "").replace("/real_time", "")
            runs.setdefault((prog, name), []).append(b)
med = {}  # the median of every number over the repetitions
for k, bs in runs.items():
    m = dict(bs[0])
    for key, v in bs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            m[key] = statistics.median(b[key] for b in bs)
    med[k] = m
def get(prog, name, key="real_time"):
    b = med.get((prog, name))
    return None if b is None else b[key]
def row(label, a, b, key="real_time"):
    x, y = get(*a, key=key), get(*b, key=key)
    if x is None or y is None:
        print(f"| {label} | missing | | |")
        return
    print(f"| {label} | {x:,.1f} | {y:,.1f} | **{x / y:.2f}** |")
M, A, S = "bench_adjacency_metall", "bench_adjacency", "bench_small"
for key in ("real_time", "cpu_time"):
    print(f"\n{key} in ms, medians of {sys.argv[2]} repetitions; ratio = first / second")
    print("| case | first | second | ratio |\n|---|---|---|---|")
    row("adjacency no_sync: tmf / Metall (Metall's binary)", (M, "BM_adjacency_tmf/durable:0"), (M, "BM_adjacency_metall/durable:0"), key)
    row("adjacency durable: tmf full / Metall flush per batch (Metall's binary)", (M, "BM_adjacency_tmf/durable:1"), (M, "BM_adjacency_metall/durable:1"), key)
    row("adjacency no_sync: tmf (1.74 binary) / Metall", (A, "BM_adjacency_tmf/durable:0"), (M, "BM_adjacency_metall/durable:0"), key)
    row("adjacency durable: tmf (1.74 binary) / Metall", (A, "BM_adjacency_tmf/durable:1"), (M, "BM_adjacency_metall/durable:1"), key)
    row("adjacency no_sync: tmf / Boost.Interprocess (1.74 binary)", (A, "BM_adjacency_tmf/durable:0"), (A, "BM_adjacency_boost_ipc/durable:0"), key)
    row("adjacency durable: tmf / Boost.Interprocess flush per batch (1.74 binary)", (A, "BM_adjacency_tmf/durable:1"), (A, "BM_adjacency_boost_ipc/durable:1"), key)
    row("adjacency no_sync: tmf / std:: in memory (1.74 binary)", (A, "BM_adjacency_tmf/durable:0"), (A, "BM_adjacency_std"), key)
    row("adjacency: Metall no flush / std:: in memory (Metall's binary)", (M, "BM_adjacency_metall/durable:0"), (M, "BM_adjacency_std"), key)
    row("8..256 B blocks: tmf / Metall (Metall's binary)", (M, "BM_small_tmf"), (M, "BM_small_metall"), key)
    row("8..256 B blocks: tmf / glibc (Metall's binary)", (M, "BM_small_tmf"), (M, "BM_small_malloc"), key)
    row("8..256 B blocks: tmf (bench_small) / Metall", (S, "BM_small_tmf"), (M, "BM_small_metall"), key)
    row("8..256 B blocks: tmf / Boost.Interprocess (bench_small)", (S, "BM_small_tmf"), (S, "BM_small_boost_ipc"), key)
    row("1..64 KiB blocks: tmf / Metall (Metall's binary)", (M, "BM_large_tmf"), (M, "BM_large_metall"), key)
    row("1..64 KiB blocks: tmf / glibc (Metall's binary)", (M, "BM_large_tmf"), (M, "BM_large_malloc"), key)
    row("1..64 KiB blocks: tmf (bench_small) / Metall", (S, "BM_large_tmf"), (M, "BM_large_metall"), key)
    row("1..64 KiB blocks: tmf / Boost.Interprocess (bench_small)", (S, "BM_large_tmf"), (S, "BM_large_boost_ipc"), key)
print("\nadjacency builds, medians (ms real; build_s and close_s in s; file / disk MB after close):")
for prog, name in sorted(k for k in med if "adjacency" in k[1]):
    b = med[(prog, name)]
    print(f"  {prog:24} {name:34} {b['real_time']:9,.1f} ms  build {b.get('build_s', 0):.3f}  close {b.get('close_s', 0):.3f}"
          f"  file {b.get('file_MB', 0):7.1f}  disk {b.get('disk_MB', 0):6.1f}  {b.get('label', '')}")
EOF
