"""Choosing the torch device from the config (``device: auto|cpu|cuda|cuda:N``)."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a config device string into a :class:`torch.device`.

    ``auto`` picks the first visible GPU when there is one (so a job scheduled with a
    GPU by SLURM, which sets ``CUDA_VISIBLE_DEVICES``, uses it) and the CPU otherwise.
    Asking for ``cuda`` where no GPU is visible is an error rather than a silent
    fallback, so a misconfigured cluster job fails fast.
    """
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device '{spec}' was requested but no CUDA device is visible "
                "(check CUDA_VISIBLE_DEVICES and the job's GPU request, or set device: auto)"
            )
        return torch.device(spec)
    raise ValueError(f"unknown device '{spec}'; expected one of auto, cpu, cuda, cuda:N")
