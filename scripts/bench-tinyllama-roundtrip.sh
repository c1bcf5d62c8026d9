#!/usr/bin/env bash
# The 1.1B round trip with transformers, at TinyLlama-1.1B's shape on 2 ranks, sharding full, recompute layer:
#   1. transformers writes random weights as a published repo does: bf16, in 3 files with an index;
#   2. `sft` starts from that directory (each rank reading only its pieces), 2 steps;
#   3. --out writes sharded bf16 (each rank its own pieces);
#   4. transformers loads --out, and its logits equal ours (`generate --logits` on the same directory) within
#      bf16 rounding.
# Each rank's peak RSS (GNU time) is printed beside `plan`, with the start-up time to the first step.
# Needs torch and transformers: installed into a venv under .build. usage: scripts/bench-tinyllama-roundtrip.sh BIN
set -euo pipefail
bin=$1
work=${WORK:-$(mktemp -d)}
[ -n "${WORK:-}" ] || trap 'rm -rf "$work"' EXIT
venv=.build/tok-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "torch==2.13.0+cpu" 2>/dev/null \
        || "$venv/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu
    "$venv/bin/pip" install -q transformers safetensors sentencepiece protobuf jinja2
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"

"$venv/bin/python" - "$work/hf-init" <<'PY'
import sys, torch, transformers
config = transformers.LlamaConfig(
    vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
    num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
    tie_word_embeddings=False, torch_dtype="bfloat16")
torch.manual_seed(0)
model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(sys.argv[1], max_shard_size="900MB", safe_serialization=True)
PY
echo "transformers wrote: $(cd "$work/hf-init" && ls | tr '\n' ' ')"

python3 scripts/make-finetune-data.py "$work" 400 8 >/dev/null
tokenizer=$PWD/../shared/fixtures/spm-bpe/tokenizer.model
cat > "$work/sft.json" <<EOF
{"model": {"dim": 2048, "n_layers": 22, "n_heads": 32, "n_kv_heads": 4, "vocab_size": 32000, "ffn_hidden_size": 5632,
           "norm_eps": 1e-5, "rope_theta": 10000, "max_seq_len": 2048},
 "train": {"seq_len": 512, "micro_batch": 1, "global_batch_tokens": 1024, "lr": 1e-5, "warmup_steps": 1,
           "sharding": "full", "recompute": "layer", "seed": 1337, "tokenizer": "$tokenizer"},
 "finetune": {"data": "$work/sft.jsonl", "init_from": "$work/hf-init", "epochs": 1, "template": "llama2-chat"}}
EOF
plan=$("$bin" plan --config "$work/sft.json" --ranks 2 --json | tail -n 1)
"$bin" plan --config "$work/sft.json" --ranks 2 | grep -E '^(memory per rank|  )' | head -20 || true
mpirun -np 2 --bind-to none sh -c 'exec /usr/bin/time -f "%M" -o "$0/rss.$OMPI_COMM_WORLD_RANK" "$@"' "$work" \
    "$bin" sft --config "$work/sft.json" --steps 2 --metrics "$work/metrics.jsonl" --log-every 1 \
    --out "$work/out" --out-dtype bf16 --max-shard-size 1GB | tee "$work/sft.log"
echo "--out holds: $(cd "$work/out" && ls | tr '\n' ' ')"

/usr/bin/time -f "%M" -o "$work/rss.generate" "$bin" generate --checkpoint "$work/out" --max-tokens 1 --temperature 0 \
    --prompt "The cat sat on the mat." --prompt "Tell me about the river." --logits "$work/ours.jsonl" >/dev/null
"$venv/bin/python" - "$work" "$plan" <<'PY'
import glob, json, re, sys, torch, transformers
work, plan = sys.argv[1], json.loads(sys.argv[2])
model = transformers.AutoModelForCausalLM.from_pretrained(f"{work}/out", dtype=torch.float32)
model.eval()
worst = 0.0
for line in open(f"{work}/ours.jsonl"):
    ours = json.loads(line)
    with torch.no_grad():
        theirs = model(torch.tensor([ours["ids"]])).logits[0].double()
    mine = torch.tensor(ours["logits"], dtype=torch.float64)
    # Both read the same bf16 weights in float32: what differs is the order of float32 sums. bf16 rounding of
    # a logit (8 significant bits) is 2^-8 of its magnitude: the bound asked for.
    rel = ((theirs - mine).abs().max() / theirs.abs().max()).item()
    worst = max(worst, rel)
tok = transformers.AutoTokenizer.from_pretrained(f"{work}/out")
first = json.loads(open(f"{work}/ours.jsonl").readline())
same_ids = tok(first["prompt"])["input_ids"] == first["ids"]
planned = plan["memory_per_rank_bytes"]
log = open(f"{work}/sft.log").read()
ready = re.search(r"ready after ([0-9.]+) s", log)
result = {"plan_bytes_per_rank": planned, "logits_max_relative_difference": worst, "within_bf16_rounding": worst <= 2 ** -8,
          "autotokenizer_ids_equal_ours": same_ids, "startup_s": float(ready.group(1)) if ready else None,
          "out_files": sorted(n for n in __import__("os").listdir(f"{work}/out"))}
for path in sorted(glob.glob(f"{work}/rss.*")):
    who = path.rsplit(".", 1)[1]
    rss = int(open(path).read().split()[-1]) * 1024
    result[f"{who}_peak_rss_bytes"] = rss
    print(f"{who}: peak RSS {rss / 2**30:.2f} GiB, plan {planned / 2**30:.2f} GiB per rank, ratio {rss / planned:.3f}")
print(f"logits: transformers against ours on the bf16 --out, worst |difference| / max |logit| = {worst:.2e} (bf16 rounding: {2**-8:.2e})")
print(json.dumps(result))
PY
