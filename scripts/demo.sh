#!/usr/bin/env bash
# The demo: the whole pipeline on the built-in corpus (Debian's `fortunes`, English, 2.5 MB), on 2 ranks.
#  1. train a 4096-piece tokenizer with Llama 2's options   2. tokenise into shards (2 ranks)
#  3. pretrain configs/demo.json under mpirun -np 2 (a validation loss on 2% held out, then the same offline)
#  4. chart the loss   5. sample from the model
#  6. supervised fine-tuning (prompt/response, then multi-turn chat in the llama2-chat format) and a reward
#     model on small generated sets, then a chat turn, the preference set's statistics, two replies scored,
#     DPO on the same pairs, rejection sampling judged by the reward model, and PPO
# usage: scripts/demo.sh BIN   (make demo builds BIN and installs what is needed first)
set -euo pipefail
bin=${1:-.build/release/llama-train}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ranks=${RANKS:-2}
mpirun=(mpirun -np "$ranks" --bind-to none)
[ "$ranks" -gt "$(nproc)" ] && mpirun+=(--oversubscribe)
out=runs/demo
mkdir -p "$out"
files=$(ls -d /usr/share/games/fortunes/* | grep -v -E '\.(dat|u8)$')

echo "== 1/6 tokenizer: 4096 pieces from $(cat $files | wc -c) bytes of fortunes"
"$bin" tokenizer train --input $files --vocab-size 4096 --user-defined-symbols "<sep>" --out "$out/tokenizer.model"

echo "== 2/6 token shards, $ranks ranks"
"${mpirun[@]}" "$bin" prepare --tokenizer "$out/tokenizer.model" --out "$out/data" --delimiter % \
    --input $(for f in $files; do echo "fortunes=$f"; done)

echo "== 3/6 pretraining configs/demo.json on $ranks ranks"
"${mpirun[@]}" "$bin" pretrain --config configs/demo.json --out "$out/model" --metrics "$out/metrics.jsonl" --log-every 10 \
    --eval-every 50
# The validation loss offline: the same 128 held-out windows (train.eval_holdout 0.02), in fp32 (the run's
# matmuls are bf16 where the CPU has AVX-512 BF16, so the two then differ in the second or third decimal).
"$bin" eval --checkpoint "$out/model" --data "$out/data" --holdout 0.02 --windows 128 --seq-len 128

echo "== 4/6 loss chart"
"$bin" plot --metrics "$out/metrics.jsonl" --out "$out/loss.svg" --title "demo: loss and learning rate"

echo "== 5/6 samples"
"$bin" generate --checkpoint "$out/model" --max-tokens 48 --temperature 0.8 --top-p 0.9 \
    --prompt "The meaning of life is" "Q: Why did the programmer" "A man walks into a bar"
echo "== 6/6 fine-tuning: SFT on prompt/response pairs, a reward model on preference pairs, scores, DPO, rejection sampling, PPO"
python3 scripts/make-finetune-data.py "$out" 400 400
"${mpirun[@]}" "$bin" sft --config configs/sft-demo.json --out "$out/sft" --log-every 5
# Multi-turn dialogues with a system message, in Meta's chat format; then a chat turn with the result.
"${mpirun[@]}" "$bin" sft --config configs/chat-demo.json --out "$out/chat" --log-every 10
"$bin" generate --checkpoint "$out/chat" --template llama2-chat --temperature 0 --max-tokens 16 \
    --prompt "Repeat the word garden." "Now name river and one more thing."
"$bin" data stats --data "$out/prefs.jsonl" --tokenizer "$out/tokenizer.model"
"${mpirun[@]}" "$bin" reward --config configs/reward-demo.json --out "$out/reward" --log-every 10
printf '%s\n' '{"prompt": "Tell me about the teacher.", "response": "The teacher is kind."}' \
    '{"prompt": "Tell me about the teacher.", "response": "The teacher is awful."}' | "$bin" reward score --checkpoint "$out/reward"
# DPO from the same SFT model on the same pairs, no reward model: the held-out accuracy of its implicit reward.
"${mpirun[@]}" "$bin" dpo --config configs/dpo-demo.json --out "$out/dpo" --log-every 10
# Rejection sampling: 8 answers to each held-out prompt from the SFT model, the reward model keeps the best;
# the mean best reward rises with the number of samples (the report's table and runs/demo/rs-1.best-of-n.svg).
python3 scripts/distinct-prompts.py "$out/prefs-eval.jsonl" 32 > "$out/rs-prompts.jsonl"
"${mpirun[@]}" "$bin" rejection-sample --config configs/rejection-demo.json
# PPO from the SFT model, judged by the reward model: 20 iterations of 32 rollouts; the held-out mean reward
# rises while the KL to the reference stays bounded (runs/demo/ppo/ppo.svg draws both).
python3 scripts/distinct-prompts.py "$out/prefs.jsonl" 64 > "$out/ppo-prompts.jsonl"
python3 scripts/distinct-prompts.py "$out/prefs-eval.jsonl" 64 > "$out/ppo-held-out.jsonl"
"${mpirun[@]}" "$bin" ppo --config configs/ppo-demo.json --out "$out/ppo" --log-every 100 | grep -v "^step "
python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"loss {rows[0]['loss']:.3f} at step 1 -> {rows[-1]['loss']:.3f} at step {rows[-1]['step']} "
      f"(validation {rows[-1].get('val_loss', float('nan')):.3f}); "
      f"{rows[-1]['tokens_per_s']:.0f} tokens/s; metrics in {sys.argv[1]}, chart in runs/demo/loss.svg")
PY
