"""Circuits of (neuron, reference) pairs (PURE stage 2), batched over neurons and samples.

Notation as in DESIGN.md: U is the upper layer (its channels are the neurons to split),
L the lower layer. For channel j and a reference x of it, the target is

    T = sum_q stopgrad(max(a_j(x, q), 0)) * a_j(x, q)

and the circuit vector has one entry per lower channel i,

    gradient:  c_i = sum_p a_i(x, p) * dT/da_i(x, p)      (gradient times activation)
    lrp:       c_i = sum_p R_i(x, p)                        (zennit EpsilonPlus relevance)

normalised by its L1 norm plus 1e-10. The activation baseline of (j, x) is the spatial
mean of ReLU(a(x)) over all channels of U.

How it is batched: the references of all requested channels are reduced to their unique
samples; those are pushed through the model up to U once, in chunks (the lower
activations of a sample are computed once and reused for every neuron that selected
it); then the (neuron, sample) rows of a chunk go through the sub-network L -> U
(:mod:`monoscope.models.subnet`) many rows at a time, with one backward pass per row batch.
Rows do not interact (models are in eval mode), so one backward of the summed targets
gives every row its own gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from monoscope.io import load_tensors, merge_channel_shards, save_tensors
from monoscope.logs import progress_kwargs
from monoscope.models.registry import SubjectModel
from monoscope.models.subnet import extract_subnetwork
from monoscope.references import canonizers_for

log = logging.getLogger(__name__)

CIRCUIT_METHODS = ("gradient", "lrp")
L1_EPSILON = 1e-10


@dataclass(frozen=True)
class CircuitConfig:
    """Options of circuit computation.

    Parameters
    ----------
    method : ``gradient`` (gradient times activation) or ``lrp`` (zennit EpsilonPlus).
    batch_rows : (neuron, sample) rows per forward and backward pass of the sub-network.
    sample_batch : unique reference samples pushed through the model at a time; bounds
        the memory held for lower-layer activations.
    """

    method: str = "gradient"
    batch_rows: int = 512
    sample_batch: int = 64

    def __post_init__(self) -> None:
        if self.method not in CIRCUIT_METHODS:
            raise ValueError(
                f"circuits.method must be one of {CIRCUIT_METHODS}, got '{self.method}'"
            )
        if self.batch_rows < 1 or self.sample_batch < 1:
            raise ValueError("circuits.batch_rows and circuits.sample_batch must be positive")


@dataclass
class Circuits:
    """Circuit and activation-baseline vectors of some channels' references.

    ``circuits`` is ``[C, N, C_lower]``, ``activations`` ``[C, N, C_upper]`` and
    ``sample_ids`` ``[C, N]``, for the upper channels listed in ``channels``.
    """

    channels: torch.Tensor
    sample_ids: torch.Tensor
    circuits: torch.Tensor
    activations: torch.Tensor


def l1_normalise(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / (vectors.abs().sum(dim=-1, keepdim=True) + L1_EPSILON)


def circuit_target(upper_output: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Per row r, T_r = sum_q stopgrad(relu(a_{j_r}(q))) * a_{j_r}(q) for a ``[R, C, ...]`` output."""
    selected = upper_output[torch.arange(len(channels), device=upper_output.device), channels]
    selected = selected.reshape(len(channels), -1)
    return (selected.detach().clamp(min=0) * selected).sum(dim=1)


def spatial_mean_relu(upper_output: torch.Tensor) -> torch.Tensor:
    """The activation baseline vector: mean over space of ReLU(a), ``[B, C_upper]``."""
    return upper_output.clamp(min=0).reshape(*upper_output.shape[:2], -1).mean(dim=2)


class CircuitComputer:
    """Computes circuits for rows of (upper channel, lower activation) pairs.

    Use as a context manager. Inside, ``lower_activations(images)`` runs the model up to
    the lower layer (nothing above it) and ``rows(...)`` runs the sub-network L -> U
    forward and backward. For ``lrp`` the whole model is canonized first (batch norms
    merged, residual sums made explicit), exactly as zennit-crp does for the full model,
    and the ``EpsilonPlus`` rules are registered on the sub-network; everything is
    restored on exit.
    """

    def __init__(
        self, model: SubjectModel, lower: str, upper: str, method: str = "gradient"
    ) -> None:
        if method not in CIRCUIT_METHODS:
            raise ValueError(f"unknown circuit method '{method}'")
        self.model, self.lower, self.upper, self.method = model, lower, upper, method
        self.prefix = self.subnet = None
        self._canonizers, self._composite = [], None

    def __enter__(self) -> CircuitComputer:
        net = self.model.net.eval()
        if self.method == "lrp":
            for canonizer in canonizers_for(net):
                self._canonizers.extend(canonizer.apply(net))
        # Traced after canonization (so the graphs call the canonized blocks) and
        # before any rule hooks exist (tracing runs module hooks).
        self.prefix = extract_subnetwork(net, None, self.lower)
        self.subnet = extract_subnetwork(net, self.lower, self.upper)
        if self.method == "lrp":
            from zennit.composites import EpsilonPlus

            # Within L -> U there is no input layer, so no Flat rule: EpsilonPlus is
            # what EpsilonPlusFlat applies to these layers in the whole model.
            self._composite = EpsilonPlus()
            self._composite.register(self.subnet)
        return self

    def __exit__(self, *exc) -> None:
        if self._composite is not None:
            self._composite.remove()
            self._composite = None
        for instance in reversed(self._canonizers):
            instance.remove()
        self._canonizers.clear()

    def lower_activations(self, images: torch.Tensor) -> torch.Tensor:
        """The lower layer's output for normalised ``images`` (inference only)."""
        if self.prefix is None:
            raise RuntimeError("use CircuitComputer as a context manager")
        with torch.inference_mode():
            return self.prefix(images)

    def rows(
        self, lower_activations: torch.Tensor, channels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``(channels[r], lower_activations[r])``: circuit vectors ``[R, C_lower]``
        (L1-normalised) and activation baseline vectors ``[R, C_upper]``."""
        if self.subnet is None:
            raise RuntimeError("use CircuitComputer as a context manager")
        with torch.enable_grad():
            inputs = lower_activations.detach()
            if inputs.is_inference():  # made under inference_mode: autograd needs a copy
                inputs = inputs.clone()
            inputs.requires_grad_(True)
            upper_output = self.subnet(inputs)
            target = circuit_target(upper_output, channels.to(inputs.device)).sum()
            (gradient,) = torch.autograd.grad(target, inputs)
        # zennit's rules make the gradient at the input the relevance itself.
        contribution = gradient if self.method == "lrp" else gradient * inputs.detach()
        circuits = l1_normalise(contribution.reshape(*contribution.shape[:2], -1).sum(dim=2))
        return circuits, spatial_mean_relu(upper_output.detach())


def compute_circuits(
    model: SubjectModel,
    dataset,
    sample_ids: torch.Tensor,
    channels: Sequence[int],
    lower: str,
    upper: str,
    config: CircuitConfig,
    device: torch.device | str = "cpu",
) -> Circuits:
    """Circuits and activation baselines of ``channels``' references.

    ``sample_ids`` is ``[len(channels), N]``: the references of each channel (from
    :mod:`monoscope.references`); ``dataset`` yields ``(image, label, sample_id)`` and has
    ``position_of(sample_ids)``.
    """
    device = torch.device(device)
    channels = torch.as_tensor(list(channels), dtype=torch.int64)
    if sample_ids.shape[0] != len(channels):
        raise ValueError(f"{sample_ids.shape[0]} reference rows for {len(channels)} channels")
    n_refs = sample_ids.shape[1]
    unique_ids, inverse = torch.unique(sample_ids, return_inverse=True)  # inverse [C, N]
    row_channel = channels[:, None].expand_as(sample_ids).reshape(-1)
    row_slot = torch.arange(sample_ids.numel())
    row_sample = inverse.reshape(-1)
    order = torch.argsort(row_sample, stable=True)  # rows grouped by their sample
    row_channel, row_slot, row_sample = row_channel[order], row_slot[order], row_sample[order]

    circuits = activations = None
    chunks = range(0, len(unique_ids), config.sample_batch)
    with CircuitComputer(model, lower, upper, config.method) as computer:
        for start in tqdm(chunks, desc="circuits", unit="chunk", **progress_kwargs()):
            stop = min(start + config.sample_batch, len(unique_ids))
            positions = dataset.position_of(unique_ids[start:stop].numpy())
            images = torch.stack([dataset[int(p)][0] for p in positions]).to(device)
            # Plain (NCHW) layout on purpose: channels-last convolutions are faster on CPU
            # but round differently, and circuits of nearly cancelling rows amplify that
            # past 1e-5 (seen on random-weight ResNets).
            lower_out = computer.lower_activations(model.normalize(images))
            in_chunk = torch.arange(
                int(torch.searchsorted(row_sample, start)),
                int(torch.searchsorted(row_sample, stop)),
            )
            for first in range(0, len(in_chunk), config.batch_rows):
                rows = in_chunk[first : first + config.batch_rows]
                local = (row_sample[rows] - start).to(device)
                vectors, baseline = computer.rows(lower_out[local], row_channel[rows])
                if circuits is None:
                    circuits = torch.zeros(sample_ids.numel(), vectors.shape[1])
                    activations = torch.zeros(sample_ids.numel(), baseline.shape[1])
                circuits[row_slot[rows]] = vectors.cpu()
                activations[row_slot[rows]] = baseline.cpu()
    shape = (len(channels), n_refs)
    return Circuits(
        channels=channels,
        sample_ids=sample_ids.clone(),
        circuits=circuits.reshape(*shape, -1),
        activations=activations.reshape(*shape, -1),
    )


def circuits_per_neuron_crp(
    model: SubjectModel,
    dataset,
    sample_ids: torch.Tensor,
    channels: Sequence[int],
    lower: str,
    upper: str,
    method: str = "gradient",
    device: torch.device | str = "cpu",
    batch_size: int = 40,
) -> torch.Tensor:
    """The simple way, as PURE's reference code does it. ``[C, N, C_lower]``.

    Per neuron, its references are loaded from the data set in batches of 40 and each
    batch goes through one zennit-crp ``CondAttribution`` call on the whole model,
    relevance started at the neuron with ``init_rel = relu(activation)``; the lower
    layer's gradient times activation (or LRP relevance) is reduced with
    ``ChannelConcept.attribute(..., abs_norm=True)``. The benchmark and the tests use
    it as the baseline to compare against.
    """
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from torch.utils.data import DataLoader, Subset
    from zennit.composites import EpsilonPlusFlat
    from zennit.core import Composite

    device = torch.device(device)
    attribution = CondAttribution(model.net, device=device, no_param_grad=True)
    if method == "lrp":
        composite = EpsilonPlusFlat(canonizers=canonizers_for(model.net))
    else:
        composite = Composite()  # no rules: the plain gradient
    concept = ChannelConcept()
    result = []
    for channel, ids in zip(channels, sample_ids, strict=True):
        subset = Subset(dataset, dataset.position_of(ids.numpy()).tolist())
        vectors = []
        for images, _, _ in DataLoader(subset, batch_size=batch_size, shuffle=False):
            inputs = model.normalize(images.to(device)).requires_grad_(True)
            attr = attribution(
                inputs,
                [{upper: [int(channel)]}],
                composite,
                record_layer=[lower, upper],
                start_layer=upper,
                init_rel=lambda activation: activation.clamp(min=0),
            )
            relevance = attr.relevances[lower]
            if method == "gradient":
                relevance = relevance * attr.activations[lower]
            vectors.append(concept.attribute(relevance.detach(), abs_norm=True).cpu())
        result.append(torch.cat(vectors))
    return torch.stack(result)


# --------------------------------------------------------------------------- files


def save_circuits(path, circuits: Circuits, metadata: dict) -> None:
    save_tensors(
        path,
        {
            "channels": circuits.channels,
            "sample_ids": circuits.sample_ids,
            "circuits": circuits.circuits,
            "activations": circuits.activations,
        },
        metadata,
    )


def load_circuits(path) -> tuple[Circuits, dict]:
    tensors, metadata = load_tensors(path)
    return (
        Circuits(
            tensors["channels"], tensors["sample_ids"], tensors["circuits"], tensors["activations"]
        ),
        metadata,
    )


def merge_circuits(parts: Sequence[Circuits], expected: Sequence[int] | None = None) -> Circuits:
    """Concatenate neuron-range shards, ordered by channel; every channel exactly once.

    ``expected`` lists the selected channels (default: ``0..C-1``, all of them).
    """
    return Circuits(**merge_channel_shards([vars(part) for part in parts], "circuit", expected))
