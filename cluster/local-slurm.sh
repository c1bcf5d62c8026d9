#!/usr/bin/env bash
# A one-node Slurm of this machine, for trying cluster/slurm.sbatch and for the tests: Debian's munged,
# slurmctld and slurmd (make deps installs them), on a socket, a key and ports of their own, every state and log
# file in DIR; nothing under /etc is read or changed. Root only (slurmd runs jobs as their users).
#
#   cluster/local-slurm.sh up DIR        # start; prints the SLURM_CONF to export for sbatch, squeue, scontrol
#   SLURM_CONF=DIR/slurm.conf sbatch --time=2 cluster/slurm.sbatch configs/demo.json
#   cluster/local-slurm.sh down DIR      # stop the three daemons
#
# The node has this machine's cores (CPUS overrides), proctrack/linuxproc and task/none (no cgroups needed),
# cons_tres by CPU; PORT (default 17000 + a number drawn from DIR) and PORT + 1 are slurmctld's and slurmd's.
set -euo pipefail
die() { echo "local-slurm.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: cluster/local-slurm.sh up|down DIR"
command=$1 dir=$2

down() {
    # Jobs first: slurmd's end leaves a job's processes running.
    if [ -f "$dir/slurmctld.pid" ] && [ -f "$dir/slurm.conf" ]; then
        jobs=$(SLURM_CONF=$dir/slurm.conf squeue -h -o %i 2> /dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086  # a list of job ids
            SLURM_CONF=$dir/slurm.conf scancel $jobs 2> /dev/null || true
            for _ in $(seq 100); do
                [ -z "$(SLURM_CONF=$dir/slurm.conf squeue -h -o %i 2> /dev/null)" ] && break
                sleep 0.1
            done
        fi
    fi
    for daemon in slurmd slurmctld munged; do
        [ -f "$dir/$daemon.pid" ] || continue
        pid=$(cat "$dir/$daemon.pid")
        rm -f "$dir/$daemon.pid"
        kill "$pid" 2> /dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2> /dev/null || true
    done
}

case $command in
down) down; exit 0 ;;
up) ;;
*) die "usage: cluster/local-slurm.sh up|down DIR" ;;
esac
[ "$(id -u)" -eq 0 ] || die "needs root"
for b in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd; do
    [ -x "$b" ] || die "no $b: make deps installs munge, slurmctld and slurmd"
done
mkdir -p "$dir/state" "$dir/spool"
chmod 700 "$dir" "$dir/state"
dir=$(cd "$dir" && pwd)
host=$(hostname -s)
port=${PORT:-$((17000 + 2 * ($(printf '%s' "$dir" | cksum | cut -d' ' -f1) % 2000)))}
[ -f "$dir/munge.key" ] || { head -c 1024 /dev/urandom > "$dir/munge.key"; chmod 400 "$dir/munge.key"; }
cat > "$dir/slurm.conf" <<EOF
ClusterName=lt
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobRequeue=1
NodeName=$host CPUs=${CPUS:-$(nproc)} State=UNKNOWN
PartitionName=lt Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/slurm.conf
trap 'down' ERR
/usr/sbin/munged --socket="$dir/munge.socket" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
    --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" --force < /dev/null > "$dir/munged.start" 2>&1
/usr/sbin/slurmctld -f "$SLURM_CONF" -i < /dev/null > "$dir/slurmctld.start" 2>&1
/usr/sbin/slurmd -f "$SLURM_CONF" -N "$host" < /dev/null > "$dir/slurmd.start" 2>&1
for _ in $(seq 120); do
    if sinfo -h -o %T 2> /dev/null | grep -q idle; then echo "$SLURM_CONF"; exit 0; fi
    sleep 0.5
done
echo "local-slurm.sh: the node never became idle; the logs:" >&2
tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd.log "$dir"/munged.log >&2 || true
down
exit 1
