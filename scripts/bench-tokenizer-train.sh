#!/usr/bin/env bash
# Tokenizer training at the paper's vocabulary size against sentencepiece, side by side in one run:
# 32,000 pieces on ~31 MB of mixed text (Debian's fortunes, /usr/share/common-licenses and Python's standard
# library sources), with 1 and 2 threads each, alternating runs; medians of RUNS. Wall time of the whole
# command (reading included) for ours, of SentencePieceTrainer.train for sentencepiece.
# usage: scripts/bench-tokenizer-train.sh BIN [VOCAB] [RUNS]
set -euo pipefail
bin=$1; vocab=${2:-32000}; runs=${3:-3}
scripts/install-deps.sh fortunes
python3 -m pip install -q sentencepiece==0.2.3 2>/dev/null || true
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
{ ls -d /usr/share/games/fortunes/* | grep -v -E '\.(dat|u8)$'; find /usr/share/common-licenses -type f;
  find "$stdlib" -name '*.py' -not -path '*-packages*' | sort; } | xargs cat > "$work/corpus.txt"
echo "corpus: $(du -m "$work/corpus.txt" | cut -f1) MB, $(wc -l < "$work/corpus.txt") lines"
python3 - "$work" "$vocab" "$runs" "$bin" <<'PY'
import json, statistics, subprocess, sys, time
import sentencepiece as spm
work, vocab, runs, binary = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
corpus = f"{work}/corpus.txt"
def ours(threads):
    t = time.time()
    subprocess.run([binary, "tokenizer", "train", "--input", corpus, "--vocab-size", str(vocab), "--threads", str(threads),
                    "--out", f"{work}/ours-{threads}.model"], check=True, capture_output=True)
    return time.time() - t
def theirs(threads):
    t = time.time()
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=f"{work}/spm-{threads}", model_type="bpe", vocab_size=vocab,
        split_digits=True, byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, character_coverage=0.99995,
        num_threads=threads, minloglevel=2)
    return time.time() - t
result = {}
for threads in (1, 2):
    a, b = [], []
    for _ in range(runs):
        a.append(ours(threads)); b.append(theirs(threads))
    result[f"ours_s_{threads}t"], result[f"spm_s_{threads}t"] = statistics.median(a), statistics.median(b)
    print(f"train {vocab} pieces, {threads} thread(s): ours {statistics.median(a):.2f} s  sentencepiece {statistics.median(b):.2f} s"
          f"  ratio {statistics.median(b) / statistics.median(a):.2f}x  (runs: ours {', '.join(f'{x:.2f}' for x in a)}; spm {', '.join(f'{x:.2f}' for x in b)})")
def pieces(path):
    sp = spm.SentencePieceProcessor(model_file=path)
    return {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
reference = pieces(f"{work}/spm-1.model")
result["vocab_overlap"] = len(reference & pieces(f"{work}/ours-1.model")) / len(reference)
result["same_model_1t_2t"] = open(f"{work}/ours-1.model", "rb").read() == open(f"{work}/ours-2.model", "rb").read()
print(f"vocabulary overlap with sentencepiece {result['vocab_overlap']:.4f}; ours identical at 1 and 2 threads: {result['same_model_1t_2t']}")
print(json.dumps(result))
PY
