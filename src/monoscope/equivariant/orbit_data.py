"""The data set every stage of the equivariant branch reads: canonical images, tasks, split.

Whatever the source (generated shapes, or real images from a local folder), the branch
needs the same four things, written once by the workflow and read by every later job:

* ``canonical`` uint8 ``[N, 3, S, S]``: one image per orbit; the orbit's members are its
  rotations (:func:`monoscope.equivariant.orbits.rotate_images`), made on the fly;
* ``labels`` uint8 ``[N * n, T]``: the binary tasks of every member, orbit-major (row
  ``orbit * n + member``), so rotation-dependent tasks (orientation, position) are right
  for each member;
* ``task_names`` and ``invariant`` (whether a task's label is constant on orbits);
* ``test_orbits`` bool ``[N]``: whole orbits are held out, so no rotation of a test
  image is seen in training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from monoscope.equivariant.data import class_tasks, load_images
from monoscope.equivariant.orbits import check_orbit_size, split_orbits
from monoscope.equivariant.shapes import ShapesConfig, generate_shapes
from monoscope.equivariant.tasks import TaskConfig, shape_tasks, task_labels
from monoscope.io import load_tensors, save_tensors

ORBIT_DATA_KIND = "equivariant_orbit_data"


@dataclass(frozen=True)
class OrbitData:
    """See the module docstring."""

    canonical: torch.Tensor
    labels: np.ndarray
    task_names: tuple[str, ...]
    invariant: tuple[bool, ...]
    test_orbits: np.ndarray
    orbit_size: int
    source: str

    def __post_init__(self) -> None:
        n = check_orbit_size(self.orbit_size)
        count = self.canonical.shape[0]
        shape = tuple(self.canonical.shape)
        if (
            self.canonical.dtype != torch.uint8
            or len(shape) != 4
            or shape[1] != 3
            or shape[2] != shape[3]
        ):
            raise ValueError(f"canonical images must be uint8 [N, 3, S, S], got {shape}")
        if self.labels.dtype != np.uint8 or self.test_orbits.dtype != np.bool_:
            raise ValueError("labels must be uint8 and test_orbits bool")
        if self.labels.shape != (count * n, len(self.task_names)):
            raise ValueError(
                f"labels must be [{count * n}, {len(self.task_names)}], got {self.labels.shape}"
            )
        if len(self.invariant) != len(self.task_names) or self.test_orbits.shape != (count,):
            raise ValueError("invariant needs one flag per task and test_orbits one per orbit")

    @property
    def num_orbits(self) -> int:
        return int(self.canonical.shape[0])

    def canonical_float(self, orbits: np.ndarray | None = None) -> torch.Tensor:
        """Canonical images as float32 in [0, 1], optionally of the selected orbits only."""
        images = self.canonical if orbits is None else self.canonical[torch.from_numpy(orbits)]
        return images.float() / 255.0


def shapes_orbit_data(
    shapes: ShapesConfig, tasks: TaskConfig, test_fraction: float, seed: int
) -> OrbitData:
    """Generate the shapes data set and its attribute tasks."""
    dataset = generate_shapes(shapes)
    task_list = shape_tasks(shapes, tasks)
    labels, names = task_labels(dataset.attributes, task_list)
    canonical = dataset.images[torch.from_numpy(dataset.members == 0)]
    return OrbitData(
        canonical=canonical.contiguous(),
        labels=labels.astype(np.uint8),
        task_names=tuple(names),
        invariant=tuple(bool(task.invariant) for task in task_list),
        test_orbits=split_orbits(dataset.num_orbits, test_fraction, seed),
        orbit_size=shapes.orbit_size,
        source="shapes",
    )


def image_orbit_data(
    root: str | os.PathLike, image_size: int, orbit_size: int, test_fraction: float, seed: int
) -> OrbitData:
    """Real images (GalaxyMNIST-style folder or .npz) with one-vs-rest class tasks.

    Raises FileNotFoundError naming the path and the expected layouts when it is absent.
    """
    images = load_images(root, image_size)
    labels, names = class_tasks(images.labels, images.class_names)
    # A class does not change when the image turns: every member shares its orbit's labels.
    member_labels = np.repeat(labels, check_orbit_size(orbit_size), axis=0)
    canonical = (images.images * 255.0).round().clamp(0, 255).to(torch.uint8)
    return OrbitData(
        canonical=canonical.contiguous(),
        labels=member_labels,
        task_names=tuple(names),
        invariant=(True,) * len(names),
        test_orbits=split_orbits(len(images), test_fraction, seed),
        orbit_size=orbit_size,
        source="images",
    )


def save_orbit_data(path: str | os.PathLike, data: OrbitData) -> None:
    """One safetensors file; task names and flags in the metadata."""
    save_tensors(
        path,
        {
            "canonical": data.canonical,
            "labels": torch.from_numpy(np.ascontiguousarray(data.labels)),
            "test_orbits": torch.from_numpy(data.test_orbits.astype(np.uint8)),
        },
        {
            "kind": ORBIT_DATA_KIND,
            "task_names": list(data.task_names),
            "invariant": list(data.invariant),
            "orbit_size": data.orbit_size,
            "source": data.source,
        },
    )


def load_orbit_data(path: str | os.PathLike) -> OrbitData:
    """Inverse of :func:`save_orbit_data`."""
    tensors, metadata = load_tensors(path)
    if metadata.get("kind") != ORBIT_DATA_KIND:
        raise ValueError(f"{path} is not an orbit data file (kind {metadata.get('kind')!r})")
    return OrbitData(
        canonical=tensors["canonical"],
        labels=tensors["labels"].numpy(),
        task_names=tuple(metadata["task_names"]),
        invariant=tuple(bool(flag) for flag in metadata["invariant"]),
        test_orbits=tensors["test_orbits"].numpy().astype(bool),
        orbit_size=int(metadata["orbit_size"]),
        source=metadata["source"],
    )
