"""Tests of monoscope.pure.clustering: k-means virtual neurons and the automatic choice of k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from monoscope.pure.clustering import (
    ClusterConfig,
    cluster_units,
    kmeans,
    seed_stability,
    silhouette,
)

CHANNELS = 3  # channel c has c + 2 planted blobs
POINTS_PER_BLOB = 12
DIMS = 4
KS = (2, 3, 4, 5)


def _blobs(k: int, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in ``k`` tight, far-apart Gaussian blobs, shuffled; and their blob ids."""
    centres = np.zeros((k, DIMS))
    for blob in range(k):
        # Corners of a large simplex-like layout: every pair at least 50 apart.
        centres[blob, blob % DIMS] = 50.0 * (1 + blob // DIMS)
        centres[blob] += rng.normal(scale=1.0, size=DIMS)
    truth = np.arange(n) % k
    rng.shuffle(truth)
    points = centres[truth] + rng.normal(scale=0.2, size=(n, DIMS))
    return points.astype(np.float32), truth


@pytest.fixture(scope="module")
def planted():
    """``[C, N, D]`` vectors (N the same for every channel) and ``[C, N]`` blob ids."""
    rng = np.random.default_rng(7)
    n = POINTS_PER_BLOB * 12  # divisible by 2, 3 and 4: balanced blobs in every channel
    vectors, truths = zip(*(_blobs(c + 2, rng, n) for c in range(CHANNELS)), strict=True)
    return torch.from_numpy(np.stack(vectors)), np.stack(truths)


@pytest.fixture(scope="module")
def clustered(planted):
    vectors, _ = planted
    return cluster_units(vectors, ClusterConfig(ks=KS, n_init=4, seed=0, auto_k=True))


# --------------------------------------------------------------------------- kmeans


def test_kmeans_equals_sklearn_on_the_same_float64_data():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 6)).astype(np.float32)
    labels, centroids = kmeans(data, 4, n_init=3, seed=11)
    reference = KMeans(n_clusters=4, n_init=3, random_state=11).fit(data.astype(np.float64))
    assert labels.dtype == np.int64 and labels.shape == (50,)
    assert centroids.dtype == np.float32 and centroids.shape == (4, 6)
    np.testing.assert_array_equal(labels, reference.labels_)
    np.testing.assert_allclose(centroids, reference.cluster_centers_, rtol=1e-6, atol=1e-6)
    # The labels are the nearest centroids: k-means' final assignment step.
    distances = np.linalg.norm(data[:, None, :] - centroids[None], axis=2)
    np.testing.assert_array_equal(labels, distances.argmin(axis=1))


def test_kmeans_is_deterministic_and_depends_on_the_seed():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(40, 3))
    first = kmeans(data, 5, n_init=2, seed=3)
    second = kmeans(data, 5, n_init=2, seed=3)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    # Same call as sklearn with another seed gives sklearn's answer for that seed.
    other = kmeans(data, 5, n_init=2, seed=4)
    expected = KMeans(n_clusters=5, n_init=2, random_state=4).fit(data)
    np.testing.assert_array_equal(other[0], expected.labels_)


def test_kmeans_k_equal_to_n_is_allowed_and_k_above_n_raises():
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    labels, centroids = kmeans(data, 4, n_init=1)
    assert sorted(labels.tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(np.sort(centroids[:, 0]), data[:, 0])
    with pytest.raises(ValueError, match=r"clustering\.k"):
        kmeans(data, 5)


# --------------------------------------------------------------------------- silhouette


def test_silhouette_is_minus_one_when_undefined():
    data = np.random.default_rng(2).normal(size=(10, 2))
    assert silhouette(data, np.zeros(10, dtype=np.int64)) == -1.0
    # One cluster per point: sklearn would reject it; -1 as well.
    assert silhouette(data, np.arange(10)) == -1.0


def test_silhouette_matches_sklearn_and_prefers_the_true_split():
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(3)
    points, truth = _blobs(3, rng, 30)
    score = silhouette(points, truth)
    assert score == pytest.approx(silhouette_score(points, truth))
    assert score > 0.9
    assert silhouette(points, rng.integers(0, 3, size=30)) < score


# --------------------------------------------------------------------------- cluster_units


def test_cluster_units_keys_and_shapes(planted, clustered):
    vectors, _ = planted
    channels, n, dims = vectors.shape
    for k in KS:
        labels = clustered[f"k{k}/labels"]
        centroids = clustered[f"k{k}/centroids"]
        assert labels.shape == (channels, n) and labels.dtype == torch.int64
        assert centroids.shape == (channels, k, dims) and centroids.dtype == torch.float32
        assert int(labels.min()) >= 0 and int(labels.max()) < k
        assert torch.isfinite(centroids).all()
    parts = ("labels", "centroids", "stability")
    expected = {f"k{k}/{part}" for k in KS for part in parts}
    expected |= {"auto/k", "auto/labels", "auto/centroids", "auto/silhouette"}
    assert set(clustered) == expected


def test_cluster_units_without_auto_k_has_no_auto_keys(planted):
    vectors, _ = planted
    result = cluster_units(vectors[:1], ClusterConfig(ks=(2,), n_init=1))
    assert set(result) == {"k2/labels", "k2/centroids", "k2/stability"}


def test_cluster_units_per_channel_equals_kmeans(planted, clustered):
    vectors, _ = planted
    for channel in range(CHANNELS):
        labels, centroids = kmeans(vectors[channel].numpy(), 3, n_init=4, seed=0)
        assert torch.equal(clustered["k3/labels"][channel], torch.from_numpy(labels))
        assert torch.equal(clustered["k3/centroids"][channel], torch.from_numpy(centroids))


def test_true_k_recovers_the_planted_blobs(planted, clustered):
    vectors, truths = planted
    for channel in range(CHANNELS):
        k = channel + 2
        labels = clustered[f"k{k}/labels"][channel].numpy()
        assert adjusted_rand_score(truths[channel], labels) == 1.0
        # Each centroid is the mean of its blob.
        centroids = clustered[f"k{k}/centroids"][channel].numpy()
        data = vectors[channel].numpy()
        for cluster in range(k):
            np.testing.assert_allclose(
                centroids[cluster], data[labels == cluster].mean(axis=0), atol=1e-4
            )


def test_auto_k_recovers_the_planted_number_of_blobs(planted, clustered):
    vectors, _ = planted
    assert clustered["auto/k"].tolist() == [c + 2 for c in range(CHANNELS)]
    silhouettes = clustered["auto/silhouette"]
    assert silhouettes.shape == (CHANNELS, len(KS))
    assert torch.equal(torch.as_tensor(KS)[silhouettes.argmax(dim=1)], clustered["auto/k"])
    assert bool((silhouettes <= 1.0).all()) and bool((silhouettes >= -1.0).all())
    auto_centroids = clustered["auto/centroids"]
    assert auto_centroids.shape == (CHANNELS, max(KS), vectors.shape[2])
    for channel in range(CHANNELS):
        k = channel + 2
        assert torch.isfinite(auto_centroids[channel, :k]).all()
        assert torch.isnan(auto_centroids[channel, k:]).all()
        assert torch.equal(auto_centroids[channel, :k], clustered[f"k{k}/centroids"][channel])
        assert torch.equal(clustered["auto/labels"][channel], clustered[f"k{k}/labels"][channel])


def test_degenerate_unit_does_not_crash():
    rng = np.random.default_rng(4)
    healthy, _ = _blobs(2, rng, 20)
    dead = np.full((20, DIMS), 0.25, dtype=np.float32)  # every vector identical
    vectors = torch.from_numpy(np.stack([dead, healthy]))
    result = cluster_units(vectors, ClusterConfig(ks=(2, 3), n_init=2, auto_k=True))
    for k in (2, 3):
        labels = result[f"k{k}/labels"]
        assert labels.shape == (2, 20)
        assert int(labels.min()) >= 0 and int(labels.max()) < k
        # Every centroid of the dead unit sits on the single point.
        np.testing.assert_allclose(result[f"k{k}/centroids"][0].numpy(), 0.25, atol=1e-6)
    # No silhouette is defined for the dead unit: -1 everywhere, first k chosen.
    assert result["auto/silhouette"][0].tolist() == [-1.0, -1.0]
    assert result["auto/k"].tolist() == [2, 2]
    assert torch.isnan(result["auto/centroids"][0, 2:]).all()


def test_cluster_units_too_few_references_raises():
    with pytest.raises(ValueError, match=r"clustering\.k"):
        cluster_units(torch.zeros(2, 3, 4), ClusterConfig(ks=(2, 4), n_init=1))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("ks", [(), [], (0, 2), (2, -1)])
def test_cluster_config_rejects_bad_ks(ks):
    with pytest.raises(ValueError, match=r"clustering\.k"):
        ClusterConfig(ks=ks)


def test_cluster_config_auto_k_needs_k_of_at_least_two():
    with pytest.raises(ValueError, match="auto_k"):
        ClusterConfig(ks=(1, 2, 3), auto_k=True)
    # Without auto_k, k = 1 is a valid (trivial) split.
    assert ClusterConfig(ks=(1, 2)).ks == (1, 2)
    assert ClusterConfig(ks=(2, 3), auto_k=True).auto_k


# --------------------------------------------------------------------------- stability


def test_seed_stability_is_the_mean_adjusted_rand_index_over_the_other_seeds():
    rng = np.random.default_rng(3)
    planted, _ = _blobs(3, rng, 30)
    labels = kmeans(planted, 3, n_init=1, seed=0)[0]
    assert seed_stability(planted, labels, 3, 1, [1, 2]) == pytest.approx(1.0)
    noise = rng.normal(size=(40, 2))
    labels = kmeans(noise, 4, n_init=1, seed=0)[0]
    expected = np.mean(
        [
            adjusted_rand_score(labels, KMeans(4, n_init=1, random_state=seed).fit(noise).labels_)
            for seed in (1, 2, 3)
        ]
    )
    assert seed_stability(noise, labels, 4, 1, [1, 2, 3]) == pytest.approx(expected)
    assert np.isnan(seed_stability(noise, labels, 4, 1, []))


def test_cluster_units_reports_stability_per_channel_and_k():
    vectors = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 20, 3)))
    result = cluster_units(vectors, ClusterConfig(ks=(2, 3), n_init=2, stability_seeds=2))
    for k in (2, 3):
        stability = result[f"k{k}/stability"]
        assert stability.shape == (2,)
        for channel in range(2):
            labels = result[f"k{k}/labels"][channel].numpy()
            data = vectors[channel].numpy()
            assert stability[channel] == pytest.approx(
                seed_stability(data, labels, k, 2, [1, 2]), abs=1e-6
            )
    assert "k2/stability" not in cluster_units(vectors, ClusterConfig(ks=(2,), stability_seeds=0))
    with pytest.raises(ValueError, match="stability_seeds"):
        ClusterConfig(stability_seeds=-1)
