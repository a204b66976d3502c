"""Labels and semantic scores of units from the embeddings of their references.

Every unit kind (a neuron, a PURE virtual neuron, an SAE feature, a contrastive
dimension) has top-N references, and an embedder maps each reference's relevance crop to
a vector. In that space, as SemanticLens (Dreyer et al. 2025) does in CLIP's:

- a **label** is the vocabulary entry most similar (cosine) to the unit's mean reference
  direction; the vocabulary is text embeddings through prompt templates for a text-image
  embedder, or class prototypes (the mean embedding of each class's images) for an
  image-only one (:func:`class_prototypes`);
- **clarity** is the mean cosine similarity between two distinct references of a unit
  (1: all references embed alike; about 0: unrelated);
- **polysemanticity** is the effective number of vocabulary concepts the references
  spread over: each reference takes its nearest entry, and the score is the exponential
  of the entropy of those assignments (1: one concept; R: every reference another);
- **redundancy** is how many other units share a unit's meaning: units whose mean
  reference directions have cosine similarity at least ``threshold`` with its own.

All functions are pure: tensors in, tensors out, no files and no model.
"""

from __future__ import annotations

import torch

__all__ = [
    "class_prototypes",
    "clarity",
    "label_units",
    "mean_directions",
    "most_similar_directions",
    "most_similar_units",
    "polysemanticity",
    "redundancy",
    "redundancy_of_directions",
]


def _unit_rows(embeddings: torch.Tensor) -> torch.Tensor:
    """Reference embeddings ``[U, R, D]`` in float64, each row scaled to unit length."""
    if embeddings.ndim != 3:
        raise ValueError(
            f"expected reference embeddings [units, references, dim], got shape "
            f"{tuple(embeddings.shape)}"
        )
    if not torch.isfinite(embeddings).all():
        raise ValueError("reference embeddings contain NaN or infinite values")
    return torch.nn.functional.normalize(embeddings.double(), dim=-1)


def _vocabulary_rows(vocabulary: torch.Tensor, dim: int) -> torch.Tensor:
    if vocabulary.ndim != 2 or vocabulary.shape[1] != dim:
        raise ValueError(
            f"expected a vocabulary [entries, {dim}], got shape {tuple(vocabulary.shape)}"
        )
    if len(vocabulary) == 0:
        raise ValueError("the vocabulary is empty")
    return torch.nn.functional.normalize(vocabulary.double(), dim=-1)


def mean_directions(embeddings: torch.Tensor) -> torch.Tensor:
    """Each unit's mean reference direction ``[U, D]``, of unit length (zero stays zero).

    The references are normalised first, so that every reference weighs the same.
    """
    return torch.nn.functional.normalize(_unit_rows(embeddings).mean(dim=1), dim=-1)


def class_prototypes(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """The vocabulary of an image-only embedder: the mean direction of each class.

    ``embeddings`` ``[N, D]`` of images with integer ``labels`` ``[N]`` in
    ``[0, num_classes)``; returns ``[num_classes, D]`` of unit length. A class without an
    image has no prototype, which is an error naming it.
    """
    if embeddings.ndim != 2 or labels.shape != (len(embeddings),):
        raise ValueError(
            f"expected embeddings [N, D] and labels [N], got {tuple(embeddings.shape)} "
            f"and {tuple(labels.shape)}"
        )
    labels = labels.long()
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.unique().tolist()}")
    rows = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    sums = torch.zeros((num_classes, rows.shape[1]), dtype=rows.dtype)
    sums.index_add_(0, labels, rows)
    counts = torch.bincount(labels, minlength=num_classes)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"classes {empty} have no image to make a prototype from")
    return torch.nn.functional.normalize(sums / counts[:, None], dim=-1)


def label_units(
    embeddings: torch.Tensor, vocabulary: torch.Tensor, top: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` vocabulary entries most similar to each unit's mean reference direction.

    Returns ``(indices [U, top], cosine similarities [U, top])``, best first; ties go to
    the lower index.
    """
    directions = mean_directions(embeddings)
    entries = _vocabulary_rows(vocabulary, directions.shape[1])
    if not 1 <= top <= len(entries):
        raise ValueError(f"top must be in [1, {len(entries)}] (the vocabulary), got {top}")
    similarity = directions @ entries.T  # [U, V]
    # A stable descending sort keeps ties in index order (torch.topk does not promise it).
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :top]
    return order, similarity.gather(1, order)


def clarity(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over the pairs of distinct references of each unit ``[U]``.

    With unit rows e_1..e_R, sum_{i != j} e_i . e_j = |sum_i e_i|^2 - R, so the mean over
    the R(R - 1) ordered pairs needs no pairwise matrix. Needs two references per unit.
    """
    rows = _unit_rows(embeddings)
    count = rows.shape[1]
    if count < 2:
        raise ValueError(f"clarity needs at least two references per unit, got {count}")
    total = rows.sum(dim=1)
    return ((total * total).sum(dim=1) - count) / (count * (count - 1))


def polysemanticity(embeddings: torch.Tensor, vocabulary: torch.Tensor) -> torch.Tensor:
    """Effective number of vocabulary concepts each unit's references spread over ``[U]``.

    Each reference takes its most similar vocabulary entry (ties: the lower index); with
    p the share of the unit's references per entry, the score is exp(-sum p log p): 1 when
    every reference has the same concept, R when each has another.
    """
    rows = _unit_rows(embeddings)
    entries = _vocabulary_rows(vocabulary, rows.shape[2])
    nearest = (rows @ entries.T).argmax(dim=2)  # [U, R]; argmax returns the first maximum
    counts = torch.zeros((rows.shape[0], len(entries)), dtype=rows.dtype)
    counts.scatter_add_(1, nearest, torch.ones_like(nearest, dtype=rows.dtype))
    shares = counts / rows.shape[1]
    entropy = -(shares * torch.log(torch.where(shares > 0, shares, 1.0))).sum(dim=1)
    return torch.exp(entropy)


def redundancy(embeddings: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """How many other units share each unit's meaning ``[U]`` (int64).

    Two units share a meaning when their mean reference directions have cosine
    similarity at least ``threshold`` (in [-1, 1]).
    """
    return redundancy_of_directions(mean_directions(embeddings), threshold)


def redundancy_of_directions(directions: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """:func:`redundancy` from the units' mean directions ``[U, D]`` (for units with
    different numbers of references, such as virtual neurons)."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
    directions = torch.nn.functional.normalize(directions.double(), dim=-1)
    similar = (directions @ directions.T) >= threshold
    similar.fill_diagonal_(False)
    return similar.sum(dim=1)


def most_similar_units(embeddings: torch.Tensor, top: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` other units nearest in meaning to each unit (the atlas's links).

    Returns ``(unit indices [U, top], cosine similarities [U, top])`` of the mean
    reference directions, best first, never the unit itself.
    """
    directions = mean_directions(embeddings)
    count = len(directions)
    if not 1 <= top < count:
        raise ValueError(f"top must be in [1, {count - 1}] (the other units), got {top}")
    return most_similar_directions(directions, top)


def most_similar_directions(
    directions: torch.Tensor,
    top: int = 5,
    families: torch.Tensor | None = None,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` units whose directions ``[U, D]`` are nearest (cosine) to each unit's.

    A unit is never its own neighbour, nor is a unit of the same family (``families``
    ``[U]``, e.g. a neuron and its virtual neurons, which share references). Rows are
    compared ``chunk`` at a time, so memory holds ``chunk x U`` similarities, never
    ``U x U``. Returns ``(indices [U, top], similarities [U, top])``, best first, ties in
    index order; where fewer than ``top`` units qualify, the rest is -1 and NaN.
    """
    if directions.ndim != 2:
        raise ValueError(f"expected directions [U, D], got {tuple(directions.shape)}")
    if top < 1 or chunk < 1:
        raise ValueError(f"top and chunk must be positive, got {top} and {chunk}")
    count = len(directions)
    unit = torch.nn.functional.normalize(directions.double(), dim=-1)
    family = torch.arange(count) if families is None else torch.as_tensor(families).long()
    if family.shape != (count,):
        raise ValueError(
            f"families must have one entry per unit ({count}), got {tuple(family.shape)}"
        )
    width = min(top, count)
    indices = torch.full((count, top), -1, dtype=torch.int64)
    values = torch.full((count, top), float("nan"), dtype=torch.float64)
    for start in range(0, count, chunk):
        rows = slice(start, min(start + chunk, count))
        similarity = unit[rows] @ unit.T  # [chunk, U]
        excluded = family[rows, None] == family[None, :]
        excluded[torch.arange(similarity.shape[0]), torch.arange(rows.start, rows.stop)] = True
        similarity = similarity.masked_fill(excluded, -torch.inf)
        order = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :width]
        found = similarity.gather(1, order)
        keep = torch.isfinite(found)
        indices[rows, :width] = torch.where(keep, order, -1)
        values[rows, :width] = torch.where(keep, found, float("nan"))
    return indices, values
