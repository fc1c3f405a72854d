#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine (for tests and CI): up | down | status.
#
#   scripts/slurm-cluster.sh up      # munged + slurmctld + slurmd, waits until the node is idle
#   scripts/slurm-cluster.sh status  # exit 0 when the cluster answers and the node is usable
#   scripts/slurm-cluster.sh down    # cancels jobs, stops every daemon it started, removes state
#
# Needs root and the Debian packages slurm-wlm and munge. Every command is idempotent. State,
# spool, pid and log files live under $DACBR_SLURM_STATE_DIR (default /tmp/dacbench-remote-slurm);
# the config goes to /etc/slurm/slurm.conf, which is refused if something else wrote it.
set -euo pipefail

STATE_DIR=${DACBR_SLURM_STATE_DIR:-/tmp/dacbench-remote-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by dacbench-remote scripts/slurm-cluster.sh"
MUNGE_RUN=/run/munge
WAIT_SECONDS=${DACBR_SLURM_WAIT:-60}

log() { echo "slurm-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

# pid from a pid file if that process is alive, else nothing.
live_pid() {
    local file=$1 pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Stop the process in a pid file: SIGTERM, wait, then SIGKILL; returns when it is gone.
stop_pidfile() {
    local name=$1 file=$2 pid i
    pid=$(live_pid "$file") || { rm -f "$file"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not stop after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    kill -0 "$pid" 2>/dev/null && die "$name (pid $pid) is still running"
    rm -f "$file"
}

need_tools() {
    [[ $(id -u) == 0 ]] || die "must run as root (slurmd and munged need it)"
    local tool missing=()
    for tool in munged munge unmunge slurmctld slurmd sinfo squeue scancel; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) || die "missing ${missing[*]}: apt-get install slurm-wlm munge"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        log "munged already running"
        return 0
    fi
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge /etc/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none)
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    # --force: a socket left by a killed munged must not block the start.
    runuser -u munge -- munged --force
    touch "$STATE_DIR/munged.ours"
    local i
    for ((i = 0; i < 50; i++)); do munge_works && return 0; sleep 0.1; done
    die "munged did not start (see /var/log/munge/munged.log)"
}

write_conf() {
    if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; refusing to replace a real cluster's config"
    fi
    local node
    node=$(slurmd -C | head -n 1)
    [[ $node == NodeName=* ]] || die "slurmd -C printed no node line: $node"
    mkdir -p "$(dirname "$CONF")" "$STATE_DIR/state" "$STATE_DIR/spool"
    cat >"$CONF.tmp" <<EOF
$MARKER (state in $STATE_DIR)
ClusterName=dacbr
SlurmctldHost=$(hostname)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
KillWait=5
MinJobAge=60
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n 1; }

cmd_up() {
    need_tools
    mkdir -p "$STATE_DIR"
    start_munge
    if live_pid "$STATE_DIR/slurmctld.pid" >/dev/null && live_pid "$STATE_DIR/slurmd.pid" >/dev/null; then
        log "slurmctld and slurmd already running"
    else
        write_conf
        if ! live_pid "$STATE_DIR/slurmctld.pid" >/dev/null; then
            slurmctld -c || die "slurmctld failed to start: $(tail -n 20 "$STATE_DIR/slurmctld.log" 2>/dev/null)"
        fi
        if ! live_pid "$STATE_DIR/slurmd.pid" >/dev/null; then
            slurmd || die "slurmd failed to start: $(tail -n 20 "$STATE_DIR/slurmd.log" 2>/dev/null)"
        fi
    fi
    local i state=""
    for ((i = 0; i < WAIT_SECONDS * 5; i++)); do
        state=$(node_state || true)
        case $state in
            idle|mixed|allocated) log "node is $state"; sinfo; return 0 ;;
            down*|drain*) scontrol update nodename="$(hostname)" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    log "slurmctld log tail:"; tail -n 20 "$STATE_DIR/slurmctld.log" >&2 || true
    log "slurmd log tail:"; tail -n 20 "$STATE_DIR/slurmd.log" >&2 || true
    die "the node did not become idle within ${WAIT_SECONDS}s (last state: ${state:-no answer})"
}

# slurmstepd processes of jobs that outlived their job (after slurmd is gone they have no owner).
leftover_stepds() {
    local proc
    for proc in /proc/[0-9]*; do
        [[ $(readlink "$proc/exe" 2>/dev/null) == */slurmstepd ]] && echo "${proc#/proc/}"
    done
    return 0
}

cmd_down() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    if live_pid "$STATE_DIR/slurmctld.pid" >/dev/null; then
        local jobs i
        jobs=$(squeue -h -o '%A' 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            log "cancelling jobs: $(echo $jobs)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 150; i++)); do
                [[ -z $(squeue -h -o '%A' 2>/dev/null || true) ]] && break
                sleep 0.2
            done
        fi
    fi
    stop_pidfile slurmd "$STATE_DIR/slurmd.pid"
    stop_pidfile slurmctld "$STATE_DIR/slurmctld.pid"
    local pid
    for pid in $(leftover_stepds); do
        log "killing leftover slurmstepd (pid $pid)"
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -e $STATE_DIR/munged.ours ]]; then
        stop_pidfile munged "$MUNGE_RUN/munged.pid"
        rm -f "$STATE_DIR/munged.ours"
    fi
    if [[ -e $CONF ]] && grep -qF "$MARKER" "$CONF"; then
        rm -f "$CONF"
    fi
    rm -rf "$STATE_DIR"
    log "down"
}

cmd_status() {
    local ok=0 name file pid
    for name in slurmctld slurmd; do
        file="$STATE_DIR/$name.pid"
        if pid=$(live_pid "$file"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; ok=1; fi
    done
    if munge_works; then echo "munged: running"; else echo "munged: not running"; ok=1; fi
    if ((ok == 0)); then
        local state
        state=$(node_state || true)
        echo "node: ${state:-no answer}"
        case $state in idle|mixed|allocated|completing) ;; *) ok=1 ;; esac
        squeue 2>/dev/null || true
    fi
    return $ok
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
