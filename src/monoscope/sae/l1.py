"""The seed's SAE: a ReLU encoder with an L1 sparsity penalty.

    f     = ReLU(W_e (x - b_d) + b_e)
    x_hat = W_d f + b_d
    loss  = mean over the batch of ( ||x - x_hat||_2^2 + lambda ||f||_1 )

Parts: a ``linear`` encoder, the ``relu`` sparsifier (its penalty is the L1 term) and a
``free`` unit-norm dictionary. Decoder columns have unit norm, so the penalty cannot be
dodged by shrinking codes and growing directions. Dead features are revived by
resampling during training (:mod:`monoscope.sae.resample`).
"""

from __future__ import annotations

from monoscope.sae.base import SparseAutoencoder, register_sae
from monoscope.sae.parts import FreeDictionary, LinearEncoder, ReLUSparsifier


@register_sae("l1")
class L1SAE(SparseAutoencoder):
    """ReLU SAE with an L1 penalty on the codes; loss terms ``loss``, ``mse`` (mean squared
    error summed over dimensions) and ``l1`` (mean L1 norm of the codes, before the
    coefficient).

    Parameters
    ----------
    input_dim : d.
    num_features : K.
    l1_coefficient : lambda, the weight of the mean L1 norm of the codes.
    init : ``tied`` or ``random`` encoder (see :class:`SparseAutoencoder`).
    """

    hyperparameters = ("num_features", "l1_coefficient", "init")

    def __init__(
        self,
        input_dim: int,
        num_features: int,
        l1_coefficient: float = 1e-3,
        init: str = "tied",
    ) -> None:
        super().__init__(
            input_dim,
            LinearEncoder(input_dim, num_features),
            ReLUSparsifier(input_dim, num_features, l1_coefficient=l1_coefficient),
            FreeDictionary(input_dim, num_features, unit_norm=True),
            init=init,
        )

    @property
    def l1_coefficient(self) -> float:
        return self.sparsifier.l1_coefficient
