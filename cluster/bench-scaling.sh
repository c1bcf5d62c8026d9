#!/usr/bin/env bash
# Scaling efficiency of llama-train, weak and strong, for 1..N ranks, on this machine's shared memory or, with
# NETNS=1, across network-namespace hosts over TCP (cluster/netns.sh). Writes runs/scaling[-netns]/scaling.json,
# scaling.svg and prints a table. Oversubscribes when there are more ranks than cores.
#
#   cluster/bench-scaling.sh [RANKS="1 2 3 4"] [CONFIG=configs/bench-small.json] [STEPS=6] [SHARDING=none]
#   NETNS=1 RANKS="1 2" cluster/bench-scaling.sh
#
# Weak: micro-batch fixed per rank (2 micro-steps of the config's micro_batch), so the global batch grows with
# the ranks. Strong: a fixed global batch of 12 sequences, one micro-step per rank, small enough that
# communication matters. For each world size: tokens/s (p50, p95 over steps after 2 warm-up steps),
# per-rank efficiency tokens/s(N) / (N · tokens/s(1)), compute and exposed-communication time, overlap,
# bytes allreduced and achieved bus bandwidth, against raw MPI_Allreduce at the bucket size, same run.
#
# With NETNS=1 and a link rate (RATE=200mbit), the run is the rate-limited network lab instead: one rank per
# namespace host for each of RANKS, every sharding mode (MODES), bytes counted on the interfaces
# (cluster/lab-scaling.sh, which says what it reports).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${NETNS:-}" ] && [ -n "${RATE:-}" ]; then
    export RANKS=${RANKS:-2 3 4} MODES=${MODES:-none optimizer gradients full}
    exec cluster/lab-scaling.sh
fi
ranks_list=${RANKS:-1 2 3 4}; config=${CONFIG:-configs/bench-small.json}; steps=${STEPS:-6}; sharding=${SHARDING:-none}
bin=${BIN:-.build/release/llama-train}
out=runs/scaling${NETNS:+-netns}; mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -x "$bin" ] || swift build -c release
seq_len=$(python3 -c "import json; print(json.load(open('$config'))['train']['seq_len'])")
micro=$(python3 -c "import json; print(json.load(open('$config'))['train']['micro_batch'])")

launch() {  # launch RANKS COMMAND...: mpirun on this machine, or across namespace hosts
    local n=$1; shift
    if [ -n "${NETNS:-}" ]; then
        SLOTS=$(( (n + 1) / 2 )) cluster/netns.sh run 2 -- mpirun --hostfile /tmp/lt-hostfile --oversubscribe -np "$n" --bind-to none "$@"
    else
        local extra=(); [ "$n" -gt "$(nproc)" ] && extra=(--oversubscribe)
        mpirun -np "$n" --bind-to none "${extra[@]}" "$@"
    fi
}

: > "$out/runs.jsonl"
for n in $ranks_list; do
    for mode in weak strong; do
        if [ $mode = weak ]; then args=(--global-batch-tokens $((2 * micro * seq_len * n)))
        else args=(--global-batch-tokens $((12 * seq_len)) --micro-batch $((12 / n))); fi
        if [ $mode = strong ] && [ $((12 % n)) -ne 0 ]; then continue; fi
        command=("$bin" pretrain --config "$config" --steps "$steps" --warmup-steps 1 --log-every 1000
                 --sharding "$sharding" --metrics "$out/$mode-$n.jsonl" "${args[@]}")
        echo "== $mode, $n rank(s): ${command[*]}" >&2
        launch "$n" "${command[@]}" > /dev/null
        echo "{\"mode\": \"$mode\", \"ranks\": $n, \"metrics\": \"$out/$mode-$n.jsonl\", \"command\": \"mpirun -np $n ${command[*]}\"}" >> "$out/runs.jsonl"
    done
    if [ "$n" -gt 1 ]; then
        params=$("$bin" plan --config "$config" --json | tail -n 1 | python3 -c "import json,sys; print(json.load(sys.stdin)['parameters'])")
        launch "$n" "$bin" allreduce-bench --floats "$params" --chunk-mb 25 | tail -n 1 > "$out/raw-$n.json"
        launch "$n" "$bin" allreduce-bench --floats 16 --iters 50 | tail -n 1 > "$out/raw-small-$n.json"
        launch "$n" "$bin" allreduce-bench --floats "$params" --bucket-mb 25 | tail -n 1 > "$out/bucketed-$n.json"
    fi
done

python3 - "$out" "$config" <<'PY'
import json, os, platform, statistics, subprocess, sys
out, config = sys.argv[1], sys.argv[2]
def sh(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return "?"
runs = [json.loads(l) for l in open(f"{out}/runs.jsonl")]
results = []
for r in runs:
    rows = [json.loads(l) for l in open(r["metrics"])][2:]
    tokens = rows[0]["tokens"] // rows[0]["step"]
    tps = sorted(tokens / x["step_s"] for x in rows)
    comm = statistics.median(x["comm_s"] for x in rows); exposed = statistics.median(x["exposed_comm_s"] for x in rows)
    n = r["ranks"]; grad_bytes = 0
    bucketed = json.load(open(f"{out}/bucketed-{n}.json")) if n > 1 else None
    raw = json.load(open(f"{out}/raw-{n}.json")) if n > 1 else None
    grad_bytes = bucketed["bytes"] if bucketed else 0
    results.append({
        "mode": r["mode"], "ranks": n, "command": r["command"], "tokens_per_step": tokens,
        "tokens_per_s_p50": statistics.median(tps), "tokens_per_s_p95": tps[int(0.95 * (len(tps) - 1))],
        "compute_s": statistics.median(x["compute_s"] for x in rows), "comm_s": comm, "exposed_comm_s": exposed,
        "overlap": (1 - exposed / comm) if comm > 0 else None, "step_s": statistics.median(x["step_s"] for x in rows),
        "optimizer_s": statistics.median(x["optimizer_s"] for x in rows),
        "raw_small_seconds": json.load(open(f"{out}/raw-small-{n}.json"))["seconds"] if n > 1 else None,
        "allreduce_bytes_per_step": grad_bytes,
        "bus_bytes_per_s_in_training": 2 * (n - 1) / n * grad_bytes / comm if comm > 0 else None,
        "bus_bytes_per_s_bucketed_alone": bucketed["bus_bytes_per_s"] if bucketed else None,
        "bus_bytes_per_s_raw_mpi_25mb_messages": raw["bus_bytes_per_s"] if raw else None})
for mode in ("weak", "strong"):
    base = [x for x in results if x["mode"] == mode and x["ranks"] == 1]
    for x in results:
        if x["mode"] == mode and base:
            x["per_rank_efficiency"] = x["tokens_per_s_p50"] / (x["ranks"] * base[0]["tokens_per_s_p50"])
report = {"machine": {"cpu": sh("lscpu | sed -n 's/^Model name: *//p'"), "cores": os.cpu_count(),
                      "memory": sh("free -g | awk '/Mem:/{print $2\" GiB\"}'"), "platform": platform.platform(),
                      "transport": "TCP across network-namespace hosts" if "netns" in out else "shared memory"},
          "versions": {"swift": sh("swift --version 2>&1 | head -1"), "openmpi": sh("mpirun --version | head -1"),
                       "openblas": sh("dpkg-query -W -f='${Version}' libopenblas0-pthread")},
          "sharding": os.environ.get("SHARDING", "none"), "config": json.load(open(config)), "results": results}
json.dump(report, open(f"{out}/scaling.json", "w"), indent=2)
print(f"{'mode':6} {'ranks':>5} {'tok/s p50':>10} {'p95':>8} {'eff/rank':>8} {'compute s':>9} {'comm s':>7} {'exposed s':>9} {'overlap':>7} {'bus GB/s (train / bucketed / raw)':>34}")
for x in results:
    bus = "/".join("-" if x[k] is None else f"{x[k] / 1e9:.2f}" for k in ("bus_bytes_per_s_in_training", "bus_bytes_per_s_bucketed_alone", "bus_bytes_per_s_raw_mpi_25mb_messages"))
    print(f"{x['mode']:6} {x['ranks']:5d} {x['tokens_per_s_p50']:10.0f} {x['tokens_per_s_p95']:8.0f} {x.get('per_rank_efficiency', 0):8.3f} "
          f"{x['compute_s']:9.3f} {x['comm_s']:7.3f} {x['exposed_comm_s']:9.3f} {'-' if x['overlap'] is None else format(x['overlap'], '.2f'):>7} {bus:>34}")
# SVG: efficiency vs ranks (left), compute vs exposed communication stacked per world size (right).
W, H, pad = 900, 380, 50
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="15">llama-train scaling: {report["machine"]["transport"]}</text>']
ranks = sorted({x["ranks"] for x in results}); maxr = max(ranks)
def px(r): return pad + (r - 1) / max(maxr - 1, 1) * (W / 2 - 2 * pad)
def py(e): return H - pad - e / 1.1 * (H - 2 * pad)
for e in (0, 0.5, 0.9, 1.0):
    svg.append(f'<line x1="{pad}" x2="{W/2-pad}" y1="{py(e):.1f}" y2="{py(e):.1f}" stroke="#ddd"/><text x="{pad-6}" y="{py(e)+4:.1f}" text-anchor="end">{e}</text>')
for mode, color in (("weak", "#1f77b4"), ("strong", "#d62728")):
    pts = [(x["ranks"], x["per_rank_efficiency"]) for x in results if x["mode"] == mode and "per_rank_efficiency" in x]
    if pts:
        svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(f"{px(r):.1f},{py(e):.1f}" for r, e in pts)}"/>')
        svg += [f'<circle cx="{px(r):.1f}" cy="{py(e):.1f}" r="3" fill="{color}"/>' for r, e in pts]
        svg.append(f'<text x="{px(pts[-1][0])+6:.1f}" y="{py(pts[-1][1]):.1f}" fill="{color}">{mode}</text>')
for r in ranks: svg.append(f'<text x="{px(r):.1f}" y="{H-pad+16}" text-anchor="middle">{r}</text>')
svg.append(f'<text x="{W/4}" y="{H-10}" text-anchor="middle">ranks (per-rank efficiency)</text>')
weak = [x for x in results if x["mode"] == "weak"]; tmax = max(x["compute_s"] + x["exposed_comm_s"] for x in weak)
bw = (W / 2 - 2 * pad) / max(len(weak), 1)
for i, x in enumerate(weak):
    x0 = W / 2 + pad + i * bw; hc = x["compute_s"] / tmax * (H - 2 * pad); he = x["exposed_comm_s"] / tmax * (H - 2 * pad)
    svg.append(f'<rect x="{x0:.1f}" y="{H-pad-hc:.1f}" width="{bw*0.6:.1f}" height="{hc:.1f}" fill="#1f77b4"/>')
    svg.append(f'<rect x="{x0:.1f}" y="{H-pad-hc-he:.1f}" width="{bw*0.6:.1f}" height="{he:.1f}" fill="#ff7f0e"/>')
    svg.append(f'<text x="{x0+bw*0.3:.1f}" y="{H-pad+16}" text-anchor="middle">{x["ranks"]}</text>')
# The bar panel's time axis: round ticks in seconds from 0 to the tallest bar, labelled.
scale = (H - 2 * pad) / tmax
tick = [m * 10 ** e for e in range(-3, 4) for m in (1, 2, 5) if m * 10 ** e >= tmax / 4][0]
t = 0.0
while t <= tmax * 1.0001:
    y = H - pad - t * scale
    svg.append(f'<line x1="{W/2+pad}" x2="{W-pad}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/><text x="{W/2+pad-6}" y="{y+4:.1f}" text-anchor="end">{t:g}</text>')
    t += tick
svg.append(f'<text x="{W/2+14}" y="{H/2}" transform="rotate(-90 {W/2+14} {H/2})" text-anchor="middle">seconds per step</text>')
svg.append(f'<text x="{3*W/4}" y="{H-10}" text-anchor="middle">weak scaling: compute (blue) and exposed communication (orange) per step</text>')
svg.append("</svg>")
open(f"{out}/scaling.svg", "w").write("\n".join(svg))
print(f"wrote {out}/scaling.json and {out}/scaling.svg")
PY
