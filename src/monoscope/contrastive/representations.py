"""The robustness evaluation of the contrastive branch: representations, probes, noise.

Three representations are compared (Beyond Interpretability, ICLR 2025):

``simclr``
    the projector output of a SimCLR model (polysemantic);
``ncl``
    the non-negative projector output of an NCL model (monosemantic by training);
``sae``
    the codes of a TopK SAE trained on the L2-normalised projector output of the frozen
    SimCLR model (monosemantic after the fact).

Each is probed (``linear`` on frozen features, ``selected`` on the top-m dimensions,
``finetune`` of the whole backbone with a new head) in one of these settings:

``clean``
    nothing changed (level 0);
``label``
    a fraction ``level`` of the training labels replaced by a different class;
``gaussian`` / ``uniform``
    noise of strength ``level`` added to the normalised *test* images;
``fewshot``
    a stratified fraction ``level`` of the training set.

:func:`probe_under_noise` runs one (representation, probe, setting) cell; the records it
returns become the robustness table and the accuracy-versus-noise curves.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from monoscope.config import from_mapping
from monoscope.contrastive.metrics import class_consistency, sparsity
from monoscope.contrastive.models import ContrastiveModel
from monoscope.contrastive.pretrain import load_pretrained
from monoscope.contrastive.probes import (
    FeatureSet,
    FinetuneConfig,
    LinearProbeConfig,
    extract_features,
    finetune,
    linear_probe,
    rank_dimensions,
    selected_dims_probe,
)
from monoscope.contrastive.robustness import (
    RelabelledDataset,
    few_shot_subset,
    input_noise_transform,
    symmetric_label_noise,
)
from monoscope.hierarchy import class_means, hierarchy_score
from monoscope.io import load_tensors, save_tensors
from monoscope.sae.base import SparseAutoencoder, load_sae
from monoscope.sae.train import SAEConfig

REPRESENTATIONS = ("simclr", "ncl", "sae")
PROBES = ("linear", "selected", "finetune")
NOISES = ("clean", "label", "gaussian", "uniform", "fewshot")
# Finetuning changes the backbone; the SAE is defined on a frozen one, so it has no
# finetuned counterpart (the paper finetunes the contrastive models only).
FINETUNABLE = ("simclr", "ncl")


def contrastive_sae_config(settings: Mapping[str, Any], dim: int) -> SAEConfig:
    """The config of the SAE on a contrastive model's ``dim``-wide projector output.

    ``settings`` are those of the ``contrastive.sae`` config (``num_features``, ``k``,
    ``epochs``, ...); the rest is fixed: a TopK SAE with the normalised MSE of
    L2-normalised inputs and a decoder bias that starts at the data mean.
    """
    return from_mapping(
        SAEConfig,
        settings,
        variant="topk",
        expansion=settings["num_features"] / dim,
        normalized_mse=True,
        decoder_bias_init="mean",
    )


class SAEOnContrastive(nn.Module):
    """A frozen contrastive model whose ``embed`` is the SAE code of its embedding.

    It has the interface of :class:`ContrastiveModel` that
    :func:`monoscope.contrastive.probes.extract_features` uses, so SAE codes are
    extracted, noised and probed exactly like the other representations.
    """

    def __init__(self, model: ContrastiveModel, sae: SparseAutoencoder) -> None:
        super().__init__()
        self.model = model
        self.sae = sae

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.normalize(images)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """SAE codes ``[B, K]`` of the L2-normalised projector output."""
        return self.sae.encode(F.normalize(self.model.embed(x), dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def load_representation(model_path, sae_path=None, device: torch.device | str = "cpu") -> nn.Module:
    """A pretrained model from its file, wrapped with its SAE when ``sae_path`` is given."""
    model, _, _ = load_pretrained(model_path, device)
    if sae_path is None:
        return model
    return SAEOnContrastive(model, load_sae(sae_path).to(device).eval()).eval()


def save_feature_sets(path, classes: Sequence[str], **sets: FeatureSet) -> None:
    """Write named feature sets (e.g. ``train=..., test=...``) and the class names."""
    tensors = {}
    for name, feature_set in sets.items():
        for field in FeatureSet._fields:
            tensors[f"{name}/{field}"] = getattr(feature_set, field).contiguous()
    metadata = {"kind": "contrastive_features", "sets": sorted(sets), "classes": list(classes)}
    save_tensors(path, tensors, metadata)


def load_feature_sets(path) -> tuple[dict[str, FeatureSet], list[str]]:
    """Inverse of :func:`save_feature_sets`: the sets by name, and the class names."""
    tensors, metadata = load_tensors(path)
    if metadata.get("kind") != "contrastive_features":
        raise ValueError(
            f"{path} is not a contrastive feature file (kind {metadata.get('kind')!r})"
        )
    sets = {
        name: FeatureSet(*(tensors[f"{name}/{field}"] for field in FeatureSet._fields))
        for name in metadata["sets"]
    }
    return sets, list(metadata["classes"])


def setting_name(noise: str, level: float) -> str:
    """Column label of a setting, e.g. ``clean``, ``label 0.9``, ``gaussian 0.6``."""
    return "clean" if noise == "clean" else f"{noise} {level:g}"


def check_setting(noise: str, level: float) -> None:
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got '{noise}'")
    if noise == "clean" and level != 0:
        raise ValueError(f"the clean setting has level 0, got {level}")
    if noise == "label" and not 0.0 <= level <= 1.0:
        raise ValueError(f"label noise level must be in [0, 1], got {level}")
    if noise == "fewshot" and not 0.0 < level <= 1.0:
        raise ValueError(f"few-shot level must be in (0, 1], got {level}")
    if noise in ("gaussian", "uniform") and level < 0:
        raise ValueError(f"input noise level must be >= 0, got {level}")


def probe_under_noise(
    model: nn.Module,
    probe: str,
    noise: str,
    level: float,
    train_ds: Dataset | None,
    test_ds: Dataset | None,
    train_features: FeatureSet | None,
    test_features: FeatureSet | None,
    num_classes: int,
    probe_config: LinearProbeConfig | None = None,
    finetune_config: FinetuneConfig | None = None,
    selected_dims: int = 32,
    which: str = "projector",
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Test accuracy of one probe on one representation in one noise setting.

    Parameters
    ----------
    model : ContrastiveModel or SAEOnContrastive
        The representation (frozen for ``linear`` and ``selected``; copied for
        ``finetune``).
    probe : ``linear``, ``selected`` or ``finetune``.
    noise, level : the setting (see the module docstring).
    train_ds, test_ds : data sets of ``(image, label, sample_id)``, images in [0, 1];
        only read by ``finetune`` (both) and input noise (``test_ds``), may be None
        otherwise.
    train_features, test_features : clean features of the two data sets in data set
        order (from :func:`extract_features` with ``which``); reused by the frozen
        probes so that each setting extracts only what its noise changes. Not needed
        by ``finetune``.
    num_classes : classes of the task.
    probe_config, finetune_config : optimisation settings.
    selected_dims : m, the dimensions kept by the ``selected`` probe.
    which : features probed by the frozen probes (``projector`` or ``backbone``).
    batch_size : images per forward pass when features are extracted.
    seed : seeds the label noise, the few-shot subset and the input noise.
    device : where to run.

    Returns
    -------
    dict
        ``probe``, ``noise``, ``level``, ``setting``, ``accuracy`` (in [0, 1]),
        ``train_samples`` and ``seconds``.
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got '{probe}'")
    check_setting(noise, level)
    needs_images = {"train": probe == "finetune"}
    needs_images["test"] = probe == "finetune" or noise in ("gaussian", "uniform")
    for split, dataset in (("train", train_ds), ("test", test_ds)):
        if needs_images[split] and dataset is None:
            raise ValueError(f"the {probe} probe with {noise} noise needs the {split} images")
    start = time.perf_counter()
    train_labels = torch.as_tensor(
        train_features.labels if train_features is not None else _labels_of(train_ds)
    )
    keep = torch.arange(len(train_labels))
    if noise == "fewshot":
        keep = few_shot_subset(train_labels, level, seed=seed)
    labels = train_labels[keep]
    if noise == "label":
        labels = symmetric_label_noise(labels, level, num_classes, seed=seed)
    test_transform = (
        input_noise_transform(noise, level, seed=seed) if noise in ("gaussian", "uniform") else None
    )

    if probe == "finetune":
        train_subset = Subset(train_ds, keep.tolist()) if noise == "fewshot" else train_ds
        train_subset = RelabelledDataset(train_subset, labels)
        config = dataclasses.replace(finetune_config or FinetuneConfig(), num_classes=num_classes)
        _, record = finetune(
            model, train_subset, test_ds, config, device=device, test_transform=test_transform
        )
        accuracy = float(record["test_accuracy"])
    else:
        if train_features is None or test_features is None:
            raise ValueError(f"the {probe} probe needs the clean train and test features")
        test = test_features
        if test_transform is not None:
            test = extract_features(
                model, test_ds, which, batch_size, device=device, transform=test_transform
            )
        train = train_features.features[keep]
        if probe == "linear":
            accuracy = linear_probe(
                train, labels, test.features, test.labels, probe_config, num_classes, device
            )
        else:
            m = min(selected_dims, train.shape[1])
            accuracy = selected_dims_probe(
                train, labels, test.features, test.labels, m, probe_config, num_classes, device
            )
    return {
        "probe": probe,
        "noise": noise,
        "level": float(level),
        "setting": setting_name(noise, level),
        "accuracy": float(accuracy),
        "train_samples": len(keep),
        "seconds": time.perf_counter() - start,
    }


def _labels_of(dataset: Dataset) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return torch.as_tensor(labels, dtype=torch.int64)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)


# --------------------------------------------------------------------------- units


def representation_summary(
    features: torch.Tensor, labels: torch.Tensor, distances: np.ndarray | None = None
) -> dict[str, Any]:
    """Monosemanticity of a representation's dimensions on a labelled set.

    Parameters
    ----------
    features : ``[N, D]`` features.
    labels : ``[N]`` class indices ``0..C-1``.
    distances : ``[C, C]`` class distances for the hierarchy score (lower = more
        monosemantic); skipped when omitted.

    Returns
    -------
    dict
        ``dimensions``; ``active_dimensions`` (active, i.e. > 0, on at least one
        sample); ``consistency`` (mean class consistency over active dimensions);
        ``zero_fraction`` and ``active_per_sample`` (sparsity); ``hierarchy`` (mean
        hierarchy score of the active dimensions' class means of ReLU(features), the
        same "active means positive" reading as the consistency).
    """
    features = torch.as_tensor(features).float()
    labels = torch.as_tensor(labels, dtype=torch.int64)
    consistency = class_consistency(features, labels)
    spars = sparsity(features)
    active = (features > 0).any(dim=0)
    summary = {
        "dimensions": int(features.shape[1]),
        "active_dimensions": int(active.sum()),
        "consistency": consistency.mean,
        "zero_fraction": spars.zero_fraction,
        "active_per_sample": spars.active_per_sample,
    }
    if distances is not None:
        means = class_means(features.clamp_min(0).numpy(), labels.numpy(), len(distances))
        scores = hierarchy_score(means[active.numpy()], distances)
        summary["hierarchy"] = float(np.nanmean(scores)) if np.isfinite(scores).any() else math.nan
    return summary


def top_references(features: torch.Tensor, dims: torch.Tensor, n: int) -> torch.Tensor:
    """Positions ``[len(dims), n]`` of the samples activating each dimension most."""
    n = min(n, features.shape[0])
    return features[:, dims].topk(n, dim=0).indices.T


def reference_dimensions(train_features: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` dimensions the selected-dims probe would keep first."""
    return rank_dimensions(train_features, min(count, train_features.shape[1]))


# --------------------------------------------------------------------------- tables


def robustness_frame(records: Sequence[dict[str, Any]], settings: Sequence[str]) -> pd.DataFrame:
    """Accuracy (%) with one row per (probe, representation), one column per setting.

    ``records`` carry ``representation``, ``probe``, ``setting`` and ``accuracy``;
    columns follow ``settings``; a missing cell (e.g. the SAE has no finetuning) is
    empty.
    """
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for record in records:
        key = (record["probe"], record["representation"])
        cells = rows.setdefault(key, {})
        if record["setting"] in cells:
            raise ValueError(f"two records for {key} in setting {record['setting']!r}")
        cells[record["setting"]] = round(100.0 * record["accuracy"], 1)
    order = sorted(
        rows,
        key=lambda key: (
            PROBES.index(key[0]) if key[0] in PROBES else len(PROBES),
            REPRESENTATIONS.index(key[1]) if key[1] in REPRESENTATIONS else len(REPRESENTATIONS),
        ),
    )
    frame = pd.DataFrame(
        [[rows[key].get(setting, np.nan) for setting in settings] for key in order],
        index=pd.MultiIndex.from_tuples(order, names=["probe", "representation"]),
        columns=pd.Index(list(settings), name="setting"),
    )
    return frame


def representations_frame(
    units: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]
) -> pd.DataFrame:
    """One row per representation: its dimensions' summary and its clean accuracies (%).

    ``units`` are :func:`representation_summary` records with ``representation``;
    ``records`` are :func:`probe_under_noise` records with ``representation``.
    """
    rows = []
    for unit in units:
        row = {
            "representation": unit["representation"],
            "dimensions": unit["dimensions"],
            "active dimensions": unit["active_dimensions"],
            "class consistency": round(unit["consistency"], 3),
            "zero fraction": round(unit["zero_fraction"], 3),
            "active per sample": round(unit["active_per_sample"], 1),
            "hierarchy score": round(unit["hierarchy"], 3),
        }
        for record in records:
            if record["noise"] == "clean" and record["representation"] == unit["representation"]:
                row[f"{record['probe']} accuracy"] = round(100 * record["accuracy"], 1)
        rows.append(row)
    return pd.DataFrame(rows).set_index("representation")


def plot_accuracy_vs_noise(records: Sequence[dict[str, Any]], noise: str, path) -> None:
    """Accuracy against noise level, one panel per probe, one line per representation.

    The clean accuracy is the point at level 0 (for few-shot, at fraction 1).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monoscope.plotting import save_figure

    probes = [probe for probe in PROBES if any(r["probe"] == probe for r in records)]
    figure, axes = plt.subplots(
        1, max(len(probes), 1), figsize=(4.0 * max(len(probes), 1), 3.2), squeeze=False
    )
    for axis, probe in zip(axes[0], probes, strict=False):
        for representation in REPRESENTATIONS:
            points = []
            for record in records:
                if record["probe"] != probe or record["representation"] != representation:
                    continue
                if record["noise"] == noise:
                    points.append((record["level"], record["accuracy"]))
                elif record["noise"] == "clean":
                    points.append((1.0 if noise == "fewshot" else 0.0, record["accuracy"]))
            if points:
                levels, accuracies = zip(*sorted(points), strict=True)
                axis.plot(levels, [100 * a for a in accuracies], marker="o", label=representation)
        axis.set_title(probe)
        axis.set_xlabel("training fraction" if noise == "fewshot" else f"{noise} noise level")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
