"""The seed's SAE: a ReLU encoder with an L1 sparsity penalty.

    f     = ReLU(W_e (x - b_d) + b_e)
    x_hat = W_d f + b_d
    loss  = mean over the batch of ( ||x - x_hat||_2^2 + lambda ||f||_1 )

Decoder columns have unit norm, so the penalty cannot be dodged by shrinking codes and
growing directions. Dead features are revived by resampling during training
(:mod:`monoscope.sae.resample`).
"""

from __future__ import annotations

import torch

from monoscope.sae.base import SparseAutoencoder, register_sae


@register_sae("l1")
class L1SAE(SparseAutoencoder):
    """ReLU SAE with an L1 penalty on the codes.

    Parameters
    ----------
    input_dim, num_features, init : see :class:`SparseAutoencoder`.
    l1_coefficient : lambda, the weight of the mean L1 norm of the codes.
    """

    hyperparameters = ("num_features", "l1_coefficient", "init")

    def __init__(
        self,
        input_dim: int,
        num_features: int,
        l1_coefficient: float = 1e-3,
        init: str = "tied",
    ) -> None:
        if l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {l1_coefficient}")
        super().__init__(input_dim, num_features, init)
        self.l1_coefficient = float(l1_coefficient)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activations(x))

    def loss_and_codes(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Terms ``loss``, ``mse`` (mean squared error summed over dimensions) and ``l1``
        (mean L1 norm of the codes, before the coefficient)."""
        x_hat, codes = self(x)
        mse = self.reconstruction_error(x, x_hat)
        l1 = codes.abs().sum(dim=1).mean()
        terms = {"loss": mse + self.l1_coefficient * l1, "mse": mse, "l1": l1}
        return terms, codes
