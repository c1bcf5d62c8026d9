#!/usr/bin/env bash
# mpirun's "ssh" for cluster/netns.sh: `netns-agent.sh ADDRESS COMMAND...` runs COMMAND inside the network
# namespace that owns ADDRESS (10.213.7.(k+1) is lt-hostk). It maps addresses itself: nothing global changes.
set -euo pipefail
while [[ "${1:-}" == -* ]]; do shift; done   # ssh-style options mpirun may pass
address=$1; shift
last=${address##*.}
[[ "$address" == 10.213.7.* && "$last" =~ ^[0-9]+$ ]] || { echo "netns-agent: unknown host $address" >&2; exit 255; }
# Each host its own TMPDIR, as real hosts have their own /tmp: OpenMPI keeps its session directory there,
# /tmp/ompi.HOSTNAME.UID, and hosts that share one name and one /tmp would create and remove it under each
# other (an orted of one job failed in mkdir as another's finished).
tmp=/tmp/lt-host$((last - 1))-tmp
mkdir -p "$tmp"
exec ip netns exec "lt-host$((last - 1))" env TMPDIR="$tmp" /bin/sh -c "$*"
