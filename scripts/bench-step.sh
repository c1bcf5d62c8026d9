#!/usr/bin/env bash
# Repeats `llama-train bench` and reports the median of each figure over the runs.
# usage: scripts/bench-step.sh BIN CONFIG THREADS RUNS
set -euo pipefail
bin=$1 config=$2 threads=$3 runs=$4
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for i in $(seq "$runs"); do
    "$bin" bench --config "$config" --threads "$threads" --steps 5 --warmup 2 --quiet | tail -n 1 | tee -a "$results"
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
keys = ["tokens_per_s", "model_gflops", "sgemm_gflops", "mfu_vs_sgemm", "peak_rss_mb", "step_ms_median"]
print(f"median of {len(rows)} runs ({rows[0]['config']}, {rows[0]['threads']} thread(s)):")
for k in keys:
    values = [r[k] for r in rows]
    print(f"  {k:16s} {statistics.median(values):10.3f}   (min {min(values):.3f}, max {max(values):.3f})")
print(json.dumps({k: statistics.median(r[k] for r in rows) for k in keys} | {"runs": len(rows)}))
PY
