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
import json
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
    """The subject model of a config's ``model`` section on the meta device (the small
    demo network on the CPU).

    Weights are never read: the skeleton has the architecture's layers and shapes only.
    For ``demo_cnn`` the widths come from the ``demo`` section (the trained file does not
    exist yet when the DAG is built). Raises :class:`ConfigError` for an unknown
    architecture, naming ``model.name``.
    """
    name = model["name"]
    if name == "demo_cnn":
        from monoscope.models.demo import DemoCNN

        widths = (demo or {}).get("widths", (16, 32, 32, 8))
        # On the CPU, not the meta device: the demo network's few thousand weights cost
        # nothing to initialise, and the first forward pass on the meta device imports
        # torch's symbolic-shape machinery (sympy), which every DAG build would pay.
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
        nested = next((name for name in names if "." in name), None)
        example = f"; nested layers take dotted names such as '{nested}'" if nested else ""
        raise ConfigError(
            key,
            layer,
            f"is not a layer of {skeleton.name}{hint} (top-level modules: {top}{example})",
        )


def channel_counts(skeleton: SubjectModel, layers: Iterable[str], image_size: int) -> dict:
    """Channels of each layer's output, from one forward pass of a blank image on the
    skeleton's device."""
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
        raise ConfigError(key, root, "must name where this data set is (a folder or file)")
    if Path(root).expanduser().exists():
        return
    if str(Path(root)) in {str(Path(path)) for path in produced}:
        return
    raise ConfigError(key, root, "does not exist (no rule of the workflow writes it either)")


def check_config(config: Mapping[str, Any], produced: Collection[str] = ()) -> None:
    """Every check of this module on a schema-validated workflow config (defaults filled).

    Only the sections of ``config["branches"]`` are checked. ``produced`` names the
    folders that rules write (e.g. the photo folder), which need not exist yet. Raises
    :class:`ConfigError` for the first failure, naming its key.
    """
    branches = set(config["branches"])
    if branches & {"pure", "sae"}:
        data = config["data"]
        if data["name"] == "imagefolder":
            check_folder("data.root", data["root"], produced)
        model = config["model"]
        upper = model["upper_layer"]
        skeleton = model_skeleton(model, config.get("demo"))
        layers = [("model.upper_layer", upper), ("model.lower_layer", model["lower_layer"])]
        layers += _indexed("references.layers", config["references"]["layers"] or [])
        layers += _indexed("sae.layers", config["sae"]["layers"])  # SAE units join PURE's
        check_layers(skeleton, layers)
        if "pure" in branches:
            count = channel_counts(skeleton, [upper], data["image_size"])[upper]
            check_neuron_selection(config["neurons"], count, upper)
            check_channels("figures.neurons", config["figures"]["neurons"], count, upper)
            for name in config["evaluation"]["embedders"]:
                embedder = config["embedders"].get(name, {})
                if embedder.get("kind") == "model_layer" and embedder.get("model"):
                    key = f"embedders.{name}"
                    try:
                        judge = model_skeleton({"name": embedder["model"]}, config.get("demo"))
                    except ConfigError as error:
                        raise ConfigError(f"{key}.model", error.value, "is not a model") from None
                    check_layers(judge, [(f"{key}.layer", embedder["layer"])])
    if "contrastive" in branches:
        data = config["contrastive"]["data"]
        if data["name"] != "digits":
            check_folder("contrastive.data.root", data["root"], produced)
    if "equivariant" in branches:
        data = config["equivariant"]["data"]
        if data["source"] == "images":
            check_folder("equivariant.data.root", data["root"], produced)


# The sections whose change makes an experiment's results those of another experiment.
RECORDED_SECTIONS = ("data", "model", "demo", "contrastive.data", "equivariant.data")


def experiment_record(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config sections that define an experiment's results, JSON-ready: ``data``,
    ``model``, ``demo`` (for ``demo_cnn``) and the data of the contrastive and
    equivariant branches (when they run).

    Written once per experiment (``results/<experiment>/experiment.json``) and compared
    at DAG-build time by :func:`check_experiment_record`.
    """
    branches = set(config.get("branches", ()))
    demo_model = config.get("model", {}).get("name") == "demo_cnn"
    sections = [
        dotted
        for dotted in RECORDED_SECTIONS
        if (dotted != "demo" or demo_model)
        and (not dotted.endswith(".data") or dotted.split(".")[0] in branches)
    ]
    record = {}
    for dotted in sections:
        value: Any = config
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            record[dotted] = json.loads(json.dumps(value, sort_keys=True))
    return record


def check_experiment_record(
    path: str | Path, record: Mapping[str, Any], experiment: str, replace: bool = False
) -> None:
    """Refuse a config whose data or model sections differ from those ``path`` records.

    Snakemake reruns every job whose params changed and deletes the outputs of a job
    that fails, so a mistyped data root or model under an existing experiment name
    could destroy its results. A changed record is therefore an error naming the
    changed keys, unless ``replace`` (config key ``replace_results``) says the results
    are to be recomputed in place. No record (a new experiment) passes.
    """
    path = Path(path)
    if replace or not path.is_file():
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError("experiment", experiment, f"has an unreadable {path} ({error})") from None
    # Sections of branches that ran only once (or only now) are not compared: turning a
    # branch off or on changes nothing the other branches made.
    shared = sorted(set(stored) & set(record))
    current = json.loads(json.dumps(dict(record), sort_keys=True))
    changed = _changed_keys(
        {name: stored[name] for name in shared}, {name: current[name] for name in shared}
    )
    if changed:
        shown = "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")
        raise ConfigError(
            "experiment",
            experiment,
            f"holds results made with other data or model settings ({shown}). Use a new "
            "experiment name for this config (--config experiment=<name>), or set "
            f"replace_results: true to recompute {path.parent} in place",
        )


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        changed = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                # An option the stored record predates (a newer monoscope's setting) did
                # not make the old results; only changes of recorded values count.
                continue
            if key not in new:
                changed.append(f"{name}: {old.get(key)!r} -> {new.get(key)!r}")
            else:
                changed += _changed_keys(old[key], new[key], name)
        return changed
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def _indexed(key: str, values: Iterable[str]) -> list[tuple[str, str]]:
    return [(f"{key}[{index}]", value) for index, value in enumerate(values)]


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
