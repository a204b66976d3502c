"""The sparse-autoencoder interface, the variant registry, and safetensors files.

A sparse autoencoder (SAE) learns an overcomplete dictionary for ``[N, d]`` activation
vectors. Every variant here shares one parametrisation (the seed's notation)::

    pre   = W_e (x - b_d) + b_e          encoder, W_e [K, d], b_e [K]
    f     = activation(pre)              codes [B, K], variant-specific (ReLU, TopK, ...)
    x_hat = W_d f + b_d                  decoder, W_d [d, K], b_d [d]

and the columns of ``W_d`` (the dictionary directions) are kept at unit norm, so the size
of a code is the size of its feature's contribution. Variants differ in the activation
and the loss; they register under a name with :func:`register_sae` and are built with
:func:`build_sae`. An SAE file is a safetensors file of the state dict whose metadata
holds the variant, the input dimension and the hyperparameters, so :func:`load_sae`
rebuilds the right class without unpickling anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from monoscope.io import load_tensors, save_tensors

INIT_METHODS = ("tied", "random")
DECODER_BIAS_INITS = ("geometric_median", "mean", "zeros")
FILE_FORMAT = "monoscope-sae"
FILE_VERSION = 1
# Guards divisions by a column norm: a column can only reach zero through a bad update.
NORM_EPSILON = 1e-12

SAE_VARIANTS: dict[str, type[SparseAutoencoder]] = {}


class SparseAutoencoder(nn.Module):
    """Base class of the SAE variants (see the module docstring for the notation).

    Parameters
    ----------
    input_dim : d, the dimension of the activation vectors.
    num_features : K, the number of dictionary directions.
    init : ``tied`` (encoder rows start as the decoder columns, which starts every
        feature alive and aligned with its direction) or ``random`` (independent
        Kaiming-uniform encoder). Decoder columns always start as random unit vectors.

    Attributes
    ----------
    encoder, encoder_bias, decoder, decoder_bias : W_e ``[K, d]``, b_e ``[K]``,
        W_d ``[d, K]``, b_d ``[d]``.
    samples_since_fired : int64 buffer ``[K]``, training samples seen since each feature
        last fired; the training loop updates it with :meth:`record_firing_`.

    Subclasses set ``hyperparameters`` (the constructor keywords besides ``input_dim``,
    stored as attributes of the same names) and implement :meth:`encode` and
    :meth:`loss_and_codes`.
    """

    variant: ClassVar[str] = ""
    hyperparameters: ClassVar[tuple[str, ...]] = ("num_features", "init")

    def __init__(self, input_dim: int, num_features: int, init: str = "tied") -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be positive, got {input_dim}")
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if init not in INIT_METHODS:
            raise ValueError(f"init must be one of {INIT_METHODS}, got '{init}'")
        self.init = init
        self.encoder = nn.Parameter(torch.empty(num_features, input_dim))
        self.encoder_bias = nn.Parameter(torch.zeros(num_features))
        self.decoder = nn.Parameter(torch.empty(input_dim, num_features))
        self.decoder_bias = nn.Parameter(torch.zeros(input_dim))
        self.register_buffer("samples_since_fired", torch.zeros(num_features, dtype=torch.int64))
        self.reset_parameters()

    # ------------------------------------------------------------------ shape and config

    @property
    def input_dim(self) -> int:
        return self.decoder.shape[0]

    @property
    def num_features(self) -> int:
        return self.decoder.shape[1]

    @property
    def config(self) -> dict[str, Any]:
        """The constructor keywords (besides ``input_dim``); JSON-serialisable."""
        return {name: getattr(self, name) for name in self.hyperparameters}

    def reset_parameters(self) -> None:
        """Random unit decoder columns; encoder tied to them or random; zero biases.

        Uses the global torch generator: seed it (or fork it) around construction.
        """
        with torch.no_grad():
            # Gaussian columns normalised are uniform on the sphere.
            self.decoder.normal_()
            self.normalize_decoder_()
            if self.init == "tied":
                self.encoder.copy_(self.decoder.T)
            else:
                nn.init.kaiming_uniform_(self.encoder, a=5**0.5)
            self.encoder_bias.zero_()
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
        """W_e (x - b_d) + b_e, ``[B, K]``."""
        return (x - self.decoder_bias) @ self.encoder.T + self.encoder_bias

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K]`` of inputs ``[B, d]``."""
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """x_hat = W_d f + b_d, ``[B, d]``."""
        return codes @ self.decoder.T + self.decoder_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat, codes)``."""
        codes = self.encode(x)
        return self.decode(codes), codes

    def loss_and_codes(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Loss terms (scalar tensors, ``loss`` is the one to minimise) and the codes.

        Returning the codes saves a training loop a second encoding pass.
        """
        raise NotImplementedError

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scalar loss terms: ``loss`` (the objective), ``mse`` and the variant's own."""
        return self.loss_and_codes(x)[0]

    @staticmethod
    def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ||x - x_hat||^2 (summed over dimensions), the seed's term."""
        return (x - x_hat).pow(2).sum(dim=1).mean()

    # ------------------------------------------------------------------ training helpers

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder column to unit L2 norm (in place)."""
        self.decoder.div_(self.decoder.norm(dim=0, keepdim=True).clamp_min(NORM_EPSILON))

    @torch.no_grad()
    def remove_parallel_decoder_grad_(self) -> None:
        """Remove from W_d.grad its component along each decoder column (in place).

        With unit-norm columns, a gradient along a column would only change its length,
        which :meth:`normalize_decoder_` undoes; removing it keeps the optimiser's step
        (and Adam's moment estimates) for the directions that matter. Call it between
        ``backward()`` and ``optimizer.step()``.
        """
        grad = self.decoder.grad
        if grad is None:
            return
        columns = self.decoder
        along = (grad * columns).sum(dim=0, keepdim=True)
        squared_norm = columns.pow(2).sum(dim=0, keepdim=True).clamp_min(NORM_EPSILON)
        grad.sub_(columns * (along / squared_norm))

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
    """Class decorator: make an SAE variant buildable and loadable as ``name``."""

    def decorate(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        if not (isinstance(cls, type) and issubclass(cls, SparseAutoencoder)):
            raise TypeError(f"SAE variant '{name}' must subclass SparseAutoencoder")
        if name in SAE_VARIANTS and SAE_VARIANTS[name] is not cls:
            raise ValueError(f"SAE variant '{name}' is already registered")
        cls.variant = name
        SAE_VARIANTS[name] = cls
        return cls

    return decorate


def sae_class(name: str) -> type[SparseAutoencoder]:
    """The class registered as ``name``."""
    if name not in SAE_VARIANTS:
        raise ValueError(f"unknown SAE variant '{name}'; known: {sorted(SAE_VARIANTS)}")
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


def sae_to_tensors(sae: SparseAutoencoder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and the metadata record that rebuild ``sae``."""
    metadata = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "variant": sae.variant,
        "input_dim": sae.input_dim,
        "config": sae.config,
    }
    return dict(sae.state_dict()), metadata


def sae_from_tensors(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> SparseAutoencoder:
    """Inverse of :func:`sae_to_tensors` (strict: every tensor must match)."""
    if metadata.get("format") != FILE_FORMAT:
        raise ValueError(f"not an SAE file (format {metadata.get('format')!r})")
    if metadata.get("version") != FILE_VERSION:
        raise ValueError(f"unsupported SAE file version {metadata.get('version')!r}")
    cls = sae_class(metadata["variant"])
    sae = cls(int(metadata["input_dim"]), **metadata["config"])
    sae.load_state_dict(dict(tensors), strict=True)
    return sae


def save_sae(sae: SparseAutoencoder, path: str | os.PathLike) -> None:
    """Write ``sae`` to a safetensors file atomically (config in the metadata)."""
    tensors, metadata = sae_to_tensors(sae)
    save_tensors(path, tensors, metadata=metadata)


def load_sae(path: str | os.PathLike) -> SparseAutoencoder:
    """Read an SAE file written by :func:`save_sae`; returns an instance of its variant."""
    tensors, metadata = load_tensors(path)
    return sae_from_tensors(tensors, metadata)


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
