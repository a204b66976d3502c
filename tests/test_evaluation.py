"""The evaluation pass: each input loaded once, every unit kind scored, tables only at
the stems they are given."""

import numpy as np
import pandas as pd
import pytest
import torch

import monoscope.evaluation as evaluation
from monoscope.io import save_tensors
from monoscope.pure.circuits import Circuits, save_circuits
from monoscope.pure.metrics import distance_summary, mean_and_standard_error
from monoscope.units import kind_label

SAE_KEYS = (
    "features",
    "alive",
    "l0",
    "dead_fraction",
    "dense_fraction",
    "fvu",
    "accuracy",
    "spliced_accuracy",
)


@pytest.fixture
def files(tmp_path):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randperm(40, generator=generator)[:24].reshape(4, 6) + 100
    labels = np.random.default_rng(0).integers(0, 3, 40)
    pd.DataFrame({"sample_id": np.arange(40) + 100, "label": labels}).to_csv(
        tmp_path / "samples.csv", index=False
    )
    circuits = Circuits(
        torch.arange(4), ids, torch.rand(4, 6, 5, generator=generator), torch.rand(4, 6, 1)
    )
    save_circuits(tmp_path / "circuits.safetensors", circuits, {})
    clusters = {}
    for method in ("pure", "activation"):
        clusters[method] = tmp_path / f"{method}.safetensors"
        tensors = {"channels": torch.arange(4) + 10}
        for k in (2, 3):
            tensors[f"k{k}/labels"] = torch.randint(0, k, (4, 6), generator=generator)
            if method == "pure":  # the activation clustering ran without stability seeds
                tensors[f"k{k}/stability"] = torch.rand(4, generator=generator)
        save_tensors(clusters[method], tensors)
    embeddings = tmp_path / "judge.safetensors"
    save_tensors(
        embeddings,
        {"sample_ids": ids, "channels": torch.arange(4), "embeddings": torch.rand(4, 6, 3)},
    )
    saes = []
    for name, rows in (("l1", 2), ("dead", 0)):
        path = tmp_path / f"sae_{name}.safetensors"
        save_tensors(
            path,
            {
                "sample_ids": ids[:rows].clone(),
                "channels": torch.arange(rows),
                "embeddings": torch.rand(rows, 6, 3, generator=generator),
            },
        )
        saes.append({"name": name, "layer": "layer4", "embeddings": path})
    return {
        "clusters": clusters,
        "embeddings": {"judge": embeddings},
        "circuits": tmp_path / "circuits.safetensors",
        "samples": tmp_path / "samples.csv",
        "saes": saes,
        "labels": pd.Series(labels, index=np.arange(40) + 100),
    }


def test_one_pass_loads_each_file_once_and_scores_every_kind(files, monkeypatch, tmp_path):
    loads = []
    real = evaluation.load_tensors

    def counting(path):
        loads.append(str(path))
        return real(path)

    monkeypatch.setattr(evaluation, "load_tensors", counting)
    monkeypatch.setattr("monoscope.pure.circuits.load_tensors", counting)
    inputs = evaluation.load_evaluation_inputs(
        files["clusters"], files["embeddings"], files["circuits"], files["samples"], files["saes"]
    )
    hierarchy = {
        "units": [
            {"kind": kind_label("neurons"), "layer": "layer4", "scores": [0.1, 0.2, 0.4, 0.3]},
            {"kind": kind_label("pure"), "layer": "layer4", "scores": [0.5, 0.1]},
            {"kind": kind_label("sae", "l1"), "layer": "layer4", "scores": [0.2, 0.6, 0.7]},
        ]
    }
    results = evaluation.evaluate(
        inputs, [2, 3], "judge", {"subsets": 2, "references": 3, "seed": 0}, 3, hierarchy
    )
    assert sorted(loads) == sorted(
        map(
            str,
            [
                files["circuits"],
                *files["clusters"].values(),
                files["embeddings"]["judge"],
                *(sae["embeddings"] for sae in files["saes"]),
            ],
        )
    )
    rows = {row["units"]: row for row in results["units"]}
    assert list(rows) == [
        "neurons (layer4)",
        "pure k=3",
        "activation k=3",
        "sae:l1 (layer4)",
        "sae:dead (layer4)",
    ]
    # Independently: purity from the sample table, hierarchy scores from the record.
    ids = inputs.circuits.sample_ids
    labels = files["labels"].loc[ids.numpy().reshape(-1)].to_numpy().reshape(4, 6)
    shares = [np.bincount(row).max() / 6 for row in labels]
    assert rows["neurons (layer4)"]["purity"][0] == pytest.approx(np.mean(shares))
    assert rows["neurons (layer4)"]["count"] == 4
    assert rows["pure k=3"]["hierarchy"] == list(mean_and_standard_error([0.5, 0.1]))
    assert rows["activation k=3"]["hierarchy"] == [None, None]  # not scored
    assert rows["sae:l1 (layer4)"]["hierarchy"] == list(mean_and_standard_error([0.2, 0.6, 0.7]))
    assert rows["sae:dead (layer4)"]["count"] == 0
    sae_vectors = inputs.saes[0]["embeddings"]["embeddings"].numpy()
    assert rows["sae:l1 (layer4)"]["distance"] == list(
        distance_summary(sae_vectors, np.zeros((2, 6)))["random"]
    )
    assert [row["method"] for row in results["purity"]][:1] == ["neurons"]
    assert {row["method"] for row in results["distances"]} == {"pure", "activation"}

    # Tables go to the stems given, and nowhere else.
    folder = tmp_path / "out"
    folder.mkdir()
    stems = {name: folder / f"t_{name}" for name in evaluation.PURE_TABLES + evaluation.UNIT_TABLES}
    written = evaluation.write_pure_tables(results, stems, "toy")
    written += evaluation.write_unit_tables(
        results["units"],
        [{"name": "l1", "layer": "layer4"} | dict.fromkeys(SAE_KEYS, 0.5)],
        stems,
        "toy",
        "judge",
    )
    assert sorted(written) == sorted(folder.iterdir())
    stability = pd.read_csv(folder / "t_stability.csv", index_col=0, dtype=str)
    assert list(stability.columns) == ["pure k=2", "pure k=3"]
    expected = evaluation.load_tensors(files["clusters"]["pure"])[0]["k3/stability"].numpy()
    assert list(stability.index) == ["10", "11", "12", "13", "mean over neurons"]
    assert stability["pure k=3"].iloc[:4].tolist() == [f"{value:.3f}" for value in expected]
    mean, se = mean_and_standard_error(expected.tolist())
    assert stability.loc["mean over neurons", "pure k=3"] == f"{mean:.3f} ± {se:.3f}"
    assert {path.name.split(".")[0] for path in written} == {stem.name for stem in stems.values()}


def test_embeddings_of_other_references_are_rejected(files):
    path = files["embeddings"]["judge"]
    save_tensors(
        path,
        {"sample_ids": torch.zeros(4, 6, dtype=torch.int64), "embeddings": torch.rand(4, 6, 3)},
    )
    with pytest.raises(ValueError, match="other references"):
        evaluation.load_evaluation_inputs(
            files["clusters"], files["embeddings"], files["circuits"], files["samples"]
        )


def test_semantic_summary_of_units_with_different_reference_counts():
    from monoscope.evaluation import semantic_summary

    groups = [
        np.array([[1.0, 0.0], [2.0, 0.0]]),  # clarity 1, same direction as the next two
        np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),  # clarity (0 + 1/√2 + 1/√2) / 3
        np.array([[3.0, 0.1]]),  # one reference: no clarity, still a direction
        np.array([[0.0, 1.0], [0.0, 2.0]]),  # clarity 1, orthogonal to the first
    ]
    summary = semantic_summary(groups)
    clear = np.array([1.0, 2 / np.sqrt(2) / 3, 1.0])
    assert summary["clarity"][0] == pytest.approx(clear.mean())
    assert summary["clarity"][1] == pytest.approx(clear.std(ddof=1) / np.sqrt(3))
    # Mean directions: (1, 0), (0.7071, 0.7071) (normalised mean of the unit rows),
    # (0.9994, 0.0333), (0, 1): at cosine >= 0.9 units 0 and 2 share a meaning.
    assert summary["redundancy"][0] == pytest.approx(0.5)
    assert semantic_summary([]) == {"clarity": [None, None], "redundancy": [None, None]}
