#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start-cluster.sh started (and only those: it lists
# them in /run/monoscope-test-cluster), cancelling their jobs first, and wait until
# they have exited.
set -u
marker=/run/monoscope-test-cluster
[ -f "${marker}" ] || exit 0
scancel --user=root 2>/dev/null || true
started=$(sort -u "${marker}")
for daemon in ${started}; do
  pkill -x "${daemon}" 2>/dev/null || true
done
rm -f "${marker}"
# Remove the configuration start-cluster.sh wrote once its controller is stopped: while a
# slurm.conf names a controller that does not answer, every later Snakemake start waits for
# scontrol's timeout, since the SLURM executor plugin runs `scontrol show config` when imported.
if grep -qx slurmctld <<< "${started}" && grep -q "Written by monoscope" /etc/slurm/slurm.conf 2>/dev/null; then
  rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf
fi
running() {
  for daemon in ${started} slurmscriptd; do
    pgrep -x "${daemon}" >/dev/null && return 0
  done
  return 1
}
for _ in $(seq 1 20); do
  running || exit 0
  sleep 0.5
done
echo "stop-cluster: daemons still running after 10 s" >&2
exit 0
