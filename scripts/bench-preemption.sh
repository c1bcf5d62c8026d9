#!/usr/bin/env bash
# Time from a preemption signal to exit 75, this build against an earlier one (BEFORE_BIN, optional), in one
# run: bench-small on 2 ranks, 8 micro-steps per rank per step, a checkpoint directory; SIGUSR1 to mpirun (which
# forwards it to the ranks, as Slurm's --signal=B:USR1 and cluster/slurm.sbatch do) at a point of step 2 drawn
# uniformly from its second to its last micro-step; the wall time until mpirun exits, against the step's length.
# Medians of RUNS runs (default 5); the signal points are the same for both builds.
#   usage: scripts/bench-preemption.sh BIN [BEFORE_BIN]
set -euo pipefail
bin=$1 before=${2:-}
runs=${RUNS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "cpu: $cpu"
micro=4 seq=256 accumulation=8
tokens=$((2 * micro * seq * accumulation))

# one BIN FRACTION TAG: a run signalled FRACTION of the way through step 2; prints "seconds-to-exit step-seconds".
one() {
    local bin=$1 fraction=$2 dir=$work/$3
    rm -rf "$dir" && mkdir -p "$dir"
    mpirun -np 2 --oversubscribe "$bin" pretrain --config configs/bench-small.json --steps 100 \
        --global-batch-tokens "$tokens" --checkpoint-dir "$dir/ck" --metrics "$dir/m.jsonl" --log-every 1 \
        > "$dir/out" 2> "$dir/err" &
    local job=$!
    while [ ! -s "$dir/m.jsonl" ]; do
        kill -0 "$job" 2> /dev/null || { cat "$dir/err" >&2; echo "the run ended before step 1" >&2; exit 1; }
        sleep 0.05
    done
    local step
    step=$(python3 -c "import json; print(json.loads(open('$dir/m.jsonl').readline())['step_s'])")
    sleep "$(python3 -c "print($step * $fraction)")"
    local start
    start=$(date +%s.%N)
    kill -USR1 "$job"
    set +e
    wait "$job"; local status=$?
    set -e
    local end
    end=$(date +%s.%N)
    [ "$status" = 75 ] || { cat "$dir/err" >&2; echo "exit $status, not 75" >&2; exit 1; }
    python3 -c "print($end - $start, $step)"
}

fractions=$(python3 -c "
import random; r = random.Random(7)
print(' '.join(str(r.uniform(1 / $accumulation, 1)) for _ in range($runs)))")
results=()
for label in after before; do
    b=$bin; [ "$label" = before ] && b=$before
    [ -n "$b" ] || continue
    : > "$work/$label.txt"
    k=0
    for f in $fractions; do
        k=$((k + 1))
        one "$b" "$f" "$label-$k" >> "$work/$label.txt"
    done
    results+=("$label")
done
python3 - "$work" "$cpu" "$accumulation" "${results[@]}" <<'PY'
import json, statistics, sys
work, cpu, accumulation, labels = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
out = {"cpu": cpu, "config": "configs/bench-small.json", "ranks": 2, "micro_steps_per_step": accumulation}
for label in labels:
    rows = [tuple(map(float, l.split())) for l in open(f"{work}/{label}.txt")]
    waits, steps = [r[0] for r in rows], [r[1] for r in rows]
    out[label] = {"signal_to_exit_s": statistics.median(waits), "step_s": statistics.median(steps),
                  "of_a_step": statistics.median(w / s for w, s in rows), "runs": waits}
    print(f"{label:>7}: signal to exit 75 {out[label]['signal_to_exit_s']:.2f} s (median of {len(rows)}), "
          f"a step {out[label]['step_s']:.2f} s: {out[label]['of_a_step']:.2f} of a step")
print(json.dumps(out))
PY
