"""Real images with a rotation symmetry (GalaxyMNIST-style) from a local copy.

Galaxy images have no preferred orientation: a galaxy turned by 90 degrees is another
plausible galaxy of the same class, so the data are (statistically) closed under C4
and the classes are rotation invariant. The paper's second data set is GalaxyMNIST:
10,000 RGB images of 64x64 pixels in 4 morphology classes (:data:`GALAXY_MNIST_CLASSES`).
Nothing is downloaded at run time; two local layouts are read:

ImageFolder layout (:func:`load_image_folder`)
    ``root/<class name>/<image file>``: one subfolder per class (sorted names give the
    label order), any of :data:`IMAGE_SUFFIXES`, read with Pillow as RGB.
NumPy archive (:func:`load_image_npz`)
    one ``.npz`` file with ``images`` (uint8 ``[N, H, W, 3]`` or ``[N, 3, H, W]``),
    ``labels`` (integer ``[N]``) and optionally ``class_names`` (strings ``[C]``). The
    ``galaxy_mnist`` package (github.com/mwalmsley/galaxy_mnist) gives ``dataset.data``
    (uint8 ``[N, 3, 64, 64]``) and ``dataset.targets``; save them with
    ``numpy.savez(path, images=data.numpy(), labels=targets.numpy())``.

Images are resized to ``size x size`` (bilinear; GalaxyMNIST is square already) and
returned as float32 ``[N, 3, size, size]`` in ``[0, 1]``. Orbits are the exact quarter
turns of each image (:func:`monoscope.equivariant.orbits.make_orbits`); the probe tasks
are one-vs-rest per class (:func:`class_tasks`), all rotation invariant.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from monoscope.logs import progress_kwargs

GALAXY_MNIST_CLASSES = ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_LAYOUT_HELP = (
    "Expected either a folder with one subfolder per class, e.g. "
    "{root}/smooth_round/0001.png, {root}/smooth_cigar/0002.png, ... (GalaxyMNIST's classes "
    "are " + ", ".join(GALAXY_MNIST_CLASSES) + "), or an .npz file with arrays 'images' "
    "(uint8 [N, H, W, 3] or [N, 3, H, W]) and 'labels' ([N]). To fix: export the images "
    "to that layout (e.g. with the galaxy_mnist package, github.com/mwalmsley/galaxy_mnist: "
    "dataset = GalaxyMNIST(root=..., download=True, train=True); numpy.savez(path, "
    "images=dataset.data.numpy(), labels=dataset.targets.numpy())) and point the config "
    "at it."
)


@dataclass
class ImageSet:
    """Labelled images.

    Attributes
    ----------
    images : float32 ``[N, 3, S, S]`` in ``[0, 1]``.
    labels : int64 ``[N]``, indices into ``class_names``.
    class_names : the classes, in label order.
    sources : where each image came from (file paths, or ``<npz>#<index>``).
    """

    images: torch.Tensor
    labels: np.ndarray
    class_names: tuple[str, ...]
    sources: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _resize(array: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, size, size]`` in [0, 1] (bilinear)."""
    from PIL import Image

    if size is not None and array.shape[:2] != (size, size):
        array = np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / 255.0


def load_image_folder(root: str | os.PathLike, size: int = 64, progress: bool = True) -> ImageSet:
    """Read ``root/<class name>/<image>`` (see the module docstring) at ``size`` pixels.

    Raises FileNotFoundError, naming the path and the expected layout, when ``root`` is
    missing or holds no class folder with images.
    """
    from PIL import Image

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}. {_LAYOUT_HELP.format(root=root)}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    classes = sorted(path.name for path in root.iterdir() if path.is_dir())
    files = [
        (index, path)
        for index, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise FileNotFoundError(
            f"no class folders with images in {root}. {_LAYOUT_HELP.format(root=root)}"
        )
    images = np.empty((len(files), 3, size, size), dtype=np.float32)
    for row, (_, path) in enumerate(
        tqdm(files, desc="read images", unit="image", disable=not progress, **progress_kwargs())
    ):
        with Image.open(path) as handle:
            images[row] = _resize(np.asarray(handle.convert("RGB")), size)
    return ImageSet(
        images=torch.from_numpy(images),
        labels=np.array([index for index, _ in files], dtype=np.int64),
        class_names=tuple(classes),
        sources=[str(path) for _, path in files],
    )


def load_image_npz(
    path: str | os.PathLike,
    size: int | None = None,
    class_names: Sequence[str] | None = None,
) -> ImageSet:
    """Read an ``.npz`` archive (see the module docstring); ``size=None`` keeps the size.

    Class names come from the archive's ``class_names``, else from ``class_names``, else
    :data:`GALAXY_MNIST_CLASSES` when there are 4 classes, else ``class_<i>``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"image archive not found: {path}. {_LAYOUT_HELP.format(root=path.parent)}"
        )
    with np.load(path, allow_pickle=False) as archive:
        missing = {"images", "labels"} - set(archive.files)
        if missing:
            raise ValueError(
                f"{path} lacks the arrays {sorted(missing)}. {_LAYOUT_HELP.format(root=path.parent)}"
            )
        images = archive["images"]
        labels = archive["labels"].astype(np.int64).ravel()
        stored_names = archive["class_names"] if "class_names" in archive.files else None
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]) or images.dtype != np.uint8:
        raise ValueError(
            f"{path}: 'images' must be uint8 [N, H, W, 3] or [N, 3, H, W], got {images.dtype} {images.shape}"
        )
    if images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    if len(labels) != len(images):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    count = int(labels.max()) + 1 if len(labels) else 0
    if stored_names is not None:
        names = tuple(str(name) for name in stored_names)
    elif class_names is not None:
        names = tuple(class_names)
    elif count == len(GALAXY_MNIST_CLASSES):
        names = GALAXY_MNIST_CLASSES
    else:
        names = tuple(f"class_{index}" for index in range(count))
    if labels.min(initial=0) < 0 or count > len(names):
        raise ValueError(
            f"{path}: labels must lie in [0, {len(names)}), got {labels.min()}..{labels.max()}"
        )
    converted = (
        np.stack([_resize(image, size) for image in images])
        if len(images)
        else np.empty((0, 3, size or 0, size or 0), np.float32)
    )
    if converted.shape[-1] != converted.shape[-2]:
        raise ValueError(
            f"{path}: images must be square (or pass size=...), got {converted.shape[-2:]}"
        )
    return ImageSet(
        images=torch.from_numpy(converted),
        labels=labels,
        class_names=names,
        sources=[f"{path}#{index}" for index in range(len(labels))],
    )


def load_images(path: str | os.PathLike, size: int = 64, progress: bool = True) -> ImageSet:
    """A folder (:func:`load_image_folder`) or an ``.npz`` file (:func:`load_image_npz`)."""
    path = Path(path).expanduser()
    if path.suffix == ".npz":
        return load_image_npz(path, size)
    return load_image_folder(path, size, progress)


def class_tasks(labels: np.ndarray, class_names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """One-vs-rest tasks: uint8 ``[N, C]`` (column c is ``label == c``) and names
    ``class=<name>``."""
    labels = np.asarray(labels)
    matrix = (labels[:, None] == np.arange(len(class_names))[None, :]).astype(np.uint8)
    return matrix, [f"class={name}" for name in class_names]
