#!/usr/bin/env bash
# cluster/slurm.sbatch against a real time limit under a real Slurm (cluster/local-slurm.sh on this machine):
# bench-small on 2 ranks, 8 micro-steps a step, STEPS steps (default 12), in a job of --time=LIMIT minutes
# (default 2) with --signal=B:USR1@LEAD (default 60). Each start trains until Slurm's signal, commits, exits 75
# and requeues; the next resumes; the job completes. Then the final parameters against an uninterrupted run's,
# byte for byte. Prints the starts, each stop's "preempted" line and margins, and one JSON line. Root only.
#   usage: scripts/bench-slurm-timelimit.sh BIN
set -euo pipefail
bin=$(realpath "$1")
steps=${STEPS:-12} limit=${LIMIT:-2} lead=${LEAD:-60}
work=$(mktemp -d)
slurm=$work/slurm
trap 'cluster/local-slurm.sh down "$slurm"; rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "cpu: $cpu"
tokens=$((2 * 4 * 256 * 8))
python3 - "$work/run.json" "$steps" "$tokens" <<'PY'
import json, sys
c = json.load(open("configs/bench-small.json"))
c["train"].update(steps=int(sys.argv[2]), global_batch_tokens=int(sys.argv[3]), warmup_steps=4)
json.dump(c, open(sys.argv[1], "w"))
PY
echo "uninterrupted: $steps steps"
start=$(date +%s)
mpirun -np 2 --oversubscribe "$bin" pretrain --config "$work/run.json" --out "$work/full" --log-every 1000 > "$work/full.log"
echo "  $(( $(date +%s) - start )) s"

export SLURM_CONF
SLURM_CONF=$(cluster/local-slurm.sh up "$slurm")
id=$(RUN_DIR=$work/run LLAMA_TRAIN=$bin SIGNAL_LEAD=$lead TRAIN_ARGS="--log-every 10" \
    sbatch --parsable --nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 --time="$limit" \
    --signal="B:USR1@$lead" --chdir="$PWD" --output="$work/job.out" cluster/slurm.sbatch "$work/run.json")
id=${id%%;*}
echo "job $id: --time=$limit --signal=B:USR1@$lead"
start=$(date +%s)
deadline=$((start + ${DEADLINE:-1800}))
while :; do
    state=$(scontrol show job "$id" | tr ' ' '\n' | sed -n 's/^JobState=//p')
    case $state in PENDING | RUNNING | CONFIGURING | COMPLETING | REQUEUED | RESIZING) ;; *) break ;; esac
    [ "$(date +%s)" -lt "$deadline" ] || { state="$state (still, after ${DEADLINE:-1800} s)"; break; }
    # A requeued batch job becomes eligible 121 s after its requeue; the benchmark does not wait for that.
    if [ "$state" = PENDING ]; then scontrol update JobId="$id" StartTime=now 2> /dev/null || true; fi
    sleep 1
done
wall=$(( $(date +%s) - start ))
restarts=$(scontrol show job "$id" | tr ' ' '\n' | sed -n 's/^Restarts=//p')
grep -E "preempted|margin|resumed from|requeueing|time limit" "$work/job.out" | sed 's/^/  /'
same=false
cmp -s "$work/full/model.safetensors" "$work/run/final/model.safetensors" && same=true
echo "job $id: $state after $wall s and $restarts requeue(s); final parameters equal to the uninterrupted run's: $same"
python3 -c "
import json; print(json.dumps(dict(cpu='$cpu', config='configs/bench-small.json', ranks=2, micro_steps=8, steps=$steps,
    time_limit_min=$limit, signal_lead_s=$lead, state='$state', requeues=int('$restarts' or 0), wall_s=$wall,
    bitwise_equal=$([ $same = true ] && echo True || echo False))))"
[ "$state" = COMPLETED ] && [ "$same" = true ]
