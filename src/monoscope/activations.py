"""Activation datasets: a layer's pooled activations, streamed to disk in shards.

Dictionary learning works on one vector per sample (the seed: the spatial mean of a
layer's activations, ``[B, C, H, W] -> [B, C]``). :func:`collect_activations` computes
those vectors for one shard of the data set; :class:`ActivationStore` reads a list of shard
files back one shard at a time, so training and evaluation stream over data sets far
larger than memory.

Poolings: ``mean`` (the seed), ``max`` (spatial maximum), and ``patch`` (vectors at
``patches_per_image`` seeded random positions per image, for patch-level dictionaries).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from monoscope.io import load_tensors, save_tensors
from monoscope.logs import progress_kwargs
from monoscope.models.registry import SubjectModel
from monoscope.references import LayerRecorder

log = logging.getLogger(__name__)

POOLINGS = ("mean", "max", "patch")
STORE_KEYS = ("activations", "sample_ids", "labels", "is_train")


@dataclass(frozen=True)
class ActivationConfig:
    """Options of activation collection.

    Parameters
    ----------
    pooling : ``mean`` | ``max`` | ``patch`` (see the module docstring).
    patches_per_image : vectors kept per image with ``patch`` pooling.
    batch_size : samples per forward pass.
    seed : seed of the patch positions.
    """

    pooling: str = "mean"
    patches_per_image: int = 16
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"activations.pooling must be one of {POOLINGS}, got '{self.pooling}'")
        if self.patches_per_image < 1 or self.batch_size < 1:
            raise ValueError("activations.patches_per_image and batch_size must be positive")


def pool_activations(
    output: torch.Tensor, pooling: str, patches: int = 16, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled vectors of a layer output and, per vector, the index of its sample.

    ``output`` is ``[B, C, ...]``; ``mean`` and ``max`` give ``[B, C]``, ``patch`` gives
    ``[B * patches, C]`` (positions drawn with replacement from ``generator``).
    """
    flat = output.reshape(*output.shape[:2], -1).float()  # [B, C, P]
    rows = torch.arange(len(flat))
    if pooling == "mean":
        return flat.mean(dim=2), rows
    if pooling == "max":
        return flat.amax(dim=2), rows
    if pooling == "patch":
        spots = torch.randint(flat.shape[2], (len(flat), patches), generator=generator)
        vectors = flat.gather(2, spots[:, None, :].to(flat.device).expand(-1, flat.shape[1], -1))
        return vectors.permute(0, 2, 1).reshape(-1, flat.shape[1]), rows.repeat_interleave(patches)
    raise ValueError(f"unknown pooling '{pooling}'; expected one of {POOLINGS}")


def collect_activations(
    model: SubjectModel,
    dataset: torch.utils.data.Dataset,
    layers: Sequence[str],
    config: ActivationConfig,
    is_train: np.ndarray,
    device: torch.device | str = "cpu",
    positions: Iterable[int] | None = None,
    desc: str = "activations",
) -> dict[str, dict[str, torch.Tensor]]:
    """Pooled activations of ``layers`` for the samples at ``positions`` of ``dataset``.

    ``is_train`` flags each dataset position as a training sample. Returns, per layer,
    ``{"activations" [M, C], "sample_ids" [M], "labels" [M], "is_train" [M] (bool)}``,
    ready for :func:`save_activation_shard`; one shard's vectors are held at a time.
    """
    device = torch.device(device)
    positions = list(range(len(dataset))) if positions is None else list(positions)
    subset = torch.utils.data.Subset(dataset, positions)
    train_flags = torch.as_tensor(np.asarray(is_train, dtype=bool)[positions])
    loader = DataLoader(subset, batch_size=config.batch_size, shuffle=False)
    generator = torch.Generator().manual_seed(config.seed + (positions[0] if positions else 0))
    parts: dict[str, list[dict[str, torch.Tensor]]] = {layer: [] for layer in layers}
    seen = 0
    model.net.eval()
    with LayerRecorder(model, layers, stop_early=True) as recorder, torch.inference_mode():
        for images, labels, sample_ids in tqdm(
            loader, desc=desc, unit="batch", **progress_kwargs()
        ):
            outputs = recorder(model.normalize(images.to(device)))
            flags = train_flags[seen : seen + len(images)]
            seen += len(images)
            for layer, output in outputs.items():
                vectors, rows = pool_activations(
                    output, config.pooling, config.patches_per_image, generator
                )
                parts[layer].append(
                    {
                        "activations": vectors.cpu(),
                        "sample_ids": sample_ids[rows].long(),
                        "labels": labels[rows].long(),
                        "is_train": flags[rows],
                    }
                )
    return {
        layer: {key: torch.cat([part[key] for part in chunks]) for key in STORE_KEYS}
        for layer, chunks in parts.items()
    }


def save_activation_shard(path, shard: dict[str, torch.Tensor], metadata: dict) -> None:
    """One shard file (atomic): the tensors of :func:`collect_activations` for one layer."""
    save_tensors(path, {key: shard[key] for key in STORE_KEYS}, metadata=metadata)


class ActivationStore:
    """Read-only view of activation shard files, streamed one shard at a time.

    Parameters
    ----------
    paths : shard files of one layer (from :func:`save_activation_shard`).
    split : ``train``, ``test`` or ``all``: which samples the store yields.
    buffer_rows : rows per mixing buffer of a shuffled pass (bounds its memory).
    limit : keep only the first ``limit`` rows of the split, in shard order (None: all).

    It offers what :func:`monoscope.sae.train.train_sae` needs (``num_samples``, ``dim``,
    ``iter_batches``) and :meth:`iter_labelled` for in-order passes with sample ids.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        split: str = "all",
        buffer_rows: int = 262_144,
        limit: int | None = None,
    ) -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be train, test or all, got '{split}'")
        if not paths:
            raise ValueError("an activation store needs at least one shard file")
        self.paths = [Path(path) for path in paths]
        self.split = split
        self.buffer_rows = buffer_rows
        counts, dims = [], set()
        for path in self.paths:
            if not path.exists():
                raise FileNotFoundError(f"activation shard {path} does not exist")
            with safe_open(str(path), framework="pt") as handle:
                flags = handle.get_tensor("is_train")
                dims.add(handle.get_slice("activations").get_shape()[1])
            counts.append(int(self._mask(flags).sum()))
        if limit is not None:
            remaining = limit
            for index, count in enumerate(counts):
                counts[index] = min(count, remaining)
                remaining -= counts[index]
        if len(dims) != 1:
            raise ValueError(f"activation shards disagree on the dimension: {sorted(dims)}")
        self.counts = counts
        self.dim = dims.pop()
        self.num_samples = sum(counts)
        if self.num_samples == 0:
            raise ValueError(f"no '{split}' samples in {len(paths)} activation shard(s)")

    def _mask(self, flags: torch.Tensor) -> torch.Tensor:
        if self.split == "all":
            return torch.ones_like(flags, dtype=torch.bool)
        return flags if self.split == "train" else ~flags

    def load_shard(self, index: int) -> dict[str, torch.Tensor]:
        """The store's rows of one shard file."""
        tensors, _ = load_tensors(self.paths[index])
        mask = self._mask(tensors["is_train"])
        return {key: tensors[key][mask][: self.counts[index]] for key in STORE_KEYS}

    def iter_batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> Iterator[torch.Tensor]:
        """Batches of activation vectors ``[b, dim]``.

        With ``shuffle`` the order is a seeded global shuffle in bounded memory: each
        shard's rows are split at random into ``K = ceil(num_samples / buffer_rows)``
        parts, and part ``i`` of every shard forms mixing buffer ``i``, which is
        permuted and cut into batches. Shards are contiguous ranges of the sample
        table (class-sorted for image folders), so shuffling within a shard would not do.
        Memory: one shard plus one buffer.
        """
        if not shuffle:
            for activations, _, _ in self.iter_labelled(batch_size):
                yield activations
            return
        generator = torch.Generator().manual_seed(seed)
        parts = max(1, -(-self.num_samples // self.buffer_rows))
        splits = []
        for count in self.counts:
            order = torch.randperm(count, generator=generator)
            bounds = [count * i // parts for i in range(parts + 1)]
            splits.append([order[bounds[i] : bounds[i + 1]] for i in range(parts)])
        for part in range(parts):
            buffer = torch.cat(
                [
                    self.load_shard(index)["activations"][splits[index][part]]
                    for index in range(len(self.paths))
                    if self.counts[index]
                ]
            )
            buffer = buffer[torch.randperm(len(buffer), generator=generator)]
            for start in range(0, len(buffer), batch_size):
                yield buffer[start : start + batch_size]

    def iter_labelled(
        self, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """In-order batches ``(activations, sample_ids, labels)``."""
        for index in range(len(self.paths)):
            if self.counts[index] == 0:
                continue
            shard = self.load_shard(index)
            for start in range(0, self.counts[index], batch_size):
                rows = slice(start, start + batch_size)
                yield shard["activations"][rows], shard["sample_ids"][rows], shard["labels"][rows]

    def mean(self) -> torch.Tensor:
        """Mean activation vector over the store (one streamed pass, float64 sums)."""
        total = torch.zeros(self.dim, dtype=torch.float64)
        for batch in self.iter_batches(4096):
            total += batch.double().sum(dim=0)
        return (total / self.num_samples).float()
