"""A procedural shapes data set closed under 90-degree rotations, with known attributes.

Why procedural: to test whether an SAE recovers the factors a model represents, we need
the factors. Every image here is drawn from a record of generating attributes:

``shape``       one of :data:`SHAPES`; all are *oriented* (no shape looks the same after
                a quarter turn), so the orientation is visible for every image
``color``       the shape's colour, a name from :data:`COLORS`
``background``  the background colour, a name from :data:`COLORS`
``orientation`` 0..3, quarter turns counter-clockwise from the shape's base pose
                (:data:`ORIENTATIONS`: the triangle's apex points up, left, down, right)
``size``        half-extent r in pixels: the shape lies in ``[x - r, x + r] x [y - r, y + r]``
``x``, ``y``    the centre in pixel coordinates, x to the right and y downwards, where pixel
                ``(row, col)`` covers ``[col, col + 1] x [row, row + 1]``, so its centre is
                ``(col + 0.5, row + 0.5)``; centres lie on the half-pixel grid

Rendering is exact and rotation-consistent. A pixel belongs to the shape when its
centre's offset from ``(x, y)``, turned back by ``orientation`` quarter turns, lies in
the base shape. A quarter turn (:func:`torch.rot90`, counter-clockwise) moves the centre
``(x, y)`` to ``(y, S - x)`` and adds one to the orientation (mod 4); shape, colours and
size do not change (:func:`rotate_attributes`). Because centres are multiples of 0.5
every offset is computed exactly in floating point, and the offsets of the rotated image,
turned back, are bit for bit the offsets of the original: rendering the rotated
attributes gives ``rot90`` of the image, pixel for pixel. Positions are drawn from a
range symmetric under ``x -> S - x``, so a rotated record is one the generator could have
drawn, and the data set of all orbits is closed under the group.

Layout of a :class:`ShapesDataset`: canonical images (member 0 of each orbit, drawn
independently) followed, orbit-major, by their rotations ``g^j`` for ``j < orbit_size``
(:mod:`monoscope.equivariant.orbits`): row ``i * n + j``.

The canonical frame: by default every canonical shape is upright
(``canonical_orientation=0``), so an image shows which member of its orbit it is. The
equivariant SAEs reconstruct member j as ``M^j`` of a canonical-frame decoding; with a
recognisable canonical pose, an encoder that sees one member can tell which canonical
latent to aim at. With ``canonical_orientation=None`` the orientation of member 0 is
drawn at random: the canonical frame is then an arbitrary label of each orbit (as for
photographs, e.g. galaxies), and a code that is the same for all members can only
explain what the members share.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

from monoscope.config import RecordConfig
from monoscope.equivariant.orbits import (
    QUARTER_TURNS,
    check_orbit_size,
    flatten_orbits,
    make_orbits,
    quarter_turns,
)
from monoscope.io import load_tensors, save_tensors
from monoscope.logs import progress_kwargs

SHAPES = ("triangle", "semicircle", "tee", "ell", "wedge")
ORIENTATIONS = ("up", "left", "down", "right")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 75),
    "green": (60, 180, 75),
    "blue": (0, 130, 200),
    "yellow": (255, 225, 25),
    "magenta": (240, 50, 230),
    "cyan": (70, 240, 240),
    "orange": (245, 130, 48),
    "purple": (145, 30, 180),
    "black": (0, 0, 0),
    "gray": (110, 110, 110),
    "white": (255, 255, 255),
    "navy": (0, 0, 110),
}
DEFAULT_COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan")
DEFAULT_BACKGROUNDS = ("black", "gray", "navy")

CATEGORICAL_ATTRIBUTES = ("shape", "color", "background", "orientation")
CONTINUOUS_ATTRIBUTES = ("size", "x", "y")
ATTRIBUTES = CATEGORICAL_ATTRIBUTES + CONTINUOUS_ATTRIBUTES
# Attributes a rotation leaves unchanged; tasks on them alone are rotation invariant.
INVARIANT_ATTRIBUTES = ("shape", "color", "background", "size")

DATASET_KIND = "equivariant_shapes"
# Pixels drawn at once: bounds the float64 work arrays (~32 MiB each) at any image size.
RENDER_PIXELS = 1 << 22


@dataclass(frozen=True)
class ShapesConfig(RecordConfig):
    """Options of the shapes data set.

    Parameters
    ----------
    num_orbits : canonical images; the data set holds ``num_orbits * orbit_size`` images.
    image_size : side S in pixels (square images, 3 channels).
    orbit_size : n in {1, 2, 4}: the group C_n whose rotations make the orbits.
    shapes, colors, backgrounds : the categories drawn (names from :data:`SHAPES` and
        :data:`COLORS`; shape colours and backgrounds must not share a colour).
    min_size, max_size : range of the half-extent r as fractions of S (uniform).
    canonical_orientation : the orientation (0..3) of every canonical image, or ``None``
        for a random one (see the module docstring).
    seed : seeds every draw.
    """

    section: ClassVar[str] = "shapes"

    num_orbits: int = 10000
    image_size: int = 32
    orbit_size: int = 4
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = DEFAULT_COLORS
    backgrounds: tuple[str, ...] = DEFAULT_BACKGROUNDS
    min_size: float = 0.12
    max_size: float = 0.3
    canonical_orientation: int | None = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("shapes", "colors", "backgrounds"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if self.num_orbits < 1:
            raise ValueError(f"shapes.num_orbits must be positive, got {self.num_orbits}")
        if self.image_size < 8:
            raise ValueError(f"shapes.image_size must be at least 8, got {self.image_size}")
        check_orbit_size(self.orbit_size)
        unknown = sorted(set(self.shapes) - set(SHAPES))
        if unknown or not self.shapes:
            raise ValueError(f"shapes.shapes must be a non-empty subset of {SHAPES}, got {unknown}")
        for key in ("colors", "backgrounds"):
            names = getattr(self, key)
            missing = sorted(set(names) - set(COLORS))
            if missing or not names:
                raise ValueError(
                    f"shapes.{key} must be a non-empty list of names from {sorted(COLORS)}, "
                    f"got unknown {missing}"
                )
            if len(set(names)) != len(names):
                raise ValueError(f"shapes.{key} has duplicates: {list(names)}")
        if len(set(self.shapes)) != len(self.shapes):
            raise ValueError(f"shapes.shapes has duplicates: {list(self.shapes)}")
        shared = {COLORS[c] for c in self.colors} & {COLORS[b] for b in self.backgrounds}
        if shared:
            raise ValueError("shapes.colors and shapes.backgrounds must not share a colour")
        if not 0 < self.min_size <= self.max_size < 0.5:
            raise ValueError(
                "shapes.min_size and shapes.max_size must satisfy 0 < min_size <= max_size "
                f"< 0.5, got {self.min_size}, {self.max_size}"
            )
        if self.min_size * self.image_size < 1.5:
            raise ValueError(
                f"shapes.min_size * image_size must be at least 1.5 pixels, got "
                f"{self.min_size * self.image_size} (raise min_size or image_size)"
            )
        if self.canonical_orientation is not None and self.canonical_orientation not in range(
            QUARTER_TURNS
        ):
            raise ValueError(
                "shapes.canonical_orientation must be 0..3 or null, got "
                f"{self.canonical_orientation!r}"
            )
        if self.seed < 0:
            raise ValueError(f"shapes.seed must be >= 0, got {self.seed}")

    @property
    def size_range(self) -> tuple[float, float]:
        """The range of the half-extent r, in pixels."""
        return self.min_size * self.image_size, self.max_size * self.image_size

    @property
    def position_range(self) -> tuple[float, float]:
        """The range of x and y: ``[m, S - m]`` with m the largest r rounded up to 0.5."""
        margin = math.ceil(2 * self.size_range[1]) / 2
        return margin, self.image_size - margin

    def category_names(self) -> dict[str, tuple[str, ...]]:
        """Names of the categorical attributes' values, by attribute."""
        return {
            "shape": self.shapes,
            "color": self.colors,
            "background": self.backgrounds,
            "orientation": ORIENTATIONS,
        }


@dataclass
class ShapesDataset:
    """Images, their attributes and their place in the orbits.

    Attributes
    ----------
    images : uint8 ``[N, 3, S, S]``, orbit-major (row ``orbit * n + member``).
    attributes : per image: int64 arrays for :data:`CATEGORICAL_ATTRIBUTES` (indices into
        :meth:`ShapesConfig.category_names`), float64 arrays for the continuous ones.
    orbit_ids, members : int64 ``[N]``: the orbit, and j such that the image is
        ``g^j`` of the orbit's canonical image.
    config : what generated it.
    """

    images: torch.Tensor
    attributes: dict[str, np.ndarray]
    orbit_ids: np.ndarray
    members: np.ndarray
    config: ShapesConfig

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_orbits(self) -> int:
        return self.num_images // self.config.orbit_size

    @property
    def orbit_size(self) -> int:
        return self.config.orbit_size

    def float_images(self) -> torch.Tensor:
        """All images as float32 in ``[0, 1]``, ``[N, 3, S, S]``."""
        return self.images.float() / 255.0

    def canonical_images(self) -> torch.Tensor:
        """Member 0 of every orbit, float32 ``[num_orbits, 3, S, S]``."""
        return self.float_images()[self.members == 0]

    def orbit_images(self) -> torch.Tensor:
        """Float32 ``[num_orbits, n, 3, S, S]``."""
        return self.float_images().view(self.num_orbits, self.orbit_size, *self.images.shape[1:])


# ---------------------------------------------------------------------- geometry


def _base_masks(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> dict[str, np.ndarray]:
    """Each base shape's membership of offsets ``(u, v)`` (u right, v down), half-extent r.

    Every shape fits in ``[-r, r]^2`` and has no 90-degree rotational symmetry.
    """
    third = r / 3
    disk = u * u + v * v <= r * r
    inside_box = (np.abs(u) <= r) & (np.abs(v) <= r)
    return {
        # apex at (0, -r), base from (-r, r) to (r, r)
        "triangle": inside_box & (2 * np.abs(u) <= v + r),
        # the upper half disk, flat side down
        "semicircle": disk & (v <= 0),
        # a bar across the top and a stem down the middle
        "tee": inside_box & ((v <= -third) | (np.abs(u) <= third)),
        # a stem on the left and a foot along the bottom
        "ell": inside_box & ((u <= -third) | (v >= third)),
        # a disk missing its upper right quadrant
        "wedge": disk & ~((u > 0) & (v < 0)),
    }


def _unrotate(
    u: np.ndarray, v: np.ndarray, orientation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets turned back by ``orientation`` quarter turns, into the base pose.

    A counter-clockwise quarter turn maps an offset ``(u, v)`` to ``(v, -u)`` (see the
    module docstring); its inverse maps ``(u, v)`` to ``(-v, u)``. Only sign changes and
    swaps: exact.
    """
    o = orientation.reshape(-1, *([1] * (u.ndim - 1)))
    base_u = np.select([o == 0, o == 1, o == 2], [u, -v, -u], default=v)
    base_v = np.select([o == 0, o == 1, o == 2], [v, u, -v], default=-u)
    return base_u, base_v


def render_shapes(attributes: Mapping[str, np.ndarray], config: ShapesConfig) -> torch.Tensor:
    """Draw images uint8 ``[B, 3, S, S]`` from attribute records (arrays of length B)."""
    size = config.image_size
    count = len(np.asarray(attributes["shape"]))
    shape_rgb = np.array([COLORS[name] for name in config.colors], dtype=np.uint8)
    background_rgb = np.array([COLORS[name] for name in config.backgrounds], dtype=np.uint8)
    centres = np.arange(size, dtype=np.float64) + 0.5
    images = np.empty((count, 3, size, size), dtype=np.uint8)
    chunk = max(1, RENDER_PIXELS // (size * size))
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        x = np.asarray(attributes["x"], dtype=np.float64)[part]
        y = np.asarray(attributes["y"], dtype=np.float64)[part]
        r = np.asarray(attributes["size"], dtype=np.float64)[part][:, None, None]
        u = np.broadcast_to(centres[None, None, :] - x[:, None, None], (len(x), size, size))
        v = np.broadcast_to(centres[None, :, None] - y[:, None, None], (len(x), size, size))
        base_u, base_v = _unrotate(u, v, np.asarray(attributes["orientation"])[part])
        masks = _base_masks(base_u, base_v, r)
        kinds = np.asarray(attributes["shape"])[part]
        mask = np.zeros((len(x), size, size), dtype=bool)
        for index, name in enumerate(config.shapes):
            chosen = kinds == index
            mask[chosen] = masks[name][chosen]
        fore = shape_rgb[np.asarray(attributes["color"])[part]][:, :, None, None]
        back = background_rgb[np.asarray(attributes["background"])[part]][:, :, None, None]
        images[part] = np.where(mask[:, None], fore, back)
    return torch.from_numpy(images)


def rotate_attributes(
    attributes: Mapping[str, np.ndarray], turns: int, image_size: int
) -> dict[str, np.ndarray]:
    """The attributes of images turned by ``turns`` counter-clockwise quarter turns.

    One turn: ``(x, y) -> (y, S - x)``, ``orientation -> orientation + 1 (mod 4)``; the
    other attributes are invariant. Exact for centres on the half-pixel grid.
    """
    rotated = {key: np.array(value, copy=True) for key, value in attributes.items()}
    for _ in range(turns % QUARTER_TURNS):
        x, y = rotated["x"], rotated["y"]
        rotated["x"], rotated["y"] = y.copy(), image_size - x
        rotated["orientation"] = (rotated["orientation"] + 1) % QUARTER_TURNS
    return rotated


def sample_attributes(config: ShapesConfig, count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` independent canonical attribute records from a seeded generator.

    The orientation is drawn in every case (and then overwritten by a fixed
    ``canonical_orientation``), so the other attributes do not depend on that option.
    """
    rng = np.random.default_rng(seed)
    low, high = config.size_range
    start, stop = config.position_range
    grid = round(2 * (stop - start))  # half-pixel steps in the position range
    orientation = rng.integers(0, QUARTER_TURNS, count, dtype=np.int64)
    if config.canonical_orientation is not None:
        orientation[:] = config.canonical_orientation
    return {
        "shape": rng.integers(0, len(config.shapes), count, dtype=np.int64),
        "color": rng.integers(0, len(config.colors), count, dtype=np.int64),
        "background": rng.integers(0, len(config.backgrounds), count, dtype=np.int64),
        "orientation": orientation,
        "size": rng.uniform(low, high, count),
        "x": start + 0.5 * rng.integers(0, grid + 1, count),
        "y": start + 0.5 * rng.integers(0, grid + 1, count),
    }


def generate_shapes(config: ShapesConfig, progress: bool = True) -> ShapesDataset:
    """Draw ``config.num_orbits`` canonical images and their orbits (see module docstring).

    Deterministic in ``config`` (the seed included). The rotated members are
    ``torch.rot90`` of the canonical images; their attributes come from
    :func:`rotate_attributes`.
    """
    n = config.orbit_size
    canonical = sample_attributes(config, config.num_orbits, config.seed)
    chunks = []
    bar = tqdm(
        total=config.num_orbits,
        desc="render shapes",
        unit="image",
        disable=not progress,
        **progress_kwargs(),
    )
    chunk = max(1, RENDER_PIXELS // config.image_size**2)
    with bar:
        for start in range(0, config.num_orbits, chunk):
            part = {key: value[start : start + chunk] for key, value in canonical.items()}
            chunks.append(render_shapes(part, config))
            bar.update(len(part["shape"]))
    images = flatten_orbits(make_orbits(torch.cat(chunks), n))
    per_member = [
        rotate_attributes(canonical, j * quarter_turns(n), config.image_size) for j in range(n)
    ]
    attributes = {
        key: np.stack([member[key] for member in per_member], axis=1).reshape(-1)
        for key in ATTRIBUTES
    }
    return ShapesDataset(
        images=images.contiguous(),
        attributes=attributes,
        orbit_ids=np.repeat(np.arange(config.num_orbits, dtype=np.int64), n),
        members=np.tile(np.arange(n, dtype=np.int64), config.num_orbits),
        config=config,
    )


# ---------------------------------------------------------------------- files


def save_shapes(path: str | os.PathLike, dataset: ShapesDataset) -> None:
    """Write the data set to one safetensors file (atomically).

    Tensors: ``images`` (uint8), ``attributes/<name>`` (int64 or float64), ``orbit_ids``,
    ``members``. Metadata: ``kind``, ``config`` and ``category_names``.
    """
    tensors = {
        "images": dataset.images,
        "orbit_ids": torch.from_numpy(dataset.orbit_ids),
        "members": torch.from_numpy(dataset.members),
    }
    for key, value in dataset.attributes.items():
        tensors[f"attributes/{key}"] = torch.from_numpy(np.ascontiguousarray(value))
    metadata = {
        "kind": DATASET_KIND,
        "config": dataset.config.to_dict(),
        "category_names": {k: list(v) for k, v in dataset.config.category_names().items()},
    }
    save_tensors(path, tensors, metadata)


def load_shapes(path: str | os.PathLike) -> ShapesDataset:
    """Read a file written by :func:`save_shapes`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"shapes data set not found: {path} (written by monoscope.equivariant.shapes."
            "save_shapes after generate_shapes)"
        )
    tensors, metadata = load_tensors(path)
    if metadata.get("kind") != DATASET_KIND:
        raise ValueError(f"{path} is not a shapes data set (kind {metadata.get('kind')!r})")
    return ShapesDataset(
        images=tensors["images"],
        attributes={
            key.removeprefix("attributes/"): value.numpy()
            for key, value in tensors.items()
            if key.startswith("attributes/")
        },
        orbit_ids=tensors["orbit_ids"].numpy(),
        members=tensors["members"].numpy(),
        config=ShapesConfig.from_dict(metadata["config"]),
    )
