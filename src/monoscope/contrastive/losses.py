"""The InfoNCE (NT-Xent) loss of SimCLR and NCL.

For a batch of ``B`` samples seen in two views, the ``2B`` embeddings are normalised to
unit length, ``u_1 .. u_2B`` (view one first, then view two). Sample ``i``'s positive is
its other view ``pos(i) = (i + B) mod 2B``; every other embedding of the batch is a
negative. With temperature ``t``,

    loss = 1 / 2B * sum_i -log( exp(u_i . u_pos(i) / t) / sum_{j != i} exp(u_i . u_j / t) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE / NT-Xent over two views.

    Parameters
    ----------
    z1, z2 : torch.Tensor
        Embeddings ``[B, K]`` of the first and second view; row ``i`` of both comes from
        the same sample. They need not be normalised.
    temperature : float
        Softmax temperature ``t > 0``.

    Returns
    -------
    torch.Tensor
        Scalar mean loss over the ``2B`` anchors.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"views must both be [B, K], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    batch = z1.shape[0]
    if batch < 2:
        raise ValueError("InfoNCE needs at least two samples (one negative per anchor)")
    # float32 at least: under autocast the similarities would be half precision, and
    # with t = 0.2 the logits span [-5, 5] where fp16 rounding is already noticeable.
    u = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = u @ u.T / temperature
    # An anchor is not its own negative: masking the diagonal removes it from the
    # denominator (exp(-inf) = 0).
    self_mask = torch.eye(2 * batch, dtype=torch.bool, device=u.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (torch.arange(2 * batch, device=u.device) + batch) % (2 * batch)
    return F.cross_entropy(logits, positives)
