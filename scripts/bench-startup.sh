#!/usr/bin/env bash
# Start-up and evaluation, this build against an earlier one (BEFORE_BIN, optional), in one run:
#   1. bench-small pretraining, 1 step, on 1 and 2 ranks, sharding none and full: start-up to the first step
#      (the run's wall time less its step);
#   2. a reward model on 200,000 generated preference pairs of ~300 tokens (a tiny model, so the data is what
#      costs): start-up on 1 and 2 ranks, and each rank's peak RSS;
#   3. reward evaluation on 2 ranks: the run with eval_data less the same run without.
# Medians of RUNS runs (DATA_RUNS for the 200,000 pairs). usage: scripts/bench-startup.sh BIN [BEFORE_BIN]
#   (RUNS=3, DATA_RUNS=1, PAIRS=200000)
set -euo pipefail
bin=$1 before=${2:-}
runs=${RUNS:-3} data_runs=${DATA_RUNS:-1} pairs=${PAIRS:-200000}
work=${WORK:-$(mktemp -d)}
[ -n "${WORK:-}" ] || trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
tokenizer=$PWD/../shared/fixtures/spm-bpe/tokenizer.model

python3 - "$work" "$pairs" "${EVAL_PAIRS:-200}" <<'PY'
import json, random, sys
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(3)
words = [w for w in "the a river mountain garden book music friend ocean city forest window letter bread summer winter school train candle bridge island teacher doctor cat dog walks runs sings reads quietly slowly bright dark old new small large".split()]
def text(k): return " ".join(rng.choice(words) for _ in range(k))
ratings = ["significantly better", "better", "slightly better", "negligibly better"]
def write(path, count):
    with open(path, "w") as f:
        for _ in range(count):
            # ~300 tokens a pair: a prompt of ~60 words and two replies of ~40 (about 1.3 tokens a word here).
            f.write(json.dumps({"prompt": text(60), "chosen": text(40), "rejected": text(40),
                                "rating": rng.choice(ratings)}) + "\n")
write(f"{out}/pairs.jsonl", n)
write(f"{out}/small.jsonl", 2000)
write(f"{out}/eval.jsonl", int(sys.argv[3]) if len(sys.argv) > 3 else 200)
PY
# The data's start-up: the 200,000 pairs. The evaluation's cost: 2,000 pairs to train on, with and without
# EVAL_PAIRS (200) held-out ones (a bench-small-sized model, so the evaluation is compute).
write_config() {  # name data model extra
    cat > "$work/$1.json" <<EOF
{"model": $3,
 "train": {"seq_len": 256, "micro_batch": 2, "lr": 1e-4, "tokenizer": "$tokenizer", "precision": "fp32"},
 "finetune": {"data": "$work/$2", "template": "llama2-chat", "pairs_per_batch": 16$4}}
EOF
}
tiny='{"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 2000, "ffn_hidden_size": 128, "max_seq_len": 256}'
small='{"dim": 288, "n_layers": 6, "n_heads": 6, "vocab_size": 2000, "ffn_hidden_size": 768, "max_seq_len": 256}'
write_config rm-data pairs.jsonl "$tiny" ""
write_config rm-no small.jsonl "$small" ""
write_config rm-yes small.jsonl "$small" ", \"eval_data\": \"$work/eval.jsonl\""
echo "data: $(wc -l < "$work/pairs.jsonl") pairs, $(du -m "$work/pairs.jsonl" | cut -f1) MB"

# Seconds of wall time of a command, its metrics' first step subtracted (so: start-up, and what follows the
# last step); each rank's peak RSS to $work/rss.*.
timed() {
    local metrics=$1; shift
    rm -f "$metrics" "$work"/rss.*
    local t0 t1
    t0=$(date +%s.%N)
    "$@" > "$work/last.log" 2>&1 || { cat "$work/last.log"; return 1; }
    t1=$(date +%s.%N)
    python3 -c "import json,sys; rows=[json.loads(l) for l in open('$metrics')]; print(f'{$t1-$t0-sum(r[\"step_s\"] for r in rows):.3f}')"
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.3f}')" "$@"; }
rss() { python3 -c "import glob; print(' '.join(f'{int(open(p).read().split()[-1])/1024:.0f}' for p in sorted(glob.glob('$work/rss.*'))))"; }

launch() {  # ranks binary args...
    local n=$1 b=$2; shift 2
    mpirun -np "$n" --bind-to none sh -c 'exec /usr/bin/time -f "%M" -o "$0/rss.$OMPI_COMM_WORLD_RANK" "$@"' "$work" "$b" "$@"
}

for build in after before; do
    b=$bin
    if [ "$build" = before ]; then [ -n "$before" ] || continue; b=$before; fi
    for ranks in 1 2; do
        for mode in none full; do
            ts=()
            for _ in $(seq "$runs"); do
                ts+=("$(timed "$work/m.jsonl" launch "$ranks" "$b" pretrain --config configs/bench-small.json --steps 1 \
                    --global-batch-tokens 2048 --micro-batch 4 --sharding "$mode" --metrics "$work/m.jsonl")")
            done
            echo "$build bench-small pretrain start-up, $ranks rank(s), $mode: $(median "${ts[@]}") s (runs ${ts[*]})"
        done
    done
    for ranks in 1 2; do
        ts=()
        for _ in $(seq "$data_runs"); do
            ts+=("$(timed "$work/m.jsonl" launch "$ranks" "$b" reward --config "$work/rm-data.json" --steps 1 \
                --metrics "$work/m.jsonl")")
            peak=$(rss)
        done
        echo "$build reward start-up on $pairs pairs, $ranks rank(s): $(median "${ts[@]}") s (runs ${ts[*]}); peak RSS per rank (MB): $peak"
    done
    with=() without=()
    for _ in $(seq "$runs"); do
        without+=("$(timed "$work/m.jsonl" launch 2 "$b" reward --config "$work/rm-no.json" --steps 1 --metrics "$work/m.jsonl")")
        with+=("$(timed "$work/m.jsonl" launch 2 "$b" reward --config "$work/rm-yes.json" --steps 1 --metrics "$work/m.jsonl")")
    done
    echo "$build reward evaluation of ${EVAL_PAIRS:-200} held-out pairs on 2 ranks: $(python3 -c "print(f'{$(median "${with[@]}") - $(median "${without[@]}"):.3f}')") s (with eval: ${with[*]}; without: ${without[*]})"
done
