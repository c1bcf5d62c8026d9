#!/usr/bin/env bash
# Tokenizer speed against the sentencepiece library, side by side on one corpus, single thread:
# encoding MB/s on line-sized inputs and the time to train a vocabulary. The corpus defaults to the
# English text of Debian's `fortunes` package (installed here when missing).
# usage: scripts/bench-tokenizer.sh BIN [VOCAB] [FILES...]
set -euo pipefail
bin=$1; vocab=${2:-8000}; shift $(( $# >= 2 ? 2 : 1 ))
if [ $# -eq 0 ]; then
    scripts/install-deps.sh fortunes
    set -- $(ls -d /usr/share/games/fortunes/* | grep -v -E '\.(dat|u8)$')
fi
python3 -m pip install -q sentencepiece==0.2.3 2>/dev/null || true
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
ours_train=$("$bin" tokenizer train --input "$@" --vocab-size "$vocab" --out "$work/ours.model" | sed -E 's/.* in ([0-9.]+) s.*/\1/')
python3 - "$work" "$vocab" "$ours_train" "$bin" "$@" <<'PY'
import json, statistics, subprocess, sys, time
import sentencepiece as spm
work, vocab, ours_train, binary, files = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5:]
t = time.time()
spm.SentencePieceTrainer.train(input=",".join(files), model_prefix=f"{work}/spm", model_type="bpe", vocab_size=vocab,
    split_digits=True, byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=True,
    remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, character_coverage=0.99995,
    num_threads=1, minloglevel=2)
spm_train = time.time() - t
lines = []
for f in files:
    lines += open(f, encoding="utf-8", errors="replace").read().split("\n")
sp = spm.SentencePieceProcessor(model_file=f"{work}/spm.model")
rates = []
for _ in range(3):
    t = time.time()
    for l in lines: sp.encode(l)
    rates.append(sum(len(l.encode()) for l in lines) / (time.time() - t) / 1e6)
spm_rate = statistics.median(rates)
out = subprocess.run([binary, "tokenizer", "bench", "--tokenizer", f"{work}/spm.model", "--input", *files],
                     capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
ours_rate = json.loads(out)["encode_mb_per_s"]
ours = spm.SentencePieceProcessor(model_file=f"{work}/ours.model")
a = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
b = {ours.id_to_piece(i) for i in range(ours.get_piece_size())}
ta = sum(len(sp.encode(l)) for l in lines); tb = sum(len(ours.encode(l)) for l in lines)
print(f"encode MB/s      ours {ours_rate:.2f}   sentencepiece {spm_rate:.2f}   ratio {ours_rate / spm_rate:.2f}")
print(f"train {vocab} s     ours {ours_train:.2f}   sentencepiece {spm_train:.2f}   ratio {ours_train / spm_train:.2f}")
print(f"vocabulary overlap {len(a & b) / len(a):.4f}; corpus tokens ours/spm {tb / ta:.4f}")
print(json.dumps({"encode_ratio": ours_rate / spm_rate, "train_time_ratio": ours_train / spm_train,
                  "vocab_overlap": len(a & b) / len(a), "token_ratio": tb / ta}))
PY
