"""Streaming evaluation of an SAE on a store: reconstruction quality and sparsity.

Everything is accumulated batch by batch in float64, so a store larger than memory is
read once. The variance of the data (the denominator of the FVU) is merged across
batches with Chan et al.'s parallel formula instead of a second pass over the store.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from monoscope.sae.base import SparseAutoencoder
from monoscope.sae.store import VectorStore


@torch.no_grad()
def evaluate_sae(
    sae: SparseAutoencoder,
    store: VectorStore,
    batch_size: int = 4096,
    dense_threshold: float = 0.1,
) -> dict[str, float]:
    """Reconstruction and sparsity metrics of ``sae`` over every sample of ``store``.

    Parameters
    ----------
    sae : the model (evaluated on its own device).
    store : the vectors, read once in order.
    batch_size : samples per forward pass.
    dense_threshold : a feature is dense when it fires on more than this fraction of
        the samples.

    Returns
    -------
    ``num_samples``; ``mse``, the mean over samples of ||x - x_hat||^2 (summed over
    dimensions, as in training); ``fvu``, the fraction of variance unexplained,
    sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 with the mean over the whole store;
    ``l0``, the mean number of nonzero codes per sample; ``dead_fraction``, the
    fraction of features that never fire on the store; ``dense_fraction``, the
    fraction firing on more than ``dense_threshold`` of the samples.
    """
    if not 0 <= dense_threshold <= 1:
        raise ValueError(f"dense_threshold must be in [0, 1], got {dense_threshold}")
    device = sae.decoder.device
    count = 0
    mean = torch.zeros(store.dim, dtype=torch.float64, device=device)
    spread = torch.zeros((), dtype=torch.float64, device=device)  # sum ||x - mean||^2
    squared_error = torch.zeros((), dtype=torch.float64, device=device)
    nonzero = torch.zeros((), dtype=torch.float64, device=device)
    fires = torch.zeros(sae.num_features, dtype=torch.int64, device=device)
    for batch in store.iter_batches(batch_size, shuffle=False):
        x = batch.to(device=device, dtype=torch.float32)
        x_hat, codes = sae(x)
        x64 = x.double()
        size = len(x)
        batch_mean = x64.mean(dim=0)
        delta = batch_mean - mean
        total = count + size
        spread += (x64 - batch_mean).pow(2).sum() + delta.pow(2).sum() * (count * size / total)
        mean += delta * (size / total)
        count = total
        squared_error += (x64 - x_hat.double()).pow(2).sum()
        active = codes != 0
        nonzero += active.sum()
        fires += active.sum(dim=0)
    if count == 0:
        raise ValueError("the store yielded no samples")
    error, variance = float(squared_error), float(spread)
    if variance > 0:
        fvu = error / variance
    else:  # constant data: only a perfect reconstruction explains it
        fvu = 0.0 if error == 0 else float("inf")
    frequency = fires.double() / count
    return {
        "num_samples": count,
        "mse": error / count,
        "fvu": fvu,
        "l0": float(nonzero) / count,
        "dead_fraction": float((fires == 0).double().mean()),
        "dense_fraction": float((frequency > dense_threshold).double().mean()),
    }


@torch.no_grad()
def feature_activations(
    sae: SparseAutoencoder, store: VectorStore, batch_size: int = 4096
) -> Iterator[torch.Tensor]:
    """The codes ``[b, K]`` of the store's samples, batch by batch in store order (on CPU)."""
    device = sae.decoder.device
    for batch in store.iter_batches(batch_size, shuffle=False):
        yield sae.encode(batch.to(device=device, dtype=torch.float32)).cpu()
