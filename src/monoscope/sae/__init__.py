"""Sparse autoencoders: dictionary learning on ``[N, d]`` activation vectors.

Modules: :mod:`~monoscope.sae.parts` (encoders, sparsifiers, dictionaries: the
registries of swappable parts), :mod:`~monoscope.sae.base` (the dictionary base composed
of them, the variant registry and SAE files), :mod:`~monoscope.sae.l1` and
:mod:`~monoscope.sae.topk` (the variants; the orbit SAEs of
:mod:`monoscope.equivariant.saes` are another), :mod:`~monoscope.sae.store` (what
training reads), :mod:`~monoscope.sae.resample` (reviving dead features),
:mod:`~monoscope.sae.train` (the training loop) and :mod:`~monoscope.sae.metrics`
(evaluation).
"""

from monoscope.sae.base import (
    SAE_VARIANTS,
    SparseAutoencoder,
    build_sae,
    geometric_median,
    load_sae,
    read_sae,
    register_sae,
    save_sae,
)
from monoscope.sae.l1 import L1SAE
from monoscope.sae.metrics import DictionaryMetrics, evaluate_sae, feature_activations
from monoscope.sae.parts import DICTIONARIES, ENCODERS, SPARSIFIERS
from monoscope.sae.resample import resample_dead_features
from monoscope.sae.store import TensorStore, VectorStore, draw_samples
from monoscope.sae.topk import TopKSAE
from monoscope.sae.train import ResampleConfig, SAEConfig, train_sae

__all__ = [
    "DICTIONARIES",
    "ENCODERS",
    "SAE_VARIANTS",
    "SPARSIFIERS",
    "DictionaryMetrics",
    "L1SAE",
    "ResampleConfig",
    "SAEConfig",
    "SparseAutoencoder",
    "TensorStore",
    "TopKSAE",
    "VectorStore",
    "build_sae",
    "draw_samples",
    "evaluate_sae",
    "feature_activations",
    "geometric_median",
    "load_sae",
    "read_sae",
    "register_sae",
    "resample_dead_features",
    "save_sae",
    "train_sae",
]
