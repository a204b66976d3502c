"""Reference samples of every channel (PURE stage 1): ActMax and RelMax.

For every channel j of a layer, the data set is scored sample by sample and the top
N samples are kept, with the spatial position where the score peaks:

* **ActMax**: the score is the spatial maximum of the channel's activation map;
* **RelMax**: the score is the channel's CRP relevance (relevance started at the true
  class logit, or the predicted one, composite ``EpsilonPlusFlat`` with the model's
  canonizers), summed over space and, as in zennit-crp, normalised by the summed
  absolute relevance of all channels of the layer (``abs_norm``). The position is the
  argmax of the relevance map.

The top N are kept in a running buffer of ``[C, N]`` entries merged batch by batch,
so memory does not grow with the data set. Ties are broken by the smaller sample id,
which makes the result independent of batch size and of how the data set is sharded.
ActMax alone needs no gradients; the forward pass stops after the deepest requested
layer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from monoscope.io import load_tensors, require_entries, save_tensors
from monoscope.logs import progress_kwargs
from monoscope.models.registry import SubjectModel

log = logging.getLogger(__name__)

MODES = ("actmax", "relmax")
RELMAX_TARGETS = ("label", "prediction")
# Sample id of an empty slot (a shard with fewer samples than N); sorts after real ids.
EMPTY_ID = torch.iinfo(torch.int64).max


@dataclass(frozen=True)
class ReferenceConfig:
    """Options of reference collection.

    Parameters
    ----------
    n : references kept per channel (PURE: 100).
    modes : ``actmax`` and/or ``relmax``.
    batch_size : samples per forward (and backward) pass.
    relmax_target : start relevance at the ``label`` logit or the ``prediction``.
    relmax_abs_norm : normalise RelMax scores by the layer's total absolute relevance.
    num_workers : data loader worker processes (0 loads in the main process).
    """

    n: int = 40
    modes: tuple[str, ...] = ("actmax",)
    batch_size: int = 64
    relmax_target: str = "label"
    relmax_abs_norm: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"references.n must be positive, got {self.n}")
        if not self.modes or any(mode not in MODES for mode in self.modes):
            raise ValueError(
                f"references.modes must be a non-empty subset of {MODES}, got {self.modes}"
            )
        if self.relmax_target not in RELMAX_TARGETS:
            raise ValueError(f"references.relmax_target must be one of {RELMAX_TARGETS}")
        if self.batch_size < 1:
            raise ValueError(f"references.batch_size must be positive, got {self.batch_size}")


@dataclass
class TopReferences:
    """The top N samples of each channel of one layer, best first.

    ``sample_ids``, ``scores`` and ``positions`` are ``[C, N]``; ``positions`` are flat
    indices into the layer's spatial map of shape ``spatial_shape`` (``()`` for a
    layer without spatial dimensions).
    """

    sample_ids: torch.Tensor
    scores: torch.Tensor
    positions: torch.Tensor
    spatial_shape: tuple[int, ...]

    @property
    def n_channels(self) -> int:
        return self.sample_ids.shape[0]

    def filled(self) -> bool:
        return bool((self.sample_ids != EMPTY_ID).all())


# --------------------------------------------------------------------------- top-N


def select_top(
    sample_ids: torch.Tensor, scores: torch.Tensor, positions: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, the ``n`` entries with the highest score, ties to the smaller sample id.

    All inputs are ``[C, M]``; outputs are ``[C, min(n, M)]``, best first.
    """
    # Two stable sorts give the lexicographic order (score descending, id ascending).
    by_id = torch.argsort(sample_ids, dim=1, stable=True)
    sample_ids, scores, positions = (t.gather(1, by_id) for t in (sample_ids, scores, positions))
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :n]
    return tuple(t.gather(1, by_score) for t in (sample_ids, scores, positions))


class RunningTopN:
    """Top N per channel over a stream of batches, in ``O(C * (N + batch))`` memory."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sample_ids: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.spatial_shape: tuple[int, ...] = ()

    def update(
        self, sample_ids: torch.Tensor, scores: torch.Tensor, positions: torch.Tensor
    ) -> None:
        """Add one batch: ``sample_ids`` ``[B]``, ``scores`` and ``positions`` ``[B, C]``."""
        scores = scores.detach().float().cpu().T
        positions = positions.detach().cpu().T.long()
        ids = sample_ids.detach().cpu().long()[None, :].expand_as(scores)
        if torch.isnan(scores).any():
            raise FloatingPointError(
                "NaN scores while collecting references (check the model's weights)"
            )
        if self.sample_ids is not None:
            ids = torch.cat([self.sample_ids, ids], dim=1)
            scores = torch.cat([self.scores, scores], dim=1)
            positions = torch.cat([self.positions, positions], dim=1)
        self.sample_ids, self.scores, self.positions = select_top(ids, scores, positions, self.n)

    def result(self) -> TopReferences:
        if self.sample_ids is None:
            raise ValueError("no samples were seen")
        return pad_references(
            TopReferences(self.sample_ids, self.scores, self.positions, self.spatial_shape), self.n
        )


def pad_references(references: TopReferences, n: int) -> TopReferences:
    """Fill rows shorter than ``n`` with empty slots (id ``EMPTY_ID``, score ``-inf``)."""
    missing = n - references.sample_ids.shape[1]
    if missing <= 0:
        return references
    channels = references.n_channels
    return TopReferences(
        torch.cat([references.sample_ids, torch.full((channels, missing), EMPTY_ID)], dim=1),
        torch.cat([references.scores, torch.full((channels, missing), float("-inf"))], dim=1),
        torch.cat(
            [references.positions, torch.zeros((channels, missing), dtype=torch.int64)], dim=1
        ),
        references.spatial_shape,
    )


def merge_references(parts: Sequence[TopReferences], n: int) -> TopReferences:
    """Merge per-shard top-N results into the top N of their union."""
    if not parts:
        raise ValueError("nothing to merge")
    shapes = {part.spatial_shape for part in parts}
    channels = {part.n_channels for part in parts}
    if len(shapes) != 1 or len(channels) != 1:
        raise ValueError(
            f"shards disagree on the layer: spatial shapes {shapes}, channels {channels}"
        )
    ids, scores, positions = select_top(
        torch.cat([part.sample_ids for part in parts], dim=1),
        torch.cat([part.scores for part in parts], dim=1),
        torch.cat([part.positions for part in parts], dim=1),
        n,
    )
    return pad_references(TopReferences(ids, scores, positions, parts[0].spatial_shape), n)


# --------------------------------------------------------------------------- scores


def spatial_max(activation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ActMax scores ``[B, C]``: the maximum over space, and its flat position."""
    if activation.ndim == 2:
        return activation, torch.zeros_like(activation, dtype=torch.int64)
    if activation.ndim != 4:
        raise ValueError(
            f"expected a [B, C] or [B, C, H, W] layer output, got shape {tuple(activation.shape)}"
        )
    return activation.flatten(2).max(dim=2)


def relevance_scores(
    relevance: torch.Tensor, abs_norm: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """RelMax scores ``[B, C]``: summed relevance (zennit-crp's ``max_target='sum'``).

    With ``abs_norm`` each sample's scores are divided by the sum of their absolute
    values over channels (plus 1e-10), as zennit-crp does. The position is the argmax
    of the relevance map.
    """
    if relevance.ndim == 2:
        scores, positions = relevance, torch.zeros_like(relevance, dtype=torch.int64)
    elif relevance.ndim == 4:
        flat = relevance.flatten(2)
        scores, positions = flat.sum(dim=2), flat.argmax(dim=2)
    else:
        raise ValueError(
            f"expected a [B, C] or [B, C, H, W] relevance, got {tuple(relevance.shape)}"
        )
    if abs_norm:
        scores = scores / (scores.abs().sum(dim=1, keepdim=True) + 1e-10)
    return scores, positions


# --------------------------------------------------------------------------- forward


class _StopForward(Exception):
    """Raised by a hook once every requested layer has been seen."""


class LayerRecorder:
    """Records the outputs of named layers; optionally stops the forward pass there.

    Use as a context manager: hooks are removed on exit, whatever happens.
    """

    def __init__(
        self, model: SubjectModel, layers: Sequence[str], stop_early: bool = False
    ) -> None:
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.stop_early = stop_early
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self) -> LayerRecorder:
        for name in self.layers:
            self._handles.append(self.model.layer(name).register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def record(_module, _inputs, output):
            self.outputs[name] = output
            if self.stop_early and len(self.outputs) == len(self.layers):
                raise _StopForward

        return record

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of the layers for already normalised ``images``."""
        self.outputs = {}
        try:
            self.model.net(images)
        except _StopForward:
            pass
        missing = [name for name in self.layers if name not in self.outputs]
        if missing:
            raise RuntimeError(f"layers {missing} were not executed in the model's forward pass")
        return self.outputs


def canonizers_for(net: torch.nn.Module) -> list:
    """zennit canonizers that fit ``net`` (ResNet blocks, VGG, or batch-norm merging)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.models.vgg import VGG
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    if any(isinstance(module, (BasicBlock, Bottleneck)) for module in net.modules()):
        return [ResNetCanonizer()]
    if isinstance(net, VGG):
        return [VGGCanonizer()]
    log.warning(
        "no dedicated zennit canonizer for %s: merging batch norms only; residual "
        "additions (if any) are attributed with the plain gradient",
        type(net).__name__,
    )
    return [SequentialMergeBatchNorm()]


def collect_references(
    model: SubjectModel,
    dataset: torch.utils.data.Dataset,
    layers: Sequence[str],
    config: ReferenceConfig,
    device: torch.device | str = "cpu",
    positions: Iterable[int] | None = None,
    desc: str = "references",
) -> dict[tuple[str, str], TopReferences]:
    """Top-N references of every channel of ``layers``, for each mode in ``config.modes``.

    ``dataset`` yields ``(image, label, sample_id)`` with unnormalised images;
    ``positions`` restricts the pass to those dataset positions (one shard).
    Returns ``{(mode, layer): TopReferences}``.
    """
    device = torch.device(device)
    if positions is not None:
        dataset = torch.utils.data.Subset(dataset, list(positions))
    if len(dataset) == 0:
        raise ValueError("no samples to collect references from")
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    if "relmax" in config.modes and not model.has_head:
        raise ValueError(
            f"references.modes: relmax starts relevance at a class logit, but {model.name} "
            "was built without a classifier (its weight file has no head); use actmax"
        )
    trackers = {(mode, layer): RunningTopN(config.n) for mode in config.modes for layer in layers}
    batches = tqdm(loader, desc=desc, unit="batch", **progress_kwargs())
    model.net.eval()
    if "relmax" not in config.modes:
        with LayerRecorder(model, layers, stop_early=True) as recorder, torch.inference_mode():
            for images, _labels, sample_ids in batches:
                outputs = recorder(model.normalize(images.to(device, non_blocking=True)))
                _update(trackers, "actmax", outputs, sample_ids, spatial_max)
    else:
        _collect_with_relevance(model, batches, layers, config, device, trackers)
    return {key: tracker.result() for key, tracker in trackers.items()}


def _update(trackers, mode, outputs, sample_ids, score_fn) -> None:
    for layer, output in outputs.items():
        scores, positions = score_fn(output)
        tracker = trackers[(mode, layer)]
        tracker.spatial_shape = tuple(output.shape[2:])
        tracker.update(sample_ids, scores, positions)


def _collect_with_relevance(model, batches, layers, config, device, trackers) -> None:
    """One CRP pass per batch gives activations and conditional relevances together."""
    from crp.attribution import CondAttribution
    from zennit.composites import EpsilonPlusFlat

    attribution = CondAttribution(model.net, device=device, no_param_grad=True)
    composite = EpsilonPlusFlat(canonizers=canonizers_for(model.net))
    outputs = None
    with composite.context(model.net):
        for images, labels, sample_ids in batches:
            inputs = model.normalize(images.to(device))
            with torch.no_grad():
                logits = model.net(inputs) if config.relmax_target == "prediction" else None
                if outputs is None:
                    outputs = (logits if logits is not None else model.net(inputs[:1])).shape[1]
            targets = model.targets(labels.to(device)) if logits is None else logits.argmax(dim=1)
            # Checked here: a failed CRP call would leave its hooks on the model.
            if int(targets.min()) < 0 or int(targets.max()) >= outputs:
                raise ValueError(
                    f"RelMax targets {sorted(set(targets.tolist()))} are not all outputs of the "
                    f"model (it has {outputs}); data set labels must be the model's class "
                    "indices, or set references.relmax_target: prediction"
                )
            inputs.requires_grad_(True)
            conditions = [{attribution.MODEL_OUTPUT_NAME: [int(target)]} for target in targets]
            result = attribution(inputs, conditions, None, record_layer=list(layers))
            if "actmax" in config.modes:
                _update(trackers, "actmax", result.activations, sample_ids, spatial_max)
            _update(
                trackers,
                "relmax",
                result.relevances,
                sample_ids,
                lambda rel: relevance_scores(rel, config.relmax_abs_norm),
            )


# --------------------------------------------------------------------------- files


def save_references(path, references: dict[tuple[str, str], TopReferences], metadata: dict) -> None:
    """One safetensors file: ``<mode>/<layer>/{sample_ids,scores,positions}``."""
    tensors, shapes = {}, {}
    for (mode, layer), top in references.items():
        tensors[f"{mode}/{layer}/sample_ids"] = top.sample_ids
        tensors[f"{mode}/{layer}/scores"] = top.scores
        tensors[f"{mode}/{layer}/positions"] = top.positions
        shapes[f"{mode}/{layer}"] = list(top.spatial_shape)
    save_tensors(path, tensors, metadata={**metadata, "spatial_shapes": shapes})


def load_references(path) -> tuple[dict[tuple[str, str], TopReferences], dict]:
    """Inverse of :func:`save_references`; a foreign or incomplete file is named."""
    tensors, metadata = load_tensors(path)
    written_by = "monoscope.references.save_references (rules collect_references, merge_references)"
    require_entries(path, metadata, ["spatial_shapes"], "a references file", written_by)
    references = {}
    for key, shape in metadata["spatial_shapes"].items():
        require_entries(
            path,
            tensors,
            [f"{key}/sample_ids", f"{key}/scores", f"{key}/positions"],
            "a complete references file",
            written_by,
        )
        mode, layer = key.split("/", 1)
        references[(mode, layer)] = TopReferences(
            tensors[f"{key}/sample_ids"],
            tensors[f"{key}/scores"],
            tensors[f"{key}/positions"],
            tuple(shape),
        )
    return references, metadata


def merge_reference_files(
    paths: Sequence, n: int
) -> tuple[dict[tuple[str, str], TopReferences], dict]:
    """Merge shard files; checks that every channel ends with N real references."""
    loaded = [load_references(path) for path in paths]
    keys = set(loaded[0][0])
    if any(set(references) != keys for references, _ in loaded):
        raise ValueError("reference shards hold different modes or layers; rerun the shards")
    merged = {key: merge_references([refs[key] for refs, _ in loaded], n) for key in sorted(keys)}
    samples = sum(meta.get("n_samples", 0) for _, meta in loaded)
    for (mode, layer), top in merged.items():
        if not top.filled():
            raise ValueError(
                f"references.n = {n} is larger than the {samples} samples seen for "
                f"{mode}/{layer}; lower references.n or use more data"
            )
    metadata = dict(loaded[0][1])
    metadata.update(n=n, n_samples=samples, shards=len(paths))
    return merged, metadata


NEURON_SCORES = ("mean_score", "max_score")


def select_channels(references: TopReferences, neurons="all") -> torch.Tensor:
    """The upper channels to analyse (circuits, crops, virtual neurons), ascending.

    ``neurons`` is ``all``; a list of channel indices; a range ``{start, stop}`` (stop
    excluded); or the ``{top: m, by: mean_score | max_score}`` channels with the highest
    mean (or best) score of their N references, ties to the lower index. Large models need
    this: circuits of all 2048 channels of a ResNet's layer4 cost what the whole data set
    costs, while the question is usually about a few dozen neurons.
    """
    count = references.n_channels
    if neurons == "all":
        return torch.arange(count)
    if isinstance(neurons, (list, tuple)):
        chosen = sorted({int(channel) for channel in neurons})
        if not chosen or chosen[0] < 0 or chosen[-1] >= count:
            raise ValueError(f"neurons: {list(neurons)} are not channels 0..{count - 1}")
        return torch.tensor(chosen, dtype=torch.int64)
    if isinstance(neurons, dict) and set(neurons) == {"start", "stop"}:
        start, stop = int(neurons["start"]), int(neurons["stop"])
        if not 0 <= start < stop <= count:
            raise ValueError(f"neurons: range {start}..{stop} is not within 0..{count}")
        return torch.arange(start, stop)
    if isinstance(neurons, dict) and "top" in neurons:
        top, by = int(neurons["top"]), neurons.get("by", "mean_score")
        if by not in NEURON_SCORES:
            raise ValueError(f"neurons.by must be one of {NEURON_SCORES}, got '{by}'")
        if not 1 <= top <= count:
            raise ValueError(f"neurons.top must be in 1..{count}, got {top}")
        scores = references.scores.double()
        score = scores.mean(dim=1) if by == "mean_score" else scores.amax(dim=1)
        # Stable sort of the negated scores: equal scores keep the lower channel first.
        order = torch.argsort(-score, stable=True)
        return order[:top].sort().values
    raise ValueError(
        f"neurons: expected all, a list, {{start, stop}} or {{top, by}}, got {neurons!r}"
    )


@dataclass
class ChannelShard:
    """One ``i-of-n`` shard of the selected channels of a neuron stage (circuits, crops)."""

    top: TopReferences  # the references of the whole layer
    channels: torch.Tensor  # this shard's channels
    selected: torch.Tensor  # the channels of all shards (:func:`select_channels`)
    shard: int
    shards: int

    def metadata(self) -> dict:
        """What a shard's file records so that the merge can check coverage."""
        return {"shard": self.shard, "shards": self.shards, "selected": self.selected.tolist()}


def channel_shard(path, mode: str, layer: str, scatteritem: str, neurons="all") -> ChannelShard:
    """The references of ``(mode, layer)`` and the channels of one ``i-of-n`` shard.

    Stages sharded over neurons (circuits, crops) split the selected channels
    (:func:`select_channels`) into contiguous parts this way.
    """
    from monoscope.data import parse_scatteritem, shard_positions

    references, _ = load_references(path)
    if (mode, layer) not in references:
        raise KeyError(f"no {mode} references of {layer} in {path}; check references.modes/layers")
    top = references[(mode, layer)]
    selected = select_channels(top, neurons)
    shard, shards = parse_scatteritem(scatteritem)
    part = shard_positions(len(selected), shard, shards)
    return ChannelShard(top, selected[part.start : part.stop], selected, shard, shards)


def job_channel_shard(job) -> ChannelShard:
    """:func:`channel_shard` of a neuron-stage Snakemake job (circuits, crops).

    ``job`` is the script's ``snakemake`` object: input ``references``, params
    ``reference_mode``, ``upper_layer`` and ``neurons``, wildcard ``scatteritem``.
    """
    params = job.params
    return channel_shard(
        job.input.references,
        params.reference_mode,
        params.upper_layer,
        job.wildcards.scatteritem,
        params.neurons,
    )


def row_of_channel(channels: torch.Tensor, channel: int, key: str = "figures.neurons") -> int:
    """The row of upper channel ``channel`` in a per-neuron file listing ``channels``.

    Files of the neuron stages (circuits, clusters, crops, embeddings) hold the selected
    channels only (``neurons``), so a channel's row is not its index.
    """
    matches = (torch.as_tensor(channels) == int(channel)).nonzero().flatten()
    if not len(matches):
        shown = torch.as_tensor(channels).tolist()
        raise ValueError(
            f"{key}: neuron {channel} is not among the analysed neurons "
            f"({shown[:20]}{' ...' if len(shown) > 20 else ''}); choose it with the neurons key"
        )
    return int(matches[0])
