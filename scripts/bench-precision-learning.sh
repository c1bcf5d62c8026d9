#!/usr/bin/env bash
# Does bf16 learn like fp32? The demo config on the demo data (run `make demo` first, or pass DATA_DIR with
# index.json and tokenizer.model beside it), STEPS steps on 2 ranks in fp32, in bf16, and in bf16 with the
# gradients reduced in bf16 (grad_reduce); compares the mean loss of the last 10 steps.
# usage: scripts/bench-precision-learning.sh BIN [STEPS] [DATA_DIR]
set -euo pipefail
bin=$1; steps=${2:-150}; data=${3:-runs/demo/data}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -f "$data/index.json" ] || { echo "no prepared data in $data: run make demo first" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for run in fp32:fp32 bf16:fp32 bf16:bf16; do
    precision=${run%:*}; reduce=${run#*:}
    mpirun -np 2 --bind-to none "$bin" pretrain --config configs/demo.json --data "$data" --tokenizer "$(dirname "$data")/tokenizer.model" \
        --steps "$steps" --precision "$precision" --grad-reduce "$reduce" --metrics "$work/$precision-$reduce.jsonl" --log-every 50 \
        | grep -E "^step|precision"
done
python3 - "$work" <<'PY'
import json, sys
def tail(p):
    rows = [json.loads(l) for l in open(p)]
    return sum(r["loss"] for r in rows[-10:]) / 10, sum(r["tokens_per_s"] for r in rows[-10:]) / 10
(f, ft), (b, bt), (r, rt) = (tail(sys.argv[1] + f"/{name}.jsonl") for name in ("fp32-fp32", "bf16-fp32", "bf16-bf16"))
print(f"mean loss of the last 10 steps: fp32 {f:.4f}; bf16 {b:.4f} ({100 * (b / f - 1):+.2f}%); bf16 with bf16 gradient reduction {r:.4f} ({100 * (r / f - 1):+.2f}%)")
print(f"tokens/s: fp32 {ft:.0f}, bf16 {bt:.0f} ({bt / ft:.2f}x), bf16 + bf16 reduction {rt:.0f} ({rt / ft:.2f}x)")
print(json.dumps({"loss_fp32": f, "loss_bf16": b, "loss_bf16_reduce_bf16": r, "tokens_per_s_fp32": ft, "tokens_per_s_bf16": bt, "tokens_per_s_bf16_reduce_bf16": rt}))
PY
