"""Perturbations of the robustness experiments: label noise, input noise, few shots.

Symmetric label noise
    Exactly ``round(rate * n)`` labels (Python's ``round``, half to even), at positions
    drawn uniformly without replacement, are replaced by a class drawn uniformly from
    the *other* ``num_classes - 1`` classes. Drawing an offset in ``1 .. C-1`` and
    adding it modulo ``C`` gives exactly that distribution and can never return the
    original class, so the realised noise rate is the requested one.

Input noise
    Added to *normalised* images (after the model's mean/std), Gaussian with standard
    deviation ``level`` or uniform in ``[-level, level]``.

Few-shot subsets
    Stratified: ``max(1, round(fraction * n_c))`` samples of every class ``c`` present.

Every random choice comes from a seed or a ``torch.Generator`` on the CPU, so results
do not depend on the device.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

NOISE_KINDS = ("gaussian", "uniform")


def _as_labels(labels) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(
            f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}"
        )
    return labels.to(torch.int64).cpu()


def symmetric_label_noise(labels, rate: float, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Relabel exactly ``round(rate * n)`` random samples to a different random class.

    Parameters
    ----------
    labels : array-like of int
        ``[n]`` clean labels in ``0 .. num_classes - 1``.
    rate : float
        Share of labels to corrupt, in ``[0, 1]``.
    num_classes : int
        Number of classes ``C``; at least 2 when anything is corrupted.
    seed : int
        Seeds the choice of positions and new classes.

    Returns
    -------
    torch.Tensor
        ``[n]`` int64 noisy labels (a new tensor; ``labels`` is not modified).
    """
    labels = _as_labels(labels)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"label noise rate must be in [0, 1], got {rate}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    count = round(rate * len(labels))
    if count and num_classes < 2:
        raise ValueError("label noise needs at least 2 classes")
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randperm(len(labels), generator=generator)[:count]
    offsets = torch.randint(1, max(num_classes, 2), (count,), generator=generator)
    noisy = labels.clone()
    noisy[positions] = (labels[positions] + offsets) % num_classes
    return noisy


def add_input_noise(
    images: torch.Tensor,
    kind: str = "gaussian",
    level: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Normalised images plus random noise.

    Parameters
    ----------
    images : torch.Tensor
        Normalised images, any shape, on any device.
    kind : str
        ``gaussian`` (standard deviation ``level``) or ``uniform`` (in ``[-level, level]``).
    level : float
        Noise strength, ``>= 0``.
    generator : torch.Generator, optional
        CPU generator of the noise; the global CPU RNG when omitted.

    Returns
    -------
    torch.Tensor
        ``images + noise``, same shape, dtype and device.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"input noise kind must be one of {NOISE_KINDS}, got '{kind}'")
    if level < 0:
        raise ValueError(f"input noise level must be non-negative, got {level}")
    # Drawn on the CPU so a seed gives the same noise on every device.
    if kind == "gaussian":
        noise = torch.randn(images.shape, generator=generator) * level
    else:
        noise = (torch.rand(images.shape, generator=generator) * 2.0 - 1.0) * level
    return images + noise.to(device=images.device, dtype=images.dtype)


def input_noise_transform(kind: str, level: float, seed: int = 0):
    """A batch transform adding seeded noise, for ``extract_features(transform=...)``.

    Successive batches get successive draws of one generator, so a data set read in a
    fixed order gets the same noise every time a transform with this seed is made.
    """
    generator = torch.Generator().manual_seed(seed)

    def transform(images: torch.Tensor) -> torch.Tensor:
        return add_input_noise(images, kind, level, generator)

    return transform


def few_shot_subset(labels, fraction: float, seed: int = 0) -> torch.Tensor:
    """Stratified random subset: ``max(1, round(fraction * n_c))`` samples per class.

    Parameters
    ----------
    labels : array-like of int
        ``[n]`` labels.
    fraction : float
        Share of each class to keep, in ``(0, 1]``.
    seed : int
        Seeds the choice.

    Returns
    -------
    torch.Tensor
        Sorted int64 positions into ``labels``.
    """
    labels = _as_labels(labels)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"few-shot fraction must be in (0, 1], got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in torch.unique(labels):  # sorted, so the draws happen in a fixed order
        members = torch.nonzero(labels == label).flatten()
        keep = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:keep]])
    if not chosen:
        return torch.empty(0, dtype=torch.int64)
    return torch.sort(torch.cat(chosen)).values


class RelabelledDataset(Dataset):
    """A data set with its labels replaced (e.g. by :func:`symmetric_label_noise`).

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Yields ``(image, label, sample_id)``.
    labels : array-like of int
        ``[len(dataset)]`` replacement labels, by position.
    """

    def __init__(self, dataset: Dataset, labels) -> None:
        labels = _as_labels(labels)
        if len(labels) != len(dataset):
            raise ValueError(f"{len(labels)} labels for a data set of {len(dataset)} samples")
        self.dataset = dataset
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        image, _, sample_id = self.dataset[position]
        return image, int(self.labels[position]), sample_id
