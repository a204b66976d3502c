"""Tests of monoscope.pure.virtual_neurons: scoring images with k-means virtual neurons."""

from __future__ import annotations

import math

import pytest
import torch

from monoscope.pure.circuits import CircuitConfig, compute_circuits
from monoscope.pure.clustering import ClusterConfig, cluster_units
from monoscope.pure.virtual_neurons import VirtualNeurons
from monoscope.references import ReferenceConfig, collect_references

LOWER, UPPER = "layer3", "layer4"
N_REFS = 12
TIE_TOLERANCE = 1e-5  # relative gap between two centroid distances counted as a tie


@pytest.fixture(scope="module")
def pipeline(random_demo, small_digits):
    """References, circuits, k-means and the virtual neurons of layer4 (k = 2)."""
    _, dataset = small_digits
    model = random_demo
    top = collect_references(model, dataset, [UPPER], ReferenceConfig(n=N_REFS, modes=("actmax",)))[
        ("actmax", UPPER)
    ]
    channels = top.sample_ids.shape[0]
    circuits = compute_circuits(
        model, dataset, top.sample_ids, range(channels), LOWER, UPPER, CircuitConfig()
    )
    clusters = cluster_units(circuits.circuits, ClusterConfig(ks=(2, 3)))
    virtual = VirtualNeurons(model, LOWER, UPPER, clusters["k2/centroids"])

    # Every reference image of every channel, once.
    unique_ids = torch.unique(top.sample_ids)
    positions = dataset.position_of(unique_ids.numpy())
    images = torch.stack([dataset[int(p)][0] for p in positions])
    scores = virtual(images)
    return {
        "model": model,
        "top": top,
        "circuits": circuits,
        "clusters": clusters,
        "virtual": virtual,
        "ids": unique_ids,
        "images": images,
        "scores": scores,
    }


def _hooked_activation(model, images: torch.Tensor) -> torch.Tensor:
    """Spatial max of layer4 after ReLU ``[B, C]``, from the whole model with a hook."""
    captured = {}
    handle = model.layer(UPPER).register_forward_hook(
        lambda _m, _i, output: captured.update(out=output.detach().clone())
    )
    try:
        with torch.no_grad():
            model.net(model.normalize(images))
    finally:
        handle.remove()
    output = captured["out"]
    return output.reshape(*output.shape[:2], -1).amax(dim=2).clamp(min=0)


def test_scores_have_one_column_per_virtual_neuron(pipeline):
    scores, images = pipeline["scores"], pipeline["images"]
    channels = pipeline["top"].sample_ids.shape[0]
    assert pipeline["virtual"].shape == (channels, 2)
    assert scores.shape == (len(images), channels, 2)
    assert scores.dtype == torch.float32
    assert bool((scores >= 0).all())


def test_at_most_one_virtual_neuron_fires_per_channel(pipeline):
    fired = (pipeline["scores"] != 0).sum(dim=2)
    assert int(fired.max()) <= 1
    # Most channels do fire on their own references: the test is not vacuous.
    assert int(fired.sum()) > 0


def test_firing_value_is_the_channels_spatial_max_after_relu(pipeline):
    expected = _hooked_activation(pipeline["model"], pipeline["images"])
    scores = pipeline["scores"]
    # The gate keeps the whole activation in one column: the sum over clusters is it.
    torch.testing.assert_close(scores.sum(dim=2), expected, rtol=1e-5, atol=1e-6)
    # And no column fires where the channel is silent.
    silent = expected == 0
    assert bool((scores[silent] == 0).all())


def test_own_references_fire_their_kmeans_cluster(pipeline):
    top, clusters, virtual = pipeline["top"], pipeline["clusters"], pipeline["virtual"]
    scores, circuits = pipeline["scores"], pipeline["circuits"].circuits
    centroids = clusters["k2/centroids"]
    labels = clusters["k2/labels"]
    row_of = {int(sample): row for row, sample in enumerate(pipeline["ids"])}
    checked, mismatches = 0, []
    for channel in range(top.sample_ids.shape[0]):
        for slot in range(N_REFS):
            row = row_of[int(top.sample_ids[channel, slot])]
            fired = torch.nonzero(scores[row, channel]).flatten().tolist()
            if not fired:
                # Only a dead channel (activation exactly 0) may stay silent on its refs.
                assert float(top.scores[channel, slot]) <= 0.0
                continue
            checked += 1
            label = int(labels[channel, slot])
            if fired != [label]:
                distances = (circuits[channel, slot] - centroids[channel]).norm(dim=1)
                gap = abs(float(distances[0] - distances[1]))
                if gap > TIE_TOLERANCE * float(distances.max()):
                    mismatches.append((channel, slot, fired, label, distances.tolist()))
    assert checked >= N_REFS * 4
    assert not mismatches
    assert virtual.shape[1] == 2


def test_small_row_batches_give_the_same_scores(pipeline):
    model, images = pipeline["model"], pipeline["images"][:10]
    small = VirtualNeurons(model, LOWER, UPPER, pipeline["clusters"]["k2/centroids"], batch_rows=7)
    torch.testing.assert_close(small(images), pipeline["scores"][:10], rtol=0, atol=0)


def test_nan_padded_centroids_never_fire_their_missing_cluster(pipeline):
    """Automatic k pads missing clusters with NaN rows: they must never be chosen."""
    centroids = pipeline["clusters"]["k2/centroids"]
    padded = torch.cat([centroids, torch.full_like(centroids[:, :1], math.nan)], dim=1)
    virtual = VirtualNeurons(pipeline["model"], LOWER, UPPER, padded)
    assert virtual.shape == (centroids.shape[0], 3)
    images = pipeline["images"][:10]
    scores = virtual(images)
    assert scores.shape == (10, centroids.shape[0], 3)
    assert bool((scores[:, :, 2] == 0).all())
    torch.testing.assert_close(scores[:, :, :2], pipeline["scores"][:10], rtol=0, atol=0)


def test_assign_hand_made(random_demo):
    nan = math.nan
    centroids = torch.tensor(
        [
            [[0.0, 0.0], [10.0, 0.0], [nan, nan]],  # channel 0: two clusters
            [[0.0, 10.0], [nan, nan], [5.0, 5.0]],  # channel 1: missing middle cluster
        ]
    )
    virtual = VirtualNeurons(random_demo, LOWER, UPPER, centroids)
    assert virtual.shape == (2, 3)
    circuits = torch.tensor(
        [
            [1.0, 0.0],  # channel 0 -> 0
            [9.0, 1.0],  # channel 0 -> 1
            [0.0, 0.0],  # channel 0 -> 0 (exactly on the centroid)
            [0.0, 9.0],  # channel 1 -> 0
            [6.0, 4.0],  # channel 1 -> 2
            [1e6, -1e6],  # channel 1: far from everything, still never the NaN row
        ]
    )
    channels = torch.tensor([0, 0, 0, 1, 1, 1])
    nearest = virtual.assign(circuits, channels)
    assert nearest.dtype == torch.int64
    assert nearest.tolist() == [0, 1, 0, 0, 2, 2]
    # Never the NaN row, whatever the circuit.
    far = torch.tensor([[1e6, -1e6], [-1e6, 1e6], [5e5, 5e5]])
    assert 2 not in virtual.assign(far, torch.zeros(3, dtype=torch.int64)).tolist()
    assert 1 not in virtual.assign(far, torch.ones(3, dtype=torch.int64)).tolist()


def test_centroids_for_another_channel_count_raise(pipeline):
    centroids = pipeline["clusters"]["k2/centroids"]
    for wrong in (centroids[:-1], torch.cat([centroids, centroids[:1]])):
        virtual = VirtualNeurons(pipeline["model"], LOWER, UPPER, wrong)
        with pytest.raises(ValueError, match="channels"):
            virtual(pipeline["images"][:2])
