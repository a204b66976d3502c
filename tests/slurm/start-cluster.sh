#!/usr/bin/env bash
# Start a single-node SLURM cluster on loopback with one (fake) GRES gpu, for the
# workflow test that runs Snakemake with --executor slurm. Installs Debian's slurm-wlm
# and munge when they are missing. Idempotent; tests/slurm/stop-cluster.sh stops what
# this started. Needs root (CI and the development machines run as root).
set -euo pipefail

log() { echo "start-cluster: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "not root: cannot start a cluster here"; exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  log "installing slurm-wlm and munge"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

marker=/run/monoscope-test-cluster
# Never touch a SLURM configuration that this script did not write (a real cluster node).
if [ -f /etc/slurm/slurm.conf ] && ! grep -q "Written by monoscope" /etc/slurm/slurm.conf; then
  log "/etc/slurm/slurm.conf belongs to another SLURM setup: leaving it alone"; exit 1
fi
host=$(hostname)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/munge

cat > /etc/slurm/slurm.conf <<CONF
# Written by monoscope's tests/slurm/start-cluster.sh
ClusterName=monoscope
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MinJobAge=600
ReturnToService=2
GresTypes=gpu
NodeName=${host} CPUs=${cpus} RealMemory=${memory} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=${host} Name=gpu File=/dev/null
CONF

if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
# Remember what this script started, so stop-cluster.sh stops only that.
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged && echo munged >> "${marker}"
fi
pgrep -x slurmctld >/dev/null || { /usr/sbin/slurmctld && echo slurmctld >> "${marker}"; }
pgrep -x slurmd >/dev/null || { /usr/sbin/slurmd && echo slurmd >> "${marker}"; }

for _ in $(seq 1 30); do
  state=$(sinfo -h -n "${host}" -o %T 2>/dev/null || true)
  case "${state}" in
    idle*|mixed*|allocated*) log "node ${host} is ${state}"; exit 0 ;;
    drain*|down*) scontrol update nodename="${host}" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
log "the node did not come up; see /var/log/slurm/"
exit 1
