"""Data sets behind a small registry.

Preprocessing is split in two on purpose:

* **load/resize** (here): a sample is an *unnormalised* float image in ``[0, 1]`` of
  shape ``[3, H, W]``, so later stages can crop and show it as it is;
* **normalisation** belongs to the model (its training statistics) and is applied
  just before the forward pass (:class:`monoscope.models.SubjectModel`).

A data set is described by a *sample table* (written once by the ``prepare_data``
rule): one row per sample with a stable ``sample_id``, its ``label``, its ``split``
and, for image files, its ``path``. Every stage opens the same table, so sample ids
mean the same thing everywhere.

Registered sources: ``digits`` (scikit-learn's handwritten digits, the offline
default) and ``imagefolder`` (any torchvision ``ImageFolder`` tree, e.g. ImageNet val).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from monoscope.registry import Registry

SPLITS = ("all", "train", "test")


@dataclass(frozen=True)
class DataConfig:
    """Which images, at which size, split how.

    Parameters
    ----------
    name : registered source, ``digits`` or ``imagefolder``.
    root : folder of an ``imagefolder`` tree (class sub-folders of images).
    image_size : side of the square image a model sees.
    resize : for image files, the shorter side is resized to this before the centre
        crop to ``image_size`` (ImageNet convention: 256 then 224). ``None`` resizes
        straight to ``image_size``.
    test_fraction : share of samples put in the ``test`` split (stratified, seeded).
    max_samples : keep a seeded random subset of this many samples (tiny configs).
    seed : seed of the split and the subset.
    """

    name: str = "digits"
    root: str | None = None
    image_size: int = 32
    resize: int | None = None
    test_fraction: float = 0.2
    max_samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in DATA_SOURCES:
            raise ValueError(
                f"data.name: unknown data set '{self.name}'; known: {sorted(DATA_SOURCES)}"
            )
        if self.image_size < 1:
            raise ValueError(f"data.image_size must be positive, got {self.image_size}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.name == "imagefolder" and not self.root:
            raise ValueError("data.root must name the image folder when data.name is 'imagefolder'")


# --------------------------------------------------------------------------- sources


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images [1797, 8, 8] float64 in 0..16, labels int64)``.

    Read straight from the ``digits.csv.gz`` that scikit-learn ships, found without
    importing scikit-learn: every job that opens the demo data set would pay for
    ``import sklearn.datasets`` only to parse this file (``benchmarks/bench_startup.py``
    measures both ways) (as
    ``sklearn.datasets.load_digits`` does: 64 pixel columns, then the label). Falls back
    to ``load_digits`` where the file is not at that place.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    locations = spec.submodule_search_locations if spec is not None else None
    for location in locations or ():
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


class DigitsSource:
    """scikit-learn's 1797 handwritten digits (8x8, values 0..16), upsampled bilinearly."""

    def __init__(self, config: DataConfig) -> None:
        images, labels = load_digits_arrays()
        self.config = config
        self.images = torch.from_numpy(images.astype(np.float32) / 16.0)  # [N, 8, 8]
        self.labels = labels
        self.classes = [str(digit) for digit in range(10)]

    def list_samples(self) -> pd.DataFrame:
        return pd.DataFrame({"sample_id": np.arange(len(self.labels)), "label": self.labels})

    def load(self, row: pd.Series) -> torch.Tensor:
        image = self.images[int(row.sample_id)][None, None]
        size = self.config.image_size
        image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
        return image[0].clamp(0.0, 1.0).expand(3, size, size).contiguous()


class ImageFolderSource:
    """Any ``root/<class>/<image>`` tree, listed in torchvision's ImageFolder order.

    For ImageNet val arranged in synset folders, sorted folder order is the standard
    class index order of ImageNet-1k models.
    """

    def __init__(self, config: DataConfig) -> None:
        from torchvision import transforms
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        root = Path(config.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"image folder not found: {root} (data.root). It must hold one sub-folder "
                "per class with the images inside, e.g. ImageNet val sorted into synset folders."
            )
        self.config = config
        self.root = root
        try:
            self.classes, class_to_index = find_classes(str(root))
            self.items = make_dataset(str(root), class_to_index, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as error:  # torchvision's messages omit the root
            raise FileNotFoundError(
                f"image folder {root} (data.root) is not a usable ImageFolder tree: {error}"
            ) from error
        size = config.image_size
        self.transform = transforms.Compose(
            [
                transforms.Resize(config.resize or size),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
            ]
        )

    def list_samples(self) -> pd.DataFrame:
        paths = [str(Path(path).relative_to(self.root)) for path, _ in self.items]
        labels = [label for _, label in self.items]
        return pd.DataFrame({"sample_id": np.arange(len(paths)), "label": labels, "path": paths})

    def load(self, row: pd.Series) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.root / row.path) as image:
            return self.transform(image.convert("RGB"))


DATA_SOURCES: Registry[Callable[[DataConfig], object]] = Registry("data set")
DATA_SOURCES.add("digits", DigitsSource)
DATA_SOURCES.add("imagefolder", ImageFolderSource)


def build_source(config: DataConfig):
    return DATA_SOURCES[config.name](config)


# --------------------------------------------------------------------------- sample table


def make_sample_table(config: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """List the samples with a seeded, stratified train/test split.

    Returns the table (``sample_id``, ``label``, ``split`` and maybe ``path``) and the
    class names.
    """
    from sklearn.model_selection import train_test_split

    source = build_source(config)
    table = source.list_samples()
    rng = np.random.default_rng(config.seed)
    if config.max_samples is not None and config.max_samples < len(table):
        keep = np.sort(rng.choice(len(table), size=config.max_samples, replace=False))
        table = table.iloc[keep].reset_index(drop=True)
    if len(table) < 2:
        raise ValueError(
            f"data set {config.name} has {len(table)} sample(s); a split needs at least 2"
        )
    labels = table["label"].to_numpy()
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    _, test_rows = train_test_split(
        np.arange(len(table)),
        test_size=config.test_fraction,
        random_state=config.seed,
        stratify=stratify,
    )
    split = np.full(len(table), "train", dtype=object)
    split[test_rows] = "test"
    table["split"] = split
    return table, list(source.classes)


def read_sample_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"sample table not found: {path} (written by the prepare_data rule)"
        )
    return pd.read_csv(path)


class ImageDataset(Dataset):
    """Samples of one split as ``(image, label, sample_id)``; images unnormalised in [0, 1].

    Images are loaded lazily, one at a time, so memory does not grow with the data set.
    """

    def __init__(self, config: DataConfig, table: pd.DataFrame, split: str = "all") -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
        self.config = config
        self.table = table if split == "all" else table[table["split"] == split]
        self.table = self.table.reset_index(drop=True)
        self.source = build_source(config)
        self.sample_ids = torch.tensor(self.table["sample_id"].to_numpy(), dtype=torch.int64)
        self.labels = torch.tensor(self.table["label"].to_numpy(), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        row = self.table.iloc[position]
        return self.source.load(row), int(row.label), int(row.sample_id)

    def subset(self, positions) -> torch.utils.data.Subset:
        return torch.utils.data.Subset(self, list(positions))

    def position_of(self, sample_ids) -> np.ndarray:
        """Positions in this data set of the given sample ids."""
        lookup = pd.Series(np.arange(len(self.table)), index=self.table["sample_id"].to_numpy())
        return lookup.loc[np.asarray(sample_ids).reshape(-1)].to_numpy()


def open_dataset(config: DataConfig, table_path: str | Path, split: str = "all") -> ImageDataset:
    return ImageDataset(config, read_sample_table(table_path), split)


def shard_positions(length: int, shard: int, shards: int) -> range:
    """Contiguous positions of shard ``shard`` (1-based) out of ``shards``.

    Sizes differ by at most one, and the shards cover ``range(length)`` in order.
    """
    if not 1 <= shard <= shards:
        raise ValueError(f"shard {shard} is not in 1..{shards}")
    base, extra = divmod(length, shards)
    start = (shard - 1) * base + min(shard - 1, extra)
    stop = start + base + (1 if shard <= extra else 0)
    return range(start, stop)


def parse_scatteritem(item: str) -> tuple[int, int]:
    """Snakemake's ``{scatteritem}`` wildcard, ``'3-of-8'``, as ``(3, 8)``."""
    try:
        shard, shards = item.split("-of-")
        return int(shard), int(shards)
    except ValueError as error:
        raise ValueError(f"not a scatter item of the form 'i-of-n': '{item}'") from error


class InMemoryDataset(Dataset):
    """Images already in memory, with the same interface as :class:`ImageDataset`.

    For tests, benchmarks and small interactive work; the workflow streams from disk.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, sample_ids: torch.Tensor | None = None
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        ids = torch.arange(len(images)) if sample_ids is None else torch.as_tensor(sample_ids)
        self.sample_ids = ids.to(torch.int64)
        self._lookup = pd.Series(np.arange(len(ids)), index=self.sample_ids.numpy())

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        return self.images[position], int(self.labels[position]), int(self.sample_ids[position])

    def position_of(self, sample_ids) -> np.ndarray:
        return self._lookup.loc[np.asarray(sample_ids).reshape(-1)].to_numpy()
