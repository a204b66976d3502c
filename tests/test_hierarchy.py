"""Class-distance matrices and the hierarchy score (monoscope.hierarchy)."""

from __future__ import annotations

import importlib.resources
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

import monoscope  # noqa: F401  (must precede timm/torchvision)
from monoscope.hierarchy import (
    ClassMeanAccumulator,
    build_imagenet_tree_table,
    class_means,
    flat_distances,
    hierarchy_score,
    imagenet_distances,
    imagenet_wnids,
    load_distances,
    parse_wordnet_nouns,
    read_imagenet_tree,
    tree_distances,
)
from monoscope.hierarchy.__main__ import main

WORDNET_DIR = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (WORDNET_DIR / "data.noun").exists(),
    reason="WordNet 3.0 is not installed (apt-get install wordnet-base); CI installs it",
)

# root -> {A, B}, A -> {a1, a2}, B -> {b1, b2}
LEAVES = ["a1", "a2", "b1", "b2"]
PARENTS = {"A": "root", "B": "root", "a1": "A", "a2": "A", "b1": "B", "b2": "B"}
# Siblings are 2 edges apart (a1 - A - a2), cousins 4 (a1 - A - root - B - b1).
TREE_D = np.array(
    [
        [0, 2, 4, 4],
        [2, 0, 4, 4],
        [4, 4, 0, 2],
        [4, 4, 2, 0],
    ]
)

GOLDEN_RETRIEVER = "n02099601"
LABRADOR = "n02099712"
TABBY = "n02123045"
TIGER_CAT = "n02123159"


def _imagenet_index(wnid: str) -> int:
    return imagenet_wnids().index(wnid)


# --------------------------------------------------------------------------- score


def test_tree_distances_match_hand_matrix():
    np.testing.assert_array_equal(tree_distances(LEAVES, PARENTS), TREE_D)
    assert tree_distances(LEAVES, PARENTS).dtype == np.int64


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        # sum_ij f_i f_j D_ij / sum_i f_i^2, with only the nonzero pairs written out
        ([1, 1, 0, 0], (2 * 1 * 1 * 2) / 2),  # siblings: 2
        ([1, 0, 1, 0], (2 * 1 * 1 * 4) / 2),  # cousins: 4
        ([2, 1, 0, 0], (2 * 2 * 1 * 2) / (4 + 1)),  # 1.6
        ([3, 0, 0, 1], (2 * 3 * 1 * 4) / (9 + 1)),  # 2.4
        # all four: each row of D sums to 0 + 2 + 4 + 4 = 10, four rows, over |f|^2 = 4
        ([1, 1, 1, 1], 40 / 4),
        ([0, 0, 0, 5], 0.0),  # one class only
    ],
)
def test_hierarchy_score_by_hand(f, expected):
    score = hierarchy_score(np.array([f], dtype=float), TREE_D)
    assert score.dtype == np.float64
    assert score.shape == (1,)
    assert score[0] == pytest.approx(expected)


def test_hierarchy_score_matches_plain_loop():
    rng = np.random.default_rng(0)
    num_units, num_classes = 9, 6
    f = rng.normal(size=(num_units, num_classes))
    d = rng.uniform(0, 5, size=(num_classes, num_classes))
    d = d + d.T
    np.fill_diagonal(d, 0)
    expected = np.empty(num_units)
    for u in range(num_units):
        quadratic = sum(
            f[u, i] * d[i, j] * f[u, j] for i in range(num_classes) for j in range(num_classes)
        )
        expected[u] = quadratic / sum(f[u, i] ** 2 for i in range(num_classes))
    np.testing.assert_allclose(hierarchy_score(f, d), expected, rtol=1e-12)
    # torch input, float32, gives the same (up to float32 rounding of the input)
    got = hierarchy_score(torch.tensor(f, dtype=torch.float32), torch.tensor(d))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_single_class_zero_unit_and_scale():
    f = np.array([[0.0, 0.0, 7.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    score = hierarchy_score(f, TREE_D)
    assert score[0] == 0.0
    assert np.isnan(score[1])
    assert score[2] == pytest.approx(2.0)
    # The score ignores the scale of a unit.
    assert hierarchy_score(100 * f[2], TREE_D)[0] == pytest.approx(2.0)


def test_hierarchy_score_rejects_bad_distances():
    f = np.ones((2, 4))
    with pytest.raises(ValueError, match="symmetric"):
        hierarchy_score(f, np.triu(TREE_D))
    with pytest.raises(ValueError, match="zero diagonal"):
        hierarchy_score(f, TREE_D + np.eye(4, dtype=int))
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        hierarchy_score(f, flat_distances(3))


def test_flat_distances():
    np.testing.assert_array_equal(flat_distances(3), [[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    # With flat distances the score is (sum f)^2 / |f|^2 - 1: [1, 1, 0] -> 4 / 2 - 1 = 1.
    assert hierarchy_score([[1.0, 1.0, 0.0]], flat_distances(3))[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------- tree errors


def test_tree_distances_errors():
    with pytest.raises(ValueError, match="missing from the tree: zz"):
        tree_distances(["a1", "zz"], PARENTS)
    with pytest.raises(ValueError, match="cycle"):
        tree_distances(["x"], {"x": "y", "y": "z", "z": "y"})
    with pytest.raises(ValueError, match="different trees"):
        tree_distances(["a1", "c"], {**PARENTS, "c": "other_root"})
    with pytest.raises(ValueError, match="duplicate leaves: a1"):
        tree_distances(["a1", "a1"], PARENTS)


def test_tree_distances_inner_nodes_and_single_leaf():
    np.testing.assert_array_equal(tree_distances(["A", "b2"], PARENTS), [[0, 3], [3, 0]])
    np.testing.assert_array_equal(tree_distances(["only"], {}), [[0]])


# --------------------------------------------------------------------------- class means


def test_class_means_matches_numpy():
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(200, 5))
    labels = rng.integers(0, 4, size=200)
    expected = np.stack([acts[labels == c].mean(axis=0) for c in range(4)], axis=1)
    got = class_means(acts, labels, 4)
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    got_torch = class_means(torch.tensor(acts), torch.tensor(labels), 4)
    np.testing.assert_allclose(got_torch, expected, rtol=1e-12)


def test_accumulator_equals_one_shot():
    rng = np.random.default_rng(2)
    acts = rng.normal(size=(301, 3)).astype(np.float32)
    labels = rng.integers(0, 6, size=301)
    accumulator = ClassMeanAccumulator(num_units=3, num_classes=6)
    for start in range(0, 301, 64):
        accumulator.update(torch.from_numpy(acts[start : start + 64]), labels[start : start + 64])
    np.testing.assert_allclose(accumulator.means(), class_means(acts, labels, 6), rtol=1e-12)
    np.testing.assert_array_equal(accumulator.counts, np.bincount(labels, minlength=6))


def test_class_means_errors():
    acts = np.ones((4, 2))
    with pytest.raises(ValueError, match="no samples for classes 1, 3"):
        class_means(acts, np.array([0, 0, 2, 2]), 4)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        class_means(acts, np.array([0, 1, 2, 1]), 2)
    with pytest.raises(ValueError, match="integers"):
        class_means(acts, np.array([0.0, 1.0, 0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"\[S, 3\]"):
        ClassMeanAccumulator(3, 2).update(acts, np.array([0, 1, 0, 1]))


# --------------------------------------------------------------------------- WordNet


def test_imagenet_distances_known_pairs():
    """Distances from the committed table alone (no WordNet install needed).

    First-hypernym chains, read by hand from data.noun pointers:
      golden retriever n02099601 -> retriever n02099029 -> sporting_dog n02098550
        -> hunting_dog n02087122 -> dog n02084071 -> canine n02083346 -> carnivore n02075296
      tabby n02123045 -> domestic_cat n02121808 -> cat n02121620 -> feline n02120997
        -> carnivore n02075296
    Labrador retriever n02099712 is also a child of retriever n02099029, tiger cat
    n02123159 also a child of domestic_cat n02121808.
    """
    d = imagenet_distances()
    assert d.shape == (1000, 1000)
    assert d.dtype == np.int64
    golden, labrador = _imagenet_index(GOLDEN_RETRIEVER), _imagenet_index(LABRADOR)
    tabby, tiger_cat = _imagenet_index(TABBY), _imagenet_index(TIGER_CAT)
    assert golden == 207
    assert d[golden, labrador] == 2
    assert d[tabby, tiger_cat] == 2
    assert d[golden, tabby] == 6 + 4  # both up to carnivore
    np.testing.assert_array_equal(d, d.T)
    assert not d.diagonal().any()
    assert (d + np.eye(1000, dtype=np.int64)).min() >= 1  # no two classes coincide
    assert not d.flags.writeable  # cached: callers must not change it
    assert imagenet_distances() is d


def _bfs_distance(adjacency: dict[str, set[str]], start: str, goal: str) -> int:
    """Edges on the shortest path, by plain breadth-first search."""
    seen = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            return seen[node]
        for neighbour in adjacency[node]:
            if neighbour not in seen:
                seen[neighbour] = seen[node] + 1
                queue.append(neighbour)
    raise AssertionError(f"{goal} not reachable from {start}")


def test_imagenet_distances_match_bfs():
    parents, _ = read_imagenet_tree()
    adjacency: dict[str, set[str]] = {}
    for child, parent in parents.items():
        adjacency.setdefault(child, set()).add(parent)
        adjacency.setdefault(parent, set()).add(child)
    wnids = imagenet_wnids()
    d = imagenet_distances()
    rng = np.random.default_rng(3)
    for i, j in rng.integers(0, 1000, size=(50, 2)):
        assert d[i, j] == _bfs_distance(adjacency, wnids[i], wnids[j]), (wnids[i], wnids[j])


def test_parse_wordnet_nouns_first_hypernym(tmp_path):
    """The first ``@``/``@i`` pointer in file order is the parent; others are ignored."""
    (tmp_path / "data.noun").write_text(
        "  1 This software and database is being provided to you, the LICENSEE, by  \n"
        "00001740 03 n 01 entity 0 001 ~ 00001930 n 0000 | that which is | perceived  \n"
        "00001930 03 n 01 physical_entity 0 001 @ 00001740 n 0000 | an entity  \n"
        "00000002 05 n 02 dog 0 domestic_dog 0 003 #m 00000009 n 0000 @ 00001930 n 0000 "
        "@ 00001740 n 0000 | a dog  \n"
        "00000003 18 n 01 Rex 0 001 @i 00000002 n 0000 | one dog  \n"
    )
    assert parse_wordnet_nouns(tmp_path / "data.noun") == {
        "n00001740": ("entity", None),
        "n00001930": ("physical_entity", "n00001740"),
        "n00000002": ("dog", "n00001930"),
        "n00000003": ("Rex", "n00000002"),
    }
    table = build_imagenet_tree_table(tmp_path, wnids=["n00000003"])
    rows = [line for line in table.splitlines() if not line.startswith("#")]
    assert rows == [
        "wnid\tparent_wnid\tfirst_lemma",
        "n00000002\tn00001930\tdog",
        "n00000003\tn00000002\tRex",
        "n00001740\t-\tentity",
        "n00001930\tn00001740\tphysical_entity",
    ]


@needs_wordnet
def test_committed_table_is_regenerated_byte_for_byte(tmp_path):
    out = tmp_path / "tree.tsv"
    main(["build-imagenet", "--wordnet-dir", str(WORDNET_DIR), "--out", str(out)])
    committed = importlib.resources.files("monoscope") / "resources" / "imagenet_wordnet_tree.tsv"
    assert out.read_bytes() == committed.read_bytes()


# --------------------------------------------------------------------------- configs


def test_load_distances_flat_and_tree():
    np.testing.assert_array_equal(load_distances({"kind": "flat"}, ["x", "y"]), flat_distances(2))
    np.testing.assert_array_equal(
        load_distances({"kind": "tree", "parents": PARENTS}, LEAVES), TREE_D
    )


def test_load_distances_wordnet_subset():
    names = [TABBY, GOLDEN_RETRIEVER, LABRADOR]
    got = load_distances({"kind": "wordnet"}, names)
    np.testing.assert_array_equal(got, [[0, 10, 10], [10, 0, 2], [10, 2, 0]])
    indices = [_imagenet_index(name) for name in names]
    np.testing.assert_array_equal(load_distances({"kind": "wordnet"}, indices), got)
    assert load_distances({"kind": "wordnet"}, list(imagenet_wnids())).shape == (1000, 1000)


def test_load_distances_errors():
    with pytest.raises(ValueError, match="n99999999, n88888888"):
        load_distances({"kind": "wordnet"}, [TABBY, "n99999999", "n88888888"])
    with pytest.raises(ValueError, match="kind must be one of"):
        load_distances({"kind": "graph"}, ["x"])
    with pytest.raises(ValueError, match="unexpected keys"):
        load_distances({"kind": "flat", "parents": {}}, ["x"])
    with pytest.raises(ValueError, match="needs 'parents'"):
        load_distances({"kind": "tree"}, ["x"])
    with pytest.raises(ValueError, match="repeat"):
        load_distances({"kind": "flat"}, ["x", "x"])
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        load_distances({"kind": "wordnet"}, [0, 1000])
