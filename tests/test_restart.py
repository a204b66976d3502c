"""An interrupted sharded stage leaves nothing that looks complete and resumes cleanly."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import copy_workflow

pytestmark = pytest.mark.workflow

MERGED = "results/tiny/references/references.safetensors"
SHARDS = [f"results/tiny/references/shards/{i}-of-3.safetensors" for i in (1, 2, 3)]


def command(*extra):
    return [
        sys.executable,
        "-m",
        "snakemake",
        MERGED,
        "--cores",
        "1",
        *extra,
        "--configfile",
        "tiny.yaml",
    ]


def test_killed_reference_stage_resumes_from_finished_shards(repo, tmp_path):
    reference = copy_workflow(tmp_path / "uninterrupted")
    subprocess.run(command(), cwd=reference, check=True, capture_output=True, timeout=600)

    workdir = copy_workflow(tmp_path / "interrupted")
    # The data and subject model of the uninterrupted run, with their times (Snakemake
    # finds them up to date): the interrupted run starts with the reference stage.
    for name in ("data", "models"):
        shutil.copytree(reference / "results/tiny" / name, workdir / "results/tiny" / name)
    process = subprocess.Popen(
        command(),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Kill mid-stage: once one shard is done and recorded (the next shard's job
        # has started, so its log exists) and before the last one is.
        logs = workdir / "results/tiny/logs/collect_references"
        deadline = time.monotonic() + 300
        while True:
            done = [s for s in SHARDS if (workdir / s).exists()]
            started = list(logs.glob("*.log")) if logs.exists() else []
            if done and len(started) > len(done):
                break
            assert process.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (workdir / MERGED).exists()
    leftovers = [p.name for p in (workdir / "results").rglob("*") if p.name.endswith(".tmp")]
    finished = [shard for shard in SHARDS if (workdir / shard).exists()]
    assert finished and len(finished) < 3, finished
    before = {shard: (workdir / shard).stat().st_mtime_ns for shard in finished}

    # A killed Snakemake leaves its lock behind; --unlock is the documented first step.
    subprocess.run(command("--unlock"), cwd=workdir, check=True, capture_output=True, timeout=120)
    result = subprocess.run(
        command("--rerun-incomplete"), cwd=workdir, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for shard, mtime in before.items():  # finished shards were not computed again
        assert (workdir / shard).stat().st_mtime_ns == mtime, shard
    assert (workdir / MERGED).read_bytes() == (reference / MERGED).read_bytes()
    for shard in SHARDS:
        assert (workdir / shard).read_bytes() == (reference / shard).read_bytes(), shard
    # Temporary files of the killed job (if it was mid-write) never look like outputs.
    assert all(name.startswith(".") for name in leftovers), leftovers
