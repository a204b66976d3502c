"""Metrics against hand-worked examples and brute-force double loops."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from monoscope.compat import import_dcor
from monoscope.pure.metrics import (
    alignment_scores,
    distance_summary,
    mean_and_standard_error,
    neuron_groups,
    pairwise_distances,
    purity,
    purity_summary,
    semantic_distances,
    summarize_alignment,
)

# the reference below is dcor's naive method; adapter 5 only changes how dcor imports
dcor = import_dcor()


def alignment(spaces, reference, **options):
    """Mean and standard error of the alignment over the groups of neurons."""
    return summarize_alignment(alignment_scores(spaces, reference, **options))


# 4 points in 1-D, two clusters: x = 0, 1 | 3, 6.
# pairs (distance, same cluster?): (0,1) 1 yes, (0,2) 3 no, (0,3) 6 no,
#                                  (1,2) 2 no,  (1,3) 5 no, (2,3) 3 yes
# intra = (1 + 3) / 2 = 2, inter = (3 + 6 + 2 + 5) / 4 = 4, random = 20 / 6 = 10/3
HAND_POINTS = np.array([[0.0], [1.0], [3.0], [6.0]])
HAND_CLUSTERS = np.array([0, 0, 1, 1])

# A second neuron: x = 0, 2, 4, 6 with clusters 0, 1, 0, 1.
# (0,1) 2 no, (0,2) 4 yes, (0,3) 6 no, (1,2) 2 no, (1,3) 4 yes, (2,3) 2 no
# intra = (4 + 4) / 2 = 4, inter = (2 + 6 + 2 + 2) / 4 = 3, random = 20 / 6 = 10/3
HAND_POINTS_2 = np.array([[0.0], [2.0], [4.0], [6.0]])
HAND_CLUSTERS_2 = np.array([0, 1, 0, 1])


def brute_distances(x):
    n = len(x)
    result = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            result[i, j] = math.sqrt(sum((x[i, d] - x[j, d]) ** 2 for d in range(x.shape[1])))
    return result


def brute_semantic(x, clusters):
    distances = brute_distances(x)
    intra, inter, every = [], [], []
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            every.append(distances[i, j])
            (intra if clusters[i] == clusters[j] else inter).append(distances[i, j])
    mean = lambda values: sum(values) / len(values) if values else math.nan  # noqa: E731
    return {"intra": mean(intra), "inter": mean(inter), "random": mean(every)}


# ---- pairwise distances ------------------------------------------------------------------


def test_pairwise_distances_hand():
    distances = pairwise_distances(np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(distances, [[0, 5, 5], [5, 0, 0], [5, 0, 0]])
    assert distances.dtype == np.float64


def test_pairwise_distances_brute_force_and_torch():
    x = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    expected = brute_distances(x.astype(np.float64))
    np.testing.assert_allclose(pairwise_distances(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pairwise_distances(torch.from_numpy(x)), expected, rtol=1e-12)
    np.testing.assert_allclose(
        pairwise_distances(torch.from_numpy(x).requires_grad_()), expected, rtol=1e-12
    )


def test_pairwise_distances_one_dimensional_input_and_tiny():
    np.testing.assert_array_equal(pairwise_distances([0.0, 2.0]), [[0, 2], [2, 0]])
    assert pairwise_distances(np.zeros((1, 3))).shape == (1, 1)
    with pytest.raises(ValueError, match="N, D"):
        pairwise_distances(np.zeros((2, 2, 2)))


# ---- semantic distances --------------------------------------------------------------------


def test_semantic_distances_hand():
    result = semantic_distances(HAND_POINTS, HAND_CLUSTERS)
    assert result == pytest.approx({"intra": 2.0, "inter": 4.0, "random": 10 / 3})
    result = semantic_distances(HAND_POINTS_2, HAND_CLUSTERS_2)
    assert result == pytest.approx({"intra": 4.0, "inter": 3.0, "random": 10 / 3})


def test_semantic_distances_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.normal(size=(15, 4))
        clusters = rng.integers(0, 3, size=15)
        assert semantic_distances(x, clusters) == pytest.approx(brute_semantic(x, clusters))


def test_semantic_distances_missing_pairs_are_nan():
    one_cluster = semantic_distances(HAND_POINTS, np.zeros(4, dtype=int))
    assert math.isnan(one_cluster["inter"])
    assert one_cluster["intra"] == pytest.approx(10 / 3) == one_cluster["random"]
    singletons = semantic_distances(HAND_POINTS, np.arange(4))
    assert math.isnan(singletons["intra"])
    assert singletons["inter"] == pytest.approx(10 / 3)
    assert all(math.isnan(value) for value in semantic_distances([[1.0]], [0]).values())
    with pytest.raises(ValueError, match="clusters"):
        semantic_distances(HAND_POINTS, np.zeros(3))


# ---- mean and standard error -----------------------------------------------------------------


def test_mean_and_standard_error_hand():
    # values 1, 2, 3: mean 2, sample std sqrt(((1-2)^2 + 0 + (3-2)^2) / 2) = 1, SE = 1 / sqrt(3)
    mean, se = mean_and_standard_error([1.0, np.nan, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert se == pytest.approx(1 / math.sqrt(3))
    assert np.isnan(mean_and_standard_error([])).all()
    assert np.isnan(mean_and_standard_error([np.nan])).all()
    mean, se = mean_and_standard_error([4.0])
    assert mean == 4.0 and math.isnan(se)


def test_mean_and_standard_error_brute_force():
    values = np.random.default_rng(2).normal(size=37)
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (n - 1))
    assert mean_and_standard_error(values) == pytest.approx((mean, std / math.sqrt(n)))


def test_distance_summary_hand():
    # intra 2 and 4: mean 3, SE = std(2, 4) / sqrt(2) = sqrt(2) / sqrt(2) = 1
    # inter 4 and 3: mean 3.5, SE = (1 / sqrt(2)) / sqrt(2) = 0.5; random 10/3 twice: SE 0
    embeddings = np.stack([HAND_POINTS, HAND_POINTS_2])
    clusters = np.stack([HAND_CLUSTERS, HAND_CLUSTERS_2])
    summary = distance_summary(embeddings, clusters)
    assert summary["intra"] == pytest.approx((3.0, 1.0))
    assert summary["inter"] == pytest.approx((3.5, 0.5))
    assert summary["random"] == pytest.approx((10 / 3, 0.0))


def test_distance_summary_brute_force():
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(6, 10, 3))
    clusters = rng.integers(0, 2, size=(6, 10))
    summary = distance_summary(torch.from_numpy(embeddings), torch.from_numpy(clusters))
    per_neuron = [brute_semantic(x, c) for x, c in zip(embeddings, clusters, strict=True)]
    for key in ("intra", "inter", "random"):
        values = [record[key] for record in per_neuron]
        n = len(values)
        mean = sum(values) / n
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)
        assert summary[key] == pytest.approx((mean, se))
    with pytest.raises(ValueError, match="C, N"):
        distance_summary(embeddings, clusters[:, :5])


# ---- neuron groups ---------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "subsets"), [(100, 30), (30, 30), (7, 30), (61, 4), (1, 5)])
def test_neuron_groups_disjoint_cover_non_empty(count, subsets):
    groups = neuron_groups(count, subsets, seed=3)
    assert len(groups) == min(count, subsets)
    joined = np.concatenate(groups)
    assert sorted(joined.tolist()) == list(range(count))  # cover, and disjoint
    sizes = [len(group) for group in groups]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_neuron_groups_seeded():
    first = neuron_groups(100, 30, seed=0)
    again = neuron_groups(100, 30, seed=0)
    other = neuron_groups(100, 30, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert neuron_groups(0, 30) == []
    with pytest.raises(ValueError):
        neuron_groups(10, 0)


# ---- alignment -------------------------------------------------------------------------------


def brute_alignment(spaces, reference, subsets, m, seed):
    """Explicit loops over groups, neurons and pairs i < j."""
    groups = neuron_groups(len(spaces[reference]), subsets, seed)
    result = {name: {"pearson": [], "spearman": [], "dcor": []} for name in spaces}
    for group in groups:
        pooled = {name: [] for name in spaces}
        for neuron in group:
            for i in range(m):
                for j in range(i + 1, m):
                    for name, space in spaces.items():
                        difference = space[neuron, i] - space[neuron, j]
                        pooled[name].append(math.sqrt(float(difference @ difference)))
        target = np.array(pooled[reference])
        for name in spaces:
            values = np.array(pooled[name])
            keep = (values != 0) & (target != 0)
            x, y = values[keep], target[keep]
            result[name]["pearson"].append(np.corrcoef(x, y)[0, 1])
            result[name]["spearman"].append(spearmanr(x, y).statistic)
            result[name]["dcor"].append(dcor.distance_correlation(x, y, method="naive"))
    return result


def test_alignment_against_brute_force():
    rng = np.random.default_rng(4)
    clip = rng.normal(size=(9, 8, 5))
    circuits = clip[..., :3] + 0.5 * rng.normal(size=(9, 8, 3))
    circuits[0, 1] = circuits[0, 0]  # a duplicate reference: its pair is dropped
    spaces = {"clip": clip, "circuits": circuits, "noise": rng.normal(size=(9, 8, 2))}
    scores = alignment_scores(spaces, "clip", subsets=3, references_per_neuron=6, seed=5)
    expected = brute_alignment(spaces, "clip", subsets=3, m=6, seed=5)
    for name in spaces:
        for metric in ("pearson", "spearman", "dcor"):
            np.testing.assert_allclose(scores[name][metric], expected[name][metric], rtol=1e-9)
    summary = alignment(spaces, "clip", subsets=3, references_per_neuron=6, seed=5)
    for name in spaces:
        for metric in ("pearson", "spearman", "dcor"):
            assert summary[name][metric] == pytest.approx(
                mean_and_standard_error(expected[name][metric])
            )


def test_alignment_identical_space_and_reference():
    rng = np.random.default_rng(5)
    clip = rng.normal(size=(40, 12, 6))
    result = alignment({"clip": clip, "copy": clip.copy()}, "clip", subsets=4)
    for name in ("clip", "copy"):
        for metric in ("pearson", "spearman", "dcor"):
            mean, se = result[name][metric]
            assert mean == pytest.approx(1.0, abs=1e-9)
            assert se == pytest.approx(0.0, abs=1e-9)


def test_alignment_monotone_transform_has_spearman_one():
    # Two references per neuron, so each neuron contributes one pair. The second space
    # places them exp(d) apart on a line, d being their distance in the reference space:
    # a monotone, non-linear transform of the pooled distances.
    rng = np.random.default_rng(6)
    clip = rng.normal(size=(60, 2, 4))
    d = np.linalg.norm(clip[:, 0] - clip[:, 1], axis=1)
    line = np.zeros((60, 2, 1))
    line[:, 1, 0] = np.exp(3 * d)
    result = alignment({"clip": clip, "line": line}, "clip", subsets=3, references_per_neuron=2)
    assert result["line"]["spearman"][0] == pytest.approx(1.0)
    assert result["line"]["pearson"][0] < 0.95
    assert result["line"]["dcor"][0] < 1.0


def test_alignment_independent_space_is_uncorrelated():
    rng = np.random.default_rng(7)
    spaces = {"clip": rng.normal(size=(60, 20, 8)), "random": rng.normal(size=(60, 20, 8))}
    result = alignment(spaces, "clip", subsets=5)
    assert abs(result["random"]["pearson"][0]) < 0.1
    assert abs(result["random"]["spearman"][0]) < 0.1
    assert result["random"]["dcor"][0] < 0.15


def test_alignment_drops_zero_distance_pairs():
    # One pair per neuron again. The space equals the reference, except that in 5 neurons
    # its two references coincide (distance 0) and in 3 others the reference's coincide.
    # Dropping those pairs leaves identical distances (Pearson 1); keeping them would not.
    rng = np.random.default_rng(8)
    clip = rng.normal(size=(40, 2, 3))
    space = clip.copy()
    space[:5, 1] = space[:5, 0]
    clip[5:8, 1] = clip[5:8, 0]
    scores = alignment_scores({"clip": clip, "space": space}, "clip", subsets=1)
    assert scores["space"]["pearson"][0] == pytest.approx(1.0)
    assert scores["space"]["dcor"][0] == pytest.approx(1.0)
    kept = np.corrcoef(
        np.linalg.norm(space[:, 0] - space[:, 1], axis=1),
        np.linalg.norm(clip[:, 0] - clip[:, 1], axis=1),
    )[0, 1]
    assert kept < 0.9


def test_alignment_uses_first_references_only():
    rng = np.random.default_rng(9)
    clip = rng.normal(size=(12, 30, 4))
    space = clip.copy()
    space[:, 10:] = rng.normal(size=(12, 20, 4))  # differs only beyond the first 10
    result = alignment({"clip": clip, "space": space}, "clip", subsets=3, references_per_neuron=10)
    assert result["space"]["pearson"][0] == pytest.approx(1.0)
    result = alignment({"clip": clip, "space": space}, "clip", subsets=3, references_per_neuron=50)
    assert result["space"]["pearson"][0] < 0.9  # all 30 used when fewer than 50


def test_alignment_deterministic_and_seeded():
    rng = np.random.default_rng(10)
    spaces = {
        "clip": rng.normal(size=(50, 10, 4)),
        "torch": torch.from_numpy(rng.normal(size=(50, 10, 3))),
    }
    first = alignment_scores(spaces, "clip", subsets=5, seed=1)
    again = alignment_scores(spaces, "clip", subsets=5, seed=1)
    other = alignment_scores(spaces, "clip", subsets=5, seed=2)
    np.testing.assert_array_equal(first["torch"]["pearson"], again["torch"]["pearson"])
    assert not np.array_equal(first["torch"]["pearson"], other["torch"]["pearson"])
    assert alignment(spaces, "clip", subsets=5, seed=1) == alignment(
        spaces, "clip", subsets=5, seed=1
    )


def test_alignment_fewer_neurons_than_subsets():
    rng = np.random.default_rng(11)
    spaces = {"clip": rng.normal(size=(4, 6, 3)), "space": rng.normal(size=(4, 6, 3))}
    scores = alignment_scores(spaces, "clip", subsets=30)
    assert len(scores["space"]["pearson"]) == 4
    assert np.isfinite(scores["space"]["pearson"]).all()


def test_alignment_errors():
    clip = np.zeros((3, 4, 2))
    with pytest.raises(KeyError, match="dino"):
        alignment({"clip": clip}, "dino")
    with pytest.raises(ValueError, match="shape"):
        alignment({"clip": clip, "bad": np.zeros((3, 5, 2))}, "clip")
    with pytest.raises(ValueError, match="at least 2"):
        alignment({"clip": clip}, "clip", references_per_neuron=1)


def test_alignment_degenerate_space_is_nan():
    # All references of every neuron coincide in "dead": no pair survives, nothing is defined.
    rng = np.random.default_rng(12)
    spaces = {"clip": rng.normal(size=(6, 5, 3)), "dead": np.ones((6, 5, 3))}
    result = alignment(spaces, "clip", subsets=2)
    assert all(math.isnan(value) for pair in result["dead"].values() for value in pair)


# ---- purity ----------------------------------------------------------------------------------


def test_purity_hand():
    labels = np.array([1, 1, 2, 2, 2, 3])
    # the neuron: majority label 2 holds 3 of 6 references -> 0.5
    np.testing.assert_allclose(purity(labels), [0.5])
    # clusters 0: labels 1, 1, 2 -> 2/3; 1: labels 2, 2 -> 1; 2: label 3 -> 1
    np.testing.assert_allclose(purity(labels, [0, 0, 0, 1, 1, 2]), [2 / 3, 1.0, 1.0])
    # ordered by cluster id, not by appearance: cluster 1 = {2, 2, 3} -> 2/3, cluster 5 = {1, 1, 2}
    np.testing.assert_allclose(purity(labels, [5, 5, 1, 1, 5, 1]), [2 / 3, 2 / 3])
    np.testing.assert_allclose(purity(labels, [7, 7, 3, 3, 3, 3]), [3 / 4, 1.0])
    assert purity(np.zeros(0, dtype=int)).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        purity(labels, [0, 1])


def test_purity_brute_force():
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 4, size=40)
    clusters = rng.integers(0, 5, size=40)
    expected = []
    for cluster in sorted(set(clusters.tolist())):
        members = [label for label, c in zip(labels, clusters, strict=True) if c == cluster]
        expected.append(max(members.count(value) for value in set(members)) / len(members))
    np.testing.assert_allclose(purity(torch.from_numpy(labels), clusters), expected)


def test_purity_summary_hand():
    labels = np.array([[1, 1, 2, 2], [3, 3, 3, 4]])
    # neurons: 2/4 = 0.5 and 3/4 = 0.75 -> mean 0.625, SE = std(0.5, 0.75) / sqrt(2) = 0.125
    mean, se, units = purity_summary(labels)
    assert (mean, se, units) == pytest.approx((0.625, 0.125, 2))
    # clusters: neuron 0 {1, 1} -> 1, {2, 2} -> 1; neuron 1 {3, 3, 3} -> 1, {4} -> 1
    mean, se, units = purity_summary(labels, np.array([[0, 0, 1, 1], [0, 0, 0, 1]]))
    assert (mean, se, units) == pytest.approx((1.0, 0.0, 4))
    # neuron 0 {1, 2} -> 0.5, {1, 2} -> 0.5; neuron 1 one cluster -> 0.75
    mean, se, units = purity_summary(labels, np.array([[0, 1, 0, 1], [2, 2, 2, 2]]))
    assert units == 3
    assert mean == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    with pytest.raises(ValueError):
        purity_summary(labels, np.zeros((2, 3)))
