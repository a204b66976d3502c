"""Evaluating contrastive features: linear probes, full finetuning, selected dimensions.

Linear probe
    A linear classifier on frozen features, trained in torch (mini-batch Adam or SGD,
    cross-entropy, fixed seed). We use torch rather than scikit-learn's
    ``LogisticRegression`` because the same code then runs on a GPU for 50k x 2048
    feature matrices and 100 classes (where lbfgs on the CPU takes minutes per probe,
    and the robustness sweeps need dozens of probes), and because its optimisation is
    the one the papers use (a linear layer trained with SGD-type optimisers), rather
    than a converged, L2-regularised logistic regression whose regularisation strength
    would be another knob to tune. Features are standardised with the training set's
    statistics by default: SimCLR and NCL features differ in scale by orders of
    magnitude, and a fixed learning rate is only comparable across them after that.

Selected dimensions (*Beyond Interpretability*, feature selection)
    Each dimension ``d`` is scored on the training features ``F`` by
    ``s_d = sum_i relu(F_i)_d / ||relu(F_i)||_2`` (each sample's rectified vector
    normalised to unit length; an all-zero sample contributes nothing), and the ``m``
    highest-scoring dimensions are kept, ties going to the lower index. A linear probe
    on those ``m`` dimensions measures how much of the information a few, most active
    dimensions carry.

Full finetuning
    Backbone and a new linear head trained together with cross-entropy on random
    resized crops and flips (the supervised augmentation), cosine schedule.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from monoscope import checkpoints
from monoscope.config import Requirement, check_fields, in_range, one_of
from monoscope.contrastive.augment import random_resized_crop
from monoscope.contrastive.models import ContrastiveModel
from monoscope.contrastive.pretrain import warmup_cosine_lr

log = logging.getLogger(__name__)

FEATURE_SOURCES = ("backbone", "projector")
PROBE_OPTIMIZERS = ("adam", "sgd")
# The number of epochs sets the cosine schedule, so a resume may not change it.
FINETUNE_CHECKPOINTS = checkpoints.CheckpointKind(
    "contrastive_finetune_checkpoint", resumable_keys=("num_workers",)
)

BatchTransform = Callable[[torch.Tensor], torch.Tensor]


class FeatureSet(NamedTuple):
    """Features of a data set, row-aligned with its labels and sample ids."""

    features: torch.Tensor
    labels: torch.Tensor
    sample_ids: torch.Tensor


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def extract_features(
    model: ContrastiveModel,
    dataset: Dataset,
    which: str = "backbone",
    batch_size: int = 256,
    device: torch.device | str | None = None,
    transform: BatchTransform | None = None,
    num_workers: int = 0,
) -> FeatureSet:
    """Features of every sample of ``dataset``, in data set order.

    Parameters
    ----------
    model : ContrastiveModel
        Evaluated in eval mode (its mode is restored afterwards).
    dataset : torch.utils.data.Dataset
        Yields ``(image, label, sample_id)``, images in ``[0, 1]``.
    which : str
        ``backbone`` (512-d pooled features) or ``projector`` (projector output after
        the non-negative map, before normalisation).
    batch_size : int
        Images per forward pass.
    device : torch.device or str, optional
        Where to run; the model's device when omitted.
    transform : callable, optional
        Applied to each *normalised* batch before the forward pass, e.g. input noise
        (:func:`monoscope.contrastive.robustness.add_input_noise`).
    num_workers : int
        DataLoader worker processes.

    Returns
    -------
    FeatureSet
        ``features`` ``[N, D]`` float32 on the CPU, ``labels`` and ``sample_ids`` ``[N]``.
    """
    if which not in FEATURE_SOURCES:
        raise ValueError(f"which must be one of {FEATURE_SOURCES}, got '{which}'")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    features, labels, sample_ids = [], [], []
    try:
        for images, batch_labels, batch_ids in loader:
            inputs = model.normalize(images.to(device))
            if transform is not None:
                inputs = transform(inputs)
            output = model.features(inputs) if which == "backbone" else model.embed(inputs)
            features.append(output.float().cpu())
            labels.append(torch.as_tensor(batch_labels, dtype=torch.int64))
            sample_ids.append(torch.as_tensor(batch_ids, dtype=torch.int64))
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("cannot extract features of an empty data set")
    return FeatureSet(torch.cat(features), torch.cat(labels), torch.cat(sample_ids))


# --------------------------------------------------------------------------- linear probe


@dataclass(frozen=True)
class LinearProbeConfig:
    """Training of a linear probe on frozen features.

    Parameters
    ----------
    epochs, batch_size : passes over the training features, samples per step.
    lr, weight_decay : optimiser settings (constant learning rate).
    optimizer : ``adam`` or ``sgd`` (momentum 0.9).
    standardize : centre and scale every dimension by the training mean and standard
        deviation first (constant dimensions are only centred).
    seed : seeds the classifier's initialisation and the batch order.
    """

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    standardize: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(
            self,
            ("optimizer", one_of(PROBE_OPTIMIZERS)),
            ("epochs batch_size lr", "positive"),
            ("weight_decay", ">= 0"),
            section="probe",
        )


def _num_classes(*label_sets: torch.Tensor) -> int:
    return int(max(int(labels.max()) for labels in label_sets if len(labels))) + 1


def train_linear_classifier(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: LinearProbeConfig | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Fit a linear classifier (with its standardisation) on frozen features.

    Parameters
    ----------
    features : torch.Tensor
        ``[N, D]`` training features.
    labels : torch.Tensor
        ``[N]`` class indices in ``0 .. num_classes - 1``.
    num_classes : int
        Outputs of the classifier.
    config : LinearProbeConfig, optional
        Optimisation settings; the defaults when omitted.
    device : torch.device or str, optional
        Where to train; the features' device when omitted.

    Returns
    -------
    torch.nn.Module
        ``Standardize -> Linear`` in eval mode, on ``device``.
    """
    config = config or LinearProbeConfig()
    device = torch.device(device) if device is not None else features.device
    features = features.to(device=device, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.int64).to(device)
    if features.dim() != 2 or len(features) != len(labels):
        raise ValueError(
            f"features {tuple(features.shape)} do not match labels {tuple(labels.shape)}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        linear = nn.Linear(features.shape[1], num_classes)
    if config.standardize:
        mean = features.mean(dim=0)
        std = features.std(dim=0, unbiased=False)
        # A constant dimension carries nothing; dividing it by 1 leaves it at 0.
        scale = torch.where(std > 1e-8, std, torch.ones_like(std))
    else:
        mean = torch.zeros(features.shape[1], device=device)
        scale = torch.ones(features.shape[1], device=device)
    classifier = nn.Sequential(_Standardize(mean, scale), linear).to(device)
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(
            linear.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            linear.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
        )
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        order = torch.randperm(len(features), generator=generator).to(device)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = F.cross_entropy(classifier(features[batch]), labels[batch])
            checkpoints.optimizer_step(optimizer, loss)
    return classifier.eval()


class _Standardize(nn.Module):
    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


@torch.no_grad()
def _accuracy(classifier: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    device = next(classifier.parameters()).device
    correct = 0
    for start in range(0, len(features), 4096):  # chunks bound the memory of the logits
        chunk = features[start : start + 4096].to(device=device, dtype=torch.float32)
        prediction = classifier(chunk).argmax(dim=1).cpu()
        correct += int((prediction == labels[start : start + 4096].cpu()).sum())
    return correct / max(len(features), 1)


def linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    config: LinearProbeConfig | None = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Test accuracy of a linear classifier trained on frozen training features.

    Parameters
    ----------
    train_feats, test_feats : torch.Tensor
        ``[N, D]`` and ``[M, D]`` features.
    train_labels, test_labels : torch.Tensor
        ``[N]`` and ``[M]`` class indices (training labels may be noisy).
    config : LinearProbeConfig, optional
        Optimisation settings; the defaults when omitted.
    num_classes : int, optional
        Defaults to one more than the largest label seen.
    device : torch.device or str, optional
        Where to train; the training features' device when omitted.

    Returns
    -------
    float
        Top-1 accuracy on the test features, in ``[0, 1]``.
    """
    config = config or LinearProbeConfig()
    train_labels = torch.as_tensor(train_labels, dtype=torch.int64)
    test_labels = torch.as_tensor(test_labels, dtype=torch.int64)
    if test_feats.shape[1:] != train_feats.shape[1:]:
        raise ValueError(
            f"train features {tuple(train_feats.shape)} and test features "
            f"{tuple(test_feats.shape)} have different widths"
        )
    num_classes = num_classes or _num_classes(train_labels, test_labels)
    classifier = train_linear_classifier(train_feats, train_labels, num_classes, config, device)
    return _accuracy(classifier, test_feats, test_labels)


# --------------------------------------------------------------------------- selected dims


def dimension_scores(train_feats: torch.Tensor) -> torch.Tensor:
    """Per-dimension score ``s_d = sum_i relu(F_i)_d / ||relu(F_i)||_2`` (float64).

    Parameters
    ----------
    train_feats : torch.Tensor
        ``[N, D]`` training features.

    Returns
    -------
    torch.Tensor
        ``[D]`` float64 scores on the CPU.
    """
    if train_feats.dim() != 2:
        raise ValueError(f"features must be [N, D], got {tuple(train_feats.shape)}")
    # float64: the ranking compares sums over up to 50k samples, where float32
    # rounding could swap nearly tied dimensions depending on the summation order.
    rectified = train_feats.detach().cpu().to(torch.float64).clamp_min(0)
    norms = rectified.norm(dim=1, keepdim=True)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return (rectified / safe).sum(dim=0)


def rank_dimensions(train_feats: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of the ``m`` highest-scoring dimensions (:func:`dimension_scores`).

    Parameters
    ----------
    train_feats : torch.Tensor
        ``[N, D]`` training features.
    m : int
        How many dimensions to keep, ``1 <= m <= D``.

    Returns
    -------
    torch.Tensor
        ``[m]`` int64 indices, best first; equal scores go to the lower index.
    """
    scores = dimension_scores(train_feats)
    if not 1 <= m <= len(scores):
        raise ValueError(f"m must be in 1..{len(scores)}, got {m}")
    # A stable sort keeps equal scores in index order, which is the tie rule.
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:m]


def selected_dims_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    m: int,
    config: LinearProbeConfig | None = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Linear probe accuracy using only the ``m`` top dimensions of the training set.

    The dimensions are ranked on the training features only (:func:`rank_dimensions`),
    so the test set plays no part in the selection. Other parameters as in
    :func:`linear_probe`.

    Returns
    -------
    float
        Test accuracy in ``[0, 1]``.
    """
    dims = rank_dimensions(train_feats, m).to(train_feats.device)
    return linear_probe(
        train_feats[:, dims],
        train_labels,
        test_feats[:, dims.to(test_feats.device)],
        test_labels,
        config,
        num_classes,
        device,
    )


# --------------------------------------------------------------------------- finetuning


@dataclass(frozen=True)
class FinetuneConfig:
    """Full finetuning of backbone and linear head.

    Parameters
    ----------
    epochs, batch_size : length of training (the last incomplete batch is dropped
        when the data set has more than one batch).
    lr : peak learning rate of the backbone.
    head_lr : peak learning rate of the new linear head (it starts from scratch, so it
        usually wants a larger one).
    momentum, weight_decay : SGD settings.
    warmup_epochs : linear warm-up before the cosine decay.
    augment : train on random resized crops (scale ``[min_scale, 1]``) with flips.
    min_scale : smallest crop area share when augmenting.
    num_classes : outputs of the head; one more than the largest label when ``None``.
    num_workers : DataLoader worker processes.
    seed : seeds the head, the batch order and the augmentation.
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.01
    head_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    augment: bool = True
    min_scale: float = 0.08
    num_classes: int | None = None
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(
            self,
            ("epochs batch_size lr head_lr", "positive"),
            ("momentum", in_range(0, 1, "[)")),
            ("weight_decay warmup_epochs", ">= 0"),
            ("min_scale", in_range(0, 1, "(]")),
            ("num_classes", Requirement("at least 2 or null", lambda n: n is None or n >= 2)),
            section="finetune",
        )


class FinetunedClassifier(nn.Module):
    """A contrastive model's backbone with a linear head (projector unused).

    ``forward`` takes normalised images; :meth:`normalize` is the backbone's own.
    """

    def __init__(self, model: ContrastiveModel, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.head = nn.Linear(model.feature_dim, num_classes)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.normalize(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.features(x))


def _dataset_labels(dataset: Dataset) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return torch.as_tensor(labels, dtype=torch.int64)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)


@torch.no_grad()
def evaluate_classifier(
    classifier: FinetunedClassifier,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    transform: BatchTransform | None = None,
) -> float:
    """Top-1 accuracy of ``classifier`` on ``dataset``.

    ``transform`` is applied to each normalised batch (e.g. input noise).
    """
    device = torch.device(device) if device is not None else _model_device(classifier)
    was_training = classifier.training
    classifier.eval()
    correct = total = 0
    try:
        for images, labels, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            inputs = classifier.normalize(images.to(device))
            if transform is not None:
                inputs = transform(inputs)
            prediction = classifier(inputs).argmax(dim=1).cpu()
            correct += int((prediction == torch.as_tensor(labels)).sum())
            total += len(labels)
    finally:
        classifier.train(was_training)
    return correct / max(total, 1)


def finetune(
    model: ContrastiveModel,
    train_ds: Dataset,
    test_ds: Dataset,
    config: FinetuneConfig | None = None,
    device: torch.device | str | None = None,
    train_transform: BatchTransform | None = None,
    test_transform: BatchTransform | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> tuple[FinetunedClassifier, dict[str, Any]]:
    """Finetune a copy of ``model``'s backbone with a new linear head.

    Parameters
    ----------
    model : ContrastiveModel
        Pretrained model; it is copied, never modified.
    train_ds, test_ds : torch.utils.data.Dataset
        Yield ``(image, label, sample_id)`` with images in ``[0, 1]``; training labels
        may be noisy (:class:`monoscope.contrastive.robustness.RelabelledDataset`).
    config : FinetuneConfig, optional
        Optimisation settings; the defaults when omitted.
    device : torch.device or str, optional
        Where to train; the model's device when omitted.
    train_transform, test_transform : callable, optional
        Applied to each normalised training / test batch (e.g. input noise).
    checkpoint : path-like, optional
        A file rewritten after every epoch and resumed from when it exists (same config;
        it does not identify ``model`` or the data, so give each run its own).

    Returns
    -------
    tuple
        The finetuned classifier (eval mode) and a record with ``test_accuracy``,
        ``train_loss`` (per epoch) and ``num_classes``.
    """
    config = config or FinetuneConfig()
    device = torch.device(device) if device is not None else _model_device(model)
    num_classes = config.num_classes or _num_classes(
        _dataset_labels(train_ds), _dataset_labels(test_ds)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        classifier = FinetunedClassifier(copy.deepcopy(model), num_classes)
    classifier.to(device)
    head_params = list(classifier.head.parameters())
    optimizer = torch.optim.SGD(
        [
            {"params": list(classifier.model.backbone.parameters()), "peak_lr": config.lr},
            {"params": head_params, "peak_lr": config.head_lr},
        ],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    drop_last = len(train_ds) > config.batch_size  # a single short batch is still a batch
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        train_ds,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=drop_last,
        generator=generator,
        num_workers=config.num_workers,
    )
    steps_per_epoch = len(loader)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(config.warmup_epochs * steps_per_epoch, total_steps)
    augment_generator = torch.Generator().manual_seed(config.seed + 1)

    def run_epoch(epoch: checkpoints.Epoch) -> dict[str, Any]:
        loss_sum = torch.zeros((), device=device)
        for images, labels, _ in loader:
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine_lr(
                    epoch.step, group["peak_lr"], warmup_steps, total_steps
                )
            images, labels = images.to(device), torch.as_tensor(labels).to(device)
            if config.augment:
                images = random_resized_crop(
                    images, images.shape[-1], (config.min_scale, 1.0), generator=augment_generator
                )
            inputs = classifier.normalize(images)
            if train_transform is not None:
                inputs = train_transform(inputs)
            loss = F.cross_entropy(classifier(inputs), labels)
            checkpoints.optimizer_step(optimizer, loss)
            loss_sum += loss.detach()
            epoch.advance()
        # The backbone's and the head's learning rates at the epoch's last step.
        rates = [group["lr"] for group in optimizer.param_groups]
        return {"loss": float(loss_sum) / steps_per_epoch, "lr": rates}

    history = checkpoints.train_epochs(
        run_epoch,
        FINETUNE_CHECKPOINTS,
        classifier,
        optimizer,
        config,
        steps_per_epoch=steps_per_epoch,
        checkpoint=checkpoint,
        extra=_Generators({"batches": generator, "augment": augment_generator}),
        desc="finetune",
    )
    classifier.eval()
    accuracy = evaluate_classifier(
        classifier, test_ds, config.batch_size, device, transform=test_transform
    )
    return classifier, {
        "test_accuracy": accuracy,
        "train_loss": [record["loss"] for record in history],
        "num_classes": num_classes,
    }


@dataclass
class _Generators:
    """Generators drawn on across epochs (:class:`~monoscope.checkpoints.ExtraState`)."""

    generators: dict[str, torch.Generator]

    def save(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {name: generator.get_state() for name, generator in self.generators.items()}, {}

    def load(self, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        for name, generator in self.generators.items():
            generator.set_state(tensors[name])
