"""Evaluation metrics (PURE stages 6 and 7, and ground-truth purity).

Every function here is pure: it takes arrays (NumPy, or anything :func:`numpy.asarray`
accepts, torch tensors included) and returns numbers, with no files and no global state.

Semantic distance (stage 6)
    For one neuron with N references embedded as ``e_1 .. e_N`` and split into clusters
    (its virtual neurons), the Euclidean distances ``d_ij = ||e_i - e_j||`` over unordered
    pairs ``i < j`` are averaged three ways: *intra* over pairs in the same cluster,
    *inter* over pairs in different clusters, *random* over all pairs. A split into
    monosemantic units has intra well below random; the mean and standard error over
    neurons is reported.

Alignment (stage 7)
    How well distances in one space (circuits, activations, DINOv2, ...) predict distances
    in a reference space (CLIP). Distances between each neuron's first M references are
    pooled over a random group of neurons and correlated with the reference space's
    distances of the same pairs (Pearson, Spearman, Szekely's distance correlation);
    the mean and standard error are taken over disjoint groups.

Purity
    The share of a unit's references that carry the unit's majority ground-truth label
    (possible on the embedded digits data, where the true concept of a reference is known).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.spatial.distance import pdist, squareform

METRICS = ("pearson", "spearman", "dcor")
"""Correlations reported by :func:`alignment_scores`, in this order."""


def _as_array(values, dtype=None) -> np.ndarray:
    """``np.asarray`` that also takes torch tensors needing grad or living on a GPU."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _condensed_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances of pairs ``i < j`` of ``x`` ``[N, D]``, row-major (``pdist``)."""
    return pdist(x, metric="euclidean")


def pairwise_distances(x) -> np.ndarray:
    """Euclidean distance matrix of a set of vectors.

    ``D[i, j] = sqrt(sum_d (x[i, d] - x[j, d]) ** 2)``, computed from the differences
    (``scipy.spatial.distance.pdist``) rather than from the Gram matrix, so identical
    vectors are exactly 0 apart; the zero-distance filter of :func:`alignment_scores` relies on it.

    Parameters
    ----------
    x : array ``[N, D]``; a 1-D array is read as ``N`` points in one dimension.

    Returns
    -------
    ``[N, N]`` float64, symmetric, zero diagonal.
    """
    x = _as_array(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"pairwise_distances expects [N, D] vectors, got shape {x.shape}")
    if len(x) < 2:
        return np.zeros((len(x), len(x)))
    return squareform(_condensed_distances(x))


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def semantic_distances(embeddings, clusters) -> dict[str, float]:
    """Mean distances within and across the virtual neurons of one neuron.

    With ``d_ij`` the Euclidean distance between the embeddings of references ``i`` and
    ``j``, over unordered pairs ``i < j``:

    - ``intra`` = mean of ``d_ij`` over pairs with ``clusters[i] == clusters[j]``,
    - ``inter`` = mean of ``d_ij`` over pairs with ``clusters[i] != clusters[j]``,
    - ``random`` = mean of ``d_ij`` over all pairs (the expected distance of two references
      drawn without regard to the split).

    Parameters
    ----------
    embeddings : ``[N, D]`` embeddings of the neuron's N references.
    clusters : ``[N]`` integer cluster (virtual neuron) of each reference.

    Returns
    -------
    ``{"intra", "inter", "random"}`` floats; NaN where there is no such pair (``inter``
    with a single cluster, ``intra`` with all singletons, all three for ``N < 2``).
    """
    embeddings = _as_array(embeddings, np.float64)
    clusters = _as_array(clusters)
    if embeddings.ndim == 1:
        embeddings = embeddings[:, None]
    if embeddings.ndim != 2 or clusters.shape != embeddings.shape[:1]:
        raise ValueError(
            f"semantic_distances expects embeddings [N, D] and clusters [N], got "
            f"{embeddings.shape} and {clusters.shape}"
        )
    n = len(embeddings)
    if n < 2:
        return {"intra": math.nan, "inter": math.nan, "random": math.nan}
    distances = _condensed_distances(embeddings)
    first, second = np.triu_indices(n, k=1)  # same order as pdist
    same = clusters[first] == clusters[second]
    return {
        "intra": _mean_or_nan(distances[same]),
        "inter": _mean_or_nan(distances[~same]),
        "random": _mean_or_nan(distances),
    }


def mean_and_standard_error(values) -> tuple[float, float]:
    """Mean and standard error of the mean, ignoring NaN.

    ``SE = s / sqrt(n)`` with ``s`` the sample standard deviation (``ddof=1``) of the
    ``n`` finite-or-infinite, non-NaN values.

    Returns
    -------
    ``(mean, se)``; ``(nan, nan)`` without values, ``(value, nan)`` for a single one.
    """
    values = _as_array(values, np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if values.size == 1:
        return mean, math.nan
    return mean, float(values.std(ddof=1) / math.sqrt(values.size))


def distance_summary(embeddings, clusters) -> dict[str, tuple[float, float]]:
    """:func:`semantic_distances` of every neuron, summarised over neurons.

    Parameters
    ----------
    embeddings : ``[C, N, D]`` embeddings of the N references of each of C neurons.
    clusters : ``[C, N]`` cluster of each reference.

    Returns
    -------
    ``{"intra", "inter", "random"}`` -> ``(mean, se)`` over neurons
    (:func:`mean_and_standard_error`; neurons where a value is NaN are left out of it).
    """
    embeddings = _as_array(embeddings, np.float64)
    clusters = _as_array(clusters)
    if embeddings.ndim != 3 or clusters.shape != embeddings.shape[:2]:
        raise ValueError(
            f"distance_summary expects embeddings [C, N, D] and clusters [C, N], got "
            f"{embeddings.shape} and {clusters.shape}"
        )
    per_neuron = [
        semantic_distances(vectors, labels)
        for vectors, labels in zip(embeddings, clusters, strict=True)
    ]
    return {
        key: mean_and_standard_error([record[key] for record in per_neuron])
        for key in ("intra", "inter", "random")
    }


def neuron_groups(count: int, subsets: int, seed: int = 0) -> list[np.ndarray]:
    """Split neurons ``0 .. count-1`` into random disjoint groups that cover them all.

    A seeded permutation is cut into ``min(subsets, count)`` parts of near-equal size
    (sizes differ by at most one), so every group is non-empty. Each group is sorted.
    """
    if count < 0 or subsets < 1:
        raise ValueError(f"need count >= 0 and subsets >= 1, got {count} and {subsets}")
    if count == 0:
        return []
    order = np.random.default_rng(seed).permutation(count)
    return [np.sort(part) for part in np.array_split(order, min(subsets, count))]


def _correlations(values: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Pearson, Spearman and distance correlation of two 1-D samples.

    All three are NaN with fewer than two pairs, when either sample is constant (then no
    correlation is defined; ``dcor`` would report 0) or holds a non-finite value.
    """
    from scipy.stats import spearmanr

    from monoscope.compat import import_dcor

    dcor = import_dcor()

    if (
        values.size < 2
        or not (np.isfinite(values).all() and np.isfinite(reference).all())
        or np.ptp(values) == 0
        or np.ptp(reference) == 0
    ):
        return dict.fromkeys(METRICS, math.nan)
    # Pearson: r = sum (x - mean x)(y - mean y) / sqrt(sum (x - mean x)^2 sum (y - mean y)^2)
    x = values - values.mean()
    y = reference - reference.mean()
    pearson = float(x @ y / math.sqrt((x @ x) * (y @ y)))
    # Spearman: Pearson of the ranks (ties get their average rank).
    spearman = float(spearmanr(values, reference).statistic)
    # Szekely's distance correlation; O(n log n) for 1-D samples with the AVL method,
    # where the naive method needs n x n matrices (100k pooled pairs -> 80 GB).
    distance = float(dcor.distance_correlation(values, reference, method="avl"))
    return {"pearson": pearson, "spearman": spearman, "dcor": distance}


def alignment_scores(
    spaces: Mapping[str, object],
    reference: str,
    subsets: int = 30,
    references_per_neuron: int = 50,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Agreement of distances in each space with distances in a reference space (stage 7).

    For every neuron only its first ``M = references_per_neuron`` references are used (all
    if it has fewer). The C neurons are split into ``subsets`` random disjoint groups
    (:func:`neuron_groups`; fewer if ``C < subsets``). In each group, the Euclidean
    distances of all pairs ``i < j`` within each neuron's M references are pooled over the
    group's neurons, in every space and in the reference space (pairs never mix neurons).
    Pairs where either the space's or the reference's distance is exactly zero (duplicate
    references) are dropped, separately for each space. Then, per group:

    - ``pearson``: Pearson correlation of the space's pooled distances with the reference's
      (what the PURE paper calls distance correlation),
    - ``spearman``: Spearman rank correlation (``scipy.stats.spearmanr``),
    - ``dcor``: Szekely's distance correlation (``dcor.distance_correlation``) of the two
      1-D samples, which also sees non-monotone dependence.

    Parameters
    ----------
    spaces : name -> ``[C, M', D]`` vectors of the same C neurons and M' references in
        every space (D may differ); must include ``reference``.
    reference : name of the reference space (CLIP in the paper).
    subsets : number of groups of neurons (paper: 30).
    references_per_neuron : M (paper: 50).
    seed : seed of the random split into groups.

    Returns
    -------
    space -> ``{"pearson", "spearman", "dcor"}`` -> ``[G]``, one value per group of
    :func:`neuron_groups` (``G = min(subsets, C)``); :func:`summarize_alignment` gives
    the mean and standard error. The reference is included, with Pearson 1 (NaN for a
    degenerate reference).
    """
    if reference not in spaces:
        raise KeyError(f"reference space {reference!r} is not among {sorted(spaces)}")
    if references_per_neuron < 2:
        raise ValueError(f"references_per_neuron must be at least 2, got {references_per_neuron}")
    arrays = {name: _as_array(space, np.float64) for name, space in spaces.items()}
    shape = arrays[reference].shape
    for name, space in arrays.items():
        if space.ndim != 3 or space.shape[:2] != shape[:2]:
            raise ValueError(
                f"every space must be [C, M, D] with the reference's C and M {shape[:2]}; "
                f"space {name!r} has shape {space.shape}"
            )
    count, available = shape[:2]
    m = min(references_per_neuron, available)
    # Per space: [C, P] distances of the P = m(m-1)/2 pairs of each neuron's first m references.
    distances = {
        name: np.stack([_condensed_distances(neuron[:m]) for neuron in space])
        if count
        else np.zeros((0, m * (m - 1) // 2))
        for name, space in arrays.items()
    }
    groups = neuron_groups(count, subsets, seed)
    scores = {name: {metric: np.full(len(groups), np.nan) for metric in METRICS} for name in arrays}
    for index, group in enumerate(groups):
        target = distances[reference][group].ravel()  # pooled over the group's neurons
        for name in arrays:
            pooled = distances[name][group].ravel()
            # A zero distance means a duplicate reference (or a collapsed embedding):
            # such pairs say nothing about alignment and are dropped on either side.
            keep = (pooled != 0) & (target != 0)
            for metric, value in _correlations(pooled[keep], target[keep]).items():
                scores[name][metric][index] = value
    return scores


def summarize_alignment(
    scores: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, dict[str, tuple[float, float]]]:
    """``space -> metric -> (mean, se)`` over the groups of :func:`alignment_scores`
    (:func:`mean_and_standard_error`; groups where a correlation is undefined are left
    out)."""
    return {
        name: {metric: mean_and_standard_error(values) for metric, values in per_metric.items()}
        for name, per_metric in scores.items()
    }


def purity(labels, clusters=None) -> np.ndarray:
    """Ground-truth purity of the units of one neuron.

    The purity of a unit is the share of its references whose true label is the unit's
    most frequent label: ``max_c |{i in unit : labels[i] == c}| / |unit|``.

    Parameters
    ----------
    labels : ``[N]`` true class of each of the neuron's N references.
    clusters : ``[N]`` cluster of each reference, or None to score the neuron itself.

    Returns
    -------
    ``[1]`` with the neuron's purity when ``clusters`` is None, otherwise one value per
    cluster present, in increasing cluster id. Empty for ``N = 0``.
    """
    labels = _as_array(labels).ravel()
    if clusters is None:
        return np.array([_majority_share(labels)]) if labels.size else np.zeros(0)
    clusters = _as_array(clusters).ravel()
    if clusters.shape != labels.shape:
        raise ValueError(
            f"purity expects labels and clusters of one shape, got {labels.shape} and "
            f"{clusters.shape}"
        )
    return np.array(
        [_majority_share(labels[clusters == cluster]) for cluster in np.unique(clusters)],
        dtype=np.float64,
    )


def _majority_share(labels: np.ndarray) -> float:
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / labels.size)


def purity_summary(labels, clusters=None) -> tuple[float, float, int]:
    """Purity over all units of all neurons.

    Parameters
    ----------
    labels : ``[C, N]`` true class of each reference of each neuron.
    clusters : ``[C, N]`` cluster of each reference, or None to score the neurons.

    Returns
    -------
    ``(mean, se, units)``: mean and standard error over all units (every cluster of every
    neuron, or every neuron), and the number of units.
    """
    labels = _as_array(labels)
    if labels.ndim != 2:
        raise ValueError(f"purity_summary expects labels [C, N], got shape {labels.shape}")
    if clusters is None:
        values = [purity(row) for row in labels]
    else:
        clusters = _as_array(clusters)
        if clusters.shape != labels.shape:
            raise ValueError(
                f"purity_summary expects labels and clusters [C, N], got {labels.shape} "
                f"and {clusters.shape}"
            )
        values = [purity(row, groups) for row, groups in zip(labels, clusters, strict=True)]
    units = np.concatenate(values) if values else np.zeros(0)
    mean, se = mean_and_standard_error(units)
    return mean, se, int(units.size)
