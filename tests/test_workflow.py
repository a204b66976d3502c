"""Snakemake end to end on a tiny config, in a copy of the workflow in a temp dir."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import copy_workflow
from helpers import check_atlas_in_browser, chromium, job_counts, report_html, snakemake

pytestmark = pytest.mark.workflow


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(repo, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    result = snakemake(workdir, "--cores", "2", "--configfile", "tiny.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


SAE_FILES = (
    "model.safetensors",
    "training.json",
    "references.safetensors",
    "metrics.json",
    "embeddings/judge.safetensors",
)


def test_outputs_are_complete(tiny_run):
    from monoscope.references import load_references

    out = tiny_run / "results" / "tiny"
    for path in (
        "data/samples.csv",
        "data/classes.json",
        "models/subject.safetensors",
        "models/subject_metrics.json",
        "models/judge.safetensors",
        "references/grid_actmax_layer4.png",
        "references/grid_relmax_layer4.png",
        "circuits/circuits.safetensors",
        "clusters/pure.safetensors",
        "clusters/activation.safetensors",
        "figures/pure/virtual_neurons_k2_neuron1.png",
        "figures/activation/virtual_neurons_k2_neuron0.png",
        "figures/pure/umap_k2_neuron0.png",
        "figures/crops/neuron1.png",
        "embeddings/judge.safetensors",
        "clusters/judge.safetensors",
        "evaluation/results.json",
        "figures/semantic_distances.png",
        "figures/alignment.png",
        "evaluation/hierarchy.json",
        *[f"sae/layer4/{name}/{f}" for name in ("l1", "topk") for f in SAE_FILES],
        *[
            f"tables/{t}.{e}"
            for t in ("semantic_distances", "alignment", "purity", "stability", "units", "sae")
            for e in ("csv", "md", "tex")
        ],
    ):
        assert (out / path).is_file(), path
    assert sorted(p.name for p in (out / "references" / "shards").iterdir()) == [
        "1-of-3.safetensors",
        "2-of-3.safetensors",
        "3-of-3.safetensors",
    ]
    references, metadata = load_references(out / "references" / "references.safetensors")
    assert set(references) == {("actmax", "layer4"), ("relmax", "layer4")}
    assert metadata["n_samples"] == 240
    for top in references.values():
        assert top.sample_ids.shape == (8, 8)  # every channel of the narrow layer, n = 8
        assert top.filled()
    metrics = yaml.safe_load((out / "models" / "subject_metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


def test_circuits_and_clusters_cover_every_neuron(tiny_run):
    from monoscope.io import load_tensors
    from monoscope.pure.circuits import load_circuits
    from monoscope.references import load_references

    out = tiny_run / "results" / "tiny"
    circuits, metadata = load_circuits(out / "circuits" / "circuits.safetensors")
    references, _ = load_references(out / "references" / "references.safetensors")
    assert metadata["method"] == "gradient"
    assert circuits.channels.tolist() == list(range(8))
    assert circuits.circuits.shape == (8, 8, 32)  # [C_upper, N, C_lower]
    assert circuits.activations.shape == (8, 8, 8)  # [C_upper, N, C_upper]
    assert torch.equal(circuits.sample_ids, references[("actmax", "layer4")].sample_ids)
    clusters, _ = load_tensors(out / "clusters" / "pure.safetensors")
    assert clusters["k3/labels"].shape == (8, 8)
    assert clusters["k3/centroids"].shape == (8, 3, 32)


def test_tables_report_every_method_and_the_ground_truth(tiny_run):
    import pandas as pd

    tables = tiny_run / "results" / "tiny" / "tables"
    distances = pd.read_csv(tables / "semantic_distances.csv", index_col=0)
    assert list(distances.index) == ["pure", "activation", "judge", "random pairs"]
    assert list(distances.columns) == ["k=2 intra", "k=2 inter", "k=3 intra", "k=3 inter"]
    purity = pd.read_csv(tables / "purity.csv", index_col=0)
    assert list(purity.index) == ["neurons (unsplit)", "pure", "activation", "judge"]
    alignment = pd.read_csv(tables / "alignment.csv", index_col=0)
    assert alignment.loc["judge", "pearson"].startswith("1.000")
    assert {"circuits (PURE)", "activations"} <= set(alignment.index)
    assert "\\toprule" in (tables / "purity.tex").read_text()


def test_sae_features_join_neurons_and_virtual_neurons_in_the_tables(tiny_run):
    import json

    import pandas as pd

    from monoscope.activations import ActivationStore
    from monoscope.io import load_tensors
    from monoscope.references import load_references
    from monoscope.sae import evaluate_sae, load_sae

    out = tiny_run / "results" / "tiny"
    units = pd.read_csv(out / "tables" / "units.csv", index_col=0)
    assert list(units.index) == [
        "neurons (layer4)",
        "pure k=2",
        "activation k=2",
        "judge k=2",
        "sae:l1 (layer4)",
        "sae:topk (layer4)",
    ]
    assert list(units.columns) == [
        "count",
        "purity",
        "within-unit judge distance",
        "clarity",
        "redundancy",
        "polysemanticity",
        "label match",
        "hierarchy score",
    ]
    for row in ("neurons (layer4)", "pure k=2", "sae:l1 (layer4)", "sae:topk (layer4)"):
        assert units.loc[row, "hierarchy score"] != "–", row
    assert (units["clarity"] != "–").all() and (units["redundancy"] != "–").all()
    sae_table = pd.read_csv(out / "tables" / "sae.csv", index_col=0)
    assert {"L0", "dead fraction", "FVU", "spliced accuracy"} <= set(sae_table.columns)
    # The table's numbers are the SAE's own, recomputed from the stored activations.
    shards = sorted((out / "activations" / "layer4").glob("*.safetensors"))
    assert [p.name for p in shards] == ["1-of-2.safetensors", "2-of-2.safetensors"]
    sae = load_sae(out / "sae" / "layer4" / "topk" / "model.safetensors")
    metrics = evaluate_sae(sae, ActivationStore(shards, "test"))
    assert sae_table.loc["topk (layer4)", "L0"] == pytest.approx(metrics["l0"], rel=1e-3)
    assert sae_table.loc["topk (layer4)", "L0"] <= 3  # TopK keeps k = 3
    assert sae_table.loc["topk (layer4)", "FVU"] == pytest.approx(metrics["fvu"], rel=1e-3)
    # Alive features only get references, crops and embeddings, in feature order.
    recorded = json.loads((out / "sae" / "layer4" / "topk" / "metrics.json").read_text())
    embedded, _ = load_tensors(out / "sae" / "layer4" / "topk" / "embeddings" / "judge.safetensors")
    assert embedded["channels"].tolist() == recorded["units"]
    references, _ = load_references(out / "sae" / "layer4" / "topk" / "references.safetensors")
    top = references[("sae", "layer4")]
    assert torch.equal(embedded["sample_ids"], top.sample_ids[recorded["units"]])
    hierarchy = json.loads((out / "evaluation" / "hierarchy.json").read_text())
    kinds = [unit["kind"] for unit in hierarchy["units"]]
    assert kinds == ["neurons", "pure", "sae:l1", "sae:topk"]
    assert len(hierarchy["units"][1]["scores"]) == 8 * 2  # every virtual neuron at k = 2


def test_contrastive_branch_writes_the_robustness_tables(tiny_run):
    """SimCLR, NCL and the SAE are probed in every setting; the tables hold every cell."""
    import pandas as pd

    out = tiny_run / "results" / "tiny"
    for path in (
        "contrastive/pretrain/simclr/model.safetensors",
        "contrastive/pretrain/ncl/model.safetensors",
        "contrastive/sae/model.safetensors",
        "figures/contrastive/accuracy_vs_label.png",
        "figures/contrastive/accuracy_vs_gaussian.png",
        *[f"contrastive/{r}/references.png" for r in ("simclr", "ncl", "sae")],
    ):
        assert (out / path).is_file(), path
    assert not list((out / "contrastive").rglob("resume.safetensors")), "checkpoint left"
    robustness = pd.read_csv(out / "tables" / "contrastive_robustness.csv", index_col=[0, 1])
    assert list(robustness.columns) == ["clean", "label 0.8", "gaussian 0.6"]
    assert list(robustness.index) == [
        ("linear", "simclr"),
        ("linear", "ncl"),
        ("linear", "sae"),
        ("selected", "simclr"),
        ("selected", "ncl"),
        ("selected", "sae"),
        ("finetune", "simclr"),
        ("finetune", "ncl"),
    ]
    values = robustness.to_numpy()
    assert ((values >= 0) & (values <= 100)).all()
    representations = pd.read_csv(out / "tables" / "contrastive_representations.csv", index_col=0)
    assert list(representations.index) == ["simclr", "ncl", "sae"]
    assert representations.loc["sae", "dimensions"] == 64
    # TopK keeps k = 8 codes per sample; ReLU can only lower that.
    assert representations.loc["sae", "active per sample"] <= 8
    assert representations.loc["simclr", "zero fraction"] == 0  # no non-negative map
    assert representations["class consistency"].between(0, 1).all()


def test_equivariant_branch_writes_the_probing_tables(tiny_run):
    """Every architecture gets M, every SAE family and loss type, and probe rows per t."""
    import pandas as pd

    out = tiny_run / "results" / "tiny"
    saes = ["vanilla", "equivariant latent_inv", "equivariant canonical"]
    saes += ["equivariant output_inv", "archetypal"]
    probes = pd.read_csv(out / "tables" / "equivariant_probes.csv", index_col=[0, 1, 2])
    assert list(probes.columns) == ["t=1", "t=4"]
    for arch in ("mlp", "cnn", "vit"):
        for sae in ["base", *saes]:
            for probe in ("logistic", "xgboost"):
                assert (arch, sae, probe) in probes.index, (arch, sae, probe)
    assert probes.to_numpy().min() >= 0 and probes.to_numpy().max() <= 1
    invariant = pd.read_csv(
        out / "tables" / "equivariant_probes_invariant.csv", index_col=[0, 1, 2]
    )
    assert invariant.shape == probes.shape
    reconstruction = pd.read_csv(
        out / "tables" / "equivariant_reconstruction.csv", index_col=[0, 1]
    )
    assert len(reconstruction) == 3 * len(saes)
    assert (reconstruction["L0"] <= 4).all()  # TopK keeps k = 4 codes at most
    symmetry = pd.read_csv(out / "tables" / "equivariant_symmetry.csv", index_col=0)
    assert list(symmetry.index) == ["mlp", "cnn", "vit"]
    assert not list((out / "equivariant").rglob("*resume*")), "checkpoint left behind"


def test_sharded_workflow_equals_unsharded_library_call(tiny_run):
    from monoscope.data import DataConfig, open_dataset
    from monoscope.models import ModelConfig, load_model
    from monoscope.references import ReferenceConfig, collect_references, load_references

    out = tiny_run / "results" / "tiny"
    model = load_model(ModelConfig("demo_cnn", str(out / "models" / "subject.safetensors")))
    dataset = open_dataset(DataConfig(max_samples=240), out / "data" / "samples.csv")
    config = ReferenceConfig(n=8, modes=("actmax", "relmax"), batch_size=240)
    whole = collect_references(model, dataset, ["layer4"], config)
    merged, _ = load_references(out / "references" / "references.safetensors")
    for key, top in whole.items():
        assert torch.equal(merged[key].sample_ids, top.sample_ids), key
        torch.testing.assert_close(merged[key].scores, top.scores, rtol=1e-4, atol=1e-5)


def test_second_run_has_nothing_to_do(tiny_run):
    result = snakemake(tiny_run, "-n", "--cores", "2", "--configfile", "tiny.yaml")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def tiny_config(tiny_run) -> dict:
    return yaml.safe_load((tiny_run / "tiny.yaml").read_text())


def dry_run_with(tiny_run, config: dict, name: str) -> str:
    """The output of a dry run of the tiny workflow with ``config``, written to ``name``.

    ``yaml.safe_dump`` sorts the keys.
    """
    (tiny_run / name).write_text(yaml.safe_dump(config, sort_keys=True))
    result = snakemake(tiny_run, "-n", "--cores", "2", "--configfile", name)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_reordered_config_keys_rerun_nothing(tiny_run):
    # The same config in another (sorted) order must not look changed.
    assert "Nothing to be done" in dry_run_with(tiny_run, tiny_config(tiny_run), "tiny_sorted.yaml")


def files_with_times(folder):
    """Every file under ``folder`` with its modification time and size."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"data": {"name": "imagefolder", "root": "no/such/folder"}}, "config data.root: "),
        ({"model": {"upper_layer": "layer5"}}, "config model.upper_layer: 'layer5'"),
        (
            {"model": {"name": "torchvision:resnet999", "weights": "random"}},
            "config model.name: 'torchvision:resnet999' is not a model",
        ),
        ({"figures": {"neurons": [1, 99]}}, "config figures.neurons: [99]"),
        ({"clustering": {"k": [1, 2]}}, "config key clustering.k.0: 1 is less than the minimum"),
        # Valid, but the results were made from other data: refused, not recomputed.
        ({"data": {"seed": 1}}, "config experiment: 'tiny' holds results made with other data"),
    ],
)
def test_a_bad_override_fails_before_any_job_and_keeps_the_results(tiny_run, override, named):
    results = tiny_run / "results" / "tiny"
    before = files_with_times(results)
    (tiny_run / "bad.yaml").write_text(yaml.safe_dump(override))
    result = snakemake(tiny_run, "--cores", "1", "--configfile", "tiny.yaml", "bad.yaml")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output, output[-2000:]
    assert "Building DAG" not in output
    assert files_with_times(results) == before


def test_replace_results_lets_changed_data_recompute_in_place(tiny_run):
    override = {"data": {"seed": 1}, "replace_results": True}
    (tiny_run / "replace.yaml").write_text(yaml.safe_dump(override))
    result = snakemake(tiny_run, "-n", "--cores", "1", "--configfile", "tiny.yaml", "replace.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["record_experiment"] == 1 and counts["prepare_data"] == 1


def test_changing_references_n_reruns_only_the_reference_rules(tiny_run):
    changed = tiny_config(tiny_run)
    changed["references"]["n"] = 6
    counts = job_counts(dry_run_with(tiny_run, changed, "tiny_n6.yaml"))
    assert counts == {
        "all": 1,
        "collect_references": 3,
        "merge_references": 1,
        "plot_references": 1,  # both modes' grids in one job
        "compute_circuits": 2,
        "merge_circuits": 1,
        "cluster_units": 3,
        "plot_virtual_neurons": 1,  # every method's figures in one job
        "plot_circuit_umaps": 1,
        "render_crops": 2,
        "plot_crops": 1,
        "embed_crops": 2,
        "merge_embeddings": 1,
        # SAE features get new top-n references, crops and embeddings; the SAEs and the
        # activations they were trained on stay.
        "sae_units": 2,
        "render_sae_crops": 4,
        "embed_sae_crops": 4,
        "merge_sae_embeddings": 2,
        "score_hierarchy": 1,  # the virtual neurons changed with the circuits
        "evaluate": 1,
        "plot_evaluation": 1,
        "build_atlas": 1,
    }


def test_changing_k_reruns_clustering_but_not_circuits(tiny_run):
    changed = tiny_config(tiny_run)
    changed["clustering"]["k"] = [2, 4]
    counts = job_counts(dry_run_with(tiny_run, changed, "tiny_k.yaml"))
    assert counts == {
        "all": 1,
        "cluster_units": 3,
        "plot_virtual_neurons": 1,
        "plot_circuit_umaps": 1,
        "score_hierarchy": 1,  # scores the virtual neurons of the new clustering
        "evaluate": 1,
        "plot_evaluation": 1,
        "build_atlas": 1,
    }


def test_results_do_not_depend_on_the_core_count(tmp_path):
    """Two fresh runs, one with --cores 1 and one with --cores 2, train the same subject
    model bit for bit: torch's threads come from the config, not the cores (the judge and
    every other model job take their threads the same way, from start_job)."""
    import torch

    from monoscope.io import load_tensors

    models = {}
    for cores in ("1", "2"):
        workdir = copy_workflow(tmp_path / f"cores{cores}")
        targets = ["results/tiny/models/subject.safetensors"]
        result = snakemake(
            workdir,
            *targets,
            "--cores",
            cores,
            "--configfile",
            "tiny.yaml",
            "--config",
            "threads=2",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        log = (workdir / "results" / "tiny" / "logs" / "train_subject.log").read_text()
        assert "torch CPU threads: 2" in log  # the config's, whatever --cores says
        models[cores] = [load_tensors(workdir / target)[0] for target in targets]
    for one, two in zip(models["1"], models["2"], strict=True):
        assert one.keys() == two.keys()
        assert all(torch.equal(one[name], two[name]) for name in one), "weights differ"


def test_report_is_generated(tiny_run):
    result = snakemake(
        tiny_run, "--cores", "1", "--configfile", "tiny.yaml", "--report", "report.zip"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    html = report_html(tiny_run / "report.zip")
    assert "grid_actmax_layer4.png" in html
    # The atlas is in the report, whole: its index and every unit page.
    with zipfile.ZipFile(tiny_run / "report.zip") as archive:
        names = archive.namelist()
    catalogue = json.loads((tiny_run / "results/tiny/evaluation/catalogue.json").read_text())
    assert sum(name.endswith("/atlas.css") for name in names) == 1
    pages = [name for name in names if "/units/" in name and name.endswith(".html")]
    assert len(pages) == len(catalogue["units"])


def test_the_atlas_lists_every_unit_and_opens_in_a_browser(tiny_run):
    """The tiny run's atlas: a page per catalogued unit of every kind, the labels table,
    and (where Chromium is installed) the browser checks of tests/test_atlas.py."""
    out = tiny_run / "results" / "tiny"
    catalogue = json.loads((out / "evaluation" / "catalogue.json").read_text())
    records = catalogue["units"]
    kinds = {record["kind"] for record in records}
    assert {"neurons", "pure", "activation", "judge", "sae:l1", "sae:topk"} <= kinds
    assert {"contrastive:simclr", "contrastive:ncl", "contrastive:sae"} <= kinds
    # Every neuron, every virtual neuron of every method and k, every alive SAE feature.
    neurons = [r for r in records if r["kind"] == "neurons"]
    assert len(neurons) == 8
    for method in ("pure", "activation", "judge"):
        for k in (2, 3):
            assert sum(r["kind"] == method and r["k"] == k for r in records) <= 8 * k
    pages = {path.stem for path in (out / "atlas" / "units").glob("*.html")}
    assert pages == {record["id"] for record in records}
    index = (out / "atlas" / "index.html").read_text()
    assert all(f'"id": "{record["id"]}"' in index for record in records)
    labels = pd.read_csv(out / "tables" / "labels.csv", index_col=0)
    assert labels["count"].sum() == len(records)
    assert set(labels.columns) >= {"label match", "purity", "polysemanticity", "clarity"}
    search_from_the_command_line(tiny_run, records)
    if chromium() is None:
        pytest.skip("Chromium is not installed (tests/install-chromium.sh); DOM checks skipped")
    # The kind filter, the neuron page and two screenshots: tests/test_atlas.py loads the
    # full table and the text filter on its hand-built atlas.
    check_atlas_in_browser(
        out / "atlas" / "index.html",
        records,
        REPO / "results" / "browser-test" / "tiny",
        thorough=False,
    )


def test_lint_and_format_are_clean(repo):
    lint = snakemake(repo, "--lint", "--cores", "1", timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Lints for" not in lint.stdout + lint.stderr
    check = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def search_from_the_command_line(tiny_run, records):
    """`monoscope search` on the tiny run: by class (the judge's prototypes) and by an
    image file through the judge; every match names an existing atlas page."""
    from PIL import Image

    with_class = subprocess.run(
        [sys.executable, "-m", "monoscope", "search", "--class", "3", "--results",
         "results/tiny", "--top", "5", "--json"],
        cwd=tiny_run, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert with_class.returncode == 0, with_class.stderr[-2000:]
    rows = json.loads(with_class.stdout)
    assert len(rows) == 5 and {row["id"] for row in rows} <= {r["id"] for r in records}
    assert all((tiny_run / row["page"]).is_file() for row in rows)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[8:24, 14:18] = 255  # a bar: something like a one
    Image.fromarray(image).save(tiny_run / "query.png")
    with_image = subprocess.run(
        [sys.executable, "-m", "monoscope", "search", "--image", "query.png", "--results",
         "results/tiny", "--top", "3"],
        cwd=tiny_run, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert with_image.returncode == 0, with_image.stderr[-2000:]
    assert with_image.stdout.count("results/tiny/atlas/units/") == 3
    with_text = subprocess.run(
        [sys.executable, "-m", "monoscope", "search", "a seven", "--results", "results/tiny"],
        cwd=tiny_run, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert with_text.returncode == 2 and "embeds no text" in with_text.stderr
