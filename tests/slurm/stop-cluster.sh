#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start-cluster.sh started (jobs are cancelled first).
set -u
scancel --user=root 2>/dev/null || true
for daemon in slurmd slurmctld munged; do
  pkill -x "${daemon}" 2>/dev/null || true
done
exit 0
