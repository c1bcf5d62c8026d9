#!/usr/bin/env bash
# Streaming `prepare` at scale: a generated JSON Lines corpus at two sizes (default 100 and 400 MB), prepared
# with 1 and 2 ranks. Reports wall time, the 2-rank speed-up and each rank's peak RSS, which must not grow
# with the input.
# usage: scripts/bench-prepare.sh BIN [SMALL_MB] [LARGE_MB]
set -euo pipefail
bin=$1; small=${2:-100}; large=${3:-400}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
scripts/install-deps.sh fortunes time bc
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 - "$work" "$small" "$large" <<'PY'
import json, random, sys, glob, sysconfig
work, sizes = sys.argv[1], [int(x) for x in sys.argv[2:]]
pool = []
for path in sorted(glob.glob("/usr/share/games/fortunes/*")) + sorted(glob.glob(sysconfig.get_paths()["stdlib"] + "/*.py")):
    if path.endswith((".dat", ".u8")): continue
    try: pool += [l for l in open(path, encoding="utf-8", errors="replace").read().split("\n") if l.strip()]
    except IsADirectoryError: pass
rng = random.Random(1)
for mb in sizes:
    with open(f"{work}/corpus-{mb}.jsonl", "w") as f:
        written, n = 0, 0
        while written < mb << 20:
            text = "\n".join(rng.choice(pool) for _ in range(rng.randint(3, 60))) + f" {n}"
            line = json.dumps({"id": n, "text": text}) + "\n"
            f.write(line); written += len(line); n += 1
PY
"$bin" tokenizer train --input $(ls -d /usr/share/games/fortunes/* | grep -v -E '\.(dat|u8)$') --input-sentence-size 200000 \
    --vocab-size 8000 --threads 2 --out "$work/tok.model" > /dev/null
for mb in "$small" "$large"; do
    for ranks in 1 2; do
        start=$(date +%s.%N)
        mpirun --oversubscribe -np "$ranks" /usr/bin/time -f "rss_kb %M" -o "$work/rss-%q{OMPI_COMM_WORLD_RANK}" \
            "$bin" prepare --tokenizer "$work/tok.model" --input "$work/corpus-$mb.jsonl" --out "$work/out-$mb-$ranks" > "$work/log" 2>&1 \
            || { cat "$work/log"; exit 1; }
        seconds=$(echo "$(date +%s.%N) - $start" | bc)
        rss=$(cat "$work"/rss-* | awk '{printf "%s%d", sep, $2/1024; sep=","}'); rm -f "$work"/rss-*
        tokens=$(grep -o '[0-9]* tokens' "$work/log" | head -1)
        echo "prepare ${mb} MB, $ranks rank(s): ${seconds} s, $tokens, peak RSS per rank (MB): $rss"
        echo "{\"input_mb\": $mb, \"ranks\": $ranks, \"seconds\": $seconds, \"peak_rss_mb\": [$rss]}" >> "$work/results"
    done
    scripts/token-stream-sha256.py "1 and 2 ranks" "$work/out-$mb-1" "$work/out-$mb-2"
    rm -rf "$work/out-$mb-1" "$work/out-$mb-2"
done
python3 - "$work/results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for mb in sorted({r["input_mb"] for r in rows}):
    one = next(r for r in rows if r["input_mb"] == mb and r["ranks"] == 1); two = next(r for r in rows if r["input_mb"] == mb and r["ranks"] == 2)
    print(f"{mb} MB: 2 ranks {one['seconds'] / two['seconds']:.2f}x one rank; peak RSS per rank {max(one['peak_rss_mb'] + two['peak_rss_mb'])} MB at most")
print(json.dumps(rows))
PY
