#!/usr/bin/env bash
# A PPO iteration, ours against TRL's PPOTrainer (trl==1.0.0's trl.experimental.ppo: current TRL releases dropped
# PPO), on CPU, one thread each, in one run: the same random small Llama (policy; reward model, which both start
# the value model from), the same 64 prompts as token ids, batch 64 in mini-batches of 16, 32 new tokens,
# one PPO epoch. Reports seconds per iteration (median, the first iteration left out) and the generation share.
# TRL runs in its own venv (.build/trl-venv) with the torch wheel and the transformers trl==1.0.0 pulls in.
# Then ours on 2 ranks under train.sharding full, sampling from the policy gathered whole against through
# per-unit gathers (ppo.generation_weights): the generation seconds of each, and their ratio.
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
# The same shape's training step, for this core's sgemm rate beside the iteration's arithmetic.
"$bin" bench --config "$work/ppo.json" --threads 1 --steps 3 --warmup 1 --precision "$precision" --quiet \
    | tail -n 1 > "$work/step.json"
python3 - "$work/ours.log" "$work/trl.log" "ours $precision, TRL fp32" "$work/prompt-ids.json" "$work/step.json" <<'PY'
import json, re, statistics, sys
ours = [(float(m.group(1)), float(m.group(2))) for m in
        re.finditer(r"updates \| .* \| ([0-9.]+) s: generation ([0-9]+)%", open(sys.argv[1]).read())]
trl = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{\"trl_iteration")]
o = statistics.median(s for s, _ in ours[1:]); og = statistics.median(g for _, g in ours[1:])
t = statistics.median(r["seconds"] for r in trl[1:])
tg = statistics.median(100 * r["generation_seconds"] / r["seconds"] for r in trl[1:])
print(f"PPO iteration ({sys.argv[3]}; batch 64, mini-batches of 16, 32 new tokens), median of iterations 2..{len(ours)}: "
      f"ours {o:.2f} s (generation {og:.0f}%), TRL {t:.2f} s (generation {tg:.0f}%): {t / o:.2f}x")
# The iteration's matmul arithmetic, the same for both: per token, the policy's and the value model's matrices
# (policy: blocks and lm_head; value: blocks and one score row) read 2 FLOPs per weight in a forward, 4 in a
# backward. Sampling and the policy's and reference's scoring are policy forwards, the value and reward forwards
# value-sized ones, and the updates a forward and backward of each trained model: 12 Np + 10 Nv FLOPs a token
# (attention, 2% here, left out).
dim, layers, ffn, vocab = 256, 4, 688, 4096
blocks = layers * (4 * dim * dim + 3 * dim * ffn)
policy, value = blocks + vocab * dim, blocks + dim
lengths = [re.search(r"response ([0-9.]+) tokens", l) for l in open(sys.argv[1]) if l.startswith("ppo iteration")]
response = statistics.median(float(m.group(1)) for m in lengths if m)
tokens = sum(len(p) + response for p in json.load(open(sys.argv[4])))
flops = tokens * (12 * policy + 10 * value)
sgemm = json.loads(open(sys.argv[5]).read())["sgemm_gflops"]
print(f"arithmetic: {flops / 1e9:.0f} GFLOP an iteration ({tokens:.0f} tokens); ours at {flops / o / 1e9:.1f} GFLOP/s, "
      f"TRL at {flops / t / 1e9:.1f}; this core's sgemm at the model's shape {sgemm:.1f} GFLOP/s; "
      f"3x TRL would need {3 * flops / t / 1e9:.1f} GFLOP/s")
PY

# Sampling from sharded weights: 2 ranks, one thread each, sharding full, the policy gathered whole against
# gathered a unit at a time in every forward. With RATE (a tc rate, root only) the ranks are two hosts of the
# network lab (cluster/netns.sh) joined by links of that rate; without, one machine's shared memory.
sed 's/"eval_every": 0/"eval_every": 0, "generation_weights": "sharded"/' "$work/ppo.json" > "$work/ppo-sharded.json"
launch=(mpirun -np 2 --bind-to none); link="shared memory"
if [ -n "${RATE:-}" ]; then
    trap 'cluster/netns.sh down > /dev/null; rm -rf "$work"' EXIT
    SLOTS=1 cluster/netns.sh up 2 > /dev/null
    launch=(cluster/netns.sh exec -- mpirun --hostfile /tmp/lt-hostfile -np 2 --bind-to none --mca btl tcp,self
            --mca btl_tcp_if_include 10.213.7.0/24 --mca oob_tcp_if_include 10.213.7.0/24 --mca mpi_yield_when_idle 1)
    link="2 hosts at $RATE"
fi
for mode in gathered sharded; do
    config="$work/ppo.json"; [ "$mode" = sharded ] && config="$work/ppo-sharded.json"
    "${launch[@]}" "$bin" ppo --config "$config" --sharding full --threads 1 --log-every 1000 \
        > "$work/$mode.log" 2>&1 || { cat "$work/$mode.log"; exit 1; }
done
python3 - "$work/gathered.log" "$work/sharded.log" "$link" <<'PY'
import re, statistics, sys
def generation(path):
    seconds = [float(m.group(1)) for m in re.finditer(r"ppo iteration \d+/\d+ \|.*\| generation ([0-9.]+) s", open(path).read())]
    return statistics.median(seconds[1:] or seconds)
g, s = generation(sys.argv[1]), generation(sys.argv[2])
print(f"PPO generation on 2 ranks over {sys.argv[3]}, sharding full (32 rollouts each, 32 new tokens), median of "
      f"iterations 2..: gathered {g:.2f} s, sharded {s:.2f} s: sharded takes {s / g:.1f}x as long")
PY
