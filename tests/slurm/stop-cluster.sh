#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start-cluster.sh started (jobs are cancelled first)
# and wait until they have exited.
set -u
scancel --user=root 2>/dev/null || true
for daemon in slurmd slurmctld munged; do
  pkill -x "${daemon}" 2>/dev/null || true
done
for _ in $(seq 1 20); do
  pgrep -x 'slurmd|slurmctld|slurmscriptd|munged' >/dev/null || exit 0
  sleep 0.5
done
echo "stop-cluster: daemons still running after 10 s" >&2
exit 0
