#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start-cluster.sh started (jobs are cancelled first)
# and wait until they have exited.
set -u
scancel --user=root 2>/dev/null || true
for daemon in slurmd slurmctld munged; do
  pkill -x "${daemon}" 2>/dev/null || true
done
running() {
  for daemon in slurmd slurmctld slurmscriptd munged; do
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
