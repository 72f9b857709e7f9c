#!/usr/bin/env bash
# Run every benchmark; results go to benchmarks/results/*.md. Usage: benchmarks/run_all.sh [--quick]
# Extra arguments (e.g. --llm DIR, --threads N) are passed to every script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
for bench in scoring ranking training speedups allocator; do
    echo "== bench_${bench} $*"
    nice -n "${NICE:-5}" "$PYTHON" "benchmarks/bench_${bench}.py" "$@"
done
