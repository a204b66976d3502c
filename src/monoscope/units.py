"""Units: channel neurons, PURE virtual neurons, SAE features and contrastive dimensions.

One interface for every kind of unit. A :class:`Unit` has a ``kind`` (its name in
:data:`UNIT_KINDS`), a ``layer`` and an ``index``, and answers two questions:

- :meth:`Unit.scores`: how strongly each image of a batch drives it (``[B]``);
- :meth:`Unit.heatmap`: the relevance map over the input that starts its crop
  (``[B, H, W]``, :mod:`monoscope.crops`).

Units of one kind at one layer form a :class:`UnitKind` (``Neurons``,
``VirtualNeuronUnits``, ``SAEFeatures``, ``ContrastiveDimensions``), which answers the same
questions for many units at once (``scores`` ``[B, U]``; ``heatmaps`` with one unit per
row), and their mean score per class over an :class:`~monoscope.activations.ActivationStore`
of pooled vectors (:meth:`UnitKind.class_means`, the hierarchy score's input). The score
of each kind, on a layer's spatially averaged output ``a`` (the store's ``mean`` pooling):

- **neuron** j: ``ReLU(a_j)``;
- **virtual neuron** (j, m), index ``j * k + m``: the neuron's score gated by the
  sample's circuit for j belonging to cluster m
  (:class:`monoscope.pure.virtual_neurons.VirtualNeurons`);
- **SAE feature** k: its code ``f_k(a)``;
- **contrastive dimension** d: output d of a contrastive model (no layer of a subject
  model, no store).

:data:`UNIT_KINDS` is the one place where unit kinds and the strings that name them in
files and tables (``neurons``, ``pure``, ``sae:<name>``) are defined: :func:`kind_label`
writes such a string, :func:`parse_kind_label` reads it back.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from monoscope.activations import ActivationStore
from monoscope.hierarchy import ClassMeanAccumulator
from monoscope.logs import progress_kwargs
from monoscope.models.registry import SubjectModel
from monoscope.references import RunningTopN, TopReferences
from monoscope.registry import Registry

UNIT_KINDS: Registry[type[UnitKind]] = Registry("unit kind")
"""Every kind of unit by its name: ``neurons``, ``pure``, ``sae``, ``contrastive``."""


def kind_label(kind: str, variant: str | None = None) -> str:
    """The string naming units of ``kind`` in files and tables.

    ``neurons``; the clustering method for virtual neurons (``pure`` for PURE's circuit
    clusters, the default); ``sae:<name>`` for the features of the SAE called ``name``;
    ``contrastive:<name>`` for the dimensions of a contrastive model.
    """
    return UNIT_KINDS[kind].label_of(variant)


def parse_kind_label(label: str) -> tuple[str, str | None]:
    """``(kind, variant)`` of a :func:`kind_label` string (its inverse).

    A label that names no other kind is a clustering method: virtual neurons.
    """
    for name in UNIT_KINDS:
        variant = UNIT_KINDS[name].variant_of(label)
        if variant is not False:
            return name, variant
    return VirtualNeuronUnits.kind, label


@dataclass(frozen=True)
class Unit:
    """One unit: ``index`` of a :class:`UnitKind` (its ``kind`` and ``layer``)."""

    family: UnitKind
    index: int

    @property
    def kind(self) -> str:
        return self.family.kind

    @property
    def layer(self) -> str:
        return self.family.layer

    @property
    def label(self) -> str:
        return self.family.label

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """How strongly each unnormalised image ``[B, 3, H, W]`` drives the unit, ``[B]``."""
        return self.family.scores(images)[:, self.family.column_of(self.index)]

    def heatmap(self, images: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The heatmaps ``[B, H, W]`` that start the unit's crops of ``images``.

        ``positions`` (``[B]``, flat indices into the layer's spatial map) are where a
        neuron's relevance starts (its reference positions); kinds that read the whole
        map ignore them.
        """
        rows = torch.full((len(images),), self.index, dtype=torch.int64)
        return self.family.heatmaps(images, rows, positions)


class UnitKind(ABC):
    """The units of one kind at one layer (see the module docstring).

    ``kind`` is the name in :data:`UNIT_KINDS`; ``label`` the string that names these
    units in files and tables (:func:`kind_label`). Unit indices are what
    :meth:`indices` lists; :meth:`scores` has one column per unit, in that order.
    """

    kind: ClassVar[str]
    store_batch_size: ClassVar[int] = 4096
    """Rows per batch of :meth:`class_means` (fixed: sums are accumulated in this order)."""

    def __init__(self, model, layer: str, variant: str | None = None) -> None:
        self.model, self.layer, self.variant = model, layer, variant

    # names ------------------------------------------------------------------------

    @classmethod
    def label_of(cls, variant: str | None) -> str:
        return cls.kind if variant is None else f"{cls.kind}:{variant}"

    @classmethod
    def variant_of(cls, label: str):
        """The variant of ``label`` if it names this kind, ``False`` otherwise."""
        if label == cls.kind:
            return None
        prefix = f"{cls.kind}:"
        return label[len(prefix) :] if label.startswith(prefix) else False

    @property
    def label(self) -> str:
        return self.label_of(self.variant)

    # units ------------------------------------------------------------------------

    @abstractmethod
    def indices(self) -> list[int]:
        """The index of every unit, in the order of :meth:`scores`' columns."""

    def column_of(self, index: int) -> int:
        indices = self.indices()
        if index not in indices:
            raise IndexError(f"{self.label} ({self.layer}) has no unit {index}")
        return indices.index(index)

    def __len__(self) -> int:
        return len(self.indices())

    def __iter__(self) -> Iterator[Unit]:
        return (Unit(self, index) for index in self.indices())

    def unit(self, index: int) -> Unit:
        self.column_of(index)
        return Unit(self, int(index))

    def _require_model(self):
        if self.model is None:
            raise ValueError(
                f"{self.label} units of '{self.layer}' were made without a model: they "
                "can score a store of pooled vectors, not images"
            )
        return self.model

    # scores -----------------------------------------------------------------------

    @abstractmethod
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """How strongly each unnormalised image drives each unit, ``[B, U]``."""

    @abstractmethod
    def heatmaps(
        self,
        images: torch.Tensor,
        units: torch.Tensor,
        positions: torch.Tensor | None = None,
        spatial_shape: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """Heatmaps ``[B, H, W]`` that start the crops: unit ``units[b]`` on image ``b``.

        ``positions`` ``[B]`` are flat indices into ``spatial_shape`` (the map the
        references were collected on); kinds that start at one position check that it
        is the layer's map, the others ignore both.
        """

    def pooled_scores(
        self, vectors: torch.Tensor, images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores ``[B, U]`` from the layer's pooled vectors ``[B, C]`` (and the images,
        for kinds that need more than the pooled vector)."""
        raise NotImplementedError(f"{self.label} units have no score on pooled vectors")

    needs_images: ClassVar[bool] = False
    """Whether :meth:`pooled_scores` needs the images of the vectors."""

    def _class_mean_width(self, store: ActivationStore) -> int | None:
        return len(self)

    def _batches(self, store: ActivationStore, batch_size: int):
        return store.iter_labelled(batch_size)

    def _select_means(self, means: np.ndarray) -> np.ndarray:
        return means

    def class_means(
        self,
        store: ActivationStore,
        num_classes: int,
        dataset=None,
        missing: str = "error",
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Mean score of every unit per class over ``store``, ``[U, classes]``.

        ``dataset`` yields the images of the store's samples (``position_of`` by sample
        id) for kinds that need them; ``missing`` is what a class without samples gets
        (:meth:`ClassMeanAccumulator.means`).
        """
        batch_size = batch_size or self.store_batch_size
        width = self._class_mean_width(store)
        accumulator = None if width is None else ClassMeanAccumulator(width, num_classes)
        for vectors, sample_ids, labels in self._batches(store, batch_size):
            images = None
            if self.needs_images:
                positions = dataset.position_of(sample_ids.numpy())
                images = torch.stack([dataset[int(p)][0] for p in positions])
            values = self.pooled_scores(vectors, images)
            if accumulator is None:
                accumulator = ClassMeanAccumulator(values.shape[1], num_classes)
            accumulator.update(values.numpy(), labels.numpy())
        return self._select_means(accumulator.means(missing))


def _pooled_output(model: SubjectModel, layer: str, images: torch.Tensor) -> torch.Tensor:
    """The layer's spatially averaged output ``[B, C]`` for unnormalised images, as the
    activation store's ``mean`` pooling computes it."""
    from monoscope.activations import pool_activations

    captured = {}
    handle = model.layer(layer).register_forward_hook(
        lambda _module, _inputs, output: captured.__setitem__("out", output.detach())
    )
    device = next(model.net.parameters()).device
    model.net.eval()
    try:
        with torch.no_grad():
            model.net(model.normalize(images.to(device)))
    finally:
        handle.remove()
    return pool_activations(captured["out"], "mean")[0].cpu()


@UNIT_KINDS.register("neurons")
class Neurons(UnitKind):
    """Channels of ``layer``; ``channels`` selects some (all when ``None``).

    Score: ``ReLU`` of the channel's spatial mean. Heatmap: the CRP heatmap started at
    the channel's activation at one position (:func:`monoscope.crops.position_heatmaps`).
    ``num_channels`` is needed for :meth:`indices` of all channels without a model run.
    """

    kind = "neurons"

    def __init__(
        self,
        model: SubjectModel | None,
        layer: str,
        channels=None,
        num_channels: int | None = None,
    ) -> None:
        super().__init__(model, layer)
        self.channels = None if channels is None else torch.as_tensor(channels).long().reshape(-1)
        self.num_channels = num_channels

    def indices(self) -> list[int]:
        if self.channels is not None:
            return self.channels.tolist()
        if self.num_channels is None:
            raise ValueError(f"neurons of '{self.layer}': give channels or num_channels")
        return list(range(self.num_channels))

    def column_of(self, index: int) -> int:
        return int(index) if self.channels is None else super().column_of(index)

    def pooled_scores(self, vectors, images=None):
        # Every channel: the class means of all channels are summed alike, then selected.
        return vectors.clamp(min=0)

    def _class_mean_width(self, store):
        return store.dim

    def _select_means(self, means):
        return means if self.channels is None else means[self.channels.numpy()]

    def scores(self, images):
        scores = self.pooled_scores(_pooled_output(self._require_model(), self.layer, images))
        return scores if self.channels is None else scores[:, self.channels]

    def heatmaps(self, images, units, positions=None, spatial_shape=None):
        from monoscope.crops import _position_heatmaps

        if positions is None:
            raise ValueError("a neuron's heatmap starts at one position per row")
        heatmaps, layer_shape = _position_heatmaps(
            self._require_model(), images, self.layer, units, positions
        )
        # Positions are flat indices into the references' map: a different map (other
        # image size, other layer) would silently crop the wrong place.
        if spatial_shape is not None and layer_shape != tuple(spatial_shape):
            raise ValueError(
                f"layer '{self.layer}' has spatial shape {layer_shape} but the references "
                f"were collected on {tuple(spatial_shape)}"
            )
        return heatmaps


@UNIT_KINDS.register("pure")
class VirtualNeuronUnits(UnitKind):
    """PURE's virtual neurons: neuron j restricted to cluster m of its circuits.

    ``virtual`` (:class:`monoscope.pure.virtual_neurons.VirtualNeurons`) holds the centroids
    ``[C, k, ...]`` and the analysed channels; unit index ``r * k + m`` is cluster m of
    centroid row r (channel ``channels[r]``, or r when every channel is analysed), the
    row order of :meth:`class_means`. ``variant`` is the clustering method the label
    names (``pure``: clusters of circuits).

    Score: the neuron's score (``ReLU`` of its spatial mean) when the sample's circuit
    for j is nearest to centroid m, else 0. Heatmap: the neuron's position heatmap: a
    virtual neuron's references are its neuron's references of its cluster, cropped
    where the neuron fires.
    """

    kind = "pure"
    store_batch_size = 64
    needs_images = True

    def __init__(self, virtual, variant: str | None = None) -> None:
        super().__init__(virtual.model, virtual.upper, variant)
        self.virtual = virtual

    @classmethod
    def label_of(cls, variant: str | None) -> str:
        return cls.kind if variant is None else variant

    @classmethod
    def variant_of(cls, label: str):
        return None if label == cls.kind else False

    def indices(self) -> list[int]:
        channels, clusters = self.virtual.shape
        return list(range(channels * clusters))

    def column_of(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.label} ({self.layer}) has no unit {index}")
        return int(index)

    def channel_of(self, index) -> torch.Tensor:
        """The upper channel of unit(s) ``index``."""
        row = torch.as_tensor(index, dtype=torch.int64) // self.virtual.shape[1]
        return row if self.virtual.channels is None else self.virtual.channels[row]

    def _class_mean_width(self, store):
        channels, clusters = self.virtual.shape
        return channels * clusters

    def _batches(self, store, batch_size):
        return tqdm(
            store.iter_labelled(batch_size),
            total=-(-store.num_samples // batch_size),
            desc="virtual neurons",
            unit="batch",
            **progress_kwargs(),
        )

    def pooled_scores(self, vectors, images=None):
        virtual = self.virtual
        clusters = virtual.shape[1]
        nearest = virtual.assignments(images)  # [B, C]
        gate = torch.nn.functional.one_hot(nearest, clusters).float()  # [B, C, k]
        if virtual.channels is not None:
            vectors = vectors[:, virtual.channels]
        activation = vectors.clamp(min=0)[:, :, None] * gate
        return activation.reshape(len(vectors), -1)

    def scores(self, images):
        return self.pooled_scores(_pooled_output(self.model, self.layer, images), images)

    def heatmaps(self, images, units, positions=None, spatial_shape=None):
        neurons = Neurons(self.model, self.layer)
        return neurons.heatmaps(images, self.channel_of(units), positions, spatial_shape)


def _codes(sae, vectors: torch.Tensor) -> torch.Tensor:
    device = next(sae.parameters()).device
    with torch.no_grad():
        return sae.encode(vectors.to(device)).float().cpu()


@UNIT_KINDS.register("sae")
class SAEFeatures(UnitKind):
    """Features of an SAE trained on ``layer``'s spatially averaged output.

    ``variant`` is the SAE's name (label ``sae:<name>``). Score: the feature's code on
    the pooled vector. Heatmap: the feature reads the direction ``w_k`` (its encoder
    row) from the pooled vector, so relevance starts at every channel and position in
    proportion to ``w_k,c a_c(q) / |q|`` (:func:`monoscope.crops.direction_heatmaps`);
    positions are ignored.
    """

    kind = "sae"

    def __init__(self, model: SubjectModel | None, layer: str, sae, variant: str | None = None):
        super().__init__(model, layer, variant)
        self.sae = sae

    def indices(self) -> list[int]:
        return list(range(self.sae.encoder.shape[0]))

    def column_of(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.label} ({self.layer}) has no unit {index}")
        return int(index)

    def _class_mean_width(self, store):
        return None  # from the first batch of codes

    def pooled_scores(self, vectors, images=None):
        return _codes(self.sae, vectors)

    def scores(self, images):
        return self.pooled_scores(_pooled_output(self._require_model(), self.layer, images))

    def heatmaps(self, images, units, positions=None, spatial_shape=None):
        from monoscope.crops import direction_heatmaps

        directions = self.sae.encoder.detach()
        units = torch.as_tensor(units, dtype=torch.int64).to(directions.device)
        return direction_heatmaps(
            self._require_model(), images, self.layer, directions[units].to(images.device)
        )

    def references(self, store: ActivationStore, n: int, batch_size: int = 4096) -> TopReferences:
        """Top-``n`` samples of every feature by its code (:func:`sae_references`)."""
        return sae_references(self.sae, store, n, batch_size)


@UNIT_KINDS.register("contrastive")
class ContrastiveDimensions(UnitKind):
    """Output dimensions of a contrastive model (:mod:`monoscope.contrastive`).

    ``layer`` is ``embed`` (the projector output after the non-negative map, whose
    dimensions NCL makes monosemantic) or ``backbone`` (the backbone features).
    Score: the dimension's value. Heatmap: gradient times input of the dimension with
    respect to the normalised input, summed over colour channels (plain autograd: the
    model's own backward, so NCL's ReLU-with-GELU-gradient map passes GELU's slope);
    positions are ignored. The contrastive branch scores dimensions on its own feature
    files and does not crop them; there is no activation store, so no
    :meth:`class_means`.
    """

    kind = "contrastive"
    LAYERS = ("embed", "backbone")

    def __init__(self, model, layer: str = "embed", variant: str | None = None) -> None:
        if layer not in self.LAYERS:
            raise ValueError(f"contrastive dimensions live in {self.LAYERS}, not '{layer}'")
        super().__init__(model, layer, variant)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.layer == "backbone":
            return self.model.features(inputs)
        return self.model.embed(inputs)

    def indices(self) -> list[int]:
        if self.layer == "backbone":
            return list(range(self.model.feature_dim))
        projector = [m for m in self.model.projector.modules() if isinstance(m, torch.nn.Linear)]
        return list(range(projector[-1].out_features))

    def column_of(self, index: int) -> int:
        return int(index)

    def scores(self, images):
        device = next(self.model.parameters()).device
        self.model.eval()
        with torch.no_grad():
            return self._forward(self.model.normalize(images.to(device))).float().cpu()

    def heatmaps(self, images, units, positions=None, spatial_shape=None):
        self.model.eval()
        inputs = self.model.normalize(images).detach().requires_grad_(True)
        outputs = self._forward(inputs)
        rows = torch.arange(len(images), device=outputs.device)
        chosen = outputs[rows, torch.as_tensor(units, dtype=torch.int64).to(outputs.device)]
        (gradient,) = torch.autograd.grad(chosen.sum(), inputs)
        return (gradient * inputs).sum(dim=1).detach()


# --------------------------------------------------------------------------- helpers


def sae_references(sae, store: ActivationStore, n: int, batch_size: int = 4096) -> TopReferences:
    """Top-``n`` samples of every SAE feature by its code (ties to the smaller sample id).

    Pooled vectors have no spatial map, so positions are 0 and the spatial shape ``()``.
    """
    tracker = RunningTopN(n)
    for vectors, sample_ids, _ in store.iter_labelled(batch_size):
        codes = _codes(sae, vectors)
        tracker.update(sample_ids, codes, torch.zeros_like(codes, dtype=torch.int64))
    return tracker.result()


def neuron_class_means(
    store: ActivationStore, num_classes: int, missing: str = "error"
) -> np.ndarray:
    """Mean ReLU'd pooled activation of every channel per class, ``[C, classes]``
    (:meth:`Neurons.class_means` of every channel)."""
    return Neurons(None, "", num_channels=store.dim).class_means(
        store, num_classes, missing=missing
    )


def sae_class_means(
    sae, store: ActivationStore, num_classes: int, missing: str = "error"
) -> np.ndarray:
    """Mean code of every SAE feature per class, ``[K, classes]`` (:class:`SAEFeatures`)."""
    return SAEFeatures(None, "", sae).class_means(store, num_classes, missing=missing)


def virtual_neuron_class_means(
    virtual_neurons,
    dataset,
    store: ActivationStore,
    num_classes: int,
    batch_size: int = 64,
    missing: str = "error",
) -> np.ndarray:
    """Mean activation of every virtual neuron per class, ``[C * k, classes]`` (row j*k+m;
    :class:`VirtualNeuronUnits`).

    ``dataset`` yields the images of the store's samples (``position_of`` by sample id);
    ``virtual_neurons`` gives the cluster of each (sample, channel) row; its ``channels``
    (the neurons selection) pick the store's columns.
    """
    return VirtualNeuronUnits(virtual_neurons).class_means(
        store, num_classes, dataset, missing, batch_size
    )


@contextlib.contextmanager
def spliced(model: SubjectModel, layer: str, sae, pooling: str = "mean"):
    """Within the block, ``layer``'s output is replaced by the SAE's reconstruction.

    The SAE reads pooled vectors, so splicing must act on them: with ``mean`` pooling
    the output ``a(q)`` becomes ``a(q) + (x_hat - mean_q a)``, whose spatial mean is
    exactly the reconstruction ``x_hat`` and whose spatial pattern is kept (exact for
    a layer read only through a global average pool). With ``patch`` pooling the SAE
    was trained on single positions, so every position is reconstructed.
    """
    if pooling not in ("mean", "patch"):
        raise ValueError(
            f"splicing an SAE trained on '{pooling}'-pooled vectors is not defined; "
            "use mean or patch pooling"
        )

    def replace(_module, _inputs, output):
        flat = output.reshape(*output.shape[:2], -1)
        if pooling == "mean":
            mean = flat.mean(dim=2)
            reconstruction, _ = sae(mean)
            return (flat + (reconstruction - mean)[:, :, None]).reshape(output.shape)
        vectors = flat.permute(0, 2, 1).reshape(-1, flat.shape[1])
        reconstruction, _ = sae(vectors)
        rebuilt = reconstruction.reshape(flat.shape[0], flat.shape[2], flat.shape[1])
        return rebuilt.permute(0, 2, 1).reshape(output.shape)

    handle = model.layer(layer).register_forward_hook(replace)
    try:
        yield model
    finally:
        handle.remove()


def spliced_accuracy(
    model: SubjectModel,
    dataset,
    layer: str,
    sae,
    pooling: str = "mean",
    device: torch.device | str = "cpu",
    batch_size: int = 128,
) -> dict[str, float]:
    """Top-1 accuracy of the model as is and with the SAE spliced in at ``layer``."""
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    correct = {"accuracy": 0, "spliced_accuracy": 0}
    total = 0
    model.net.eval()
    with torch.no_grad():
        for images, labels, _ in loader:
            inputs = model.normalize(images.to(device))
            targets = model.targets(labels.to(device))
            correct["accuracy"] += int((model.net(inputs).argmax(1) == targets).sum())
            with spliced(model, layer, sae, pooling):
                correct["spliced_accuracy"] += int((model.net(inputs).argmax(1) == targets).sum())
            total += len(images)
    return {key: value / total for key, value in correct.items()}
