"""Reviving dead features by resampling (Anthropic, "Towards Monosemanticity", 2023).

A dead feature never fires, so it gets no gradient and can never recover by itself. At
scheduled steps the training loop hands the dead features to
:func:`resample_dead_features`, which points each one at an input the SAE reconstructs
badly:

1. compute the reconstruction error ``||x - x_hat||^2`` of a sample of inputs;
2. draw one input per dead feature with probability proportional to the square of that
   error (Anthropic's choice: it strongly favours the worst-explained inputs);
3. the feature's decoder column becomes the unit vector along ``x - b_d``; its encoder
   row the same direction scaled to 0.2 times the mean encoder-row norm of the alive
   features (small enough not to disturb the others at once); its encoder bias 0;
4. Adam's moment estimates of exactly those rows, columns and bias entries are zeroed,
   so stale moments of the dead weights do not steer the new ones.
"""

from __future__ import annotations

import torch

from monoscope.sae.base import SparseAutoencoder
from monoscope.sae.parts import NORM_EPSILON

RESAMPLE_ENCODER_SCALE = 0.2
# Per-parameter optimiser state that holds one entry per weight (Adam's, AMSGrad's).
MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


@torch.no_grad()
def resample_dead_features(
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    dead: torch.Tensor,
    inputs: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Reinitialise the features marked in ``dead`` (see the module docstring).

    Parameters
    ----------
    sae : the model, changed in place.
    optimizer : its optimiser; moment estimates of the resampled weights are zeroed.
    dead : boolean ``[K]``.
    inputs : ``[n, d]`` sample of the training data to draw the new directions from.
    generator : CPU generator of the draws (seeded by the training loop).

    Returns
    -------
    The indices of the resampled features (int64, ascending).
    """
    indices = torch.nonzero(dead.cpu()).flatten()
    if len(indices) == 0:
        return indices
    device = sae.decoder_bias.device
    inputs = inputs.to(device=device, dtype=sae.decoder.dtype)
    x_hat, _ = sae(inputs)
    error = (inputs - x_hat).pow(2).sum(dim=1)
    weights = error.double().pow(2).cpu()
    if not (torch.isfinite(weights).all() and weights.sum() > 0):
        weights = torch.ones_like(weights)  # nothing to prefer: draw uniformly
    # Distinct inputs where possible, so dead features do not all get the same direction.
    replacement = len(indices) > int((weights > 0).sum())
    chosen = torch.multinomial(weights, len(indices), replacement=replacement, generator=generator)

    directions = inputs[chosen.to(device)] - sae.decoder_bias
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(NORM_EPSILON)
    alive = ~dead.to(device)
    alive_norm = sae.encoder[alive].norm(dim=1).mean() if alive.any() else torch.tensor(1.0)
    rows = indices.to(device)
    sae.decoder[:, rows] = directions.T
    sae.encoder[rows] = directions * (alive_norm * RESAMPLE_ENCODER_SCALE)
    sae.encoder_bias[rows] = 0.0
    sae.samples_since_fired[rows] = 0

    for parameter, where in (
        (sae.encoder, (rows, slice(None))),
        (sae.encoder_bias, (rows,)),
        (sae.decoder, (slice(None), rows)),
    ):
        state = optimizer.state.get(parameter, {})
        for key in MOMENT_KEYS:
            if key in state:
                state[key][where] = 0.0
    return indices
