"""The dictionary base shared by every SAE, the variant registry, and SAE files.

A sparse autoencoder (SAE) learns an overcomplete dictionary for activation vectors
``[..., d]``. Every variant is one composition of parts (:mod:`monoscope.sae.parts`)::

    pre   = encoder(x - b_d)             pre-activations [..., K] (b_d subtracted when
                                         ``pre_encoder_bias``); linear: W_e (x - b_d) + b_e
    f     = sparsifier(pre)              codes [..., K] (ReLU, TopK, ...)
    x_hat = W_d f + b_d                  W_d = dictionary() [d, K], b_d [d]

and the loss is the reconstruction error plus the sparsifier's weighted penalties. With
a ``free`` unit-norm dictionary the columns of W_d (the dictionary directions) keep unit
norm, so the size of a code is the size of its feature's contribution. Variants
(:class:`SparseAutoencoder` subclasses that choose the parts from their constructor
keywords) register under a name with :func:`register_sae` (``SAE_VARIANTS``, a
:class:`~monoscope.registry.Registry`) and are built with :func:`build_sae`.

An SAE file (:func:`save_sae`, :func:`load_sae`) is a safetensors model file
(:func:`monoscope.checkpoints.save_model_file`: tensors ``model/<state key>``) whose JSON
metadata ``sae`` holds the variant, the input dimension and the constructor keywords, so
the right class is rebuilt without unpickling anything; callers may add metadata of
their own (a training config, a history).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from monoscope.checkpoints import read_model_file, save_model_file
from monoscope.io import load_tensors
from monoscope.registry import Registry
from monoscope.sae.parts import Dictionary, Encoder, Sparsifier

INIT_METHODS = ("tied", "random")
DECODER_BIAS_INITS = ("geometric_median", "mean", "zeros")
FILE_FORMAT = "monoscope-sae"
# 2: parts as submodules (``encoding.*``, ``dictionary.*``), tensors under ``model/``.
FILE_VERSION = 2

SAE_VARIANTS: Registry[type[SparseAutoencoder]] = Registry("SAE variant")


class SparseAutoencoder(nn.Module):
    """The dictionary base: an encoder, a sparsifier and a dictionary (see the module
    docstring for the notation).

    Parameters
    ----------
    input_dim : d, the dimension of the activation vectors.
    encoder, sparsifier, dictionary : the parts (:mod:`monoscope.sae.parts`), built for
        ``input_dim`` and the same number of features K.
    init : ``tied`` (the encoder's rows start as the dictionary's columns, which starts
        every feature alive and aligned with its direction; needs a tieable encoder) or
        ``random`` (the encoder's own initialisation).
    pre_encoder_bias : subtract b_d from the input before encoding.
    normalized_mse : measure reconstruction as ``||x - x_hat||^2 / ||x||^2`` per sample
        (averaged over the batch) instead of ``||x - x_hat||^2``.

    Attributes
    ----------
    encoding, sparsifier, dictionary : the parts; ``dictionary()`` is W_d ``[d, K]``.
    decoder_bias : b_d ``[d]``.
    encoder, encoder_bias, decoder : shortcuts to W_e ``[K, in]``, b_e ``[K]`` and, for a
        free dictionary, the parameter W_d ``[d, K]``.
    samples_since_fired : int64 buffer ``[K]``, training samples seen since each feature
        last fired; the training loop updates it with :meth:`record_firing_`.

    A variant sets ``hyperparameters`` (its constructor keywords besides ``input_dim``,
    readable as attributes of the same names, which :attr:`config` records) and builds
    the parts in its constructor. Parameters start from the global generator: the
    dictionary's initialisation first, then the encoder's.
    """

    variant: ClassVar[str] = ""
    hyperparameters: ClassVar[tuple[str, ...]] = ()
    # What a batch is: ``vectors`` [B, d] (trained by :func:`monoscope.sae.train.train_sae`)
    # or ``orbits`` [B, n, d] (the orbit SAEs of :mod:`monoscope.equivariant.saes`).
    inputs: ClassVar[str] = "vectors"

    def __init__(
        self,
        input_dim: int,
        encoder: Encoder,
        sparsifier: Sparsifier,
        dictionary: Dictionary,
        init: str = "tied",
        pre_encoder_bias: bool = True,
        normalized_mse: bool = False,
    ) -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be positive, got {input_dim}")
        if init not in INIT_METHODS:
            raise ValueError(f"init must be one of {INIT_METHODS}, got '{init}'")
        if init == "tied" and not encoder.tieable:
            raise ValueError(f"a {type(encoder).__name__} cannot be tied to the dictionary")
        shapes = {(part.input_dim, part.num_features) for part in (encoder, sparsifier, dictionary)}
        if shapes != {(input_dim, dictionary.num_features)}:
            raise ValueError(f"the parts disagree on (input_dim, num_features): {shapes}")
        self.init = init
        self.pre_encoder_bias = bool(pre_encoder_bias)
        self.normalized_mse = bool(normalized_mse)
        self.encoding = encoder
        self.sparsifier = sparsifier
        self.dictionary = dictionary
        self.decoder_bias = nn.Parameter(torch.zeros(input_dim))
        num_features = dictionary.num_features
        self.register_buffer("samples_since_fired", torch.zeros(num_features, dtype=torch.int64))
        self.reset_parameters()

    # ------------------------------------------------------------------ shape and config

    @property
    def input_dim(self) -> int:
        return self.dictionary.input_dim

    @property
    def num_features(self) -> int:
        return self.dictionary.num_features

    @property
    def config(self) -> dict[str, Any]:
        """The constructor keywords (besides ``input_dim``); JSON-serialisable."""
        return {name: getattr(self, name) for name in self.hyperparameters}

    @property
    def encoder(self) -> nn.Parameter:
        """W_e, the encoder's (last) weight ``[K, in]``."""
        return self.encoding.weight

    @property
    def encoder_bias(self) -> nn.Parameter:
        """b_e ``[K]``."""
        return self.encoding.bias

    @property
    def decoder(self) -> nn.Parameter:
        """The parameter W_d ``[d, K]`` of a free dictionary (others compute W_d: use
        ``dictionary()``)."""
        return self.dictionary.weight

    @property
    def unit_decoder(self) -> bool:
        """Whether the dictionary keeps unit-norm columns."""
        return self.dictionary.unit_norm

    def reset_parameters(self) -> None:
        """Dictionary, then encoder (tied to W_d or its own), from the global generator;
        zero b_d and firing counts. Seed (or fork) the generator around construction."""
        with torch.no_grad():
            self.dictionary.reset_parameters()
            self.encoding.reset_parameters(self.dictionary() if self.init == "tied" else None)
            self.decoder_bias.zero_()
            self.samples_since_fired.zero_()

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, method: str = "geometric_median") -> None:
        """Set b_d from a sample ``x`` ``[n, d]`` of the data.

        The geometric median (as in Anthropic's and OpenAI's SAEs) is a robust centre:
        subtracting it before encoding lets the dictionary spend no features on the
        data's offset. ``mean`` is cheaper; ``zeros`` leaves b_d at zero.
        """
        if method not in DECODER_BIAS_INITS:
            raise ValueError(
                f"decoder_bias_init must be one of {DECODER_BIAS_INITS}, got '{method}'"
            )
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected data of shape [n, {self.input_dim}], got {list(x.shape)}")
        if method == "zeros":
            centre = torch.zeros(self.input_dim)
        elif method == "mean":
            centre = x.double().mean(dim=0)
        else:
            centre = geometric_median(x)
        self.decoder_bias.copy_(centre.to(self.decoder_bias))

    # ------------------------------------------------------------------ the model

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """encoder(x - b_d) (or encoder(x)), ``[..., K]``; linear: W_e (x - b_d) + b_e."""
        if self.pre_encoder_bias:
            x = x - self.decoder_bias
        return self.encoding(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[..., K]`` of inputs ``[..., d]``."""
        return self.sparsifier(self.pre_activations(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """x_hat = W_d f + b_d, ``[..., d]``."""
        return codes @ self.dictionary().T + self.decoder_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat, codes)``."""
        codes = self.encode(x)
        return self.decode(codes), codes

    def reconstruction_error(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ||x - x_hat||^2 (summed over dimensions), the seed's term;
        with ``normalized_mse`` each sample's error is divided by ||x||^2 (the loss of the
        SAE on frozen contrastive features, Beyond Interpretability, ICLR 2025, which
        makes the error scale-free)."""
        squared_error = (x - x_hat).pow(2).sum(dim=-1)
        if self.normalized_mse:
            squared_error = squared_error / x.pow(2).sum(dim=-1).clamp_min(1e-12)
        return squared_error.mean()

    def loss_and_codes(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Loss terms (scalar tensors) and the codes ``[B, K]`` of inputs ``[B, d]``.

        ``loss`` (the objective) is ``mse + sum_p weight_p * term_p`` over the
        sparsifier's penalties, which are reported under their own names (``l1``,
        ``aux``, ...); ``mse`` is :meth:`reconstruction_error`. Returning the codes saves
        a training loop a second encoding pass.
        """
        pre = self.pre_activations(x)
        codes = self.sparsifier(pre)
        x_hat = self.decode(codes)
        mse = self.reconstruction_error(x, x_hat)
        loss, penalties = mse, {}
        for name, (weight, term) in self.sparsifier.penalties(self, x, x_hat, pre, codes).items():
            loss = loss + weight * term
            penalties[name] = term
        return {"loss": loss, "mse": mse, **penalties}, codes

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scalar loss terms: ``loss`` (the objective), ``mse`` and the sparsifier's own."""
        return self.loss_and_codes(x)[0]

    # ------------------------------------------------------------------ training helpers

    def normalize_decoder_(self) -> None:
        """Rescale every decoder column to unit L2 norm (in place; unit-norm dictionaries)."""
        self.dictionary.normalize_()

    def remove_parallel_decoder_grad_(self) -> None:
        """Remove from W_d.grad its component along each column (unit-norm dictionaries).

        Call it between ``backward()`` and ``optimizer.step()``; see
        :meth:`monoscope.sae.parts.FreeDictionary.remove_parallel_grad_`.
        """
        self.dictionary.remove_parallel_grad_()

    def apply_constraints_(self) -> None:
        """What follows every optimiser step: the dictionary's projection (unit columns,
        bounded archetypal offsets)."""
        self.dictionary.apply_constraints_()

    @torch.no_grad()
    def record_firing_(self, codes: torch.Tensor) -> None:
        """Advance ``samples_since_fired`` by a training batch's codes ``[B, K]``.

        A feature that fired anywhere in the batch counts as having just fired; the
        error is at most one batch, far below any useful dead-feature window.
        """
        self.samples_since_fired.add_(codes.shape[0])
        self.samples_since_fired.masked_fill_((codes != 0).any(dim=0), 0)


# ---------------------------------------------------------------------- registry


def register_sae(name: str) -> Callable[[type[SparseAutoencoder]], type[SparseAutoencoder]]:
    """Class decorator: make an SAE variant buildable and loadable as ``name``
    (``SAE_VARIANTS.register`` that also checks the class and sets its ``variant``)."""

    def decorate(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        if not (isinstance(cls, type) and issubclass(cls, SparseAutoencoder)):
            raise TypeError(f"SAE variant '{name}' must subclass SparseAutoencoder")
        SAE_VARIANTS.add(name, cls)
        cls.variant = name
        return cls

    return decorate


def vector_variants() -> list[str]:
    """The registered variants that train on ``[B, d]`` vectors (what ``sae.models`` takes)."""
    return sorted(name for name, cls in SAE_VARIANTS.items() if cls.inputs == "vectors")


def sae_class(name: str, module: str | None = None) -> type[SparseAutoencoder]:
    """The class registered as ``name``.

    ``module`` is where the class was defined (an SAE file records it): a variant of
    monoscope that is not registered yet, because its module was not imported (the orbit
    SAEs of :mod:`monoscope.equivariant.saes`), is registered by importing it.
    """
    if name not in SAE_VARIANTS and module and module.startswith("monoscope."):
        importlib.import_module(module)
    return SAE_VARIANTS[name]


def build_sae(name: str, input_dim: int, config: Mapping[str, Any] | Any) -> SparseAutoencoder:
    """A new SAE of variant ``name`` for ``input_dim``-dimensional inputs.

    Parameters
    ----------
    name : a registered variant (``SAE_VARIANTS``).
    input_dim : d.
    config : either a mapping of the variant's constructor keywords (its
        ``hyperparameters``; unknown keys are an error), or a training config such as
        :class:`monoscope.sae.train.SAEConfig`, from whose attributes of the same names
        the keywords are read (``num_features`` from its ``features_for(input_dim)``).
    """
    cls = sae_class(name)
    if isinstance(config, Mapping):
        kwargs = dict(config)
        unknown = sorted(set(kwargs) - set(cls.hyperparameters))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for SAE variant '{name}'; "
                f"it takes {list(cls.hyperparameters)}"
            )
    else:
        kwargs = {"num_features": config.features_for(input_dim)}
        for key in cls.hyperparameters:
            if key == "num_features":
                continue
            if not hasattr(config, key):
                raise ValueError(
                    f"SAE variant '{name}' needs '{key}', which {type(config).__name__} lacks"
                )
            kwargs[key] = getattr(config, key)
    return cls(input_dim, **kwargs)


# ---------------------------------------------------------------------- files


def sae_record(sae: SparseAutoencoder) -> dict[str, Any]:
    """What rebuilds ``sae`` (before its state): format, version, variant, the module that
    defines it, input dimension and constructor keywords. JSON-serialisable."""
    return {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "variant": sae.variant,
        "module": type(sae).__module__,
        "input_dim": sae.input_dim,
        "config": sae.config,
    }


def sae_to_tensors(sae: SparseAutoencoder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and the record (:func:`sae_record`) that rebuild ``sae``."""
    return dict(sae.state_dict()), sae_record(sae)


def sae_from_tensors(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> SparseAutoencoder:
    """Inverse of :func:`sae_to_tensors` (strict: every tensor must match).

    The model is built inside a forked generator, so loading leaves the caller's global
    random state alone.
    """
    if metadata.get("format") != FILE_FORMAT:
        raise ValueError(f"not an SAE record (format {metadata.get('format')!r})")
    if metadata.get("version") != FILE_VERSION:
        raise ValueError(f"unsupported SAE file version {metadata.get('version')!r}")
    cls = sae_class(metadata["variant"], metadata.get("module"))
    with torch.random.fork_rng(devices=[]):
        sae = cls(int(metadata["input_dim"]), **metadata["config"])
    sae.load_state_dict(dict(tensors), strict=True)
    return sae


def save_sae(
    sae: SparseAutoencoder,
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write ``sae`` to a safetensors file atomically.

    The file's metadata holds ``sae`` (:func:`sae_record`) and the entries of
    ``metadata`` (JSON-serialisable): ``config`` and ``history`` of the training run, as
    in every model file (:func:`monoscope.checkpoints.save_model_file`; empty when not
    given), and anything else the caller keeps with the model.
    """
    extra = {"config": {}, "history": [], **dict(metadata or {})}
    reserved = {"sae", "kind"} & set(extra)
    if reserved:
        raise ValueError(f"metadata keys {sorted(reserved)} are reserved for the SAE file")
    save_model_file(path, FILE_FORMAT, sae, {"sae": sae_record(sae), **extra})


def read_sae(path: str | os.PathLike) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """An SAE file written by :func:`save_sae`: the model (an instance of its variant, on
    the CPU) and the caller's metadata passed to ``save_sae``.

    Files written before the dictionary base (version 1 SAE files, and the orbit SAE
    files of ``save_orbit_sae``) are read too, so existing results stay usable.
    """
    kinds = (FILE_FORMAT, _LEGACY_ORBIT_KIND)
    try:
        state, metadata = read_model_file(path, kinds, "SAE", "monoscope.sae.save_sae")
    except ValueError:
        tensors, metadata = load_tensors(path)
        if _legacy_record(metadata) is None:
            raise
        return _read_legacy(tensors, metadata)  # version 1: no kind, no model/ prefix
    if metadata["kind"] == _LEGACY_ORBIT_KIND:
        return _read_legacy(state, metadata)
    sae = sae_from_tensors(state, metadata["sae"])
    return sae, {key: value for key, value in metadata.items() if key not in ("sae", "kind")}


def load_sae(path: str | os.PathLike) -> SparseAutoencoder:
    """The SAE of a file written by :func:`save_sae` (an instance of its variant, on the CPU)."""
    return read_sae(path)[0]


# Tensor names before the parts were submodules.
_LEGACY_NAMES = {
    "encoder": "encoding.weight",
    "encoder_bias": "encoding.bias",
    "encoder_hidden": "encoding.hidden_weight",
    "encoder_hidden_bias": "encoding.hidden_bias",
    "decoder": "dictionary.weight",
    "archetype_logits": "dictionary.logits",
    "centroids": "dictionary.centroids",
    "relaxation_offsets": "dictionary.offsets",
}
_LEGACY_ORBIT_KIND = "equivariant_orbit_sae"


def _legacy_record(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record (:func:`sae_record`) of a pre-version-2 file's metadata, or None."""
    if metadata.get("format") == FILE_FORMAT and metadata.get("version") == 1:
        return {**metadata, "version": FILE_VERSION}
    if metadata.get("kind") == _LEGACY_ORBIT_KIND:
        config = dict(metadata["sae"])
        input_dim = config.pop("input_dim")
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "variant": "orbit",
            "module": "monoscope.equivariant.saes",
            "input_dim": input_dim,
            "config": config,
        }
    return None


def _read_legacy(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    record = _legacy_record(metadata)
    state = {
        _LEGACY_NAMES.get(key.removeprefix("model/"), key.removeprefix("model/")): value
        for key, value in tensors.items()
    }
    if "samples_since_fired" not in state:  # orbit SAEs had no firing counts
        state["samples_since_fired"] = torch.zeros(
            int(record["config"]["num_features"]), dtype=torch.int64
        )
    extra = {key: metadata[key] for key in ("config", "history") if key in metadata}
    if record["variant"] != "orbit":
        extra = {}  # a version 1 file's "config" is the record's, not the caller's
    return sae_from_tensors(state, record), extra


def geometric_median(
    x: torch.Tensor, max_iterations: int = 200, tolerance: float = 1e-7
) -> torch.Tensor:
    """Geometric median of the rows of ``x`` ``[n, d]`` by Weiszfeld's iteration (float64).

    Each step is the mean of the points weighted by their inverse distance to the current
    estimate. Distances are floored so a point that coincides with the estimate does not
    divide by zero (it then dominates the weights, which is the right limit).
    """
    points = x.detach().double()
    estimate = points.mean(dim=0)
    for _ in range(max_iterations):
        weights = 1.0 / (points - estimate).norm(dim=1).clamp_min(1e-12)
        updated = (weights[:, None] * points).sum(dim=0) / weights.sum()
        shift = (updated - estimate).norm()
        estimate = updated
        if shift <= tolerance * max(1.0, float(estimate.norm())):
            break
    return estimate
