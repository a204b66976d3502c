"""Per-job costs that every Snakemake job or figure pays, each against the simple way in
the same run: importing torchvision (with and without compat adapter 2's deferred
TorchDynamo import), reading the demo digits (the shipped file against
``sklearn.datasets.load_digits``), a UMAP fit (numba's kernels compiled against cached,
compat adapter 3), importing dcor (its own import against compat adapter 5's, both
after a first import has filled numba's cache), an optimizer's first step (torch's
own wrappers, which import TorchDynamo, against compat adapter 6) and a whole job's start
(a new interpreter importing what a workflow script imports, against a fork of the local
job server, ``monoscope.jobserver``).

    python benchmarks/bench_startup.py --out results/bench
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import monoscope  # noqa: F401  (must precede any torchvision import)
from monoscope import jobserver

REPO = Path(__file__).resolve().parents[1]
# The job whose start is timed: the imports of a typical workflow script, then nothing.
JOB_SCRIPT = REPO / "workflow" / "scripts" / "render_crops.py"

# Each snippet prints the seconds of the part it times (imports included).
IMPORT_TORCHVISION = """
import sys, time, torch, monoscope, monoscope.compat as c
if {plain}:  # without adapter 2: torchvision's own import path
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, c.TorchvisionWithoutDynamo)]
start = time.perf_counter()
import torchvision.models
print(time.perf_counter() - start)
"""
READ_DIGITS = """
import time
from monoscope.data import load_digits_arrays  # a job has torch and monoscope already
start = time.perf_counter()
if {plain}:
    from sklearn.datasets import load_digits
    load_digits()
else:
    load_digits_arrays()
print(time.perf_counter() - start)
"""
IMPORT_DCOR = """
import time, monoscope.compat as c
start = time.perf_counter()
if {plain}:
    import dcor
else:
    dcor = c.import_dcor()
print(time.perf_counter() - start)
"""
FIRST_STEP = """
import time, torch
if not {plain}:
    import monoscope  # adapter 6
net = torch.nn.Linear(8, 2)
start = time.perf_counter()
optimizer = torch.optim.Adam(net.parameters())
optimizer.zero_grad()
net(torch.ones(4, 8)).sum().backward()
optimizer.step()
print(time.perf_counter() - start)
"""
UMAP_FIT = """
import time, numpy as np, umap
from monoscope.compat import cache_umap_compilation
cache_umap_compilation()
start = time.perf_counter()
umap.UMAP(n_neighbors=15, random_state=0).fit_transform(np.random.default_rng(0).normal(size=(40, 30)))
print(time.perf_counter() - start)
"""


def seconds_in_subprocess(code: str, env: dict | None = None) -> float:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return float(result.stdout.split()[-1])


def median_of(code: str, repeats: int) -> float:
    return statistics.median(seconds_in_subprocess(code) for _ in range(repeats))


def job_start_seconds(repeats: int) -> tuple[float, float]:
    """Wall seconds of a job that only imports what ``JOB_SCRIPT`` imports: run by a new
    interpreter, and through the job client with a job server running (as Snakemake runs
    it with ``job_server: true``); medians of ``repeats`` runs each."""
    tree = ast.parse(JOB_SCRIPT.read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    with tempfile.TemporaryDirectory() as folder:
        job = Path(folder) / "job.py"
        job.write_text("\n".join(ast.unparse(node) for node in imports) + "\n")
        environment = jobserver.server_environment(threads=1)
        server = jobserver.start(JOB_SCRIPT.parent, threads=1, log_path=Path(folder) / "log")
        environment[jobserver.SOCKET_VARIABLE] = server.socket_path
        try:
            alone = [sys.executable, str(job)]
            served = [sys.executable, str(REPO / "workflow" / "job_client.py"), *alone]
            _timed(served, environment)  # waits for the server's imports
            times = {
                name: statistics.median(_timed(command, environment) for _ in range(repeats))
                for name, command in (("alone", alone), ("served", served))
            }
        finally:
            server.stop()
        if "served 0 jobs" in Path(folder).joinpath("log").read_text():
            raise RuntimeError("the job server served no job: the comparison would be void")
    return times["alone"], times["served"]


def _timed(command: list[str], environment: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=environment, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--repeats", type=int, default=3, help="subprocesses per import timing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []

    for name, code in (
        ("import torchvision (with TorchDynamo / deferred)", IMPORT_TORCHVISION),
        ("read the digits (sklearn.datasets / shipped file)", READ_DIGITS),
        ("import dcor (its own / adapter 5, numba cache filled)", IMPORT_DCOR),
        ("first optimizer step (torch's wrappers / adapter 6)", FIRST_STEP),
    ):
        seconds_in_subprocess(code.format(plain=False))  # fills numba's cache where empty
        plain = median_of(code.format(plain=True), args.repeats)
        fast = median_of(code.format(plain=False), args.repeats)
        rows.append((name, plain, fast))

    with tempfile.TemporaryDirectory() as cache:  # an empty numba cache: first compiles
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        compiled = seconds_in_subprocess(UMAP_FIT, env)
        cached = seconds_in_subprocess(UMAP_FIT, env)
    rows.append(("UMAP fit, 40 points (compiling numba / cached)", compiled, cached))
    alone, served = job_start_seconds(args.repeats)
    rows.append(
        (
            f"start a job importing what {JOB_SCRIPT.name} imports (new interpreter / job server)",
            alone,
            served,
        )
    )

    args.out.mkdir(parents=True, exist_ok=True)
    records = [{"what": w, "simple_s": p, "monoscope_s": f, "ratio": p / f} for w, p, f in rows]
    (args.out / "startup.json").write_text(json.dumps(records, indent=2) + "\n")
    lines = [
        "Per-job costs, seconds (median of "
        f"{args.repeats} processes for imports; one thread): "
        "the simple way against monoscope's, measured in the same run "
        f"(torch {torch.__version__}).",
        "",
        "| what | simple way | monoscope | ratio |",
        "| :--- | ---: | ---: | ---: |",
    ]
    for what, plain, fast in rows:
        lines.append(f"| {what} | {plain:.3f} | {fast:.3f} | {plain / fast:.1f}x |")
    (args.out / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
