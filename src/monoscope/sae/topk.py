"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    pre   = W_e (x - b_d) + b_e
    z     = ReLU(TopK_k(pre))        the k largest pre-activations kept, the rest zeroed
    x_hat = W_d z + b_d

Sparsity is a hard constraint (at most k nonzero codes) instead of a penalty, so there is
no L1 shrinkage of the codes. Features that stop firing are pulled back by an auxiliary
loss: the residual e = x - x_hat is reconstructed from the top ``k_aux`` pre-activations
of the dead features alone,

    aux = sum ||e - W_d z_aux||^2 / sum ||e - mean(e)||^2

(normalised over the batch, e taken as a constant), and ``aux_coef * aux`` is added to
the reconstruction error. A feature is dead when it has not fired in the last
``dead_tokens`` training samples (``samples_since_fired``, kept by the training loop).
"""

from __future__ import annotations

import torch

from monoscope.sae.base import SparseAutoencoder, register_sae


@register_sae("topk")
class TopKSAE(SparseAutoencoder):
    """SAE whose codes are the ReLU of the top ``k`` pre-activations.

    Parameters
    ----------
    input_dim, num_features, init : see :class:`SparseAutoencoder`.
    k : pre-activations kept per sample (exactly k before the ReLU, so at most k codes
        are nonzero).
    k_aux : dead features used by the auxiliary loss per sample; ``None`` means
        ``min(input_dim // 2, num_features)`` (Gao et al. use about d / 2), at least 1.
    aux_coef : weight of the auxiliary loss (Gao et al.: 1/32).
    dead_tokens : training samples without firing after which a feature counts as dead.
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
        k: int = 32,
        k_aux: int | None = None,
        aux_coef: float = 1 / 32,
        dead_tokens: int = 100_000,
        init: str = "tied",
        normalized_mse: bool = False,
    ) -> None:
        if not 1 <= k <= num_features:
            raise ValueError(f"k must be in 1..num_features ({num_features}), got {k}")
        if k_aux is not None and k_aux < 1:
            raise ValueError(f"k_aux must be positive (or None), got {k_aux}")
        if aux_coef < 0:
            raise ValueError(f"aux_coef must be >= 0, got {aux_coef}")
        if dead_tokens < 1:
            raise ValueError(f"dead_tokens must be positive, got {dead_tokens}")
        super().__init__(input_dim, num_features, init)
        self.k = int(k)
        self.k_aux = None if k_aux is None else int(k_aux)
        self.aux_coef = float(aux_coef)
        self.dead_tokens = int(dead_tokens)
        self.normalized_mse = bool(normalized_mse)

    def reconstruction_error(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """The base class's error, or its per-sample normalised form (``normalized_mse``)."""
        squared_error = (x - x_hat).pow(2).sum(dim=1)
        if self.normalized_mse:
            squared_error = squared_error / x.pow(2).sum(dim=1).clamp_min(1e-12)
        return squared_error.mean()

    @property
    def auxiliary_k(self) -> int:
        """``k_aux`` with its default resolved (before capping at the dead count)."""
        if self.k_aux is not None:
            return min(self.k_aux, self.num_features)
        return max(1, min(self.input_dim // 2, self.num_features))

    def dead_mask(self) -> torch.Tensor:
        """Boolean ``[K]``: features that have not fired in the last ``dead_tokens`` samples."""
        return self.samples_since_fired >= self.dead_tokens

    @staticmethod
    def top_k_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
        """Keep the ``k`` largest entries of each row of ``pre``, ReLU them, zero the rest."""
        values, indices = pre.topk(k, dim=1)
        return torch.zeros_like(pre).scatter(1, indices, torch.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.top_k_codes(self.pre_activations(x), self.k)

    def auxiliary_loss(
        self, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor
    ) -> torch.Tensor:
        """The dead-feature loss ``aux`` (before ``aux_coef``); zero when none is dead."""
        dead = self.dead_mask()
        num_dead = int(dead.sum())
        if num_dead == 0:
            return pre.new_zeros(())
        k_aux = min(self.auxiliary_k, num_dead)
        # Alive features can never be picked: their pre-activations become -inf.
        dead_only = pre.masked_fill(~dead, float("-inf"))
        codes = self.top_k_codes(dead_only, k_aux)
        # The decoder bias is already in x_hat; the dead features explain the residual.
        residual_hat = codes @ self.decoder.T
        residual = (x - x_hat).detach()
        if residual.shape[0] > 1:
            scale = (residual - residual.mean(dim=0)).pow(2).sum()
        else:  # one sample has no spread; fall back to its squared norm
            scale = residual.pow(2).sum()
        return (residual - residual_hat).pow(2).sum() / scale.clamp_min(1e-12)

    def loss_and_codes(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Terms ``loss`` (mse + aux_coef * aux), ``mse`` and ``aux``."""
        pre = self.pre_activations(x)
        codes = self.top_k_codes(pre, self.k)
        x_hat = self.decode(codes)
        mse = self.reconstruction_error(x, x_hat)
        aux = self.auxiliary_loss(x, x_hat, pre)
        return {"loss": mse + self.aux_coef * aux, "mse": mse, "aux": aux}, codes
