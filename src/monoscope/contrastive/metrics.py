"""Monosemanticity and sparsity of feature dimensions.

A dimension ``d`` is *active* on a sample when its value is ``> 0``.

Class consistency
    For each dimension, among the samples on which it is active, the share carried by
    the most frequent label. 1 means the dimension fires for one class only
    (monosemantic); ``1 / C`` is what a dimension firing at random gets. A dimension that
    is never active has no consistency (NaN) and is left out of the mean.

Sparsity
    The fraction of exactly-zero entries, and the mean number of active dimensions per
    sample. For non-negative features (NCL, and any post-ReLU layer) the two agree:
    ``zero_fraction = 1 - active_per_sample / D``; for signed features (SimCLR's
    projector output) negative entries are neither zero nor active.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

_CHUNK = 8192  # samples per matrix product, bounds the memory of the activity mask


class Consistency(NamedTuple):
    """Per-dimension class consistency and its mean over ever-active dimensions."""

    per_dimension: torch.Tensor
    mean: float


class Sparsity(NamedTuple):
    """Share of zero entries and mean number of active dimensions per sample."""

    zero_fraction: float
    active_per_sample: float


def _check(features: torch.Tensor) -> torch.Tensor:
    features = torch.as_tensor(features)
    if features.dim() != 2:
        raise ValueError(f"features must be [N, D], got {tuple(features.shape)}")
    return features.detach()


def label_counts_per_dimension(features: torch.Tensor, labels) -> torch.Tensor:
    """``counts[d, k]``: samples of the ``k``-th distinct label on which ``d`` is active.

    Parameters
    ----------
    features : torch.Tensor
        ``[N, D]``.
    labels : array-like of int
        ``[N]``; any integer values (they are mapped to ``0 .. K-1`` in sorted order).

    Returns
    -------
    torch.Tensor
        ``[D, K]`` int64 counts on the CPU.
    """
    features = _check(features)
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    _, index = torch.unique(labels, return_inverse=True)
    num_labels = int(index.max()) + 1 if len(index) else 0
    counts = torch.zeros(features.shape[1], num_labels, dtype=torch.float64)
    for start in range(0, len(features), _CHUNK):
        active = (features[start : start + _CHUNK] > 0).cpu().to(torch.float64)
        one_hot = torch.nn.functional.one_hot(index[start : start + _CHUNK], num_labels)
        # float64 products of 0/1 entries are exact integers far beyond any data set size.
        counts += active.T @ one_hot.to(torch.float64)
    return counts.round().to(torch.int64)


def class_consistency(features: torch.Tensor, labels) -> Consistency:
    """Share of the most frequent label among the samples activating each dimension.

    Parameters
    ----------
    features : torch.Tensor
        ``[N, D]`` features.
    labels : array-like of int
        ``[N]`` labels.

    Returns
    -------
    Consistency
        ``per_dimension`` ``[D]`` float64 (NaN for dimensions never active) and ``mean``
        over the dimensions active at least once (NaN when there is none).
    """
    counts = label_counts_per_dimension(features, labels)
    active = counts.sum(dim=1)
    top = counts.max(dim=1).values if counts.shape[1] else torch.zeros_like(active)
    per_dimension = torch.where(
        active > 0, top.to(torch.float64) / active.clamp_min(1), torch.tensor(math.nan)
    )
    ever_active = active > 0
    mean = float(per_dimension[ever_active].mean()) if ever_active.any() else math.nan
    return Consistency(per_dimension, mean)


def sparsity(features: torch.Tensor) -> Sparsity:
    """Fraction of zero entries and mean count of active (``> 0``) dimensions per sample.

    Parameters
    ----------
    features : torch.Tensor
        ``[N, D]`` features, ``N >= 1``.

    Returns
    -------
    Sparsity
    """
    features = _check(features)
    if features.numel() == 0:
        raise ValueError("sparsity of an empty feature matrix is undefined")
    zero_fraction = float((features == 0).to(torch.float64).mean())
    active_per_sample = float((features > 0).sum(dim=1).to(torch.float64).mean())
    return Sparsity(zero_fraction, active_per_sample)
