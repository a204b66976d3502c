"""Snakemake end to end on configs other than the tiny one: an ImageFolder with a weight
file, and every paper config planned against fake data folders."""

import subprocess
import sys

import pytest
import torch
import yaml
from conftest import copy_workflow
from helpers import job_counts, snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def pretrained_setup(repo, tmp_path_factory):
    """A workflow copy, a fake ImageFolder tree and a random ResNet-18 saved to a file."""
    import torchvision
    from safetensors.torch import save_file

    workdir = copy_workflow(tmp_path_factory.mktemp("pretrained"), tiny_config=False)
    fake_imagefolder(workdir / "images", per_class=6)
    torch.manual_seed(0)
    save_file(torchvision.models.resnet18().state_dict(), str(workdir / "resnet18.safetensors"))
    config = {
        "experiment": "pretrained",
        "branches": ["pure"],
        "threads": 1,
        "data": {"name": "imagefolder", "root": "images", "image_size": 64, "resize": 72},
        "model": {"name": "torchvision:resnet18", "weights": "resnet18.safetensors"},
        "references": {
            "n": 4,
            "shards": 2,
            "modes": ["actmax", "relmax"],
            "layers": ["layer3", "layer4"],
            "grid": {"channels": 2, "columns": 3},
        },
        # Seven neurons get circuits, crops and embeddings: enough for three shards and
        # k = 3, and 70 times fewer LRP passes than all 512.
        "neurons": {"start": 505, "stop": 512},
        "circuits": {"references": "relmax", "method": "lrp", "shards": 3},
        "clustering": {"k": [2, 3], "methods": ["pure", "dino"]},
        "crops": {"size": 16, "shards": 2},
        "embedders": {
            "dino": {
                "kind": "dinov2",
                "weights": "random",
                "arch": "vit_small_patch14_dinov2.lvd142m",
                "image_size": 28,
            }
        },
        "evaluation": {"embedders": ["dino"], "reference": "dino", "alignment": {"subsets": 2}},
        "figures": {"neurons": [511], "k": 3, "thumbnails": 2},
        "sae": {"layers": []},
    }
    (workdir / "pretrained.yaml").write_text(yaml.safe_dump(config))
    return workdir, config


def test_imagefolder_and_weight_file_run_end_to_end(pretrained_setup):
    from monoscope.references import load_references

    workdir, _ = pretrained_setup
    result = snakemake(workdir, "--cores", "2", "--configfile", "pretrained.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = workdir / "results" / "pretrained"
    check = yaml.safe_load((out / "models" / "subject_check.json").read_text())
    assert check["layer_channels"] == {"layer3": 256, "layer4": 512}
    references, metadata = load_references(out / "references" / "references.safetensors")
    assert metadata["n_samples"] == 12
    assert references[("relmax", "layer4")].sample_ids.shape == (512, 4)
    assert (out / "references" / "grid_relmax_layer3.png").is_file()
    assert (out / "figures" / "pure" / "umap_k3_neuron511.png").is_file()
    assert not (out / "clusters" / "activation.safetensors").exists()
    assert not (out / "models" / "judge.safetensors").exists()  # the judge is the digits demo's


def test_missing_weight_file_fails_naming_the_path(pretrained_setup):
    workdir, config = pretrained_setup
    missing = dict(config, experiment="missing")
    missing["model"] = dict(config["model"], weights="nowhere/resnet18.safetensors")
    (workdir / "missing.yaml").write_text(yaml.safe_dump(missing))
    result = snakemake(workdir, "--cores", "1", "--configfile", "missing.yaml")
    assert result.returncode != 0
    log = (workdir / "results" / "missing" / "logs" / "check_weights.log").read_text()
    assert "weight file not found: nowhere/resnet18.safetensors" in log
    assert not (workdir / "results" / "missing" / "models" / "subject_check.json").exists()


def test_too_large_k_fails_before_any_job(pretrained_setup):
    workdir, config = pretrained_setup
    (workdir / "bad_k.yaml").write_text(yaml.safe_dump(dict(config, clustering={"k": [2, 5]})))
    result = snakemake(workdir, "-n", "--cores", "1", "--configfile", "bad_k.yaml")
    assert result.returncode != 0
    assert "clustering.k" in result.stdout + result.stderr


def fake_imagefolder(root, classes=("n01440764", "n01443537"), per_class=3, seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, size=(40 + index, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index}.png")
    return root


def test_paper_configs_dry_run(repo, tmp_path):
    """Each paper config plans its whole DAG against fake data folders."""
    root = fake_imagefolder(tmp_path / "val")
    # The data roots must exist before any job (monoscope.preflight); a dry run reads none.
    (tmp_path / "contrastive").mkdir()
    (tmp_path / "galaxies.npz").touch()
    for experiment in sorted((repo / "config" / "experiments").glob("*.yaml")):
        config = yaml.safe_load(experiment.read_text())
        branches = config["branches"]
        if "pure" in branches:
            config["data"]["root"] = str(root)
        if "contrastive" in branches:
            config["contrastive"]["data"]["root"] = str(tmp_path / "contrastive")
        if "equivariant" in branches and config["equivariant"]["data"]["source"] == "images":
            config["equivariant"]["data"]["root"] = str(tmp_path / "galaxies.npz")
        override = tmp_path / experiment.name
        override.write_text(yaml.safe_dump(config))
        result = snakemake(repo, "-n", "--cores", "1", "--configfile", str(override), timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == 0, experiment.name + output[-3000:]
        counts = job_counts(output)
        if "pure" in branches:
            check_pure_plan(config, counts, experiment.name)
        else:
            assert "collect_references" not in counts, experiment.name
        if "contrastive" in branches:
            check_contrastive_plan(config["contrastive"], counts, experiment.name)
        else:
            assert "pretrain_contrastive" not in counts, experiment.name
            assert "prepare_contrastive_data" not in counts, experiment.name
        if "equivariant" in branches:
            check_equivariant_plan(config["equivariant"], counts, experiment.name)
        else:
            assert "prepare_equivariant_data" not in counts, experiment.name


def check_pure_plan(config, counts, name):
    embedders = len(config["evaluation"]["embedders"])
    assert counts["embed_crops"] == embedders * config["crops"]["shards"], name
    methods = len(config["clustering"]["methods"])
    assert counts["cluster_units"] == methods and counts["evaluate"] == 1, name
    saes = len(config["sae"]["layers"]) * len(config["sae"].get("models", {}))
    assert counts.get("train_sae", 0) == saes, name
    assert counts["score_hierarchy"] == 1, name


def check_equivariant_plan(section, counts, name):
    architectures = len(section["architectures"])
    families = section.get("families", ["vanilla", "equivariant", "archetypal"])
    losses = len(section.get("loss_types", ["latent_inv", "canonical", "output_inv"]))
    saes = len(families) - 1 + losses if "equivariant" in families else len(families)
    # The symmetry fit runs in the autoencoder's job.
    assert counts["train_equivariant_autoencoder"] == architectures, name
    assert saes > 0, name
    assert counts["train_equivariant_saes"] == architectures, name  # all its SAEs in one job
    assert counts["probe_equivariant"] == architectures, name  # base latents and SAEs in one job
    assert counts["equivariant_tables"] == 1, name


def check_contrastive_plan(section, counts, name):
    methods = len(section["methods"])
    assert counts["pretrain_contrastive"] == methods, name
    assert counts["train_contrastive_sae"] == 1, name
    # Only the digits' split is drawn by a job (CIFAR and image folders come split).
    digits = section["data"].get("name", "digits") == "digits"
    assert counts.get("prepare_contrastive_data", 0) == int(digits), name
    representations = methods + 1
    probes = section["probes"]
    # One job per representation runs every setting: finetuning (not of the SAE), and
    # both frozen probes.
    finetune = methods if "finetune" in probes else 0
    assert counts.get("contrastive_finetune", 0) == finetune, name
    frozen = any(probe != "finetune" for probe in probes)
    assert counts.get("contrastive_frozen_probes", 0) == representations * frozen, name
    assert counts["contrastive_features"] == representations, name
    assert counts["contrastive_tables"] == 1, name


def test_paper_config_embedder_fails_clearly_without_weights(repo, tmp_path):
    """The ResNet-34 config, shrunk to a few fake images and a random-weight model file,
    runs up to its CLIP embedder, which fails naming the missing cache and the fix."""
    import timm
    from safetensors.torch import save_file

    workdir = copy_workflow(tmp_path / "run", tiny_config=False)
    fake_imagefolder(workdir / "val")
    torch.manual_seed(0)
    net = timm.create_model("resnet34.a1_in1k", pretrained=False)
    save_file(net.state_dict(), str(workdir / "resnet34.safetensors"))
    config = yaml.safe_load(
        (repo / "config" / "experiments" / "pure_resnet34_imagenet.yaml").read_text()
    )
    config.update(threads=1)
    config["data"].update(root="val", image_size=64, resize=72)
    config["model"]["weights"] = "resnet34.safetensors"
    config["references"].update(n=2, shards=1, batch_size=8, num_workers=0)
    config["circuits"]["shards"] = 1
    config["crops"].update(size=16, shards=1)
    config["clustering"]["k"] = [2]
    config["neurons"] = config["figures"]["neurons"]  # not all 512: fewer LRP passes
    (workdir / "paper.yaml").write_text(yaml.safe_dump(config))
    env_home = {"HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "results/pure_resnet34_imagenet/embeddings/clip.safetensors",
            "--cores",
            "2",
            "--configfile",  # takes several files: the target goes before it
            "paper.yaml",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, **env_home, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0
    log = (workdir / "results/pure_resnet34_imagenet/logs/embed_crops/clip/1-of-1.log").read_text()
    assert "open_clip weights for ViT-B-32 (openai) are not cached" in log
    assert "set the embedder's weights to a local file" in log
    crops = workdir / "results/pure_resnet34_imagenet/crops/shards/1-of-1.safetensors"
    assert crops.is_file()  # everything before the embedder ran
    assert not (
        workdir / "results/pure_resnet34_imagenet/embeddings/clip/1-of-1.safetensors"
    ).exists()
