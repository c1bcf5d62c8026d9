#!/usr/bin/env bash
# The loader's memory and start-up do not grow with the corpus: a tiny model trains 2 steps at seq_len 2 on
# sources of 2.5e6, 2.5e8 and 2.5e9 windows (sparse shards of zero tokens, 10 GB apparent at the largest);
# peak RSS and wall time of each run. BASE=an older llama-train runs the two smaller sizes too.
# usage: scripts/bench-loader.sh BIN
set -euo pipefail
bin=$1
scripts/install-deps.sh time
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
tokenizer=$work/tok.model
"$bin" tokenizer train --input README.md --vocab-size 400 --out "$tokenizer" > /dev/null
hash=$(sha256sum "$tokenizer" | cut -c1-64)
for windows in 2500000 250000000 2500000000; do
    dir=$work/data-$windows
    python3 - "$dir" "$hash" "$windows" "$tokenizer" <<'PY'
import json, os, struct, sys
d, h, windows, tok = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
n = 2 * windows + 1
os.makedirs(d)
with open(d + "/big-00000.bin", "wb") as f:
    f.write(b"LLTOKSHD" + struct.pack("<IIQQ", 1, 2, n, 1) + bytes.fromhex(h)); f.truncate(64 + 2 * n)
json.dump({"version": 1, "tokenizer_sha256": h, "vocab_size": 400, "sources": [{"name": "big", "inputs": ["sparse"],
           "shards": [{"file": "big-00000.bin", "tokens": n, "documents": 1, "max_token_id": 0}]}]}, open(d + "/index.json", "w"))
json.dump({"model": {"dim": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 400, "ffn_hidden_size": 64, "max_seq_len": 2},
           "train": {"seq_len": 2, "micro_batch": 2, "global_batch_tokens": 8, "steps": 2, "lr": 1e-3, "warmup_steps": 1,
                     "seed": 3, "data": d, "tokenizer": tok}}, open(d + "/config.json", "w"))
PY
    for binary in "$bin" ${BASE:-}; do
        if [ "$binary" != "$bin" ] && [ "$windows" -gt 250000000 ]; then continue; fi
        /usr/bin/time -f "%M %e" -o "$work/t" "$binary" pretrain --config "$dir/config.json" > /dev/null
        read -r rss seconds < "$work/t"
        label="this build"; [ "$binary" = "$bin" ] || label="BASE"
        echo "$label: $windows windows: peak RSS $((rss / 1024)) MB, $seconds s for start-up and 2 steps"
    done
done
