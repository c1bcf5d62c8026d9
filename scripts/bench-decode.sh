#!/usr/bin/env bash
# The inference engine side by side with transformers' generate (fp32, KV cache, greedy) on random weights of
# two shapes: a ~110M Llama (configs/bench-decode-110m.json) and TinyLlama-1.1B's (configs/tinyllama-1.1b.json),
# at batch 1 and 32, on 1 and then 2 threads. `llama-train bench --decode` measures in the same process the
# streaming-read bound of batch-1 decoding (weight bytes per token against a read of 1 GiB) and prefill against
# the training forward. transformers runs from the fixture venv (.build/fixture-venv, made by
# scripts/make-generation-fixture.sh); without it only our side is measured.
# usage: [CONFIGS="a.json b.json"] scripts/bench-decode.sh BIN [PROMPT_TOKENS NEW_TOKENS]
set -euo pipefail
bin=${1:?usage: scripts/bench-decode.sh BIN [PROMPT_TOKENS NEW_TOKENS]}
prompt=${2:-128}; new=${3:-64}
py=.build/fixture-venv/bin/python
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
echo "CPU: $cpu ($(grep -o 'avx512_bf16' /proc/cpuinfo | head -n 1 || echo 'no avx512_bf16'))"
for config in ${CONFIGS:-configs/bench-decode-110m.json configs/tinyllama-1.1b.json}; do
    for threads in 1 2; do
        echo "== $config, $threads thread(s), prompt $prompt, $new new tokens"
        # Shown as it is, then its last line (the JSON) kept: no tee to /dev/stderr, which truncates a log file.
        report=$("$bin" bench --decode --config "$config" --threads "$threads" --batches 1 32 \
            --prompt-tokens "$prompt" --new-tokens "$new")
        echo "$report" | sed '$d'
        ours=$(echo "$report" | tail -n 1)
        theirs='{}'
        if [ -x "$py" ]; then
            theirs=$("$py" scripts/bench-decode-transformers.py "$config" "$threads" "$prompt" "$new" 1,32 | tail -n 1)
        fi
        python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
t = theirs.get("decode_tokens_per_s", {})
for precision, rates in ours["decode_tokens_per_s"].items():
    for b, rate in sorted(rates.items(), key=lambda kv: int(kv[0])):
        other = t.get(b)
        print(f"  {precision} batch {b:>3}: ours {rate:7.1f} tokens/s"
              + (f", transformers fp32 {other:7.1f} ({rate / other:.2f}×)" if other else ""))
    print(f"  {precision} batch-1 bound {ours['bound_tokens_per_s'][precision]:.1f} tokens/s "
          f"({ours['weight_bytes'][precision] / 1e9:.2f} GB a token): ours at {ours['batch_one_of_bound'][precision]:.2f} of it")
print(f"  streaming read {ours['read_bytes_per_s'] / 1e9:.1f} GB/s (median); bf16 greedy equal to fp32's for the first "
      f"{ours.get('bf16_agreeing_prefix')} of {ours['new_tokens']} tokens")
print(f"  prefill {ours['prefill_tokens_per_s']:.0f} tokens/s, the training forward {ours['training_forward_tokens_per_s']:.0f} "
      f"({ours['prefill_tokens_per_s'] / ours['training_forward_tokens_per_s']:.2f}×); peak RSS {ours['peak_rss_mb']:.0f} MB")
PY
    done
done
