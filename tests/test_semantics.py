"""Unit labels and semantic scores against brute force and hand-worked cases."""

import math

import numpy as np
import pytest
import torch

from monoscope.semantics import (
    clarity,
    class_prototypes,
    label_units,
    mean_directions,
    most_similar_units,
    polysemanticity,
    redundancy,
)


def random_units(units=5, references=7, dim=6, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(units, references, dim)))


def unit_rows(array):
    array = np.asarray(array, dtype=float)
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def test_clarity_is_the_mean_pairwise_cosine_by_brute_force():
    embeddings = random_units()
    rows = unit_rows(embeddings.numpy())
    expected = []
    for unit in rows:
        pairs = [unit[i] @ unit[j] for i in range(len(unit)) for j in range(len(unit)) if i != j]
        expected.append(np.mean(pairs))
    np.testing.assert_allclose(clarity(embeddings).numpy(), expected, atol=1e-12)


def test_clarity_hand_worked_cases():
    same = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]]])
    orthogonal = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
    opposite = torch.tensor([[[1.0, 1.0], [-2.0, -2.0]]])
    assert clarity(same).item() == pytest.approx(1.0)
    assert clarity(orthogonal).item() == pytest.approx(0.0)
    assert clarity(opposite).item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least two references"):
        clarity(torch.ones(2, 1, 3))


def test_labels_are_the_nearest_vocabulary_entries_by_brute_force():
    embeddings = random_units(units=4, references=5, dim=3, seed=1)
    vocabulary = torch.from_numpy(np.random.default_rng(2).normal(size=(6, 3)))
    indices, scores = label_units(embeddings, vocabulary, top=2)
    rows = unit_rows(embeddings.numpy())
    words = unit_rows(vocabulary.numpy())
    for unit in range(4):
        mean = rows[unit].mean(axis=0)
        cosine = words @ (mean / np.linalg.norm(mean))
        best = np.argsort(-cosine, kind="stable")[:2]
        assert indices[unit].tolist() == best.tolist()
        np.testing.assert_allclose(scores[unit].numpy(), cosine[best], atol=1e-12)
    with pytest.raises(ValueError, match="top must be in"):
        label_units(embeddings, vocabulary, top=7)
    with pytest.raises(ValueError, match="vocabulary"):
        label_units(embeddings, vocabulary[:, :2])


def test_class_prototypes_stand_in_for_text_and_label_a_pure_unit():
    # Two well separated classes; a unit whose references are all class-1 images gets
    # label 1 with a similarity near 1.
    rng = np.random.default_rng(3)
    centres = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    labels = np.repeat([0, 1], 20)
    images = centres[labels] + rng.normal(scale=0.3, size=(40, 3))
    prototypes = class_prototypes(torch.from_numpy(images), torch.from_numpy(labels), 2)
    expected = np.stack([unit_rows(images[labels == c]).mean(axis=0) for c in (0, 1)])
    np.testing.assert_allclose(prototypes.numpy(), unit_rows(expected), atol=1e-12)
    unit = torch.from_numpy(images[labels == 1][None, :8])
    indices, scores = label_units(unit, prototypes, top=1)
    assert indices.item() == 1 and scores.item() > 0.99
    with pytest.raises(ValueError, match=r"classes \[2\] have no image"):
        class_prototypes(torch.from_numpy(images), torch.from_numpy(labels), 3)


def test_polysemanticity_is_the_exponential_entropy_of_nearest_concepts():
    vocabulary = torch.eye(3, dtype=torch.float64)
    # Unit 0: all references nearest concept 0; unit 1: two and two over concepts 1 and 2;
    # unit 2: one reference per concept and one more on concept 0.
    embeddings = torch.tensor(
        [
            [[1.0, 0.1, 0.0], [2.0, 0.0, 0.3], [1.0, 0.2, 0.2], [3.0, 1.0, 0.0]],
            [[0.0, 1.0, 0.1], [0.1, 2.0, 0.0], [0.0, 0.1, 1.0], [0.2, 0.0, 2.0]],
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.5, 0.0]],
        ]
    )
    shares = [[1.0], [0.5, 0.5], [0.5, 0.25, 0.25]]
    expected = [math.exp(-sum(p * math.log(p) for p in unit)) for unit in shares]
    np.testing.assert_allclose(polysemanticity(embeddings, vocabulary).numpy(), expected)
    assert polysemanticity(embeddings, vocabulary)[0].item() == pytest.approx(1.0)
    assert polysemanticity(embeddings, vocabulary)[1].item() == pytest.approx(2.0)


def test_redundancy_and_most_similar_units_by_brute_force():
    # Units 0 and 1 point the same way, unit 2 nearly so, unit 3 elsewhere.
    embeddings = torch.tensor(
        [
            [[1.0, 0.0], [1.0, 0.1]],
            [[2.0, 0.0], [2.0, 0.2]],
            [[1.0, 0.3], [1.0, 0.4]],
            [[0.0, 1.0], [-0.1, 1.0]],
        ]
    )
    directions = mean_directions(embeddings).numpy()
    cosine = directions @ directions.T
    for threshold in (0.9, 0.999, -1.0):
        expected = [(cosine[u] >= threshold).sum() - 1 for u in range(4)]
        assert redundancy(embeddings, threshold).tolist() == expected
    assert redundancy(embeddings, 0.999).tolist() == [1, 1, 0, 0]
    indices, scores = most_similar_units(embeddings, top=2)
    for unit in range(4):
        others = [u for u in np.argsort(-cosine[unit], kind="stable") if u != unit][:2]
        assert indices[unit].tolist() == others
        np.testing.assert_allclose(scores[unit].numpy(), cosine[unit, others], atol=1e-12)
    with pytest.raises(ValueError, match="threshold"):
        redundancy(embeddings, 1.5)
    with pytest.raises(ValueError, match="top must be in"):
        most_similar_units(embeddings, top=4)


def test_bad_embeddings_are_named():
    with pytest.raises(ValueError, match=r"\[units, references, dim\]"):
        clarity(torch.ones(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        clarity(torch.full((1, 2, 2), float("nan")))
