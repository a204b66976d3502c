"""Logging set-up shared by the workflow scripts and the command line."""

from __future__ import annotations

import logging
import os
import sys

from monoscope.jobserver import SERVED_VARIABLE  # standard library only: cheap


def setup_logging(log_path: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Send log records (and tqdm's progress bars, which use stderr) to ``log_path``.

    When ``log_path`` is given, stderr itself is redirected to the file so that
    warnings and tracebacks from libraries land in the rule's log as well.
    """
    if log_path is not None:
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
        sys.stderr = stream
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def start_job(job) -> None:
    """Start a workflow script: logs to the job's log file, torch's CPU threads fixed.

    ``job`` is the script's ``snakemake`` object. The thread count is the rule's
    ``torch_threads`` param (the config's ``threads``), not ``job.threads``: Snakemake
    lowers that to ``--cores``, and torch's CPU kernels split their reductions by thread
    count, so a model trained with ``--cores 1`` would differ from one trained with 2.
    As a param, a changed count reruns the jobs it affects.
    """
    import torch

    setup_logging(job.log[0])
    torch.set_num_threads(int(job.params.torch_threads))
    logger = logging.getLogger(__name__)
    logger.info("torch CPU threads: %d", torch.get_num_threads())
    server = os.environ.get(SERVED_VARIABLE)
    if server:
        logger.info("started as a fork of the job server (pid %s)", server)


def progress_kwargs() -> dict:
    """tqdm options: live bars on a terminal, sparse lines in a log file."""
    interactive = sys.stderr.isatty()
    return {"mininterval": 0.1 if interactive else 10.0, "dynamic_ncols": interactive}
