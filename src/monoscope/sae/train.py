"""Training an SAE on a store of activation vectors: seeded, resumable, with resampling.

One step is: loss on a batch, ``backward``, remove the gradient component along each
decoder column, Adam step, renormalise the decoder columns, record which features fired.
Every ``resample.every`` steps the features that fired (almost) never during the last
``resample.window`` steps are resampled (:mod:`monoscope.sae.resample`).

Reproducibility: parameter initialisation uses a forked global generator seeded with
``seed``, and every other random choice (the shuffle seed of each epoch, the samples for
the decoder-bias initialisation and for resampling) comes from one CPU generator seeded
with ``seed``. On the CPU the same config and store therefore give identical weights.
The epoch loop is :func:`monoscope.checkpoints.train_epochs`: a checkpoint written after
every epoch holds the model, Adam's state, the step and the history, and (:class:`TrainState`)
that generator's state, the resampling window counts and the resamplings, so a resumed run
ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from monoscope.checkpoints import CheckpointKind, Epoch, train_epochs
from monoscope.config import Requirement, at_least, check_fields, in_range, one_of
from monoscope.sae.base import (
    DECODER_BIAS_INITS,
    INIT_METHODS,
    SparseAutoencoder,
    build_sae,
    sae_to_tensors,
    vector_variants,
)
from monoscope.sae.resample import resample_dead_features
from monoscope.sae.store import VectorStore, draw_samples

log = logging.getLogger(__name__)

# A resume may ask for more epochs: they continue the same run (nothing else depends
# on the total length).
CHECKPOINTS = CheckpointKind("sae_train_checkpoint", resumable_keys=("epochs",))


@dataclass(frozen=True)
class ResampleConfig:
    """Dead-feature resampling (Bricken et al. 2023), meant for the ``l1`` variant.

    Parameters
    ----------
    every : steps between resamplings; 0 turns resampling off (``topk`` usually relies
        on its auxiliary loss instead).
    window : the steps before each resampling over which firing is counted; 0 means
        ``every``. At most ``every``, so each window starts after the previous
        resampling and a revived feature gets a whole window.
    samples : inputs whose reconstruction error weights the draws.
    dead_threshold : a feature is resampled when its firing frequency (fraction of the
        window's samples on which its code is nonzero) is below this. The default 1e-7
        means "never fired" for any window shorter than ten million samples; raise it
        (e.g. 1e-5) to also revive features that fire almost never.
    """

    every: int = 0
    window: int = 0
    samples: int = 4096
    dead_threshold: float = 1e-7

    def __post_init__(self) -> None:
        window = Requirement(
            "between 0 and every",
            lambda value: value >= 0 and (self.every == 0 or value <= self.every),
        )
        check_fields(
            self,
            ("every", at_least(0, "0 turns resampling off")),
            ("window", window),
            ("samples", "positive"),
            ("dead_threshold", in_range(0, 1, "(]")),
            section="sae.resample",
        )

    @property
    def steps(self) -> int:
        """The resampling window in steps (``window`` with 0 resolved)."""
        return self.window or self.every


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
    resample : dead-feature resampling (:class:`ResampleConfig`).
    """

    section: ClassVar[str] = "sae"

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
    resample: ResampleConfig = field(default_factory=ResampleConfig)

    def __post_init__(self) -> None:
        check_fields(
            self,
            ("variant", one_of(vector_variants())),
            ("expansion k dead_tokens init_samples", "positive"),
            ("l1_coefficient aux_coef seed", ">= 0"),
            ("k_aux", "positive or null"),
            ("init", one_of(INIT_METHODS)),
            ("decoder_bias_init", one_of(DECODER_BIAS_INITS)),
            ("lr", "positive and finite"),
            ("batch_size epochs", "positive"),
            section="sae",
        )
        if not isinstance(self.resample, ResampleConfig):
            raise ValueError("sae.resample must be a ResampleConfig (build it with from_mapping)")

    def features_for(self, input_dim: int) -> int:
        """K for inputs of dimension ``input_dim``."""
        return max(1, round(self.expansion * input_dim))


@dataclass
class TrainState:
    """What SAE training carries across epochs besides the model and Adam: the
    generator of every random choice after initialisation, the resampling window's
    counts (``window_fired`` per feature, over ``window_samples`` samples) and the
    resamplings so far. Checkpointed with them (an
    :class:`~monoscope.checkpoints.ExtraState`)."""

    sae: SparseAutoencoder
    generator: torch.Generator
    window_fired: torch.Tensor
    window_samples: int = 0
    resampled: list[dict[str, Any]] = field(default_factory=list)

    def save(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        _, sae_record = sae_to_tensors(self.sae)
        tensors = {"generator": self.generator.get_state(), "window_fired": self.window_fired}
        record = {
            "window_samples": self.window_samples,
            "resampled": self.resampled,
            "sae": sae_record,
        }
        return tensors, record

    def load(self, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        _, expected = sae_to_tensors(self.sae)
        if record["sae"] != json.loads(json.dumps(expected)):
            raise ValueError(f"the checkpoint holds a different SAE: {record['sae']}")
        self.generator.set_state(tensors["generator"])
        self.window_fired = tensors["window_fired"].to(self.sae.decoder_bias.device)
        self.window_samples = int(record["window_samples"])
        self.resampled = list(record["resampled"])


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
        sae, generator, torch.zeros(sae.num_features, dtype=torch.int64, device=device)
    )
    history = train_epochs(
        lambda epoch: _train_epoch(epoch, sae, optimizer, store, config, state),
        CHECKPOINTS,
        sae,
        optimizer,
        config,
        steps_per_epoch=-(-store.num_samples // config.batch_size),
        checkpoint=checkpoint,
        extra=state,
        desc=f"sae {config.variant}",
    )
    return sae.eval(), {"epochs": history, "resampled": state.resampled}


def _train_epoch(
    epoch: Epoch,
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    store: VectorStore,
    config: SAEConfig,
    state: TrainState,
) -> dict[str, Any]:
    """One pass over the store; updates ``state`` and returns the epoch's metrics."""
    device = sae.decoder_bias.device
    sums: dict[str, float] = defaultdict(float)
    seen = 0
    fired_in_epoch = torch.zeros(sae.num_features, dtype=torch.bool, device=device)
    generator = state.generator
    resample = config.resample
    for batch in store.iter_batches(config.batch_size, shuffle=True, seed=_draw_seed(generator)):
        x = batch.to(device=device, dtype=torch.float32)
        # The window of the resampling after step R*m covers steps R*m - W + 1 .. R*m.
        if resample.every and (epoch.step + resample.steps) % resample.every == 0:
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
        epoch.advance()
        seen += len(x)
        for key, value in terms.items():
            sums[key] += float(value.detach()) * len(x)

        if resample.every and epoch.step % resample.every == 0:
            frequency = state.window_fired.double() / max(state.window_samples, 1)
            dead = frequency < resample.dead_threshold
            if bool(dead.any()):
                inputs = draw_samples(store, resample.samples, seed=_draw_seed(generator))
                indices = resample_dead_features(sae, optimizer, dead, inputs, generator)
                state.resampled.append({"step": epoch.step, "features": indices.tolist()})
                log.info("step %d: resampled %d dead features", epoch.step, len(indices))

    metrics: dict[str, Any] = {key: total / max(seen, 1) for key, total in sorted(sums.items())}
    metrics.update(steps=epoch.step, dead_fraction=float((~fired_in_epoch).float().mean()))
    return metrics


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
