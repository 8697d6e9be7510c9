#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR MIT
#
# Builds the quickstart example (build/demo, Release) and runs it a few times on one file to
# show that the data persists between runs.  Usage: scripts/demo.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
tmf_require_packages "${TMF_DEPS_DEMO[@]}"

build=build/demo
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DTMF_BUILD_TESTS=OFF -DTMF_BUILD_BENCHMARKS=OFF -DTMF_BUILD_EXAMPLES=ON
cmake --build "$build" -j2 --target quickstart

work=$(mktemp -d "${TMPDIR:-/tmp}/tmf-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
file="$work/todo.tmf"
quickstart=("$build/examples/quickstart" --file "$file")

run() {
  local shown="" arg
  for arg in "$@"; do
    if [[ "$arg" == *[[:space:]]* ]]; then shown+=" \"$arg\""; else shown+=" $arg"; fi
  done
  echo
  echo "\$ quickstart --file $file$shown"
  "${quickstart[@]}" "$@"
}

echo
echo "== Each command below is a separate process; the list lives in $file"
run add "buy milk"
run add "call mum"
run list
