#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests and CI (root, Debian/Ubuntu).
#
#   scripts/slurm_local.sh start    install slurm-wlm + munge if missing, start munged,
#                                   slurmctld and slurmd; wait until the node is idle
#   scripts/slurm_local.sh stop     stop the three daemons; remove the config we wrote
#   scripts/slurm_local.sh status   exit 0 when the cluster answers (sinfo)
#
# Accounting is off (no slurmdbd/mariadb): two more daemons and a database for nothing the tests
# need. Job state comes from squeue instead (snakemake --slurm-status-command squeue), which sees
# finished jobs for MinJobAge seconds, so MinJobAge is large.
# State, spool and logs live in $VLDISTILL_SLURM_DIR (default /tmp/vldistill-slurm).
set -euo pipefail

DIR=${VLDISTILL_SLURM_DIR:-/tmp/vldistill-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by vldistill scripts/slurm_local.sh"

die() { echo "slurm_local: $*" >&2; exit 1; }

# PID 1 may not reap daemons promptly: a dead one lingers as a zombie that still answers kill -0.
alive() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null || true)
    [[ -n "$stat" && "$stat" != Z* ]]
}

pid_alive() { [[ -f "$1" ]] && alive "$(cat "$1")"; }

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    [[ $(id -u) == 0 ]] || die "slurm-wlm/munge are missing and installing them needs root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
    }
}

write_conf() {
    if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and is not ours; refusing to overwrite a real cluster's config"
    fi
    # the node as slurmd sees it (CPUs, sockets, memory), under the name we start slurmd with;
    # a little memory is kept back for the daemons and the submitting Snakemake
    local node memory
    node=$(slurmd -C | head -n 1)
    memory=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$node")
    node=$(sed -E "s/^NodeName=[^ ]+/NodeName=localhost NodeAddr=127.0.0.1/; \
        s/RealMemory=[0-9]+/RealMemory=$((memory - 1024))/" <<<"$node")
    mkdir -p /etc/slurm
    cat >"$CONF" <<EOF
$MARK
ClusterName=vldistill
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue this long: the status checks rely on it
MinJobAge=3600
ReturnToService=2
KillWait=5
InactiveLimit=0
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
$node State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    install_packages
    if sinfo -h >/dev/null 2>&1 && pid_alive "$DIR/slurmctld.pid"; then
        echo "slurm_local: already running"; return
    fi
    mkdir -p "$DIR"/{state,spool,log}
    write_conf

    mkdir -p /run/munge && chown munge:munge /run/munge
    if [[ ! -f /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    if ! pid_alive /run/munge/munged.pid; then
        runuser -u munge -- munged --force
    fi
    slurmctld -i
    slurmd -N localhost

    for _ in $(seq 60); do
        if [[ $(sinfo -h -N -o %T 2>/dev/null) == idle* ]]; then
            echo "slurm_local: up ($(sinfo -h -N -o '%N %c CPUs %m MB'))"
            return
        fi
        sleep 1
    done
    tail -n 20 "$DIR"/log/*.log >&2 || true
    die "the node did not become idle within 60 s"
}

stop() {
    local pidfile pid
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" /run/munge/munged.pid; do
        pid_alive "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 20); do alive "$pid" || break; sleep 0.5; done
        if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    if [[ -f $CONF ]] && grep -qF "$MARK" "$CONF"; then rm -f "$CONF"; fi
    echo "slurm_local: stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) sinfo -h >/dev/null 2>&1 ;;
    *) die "usage: $0 start|stop|status" ;;
esac
