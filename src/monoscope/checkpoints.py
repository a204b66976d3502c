"""Training state in safetensors files: seeded per-epoch generators, optimizer state.

The epoch-based training loops (contrastive pretraining, base autoencoders, orbit SAEs)
share one recipe: the model is initialised from the seed alone and every epoch draws its randomness from generators
seeded by ``(seed, epoch, stream)``. The state at an epoch boundary is then the model,
the optimizer, the step counter and the history, and a run resumed from a checkpoint
ends with the same weights as an uninterrupted one (bit for bit on CPU).

File layout: tensors ``model/<name>`` and ``optimizer/<param index>/<state name>``;
the JSON metadata holds ``kind``, the config, ``epoch``, ``step``, ``history`` and the
optimizer's parameter groups. Nothing is pickled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monoscope.io import load_tensors, save_tensors


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch, stream)`` alone.

    ``SeedSequence`` mixes the numbers, so neighbouring seeds or epochs do not give
    correlated streams.
    """
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def split_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix``, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def save_checkpoint(
    path: str | os.PathLike,
    kind: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Mapping[str, Any],
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write the state after ``epoch`` completed epochs, atomically.

    ``config`` is the JSON record of the run's config (a resume with another is
    refused); ``extra`` adds metadata entries (e.g. what rebuilds the model).
    """
    tensors = {f"model/{name}": value for name, value in model.state_dict().items()}
    state = optimizer.state_dict()
    for index, slots in state["state"].items():
        for name, value in slots.items():
            # Adam keeps only tensors (moments, step); anything else would be lost.
            if not torch.is_tensor(value):
                raise TypeError(f"optimizer state {name!r} is not a tensor; cannot checkpoint it")
            tensors[f"optimizer/{index}/{name}"] = value
    metadata = {
        **dict(extra or {}),
        "kind": kind,
        "config": dict(config),
        "epoch": epoch,
        "step": step,
        "history": history,
        "optimizer_param_groups": state["param_groups"],
    }
    save_tensors(path, tensors, metadata)


def load_checkpoint(
    path: str | os.PathLike,
    kind: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Mapping[str, Any],
    resumable_keys: Iterable[str] = ("epochs",),
) -> tuple[int, int, list[dict[str, Any]]]:
    """Restore ``model`` and ``optimizer`` in place; returns ``(epoch, step, history)``.

    Raises ValueError when the file is not a ``kind`` checkpoint or was written with a
    config that differs in a key other than ``resumable_keys`` (keys that do not change
    the numbers of the epochs already run, such as the total number of epochs).
    """
    path = Path(path)
    tensors, metadata = load_tensors(path)
    if metadata.get("kind") != kind:
        raise ValueError(f"{path} is not a {kind} file (kind {metadata.get('kind')!r})")
    saved = metadata["config"]
    keys = (set(saved) | set(config)) - set(resumable_keys)
    differing = sorted(key for key in keys if saved.get(key) != config.get(key))
    if differing:
        raise ValueError(
            f"checkpoint {path} was written by a run with a different config "
            f"(keys {differing}); resume with the same config or delete the checkpoint"
        )
    if int(metadata["epoch"]) > int(config.get("epochs", metadata["epoch"])):
        raise ValueError(
            f"checkpoint {path} is after epoch {metadata['epoch']}, beyond the configured "
            f"{config.get('epochs')} epochs"
        )
    model.load_state_dict(split_prefix(tensors, "model/"))
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in split_prefix(tensors, "optimizer/").items():
        index, name = key.split("/", 1)
        slots.setdefault(int(index), {})[name] = value
    groups = []
    for group in metadata["optimizer_param_groups"]:
        # JSON turned tuples (Adam's betas) into lists; the optimizer expects tuples.
        groups.append(
            {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        )
    optimizer.load_state_dict({"state": slots, "param_groups": groups})
    return int(metadata["epoch"]), int(metadata["step"]), list(metadata["history"])


# --------------------------------------------------------------------------- model files


def save_model_file(
    path: str | os.PathLike, kind: str, model: torch.nn.Module, metadata: Mapping[str, Any]
) -> None:
    """Write a trained model: tensors ``model/<name>``, ``kind`` and ``metadata`` alongside.

    Checkpoints (:func:`save_checkpoint`) use the same ``model/`` prefix, so a loader
    reads a finished model and an interrupted run's checkpoint alike.
    """
    tensors = {f"model/{name}": value for name, value in model.state_dict().items()}
    save_tensors(path, tensors, {**dict(metadata), "kind": kind})


def read_model_file(
    path: str | os.PathLike, kinds: Iterable[str], what: str, written_by: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model state dict and metadata of a file of one of ``kinds``.

    Raises FileNotFoundError naming the path and what writes it (``written_by``), and
    ValueError for a file of another kind.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (written by {written_by})")
    tensors, metadata = load_tensors(path)
    if metadata.get("kind") not in tuple(kinds):
        raise ValueError(f"{path} holds no {what} (kind {metadata.get('kind')!r})")
    return split_prefix(tensors, "model/"), metadata
