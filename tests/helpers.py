"""Helpers shared by several test modules (imported as ``from helpers import ...``)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from monoscope import checkpoints

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def open_png(path) -> np.ndarray:
    """The RGB pixels of a PNG file, checking that it is one."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return np.asarray(image.convert("RGB"))


def interrupted_after_first_epoch(monkeypatch, run):
    """Call ``run`` with the job killed right after its first checkpoint is written."""
    real_save = checkpoints.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # the job is killed right after the first epoch

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(checkpoints, "save_checkpoint", real_save)


def layer_output(model, images, layer) -> torch.Tensor:
    """The output of ``model``'s ``layer`` on ``images``, from a plain forward hook."""
    captured = {}
    handle = model.layer(layer).register_forward_hook(
        lambda _module, _inputs, output: captured.__setitem__("out", output.detach())
    )
    try:
        with torch.no_grad():
            model.net(model.normalize(images))
    finally:
        handle.remove()
    return captured["out"]


# --------------------------------------------------------------------------- Snakemake


def snakemake(workdir, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry run."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts
