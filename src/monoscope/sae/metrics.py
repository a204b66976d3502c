"""Metrics of a dictionary: reconstruction (MSE, FVU) and sparsity (L0, dead and dense
features), for every SAE.

:class:`DictionaryMetrics` accumulates them batch by batch in float64, so a store larger
than memory is read once; the variance of the data (the denominator of the FVU) is
merged across batches with Chan et al.'s parallel formula instead of a second pass.
:func:`evaluate_sae` runs it over a store of vectors; the orbit SAEs
(:func:`monoscope.equivariant.saes.evaluate_orbit_sae`) feed it their member vectors.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from monoscope.sae.base import SparseAutoencoder
from monoscope.sae.store import VectorStore


class DictionaryMetrics:
    """Streaming reconstruction and sparsity sums of vectors ``x [b, d]``, their
    reconstructions ``x_hat [b, d]`` and codes ``[b, K]``.

    Parameters
    ----------
    dense_threshold : a feature is dense when it fires on more than this fraction of
        the samples.
    """

    def __init__(self, dense_threshold: float = 0.1) -> None:
        if not 0 <= dense_threshold <= 1:
            raise ValueError(f"dense_threshold must be in [0, 1], got {dense_threshold}")
        self.dense_threshold = dense_threshold
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.spread: torch.Tensor | None = None  # sum ||x - mean||^2

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> None:
        """Add a batch (all three on one device)."""
        if self.mean is None:
            device = x.device
            self.mean = torch.zeros(x.shape[1], dtype=torch.float64, device=device)
            self.spread = torch.zeros((), dtype=torch.float64, device=device)
            self.squared_error = torch.zeros((), dtype=torch.float64, device=device)
            self.nonzero = torch.zeros((), dtype=torch.float64, device=device)
            self.fires = torch.zeros(codes.shape[1], dtype=torch.int64, device=device)
        x64 = x.double()
        size = len(x)
        batch_mean = x64.mean(dim=0)
        delta = batch_mean - self.mean
        total = self.count + size
        self.spread += (x64 - batch_mean).pow(2).sum() + delta.pow(2).sum() * (
            self.count * size / total
        )
        self.mean += delta * (size / total)
        self.count = total
        self.squared_error += (x64 - x_hat.double()).pow(2).sum()
        active = codes != 0
        self.nonzero += active.sum()
        self.fires += active.sum(dim=0)

    def result(self) -> dict[str, float]:
        """``num_samples``; ``mse``, the mean over samples of ||x - x_hat||^2 (summed over
        dimensions, as in training); ``fvu``, the fraction of variance unexplained,
        sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 with the mean over all samples;
        ``l0``, the mean number of nonzero codes per sample; ``dead_fraction``, the
        fraction of features that never fire; ``dense_fraction``, the fraction firing on
        more than ``dense_threshold`` of the samples."""
        if self.count == 0:
            raise ValueError("no samples to evaluate")
        count = self.count
        error, variance = float(self.squared_error), float(self.spread)
        if variance > 0:
            fvu = error / variance
        else:  # constant data: only a perfect reconstruction explains it
            fvu = 0.0 if error == 0 else float("inf")
        frequency = self.fires.double() / count
        return {
            "num_samples": count,
            "mse": error / count,
            "fvu": fvu,
            "l0": float(self.nonzero) / count,
            "dead_fraction": float((self.fires == 0).double().mean()),
            "dense_fraction": float((frequency > self.dense_threshold).double().mean()),
        }


@torch.no_grad()
def evaluate_sae(
    sae: SparseAutoencoder,
    store: VectorStore,
    batch_size: int = 4096,
    dense_threshold: float = 0.1,
) -> dict[str, float]:
    """Reconstruction and sparsity metrics of ``sae`` over every sample of ``store``
    (:meth:`DictionaryMetrics.result`).

    Parameters
    ----------
    sae : the model (evaluated on its own device).
    store : the vectors, read once in order.
    batch_size : samples per forward pass.
    dense_threshold : a feature is dense when it fires on more than this fraction of
        the samples.
    """
    metrics = DictionaryMetrics(dense_threshold)
    device = sae.decoder_bias.device
    for batch in store.iter_batches(batch_size, shuffle=False):
        x = batch.to(device=device, dtype=torch.float32)
        x_hat, codes = sae(x)
        metrics.update(x, x_hat, codes)
    if metrics.count == 0:
        raise ValueError("the store yielded no samples")
    return metrics.result()


@torch.no_grad()
def feature_activations(
    sae: SparseAutoencoder, store: VectorStore, batch_size: int = 4096
) -> Iterator[torch.Tensor]:
    """The codes ``[b, K]`` of the store's samples, batch by batch in store order (on CPU)."""
    device = sae.decoder_bias.device
    for batch in store.iter_batches(batch_size, shuffle=False):
        yield sae.encode(batch.to(device=device, dtype=torch.float32)).cpu()
