#!/usr/bin/env bash
# Ours against PyTorch eager on the same config in the same run, one thread, alternating: our fp32 and bf16
# (`llama-train bench --precision`), PyTorch's float32 and bf16 autocast (scripts/bench-pytorch.py). PyTorch
# lives in a virtual environment under .build/ made here (the CPU wheel), for this comparison only.
# usage: scripts/bench-pytorch.sh BIN CONFIG [STEPS] [THREADS]
set -euo pipefail
bin=$1; config=$2; steps=${3:-5}; threads=${4:-1}
venv=.build/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q numpy "torch==2.13.0+cpu" 2>/dev/null \
        || "$venv/bin/pip" install -q numpy torch --index-url https://download.pytorch.org/whl/cpu
fi
export OMP_NUM_THREADS=$threads
declare -A rate
for round in 1 2; do
    for p in fp32 bf16; do
        rate[ours-$p-$round]=$("$bin" bench --config "$config" --precision "$p" --threads "$threads" --steps "$steps" --quiet | tail -1 \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')
        rate[torch-$p-$round]=$("$venv/bin/python" scripts/bench-pytorch.py "$config" "$p" "$steps" "$threads" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')
    done
done
python3 - "$config" "$threads" "${rate[ours-fp32-1]}" "${rate[ours-fp32-2]}" "${rate[ours-bf16-1]}" "${rate[ours-bf16-2]}" \
    "${rate[torch-fp32-1]}" "${rate[torch-fp32-2]}" "${rate[torch-bf16-1]}" "${rate[torch-bf16-2]}" <<'PY'
import json, sys
config, threads = sys.argv[1], sys.argv[2]
of, ob, tf, tb = [max(float(sys.argv[i]), float(sys.argv[i + 1])) for i in (3, 5, 7, 9)]
print(f"{config}, {threads} thread(s), best of 2 alternating rounds, tokens/s:")
print(f"  ours fp32 {of:.0f}   ours bf16 {ob:.0f}   (bf16/fp32 {ob / of:.2f}x)")
print(f"  PyTorch fp32 {tf:.0f}   PyTorch bf16 autocast {tb:.0f}")
print(f"  ours bf16 / PyTorch bf16 {ob / tb:.2f}x; ours fp32 / PyTorch fp32 {of / tf:.2f}x")
print(json.dumps({"config": config, "threads": int(threads), "ours_fp32": of, "ours_bf16": ob, "torch_fp32": tf, "torch_bf16": tb}))
PY
