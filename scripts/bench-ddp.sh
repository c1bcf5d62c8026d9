#!/usr/bin/env bash
# Data-parallel efficiency on this machine, weak scaling: the same micro-batches per rank on 1 and on N ranks
# (bench-small, synthetic tokens, 2 micro-steps per step), run one after the other in this script.
# Reports per-rank tokens/s (median over steps after warm-up), their ratio, and the communication time and how
# much of it was exposed. SHARDING=none|optimizer|gradients|full picks the mode of the N-rank run (the 1-rank
# baseline is always replicated).
# usage: [SHARDING=mode] scripts/bench-ddp.sh BIN [CONFIG] [RANKS] [STEPS]
set -euo pipefail
bin=$1; config=${2:-configs/bench-small.json}; ranks=${3:-2}; steps=${4:-8}; sharding=${SHARDING:-none}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
per_rank=$(python3 -c "import json; t=json.load(open('$config'))['train']; print(t['micro_batch']*t['seq_len']*2)")
mpi=(mpirun --bind-to none); [ "$ranks" -gt "$(nproc)" ] && mpi+=(--oversubscribe)
"${mpi[@]}" -np 1 "$bin" pretrain --config "$config" --steps "$steps" --global-batch-tokens "$per_rank" \
    --warmup-steps 1 --metrics "$work/one.jsonl" --log-every 1000 >/dev/null
"${mpi[@]}" -np "$ranks" "$bin" pretrain --config "$config" --steps "$steps" --global-batch-tokens $((per_rank * ranks)) \
    --warmup-steps 1 --metrics "$work/many.jsonl" --log-every 1000 --bucket-mb 25 --sharding "$sharding" >/dev/null
python3 - "$work" "$ranks" "$sharding" <<'PY'
import json, statistics, sys
work, ranks, sharding = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name):
    rows = [json.loads(l) for l in open(f"{work}/{name}.jsonl")][2:]  # skip warm-up steps
    step = [r["step_s"] for r in rows]
    return rows, step
one, t1 = load("one"); many, tn = load("many")
tokens1 = one[0]["tokens"] / one[0]["step"]; tokensn = many[0]["tokens"] / many[0]["step"]
r1 = tokens1 / statistics.median(t1); rn = tokensn / statistics.median(tn) / ranks
exposed = statistics.median(r["exposed_comm_s"] for r in many); comm = statistics.median(r["comm_s"] for r in many)
print(f"sharding {sharding}: tokens/s per rank: 1 rank {r1:.0f}, {ranks} ranks {rn:.0f}; efficiency {rn / r1:.3f}")
print(f"communication per step: {comm * 1e3:.1f} ms, {exposed * 1e3:.1f} ms exposed (median)")
print(json.dumps({"sharding": sharding, "ranks": ranks, "tokens_per_s_per_rank_1": r1, "tokens_per_s_per_rank_n": rn,
                  "efficiency": rn / r1, "communication_ms": comm * 1e3, "exposed_communication_ms": exposed * 1e3}))
PY
