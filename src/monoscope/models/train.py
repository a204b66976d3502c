"""Training the demo subject model and the demo judge (seeded, CPU-friendly)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from monoscope import checkpoints
from monoscope.data import ImageDataset
from monoscope.models.demo import DEMO_CHECKPOINT_KIND, DEMO_MODEL_KIND, DemoCNN
from monoscope.models.registry import DIGITS_MEAN, DIGITS_STD, SubjectModel

log = logging.getLogger(__name__)

# The number of epochs sets the one-cycle schedule, so a resume may not change it.
CHECKPOINTS = checkpoints.CheckpointKind(DEMO_CHECKPOINT_KIND, resumable_keys=())


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of a demo network.

    Parameters
    ----------
    widths : channels of layer1..layer4 (the last is the upper layer).
    label_groups : data set labels merged into one class each, e.g. ``[[0, 1], [2, 3]]``;
        empty means every label is its own class.
    epochs, batch_size, lr, weight_decay : AdamW with a cosine schedule.
    seed : seeds initialisation and batch order.
    """

    widths: Sequence[int] = (16, 32, 32, 8)
    label_groups: Sequence[Sequence[int]] = ()
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


def make_label_map(label_groups: Sequence[Sequence[int]], num_labels: int) -> torch.Tensor:
    """Data set label -> class index; every label must be in exactly one group."""
    if not label_groups:
        return torch.arange(num_labels)
    label_map = torch.full((num_labels,), -1, dtype=torch.int64)
    for group_index, group in enumerate(label_groups):
        for label in group:
            if not 0 <= label < num_labels:
                raise ValueError(f"label {label} in label_groups is not in 0..{num_labels - 1}")
            if label_map[label] >= 0:
                raise ValueError(f"label {label} appears in more than one of label_groups")
            label_map[label] = group_index
    if (label_map < 0).any():
        missing = torch.nonzero(label_map < 0).flatten().tolist()
        raise ValueError(f"labels {missing} are in none of label_groups")
    return label_map


def evaluate_accuracy(
    model: SubjectModel, dataset: ImageDataset, batch_size: int = 256, device: str = "cpu"
) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (labels mapped through its label map)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    correct = total = 0
    model.net.eval()
    with torch.inference_mode():
        for images, labels, _ in loader:
            images, labels = images.to(device), labels.to(device)
            prediction = model.net(model.normalize(images)).argmax(dim=1)
            correct += int((prediction == model.targets(labels)).sum())
            total += len(labels)
    return correct / max(total, 1)


def train_demo_cnn(
    train_set: ImageDataset,
    test_set: ImageDataset,
    config: TrainConfig,
    num_labels: int,
    device: torch.device | str = "cpu",
    checkpoint: str | os.PathLike | None = None,
) -> tuple[SubjectModel, dict]:
    """Train a :class:`DemoCNN`; returns the model and a metrics record.

    Deterministic on CPU for a fixed seed: the seed fixes initialisation and the batch
    order, and no worker processes are used. ``checkpoint`` is a file rewritten after
    every epoch and resumed from when it exists (same config; a resumed run ends with the
    same weights). The model's ``metadata`` is the record of its file
    (:func:`save_demo_model`): what rebuilds the network, the config and the history.
    """
    torch.manual_seed(config.seed)
    label_map = make_label_map(config.label_groups, num_labels)
    num_classes = int(label_map.max()) + 1
    net = DemoCNN(widths=config.widths, num_classes=num_classes).to(device)
    model = SubjectModel("demo_cnn", net, DIGITS_MEAN, DIGITS_STD, label_map=label_map)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * len(loader)
    )
    loss_fn = nn.CrossEntropyLoss()
    rebuild = {
        "widths": list(config.widths),
        "num_classes": num_classes,
        "label_map": label_map.tolist(),
        "mean": list(DIGITS_MEAN),
        "std": list(DIGITS_STD),
    }

    def run_epoch(epoch: checkpoints.Epoch) -> dict[str, Any]:
        running = 0.0
        for images, labels, _ in loader:
            images, labels = images.to(device), labels.to(device)
            loss = loss_fn(net(model.normalize(images)), model.targets(labels))
            checkpoints.optimizer_step(optimizer, loss)
            schedule.step()
            running += loss.item() * len(labels)
            epoch.advance()
        return {"loss": running / len(train_set)}

    start = time.perf_counter()
    history = checkpoints.train_epochs(
        run_epoch,
        CHECKPOINTS,
        net,
        optimizer,
        config,
        steps_per_epoch=len(loader),
        checkpoint=checkpoint,
        extra=_LoaderState(generator, schedule),
        rebuild=rebuild,
        desc="demo_cnn",
    )
    net.eval()
    metrics = {
        "train_accuracy": evaluate_accuracy(model, train_set, device=device),
        "test_accuracy": evaluate_accuracy(model, test_set, device=device),
        "train_loss": [record["loss"] for record in history],
        "num_classes": num_classes,
        "label_groups": [list(group) for group in config.label_groups],
        "seconds": time.perf_counter() - start,
    }
    log.info("test accuracy %.4f (%d classes)", metrics["test_accuracy"], num_classes)
    model.metadata = {**rebuild, "config": checkpoints.config_record(config), "history": history}
    return model, metrics


@dataclass
class _LoaderState:
    """The batch-order generator (drawn on by every epoch) and the learning-rate schedule
    (:class:`~monoscope.checkpoints.ExtraState`)."""

    generator: torch.Generator
    schedule: torch.optim.lr_scheduler.LRScheduler

    def save(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"generator": self.generator.get_state()}, {"schedule": self.schedule.state_dict()}

    def load(self, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        self.generator.set_state(tensors["generator"])
        self.schedule.load_state_dict(record["schedule"])


def save_demo_model(model: SubjectModel, path: str | os.PathLike) -> None:
    """Write a trained demo network (:func:`monoscope.checkpoints.save_model_file`); its
    record (``model.metadata``) rebuilds it on load."""
    checkpoints.save_model_file(path, DEMO_MODEL_KIND, model.net, model.metadata)
