#!/usr/bin/env bash
# A PPO iteration, ours against TRL's PPOTrainer (trl==1.0.0's trl.experimental.ppo: current TRL releases dropped
# PPO), on CPU, one thread each, in one run: the same random small Llama (policy; reward model, which both start
# the value model from), the same 64 prompts as token ids, batch 64 in mini-batches of 16, 32 new tokens,
# one PPO epoch. Reports seconds per iteration (median, the first iteration left out) and the generation share.
# TRL runs in its own venv (.build/trl-venv) with the torch wheel and the transformers trl==1.0.0 pulls in.
# usage: [PRECISION=fp32|bf16] scripts/bench-ppo.sh BIN [ITERATIONS]   (ours in that precision; TRL in fp32)
set -euo pipefail
bin=$1; iterations=${2:-4}; precision=${PRECISION:-fp32}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
scripts/install-deps.sh fortunes
venv=.build/trl-venv
if ! "$venv/bin/python" -c "import trl.experimental.ppo" 2>/dev/null; then
    python3 -m venv "$venv"
    torch_wheel=$(ls /opt/wheels/torch-*.whl 2>/dev/null | head -1 || true)
    "$venv/bin/pip" install -q ${torch_wheel:-torch} 'trl==1.0.0' safetensors numpy
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
    "$(grep -q avx512_bf16 /proc/cpuinfo && echo avx512_bf16 || echo 'AVX2, no avx512_bf16')"
"$bin" tokenizer train --input $(ls -d /usr/share/games/fortunes/* | grep -v -E '\.(dat|u8)$') --input-sentence-size 100000 \
    --vocab-size 4096 --out "$work/tok.model" > /dev/null
python3 - "$work" <<'PY'
import glob, json, sys
work = sys.argv[1]
lines = []
for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
    if path.endswith((".dat", ".u8")): continue
    for l in open(path, encoding="utf-8", errors="replace"):
        l = l.strip()
        if 20 <= len(l) <= 60 and l not in lines: lines.append(l)
        if len(lines) == 64: break
    if len(lines) == 64: break
with open(f"{work}/prompts.jsonl", "w") as f:
    for l in lines: f.write(json.dumps({"prompt": l}) + "\n")
# What our llama2-chat template makes of a prompt: <s> + encode("[INST] {user} [/INST]").
with open(f"{work}/inst.jsonl", "w") as f:
    for l in lines: f.write(json.dumps({"text": f"[INST] {l} [/INST]"}) + "\n")
json.dump({"dim": 256, "layers": 4, "heads": 4, "kv_heads": 4, "ffn": 688, "vocab": 4096, "context": 128,
           "batch": 64, "mini_batch": 16, "max_tokens": 32, "kl_coef": 0.05, "lr": 1e-5}, open(f"{work}/bench.json", "w"))
PY
"$bin" tokenize --tokenizer "$work/tok.model" --bos < "$work/inst.jsonl" \
    | python3 -c 'import json, sys; json.dump([json.loads(l)["ids"] for l in sys.stdin if l.strip()], open(sys.argv[1], "w"))' "$work/prompt-ids.json"
"$venv/bin/python" scripts/bench-ppo-trl.py "$work" make
cat > "$work/ppo.json" <<JSON
{"model": {"dim": 256, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4, "vocab_size": 4096, "ffn_hidden_size": 688,
           "max_seq_len": 128, "norm_eps": 1e-5},
 "train": {"seq_len": 128, "micro_batch": 8, "lr": 1e-5, "precision": "$precision", "tokenizer": "$work/tok.model"},
 "finetune": {"data": "$work/prompts.jsonl", "init_from": "$work/policy", "template": "llama2-chat"},
 "ppo": {"reward_model": "$work/reward", "batch_size": 64, "mini_batch_size": 16, "iterations": $iterations,
         "max_tokens": 32, "kl_coef": 0.05, "eval_every": 0}}
JSON
"$bin" ppo --config "$work/ppo.json" --threads 1 --log-every 1000 > "$work/ours.log" 2>&1 || { cat "$work/ours.log"; exit 1; }
grep "ppo iteration" "$work/ours.log"
"$venv/bin/python" scripts/bench-ppo-trl.py "$work" "$iterations" 2> "$work/trl.err" > "$work/trl.log" \
    || { tail -30 "$work/trl.err"; exit 1; }
grep trl_iteration "$work/trl.log"
python3 - "$work/ours.log" "$work/trl.log" "ours $precision, TRL fp32" <<'PY'
import json, re, statistics, sys
ours = [(float(m.group(1)), float(m.group(2))) for m in
        re.finditer(r"updates \| .* \| ([0-9.]+) s: generation ([0-9]+)%", open(sys.argv[1]).read())]
trl = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{\"trl_iteration")]
o = statistics.median(s for s, _ in ours[1:]); og = statistics.median(g for _, g in ours[1:])
t = statistics.median(r["seconds"] for r in trl[1:])
tg = statistics.median(100 * r["generation_seconds"] / r["seconds"] for r in trl[1:])
print(f"PPO iteration ({sys.argv[3]}; batch 64, mini-batches of 16, 32 new tokens), median of iterations 2..{len(ours)}: "
      f"ours {o:.2f} s (generation {og:.0f}%), TRL {t:.2f} s (generation {tg:.0f}%): {t / o:.2f}x")
PY
