"""Virtual neurons by clustering (PURE stage 3).

For every upper channel, its N reference vectors (circuits for PURE, activation
vectors for the baseline, embeddings for the upper references) are clustered with
k-means (scikit-learn, ``n_init`` restarts, fixed seed) for each k in a list; cluster m of
channel j is virtual neuron (j, m). Optionally, k is chosen per channel by the best
silhouette score over the list (an option beyond the paper).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from monoscope.logs import progress_kwargs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    """k-means options.

    Parameters
    ----------
    ks : numbers of clusters per channel (PURE: 2..5).
    n_init : k-means restarts (best inertia kept).
    seed : random state of k-means.
    auto_k : also pick k per channel by the silhouette score.
    stability_seeds : k-means reruns with the seeds ``seed + 1 .. seed + stability_seeds``
        whose agreement with the kept clustering (mean adjusted Rand index) measures how
        stable each channel's virtual neurons are; 0 skips it.
    """

    ks: Sequence[int] = (2, 3, 4, 5)
    n_init: int = 10
    seed: int = 0
    auto_k: bool = False
    stability_seeds: int = 3

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(
                f"clustering.k must be a non-empty list of positive integers, got {self.ks}"
            )
        if self.stability_seeds < 0:
            raise ValueError(f"clustering.stability_seeds must be >= 0, got {self.stability_seeds}")
        if self.auto_k and min(self.ks) < 2:
            raise ValueError(
                "clustering.auto_k compares silhouettes, which need k >= 2 for every k"
            )


def kmeans(
    vectors: np.ndarray, k: int, n_init: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``[N]`` and centroids ``[k, D]`` of k-means on ``[N, D]`` vectors."""
    from sklearn.cluster import KMeans

    if k > len(vectors):
        raise ValueError(
            f"cannot make {k} clusters of {len(vectors)} references; lower clustering.k"
        )
    with warnings.catch_warnings():
        # Dead or degenerate units have fewer distinct vectors than k: labels stay valid.
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(
            vectors.astype(np.float64)
        )
    return model.labels_.astype(np.int64), model.cluster_centers_.astype(np.float32)


def silhouette(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette score; -1 when it is undefined (a single distinct cluster)."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(vectors):
        return -1.0
    return float(silhouette_score(vectors, labels))


def seed_stability(
    vectors: np.ndarray, labels: np.ndarray, k: int, n_init: int, seeds: Sequence[int]
) -> float:
    """Mean adjusted Rand index between ``labels`` and k-means of ``vectors`` with each of
    ``seeds``: 1 when every seed finds the same partition (up to renaming), about 0 when
    they agree no more than chance. NaN without seeds."""
    from sklearn.metrics import adjusted_rand_score

    if not len(seeds):
        return float("nan")
    scores = [adjusted_rand_score(labels, kmeans(vectors, k, n_init, seed)[0]) for seed in seeds]
    return float(np.mean(scores))


def cluster_units(vectors: torch.Tensor, config: ClusterConfig) -> dict[str, torch.Tensor]:
    """Cluster each unit's references: ``vectors`` is ``[C, N, D]``.

    Returns tensors keyed ``k<k>/labels`` ``[C, N]``, ``k<k>/centroids`` ``[C, k, D]``
    and, with ``stability_seeds``, ``k<k>/stability`` ``[C]`` (:func:`seed_stability`);
    with ``auto_k`` also ``auto/k`` ``[C]``, ``auto/labels`` ``[C, N]``,
    ``auto/silhouette`` ``[C, len(ks)]`` and ``auto/centroids`` ``[C, max k, D]``
    (rows beyond a channel's k are NaN).
    """
    data = vectors.detach().cpu().numpy()
    channels, n, dims = data.shape
    ks = list(config.ks)
    labels = {k: np.zeros((channels, n), dtype=np.int64) for k in ks}
    centroids = {k: np.zeros((channels, k, dims), dtype=np.float32) for k in ks}
    scores = np.full((channels, len(ks)), -1.0, dtype=np.float32)
    stability = {k: np.full(channels, np.nan, dtype=np.float32) for k in ks}
    other_seeds = [config.seed + offset for offset in range(1, config.stability_seeds + 1)]
    for channel in tqdm(range(channels), desc="k-means", unit="unit", **progress_kwargs()):
        for index, k in enumerate(ks):
            labels[k][channel], centroids[k][channel] = kmeans(
                data[channel], k, config.n_init, config.seed
            )
            if config.auto_k:
                scores[channel, index] = silhouette(data[channel], labels[k][channel])
            if other_seeds:
                stability[k][channel] = seed_stability(
                    data[channel], labels[k][channel], k, config.n_init, other_seeds
                )
    result = {}
    for k in ks:
        result[f"k{k}/labels"] = torch.from_numpy(labels[k])
        result[f"k{k}/centroids"] = torch.from_numpy(centroids[k])
        if other_seeds:
            result[f"k{k}/stability"] = torch.from_numpy(stability[k])
    if config.auto_k:
        best = np.asarray(ks)[scores.argmax(axis=1)]
        auto_centroids = np.full((channels, max(ks), dims), np.nan, dtype=np.float32)
        auto_labels = np.zeros((channels, n), dtype=np.int64)
        for channel, k in enumerate(best):
            auto_labels[channel] = labels[k][channel]
            auto_centroids[channel, :k] = centroids[k][channel]
        result["auto/k"] = torch.from_numpy(best.astype(np.int64))
        result["auto/labels"] = torch.from_numpy(auto_labels)
        result["auto/centroids"] = torch.from_numpy(auto_centroids)
        result["auto/silhouette"] = torch.from_numpy(scores)
    return result
