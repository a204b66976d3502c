"""Subject models behind a small registry.

A model is named ``demo_cnn``, ``torchvision:<name>`` or ``timm:<name>``. Its weights
come from one of:

* a local file (``.safetensors``, or a torch checkpoint read with ``weights_only=True``);
* ``cache``: the library's own cache (torch hub for torchvision, the Hugging Face cache
  for timm), never downloaded at run time;
* ``random``: random initialisation, only when a config says so explicitly.

A missing file is an error that names the path and how to obtain it.

Normalisation travels with the model (:class:`SubjectModel`), since it is a property
of the training data of the weights, not of the images we feed.
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

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Statistics of scikit-learn's digits scaled to [0, 1] and upsampled (all channels equal).
DIGITS_MEAN = (0.30, 0.30, 0.30)
DIGITS_STD = (0.40, 0.40, 0.40)


class MissingWeightsError(FileNotFoundError):
    """Raised when a configured weight file or cache entry does not exist."""


@dataclass(frozen=True)
class ModelConfig:
    """Which model, with which weights.

    Parameters
    ----------
    name : ``demo_cnn``, ``torchvision:<name>`` or ``timm:<name>``.
    weights : path of a weight file, ``cache`` or ``random``.
    num_classes : outputs, for ``weights: random`` (ignored otherwise).
    """

    name: str
    weights: str
    num_classes: int | None = None

    def __post_init__(self) -> None:
        family = self.name.split(":", 1)[0]
        if family not in MODEL_FAMILIES:
            raise ValueError(
                f"model.name: unknown model family '{family}' in '{self.name}'; "
                f"known: {sorted(MODEL_FAMILIES)} (e.g. 'torchvision:resnet50', 'timm:resnet50.a1_in1k')"
            )
        if not self.weights:
            raise ValueError("model.weights must be a file path, 'cache' or 'random'")


@dataclass
class SubjectModel:
    """A network in eval mode with the normalisation its weights expect.

    ``label_map`` maps data set labels to output indices when they differ (the demo
    model is trained on merged digit labels).
    """

    name: str
    net: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_map: torch.Tensor | None = None
    metadata: dict = field(default_factory=dict)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device)
        return (images - mean[:, None, None]) / std[:, None, None]

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
        num_classes = _classifier_outputs(state)
        kwargs = {"num_classes": num_classes} if num_classes else {}
        net = torchvision.models.get_model(arch, weights=None, **kwargs)
        load_state(net, state, config.weights)
    return SubjectModel(config.name, net.eval(), IMAGENET_MEAN, IMAGENET_STD)


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
    from monoscope.models.demo import DemoCNN

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
    state, metadata = load_tensors(path)
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


def _classifier_outputs(state: dict[str, torch.Tensor]) -> int | None:
    for key in ("fc.weight", "classifier.weight", "head.fc.weight", "head.weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


MODEL_FAMILIES: dict[str, Callable[[str, ModelConfig], SubjectModel]] = {
    "demo_cnn": _demo_cnn,
    "torchvision": _torchvision,
    "timm": _timm,
}


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
