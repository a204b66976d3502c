"""Training an SAE on a store of activation vectors: seeded, resumable, with resampling.

One step is: loss on a batch, ``backward``, remove the gradient component along each
decoder column, Adam step, renormalise the decoder columns, record which features fired.
Every ``resample_every`` steps the features that fired (almost) never during the last
``resample_window`` steps are resampled (:mod:`monoscope.sae.resample`).

Reproducibility: parameter initialisation uses a forked global generator seeded with
``seed``, and every other random choice (the shuffle seed of each epoch, the samples for
the decoder-bias initialisation and for resampling) comes from one CPU generator seeded
with ``seed``. On the CPU the same config and store therefore give identical weights.
A checkpoint written after every epoch holds the model, Adam's state, the step, the
resampling window counts, the history and that generator's state, so a resumed run ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from monoscope.io import load_tensors, save_tensors
from monoscope.logs import progress_kwargs
from monoscope.sae.base import (
    DECODER_BIAS_INITS,
    INIT_METHODS,
    SAE_VARIANTS,
    SparseAutoencoder,
    build_sae,
    sae_to_tensors,
)
from monoscope.sae.resample import resample_dead_features
from monoscope.sae.store import VectorStore, draw_samples

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "monoscope-sae-checkpoint"
CHECKPOINT_VERSION = 1
# Config keys that may change between a checkpoint and its resumption: more epochs
# continue the same run (nothing else depends on the total length).
RESUMABLE_CHANGES = ("epochs",)


@dataclass(frozen=True)
class SAEConfig:
    """Options of SAE training.

    Parameters
    ----------
    variant : a registered SAE variant (``l1``, ``topk``).
    expansion : features per input dimension; K = round(expansion * d).
    l1_coefficient : lambda of the ``l1`` variant.
    k, k_aux, aux_coef, dead_tokens, normalized_mse : of the ``topk`` variant (see
        :class:`monoscope.sae.topk.TopKSAE`; ``k_aux`` None means min(d // 2, K)).
    init : ``tied`` or ``random`` encoder initialisation.
    decoder_bias_init : ``geometric_median``, ``mean`` or ``zeros``: b_d from
        ``init_samples`` random samples of the store.
    lr : Adam's learning rate (constant).
    batch_size, epochs : samples per step; passes over the store.
    seed : seeds initialisation, batch order and resampling.
    resample_every : steps between dead-feature resamplings; 0 turns it off. Meant for
        ``l1``; ``topk`` usually relies on its auxiliary loss instead.
    resample_window : the steps before each resampling over which firing is counted;
        0 means ``resample_every``. At most ``resample_every``, so each window starts
        after the previous resampling and a revived feature gets a whole window.
    resample_samples : inputs whose reconstruction error weights the draws.
    dead_threshold : a feature is resampled when its firing frequency (fraction of the
        window's samples on which its code is nonzero) is below this. The default 1e-7
        means "never fired" for any window shorter than ten million samples; raise it
        (e.g. 1e-5) to also revive features that fire almost never.
    """

    variant: str = "l1"
    expansion: float = 8.0
    l1_coefficient: float = 1e-3
    k: int = 32
    k_aux: int | None = None
    aux_coef: float = 1 / 32
    dead_tokens: int = 100_000
    normalized_mse: bool = False
    init: str = "tied"
    decoder_bias_init: str = "geometric_median"
    init_samples: int = 4096
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 10
    seed: int = 0
    resample_every: int = 0
    resample_window: int = 0
    resample_samples: int = 4096
    dead_threshold: float = 1e-7

    def __post_init__(self) -> None:
        checks = (
            ("variant", self.variant in SAE_VARIANTS, f"one of {sorted(SAE_VARIANTS)}"),
            ("expansion", self.expansion > 0, "positive"),
            ("l1_coefficient", self.l1_coefficient >= 0, ">= 0"),
            ("k", self.k >= 1, "positive"),
            ("k_aux", self.k_aux is None or self.k_aux >= 1, "positive or null"),
            ("aux_coef", self.aux_coef >= 0, ">= 0"),
            ("dead_tokens", self.dead_tokens >= 1, "positive"),
            ("init", self.init in INIT_METHODS, f"one of {INIT_METHODS}"),
            (
                "decoder_bias_init",
                self.decoder_bias_init in DECODER_BIAS_INITS,
                f"one of {DECODER_BIAS_INITS}",
            ),
            ("init_samples", self.init_samples >= 1, "positive"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "positive and finite"),
            ("batch_size", self.batch_size >= 1, "positive"),
            ("epochs", self.epochs >= 1, "positive"),
            ("seed", self.seed >= 0, ">= 0"),
            ("resample_every", self.resample_every >= 0, ">= 0 (0 turns resampling off)"),
            (
                "resample_window",
                self.resample_window >= 0
                and (self.resample_every == 0 or self.resample_window <= self.resample_every),
                "between 0 and resample_every",
            ),
            ("resample_samples", self.resample_samples >= 1, "positive"),
            ("dead_threshold", 0 < self.dead_threshold <= 1, "in (0, 1]"),
        )
        for key, valid, requirement in checks:
            if not valid:
                raise ValueError(f"sae.{key} must be {requirement}, got {getattr(self, key)!r}")

    def features_for(self, input_dim: int) -> int:
        """K for inputs of dimension ``input_dim``."""
        return max(1, round(self.expansion * input_dim))

    @property
    def window(self) -> int:
        """The resampling window in steps (``resample_window`` with 0 resolved)."""
        return self.resample_window or self.resample_every


@dataclass
class TrainState:
    """What a checkpoint adds to the model and the optimiser.

    ``window_fired`` counts, per feature, the samples of the current resampling window
    on which it fired; ``window_samples`` the window's samples.
    """

    epoch: int
    step: int
    window_fired: torch.Tensor
    window_samples: int
    history: dict[str, list]


def train_sae(
    store: VectorStore,
    config: SAEConfig,
    device: torch.device | str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    sae: SparseAutoencoder | None = None,
) -> tuple[SparseAutoencoder, dict[str, list]]:
    """Train an SAE on ``store``; returns the model and its history.

    Parameters
    ----------
    store : any object with ``num_samples``, ``dim`` and
        ``iter_batches(batch_size, shuffle, seed)`` (:class:`~monoscope.sae.store.VectorStore`).
    config : the options.
    device : where to train.
    checkpoint : a file to write after every epoch, and to resume from when it exists
        (it must come from the same config, except for a larger ``epochs``).
    sae : a model to start from instead of a new one (copied, not changed; its b_d is
        kept). Its variant must be ``config.variant``.

    Returns
    -------
    ``(sae, history)``: the trained model (in eval mode, on ``device``) and
    ``{"epochs": [per-epoch means of the loss terms, dead_fraction (features that did
    not fire in the epoch), steps, seconds], "resampled": [{"step", "features"}]}``.
    """
    device = torch.device(device)
    if store.num_samples < 1 or store.dim < 1:
        raise ValueError("the store is empty")
    generator = torch.Generator().manual_seed(config.seed)
    if sae is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            sae = build_sae(config.variant, store.dim, config)
        if config.decoder_bias_init != "zeros":
            sample = draw_samples(store, config.init_samples, seed=_draw_seed(generator))
            sae.init_from_data(sample, config.decoder_bias_init)
    else:
        if sae.variant != config.variant or sae.input_dim != store.dim:
            raise ValueError(
                f"the initial SAE is '{sae.variant}' on {sae.input_dim}-d inputs; the config "
                f"asks for '{config.variant}' and the store has {store.dim}-d vectors"
            )
        sae = copy.deepcopy(sae)
    sae = sae.to(device).train()
    sae.normalize_decoder_()
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)
    state = TrainState(
        epoch=0,
        step=0,
        window_fired=torch.zeros(sae.num_features, dtype=torch.int64, device=device),
        window_samples=0,
        history={"epochs": [], "resampled": []},
    )
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, sae, optimizer, generator, config)
        log.info("resuming SAE training from %s after epoch %d", checkpoint, state.epoch)

    steps_per_epoch = -(-store.num_samples // config.batch_size)
    progress = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=state.step,
        desc=f"sae {config.variant}",
        unit="step",
        **progress_kwargs(),
    )
    with progress:
        while state.epoch < config.epochs:
            _train_epoch(sae, optimizer, store, config, state, generator, progress)
            if checkpoint is not None:
                save_checkpoint(checkpoint, sae, optimizer, generator, state, config)
    return sae.eval(), state.history


def _train_epoch(
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    store: VectorStore,
    config: SAEConfig,
    state: TrainState,
    generator: torch.Generator,
    progress: tqdm,
) -> None:
    """One pass over the store; updates ``state`` (epoch, step, window, history)."""
    device = sae.decoder.device
    started = time.perf_counter()
    sums: dict[str, float] = defaultdict(float)
    seen = 0
    fired_in_epoch = torch.zeros(sae.num_features, dtype=torch.bool, device=device)
    for batch in store.iter_batches(config.batch_size, shuffle=True, seed=_draw_seed(generator)):
        x = batch.to(device=device, dtype=torch.float32)
        # The window of the resampling after step R*m covers steps R*m - W + 1 .. R*m.
        if config.resample_every and (state.step + config.window) % config.resample_every == 0:
            state.window_fired.zero_()
            state.window_samples = 0
        terms, codes = sae.loss_and_codes(x)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        sae.remove_parallel_decoder_grad_()
        optimizer.step()
        sae.normalize_decoder_()

        codes = codes.detach()
        sae.record_firing_(codes)
        fired = codes != 0
        state.window_fired += fired.sum(dim=0)
        state.window_samples += len(x)
        fired_in_epoch |= fired.any(dim=0)
        state.step += 1
        seen += len(x)
        for key, value in terms.items():
            sums[key] += float(value.detach()) * len(x)

        if config.resample_every and state.step % config.resample_every == 0:
            frequency = state.window_fired.double() / max(state.window_samples, 1)
            dead = frequency < config.dead_threshold
            if bool(dead.any()):
                inputs = draw_samples(store, config.resample_samples, seed=_draw_seed(generator))
                indices = resample_dead_features(sae, optimizer, dead, inputs, generator)
                state.history["resampled"].append(
                    {"step": state.step, "features": indices.tolist()}
                )
                log.info("step %d: resampled %d dead features", state.step, len(indices))
        progress.update(1)

    state.epoch += 1
    record = {key: total / max(seen, 1) for key, total in sorted(sums.items())}
    record.update(
        epoch=state.epoch,
        steps=state.step,
        dead_fraction=float((~fired_in_epoch).float().mean()),
        seconds=time.perf_counter() - started,
    )
    state.history["epochs"].append(record)
    progress.set_postfix(loss=f"{record['loss']:.4g}", dead=f"{record['dead_fraction']:.2f}")
    log.info(
        "epoch %d: loss %.5g, mse %.5g, dead %.3f",
        state.epoch,
        record["loss"],
        record["mse"],
        record["dead_fraction"],
    )


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


# ---------------------------------------------------------------------- checkpoints


def _config_record(config: SAEConfig) -> dict[str, Any]:
    # Through JSON, so it compares equal to the copy read back from a checkpoint.
    return json.loads(json.dumps(dataclasses.asdict(config)))


def checkpoint_resumable(path: str | os.PathLike, config: SAEConfig) -> bool:
    """Whether the checkpoint at ``path`` exists and ``train_sae`` can resume it with ``config``.

    A workflow reruns training when the SAE's options change; a checkpoint of an
    interrupted run with other options is then stale, and the caller should delete it.
    """
    if not Path(path).exists():
        return False
    _, metadata = load_tensors(path)
    if "config" not in metadata or metadata.get("version") != CHECKPOINT_VERSION:
        return False
    saved, current = metadata["config"], _config_record(config)
    same = all(
        saved.get(key) == current.get(key)
        for key in set(saved) | set(current)
        if key not in RESUMABLE_CHANGES
    )
    return same and metadata["epoch"] <= config.epochs


def save_checkpoint(
    path: str | os.PathLike,
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: TrainState,
    config: SAEConfig,
) -> None:
    """Write everything a resumed run needs to one safetensors file, atomically.

    Tensors: ``sae/<state key>``, ``optimizer/<parameter name>/<state key>`` (Adam's
    moments), ``train/generator`` and ``train/window_fired``. Scalars (Adam's step
    counts, the epoch, the step, the history, the config) go to the metadata.
    """
    sae_tensors, sae_metadata = sae_to_tensors(sae)
    tensors = {f"sae/{key}": value for key, value in sae_tensors.items()}
    names = [name for name, _ in sae.named_parameters()]
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in optimizer.state_dict()["state"].items():
        name = names[index]
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                tensors[f"optimizer/{name}/{key}"] = value
            elif isinstance(value, torch.Tensor):
                dtype = str(value.dtype).removeprefix("torch.")
                scalars.setdefault(name, {})[key] = {"value": value.item(), "dtype": dtype}
            else:
                scalars.setdefault(name, {})[key] = {"value": value}
    tensors["train/generator"] = generator.get_state()
    tensors["train/window_fired"] = state.window_fired
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": _config_record(config),
        "sae": sae_metadata,
        "epoch": state.epoch,
        "step": state.step,
        "window_samples": state.window_samples,
        "optimizer_scalars": scalars,
        "history": state.history,
    }
    save_tensors(path, tensors, metadata=metadata)


def load_checkpoint(
    path: str | os.PathLike,
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: SAEConfig,
) -> TrainState:
    """Restore ``sae``, ``optimizer`` and ``generator`` in place; returns the train state.

    Raises ``ValueError`` when the checkpoint comes from another config (other than a
    smaller ``epochs``) or another model.
    """
    tensors, metadata = load_tensors(path)
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an SAE training checkpoint")
    if metadata.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {metadata.get('version')!r}")
    saved, current = metadata["config"], _config_record(config)
    changed = sorted(
        key
        for key in set(saved) | set(current)
        if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key)
    )
    if changed:
        raise ValueError(
            f"checkpoint {path} was written with other values of {changed}; "
            "delete it to start afresh"
        )
    if metadata["epoch"] > config.epochs:
        raise ValueError(
            f"checkpoint {path} is after epoch {metadata['epoch']}, "
            f"beyond the configured {config.epochs} epochs"
        )
    _, expected = sae_to_tensors(sae)
    if metadata["sae"] != json.loads(json.dumps(expected)):
        raise ValueError(f"checkpoint {path} holds a different SAE: {metadata['sae']}")

    sae.load_state_dict(
        {
            key.removeprefix("sae/"): value
            for key, value in tensors.items()
            if key.startswith("sae/")
        }
    )
    names = [name for name, _ in sae.named_parameters()]
    optimizer_state: dict[int, dict[str, Any]] = {}
    for index, name in enumerate(names):
        prefix = f"optimizer/{name}/"
        entry: dict[str, Any] = {
            key.removeprefix(prefix): value
            for key, value in tensors.items()
            if key.startswith(prefix)
        }
        for key, scalar in metadata["optimizer_scalars"].get(name, {}).items():
            if "dtype" in scalar:
                entry[key] = torch.tensor(scalar["value"], dtype=getattr(torch, scalar["dtype"]))
            else:
                entry[key] = scalar["value"]
        if entry:
            optimizer_state[index] = entry
    # Parameter groups (learning rate, betas) come from the config, which matched above.
    optimizer.load_state_dict(
        {"state": optimizer_state, "param_groups": optimizer.state_dict()["param_groups"]}
    )
    generator.set_state(tensors["train/generator"])
    return TrainState(
        epoch=int(metadata["epoch"]),
        step=int(metadata["step"]),
        window_fired=tensors["train/window_fired"].to(sae.decoder.device),
        window_samples=int(metadata["window_samples"]),
        history=metadata["history"],
    )
