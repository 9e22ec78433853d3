#!/usr/bin/env bash
# Runs every benchmark in full, one after another (so they do not compete for the two
# cores), and keeps each one's output in outputs/benchmarks/<name>.txt. The README's
# figures come from these files.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p outputs/benchmarks
for name in "${@:-cd_speed text_speed cd_memory scale_speed locality_bound attribute_passes acd_speed trim_table2 cdep_cost sst_reality cdep_experiments awd_simulation precision}"; do
  for bench in $name; do
    echo "== $bench"
    .venv/bin/python "benchmarks/$bench.py" | tee "outputs/benchmarks/$bench.txt"
  done
done
