"""Contrastive pretraining (SimCLR or NCL), resumable from a safetensors checkpoint.

One step: a batch of images in ``[0, 1]`` -> two SimCLR views -> normalise -> backbone
-> projector -> non-negative map -> InfoNCE. Both views go through the network in one
forward pass, so batch norm sees all ``2B`` images.

Reproducibility and resumption: the model is initialised from ``seed`` alone, and every
epoch draws its batch order and its augmentations from two generators seeded from
``(seed, epoch)``. The state at an epoch boundary is therefore just the model, the
optimizer, the step counter and the history: a run resumed from a checkpoint continues
with exactly the numbers an uninterrupted run would have used, and ends with the same
weights (bit for bit on CPU).

The epoch loop, its checkpoints (written atomically after every epoch) and the model
file are those of :mod:`monoscope.checkpoints`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset

from monoscope import checkpoints
from monoscope.config import RecordConfig, at_least, check_fields, in_range, one_of
from monoscope.contrastive.augment import AugmentConfig, two_views
from monoscope.contrastive.losses import info_nce
from monoscope.contrastive.models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    NONNEG_MAPS,
    ContrastiveModel,
    build_contrastive_model,
)

log = logging.getLogger(__name__)

METHODS = ("simclr", "ncl")
OPTIMIZERS = ("sgd", "adam")
DEFAULT_NONNEG = {"simclr": "none", "ncl": "relu_gelu_grad"}
PRETRAINED_KIND = "contrastive_pretrained_model"
# A resume may change only what does not change the numbers: the total number of epochs
# sets the learning-rate schedule, so it must stay.
CHECKPOINTS = checkpoints.CheckpointKind(
    "contrastive_pretrain_checkpoint", resumable_keys=("num_workers",)
)

# Stream ids that keep the per-epoch generators of shuffling and augmentation apart.
_SHUFFLE_STREAM, _AUGMENT_STREAM = 0, 1


@dataclass(frozen=True)
class ProjectorConfig:
    """The projection head: Linear, (BatchNorm), ReLU, Linear.

    Parameters
    ----------
    hidden_dim : width of the hidden layer.
    out_dim : dimension of the output, where InfoNCE (and NCL's map) act.
    batch_norm : BatchNorm after the hidden layer.
    """

    hidden_dim: int = 2048
    out_dim: int = 256
    batch_norm: bool = True

    def __post_init__(self) -> None:
        check_fields(self, ("hidden_dim out_dim", "positive"), section="pretrain.projector")


@dataclass(frozen=True)
class PretrainConfig(RecordConfig):
    """Options of contrastive pretraining.

    Parameters
    ----------
    method : ``simclr`` (no non-negative map) or ``ncl`` (non-negative contrastive).
    nonneg : the non-negative map, one of ``none``, ``relu``, ``relu_gelu_grad``;
        ``None`` picks the method's default (``none`` for SimCLR, ``relu_gelu_grad``
        for NCL, as on CIFAR in the paper). SimCLR requires ``none`` and NCL a
        non-negative map.
    temperature : InfoNCE temperature.
    epochs, batch_size : length of training; the last incomplete batch of an epoch
        is dropped (a batch of one would break batch norm and has no negatives).
    lr, optimizer, momentum, weight_decay : ``sgd`` (with momentum) or ``adam``. NCL
        trains with LARS at lr 0.4 and weight decay 1e-4 for batch 256; plain SGD with
        momentum at those values is the LARS-free stand-in used here.
    warmup_epochs : linear warm-up of the learning rate before the cosine decay to 0.
    projector : the projection head (:class:`ProjectorConfig`).
    cifar_stem : 3x3 stride-1 first convolution and no max pool (small images).
    backbone_width : first-stage channels of the ResNet-18; 64 is the real network,
        smaller widths are for CPU demos.
    mean, std : input normalisation statistics (CIFAR-10's by default).
    augment : the SimCLR view distribution; ``augment.crop_size`` is the training
        resolution.
    num_workers : DataLoader worker processes (batch order does not depend on it).
    seed : seeds initialisation, batch order and augmentation.
    """

    section: ClassVar[str] = "pretrain"

    method: str = "ncl"
    nonneg: str | None = None
    temperature: float = 0.2
    epochs: int = 200
    batch_size: int = 256
    lr: float = 0.4
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 10
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    cifar_stem: bool = True
    backbone_width: int = 64
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, ("method", one_of(METHODS)))
        if self.nonneg is None:
            # Frozen dataclass: the resolved default is stored so that a saved config
            # says which map was used.
            object.__setattr__(self, "nonneg", DEFAULT_NONNEG[self.method])
        check_fields(self, ("nonneg", one_of(NONNEG_MAPS)))
        if self.method == "simclr" and self.nonneg != "none":
            raise ValueError(
                f"pretrain.nonneg must be 'none' for method 'simclr', got '{self.nonneg}' "
                "(a non-negative map makes it NCL: set method: ncl)"
            )
        if self.method == "ncl" and self.nonneg == "none":
            raise ValueError("pretrain.nonneg must be 'relu' or 'relu_gelu_grad' for method 'ncl'")
        check_fields(
            self,
            ("optimizer", one_of(OPTIMIZERS)),
            ("temperature lr", "positive"),
            ("epochs backbone_width", "positive"),
            ("batch_size", at_least(2, "InfoNCE needs negatives")),
            ("momentum", in_range(0, 1, "[)")),
            ("weight_decay warmup_epochs num_workers", ">= 0"),
        )
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("pretrain.mean and pretrain.std need 3 values each, std positive")
        for name, kind in (("augment", AugmentConfig), ("projector", ProjectorConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(
                    f"pretrain.{name} must be a {kind.__name__}; build the config from a "
                    "mapping with monoscope.config.from_mapping, which builds the nested groups"
                )


def build_model(config: PretrainConfig) -> ContrastiveModel:
    """The (randomly initialised) network that ``config`` trains."""
    return build_contrastive_model(
        nonneg=config.nonneg,
        cifar_stem=config.cifar_stem,
        hidden_dim=config.projector.hidden_dim,
        out_dim=config.projector.out_dim,
        projector_bn=config.projector.batch_norm,
        mean=config.mean,
        std=config.std,
        width=config.backbone_width,
    )


def make_optimizer(model: torch.nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or Adam over all parameters, with ``config``'s weight decay."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def warmup_cosine_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine decay to 0.

    Parameters
    ----------
    step : int
        Optimisation step about to be taken.
    base_lr : float
        Peak learning rate.
    warmup_steps, total_steps : int
        Length of the warm-up and of the whole schedule.

    Returns
    -------
    float
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- files


# save_pretrained(path, model, config, history) writes a trained model with the config
# that rebuilds it; load_pretrained(path, device) returns (model in eval mode, config,
# history) from that file or from a training checkpoint.
PRETRAINED_FILES = checkpoints.TrainedModelFormat(
    PRETRAINED_KIND,
    CHECKPOINTS,
    PretrainConfig,
    lambda config, record: build_model(config),
    "pretrained contrastive model",
    "pretrain / save_pretrained",
)
save_pretrained = PRETRAINED_FILES.save
load_pretrained = PRETRAINED_FILES.load


# --------------------------------------------------------------------------- training


def pretrain(
    dataset: Dataset,
    config: PretrainConfig,
    device: torch.device | str = "cpu",
    checkpoint: str | os.PathLike | None = None,
) -> tuple[ContrastiveModel, list[dict[str, Any]]]:
    """Train a contrastive model on ``dataset`` (labels are ignored).

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Yields ``(image, label, sample_id)`` with images ``[3, H, W]`` in ``[0, 1]``.
    config : PretrainConfig
        What to train, and how.
    device : torch.device or str
        Where to train.
    checkpoint : path-like, optional
        Training state file. When it exists training resumes from it (its config must
        equal ``config``); it is rewritten after every epoch.

    Returns
    -------
    tuple
        The model (eval mode, on ``device``) and the history: one record per epoch
        with ``epoch``, ``loss`` (mean over the epoch's steps), ``lr`` (at the last
        step) and ``seconds``.
    """
    device = torch.device(device)
    steps_per_epoch = len(dataset) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"data set has {len(dataset)} samples, fewer than pretrain.batch_size "
            f"({config.batch_size}); no complete batch"
        )
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(config.warmup_epochs * steps_per_epoch, total_steps)

    # Initialisation from the seed alone, without disturbing the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config)
    model.to(device)
    optimizer = make_optimizer(model, config)

    def run_epoch(epoch: checkpoints.Epoch) -> dict[str, Any]:
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=True,
            drop_last=True,
            generator=epoch.generator(_SHUFFLE_STREAM),
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )
        augment_generator = epoch.generator(_AUGMENT_STREAM)
        # Summed on the device and read once per epoch: a .item() per step would
        # synchronise the GPU every step.
        loss_sum = torch.zeros((), device=device)
        lr = config.lr
        for images, _labels, _ids in loader:
            lr = warmup_cosine_lr(epoch.step, config.lr, warmup_steps, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(device, non_blocking=True)
            view_a, view_b = two_views(images, config.augment, augment_generator)
            embeddings = model.embed(model.normalize(torch.cat([view_a, view_b])))
            z_a, z_b = embeddings.chunk(2)
            loss = info_nce(z_a, z_b, config.temperature)
            checkpoints.optimizer_step(optimizer, loss)
            loss_sum += loss.detach()
            epoch.advance()
        return {"loss": float(loss_sum) / steps_per_epoch, "lr": lr}

    history = PRETRAINED_FILES.train_epochs(
        run_epoch,
        model,
        optimizer,
        config,
        steps_per_epoch=steps_per_epoch,
        checkpoint=checkpoint,
        desc=f"pretrain {config.method}",
        diverged_hint="lower pretrain.lr or raise pretrain.warmup_epochs",
    )
    return model.eval(), history
