#!/usr/bin/env bash
# TinyLlama-1.1B's shape (dim 2048, 22 layers, 32 heads, 4 KV heads, ffn 5632, vocab 32000) at 512 tokens,
# fully sharded with recomputation, for 2 steps under mpirun -np 2 on this machine, where replicated training
# would need 2 × 16.7 GiB. Prints each rank's peak RSS beside what `plan` says a rank holds.
# usage: scripts/bench-tinyllama.sh BIN [CONFIG]
set -euo pipefail
bin=$1 config=${2:-configs/tinyllama-1.1b.json}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
plan=$("$bin" plan --config "$config" --ranks 2 --json | tail -n 1)
echo "plan: $("$bin" plan --config "$config" --ranks 2 | grep -E '^(memory per rank|by mode)')"
# Each rank under /usr/bin/time, its peak RSS to a file named by its rank.
mpirun -np 2 --bind-to none sh -c 'exec /usr/bin/time -f "%M" -o "$0/rss.$OMPI_COMM_WORLD_RANK" "$@"' "$work" \
    "$bin" pretrain --config "$config" --metrics "$work/metrics.jsonl" --log-every 1
python3 - "$work" "$plan" <<'PY'
import glob, json, sys
work, plan = sys.argv[1], json.loads(sys.argv[2])
planned = plan["memory_per_rank_bytes"]
rows = [json.loads(line) for line in open(f"{work}/metrics.jsonl")]
result = {"plan_bytes_per_rank": planned, "steps": len(rows), "step_s": [r["step_s"] for r in rows],
          "comm_s": [r["comm_s"] for r in rows], "exposed_comm_s": [r["exposed_comm_s"] for r in rows]}
for path in sorted(glob.glob(f"{work}/rss.*")):
    rank = path.rsplit(".", 1)[1]
    rss = int(open(path).read().split()[-1]) * 1024
    result[f"rank{rank}_peak_rss_bytes"] = rss
    print(f"rank {rank}: peak RSS {rss / 2**30:.2f} GiB, plan {planned / 2**30:.2f} GiB, ratio {rss / planned:.3f}")
print(json.dumps(result))
PY
