#!/usr/bin/env bash
# `prepare` on Parquet against JSON Lines: the same documents (default 400 MB of text) as a snappy Parquet file
# of ROW_GROUPS row groups (pyarrow, as datatrove writes FineWeb) and as JSON Lines, each prepared with 1 and 2
# ranks, the formats alternating within each of RUNS rounds. Reports text bytes per second (medians), the
# Parquet/JSON Lines ratio per rank count, each rank's peak RSS, and whether the token streams are identical.
# usage: scripts/bench-prepare-parquet.sh BIN [TEXT_MB] [RUNS] [ROW_GROUPS]
set -euo pipefail
bin=$1; mb=${2:-400}; runs=${3:-3}; groups=${4:-16}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
scripts/install-deps.sh fortunes time bc
scripts/install-python-deps.sh pyarrow==25.0.1
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
    "$(grep -q avx512_bf16 /proc/cpuinfo && echo avx512_bf16 || echo 'AVX2, no avx512_bf16')"
python3 - "$work" "$mb" "$groups" <<'PY'
import json, random, sys, glob, sysconfig
import pyarrow as pa, pyarrow.parquet as pq
work, mb, groups = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pool = []
for path in sorted(glob.glob("/usr/share/games/fortunes/*")) + sorted(glob.glob(sysconfig.get_paths()["stdlib"] + "/*.py")):
    if path.endswith((".dat", ".u8")): continue
    try: pool += [l for l in open(path, encoding="utf-8", errors="replace").read().split("\n") if l.strip()]
    except IsADirectoryError: pass
rng = random.Random(1)
schema = pa.schema([("text", pa.string()), ("id", pa.string()), ("metadata", pa.struct([("dump", pa.string()), ("url", pa.string())]))])
writer = pq.ParquetWriter(f"{work}/corpus.parquet", schema, compression="snappy")
total, n = 0, 0
with open(f"{work}/corpus.jsonl", "w", encoding="utf-8") as jsonl:
    for g in range(groups):
        texts = []
        while total < (g + 1) * (mb << 20) // groups:
            text = "\n".join(rng.choice(pool) for _ in range(rng.randint(3, 60))) + f" {n}"
            texts.append(text); total += len(text.encode()); n += 1
            jsonl.write(json.dumps({"text": text, "id": f"doc-{n}"}) + "\n")
        ids = [f"doc-{n - len(texts) + i + 1}" for i in range(len(texts))]
        meta = [{"dump": "CC-MAIN-2024-10", "url": f"https://example.com/{i}"} for i in ids]
        writer.write_table(pa.table({"text": texts, "id": ids, "metadata": meta}, schema=schema), row_group_size=len(texts))
writer.close()
open(f"{work}/text-bytes", "w").write(str(total))
print(f"{n} documents, {total / 2**20:.0f} MB of text; {pq.ParquetFile(f'{work}/corpus.parquet').metadata.num_row_groups} row groups")
PY
ls -l "$work/corpus.parquet" "$work/corpus.jsonl" | awk '{printf "%s: %.0f MB\n", $9, $5 / 1048576}'
"$bin" tokenizer train --input $(ls -d /usr/share/games/fortunes/* | grep -v -E '\.(dat|u8)$') --input-sentence-size 200000 \
    --vocab-size 8000 --threads 2 --out "$work/tok.model" > /dev/null
text_bytes=$(cat "$work/text-bytes")
for run in $(seq "$runs"); do
    for ranks in 1 2; do
        for format in jsonl parquet; do
            out="$work/out-$format-$ranks"; rm -rf "$out"
            start=$(date +%s.%N)
            mpirun --oversubscribe -np "$ranks" /usr/bin/time -f "rss_kb %M" -o "$work/rss-%q{OMPI_COMM_WORLD_RANK}" \
                "$bin" prepare --tokenizer "$work/tok.model" --input "corpus=$work/corpus.$format" --out "$out" > "$work/log" 2>&1 \
                || { cat "$work/log"; exit 1; }
            seconds=$(echo "$(date +%s.%N) - $start" | bc)
            rss=$(cat "$work"/rss-* | awk '{printf "%s%d", sep, $2/1024; sep=","}'); rm -f "$work"/rss-*
            echo "round $run, $format, $ranks rank(s): ${seconds} s, $(echo "$text_bytes / $seconds / 1048576" | bc -l | xargs printf '%.2f') MB/s of text, peak RSS per rank (MB): $rss"
            echo "{\"format\": \"$format\", \"ranks\": $ranks, \"seconds\": $seconds, \"peak_rss_mb\": [$rss]}" >> "$work/results"
        done
        scripts/token-stream-sha256.py "JSON Lines and Parquet" "$work/out-jsonl-$ranks" "$work/out-parquet-$ranks"
    done
done
python3 - "$work/results" "$text_bytes" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
text = int(sys.argv[2]) / 2**20
for ranks in (1, 2):
    rate = {f: statistics.median(text / r["seconds"] for r in rows if r["format"] == f and r["ranks"] == ranks) for f in ("jsonl", "parquet")}
    rss = max(m for r in rows if r["ranks"] == ranks and r["format"] == "parquet" for m in r["peak_rss_mb"])
    print(f"{ranks} rank(s): Parquet {rate['parquet']:.2f} MB/s of text, JSON Lines {rate['jsonl']:.2f} MB/s: "
          f"{rate['parquet'] / rate['jsonl']:.2f}x (medians); Parquet peak RSS per rank {rss} MB")
print(json.dumps(rows))
PY
