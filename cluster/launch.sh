#!/usr/bin/env bash
# Launches llama-train under mpirun across the nodes of a hostfile, with the binding and environment a CPU
# trainer needs. Everything after the options is passed to llama-train.
#
#   cluster/launch.sh --hostfile cluster/hostfile.example --ranks 8 --threads 4 --iface eth0 \
#       pretrain --config configs/llama2-7b.json --checkpoint-dir runs/7b/ck
#
# --ranks N       total ranks (default: the sum of the hostfile's slots)
# --threads K     OpenBLAS threads per rank; each rank is bound to K cores (--map-by slot:PE=K); default 1
# --iface NAME    network interface (or CIDR) for OpenMPI's TCP traffic, e.g. eth0 or 10.0.0.0/24
# --no-bind       let the OS place ranks (--bind-to none), e.g. when cores are shared
# --dry-run       print the mpirun command instead of running it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hostfile="" ranks="" threads=1 iface="" bind=1 dry=0
bin=${LLAMA_TRAIN:-$here/../.build/release/llama-train}
while [ $# -gt 0 ]; do
    case "$1" in
        --hostfile) hostfile=$2; shift 2 ;;
        --ranks) ranks=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --iface) iface=$2; shift 2 ;;
        --no-bind) bind=0; shift ;;
        --dry-run) dry=1; shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--hostfile F] [--ranks N] [--threads K] [--iface I] [--no-bind] [--dry-run] COMMAND [ARGS...]" >&2; exit 2; }
cmd=(mpirun)
if [ -n "$hostfile" ]; then
    [ -r "$hostfile" ] || { echo "launch.sh: cannot read hostfile $hostfile" >&2; exit 2; }
    cmd+=(--hostfile "$hostfile")
    [ -n "$ranks" ] || ranks=$(awk '!/^[[:space:]]*#/ && match($0, /slots=[0-9]+/) { n += substr($0, RSTART + 6, RLENGTH - 6) } END { print n + 0 }' "$hostfile")
fi
[ -n "$ranks" ] || ranks=1
cmd+=(-np "$ranks")
if [ "$bind" = 1 ]; then cmd+=(--map-by "slot:PE=$threads" --bind-to core); else cmd+=(--bind-to none); fi
cmd+=(-x "OPENBLAS_NUM_THREADS=$threads" -x OMPI_ALLOW_RUN_AS_ROOT=1 -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
[ -n "$iface" ] && cmd+=(--mca btl_tcp_if_include "$iface" --mca oob_tcp_if_include "$iface")
# A node that drops off the network is noticed within a minute (OpenMPI's default is 8 minutes).
cmd+=(--mca oob_tcp_keepalive_time 30 --mca oob_tcp_keepalive_intvl 5 --mca oob_tcp_keepalive_probes 4)
cmd+=("$bin" "$@")
case "$1" in pretrain) cmd+=(--threads "$threads") ;; esac
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ "$dry" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; else exec "${cmd[@]}"; fi
