"""Checks of a whole workflow config that need no job: they run while the DAG is built.

The schema checks types and ranges. What it cannot know is whether a layer exists in the
chosen model, whether an architecture name is real, whether a data folder is there, or
whether a figure neuron is a channel of the upper layer. These checks answer that in a
second or two, without weights and without data: the model is built on PyTorch's
``meta`` device (shapes only, no memory, no initialisation cost) and one forward pass of
a meta image gives every layer's channel count.

Every failure is a :class:`ConfigError` whose message starts with the config key and the
value it holds, so a wrong setting reads as one line before any job has started.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from monoscope.models.registry import ModelConfig, SubjectModel, layer_channels, load_model


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the value."""

    def __init__(self, key: str, value: Any, reason: str) -> None:
        super().__init__(f"{key}: {value!r} {reason}")
        self.key, self.value = key, value


def model_skeleton(model: Mapping[str, Any], demo: Mapping[str, Any] | None = None) -> SubjectModel:
    """The subject model of a config's ``model`` section on the meta device.

    Weights are never read: the skeleton has the architecture's layers and shapes only.
    For ``demo_cnn`` the widths come from the ``demo`` section (the trained file does not
    exist yet when the DAG is built). Raises :class:`ConfigError` for an unknown
    architecture, naming ``model.name``.
    """
    name = model["name"]
    if name == "demo_cnn":
        from monoscope.models.demo import DemoCNN

        widths = (demo or {}).get("widths", (16, 32, 32, 8))
        with torch.device("meta"):
            net = DemoCNN(widths=widths)
        return SubjectModel(name, net.eval(), (0.0,), (1.0,))
    config = ModelConfig(name, "random")
    quiet = logging.getLogger("monoscope.models.registry")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the random-weights warning means nothing here
    try:
        with torch.device("meta"):
            return load_model(config, device="meta")
    except (ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(
            "model.name", name, f"is not a model this install can build ({error})"
        ) from None
    finally:
        quiet.setLevel(level)


def _layer_names(net: torch.nn.Module) -> list[str]:
    return [name for name, _ in net.named_modules() if name]


def check_layers(skeleton: SubjectModel, layers: Iterable[tuple[str, str]]) -> None:
    """Raise :class:`ConfigError` for the first ``(key, layer)`` not in ``skeleton``."""
    names = _layer_names(skeleton.net)
    known = set(names)
    for key, layer in layers:
        if layer in known:
            continue
        close = difflib.get_close_matches(layer, names, n=3)
        hint = f"; did you mean {close}?" if close else ""
        top = [child for child, _ in skeleton.net.named_children()]
        raise ConfigError(
            key,
            layer,
            f"is not a layer of {skeleton.name}{hint} (top-level modules: {top}; nested "
            "layers take dotted names such as 'layer4.1')",
        )


def channel_counts(skeleton: SubjectModel, layers: Iterable[str], image_size: int) -> dict:
    """Channels of each layer's output, from one forward pass of a meta image."""
    return layer_channels(skeleton, list(dict.fromkeys(layers)), image_size)


def check_channels(key: str, channels: Iterable[int], count: int, layer: str) -> None:
    """Raise :class:`ConfigError` when a channel index is not below ``count``."""
    outside = sorted(channel for channel in channels if not 0 <= int(channel) < count)
    if outside:
        raise ConfigError(
            key, outside, f"are not channels of {layer}, which has {count} (0..{count - 1})"
        )


def check_neuron_selection(selection: Any, count: int, layer: str) -> None:
    """The ``neurons`` key (all, a list, a range or a top-m) against ``count`` channels."""
    if isinstance(selection, list):
        check_channels("neurons", selection, count, layer)
    elif isinstance(selection, Mapping) and "stop" in selection:
        if int(selection["stop"]) > count:
            raise ConfigError(
                "neurons", dict(selection), f"ends beyond the {count} channels of {layer}"
            )
    elif isinstance(selection, Mapping) and "top" in selection:
        if int(selection["top"]) > count:
            raise ConfigError(
                "neurons.top", selection["top"], f"exceeds the {count} channels of {layer}"
            )


def check_folder(key: str, root: str | None, produced: Collection[str] = ()) -> None:
    """Raise :class:`ConfigError` when ``root`` is unset or neither exists nor is made by a
    rule of the workflow (``produced``: folders that rules write)."""
    if not root:
        raise ConfigError(key, root, "must name a folder for this data set")
    if Path(root).expanduser().exists():
        return
    if str(Path(root)) in {str(Path(path)) for path in produced}:
        return
    raise ConfigError(key, root, "does not exist (no rule of the workflow writes it either)")


def schema_error_summary(error: BaseException) -> str:
    """One line for a failed schema validation: the config key and what is wrong.

    Snakemake's ``validate`` raises an error whose text holds the whole failing
    sub-schema (about 1,800 lines for a top-level key); the jsonschema error it wraps
    (its ``__cause__`` or ``__context__``) knows the key path and the reason, which is
    all a user needs. Falls back to the first line of ``error`` when there is none.
    """
    seen, current = set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        path = getattr(current, "absolute_path", None)
        message = getattr(current, "message", None)
        if path is not None and message is not None:
            key = ".".join(str(part) for part in path) or "(the top level)"
            return f"config key {key}: {message} (see config/schema.yaml)"
        current = current.__cause__ or current.__context__
    return str(error).splitlines()[0]
