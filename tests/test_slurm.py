"""The workflow on a real SLURM cluster (tests/slurm/start-cluster.sh starts one).

Skipped only when no job can be submitted: no ``sbatch``, or no node that is up.
"""

import re
import shutil
import subprocess

import pytest
import torch
from conftest import copy_workflow
from helpers import snakemake as run_snakemake

from monoscope.io import load_tensors

pytestmark = pytest.mark.workflow

TARGET = "results/tiny/circuits/circuits.safetensors"
GPU_RULES = {"train_subject", "collect_references", "compute_circuits"}
# The SLURM run makes the merged references from the local run's data and subject model
# (4 jobs in 2 steps: a GPU rule and a CPU rule): each step waits for the executor's
# status checks, and the dry run above covers every other rule's requests.
SLURM_TARGET = "results/tiny/references/references.safetensors"
SLURM_GPU_RULES = {"collect_references"}
SEEDED = ("data", "models")  # results/tiny/<name>, copied from the local run


def cluster_is_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return state.returncode == 0 and any(
        s.startswith(("idle", "mixed", "allocated")) for s in state.stdout.split()
    )


def snakemake(workdir, *args, target=TARGET):
    return run_snakemake(workdir, target, *args, "--configfile", "tiny.yaml", timeout=900)


def test_gpu_requests_in_a_dry_run_with_the_slurm_profile(repo, tmp_path):
    copy_workflow(tmp_path / "dry")
    result = snakemake(tmp_path / "dry", "-n", "--profile", "profiles/slurm")
    assert result.returncode == 0, result.stderr[-3000:]
    rules = re.findall(r"^rule (\w+):\n(?:.*\n)*?\s+resources: (.*)$", result.stdout, re.M)
    assert rules, result.stdout[-2000:]
    for rule, resources in rules:
        assert ("gpu=1" in resources) == (rule in GPU_RULES), (rule, resources)


@pytest.mark.skipif(not cluster_is_up(), reason="no SLURM cluster to submit to")
def test_slurm_run_requests_gpus_and_equals_a_local_run(repo, tmp_path):
    copy_workflow(tmp_path / "local")
    local = snakemake(tmp_path / "local", "--cores", "2", target=SLURM_TARGET)
    assert local.returncode == 0, local.stderr[-3000:]
    copy_workflow(tmp_path / "slurm")
    for name in SEEDED:  # with their times, so that Snakemake finds them up to date
        source = tmp_path / "local" / "results" / "tiny" / name
        destination = tmp_path / "slurm" / "results" / "tiny" / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, destination)
    on_slurm = snakemake(
        tmp_path / "slurm",
        "--executor",
        "slurm",
        "--jobs",
        "4",
        "--default-resources",
        "slurm_partition=debug",
        "mem_mb=2000",
        "runtime=30",
        "--slurm-no-account",  # the test cluster has no accounting daemon
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--latency-wait",
        "5",
        target=SLURM_TARGET,
    )
    assert on_slurm.returncode == 0, on_slurm.stdout[-3000:] + on_slurm.stderr[-3000:]

    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", on_slurm.stdout + on_slurm.stderr)
    assert len(job_ids) == 4  # 3 reference shards and the merge
    listing = subprocess.run(
        ["squeue", "-t", "all", "-h", "-j", ",".join(job_ids), "-O", "Comment:100,tres-per-job:40"],
        capture_output=True,
        text=True,
        check=True,
    )
    submitted = {}
    for line in listing.stdout.splitlines():
        comment, tres = line.split()
        rule = re.sub(r"_wildcards_.*$", "", comment.removeprefix("rule_"))
        submitted.setdefault(rule, set()).add(tres)
    assert set(submitted) == SLURM_GPU_RULES | {"merge_references"}
    for rule, requests in submitted.items():
        assert requests == ({"gres:gpu:1"} if rule in GPU_RULES else {"N/A"}), (rule, requests)

    shards = [f"results/tiny/references/shards/{i}-of-3.safetensors" for i in (1, 2, 3)]
    for path in (*shards, SLURM_TARGET):
        on_cluster, _ = load_tensors(tmp_path / "slurm" / path)
        here, _ = load_tensors(tmp_path / "local" / path)
        assert on_cluster.keys() == here.keys()
        for key in here:
            assert torch.equal(on_cluster[key], here[key]), (path, key)


def test_slurm_profile_sizes_every_gpu_rule(repo):
    """Each rule that declares gpu=1 (directly or through ``use rule``) has its resources
    in the SLURM profile, so no GPU job falls back to the CPU-sized defaults."""
    import yaml

    text = "\n".join(path.read_text() for path in sorted((repo / "rules").glob("*.smk")))
    blocks = re.split(r"^(?=rule |use rule )", text, flags=re.M)
    gpu_rules = set()
    for block in blocks:
        if match := re.match(r"rule (\w+):", block):
            if "gpu=1" in block:
                gpu_rules.add(match.group(1))
    for block in blocks:
        if match := re.match(r"use rule (\w+) as (\w+)", block):
            if match.group(1) in gpu_rules:
                gpu_rules.add(match.group(2))
    profile = yaml.safe_load((repo / "profiles" / "slurm" / "config.yaml").read_text())
    sized = {rule for rule, values in profile["set-resources"].items() if values.get("gpu") == 1}
    assert {"train_sae", "embed_sae_crops", "score_hierarchy"} <= gpu_rules
    assert gpu_rules == sized
