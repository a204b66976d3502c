"""Orbits of images under the cyclic rotation group, and orbit-level data splits.

The group is C_n with n = ``orbit_size`` in {1, 2, 4}: its generator g rotates an image
by ``4 // n`` quarter turns with :func:`torch.rot90` over the last two (height, width)
axes. A quarter turn permutes pixels exactly, so ``g^n x == x`` bit for bit and an orbit
``(x, g x, ..., g^{n-1} x)`` holds no resampling error: every symmetry in the data is
exact, and any deviation of a model from equivariance is the model's own.

Orbit-major layout: a tensor ``[N, n, ...]`` holds orbit ``i``'s member ``j = g^j x_i``
at ``[i, j]``; flattened to ``[N * n, ...]`` the member sits at row ``i * n + j``. Splits
are drawn over orbits, never over members, so no rotation of a test image is seen in
training.
"""

from __future__ import annotations

import numpy as np
import torch

ORBIT_SIZES = (1, 2, 4)
QUARTER_TURNS = 4


def check_orbit_size(orbit_size: int) -> int:
    """``orbit_size`` if it is a valid order of a rotation subgroup of C4, else ValueError."""
    if orbit_size not in ORBIT_SIZES:
        raise ValueError(f"orbit_size must be one of {ORBIT_SIZES}, got {orbit_size!r}")
    return orbit_size


def quarter_turns(orbit_size: int) -> int:
    """Quarter turns made by the generator g of C_n (4 for n=1, 2 for n=2, 1 for n=4)."""
    return QUARTER_TURNS // check_orbit_size(orbit_size)


def rotate_images(images: torch.Tensor, steps: int, orbit_size: int = 4) -> torch.Tensor:
    """``g^steps`` applied to images ``[..., H, W]`` (counter-clockwise quarter turns).

    ``steps`` may be negative; only ``steps mod n`` matters since ``g^n`` is the identity.
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotations need square images, got {list(images.shape[-2:])}")
    turns = (steps * quarter_turns(orbit_size)) % QUARTER_TURNS
    if turns == 0:
        return images.clone()
    return torch.rot90(images, turns, dims=(-2, -1))


def make_orbits(images: torch.Tensor, orbit_size: int = 4) -> torch.Tensor:
    """Orbits ``[N, n, C, H, W]`` of images ``[N, C, H, W]``: member j is ``g^j x``."""
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got {list(images.shape)}")
    return torch.stack(
        [rotate_images(images, j, orbit_size) for j in range(check_orbit_size(orbit_size))],
        dim=1,
    )


def flatten_orbits(orbits: torch.Tensor) -> torch.Tensor:
    """``[N, n, ...] -> [N * n, ...]`` in orbit-major order."""
    return orbits.reshape(orbits.shape[0] * orbits.shape[1], *orbits.shape[2:])


def split_orbits(num_orbits: int, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask ``[num_orbits]``, True for the test orbits (a seeded random subset).

    ``round(test_fraction * num_orbits)`` orbits, at least one and leaving at least one
    for training, go to the test split.
    """
    if num_orbits < 2:
        raise ValueError(f"need at least 2 orbits to split, got {num_orbits}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    num_test = min(max(round(test_fraction * num_orbits), 1), num_orbits - 1)
    order = np.random.default_rng(seed).permutation(num_orbits)
    mask = np.zeros(num_orbits, dtype=bool)
    mask[order[:num_test]] = True
    return mask


def repeat_members(values: np.ndarray, orbit_size: int) -> np.ndarray:
    """Per-orbit rows ``[N, ...]`` repeated for every member: ``[N * n, ...]``, orbit-major
    (e.g. the class labels of real images, which a rotation does not change)."""
    return np.repeat(np.asarray(values), check_orbit_size(orbit_size), axis=0)


def member_mask(orbit_mask: np.ndarray, orbit_size: int) -> np.ndarray:
    """A per-orbit mask ``[N]`` repeated for every member: ``[N * n]`` in orbit-major order."""
    return repeat_members(np.asarray(orbit_mask, dtype=bool), orbit_size)
