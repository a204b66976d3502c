"""What SAE training and evaluation read: a store of ``[N, d]`` vectors, batch by batch.

Training never needs the whole data set at once, only seeded passes over it, so any
object with ``num_samples``, ``dim`` and ``iter_batches(batch_size, shuffle, seed)``
works: :class:`monoscope.activations.ActivationStore` streams disk shards, and
:class:`TensorStore` here wraps a tensor already in memory (tests, small callers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class VectorStore(Protocol):
    """The interface of a store of activation vectors."""

    num_samples: int
    dim: int

    def iter_batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> Iterator[torch.Tensor]:
        """Batches ``[b, dim]`` covering every sample once; a seeded order if ``shuffle``."""
        ...


class TensorStore:
    """An in-memory store of the rows of a ``[N, d]`` tensor.

    Parameters
    ----------
    tensor : the vectors; kept as they are (no copy), yielded as float32.
    """

    def __init__(self, tensor: torch.Tensor) -> None:
        tensor = torch.as_tensor(tensor)
        if tensor.ndim != 2 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
            raise ValueError(
                f"a TensorStore needs a non-empty [N, d] tensor, got {list(tensor.shape)}"
            )
        self.tensor = tensor
        self.num_samples = int(tensor.shape[0])
        self.dim = int(tensor.shape[1])

    def iter_batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> Iterator[torch.Tensor]:
        """Batches ``[b, dim]`` (the last may be smaller); a seeded permutation if ``shuffle``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if shuffle:
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(self.num_samples, generator=generator)
        for start in range(0, self.num_samples, batch_size):
            if shuffle:
                batch = self.tensor[order[start : start + batch_size]]
            else:
                batch = self.tensor[start : start + batch_size]
            yield batch.float()


def draw_samples(store: VectorStore, count: int, seed: int, batch_size: int = 4096) -> torch.Tensor:
    """Up to ``count`` rows of ``store`` in a seeded random order, ``[min(count, N), dim]``.

    Reads shuffled batches until enough rows are collected, so a streaming store only
    loads what it must.
    """
    parts, collected = [], 0
    for batch in store.iter_batches(min(batch_size, count), shuffle=True, seed=seed):
        parts.append(batch[: count - collected].float())
        collected += len(parts[-1])
        if collected >= count:
            break
    return torch.cat(parts)
