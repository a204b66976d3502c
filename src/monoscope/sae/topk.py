"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    f     = ReLU(TopK_k(W_e (x - b_d) + b_e))     at most k nonzero codes per sample
    x_hat = W_d f + b_d
    loss  = mean over the batch of ||x - x_hat||^2  +  aux_coef * aux

Parts: a ``linear`` encoder, the ``topk`` sparsifier (its penalty is the dead-feature
auxiliary loss ``aux``, see :class:`monoscope.sae.parts.TopKSparsifier`) and a ``free``
unit-norm dictionary. Sparsity is set directly by k, so there is no L1 penalty to tune.
A feature is dead when it has not fired in the last ``dead_tokens`` training samples
(``samples_since_fired``, kept by the training loop).

The SAE of Beyond Interpretability (ICLR 2025) on frozen contrastive features is this
class with ``normalized_mse``.
"""

from __future__ import annotations

from typing import Any

import torch

from monoscope.sae.base import SparseAutoencoder, register_sae
from monoscope.sae.parts import FreeDictionary, LinearEncoder, TopKSparsifier, top_k_codes


@register_sae("topk")
class TopKSAE(SparseAutoencoder):
    """SAE whose codes are the ReLU of the top ``k`` pre-activations.

    Parameters
    ----------
    input_dim : d.
    num_features : K.
    k, k_aux, aux_coef, dead_tokens : keywords of the sparsifier
        (:class:`~monoscope.sae.parts.TopKSparsifier`, defaults 32, None, 1/32, 100000):
    k : pre-activations kept per sample (exactly k before the ReLU, so at most k codes
        are nonzero).
    k_aux : dead features used by the auxiliary loss per sample; ``None`` means
        ``min(input_dim // 2, num_features)`` (Gao et al. use about d / 2), at least 1.
    aux_coef : weight of the auxiliary loss (Gao et al.: 1/32).
    dead_tokens : training samples without firing after which a feature counts as dead.
    init : ``tied`` or ``random`` encoder (see :class:`SparseAutoencoder`).
    normalized_mse : measure reconstruction as ``||x - x_hat||^2 / ||x||^2`` per sample
        (averaged over the batch) instead of ``||x - x_hat||^2``: the loss of the SAE on
        frozen contrastive features (Beyond Interpretability, ICLR 2025), which makes
        the error scale-free.
    """

    hyperparameters = (
        "num_features",
        "k",
        "k_aux",
        "aux_coef",
        "dead_tokens",
        "init",
        "normalized_mse",
    )

    def __init__(
        self,
        input_dim: int,
        num_features: int,
        *,
        init: str = "tied",
        normalized_mse: bool = False,
        **sparsifier: Any,
    ) -> None:
        # k, k_aux, aux_coef and dead_tokens, with their defaults, are the sparsifier's.
        super().__init__(
            input_dim,
            LinearEncoder(input_dim, num_features),
            TopKSparsifier(input_dim, num_features, **sparsifier),
            FreeDictionary(input_dim, num_features, unit_norm=True),
            init=init,
            normalized_mse=normalized_mse,
        )

    # The hyperparameters live in the sparsifier; these read them for ``config``.
    k = property(lambda self: self.sparsifier.k)
    k_aux = property(lambda self: self.sparsifier.k_aux)
    aux_coef = property(lambda self: self.sparsifier.aux_coef)
    dead_tokens = property(lambda self: self.sparsifier.dead_tokens)

    @property
    def auxiliary_k(self) -> int:
        """``k_aux`` with its default resolved (before capping at the dead count)."""
        return self.sparsifier.auxiliary_k

    def dead_mask(self) -> torch.Tensor:
        """Boolean ``[K]``: features that have not fired in the last ``dead_tokens`` samples."""
        return self.sparsifier.dead_mask(self)

    top_k_codes = staticmethod(top_k_codes)

    def auxiliary_loss(
        self, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor
    ) -> torch.Tensor:
        """The dead-feature loss ``aux`` (before ``aux_coef``); zero when none is dead."""
        return self.sparsifier.auxiliary_loss(self, x, x_hat, pre)
