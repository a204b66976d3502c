"""CIFAR-10 and CIFAR-100 from a local copy, as ``(image, label, sample_id)`` data sets.

The data are read by ``torchvision.datasets.CIFAR10`` / ``CIFAR100`` with
``download=False``: nothing is fetched at run time. A missing copy is an error naming
the folder torchvision expects and where to get the data. Samples follow the
convention of :mod:`monoscope.data`: unnormalised float images in ``[0, 1]``, shaped
``[3, 32, 32]``, the label, and a ``sample_id``, which here is the position in the
split (torchvision's order, the order of the official files), so ids of the train and
test split overlap and name a sample only together with its split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

CIFAR_NAMES = ("cifar10", "cifar100")
CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
CIFAR_HOME = "https://www.cs.toronto.edu/~kriz/"


def _torchvision_class(name: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]


def cifar_folder(root: str | os.PathLike, name: str = "cifar10") -> Path:
    """The folder torchvision reads ``name`` from: ``root/cifar-10-batches-py`` or
    ``root/cifar-100-python``."""
    if name not in CIFAR_NAMES:
        raise ValueError(f"CIFAR name must be one of {CIFAR_NAMES}, got '{name}'")
    return Path(root).expanduser() / _torchvision_class(name).base_folder


def _required_files(name: str) -> list[str]:
    source = _torchvision_class(name)
    # torchvision checks every file of both splits, whichever split is asked for.
    return [entry[0] for entry in source.train_list + source.test_list] + [source.meta["filename"]]


def _unverified(source: type) -> type:
    """A subclass of a torchvision CIFAR class that only checks the files exist.

    ``check_integrity`` with ``md5=None`` tests existence alone; the class attributes
    listing the files are the documented place torchvision keeps the checksums.
    """
    return type(
        f"Unverified{source.__name__}",
        (source,),
        {
            "train_list": [[entry[0], None] for entry in source.train_list],
            "test_list": [[entry[0], None] for entry in source.test_list],
            "meta": {**source.meta, "md5": None},
        },
    )


class CIFARDataset(Dataset):
    """One split of CIFAR held in memory as uint8, served as ``(image, label, id)``.

    Parameters
    ----------
    images : torch.Tensor
        ``[N, 3, 32, 32]`` uint8 (0..255).
    labels : torch.Tensor
        ``[N]`` int64.
    classes : list of str
        Class names by label.
    name : str
        ``cifar10`` or ``cifar100``.
    train : bool
        Which split.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str],
        name: str = "cifar10",
        train: bool = True,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        # uint8 keeps the training split at 150 MB instead of 600 MB as float32.
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.sample_ids = torch.arange(len(images), dtype=torch.int64)
        self.classes = list(classes)
        self.name = name
        self.train = train

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        image = self.images[position].to(torch.float32) / 255.0
        return image, int(self.labels[position]), int(self.sample_ids[position])

    def position_of(self, sample_ids) -> np.ndarray:
        """Positions in this data set of the given sample ids."""
        lookup = pd.Series(np.arange(len(self)), index=self.sample_ids.numpy())
        return lookup.loc[np.asarray(sample_ids).reshape(-1)].to_numpy()


def load_cifar(
    root: str | os.PathLike,
    name: str = "cifar10",
    train: bool = True,
    verify: bool = True,
) -> CIFARDataset:
    """Read one split of CIFAR-10/100 from ``root`` (never downloads).

    Parameters
    ----------
    root : path-like
        Folder holding ``cifar-10-batches-py`` (CIFAR-10) or ``cifar-100-python``
        (CIFAR-100), as extracted from the official python archives.
    name : str
        ``cifar10`` or ``cifar100``.
    train : bool
        Training split (50,000 images) or test split (10,000).
    verify : bool
        Let torchvision check the files' MD5 sums against the official release. Turn
        off only for a copy known to be good, or for test fixtures.

    Returns
    -------
    CIFARDataset

    Raises
    ------
    FileNotFoundError
        When the folder or one of its files is missing; the message names the
        expected path and how to obtain the data.
    RuntimeError
        When ``verify`` is on and the files do not match the official checksums.
    """
    folder = cifar_folder(root, name)
    missing = [file for file in _required_files(name) if not (folder / file).is_file()]
    if missing:
        what = f"{folder} does not exist" if not folder.is_dir() else f"{folder} lacks {missing}"
        raise FileNotFoundError(
            f"{name} not found: {what}. Download the python version "
            f"({CIFAR_ARCHIVES[name]}) from {CIFAR_HOME} and extract it in {folder.parent} "
            f"(this creates {folder.name}/ with the batch files); data are never "
            "downloaded at run time."
        )
    source = _torchvision_class(name)
    if not verify:
        source = _unverified(source)
    try:
        raw = source(str(folder.parent), train=train, download=False)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise RuntimeError(
            f"{name} files in {folder} fail torchvision's checksum test (corrupted or not "
            f"the official release): re-download {CIFAR_ARCHIVES[name]} from {CIFAR_HOME} "
            f"and extract it again ({error})"
        ) from error
    images = torch.from_numpy(np.ascontiguousarray(raw.data.transpose(0, 3, 1, 2)))
    labels = torch.as_tensor(raw.targets, dtype=torch.int64)
    return CIFARDataset(images, labels, list(raw.classes), name=name, train=train)
