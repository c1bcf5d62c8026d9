#!/usr/bin/env bash
# mpirun's "ssh" for cluster/netns.sh: `netns-agent.sh ADDRESS COMMAND...` runs COMMAND inside the network
# namespace that owns ADDRESS (10.213.7.(k+1) is lt-hostk). It maps addresses itself: nothing global changes.
set -euo pipefail
while [[ "${1:-}" == -* ]]; do shift; done   # ssh-style options mpirun may pass
address=$1; shift
last=${address##*.}
[[ "$address" == 10.213.7.* && "$last" =~ ^[0-9]+$ ]] || { echo "netns-agent: unknown host $address" >&2; exit 255; }
exec ip netns exec "lt-host$((last - 1))" /bin/sh -c "$*"
