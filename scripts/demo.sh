#!/usr/bin/env bash
# `make demo` (after the idempotent set-up): run the quick benchmark suite (3 seeds over the two
# local workers its [launch] table asks for), keep its raw results in results/raw and regenerate
# results/ from them. Rerunning reuses every finished run.
set -uo pipefail
cd "$(dirname "$0")/.."
BT=${BT:-.venv/bin/boosting-tickets}
start=$(date +%s)

"$BT" bench run quick
bench_status=$?
# A failed run is listed in the results file and left out of the tables; still regenerate them.
if [ -f runs/bench/quick/results.json ]; then
  mkdir -p results/raw
  cp runs/bench/quick/results.json results/raw/quick-results.json
  # Only this suite: other suites under runs/bench may use other protocols.
  "$BT" tables results/raw --out results || exit $?
else
  exit "$bench_status"
fi
echo "demo: bench + tables took $(( $(date +%s) - start )) s (set-up excluded); see results/README.md"
exit "$bench_status"
