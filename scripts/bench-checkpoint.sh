#!/usr/bin/env bash
# Checkpoint costs on bench-small (24M parameters: 293 MB of parameters and AdamW moments), 1 and 2 ranks:
# time to save (synchronously), the training stall with background saving, and time to resume.
# usage: scripts/bench-checkpoint.sh BIN [CONFIG]
set -euo pipefail
bin=$1; config=${2:-configs/bench-small.json}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for ranks in 1 2; do
    common=(--config "$config" --global-batch-tokens $((1024 * ranks)) --warmup-steps 1 --log-every 1000)
    mpirun -np "$ranks" --bind-to none "$bin" pretrain "${common[@]}" --steps 4 --checkpoint-every 2 \
        --checkpoint-dir "$work/sync$ranks" > "$work/sync.log"
    mpirun -np "$ranks" --bind-to none "$bin" pretrain "${common[@]}" --steps 4 --checkpoint-every 2 --background-save \
        --checkpoint-dir "$work/bg$ranks" > "$work/bg.log"
    mpirun -np "$ranks" --bind-to none "$bin" pretrain "${common[@]}" --steps 5 --checkpoint-dir "$work/sync$ranks" > "$work/resume.log"
    python3 - "$work" "$ranks" <<'PY'
import re, statistics, sys
work, ranks = sys.argv[1], sys.argv[2]
def grab(name, pattern):
    return [float(x) for x in re.findall(pattern, open(f"{work}/{name}.log").read())]
write = grab("sync", r"written in ([0-9.]+) s")
stall = grab("bg", r"training stalled ([0-9.]+) ms")
load = grab("resume", r"in ([0-9.]+) s\n")
print(f"{ranks} rank(s): save {statistics.median(write):.2f} s (synchronous, per checkpoint), "
      f"background-save stall {statistics.median(stall):.0f} ms, resume {load[0]:.2f} s")
PY
done
