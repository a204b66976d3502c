"""CIFAR-10 and CIFAR-100 from a local copy, as ``(image, label, sample_id)`` data sets.

The data are the official python batches in torchvision's folder layout; nothing is
fetched at run time, and a missing copy is an error naming the folder expected and where
to get the data. The batches are pickles, and a pickle can run any code while it loads,
so they are never given to ``pickle.load``: :func:`read_cifar_batch` unpickles with an
allow-list that admits nothing but NumPy's array reconstruction (the only objects the
official files hold besides dicts, lists, strings and numbers). ``verify`` checks the
files' MD5 sums against the official release (torchvision's list) on top. Samples follow the
convention of :mod:`monoscope.data`: unnormalised float images in ``[0, 1]``, shaped
``[3, 32, 32]``, the label, and a ``sample_id``, which here is the position in the
split (torchvision's order, the order of the official files), so ids of the train and
test split overlap and name a sample only together with its split.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
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


# The callables an official CIFAR batch needs: NumPy's array reconstruction (its module
# moved in NumPy 2). Anything else in a file is refused before it can run.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and NumPy arrays only."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike) -> dict:
    """One CIFAR python batch (or meta) file as a dict, without running code from it.

    Raises ValueError naming the file when it holds anything but the official format's
    plain data (a crafted pickle, an object array) or is not a pickle at all.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            # The batches were written by Python 2: byte strings decode as latin-1.
            entry = _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(
            f"{path}: not an official CIFAR python batch ({error}); re-download "
            f"the python version from {CIFAR_HOME}"
        ) from error
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: not a CIFAR batch (a {type(entry).__name__}, not a dict)")
    for key, value in entry.items():
        if isinstance(value, np.ndarray) and value.dtype == object:
            raise ValueError(f"{path}: entry {key!r} is an object array, not CIFAR data")
    return entry


def _check_md5(folder: Path, name: str) -> None:
    """Raise RuntimeError when a file differs from the official release's MD5 sum."""
    from torchvision.datasets.utils import check_integrity

    source = _torchvision_class(name)
    listed = source.train_list + source.test_list + [[source.meta["filename"], source.meta["md5"]]]
    bad = [file for file, md5 in listed if not check_integrity(str(folder / file), md5)]
    if bad:
        raise RuntimeError(
            f"{name} files {bad} in {folder} fail the checksum test (corrupted or not the "
            f"official release): re-download {CIFAR_ARCHIVES[name]} from {CIFAR_HOME} and "
            "extract it again"
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
        Check the files' MD5 sums against the official release (torchvision's list).
        Without it the files are still read safely (:func:`read_cifar_batch`), so a
        modified copy can give wrong data but never run code.

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
    if verify:
        _check_md5(folder, name)
    source = _torchvision_class(name)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    data, labels = [], []
    for file, _ in source.train_list if train else source.test_list:
        batch = read_cifar_batch(folder / file)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{folder / file}: a {name} batch needs 'data' and {label_key!r}")
        data.append(batch["data"])
        labels.extend(batch[label_key])
    pixels = np.vstack(data).reshape(-1, 3, 32, 32)
    images = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8))
    labels = torch.as_tensor(labels, dtype=torch.int64)
    classes = read_cifar_batch(folder / source.meta["filename"])[source.meta["key"]]
    return CIFARDataset(images, labels, list(classes), name=name, train=train)


# --------------------------------------------------------------------------- any source

CONTRASTIVE_SOURCES = ("digits", "cifar10", "cifar100", "imagefolder")


@dataclass(frozen=True)
class ContrastiveDataConfig:
    """Where the contrastive branch's images come from.

    Parameters
    ----------
    name : ``digits`` (scikit-learn's handwritten digits, the offline demo),
        ``cifar10`` / ``cifar100`` (torchvision's python format under ``root``) or
        ``imagefolder`` (e.g. ImageNet-100: ``root/<train_folder>/<class>/*.JPEG`` and
        ``root/<test_folder>/<class>/*.JPEG``).
    root : data folder (not used by ``digits``).
    image_size : side of the images the data set serves (``digits`` and
        ``imagefolder``; CIFAR is always 32). SimCLR views are crops of these images.
    resize : ``imagefolder`` only: shorter side before the centre crop to
        ``image_size``; ``None`` resizes straight to ``image_size``.
    train_folder, test_folder : ``imagefolder`` split folders under ``root``.
    test_fraction, seed : ``digits`` only: the stratified, seeded test split.
    verify : CIFAR only: check the files' MD5 sums.
    """

    name: str = "digits"
    root: str | None = None
    image_size: int = 32
    resize: int | None = None
    train_folder: str = "train"
    test_folder: str = "val"
    test_fraction: float = 0.2
    seed: int = 0
    verify: bool = True

    def __post_init__(self) -> None:
        if self.name not in CONTRASTIVE_SOURCES:
            raise ValueError(
                f"contrastive.data.name must be one of {CONTRASTIVE_SOURCES}, got '{self.name}'"
            )
        if self.name != "digits" and not self.root:
            raise ValueError(f"contrastive.data.root must name the {self.name} folder")
        if self.image_size < 1:
            raise ValueError(f"contrastive.data.image_size must be positive, got {self.image_size}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(
                f"contrastive.data.test_fraction must be in (0, 1), got {self.test_fraction}"
            )


def load_contrastive_split(
    config: ContrastiveDataConfig, train: bool, samples: str | Path | None = None
) -> tuple[Dataset, list[str]]:
    """One split of the configured data set and its class names.

    Every data set yields ``(image, label, sample_id)`` with images in ``[0, 1]``.
    ``samples``: the digits' sample table written by :func:`digits_sample_table` (the
    workflow's ``prepare_contrastive_data``), so that a job reads the split instead of
    importing scikit-learn to draw it again; without it the split is drawn here. The
    other data sets come split and ignore it.

    Raises
    ------
    FileNotFoundError
        When the data are absent; the message names the expected path and the fix.
    """
    if config.name in CIFAR_NAMES:
        dataset = load_cifar(config.root, config.name, train=train, verify=config.verify)
        return dataset, dataset.classes
    if config.name == "digits":
        return _digits_split(config, train, samples)
    from monoscope.data import DataConfig, ImageDataset, build_source

    folder = Path(config.root).expanduser() / (config.train_folder if train else config.test_folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image folder not found: {folder}. contrastive.data.root must hold "
            f"'{config.train_folder}/' and '{config.test_folder}/', each with one sub-folder "
            "per class (ImageNet-100: the 100 synset folders of the CMC class list, copied "
            "from ImageNet's train and val sets)"
        )
    data_config = DataConfig(
        name="imagefolder", root=str(folder), image_size=config.image_size, resize=config.resize
    )
    table = build_source(data_config).list_samples()
    dataset = ImageDataset(data_config, table)
    return dataset, list(dataset.source.classes)


def contrastive_samples(job_input) -> str | None:
    """The sample table a workflow job was given (input ``contrastive_samples``), if any."""
    paths = list(getattr(job_input, "contrastive_samples", None) or [])
    return paths[0] if paths else None


def _digits_config(config: ContrastiveDataConfig):
    from monoscope.data import DataConfig

    return DataConfig(
        name="digits",
        image_size=config.image_size,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )


def digits_sample_table(config: ContrastiveDataConfig) -> tuple[pd.DataFrame, list[str]]:
    """The digits' sample table (``sample_id``, ``label``, ``split``) and class names,
    split as :func:`monoscope.data.make_sample_table` does (scikit-learn's stratified
    split, seeded)."""
    from monoscope.data import make_sample_table

    return make_sample_table(_digits_config(config))


def _digits_split(
    config: ContrastiveDataConfig, train: bool, samples: str | Path | None = None
) -> tuple[Dataset, list[str]]:
    """scikit-learn's digits, upsampled, in the split of ``samples`` or drawn here."""
    import torch.nn.functional as F

    from monoscope.data import DigitsSource, InMemoryDataset, read_sample_table

    data_config = _digits_config(config)
    source = DigitsSource(data_config)
    if samples is None:
        table, classes = digits_sample_table(config)
    else:
        table, classes = read_sample_table(samples), list(source.classes)
        missing = {"sample_id", "label", "split"} - set(table.columns)
        if missing:
            raise ValueError(f"{samples} is not a sample table: it lacks {sorted(missing)}")
    rows = table[table["split"] == ("train" if train else "test")]
    ids = torch.as_tensor(rows["sample_id"].to_numpy().copy(), dtype=torch.int64)
    size = config.image_size
    # All at once: the digits are small, and one interpolation call is what
    # DigitsSource.load does per image.
    images = F.interpolate(
        source.images[ids][:, None], size=(size, size), mode="bilinear", align_corners=False
    )
    images = images.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
    return InMemoryDataset(images, torch.as_tensor(rows["label"].to_numpy().copy()), ids), classes
