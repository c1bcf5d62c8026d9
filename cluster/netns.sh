#!/usr/bin/env bash
# Several "hosts" on one machine, for testing multi-node runs: each host is a network namespace with its own
# address on a bridge, and mpirun reaches them through cluster/netns-agent.sh in place of ssh. The bridge
# lives in a namespace of its own, so nothing in the machine's own network changes (no /etc/hosts edits,
# no interfaces in the root namespace); traffic never leaves the machine. Root only.
#
#   cluster/netns.sh up 2                 # hosts lt-host0 (10.213.7.1) and lt-host1 (10.213.7.2)
#   cluster/netns.sh run 2 -- CMD...      # up, run CMD inside lt-host0 with $HOSTFILE set, then down (even on failure)
#   cluster/netns.sh cut 1                # take lt-host1's link down (a failed cable)
#   cluster/netns.sh down                 # remove every namespace this script made
set -euo pipefail
prefix=lt
subnet=10.213.7
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "netns.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (ip netns); run it as root or skip the multi-host tests"

up() {
    local n=$1
    down 2>/dev/null || true
    ip netns add "$prefix-switch"
    ip -n "$prefix-switch" link add "$prefix-br0" type bridge
    ip -n "$prefix-switch" link set "$prefix-br0" up
    for ((k = 0; k < n; k++)); do
        local ns=$prefix-host$k
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip link add "$prefix-h$k" netns "$ns" type veth peer name "$prefix-p$k" netns "$prefix-switch"
        ip -n "$prefix-switch" link set "$prefix-p$k" master "$prefix-br0" up
        ip -n "$ns" addr add "$subnet.$((k + 1))/24" dev "$prefix-h$k"
        ip -n "$ns" link set "$prefix-h$k" up
    done
    hostfile
}

hostfile() {
    local file=${HOSTFILE:-/tmp/$prefix-hostfile}
    : > "$file"
    for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-host" | sort -V); do
        echo "$subnet.$(( ${ns#"$prefix-host"} + 1 )) slots=${SLOTS:-1}" >> "$file"
    done
    echo "$file"
}

down() {
    # Processes left inside a namespace (a daemon cut off from its mpirun) would keep it alive: end them first.
    for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-"); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns"
    done
}

cut() { ip -n "$prefix-host$1" link set "$prefix-h$1" down; }

case "${1:-}" in
    up) up "${2:?number of hosts}" >/dev/null; hostfile ;;
    down) down ;;
    cut) cut "${2:?host index}" ;;
    run)
        n=${2:?number of hosts}; shift 2
        [ "${1:-}" = "--" ] && shift
        trap down EXIT INT TERM
        export HOSTFILE
        HOSTFILE=$(up "$n" | tail -n 1)
        # OpenMPI over TCP on the bridge only; the agent replaces ssh; shared memory is off between "hosts".
        export OMPI_MCA_plm_rsh_agent="$here/netns-agent.sh"
        export OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include="$subnet.0/24" OMPI_MCA_oob_tcp_if_include="$subnet.0/24"
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
        # Notice a lost daemon in seconds, not OpenMPI's default 8 minutes of TCP keepalives.
        export OMPI_MCA_oob_tcp_keepalive_time=${OMPI_MCA_oob_tcp_keepalive_time:-3}
        export OMPI_MCA_oob_tcp_keepalive_intvl=${OMPI_MCA_oob_tcp_keepalive_intvl:-1}
        export OMPI_MCA_oob_tcp_keepalive_probes=${OMPI_MCA_oob_tcp_keepalive_probes:-3}
        ip netns exec "$prefix-host0" "$@"
        ;;
    *) die "usage: $0 up N | down | cut K | run N -- COMMAND..." ;;
esac
