#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests/test_slurm.py (Debian, root).
#   .ci/slurm_cluster.sh start   install (once), configure, start munged, slurmctld, slurmd
#   .ci/slurm_cluster.sh stop    stop the three daemons by the PIDs in their pid files
# No systemd and no slurmdbd: the profile polls with squeue (sacct needs accounting).
# The node declares more CPUs and memory than this machine has (config_overrides), so that
# jobs ask for exactly what profiles/slurm states; the test runs only light rules.
# Exit 3: this machine cannot run SLURM (not root, no apt-get, the install failed, or a
# slurm.conf that this script did not write exists: a real cluster's is never touched).
# `stop` also removes the slurm.conf it wrote: with SLURM's client installed and its
# controller down, every Snakemake start would wait ~9 s (the SLURM executor plugin probes
# `scontrol show config` when it is imported).
set -euo pipefail

RUN=/run/slurm
CONF=/etc/slurm/slurm.conf
PIDS=("$RUN/slurmd.pid" "$RUN/slurmctld.pid" /run/munge/munged.pid)
CLUSTER_NAME=wattpeft-ci
NODE_CPUS=${SLURM_TEST_CPUS:-16}
NODE_MEM_MB=${SLURM_TEST_MEM_MB:-128000}

cannot() { echo "slurm_cluster: cannot run SLURM here: $*" >&2; exit 3; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return
  [ "$(id -u)" = 0 ] || cannot "not root (installing Debian packages needs root)"
  command -v apt-get >/dev/null || cannot "no apt-get (Debian/Ubuntu only)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge \
    || { apt-get update -q && apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge; }; } \
    >/tmp/slurm_cluster_install.log 2>&1 || cannot "apt-get install failed (log: /tmp/slurm_cluster_install.log)"
}

ours() { grep -q "^ClusterName=$CLUSTER_NAME$" "$CONF" 2>/dev/null; }

write_conf() {
  local host
  host=$(hostname -s)
  if [ -e "$CONF" ] && ! ours; then cannot "$CONF exists and was not written by this script"; fi
  mkdir -p /etc/slurm "$RUN" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown slurm:slurm "$RUN" /var/spool/slurmctld /var/log/slurm
  cat >"$CONF" <<EOF
ClusterName=$CLUSTER_NAME
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU=500
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=300
ReturnToService=2
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${NODE_CPUS} RealMemory=${NODE_MEM_MB} State=UNKNOWN
PartitionName=cpu Nodes=${host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=${host} Default=NO MaxTime=INFINITE State=UP
EOF
}

start() {
  install
  stop_daemons
  write_conf
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  runuser -u munge -- munged || cannot "munged did not start"
  slurmctld || cannot "slurmctld did not start (log: /var/log/slurm/slurmctld.log)"
  slurmd || cannot "slurmd did not start (log: /var/log/slurm/slurmd.log)"
  for _ in $(seq 50); do
    sinfo -h -o %T 2>/dev/null | grep -qx idle && { echo "slurm_cluster: up ($(hostname -s), partitions cpu and gpu)"; return; }
    sleep 0.2
  done
  cannot "the node never became idle: $(sinfo -h -o '%T %E' 2>&1)"
}

stop_daemons() {
  local pidfile pid
  for pidfile in "${PIDS[@]}"; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop_daemons; if ours; then rm -f "$CONF"; fi; echo "slurm_cluster: stopped" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
