"""One way to train and save: the resumable epoch loop, its checkpoints, model files.

Every trainer (the demo network, contrastive pretraining and finetuning, the base
autoencoders, the orbit SAEs, the SAEs) runs :func:`train_epochs`: it resumes from a
checkpoint when one exists and was written with a compatible config, runs the remaining
epochs (each may draw from generators seeded by ``(seed, epoch, stream)``,
:func:`epoch_generator`), records each epoch with its timing, and rewrites the
checkpoint atomically after every epoch. A trainer that carries more state across
epochs than the model and the optimizer (a persistent generator, a learning-rate
scheduler, resampling counts) passes an :class:`ExtraState`. A resumed run therefore
ends with the same weights as an uninterrupted one (bit for bit on CPU).

Files (safetensors, nothing pickled; the JSON record is :func:`monoscope.io.save_tensors`'s
metadata):

* a model file (:func:`save_model_file`; :func:`load_model_file` rebuilds the model,
  :func:`read_model_file` reads its tensors and record): tensors
  ``model/<name>``; record ``kind``, ``config`` (the training config), ``history`` and
  the entries that rebuild the model (e.g. an image size, constructor arguments);
* a checkpoint (:func:`save_checkpoint`, :func:`load_checkpoint`): the same, plus
  tensors ``optimizer/<param index>/<state name>`` and ``extra/<name>``, and record
  entries ``epoch``, ``step``, ``optimizer_param_groups`` and ``extra``. A model loader
  given the checkpoint's kind reads an interrupted run's model alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from tqdm import tqdm

from monoscope.io import load_tensors, save_tensors
from monoscope.logs import progress_kwargs

log = logging.getLogger(__name__)

Tensors = dict[str, torch.Tensor]
Record = dict[str, Any]


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch, stream)`` alone.

    ``SeedSequence`` mixes the numbers, so neighbouring seeds or epochs do not give
    correlated streams.
    """
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def split_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> Tensors:
    """The entries of ``tensors`` under ``prefix``, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def config_record(config: Any) -> Record:
    """The JSON record of a dataclass config (through JSON, so it compares equal to the
    copy read back from a file)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


@dataclass(frozen=True)
class CheckpointKind:
    """A trainer's checkpoints: the ``kind`` in their record, and the config keys that a
    resume may change (keys that do not change the numbers of the epochs already run,
    such as the total number of epochs when no schedule depends on it)."""

    name: str
    resumable_keys: tuple[str, ...] = ("epochs",)


class ExtraState(Protocol):
    """State a trainer carries across epochs besides the model and the optimizer."""

    def save(self) -> tuple[Tensors, Record]:
        """Tensors and a JSON record to put in the checkpoint."""
        ...

    def load(self, tensors: Tensors, record: Record) -> None:
        """Restore from what :meth:`save` wrote; called after the model and optimizer are
        restored, so it may also check them (raise ValueError to refuse the checkpoint)."""
        ...


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | os.PathLike,
    kind: CheckpointKind,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Any,
    epoch: int,
    step: int,
    history: list[Record],
    extra: ExtraState | None = None,
    rebuild: Mapping[str, Any] | None = None,
) -> None:
    """Write the state after ``epoch`` completed epochs and ``step`` steps, atomically.

    ``config`` is the run's dataclass config (a resume with an incompatible one is
    refused); ``rebuild`` adds record entries that rebuild the model.
    """
    tensors = {f"model/{name}": value for name, value in model.state_dict().items()}
    state = optimizer.state_dict()
    for index, slots in state["state"].items():
        for name, value in slots.items():
            # Adam and SGD keep only tensors (moments, step); anything else would be lost.
            if not torch.is_tensor(value):
                raise TypeError(f"optimizer state {name!r} is not a tensor; cannot checkpoint it")
            tensors[f"optimizer/{index}/{name}"] = value
    extra_record: Record = {}
    if extra is not None:
        extra_tensors, extra_record = extra.save()
        tensors.update({f"extra/{name}": value for name, value in extra_tensors.items()})
    record = {
        **dict(rebuild or {}),
        "kind": kind.name,
        "config": config_record(config),
        "epoch": epoch,
        "step": step,
        "history": history,
        "optimizer_param_groups": state["param_groups"],
        "extra": extra_record,
    }
    save_tensors(path, tensors, record)


def _check_resumable(path: Path, record: Record, kind: CheckpointKind, config: Any) -> None:
    """Raise ValueError unless ``record`` is a ``kind`` checkpoint that ``config`` resumes."""
    if record.get("kind") != kind.name:
        raise ValueError(f"{path} is not a {kind.name} file (kind {record.get('kind')!r})")
    saved, current = record.get("config", {}), config_record(config)
    keys = (set(saved) | set(current)) - set(kind.resumable_keys)
    differing = sorted(key for key in keys if saved.get(key) != current.get(key))
    if differing:
        raise ValueError(
            f"checkpoint {path} was written by a run with a different config "
            f"(keys {differing}); resume with the same config or delete the checkpoint"
        )
    epochs = current.get("epochs", record["epoch"])
    if int(record["epoch"]) > int(epochs):
        raise ValueError(
            f"checkpoint {path} is after epoch {record['epoch']}, beyond the configured "
            f"{epochs} epochs"
        )


def checkpoint_resumable(path: str | os.PathLike, kind: CheckpointKind, config: Any) -> bool:
    """Whether ``path`` holds a ``kind`` checkpoint that a run of ``config`` resumes.

    A workflow job that reruns because its options changed finds the checkpoint of the
    old options; it must start afresh instead of failing in :func:`load_checkpoint`.
    """
    try:
        _, record = load_tensors(path)
        _check_resumable(Path(path), record, kind, config)
    except (ValueError, KeyError, OSError, SafetensorError):  # absent, stale or not ours
        return False
    return True


def load_checkpoint(
    path: str | os.PathLike,
    kind: CheckpointKind,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Any,
    extra: ExtraState | None = None,
) -> tuple[int, int, list[Record]]:
    """Restore ``model``, ``optimizer`` and ``extra`` in place; returns
    ``(completed epochs, completed steps, history)``.

    Raises ValueError when the file is not a ``kind`` checkpoint, was written with a
    config that differs in a key other than ``kind.resumable_keys``, or is after more
    epochs than ``config`` asks for.
    """
    path = Path(path)
    tensors, record = load_tensors(path)
    _check_resumable(path, record, kind, config)
    model.load_state_dict(split_prefix(tensors, "model/"))
    slots: dict[int, Tensors] = {}
    for key, value in split_prefix(tensors, "optimizer/").items():
        index, name = key.split("/", 1)
        slots.setdefault(int(index), {})[name] = value
    groups = [
        # JSON turned tuples (Adam's betas) into lists; the optimizer expects tuples.
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in record["optimizer_param_groups"]
    ]
    optimizer.load_state_dict({"state": slots, "param_groups": groups})
    if extra is not None:
        extra.load(split_prefix(tensors, "extra/"), record.get("extra", {}))
    return int(record["epoch"]), int(record["step"]), list(record["history"])


# --------------------------------------------------------------------------- the loop


@dataclass
class Epoch:
    """One epoch of :func:`train_epochs`, handed to the trainer's epoch function.

    ``index`` is 0-based; ``step`` counts the optimisation steps of the whole run so far
    (the step about to be taken, for a schedule); call :meth:`advance` after each step.
    """

    index: int
    step: int
    seed: int
    bar: tqdm

    def generator(self, stream: int) -> torch.Generator:
        """This epoch's generator of ``stream`` (:func:`epoch_generator`)."""
        return epoch_generator(self.seed, self.index, stream)

    def advance(self) -> None:
        """Count one optimisation step (and move the progress bar)."""
        self.step += 1
        self.bar.update(1)


def train_epochs(
    run_epoch: Callable[[Epoch], Record],
    kind: CheckpointKind,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Any,
    *,
    steps_per_epoch: int,
    checkpoint: str | os.PathLike | None = None,
    extra: ExtraState | None = None,
    rebuild: Mapping[str, Any] | None = None,
    desc: str = "train",
    progress: bool = True,
    diverged_hint: str | None = None,
) -> list[Record]:
    """Run the epochs of a training run, resuming from and rewriting ``checkpoint``.

    Parameters
    ----------
    run_epoch : trains one epoch (the model is in train mode) and returns its metrics;
        the epoch's record is ``{"epoch": index + 1, **metrics, "seconds": ...}``.
    kind : the checkpoints' kind and resumable config keys.
    model, optimizer : restored from and saved to the checkpoint.
    config : the run's dataclass config, recorded in the checkpoint; its ``epochs`` is the
        length of the run and its ``seed`` that of :meth:`Epoch.generator`.
    steps_per_epoch : optimisation steps of one epoch; the progress bar counts steps, and
        a checkpoint whose step count disagrees (another data set) is refused.
    checkpoint : a file to resume from when it exists, rewritten after every epoch.
    extra : more state to checkpoint and restore.
    rebuild : record entries that rebuild the model from the checkpoint.
    desc, progress : the progress bar's label; whether to show it.
    diverged_hint : when given, a non-finite ``loss`` metric raises FloatingPointError
        with this advice.

    Returns
    -------
    The history: one record per epoch of the whole run (those before a resume included).
    """
    epochs, seed = int(config.epochs), int(config.seed)
    start_epoch, step, history = 0, 0, []
    if checkpoint is not None and Path(checkpoint).exists():
        start_epoch, step, history = load_checkpoint(
            checkpoint, kind, model, optimizer, config, extra
        )
        if step != start_epoch * steps_per_epoch:
            raise ValueError(
                f"checkpoint {checkpoint} has {step} steps for {start_epoch} epochs, but this "
                f"data set gives {steps_per_epoch} steps per epoch; is it the same data set?"
            )
        log.info("%s: resuming from %s after epoch %d", desc, checkpoint, start_epoch)
    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=step,
        desc=desc,
        unit="step",
        disable=not progress,
        **progress_kwargs(),
    )
    with bar:
        for index in range(start_epoch, epochs):
            started = time.perf_counter()
            model.train()
            epoch = Epoch(index, step, seed, bar)
            metrics = run_epoch(epoch)
            step = epoch.step
            loss = metrics.get("loss")
            if diverged_hint is not None and loss is not None and not math.isfinite(loss):
                raise FloatingPointError(
                    f"{desc} diverged in epoch {index + 1} (loss {loss}); {diverged_hint}"
                )
            record = {"epoch": index + 1, **metrics, "seconds": time.perf_counter() - started}
            history.append(record)
            shown = {
                key: f"{metrics[key]:.4g}" for key in ("loss", "dead_fraction") if key in metrics
            }
            bar.set_postfix(shown)
            log.info(
                "%s epoch %d/%d: %s",
                desc,
                index + 1,
                epochs,
                ", ".join(
                    f"{key} {value:.5g}"
                    for key, value in metrics.items()
                    if isinstance(value, float)
                ),
            )
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint,
                    kind,
                    model,
                    optimizer,
                    config,
                    index + 1,
                    step,
                    history,
                    extra,
                    rebuild,
                )
    return history


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One gradient step on ``loss``: clear the gradients, backpropagate, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# --------------------------------------------------------------------------- model files


def save_model_file(
    path: str | os.PathLike, kind: str, model: torch.nn.Module, record: Mapping[str, Any]
) -> None:
    """Write a trained model: tensors ``model/<name>``, record ``kind`` and ``record``.

    ``record`` holds ``config`` (the training config's record), ``history`` and the
    entries that rebuild the model.
    """
    missing = sorted({"config", "history"} - set(record))
    if missing:
        raise ValueError(f"a model file's record needs {missing}")
    tensors = {f"model/{name}": value for name, value in model.state_dict().items()}
    save_tensors(path, tensors, {**dict(record), "kind": kind})


def read_model_file(
    path: str | os.PathLike, kinds: Iterable[str], what: str, written_by: str
) -> tuple[Tensors, Record]:
    """The model state dict and the record of a file of one of ``kinds`` (model files
    and checkpoints alike).

    Raises FileNotFoundError naming the path and what writes it (``written_by``), and
    ValueError for a file of another kind.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path} (written by {written_by})")
    tensors, record = load_tensors(path)
    if record.get("kind") not in tuple(kinds):
        if record.get("kind") is None:
            # Files written before the one model-file format (or by another tool) carry no
            # kind: say how to regenerate them instead of only what is missing.
            raise ValueError(
                f"{path} holds no {what}: it has no 'kind' record, so it was written by an "
                f"older monoscope or another tool. Regenerate it ({written_by}), e.g. "
                "delete it and rerun the workflow"
            )
        raise ValueError(f"{path} holds no {what} (kind {record.get('kind')!r})")
    return split_prefix(tensors, "model/"), record


def load_model_file(
    path: str | os.PathLike,
    kinds: Iterable[str],
    build: Callable[[Record], torch.nn.Module],
    what: str,
    written_by: str,
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, Record]:
    """Rebuild the model of a file of one of ``kinds``: ``build(record)`` makes it (with
    the caller's global generator left untouched), the file's tensors fill it.

    Returns ``(model in eval mode on device, record)``; errors as :func:`read_model_file`.
    """
    state, record = read_model_file(path, kinds, what, written_by)
    with torch.random.fork_rng(devices=[]):
        model = build(record)
    model.load_state_dict(state)
    return model.to(device).eval(), record


@dataclass(frozen=True)
class TrainedModelFormat:
    """The file of one trainer's result: the model's tensors with the record of its
    dataclass config, its history and the entries that rebuild it.

    One instance per trainer gives its ``save`` and ``load``; ``load`` also reads the
    trainer's checkpoints (``checkpoint``), which hold the same record.

    Parameters
    ----------
    kind : the model file's kind.
    checkpoint : the trainer's checkpoint kind.
    config_type : the config dataclass (a :class:`~monoscope.config.RecordConfig`).
    build : ``build(config, record)`` makes the untrained model.
    what, written_by : the model and the function that writes it, for errors.
    entries : ``entries(model)``, further record entries that ``build`` needs.
    """

    kind: str
    checkpoint: CheckpointKind
    config_type: Any
    build: Callable[[Any, Record], torch.nn.Module]
    what: str
    written_by: str
    entries: Callable[[torch.nn.Module], Record] = lambda model: {}

    def save(
        self,
        path: str | os.PathLike,
        model: torch.nn.Module,
        config: Any,
        history: list[Record] | None = None,
    ) -> None:
        """Write ``model`` with its ``config`` and training ``history``."""
        record = {"config": config_record(config), "history": history or []}
        save_model_file(path, self.kind, model, record | self.entries(model))

    def load(
        self, path: str | os.PathLike, device: torch.device | str = "cpu"
    ) -> tuple[torch.nn.Module, Any, list[Record]]:
        """``(model in eval mode on device, config, history)`` of a file :meth:`save`
        wrote or of a training checkpoint."""
        configs = []

        def build(record: Record) -> torch.nn.Module:
            try:
                configs.append(self.config_type.from_dict(record["config"]))
            except (ValueError, TypeError) as error:
                # e.g. the flat keys of a file from before the config's option groups
                raise ValueError(
                    f"{path}: its {self.what} config does not fit this monoscope ({error}). "
                    f"Regenerate it ({self.written_by}), e.g. delete it and rerun the workflow"
                ) from None
            return self.build(configs[0], record)

        model, record = load_model_file(
            path, (self.kind, self.checkpoint.name), build, self.what, self.written_by, device
        )
        return model, configs[0], list(record.get("history", []))

    def train_epochs(
        self,
        run_epoch: Callable[[Epoch], Record],
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: Any,
        **options: Any,
    ) -> list[Record]:
        """:func:`train_epochs` with this format's checkpoint kind and, unless ``options``
        give ``rebuild``, this format's ``entries``, so that the trainer's checkpoints are
        files :meth:`load` reads."""
        options.setdefault("rebuild", self.entries(model))
        return train_epochs(run_epoch, self.checkpoint, model, optimizer, config, **options)
