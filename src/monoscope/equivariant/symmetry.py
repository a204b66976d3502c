"""The latent action of the rotation group: one matrix M with ``h(g x) ~ M h(x)``.

The paper's premise: a model trained on symmetric data tends to represent the symmetry
linearly in its latent space, so the latents of an orbit ``a_j = h(g^j x)`` satisfy
``a_{j+1} ~ M a_j`` for a single matrix M, and ``a_j ~ M^j a_0`` (a representation of
C_n, in which g^n = e). The equivariant SAEs use M to move between the frames of an
orbit's members; how well M fits is the base model's *equivariance measure*.

Fitting (:func:`fit_symmetry`): least squares over every consecutive pair of every
orbit, the wrap-around pair ``(a_{n-1}, a_0)`` included (g^n = e):

    M = argmin sum_{i, j} ||a_{i, j+1 mod n} - M a_{i, j}||^2 + lambda ||M||_F^2

in closed form, in float64: the normal equations with ``lambda = ridge * tr(A^T A) / d``
(``ridge`` is relative to the mean squared latent coordinate, so it means the same at
any latent scale), or ``torch.linalg.lstsq`` (minimum norm) when ``ridge == 0``.

Why a ridge by default (``1e-3``): latents fill few directions, and the unregularised
solution is then huge in the others. A tiny residual of ``M a_j`` is blown up by the
next multiplication (an undertrained ViT: one-step relative error 6e-4, but 8e3 for
``M^2``), and the equivariant SAEs, which push decoder outputs through ``M^j``, weigh
those directions by M's large singular values. On the demo MLP autoencoder, ``1e-6`` /
``1e-3`` / ``1e-2`` give held-out one-step relative errors 0.0144 / 0.0132 / 0.0159 and
largest singular values 47 / 11 / 4.4.

``refine_steps > 0`` then runs that many L-BFGS iterations (full batch, deterministic) on
the loss over all powers, ``sum_j sum_{k=1}^{n-1} ||a_{j+k} - M^k a_j||^2`` plus the same
ridge term (the paper learns M by gradient descent with ``--M-train-on-all-k``),
starting from the least-squares solution.

Inverses: ``M^{-j}`` is taken as ``M^{(n - j) mod n}`` (:func:`symmetry_power`), the group
relation ``g^{-1} = g^{n-1}``, rather than a matrix inverse: latent spaces are often
rank-deficient (ReLU units that never fire), where ``M`` is singular but ``M^{n-1}`` still
maps ``a_1`` back to ``a_0`` as well as the fit allows.

Matrices act on column vectors; batches of row vectors are multiplied by ``M^T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SymmetryFit:
    """A latent action and its fit quality on some orbit latents (the training orbits for
    :func:`fit_symmetry`, any orbits for :func:`evaluate_symmetry`).

    Attributes
    ----------
    matrix : M, float32 ``[d, d]``.
    relative_error : ``sum ||a_{j+1} - M a_j||^2 / sum ||a_{j+1}||^2`` over all pairs.
    r2 : ``1 - sum ||a_{j+1} - M a_j||^2 / sum ||a_{j+1} - mean||^2``.
    power_errors : for k = 1..n-1, the relative error of ``a_{j+k} ~ M^k a_j``.
    identity_error : the relative error of ``M = I`` (how much a rotation moves the
        latents at all; a fit is only informative when it is far below this).
    """

    matrix: torch.Tensor
    relative_error: float
    r2: float
    power_errors: tuple[float, ...]
    identity_error: float

    def to_dict(self) -> dict[str, float | list[float]]:
        """The scalar measures as a JSON record (the matrix left out)."""
        return {
            "relative_error": self.relative_error,
            "r2": self.r2,
            "power_errors": list(self.power_errors),
            "identity_error": self.identity_error,
        }


def _check_orbits(latents: torch.Tensor) -> None:
    if latents.ndim != 3 or latents.shape[1] < 1:
        raise ValueError(f"expected orbit latents [N, n, d], got {list(latents.shape)}")


def consecutive_pairs(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(a_j, a_{j+1 mod n})`` of every orbit: two ``[N * n, d]`` tensors."""
    _check_orbits(latents)
    source = latents.reshape(-1, latents.shape[-1])
    target = torch.roll(latents, shifts=-1, dims=1).reshape(-1, latents.shape[-1])
    return source, target


def fit_symmetry(
    latents: torch.Tensor,
    ridge: float = 1e-3,
    refine_steps: int = 0,
) -> SymmetryFit:
    """Fit M to orbit latents ``[N, n, d]`` (see the module docstring)."""
    _check_orbits(latents)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
    source, target = (t.double() for t in consecutive_pairs(latents))
    gram = source.T @ source
    penalty = ridge * float(torch.trace(gram)) / gram.shape[0]
    if ridge > 0:
        gram = gram + penalty * torch.eye(gram.shape[0], dtype=torch.float64)
        transposed = torch.linalg.solve(gram, source.T @ target)
    else:
        # gelsd: the minimum-norm solution when the latents do not span the space.
        transposed = torch.linalg.lstsq(source, target, driver="gelsd").solution
    matrix = transposed.T.contiguous()
    if refine_steps and latents.shape[1] > 1:
        matrix = _refine_all_powers(latents.double(), matrix, refine_steps, penalty)
    return evaluate_symmetry(latents, matrix.float())


def _refine_all_powers(
    latents: torch.Tensor, matrix: torch.Tensor, steps: int, penalty: float
) -> torch.Tensor:
    """L-BFGS on ``sum_j sum_k ||a_{j+k} - M^k a_j||^2 + penalty ||M||_F^2`` (scaled by
    ``1 / sum ||a||^2`` for conditioning)."""
    n = latents.shape[1]
    weight = torch.nn.Parameter(matrix.clone())
    optimizer = torch.optim.LBFGS(
        [weight], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )
    scale = float(latents.pow(2).sum())

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = penalty * weight.pow(2).sum()
        moved = latents
        for k in range(1, n):
            moved = moved @ weight.T
            loss = loss + (torch.roll(latents, shifts=-k, dims=1) - moved).pow(2).sum()
        loss = loss / scale
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach()


@torch.no_grad()
def evaluate_symmetry(latents: torch.Tensor, matrix: torch.Tensor) -> SymmetryFit:
    """Fit quality of a given M on orbit latents ``[N, n, d]`` (e.g. held-out orbits)."""
    _check_orbits(latents)
    a = latents.double()
    m = matrix.double()
    source, target = consecutive_pairs(a)
    residual = (target - source @ m.T).pow(2).sum()
    total = target.pow(2).sum().clamp_min(1e-300)
    centred = (target - target.mean(dim=0)).pow(2).sum().clamp_min(1e-300)
    power_errors = []
    moved = a
    for k in range(1, a.shape[1]):
        moved = moved @ m.T
        shifted = torch.roll(a, shifts=-k, dims=1)
        power_errors.append(float((shifted - moved).pow(2).sum() / total))
    return SymmetryFit(
        matrix=matrix.float().contiguous(),
        relative_error=float(residual / total),
        r2=float(1 - residual / centred),
        power_errors=tuple(power_errors),
        identity_error=float((target - source).pow(2).sum() / total),
    )


def symmetry_power(matrix: torch.Tensor, power: int, orbit_size: int) -> torch.Tensor:
    """``M^power`` for the group element ``g^power``; negative powers use ``g^n = e``."""
    if orbit_size < 1:
        raise ValueError(f"orbit_size must be positive, got {orbit_size}")
    return torch.linalg.matrix_power(matrix, power % orbit_size)


def symmetry_powers(matrix: torch.Tensor, orbit_size: int) -> torch.Tensor:
    """``[n, d, d]`` stack of ``M^0 = I, M, ..., M^{n-1}``."""
    powers = [torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)]
    for _ in range(1, orbit_size):
        powers.append(powers[-1] @ matrix)
    return torch.stack(powers)


def act(latents: torch.Tensor, matrix: torch.Tensor, power: int, orbit_size: int) -> torch.Tensor:
    """``M^power a`` for row vectors ``latents [..., d]``."""
    return latents @ symmetry_power(matrix, power, orbit_size).T


def from_canonical(canonical: torch.Tensor, matrix: torch.Tensor, orbit_size: int) -> torch.Tensor:
    """Canonical vectors in every member's frame: ``[..., d] -> [..., n, d]``, slot j ``M^j c``."""
    powers = symmetry_powers(matrix, orbit_size)  # [n, d, d]
    return torch.einsum("...d,jed->...je", canonical, powers)


def to_canonical(orbit: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Members mapped back to the canonical frame: ``[B, n, d]``, member j by ``M^{-j}``."""
    n = orbit.shape[1]
    powers = symmetry_powers(matrix, n)
    inverse = torch.stack([powers[(n - j) % n] for j in range(n)])  # M^{-j} = M^{n-j}
    return torch.einsum("bjd,jed->bje", orbit, inverse)
