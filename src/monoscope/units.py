"""Units beyond channels: SAE features and virtual neurons on the same footing as neurons.

Every kind of unit needs the same things from the later stages: its top-N reference
samples, and its activation per sample (for the hierarchy score, through the mean
activation per class). The activation of each kind, per sample, on one pooled vector:

- **neuron** j: ``ReLU(pooled a_j)`` (the activation store's pooling, the seed's spatial
  mean by default);
- **SAE feature** k: its code ``f_k`` on the pooled vector;
- **virtual neuron** (j, m): the neuron's activation gated by the sample's circuit
  belonging to cluster m (:class:`monoscope.pure.virtual_neurons.VirtualNeurons`).

Everything streams over an :class:`monoscope.activations.ActivationStore`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from tqdm.auto import tqdm

from monoscope.activations import ActivationStore
from monoscope.hierarchy import ClassMeanAccumulator
from monoscope.logs import progress_kwargs
from monoscope.models.registry import SubjectModel
from monoscope.references import RunningTopN, TopReferences


def _codes(sae, vectors: torch.Tensor) -> torch.Tensor:
    device = next(sae.parameters()).device
    with torch.no_grad():
        return sae.encode(vectors.to(device)).float().cpu()


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
    """Mean ReLU'd pooled activation of every channel per class, ``[C, classes]``.

    ``missing`` is what a class without samples gets (:meth:`ClassMeanAccumulator.means`).
    """
    accumulator = ClassMeanAccumulator(store.dim, num_classes)
    for vectors, _, labels in store.iter_labelled(4096):
        accumulator.update(vectors.clamp(min=0).numpy(), labels.numpy())
    return accumulator.means(missing)


def sae_class_means(
    sae, store: ActivationStore, num_classes: int, missing: str = "error"
) -> np.ndarray:
    """Mean code of every SAE feature per class, ``[K, classes]``."""
    accumulator = None
    for vectors, _, labels in store.iter_labelled(4096):
        codes = _codes(sae, vectors)
        if accumulator is None:
            accumulator = ClassMeanAccumulator(codes.shape[1], num_classes)
        accumulator.update(codes.numpy(), labels.numpy())
    return accumulator.means(missing)


def virtual_neuron_class_means(
    virtual_neurons,
    dataset,
    store: ActivationStore,
    num_classes: int,
    batch_size: int = 64,
    missing: str = "error",
) -> np.ndarray:
    """Mean activation of every virtual neuron per class, ``[C * k, classes]`` (row j*k+m).

    ``dataset`` yields the images of the store's samples (``position_of`` by sample id);
    ``virtual_neurons`` gives the cluster of each (sample, channel) row; its ``channels``
    (the neurons selection) pick the store's columns.
    """
    channels, clusters = virtual_neurons.shape
    accumulator = ClassMeanAccumulator(channels * clusters, num_classes)
    batches = tqdm(
        store.iter_labelled(batch_size),
        total=-(-store.num_samples // batch_size),
        desc="virtual neurons",
        unit="batch",
        **progress_kwargs(),
    )
    for vectors, sample_ids, labels in batches:
        positions = dataset.position_of(sample_ids.numpy())
        images = torch.stack([dataset[int(p)][0] for p in positions])
        nearest = virtual_neurons.assignments(images)  # [B, C]
        gate = torch.nn.functional.one_hot(nearest, clusters).float()  # [B, C, k]
        if virtual_neurons.channels is not None:
            vectors = vectors[:, virtual_neurons.channels]
        activation = vectors.clamp(min=0)[:, :, None] * gate
        accumulator.update(activation.reshape(len(vectors), -1).numpy(), labels.numpy())
    return accumulator.means(missing)


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
