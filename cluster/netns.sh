#!/usr/bin/env bash
# Several "hosts" on one machine, for testing multi-node runs: each host is a network namespace with its own
# address on a bridge, and mpirun reaches them through cluster/netns-agent.sh in place of ssh. The bridge
# lives in a namespace of its own, so nothing in the machine's own network changes (no /etc/hosts edits,
# no interfaces in the root namespace); traffic never leaves the machine. Root only.
#
#   cluster/netns.sh up 2                 # hosts lt-host0 (10.213.7.1) and lt-host1 (10.213.7.2)
#   cluster/netns.sh run 2 -- CMD...      # up, run CMD inside lt-host0 with $HOSTFILE set, then down (even on failure)
#   cluster/netns.sh cut 1                # take lt-host1's link down (a failed cable)
#   cluster/netns.sh exec -- CMD...       # run CMD inside lt-host0 with the same MPI environment as `run`, on
#                                         # hosts already up (several runs on one set of hosts; `down` after)
#   cluster/netns.sh counters             # per host, one JSON line: {"host": K, "tx_bytes": .., "rx_bytes": ..}
#                                         # of lt-hK (what the host's "NIC" sent and received since `up`)
#   cluster/netns.sh down                 # remove every namespace this script made
#
# Link rate: with RATE set (a tc rate: 50mbit, 200mbit, 1gbit, 10gbit, ...), `up` and `run` shape every host's
# link in both directions with a token bucket (tbf; this kernel has no netem): on lt-hK inside lt-hostK (what the
# host sends) and on lt-pK inside lt-switch (what it receives). burst = max(64 KiB, rate/250 s), i.e. 4 ms of
# traffic and at least one 64 KiB GSO segment of the veth, above the rate/HZ floor for HZ >= 250; latency 20 ms
# (the queue: about rate * 20 ms + burst bytes), enough for TCP to keep the link full at any rate (veth RTTs are
# microseconds). BURST=BYTES and LATENCY=TIME override them. Without RATE the links are unshaped veths (many
# Gbit/s, memory speed). `RATE=200mbit cluster/netns.sh run 4 -- CMD` is four 200 Mbit/s hosts on a switch.
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
        if [ -n "${RATE:-}" ]; then
            # A collective after compute finds its connections idle; Linux would restart them from slow start,
            # so each call's first RTTs ran below the rate and the modes differed by how often they call.
            # Cluster interconnects keep their rate (RDMA has no slow start; HPC nodes set this to 0).
            ip netns exec "$ns" sysctl -qw net.ipv4.tcp_slow_start_after_idle="${SLOW_START_AFTER_IDLE:-0}"
            ip netns exec "$ns" tc qdisc replace dev "$prefix-h$k" root tbf "${shaping[@]}"
            ip netns exec "$prefix-switch" tc qdisc replace dev "$prefix-p$k" root tbf "${shaping[@]}"
        fi
    done
    hostfile
}

# RATE in bits per second, from tc's units (bare number or bit, kbit, mbit, gbit, tbit, their IEC kibit...,
# and the byte units bps, kbps, mbps, ...).
rate_bits() {
    awk -v r="$1" 'BEGIN {
        if (!match(r, /^[0-9]+(\.[0-9]+)?/)) exit 1
        v = substr(r, 1, RLENGTH); u = tolower(substr(r, RLENGTH + 1))
        m["bit"] = 1; m[""] = 1; m["bps"] = 8
        split("k m g t", p, " ")
        for (i = 1; i <= 4; i++) {
            m[p[i] "bit"] = 1000 ^ i; m[p[i] "ibit"] = 1024 ^ i
            m[p[i] "bps"] = 8 * 1000 ^ i; m[p[i] "ibps"] = 8 * 1024 ^ i
        }
        if (!(u in m)) exit 1
        printf "%.0f\n", v * m[u]
    }'
}

shaping=()
if [ -n "${RATE:-}" ]; then
    rate_bps=$(rate_bits "$RATE") || { echo "netns.sh: RATE=$RATE is not a tc rate (e.g. 200mbit, 1gbit)" >&2; exit 1; }
    [ "$rate_bps" -gt 0 ] || { echo "netns.sh: RATE=$RATE must be positive" >&2; exit 1; }
    burst=${BURST:-$(( rate_bps / 8 / 250 > 65536 ? rate_bps / 8 / 250 : 65536 ))}
    shaping=(rate "$RATE" burst "$burst" latency "${LATENCY:-20ms}")
fi

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
    rm -rf /tmp/"$prefix"-host*-tmp  # the hosts' own TMPDIRs (netns-agent.sh)
}

cut() { ip -n "$prefix-host$1" link set "$prefix-h$1" down; }

counters() {
    local ns k
    for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-host" | sort -V); do
        k=${ns#"$prefix-host"}
        # `ip netns exec` mounts the namespace's own /sys: the 64-bit counters of `ip -s link`, no JSON tool needed.
        ip netns exec "$ns" sh -c 'd=/sys/class/net/$1/statistics; printf "{\"host\": %s, \"tx_bytes\": %s, \"rx_bytes\": %s}\n" "$2" "$(cat $d/tx_bytes)" "$(cat $d/rx_bytes)"' sh "$prefix-h$k" "$k"
    done
}

mpi_env() {
    # OpenMPI over TCP on the bridge only; the agent replaces ssh; shared memory is off between "hosts".
    export OMPI_MCA_plm_rsh_agent="$here/netns-agent.sh"
    export OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include="$subnet.0/24" OMPI_MCA_oob_tcp_if_include="$subnet.0/24"
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    # Notice a lost daemon in seconds, not OpenMPI's default 8 minutes of TCP keepalives.
    export OMPI_MCA_oob_tcp_keepalive_time=${OMPI_MCA_oob_tcp_keepalive_time:-3}
    export OMPI_MCA_oob_tcp_keepalive_intvl=${OMPI_MCA_oob_tcp_keepalive_intvl:-1}
    export OMPI_MCA_oob_tcp_keepalive_probes=${OMPI_MCA_oob_tcp_keepalive_probes:-3}
    # OpenMPI 4.1's daemons share their hwloc topology through a mapping at an address they pick in the
    # biggest hole of their address space; now and then that write segfaults at start (seen once in 24 lab
    # launches on 3 hosts, orted in hwloc_shmem_topology_write). Without the share each reads its own.
    export OMPI_MCA_rtc_hwloc_vmhole=${OMPI_MCA_rtc_hwloc_vmhole:-none}
}

case "${1:-}" in
    up) up "${2:?number of hosts}" >/dev/null; hostfile ;;
    down) down ;;
    cut) cut "${2:?host index}" ;;
    counters) counters ;;
    exec)
        shift
        [ "${1:-}" = "--" ] && shift
        ip netns list | grep -q "^$prefix-host0" || die "no hosts: cluster/netns.sh up N first"
        export HOSTFILE=${HOSTFILE:-/tmp/$prefix-hostfile}
        mpi_env
        ip netns exec "$prefix-host0" "$@"
        ;;
    run)
        n=${2:?number of hosts}; shift 2
        [ "${1:-}" = "--" ] && shift
        trap down EXIT INT TERM
        export HOSTFILE
        HOSTFILE=$(up "$n" | tail -n 1)
        mpi_env
        ip netns exec "$prefix-host0" "$@"
        ;;
    *) die "usage: [RATE=200mbit] $0 up N | down | cut K | counters | exec -- COMMAND... | [RATE=...] run N -- COMMAND..." ;;
esac
