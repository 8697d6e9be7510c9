#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 OR MIT
"""Turns Google Benchmark JSON output into ratio charts (gnuplot, PNG): tmf against each peer.

Usage: scripts/plot_bench.py OUT_DIR RESULT.json...
  Each RESULT.json (from --benchmark_out=RESULT.json --benchmark_out_format=json) gives
  OUT_DIR/<stem>.png: one bar per case and peer, tmf time / peer time, on a log scale
  (below 1: tmf is faster), and OUT_DIR/<stem>.dat, the numbers plotted.

How cases pair up: a benchmark name is BM_<tokens>[/<args>]. The tmf runs are the ones with
a `tmf` token; a peer run names its peer (lmdb, malloc, boost_ipc, boost_ipc_nolock,
std_map, absl). A peer run is compared with every tmf run whose other tokens include the
peer's other tokens, in order, and whose argument values begin with the peer's
(BM_insert_lmdb/sync:1 against BM_insert_btree_tmf/full:1, BM_open_lmdb/MiB:1 against
BM_open_tmf/MiB:1/full:1); run settings in names (min_time:..., real_time) are ignored. With repetitions, the median is used.
Needs gnuplot (Debian: gnuplot-nox).
"""

import json
import os
import re
import shutil
import subprocess
import sys

PEERS = ["boost_ipc_nolock", "boost_ipc", "std_map", "malloc", "lmdb", "absl"]
UNIT = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def split(name):
    """'BM_read_tmf_txn/MiB:1' -> (['read', 'tmf', 'txn'], ('1',))"""
    base, _, args = name.partition("/")
    if base.startswith("BM_"):
        base = base[3:]
    values = tuple(a.split(":")[-1] for a in args.split("/") if a and not is_setting(a))
    return base.split("_"), values


def is_setting(arg):
    """Run settings in a name (min_time:0.200, real_time, iterations:20), not case arguments."""
    return arg in ("real_time", "process_time") or arg.split(":")[0] in ("min_time", "iterations", "repeats")


def label_of(name):
    base, _, args = name.partition("/")
    kept = [a for a in args.split("/") if a and not is_setting(a)]
    return "/".join([base[3:] if base.startswith("BM_") else base] + kept)


def find_peer(tokens):
    joined = "_".join(tokens)
    for p in PEERS:
        m = re.search(r"(^|_)" + re.escape(p) + r"(_|$)", joined)
        if m:
            rest = (joined[: m.start()] + "_" + joined[m.end():]).strip("_")
            return p, [t for t in rest.split("_") if t]
    return None, tokens


def is_subsequence(small, big):
    it = iter(big)
    return all(t in it for t in small)


def load(path):
    with open(path) as f:
        data = json.load(f)
    runs = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if b.get("error_occurred"):
            continue
        name = b.get("run_name", b["name"])
        ns = float(b["real_time"]) * UNIT.get(b.get("time_unit", "ns"), 1.0)
        if b.get("run_type") == "aggregate":
            runs[name] = ns  # the median wins over single iterations
        else:
            runs.setdefault(name, ns)
    return runs


def pairs(runs):
    tmf, peers = [], []
    for name, ns in runs.items():
        tokens, values = split(name)
        if "tmf" in tokens:
            tmf.append((name, [t for t in tokens if t != "tmf"], values, ns))
            continue
        peer, rest = find_peer(tokens)
        if peer:
            peers.append((name, peer, rest, values, ns))
    out = []
    for pname, peer, rest, values, pns in sorted(peers):
        for tname, ttokens, tvalues, tns in sorted(tmf):
            if tvalues[: len(values)] == values and is_subsequence(rest, ttokens) and pns > 0:
                label = label_of(tname) + " vs " + peer
                out.append((label, tns / pns))
    return out


def plot(out_dir, stem, rows):
    dat = os.path.join(out_dir, stem + ".dat")
    png = os.path.join(out_dir, stem + ".png")
    with open(dat, "w") as f:
        f.write("# case\tratio (tmf time / peer time)\n")
        for label, ratio in rows:
            f.write('"%s"\t%.4g\n' % (label, ratio))
    height = max(240, 40 + 26 * len(rows))
    script = f"""
set terminal pngcairo noenhanced size 900,{height} font "sans,9"
set output "{png}"
set title "{stem}: tmf time / peer time (below 1: tmf is faster)"
set style fill solid 0.8 border -1
set logscale x 10
set xrange [0.01:100]
set xtics ("0.01" 0.01, "0.1" 0.1, "1" 1, "10" 10, "100" 100)
set grid xtics
unset key
set ytics nomirror
set yrange [-0.7:{len(rows) - 0.3}]
set arrow from 1, graph 0 to 1, graph 1 nohead lw 2 lc rgb "#aa0000"
set lmargin 38
# Each bar runs from 1 to the ratio: left of the red line tmf is faster, right slower.
plot "{dat}" using 2:0:(($2 < 1 ? $2 : 1)):(($2 < 1 ? 1 : $2)):($0 - 0.35):($0 + 0.35):ytic(1) \\
       with boxxyerror lc rgb "#3b6fb6", \\
     "" using (($2 < 1 ? 1 : $2) * 1.15):0:(sprintf("%.2g", $2)) with labels left
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    return png


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    if not shutil.which("gnuplot"):
        sys.stderr.write("plot_bench: gnuplot not found (Debian: apt-get install gnuplot-nox)\n")
        return 1
    out_dir = argv[1]
    os.makedirs(out_dir, exist_ok=True)
    status = 0
    for path in argv[2:]:
        stem = os.path.splitext(os.path.basename(path))[0]
        rows = pairs(load(path))
        if not rows:
            sys.stderr.write(f"plot_bench: {path}: no tmf run pairs with a peer run\n")
            status = 1
            continue
        png = plot(out_dir, stem, rows)
        print(f"{png}: {len(rows)} ratios")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
