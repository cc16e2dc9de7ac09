#!/usr/bin/env bash
# Start a real single-host SLURM cluster for tests: slurmctld plus two slurmd
# daemons (compute nodes n1 and n2, both on 127.0.0.1, ports 17001/17002),
# partition "debug" (default) holding both nodes.
#
# Meant for a root shell on Debian 12 without systemd (CI). Installs slurm-wlm
# and munge with apt-get when they are missing. Idempotent: when the cluster
# already answers, it exits 0 at once.
#
#   bash .ci/slurm_cluster.sh
#
# Config: /etc/slurm/slurm.conf; state: /var/spool/slurmctld, /var/spool/slurmd/<node>;
# logs: /var/log/slurm/{slurmctld,slurmd-n1,slurmd-n2}.log, /var/log/munge/munged.log.
#
# Caveats for tests (Slurm 22.05):
# - No slurmdbd: sacct does not work; read job state with squeue / scontrol.
# - slurmctld checks time limits every 30 s (compile-time PERIODIC_TIMEOUT), so a
#   --time=1 job is killed 60-90 s after it starts (state TIMEOUT); a
#   --signal=[B:]SIG@T warning arrives up to ~30 s earlier than T before the end.
# - A requeued job (scontrol requeue) is PENDING (Reason=BeginTime) for about
#   AuthInfo cred_expire (10 s) before it starts again with SLURM_RESTART_COUNT=1.
# - A finished job stays visible in squeue/scontrol for MinJobAge (5 s) plus up
#   to the 10 s purge interval.
# - MaxArraySize=5: a job array holds at most 5 tasks.
set -euo pipefail

NODES=(n1 n2)
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
WAIT_S=${SLURM_CLUSTER_WAIT_S:-60}
export DEBIAN_FRONTEND=noninteractive
START=$(date +%s)

log() { echo "slurm: $*" >&2; }

# --- helpers ----------------------------------------------------------------

ctld_listening() { # sinfo takes ~9 s to give up on a dead controller; a port probe doesn't
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/6817" 2>/dev/null
}

node_states() { # prints "NODE STATE" lines, nothing if the controller does not answer
  command -v sinfo >/dev/null 2>&1 || return 0
  ctld_listening || return 0
  timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null || true
}

cluster_up() {
  local states n
  states=$(node_states)
  for n in "${NODES[@]}"; do
    grep -qE "^$n (idle|alloc|mix)\$" <<<"$states" || return 1
  done
}

pid_alive() { # pidfile, expected process name
  local pid
  [[ -s $1 ]] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

stop_pidfile() { # pidfile, expected process name
  local pid i
  pid_alive "$1" "$2" || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

show_logs() {
  local f
  for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR"/slurmd-n1.log "$LOG_DIR"/slurmd-n2.log \
           /var/log/munge/munged.log; do
    [[ -f $f ]] || continue
    echo "----- tail $f" >&2
    tail -n 30 "$f" >&2 || true
  done
  echo "----- sinfo" >&2
  timeout 10 sinfo -N -l >&2 2>&1 || true
}

# --- wanted slurm.conf ------------------------------------------------------

HOST=$(hostname -s 2>/dev/null || hostname)
CPUS=$(nproc 2>/dev/null || echo 2)
(( CPUS >= 2 )) || CPUS=2
new_conf=$(cat <<EOF
# Written by .ci/slurm_cluster.sh: single-host test cluster. Do not edit here.
ClusterName=ftftci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s, minimum 5).
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
SlurmctldPort=6817
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmctldDebug=info
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmdSpoolDir=$SLURMD_SPOOL/%n
SlurmdDebug=info
SlurmdParameters=config_overrides
StateSaveLocation=$CTLD_SPOOL
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
# Job arrays of at most 5 tasks (SLURM's default: 1001), so that the tests meet the limit a sweep
# of thousands of trials meets.
MaxArraySize=5
MinJobAge=5
KillWait=5
OverTimeLimit=0
InactiveLimit=0
SlurmctldTimeout=10
SlurmdTimeout=30
MessageTimeout=10
Waittime=0
UnkillableStepTimeout=30
NodeName=n1 NodeAddr=127.0.0.1 Port=17001 CPUs=$CPUS RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 Port=17002 CPUs=$CPUS RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
)

# --- fast path --------------------------------------------------------------

# Up, and running the config this script would write (else: rewrite, restart).
if [[ -f $CONF && $(cat "$CONF") == "$new_conf" ]] && cluster_up; then
  echo "slurm: cluster already up (nodes ${NODES[*]})"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || { log "must run as root"; exit 1; }

# --- packages ---------------------------------------------------------------

export PATH=$PATH:/usr/sbin:/sbin
missing=0
for c in slurmctld slurmd sinfo sbatch munged munge unmunge; do
  command -v "$c" >/dev/null 2>&1 || missing=1
done
if (( missing )); then
  log "installing slurm-wlm and munge"
  # Keep package scripts from starting daemons with a default setup.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      slurm-wlm munge; } >/tmp/slurm_cluster_apt.log 2>&1 || rc=$?
  (( own_policy )) && rm -f /usr/sbin/policy-rc.d
  if (( rc )); then
    tail -n 30 /tmp/slurm_cluster_apt.log >&2
    log "apt-get failed (rc=$rc)"
    exit 1
  fi
fi

# --- name resolution --------------------------------------------------------

for n in "${NODES[@]}"; do
  if ! grep -qE "^127\.0\.0\.1([[:space:]].*)?[[:space:]]$n([[:space:]]|\$)" /etc/hosts; then
    echo "127.0.0.1 ${NODES[*]}" >>/etc/hosts
    break
  fi
done
if ! getent hosts "$HOST" >/dev/null 2>&1; then
  echo "127.0.0.1 $HOST" >>/etc/hosts
fi

# --- munge ------------------------------------------------------------------

id munge >/dev/null 2>&1 || { log "no munge user (munge package broken?)"; exit 1; }
install -d -o munge -g munge -m 700 /etc/munge /var/lib/munge
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
  # A stale socket/lock from a dead munged makes a new one refuse: --force.
  runuser -u munge -- munged --force >/dev/null 2>&1 ||
    munged --force >/dev/null 2>&1 || true
  for i in $(seq 50); do munge_ok && break; sleep 0.1; done
  munge_ok || { log "munged did not start"; show_logs; exit 1; }
fi

# --- slurm.conf -------------------------------------------------------------

install -d -m 755 "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL"
for n in "${NODES[@]}"; do install -d -m 755 "$SLURMD_SPOOL/$n"; done

conf_changed=0
if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$new_conf" ]]; then
  printf '%s\n' "$new_conf" >"$CONF"
  conf_changed=1
fi

# --- daemons ----------------------------------------------------------------

if (( conf_changed )); then
  # Old daemons would keep the old config: restart them all.
  for n in "${NODES[@]}"; do stop_pidfile "$RUN_DIR/slurmd-$n.pid" slurmd; done
  stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
fi

if ! pid_alive "$RUN_DIR/slurmctld.pid" slurmctld; then
  # -c (clean start) when the config changed, so stale saved state cannot clash.
  ctld_args=()
  (( conf_changed )) && ctld_args=(-c)
  slurmctld "${ctld_args[@]}" || { log "slurmctld failed to start"; show_logs; exit 1; }
fi
for n in "${NODES[@]}"; do
  if ! pid_alive "$RUN_DIR/slurmd-$n.pid" slurmd; then
    slurmd -N "$n" || { log "slurmd -N $n failed to start"; show_logs; exit 1; }
  fi
done

# --- wait -------------------------------------------------------------------

deadline=$(( $(date +%s) + WAIT_S ))
resumed=0
until cluster_up; do
  if (( $(date +%s) >= deadline )); then
    log "cluster not up after ${WAIT_S}s"
    show_logs
    exit 1
  fi
  # Nodes marked down/drained in saved state (not just unresponsive): resume once.
  if (( ! resumed )); then
    states=$(node_states)
    for n in "${NODES[@]}"; do
      if grep -qE "^$n (down|drain|drng|fail)\$" <<<"$states"; then
        timeout 10 scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true
        resumed=1
      fi
    done
  fi
  sleep 1
done

echo "slurm: cluster up (nodes ${NODES[*]}) in $(( $(date +%s) - START ))s"
