"""The unit catalogue (monoscope.catalogue) on a hand-built experiment, each score
against a brute-force computation, and the chunked neighbour search."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from monoscope.catalogue import build_catalogue, load_catalogue, load_directions, save_catalogue
from monoscope.evaluation import EvaluationInputs, catalogue_summary
from monoscope.pure.circuits import Circuits
from monoscope.semantics import most_similar_directions
from monoscope.vocabulary import Vocabulary

CLASSES = ["zero", "one", "two"]


def hand_inputs():
    """Two neurons (channels 3 and 5) with 4 references each, one clustering method at
    k=2, and one SAE with two alive features (7 and 9) of 3 references each, in a 3-d
    space whose axes are the three classes."""
    axes = torch.eye(3)
    # Neuron 3: references of classes 0, 0, 1, 1; neuron 5: 2, 2, 2, 0.
    sample_ids = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]])
    neuron_classes = [[0, 0, 1, 1], [2, 2, 2, 0]]
    embeddings = torch.stack(
        [torch.stack([axes[c] + 0.1 * i for i, c in enumerate(row)]) for row in neuron_classes]
    )
    sae_ids = torch.tensor([[30, 31, 32], [40, 41, 42]])
    sae_classes = [[1, 1, 1], [0, 2, 2]]
    sae_embeddings = torch.stack([torch.stack([axes[c] for c in row]) for row in sae_classes])
    labels = {int(i): c for ids, cls in ((sample_ids, neuron_classes), (sae_ids, sae_classes))
              for i, c in zip(ids.flatten().tolist(), np.ravel(cls), strict=True)}  # fmt: skip
    circuits = Circuits(
        channels=torch.tensor([3, 5]),
        sample_ids=sample_ids,
        circuits=torch.zeros(2, 4, 2),
        activations=torch.zeros(2, 4, 2),
    )
    return (
        EvaluationInputs(
            circuits=circuits,
            labels=pd.Series(labels),
            clusters={"pure": {"k2/labels": torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])}},
            embeddings={"judge": {"embeddings": embeddings, "sample_ids": sample_ids}},
            saes=[
                {
                    "name": "l1",
                    "layer": "layer4",
                    "embeddings": {
                        "channels": torch.tensor([7, 9]),
                        "sample_ids": sae_ids,
                        "embeddings": sae_embeddings,
                    },
                }
            ],
        ),
        embeddings,
        sae_embeddings,
    )


def catalogue():
    inputs, embeddings, sae_embeddings = hand_inputs()
    vocabulary = Vocabulary(torch.eye(3, dtype=torch.float64), list(CLASSES), "prototypes")
    records, directions = build_catalogue(
        inputs, "judge", vocabulary, CLASSES, ks=[2], layer="layer4", top=2, similar=2
    )
    return records, directions, embeddings, sae_embeddings


def test_every_unit_is_catalogued_with_its_references():
    records, directions, _, _ = catalogue()
    ids = [r["id"] for r in records]
    assert ids == [
        "neurons-layer4-3",
        "pure-k2-layer4-3-0",
        "pure-k2-layer4-3-1",
        "neurons-layer4-5",
        "pure-k2-layer4-5-0",
        "pure-k2-layer4-5-1",
        "sae-l1-layer4-7",
        "sae-l1-layer4-9",
    ]
    by_id = {r["id"]: r for r in records}
    assert by_id["pure-k2-layer4-5-1"]["slots"] == [2, 3]
    assert by_id["pure-k2-layer4-5-1"]["sample_ids"] == [22, 23]
    assert by_id["pure-k2-layer4-5-1"]["base"] == "neurons-layer4-5"
    assert by_id["sae-l1-layer4-9"]["feature"] == 9
    assert directions.shape == (8, 3)


def test_labels_majority_and_purity():
    records, _, _, _ = catalogue()
    by_id = {r["id"]: r for r in records}
    neuron = by_id["neurons-layer4-3"]
    # classes 0, 0, 1, 1: a tie, which goes to the smaller class.
    assert neuron["majority"] == "zero" and neuron["purity"] == 0.5
    assert by_id["pure-k2-layer4-3-1"]["label"] == "one"
    assert by_id["pure-k2-layer4-3-1"]["label_match"] is True
    assert by_id["pure-k2-layer4-3-1"]["purity"] == 1.0
    assert [name for name, _ in by_id["pure-k2-layer4-5-1"]["labels"]] == ["two", "zero"]
    # Slots 2 and 3 of neuron 5 are classes two and zero: the tie goes to zero, but the
    # mean direction is nearer to "two" (reference 2 is e2 + 0.2, reference 3 is e0 + 0.3).
    assert by_id["pure-k2-layer4-5-1"]["majority"] == "zero"
    assert by_id["pure-k2-layer4-5-1"]["label_match"] is False


def test_scores_against_brute_force():
    records, directions, embeddings, sae_embeddings = catalogue()
    by_id = {r["id"]: r for r in records}

    def brute_clarity(vectors):
        unit = torch.nn.functional.normalize(vectors.double(), dim=1)
        pairs = [float(unit[i] @ unit[j]) for i, j in itertools.permutations(range(len(unit)), 2)]
        return sum(pairs) / len(pairs)

    def brute_polysemanticity(vectors):
        nearest = [
            int(torch.argmax(v.double() @ torch.eye(3, dtype=torch.float64))) for v in vectors
        ]
        shares = np.bincount(nearest) / len(nearest)
        return math.exp(-sum(p * math.log(p) for p in shares if p > 0))

    cases = {
        "neurons-layer4-5": embeddings[1],
        "pure-k2-layer4-3-0": embeddings[0, :2],
        "sae-l1-layer4-9": sae_embeddings[1],
    }
    for unit_id, vectors in cases.items():
        assert by_id[unit_id]["clarity"] == pytest.approx(brute_clarity(vectors), abs=1e-4)
        assert by_id[unit_id]["polysemanticity"] == pytest.approx(
            brute_polysemanticity(vectors), abs=1e-4
        )
        mean = torch.nn.functional.normalize(vectors.double(), dim=1).mean(dim=0)
        torch.testing.assert_close(
            directions[list(by_id).index(unit_id)].double(), mean / mean.norm(), atol=1e-6, rtol=0
        )


def test_redundancy_counts_within_a_group_and_similar_skips_the_family():
    inputs, _, _ = hand_inputs()
    vocabulary = Vocabulary(torch.eye(3, dtype=torch.float64), list(CLASSES), "prototypes")
    # A threshold below every cosine: each unit shares its meaning with all others of its group.
    records, _ = build_catalogue(
        inputs, "judge", vocabulary, CLASSES, ks=[2], layer="layer4", threshold=-1.0
    )
    counts = {r["group"]: r["redundancy"] for r in records}
    assert counts == {"neurons": 1, "pure k=2": 3, "sae:l1": 1}
    by_id = {r["id"]: r for r in records}
    for record in records:
        for other, _ in record["similar"]:
            assert by_id[other]["base"] != record["base"], (record["id"], other)
    # Feature 7 (all class one) is nearest to neuron 3's second cluster (classes one).
    assert by_id["sae-l1-layer4-7"]["similar"][0][0] == "pure-k2-layer4-3-1"


def test_catalogue_summary_is_the_units_table_columns():
    records, _, _, _ = catalogue()
    summary = catalogue_summary(records, "pure k=2", "layer4")
    matches = [r["label_match"] for r in records if r["group"] == "pure k=2"]
    assert summary["label_match"][0] == pytest.approx(np.mean(matches))
    assert catalogue_summary(records, "pure k=3", "layer4")["label_match"] == [None, None]


def test_catalogue_files_round_trip(tmp_path):
    records, directions, _, _ = catalogue()
    save_catalogue(
        tmp_path / "c.json", tmp_path / "d.safetensors", records, directions, {"space": "judge"}
    )
    loaded = load_catalogue(tmp_path / "c.json")
    assert loaded["space"] == "judge" and loaded["units"] == records
    vectors, ids = load_directions(tmp_path / "d.safetensors")
    assert ids == [r["id"] for r in records]
    torch.testing.assert_close(vectors, directions)


def test_a_vocabulary_of_another_space_is_refused():
    inputs, _, _ = hand_inputs()
    with pytest.raises(ValueError, match="same embedder"):
        build_catalogue(
            inputs, "judge", Vocabulary(torch.eye(2), ["a", "b"], "text"), CLASSES, [2], "layer4"
        )


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_most_similar_directions_against_brute_force(chunk):
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(9, 4, generator=generator)
    families = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4])
    indices, values = most_similar_directions(directions, top=4, families=families, chunk=chunk)
    unit = torch.nn.functional.normalize(directions.double(), dim=1)
    for row in range(9):
        candidates = [j for j in range(9) if families[j] != families[row]]
        ranked = sorted(candidates, key=lambda j: (-float(unit[row] @ unit[j]), j))[:4]
        assert indices[row].tolist() == ranked
        assert values[row].tolist() == pytest.approx([float(unit[row] @ unit[j]) for j in ranked])
    # Too few candidates: padded with -1 and NaN.
    indices, values = most_similar_directions(
        directions[:3], top=3, families=torch.tensor([0, 0, 1])
    )
    assert indices[0].tolist() == [2, -1, -1] and torch.isnan(values[0, 1:]).all()


def test_reference_sets_bring_their_own_classes():
    """Contrastive dimensions: references from their own data set, with its labels."""
    from monoscope.catalogue import ReferenceSet

    inputs, _, _ = hand_inputs()
    vocabulary = Vocabulary(torch.eye(3, dtype=torch.float64), list(CLASSES), "prototypes")
    axes = torch.eye(3)
    dimensions = ReferenceSet(
        kind="contrastive:ncl",
        layer="projector",
        units=torch.tensor([4, 11]),
        positions=torch.tensor([[0, 5, 9], [1, 2, 3]]),
        labels=torch.tensor([[2, 2, 1], [0, 0, 0]]),
        embeddings=torch.stack([axes[[2, 2, 1]], axes[[1, 0, 0]]]),
        classes=["zero", "one", "two"],
    )
    records, directions = build_catalogue(
        inputs, "judge", vocabulary, CLASSES, [2], "layer4", reference_sets=[dimensions]
    )
    by_id = {r["id"]: r for r in records}
    first, second = by_id["contrastive-ncl-projector-4"], by_id["contrastive-ncl-projector-11"]
    assert first["majority"] == "two" and first["purity"] == pytest.approx(2 / 3, abs=1e-4)
    assert first["label"] == "two" and first["label_match"] is True
    assert first["sample_ids"] == [0, 5, 9] and first["crops"] is False
    # Its labels say zero, zero, zero, but the embeddings lean to zero twice and one once.
    assert second["majority"] == "zero" and second["label"] == "zero"
    assert len(directions) == len(records)
    families = {r["base"] for r in records if r["kind"] == "contrastive:ncl"}
    assert families == {"contrastive-ncl-projector-4", "contrastive-ncl-projector-11"}


def test_labels_table_summarises_each_group(tmp_path):
    from monoscope.evaluation import write_labels_table

    records, _, _, _ = catalogue()
    paths = write_labels_table(
        records, tmp_path / "labels", "toy", "judge", {"source": "prototypes", "entries": 3}
    )
    table = pd.read_csv(paths[0], index_col=0, dtype=str)
    assert list(table.index) == ["neurons (layer4)", "pure k=2 (layer4)", "sae:l1 (layer4)"]
    assert table.loc["pure k=2 (layer4)", "count"] == "4"
    matches = [float(r["label_match"]) for r in records if r["group"] == "pure k=2"]
    mean, se = np.mean(matches), np.std(matches, ddof=1) / np.sqrt(len(matches))
    assert table.loc["pure k=2 (layer4)", "label match"] == f"{mean:.3f} ± {se:.3f}"
    assert "3 prototypes" in paths[1].read_text()
