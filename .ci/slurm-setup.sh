#!/usr/bin/env bash
# Start a single-node Slurm on this machine for the tests marked `slurm` (issue 6).
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge, writes /etc/slurm/slurm.conf for one
# node with this machine's CPUs and memory, keeps Slurm's state, spool, logs and pid files under
# $FILTERSHIFT_SLURM_DIR (default /tmp/filtershift-slurm), starts munged, slurmctld and slurmd, and
# waits until `sinfo` shows the node idle.
#
# Idempotent: a second run finds the node idle and returns at once; a run after a reboot (daemons
# gone, files kept) starts them again. Runs as root (CI machines and these VMs do).
#
#   .ci/slurm-setup.sh            # install + configure + start, wait for an idle node
#   .ci/slurm-setup.sh --stop     # stop the daemons this script started (by their pid files)
#
# The configuration keys below are those seen working on these machines (gVisor VMs, no systemd,
# no cgroups): proctrack/linuxproc, task/none, select/cons_tres, munged --force.
set -euo pipefail

SLURM_DIR=${FILTERSHIFT_SLURM_DIR:-/tmp/filtershift-slurm}
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)
WAIT_S=${FILTERSHIFT_SLURM_WAIT_S:-120}

log() { echo "slurm-setup: $*" >&2; }

stop_daemons() {
    local name pidfile
    for name in slurmd slurmctld munged; do
        pidfile="$SLURM_DIR/$name.pid"
        [ "$name" = munged ] && pidfile=/run/munge/munged.pid
        if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            log "stopping $name (pid $(cat "$pidfile"))"
            kill "$(cat "$pidfile")" || true
        fi
    done
}

if [ "${1:-}" = "--stop" ]; then
    stop_daemons
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    log "must run as root (it installs packages and starts daemons)"
    exit 1
fi

node_state() { sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null | head -n1 || true; }

# Already up? (idempotent fast path)
if command -v sinfo >/dev/null && [ "$(node_state)" = idle ]; then
    log "node $NODE already idle"
    exit 0
fi

# 1. Packages -----------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
    || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# 2. munge --------------------------------------------------------------------------------------
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
# munged --force runs as root: give it the key, state and log folders (the package made them munge:munge)
chown -R root:root /etc/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    rm -f /run/munge/munged.pid
    # --force: run as root and accept the root-owned key and folders
    munged --force --pid-file=/run/munge/munged.pid
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null | unmunge >/dev/null || { log "munged did not come up"; exit 1; }
fi

# 3. slurm.conf ---------------------------------------------------------------------------------
mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool" "$SLURM_DIR/log" /etc/slurm
# CPUs, boards/sockets/cores/threads and memory as slurmd sees them; keep 5% of memory for the OS.
NODE_LINE=$(slurmd -C | head -n1)
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
CPUS=${CPUS:-$(nproc)}
MEM=${MEM:-$(free -m | awk '/^Mem:/ {print $2}')}
MEM=$((MEM * 95 / 100))

NEW_CONF=$(mktemp)
cat >"$NEW_CONF" <<EOF
# Written by filtershift .ci/slurm-setup.sh: a single-node Slurm for tests. Do not edit by hand.
ClusterName=filtershift
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no systemd or cgroups on these machines: track processes by parent pid, no task containment
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# fast turnaround for tests: short scheduler interval, quick kill of cancelled jobs
SchedulerParameters=sched_interval=2
KillWait=5
MinJobAge=60
InactiveLimit=0
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

CONF_CHANGED=0
if ! cmp -s "$NEW_CONF" "$CONF"; then
    log "writing $CONF (node $NODE: CPUs=$CPUS RealMemory=${MEM}M)"
    install -m 0644 "$NEW_CONF" "$CONF"
    CONF_CHANGED=1
fi
rm -f "$NEW_CONF"

# 4. daemons ------------------------------------------------------------------------------------
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$CONF_CHANGED" = 1 ]; then
    stop_daemons_slurm() {
        local p
        for p in "$SLURM_DIR/slurmd.pid" "$SLURM_DIR/slurmctld.pid"; do
            if running "$p"; then kill "$(cat "$p")" || true; fi
        done
        for _ in $(seq 50); do
            running "$SLURM_DIR/slurmd.pid" || running "$SLURM_DIR/slurmctld.pid" || break
            sleep 0.2
        done
    }
    stop_daemons_slurm
fi

if ! running "$SLURM_DIR/slurmctld.pid"; then
    log "starting slurmctld (log $SLURM_DIR/log/slurmctld.log)"
    # -c: start from a clean state (no jobs left over from an earlier run); -i: ignore state errors
    slurmctld -c -i
fi
for _ in $(seq 100); do
    scontrol ping >/dev/null 2>&1 && break
    sleep 0.2
done
scontrol ping >/dev/null 2>&1 || { log "slurmctld did not answer; see $SLURM_DIR/log/slurmctld.log"; tail -n 30 "$SLURM_DIR/log/slurmctld.log" >&2 || true; exit 1; }

if ! running "$SLURM_DIR/slurmd.pid"; then
    log "starting slurmd (log $SLURM_DIR/log/slurmd.log)"
    slurmd
fi

# 5. wait for an idle node ----------------------------------------------------------------------
deadline=$((SECONDS + WAIT_S))
state=""
while [ $SECONDS -lt $deadline ]; do
    state=$(node_state)
    case "$state" in
        idle) break ;;
        down* | drain* | fail*)
            # a node left down by an earlier run (or a config change): bring it back
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
if [ "$state" != idle ]; then
    log "node $NODE is '$state' after ${WAIT_S}s, not idle"
    sinfo -R >&2 || true
    tail -n 30 "$SLURM_DIR/log/slurmd.log" "$SLURM_DIR/log/slurmctld.log" >&2 || true
    exit 1
fi
log "node $NODE idle ($(sinfo --noheader --format='%P %c CPUs %m MB'))"
