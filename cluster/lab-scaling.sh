#!/usr/bin/env bash
# Scaling in the rate-limited network lab: one rank per namespace host (cluster/netns.sh, SLOTS=1), every host's
# link shaped to RATE in both directions, one micro-step per optimizer step per rank, for each sharding mode.
# Writes runs/lab-scaling/lab.json and prints a table. Root only (network namespaces).
#
#   RATE=200mbit RANKS="2 3 4" MODES="none full" STEPS=6 REPEATS=3 CONFIG=configs/lab-8blocks.json \
#       BIN=.build/release/llama-train cluster/lab-scaling.sh
#
# Defaults: RATE=200mbit RANKS="2 3 4" MODES="none full" STEPS=6 REPEATS=1 CONFIG=configs/lab-8blocks.json
# BIN=.build/release/llama-train TCP_LINKS=2; THREADS=K adds --threads K; RAW=0 skips the raw collective timing. A mode
# `full-noprefetch` is sharding full with --no-prefetch: the same collectives as full with every gather on the
# compute thread, which measures what a communication thread costs (the simulator's γ).
#
# Per (ranks N, mode): the medians over steps 3.. (the first 2 are warm-up) of compute_s, comm_s,
# exposed_comm_s and step_s from each run's metrics, and with REPEATS=R the median of the R runs' medians (each
# run's are kept too, so the spread shows). The repeats interleave the modes (none, full, none, full, ...), so a
# slow spell of the shared cores falls on every mode alike rather than on one: where the lab is not link-bound
# (2 hosts here) the same run's communication varies by up to 30% from one run to the next; the bytes each host's interface (lt-hK) really transmitted
# per step, from its counters (cluster/netns.sh counters) read before and after each run; the achieved
# bandwidth, bytes sent per rank per step / comm_s, against RATE; and the ideal ring bytes per rank per step,
# with Ψ the parameter count (`llama-train plan --json`): none 2·Ψ·(N−1)/N·4 (an allreduce of float32
# gradients), optimizer and gradients 2·Ψ·(N−1)/N·4 (a reduce-scatter and an allgather), full 3·Ψ·(N−1)/N·4
# (two allgathers of the parameters, forward and backward, and a reduce-scatter of the gradients).
#
# Bytes per step: a run also sends start-up traffic (MPI wire-up, the parameter broadcast: about Ψ·4 bytes,
# as much as a step) and some at the end, so the total / steps is wrong. Each (N, mode) therefore also runs
# with --steps 1, otherwise identical, and bytes per step = (tx(STEPS) − tx(1)) / (STEPS − 1): start-up,
# shutdown and the first step cancel and what is left are whole steady steps. (The alternative, STEPS and
# STEPS+4 steps, cancels the same things but costs STEPS+4 steps more instead of 1.) The counters count what
# the veth carried, headers and the ACKs a host sends for what it receives included; a veth carries GSO
# segments of up to 64 KiB with one set of headers, so that overhead is small (measured / ideal 1.002 for an
# allreduce on 2 ranks) and measured / ideal well above 1 means more traffic than the ring formula.
#
# The raw collectives (RAW=1): `llama-train allreduce-bench --floats Ψ` on the same hosts (MPI_Allreduce of
# all gradients in one message), for the bar comm_s is measured against.
set -euo pipefail
cd "$(dirname "$0")/.."
export RATE=${RATE:-200mbit}
ranks_list=${RANKS:-2 3 4}; modes=${MODES:-none full}; steps=${STEPS:-6}; repeats=${REPEATS:-1}
config=${CONFIG:-configs/lab-8blocks.json}; bin=${BIN:-.build/release/llama-train}
raw=${RAW:-1}; raw_iters=${RAW_ITERS:-3}
out=runs/lab-scaling
die() { echo "lab-scaling.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
[ -x "$bin" ] || die "no $bin: build it first (make build) or set BIN"
[ "$steps" -ge 2 ] || die "STEPS must be at least 2 (bytes per step come from STEPS and 1-step runs)"
[ "$repeats" -ge 1 ] 2>/dev/null || die "REPEATS must be a whole number of at least 1, not '$repeats'"
mkdir -p "$out"
export SLOTS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
scratch=$(mktemp -d)
trap 'cluster/netns.sh down; rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM

read -r seq_len micro < <(python3 -c "
import json; t = json.load(open('$config'))['train']; print(t.get('seq_len', 256), t.get('micro_batch', 4))")
params=$("$bin" plan --config "$config" --json | tail -n 1 | python3 -c "import json,sys; print(json.load(sys.stdin)['parameters'])")
threads=(); if [ -n "${THREADS:-}" ]; then threads=(--threads "$THREADS"); fi

counters() { cluster/netns.sh counters | python3 -c "import json,sys; print(json.dumps([json.loads(l) for l in sys.stdin]))"; }

: > "$out/runs.jsonl"
for n in $ranks_list; do
    echo "== $n host(s) at $RATE" >&2
    cluster/netns.sh up "$n" > /dev/null
    # The hosts share this machine's cores: a rank waiting in MPI yields its core (mpi_yield_when_idle) rather
    # than spinning on it, so the links, not the spinning, set the pace, as on hosts with cores of their own.
    # Two TCP connections per pair of ranks (btl_tcp_links): over one, a pair that sends both ways at once (every
    # exchange on 2 hosts, neighbour exchange on 4) ran every other step at half the link's rate here, `full` on
    # 2 hosts at 52% of it; with two, 89%.
    mpirun=(mpirun --hostfile /tmp/lt-hostfile -np "$n" --bind-to none --mca btl tcp,self
            --mca btl_tcp_if_include 10.213.7.0/24 --mca oob_tcp_if_include 10.213.7.0/24
            --mca mpi_yield_when_idle 1 --mca btl_tcp_links "${TCP_LINKS:-2}")
    ip netns exec lt-host0 tc qdisc show dev lt-h0 > "$out/tc-$n.txt"
    # run STEPS METRICS TAG: one pretrain; the hosts' counters before and after go to $scratch/TAG-{before,after}.json.
    run() {
        rm -f "$2"
        # full-noprefetch: sharding full with every gather on the compute thread (--no-prefetch).
        local sharding=${mode%-noprefetch} prefetch=()
        [ "$sharding" = "$mode" ] || prefetch=(--no-prefetch)
        command=("$bin" pretrain --config "$config" --steps "$1" --warmup-steps 1 --log-every 1000
                 --sharding "$sharding" ${prefetch[@]+"${prefetch[@]}"} --metrics "$2" --global-batch-tokens $((n * micro * seq_len))
                 --micro-batch "$micro" ${threads[@]+"${threads[@]}"})
        # A launch that fails is tried once more (OpenMPI 4.1's daemons fail to start now and then here); the
        # counters are read again around the second try.
        local try
        for try in 1 2; do
            counters > "$scratch/$3-before.json"
            if cluster/netns.sh exec -- "${mpirun[@]}" "${command[@]}" > "$2.log" 2>&1; then break; fi
            [ "$try" = 1 ] || { cat "$2.log" >&2; die "$mode on $n rank(s) failed twice"; }
            echo "   $mode on $n rank(s) failed; once more (the first try's log: $2.failed.log)" >&2
            mv "$2.log" "$2.failed.log"
            sleep 2
        done
        counters > "$scratch/$3-after.json"
    }
    declare -A commands=()
    for ((rep = 1; rep <= repeats; rep++)); do
        for mode in $modes; do
            echo "   $mode: $steps steps (run $rep of $repeats)" >&2
            run "$steps" "$out/$mode-$n-r$rep.jsonl" "$mode-r$rep"
            commands[$mode]="${mpirun[*]} ${command[*]}"
        done
    done
    for mode in $modes; do
        echo "   $mode: 1 step" >&2
        run 1 "$out/$mode-$n-1step.jsonl" "$mode-one"
        python3 - "${commands[$mode]}" "$scratch" "$out/$mode-$n" >> "$out/runs.jsonl" <<PY
import json, sys
c = lambda tag: json.load(open(f"{sys.argv[2]}/{tag}.json"))
runs = [dict(metrics=f"{sys.argv[3]}-r{k}.jsonl", counters=[c("$mode-r%d-before" % k), c("$mode-r%d-after" % k)])
        for k in range(1, $repeats + 1)]
print(json.dumps(dict(ranks=$n, mode="$mode", steps=$steps, command=sys.argv[1], runs=runs,
    one_step_counters=[c("$mode-one-before"), c("$mode-one-after")])))
PY
    done
    if [ "$raw" = 1 ]; then
        echo "   raw MPI_Allreduce of $params floats" >&2
        cluster/netns.sh exec -- "${mpirun[@]}" "$bin" allreduce-bench --floats "$params" --iters "$raw_iters" \
            2> /dev/null | tail -n 1 > "$out/raw-$n.json" || echo '{}' > "$out/raw-$n.json"
    fi
    cluster/netns.sh down
done

python3 - "$out" "$config" "$RATE" "$params" "$steps" <<'PY'
import json, re, statistics, subprocess, sys
out, config, rate, params, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def rate_bits(r):
    m = re.fullmatch(r"([0-9.]+)([a-z]*)", r.lower())
    units = {"": 1, "bit": 1, "bps": 8}
    for i, p in enumerate("kmgt", 1):
        units |= {p + "bit": 1000**i, p + "ibit": 1024**i, p + "bps": 8 * 1000**i, p + "ibps": 8 * 1024**i}
    return float(m[1]) * units[m[2]]

def sh(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return "?"

def tx(pair):  # bytes each host transmitted between two counter readings
    before, after = ({c["host"]: c for c in reading} for reading in pair)
    return [after[h]["tx_bytes"] - before[h]["tx_bytes"] for h in sorted(after)]

link = rate_bits(rate)
ideal_factor = {"none": 2, "optimizer": 2, "gradients": 2, "full": 3}
results = []
keys = ("compute_s", "comm_s", "exposed_comm_s", "step_s")
for r in (json.loads(l) for l in open(f"{out}/runs.jsonl")):
    n, mode = r["ranks"], r["mode"]
    one = tx(r["one_step_counters"])
    each = []  # per run: the medians over its steps 3.., and the bytes per host per step
    for run in r["runs"]:
        rows = [json.loads(l) for l in open(run["metrics"])]
        rows = rows[2:] or rows[-1:]
        sent = [(a - b) / (steps - 1) for a, b in zip(tx(run["counters"]), one)]
        each.append({**{k: statistics.median(x[k] for x in rows) for k in keys}, "steps_in_median": len(rows),
                     "tx_bytes_per_step_per_host": sent, "metrics": run["metrics"]})
    med = {k: statistics.median(e[k] for e in each) for k in keys}
    per_host = [statistics.median(e["tx_bytes_per_step_per_host"][h] for e in each) for h in range(n)]
    sent = statistics.mean(per_host)
    ideal = ideal_factor[mode.split("-")[0]] * params * (n - 1) / n * 4
    bw = sent * 8 / med["comm_s"] if med["comm_s"] > 0 else None
    try: raw = json.load(open(f"{out}/raw-{n}.json"))
    except Exception: raw = None
    results.append({
        "ranks": n, "mode": mode, "command": r["command"], "repeats": len(each),
        "steps_in_median": each[0]["steps_in_median"], **med,
        "comm_s_per_run": [e["comm_s"] for e in each], "step_s_per_run": [e["step_s"] for e in each],
        "tx_bytes_per_step_per_host": per_host, "tx_bytes_per_rank_per_step": sent,
        "ideal_ring_bytes_per_rank_per_step": ideal, "measured_over_ideal": sent / ideal if ideal else None,
        "achieved_bits_per_s": bw, "achieved_over_link": bw / link if bw else None,
        "tx_bytes_total_one_step_run": one, "runs": each, "raw_allreduce": raw or None,
    })
lab = {
    "cpu": sh("lscpu | sed -n 's/^Model name: *//p' | head -n 1"), "cores": sh("nproc"), "rate": rate,
    "rate_bits_per_s": link, "config": config, "run_config": json.load(open(config)), "parameters": params,
    "steps": steps, "repeats": max(x["repeats"] for x in results),
    "lab": "RATE=%s SLOTS=1 cluster/netns.sh up N; cluster/netns.sh exec -- COMMAND" % rate,
    "tc": {n: open(f"{out}/tc-{n}.txt").read().strip() for n in sorted({x["ranks"] for x in results})},
    "results": results,
}
json.dump(lab, open(f"{out}/lab.json", "w"), indent=2)
print(f"{lab['cpu']}, {lab['cores']} cores; links {rate}; {config}: {params} parameters; {steps} steps "
      f"(medians over steps 3.., then over {lab['repeats']} run(s); bytes per step from {steps} − 1 steps)")
head = ("ranks", "mode", "compute_s", "comm_s", "exposed_s", "step_s", "MB/rank/step", "ideal MB", "meas/ideal",
        "Mbit/s", "of link", "raw allreduce s", "comm_s per run")
print("  ".join(f"{h:>10}" for h in head))
for x in results:
    raw = x["raw_allreduce"] or {}
    cells = (x["ranks"], x["mode"], f"{x['compute_s']:.3f}", f"{x['comm_s']:.3f}", f"{x['exposed_comm_s']:.3f}",
             f"{x['step_s']:.3f}", f"{x['tx_bytes_per_rank_per_step'] / 1e6:.2f}",
             f"{x['ideal_ring_bytes_per_rank_per_step'] / 1e6:.2f}", f"{x['measured_over_ideal']:.3f}",
             f"{x['achieved_bits_per_s'] / 1e6:.0f}" if x["achieved_bits_per_s"] else "-",
             f"{100 * x['achieved_over_link']:.0f}%" if x["achieved_over_link"] else "-",
             f"{raw['seconds']:.3f}" if "seconds" in raw else "-")
    print("  ".join(f"{c:>10}" for c in cells), "  " + " ".join(f"{c:.2f}" for c in x["comm_s_per_run"]))
print(f"wrote {out}/lab.json")
PY
