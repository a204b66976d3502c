"""Tests of the contrastive branch's evaluation layer: representations, probes under
noise, unit summaries, tables, the data sources and the scaled backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import monoscope  # noqa: F401  (must precede any torchvision import)
from monoscope.checkpoints import checkpoint_resumable
from monoscope.contrastive import augment as aug
from monoscope.contrastive.data import ContrastiveDataConfig, load_contrastive_split
from monoscope.contrastive.models import build_contrastive_model, resnet18_backbone
from monoscope.contrastive.pretrain import (
    CHECKPOINTS,
    PretrainConfig,
    ProjectorConfig,
    pretrain,
    save_pretrained,
)
from monoscope.contrastive.probes import (
    FeatureSet,
    LinearProbeConfig,
    extract_features,
    linear_probe,
)
from monoscope.contrastive.representations import (
    SAEOnContrastive,
    check_setting,
    contrastive_sae_config,
    load_feature_sets,
    load_representation,
    probe_under_noise,
    reference_dimensions,
    representation_summary,
    robustness_frame,
    save_feature_sets,
    setting_name,
    top_references,
)
from monoscope.contrastive.robustness import (
    few_shot_subset,
    input_noise_transform,
    symmetric_label_noise,
)
from monoscope.data import InMemoryDataset
from monoscope.hierarchy import distances_from_config, flat_distances, tree_distances
from monoscope.sae import SAEConfig, TensorStore, build_sae, save_sae, train_sae
from monoscope.sae.topk import TopKSAE

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def blobs():
    """Images whose class sets the mean colour: any reasonable feature separates them."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])
    images = colours[labels][:, :, None, None] + 0.05 * torch.randn(
        60, 3, SIZE, SIZE, generator=generator
    )
    train = InMemoryDataset(images[:42].clamp(0, 1), labels[:42])
    test = InMemoryDataset(images[42:].clamp(0, 1), labels[42:], torch.arange(42, 60))
    return train, test


def small_model(seed: int = 0, nonneg: str = "relu_gelu_grad"):
    torch.manual_seed(seed)
    return build_contrastive_model(nonneg=nonneg, hidden_dim=32, out_dim=16, width=4).eval()


# --------------------------------------------------------------------------- backbone


def test_scaled_backbone_has_resnet18_topology_and_keys():
    from torchvision.models import resnet18

    real = resnet18_backbone(cifar_stem=True)
    scaled = resnet18_backbone(cifar_stem=True, width=8)
    assert real.state_dict().keys() == scaled.state_dict().keys()
    for key, value in real.state_dict().items():
        if value.dim() == 4:  # every conv keeps its kernel size, channels scale by 8
            small = scaled.state_dict()[key]
            assert small.shape[2:] == value.shape[2:], key
            assert small.shape[0] * 8 == value.shape[0], key
    x = torch.rand(2, 3, SIZE, SIZE)
    assert scaled(x).shape == (2, 64)
    # Width 64 is torchvision's network itself.
    reference = {k: v.shape for k, v in resnet18(num_classes=10).state_dict().items()}
    assert {k: v.shape for k, v in real.state_dict().items() if k in reference}.keys() <= (
        reference.keys()
    )
    assert build_contrastive_model(width=4, hidden_dim=8, out_dim=4).feature_dim == 32
    with pytest.raises(ValueError, match="width"):
        resnet18_backbone(width=0)


def test_pretrain_config_width_builds_the_narrow_network():
    config = PretrainConfig(backbone_width=4, projector=ProjectorConfig(hidden_dim=8, out_dim=4))
    model = pretrain_module_build(config)
    assert model.feature_dim == 32
    assert PretrainConfig.from_dict(config.to_dict()) == config


def pretrain_module_build(config):
    from monoscope.contrastive.pretrain import build_model

    return build_model(config)


def test_checkpoint_resumable_only_for_the_same_config(tmp_path, blobs):
    train, _ = blobs
    config = PretrainConfig(
        method="simclr",
        epochs=1,
        batch_size=14,
        backbone_width=4,
        projector=ProjectorConfig(hidden_dim=8, out_dim=4),
        augment=aug.AugmentConfig(crop_size=SIZE),
    )
    checkpoint = tmp_path / "resume.safetensors"
    pretrain(train, config, checkpoint=checkpoint)
    assert checkpoint_resumable(checkpoint, CHECKPOINTS, config)
    other = PretrainConfig.from_dict({**config.to_dict(), "lr": 0.1})
    assert not checkpoint_resumable(checkpoint, CHECKPOINTS, other)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    assert not checkpoint_resumable(tmp_path / "junk.safetensors", CHECKPOINTS, config)


# --------------------------------------------------------------------------- SAE loss


def test_normalized_mse_is_per_sample_relative_error():
    torch.manual_seed(0)
    sae = TopKSAE(4, 8, k=2, normalized_mse=True)
    x = torch.randn(5, 4) * torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    expected = np.mean(
        [float(((a - b) ** 2).sum() / (a**2).sum()) for a, b in zip(x, x_hat, strict=True)]
    )
    with torch.no_grad():
        terms, _ = sae.loss_and_codes(x)
    assert terms["mse"].item() == pytest.approx(expected, rel=1e-5)
    # The plain loss is the unnormalised squared error, a different number here.
    plain = TopKSAE(4, 8, k=2)
    plain.load_state_dict(sae.state_dict())
    with torch.no_grad():
        assert plain.loss_and_codes(x)[0]["mse"].item() != pytest.approx(expected)
    built = build_sae("topk", 4, SAEConfig(variant="topk", expansion=2, k=2, normalized_mse=True))
    assert built.normalized_mse and built.config["normalized_mse"] is True


# --------------------------------------------------------------------------- representations


def test_sae_representation_encodes_the_normalised_projector_output(tmp_path, blobs):
    train, _ = blobs
    model = small_model()
    torch.manual_seed(1)
    sae = TopKSAE(16, 32, k=4)
    wrapped = SAEOnContrastive(model, sae).eval()
    x = model.normalize(train.images[:5])
    expected = sae.encode(F.normalize(model.embed(x), dim=1))
    assert torch.equal(wrapped.embed(x), expected)
    assert ((wrapped.embed(x) > 0).sum(dim=1) <= 4).all()
    # Round trip through the files the workflow writes.
    config = PretrainConfig(
        method="ncl", backbone_width=4, projector=ProjectorConfig(hidden_dim=32, out_dim=16)
    )
    save_pretrained(tmp_path / "model.safetensors", model, config)
    save_sae(sae, tmp_path / "sae.safetensors")
    loaded = load_representation(tmp_path / "model.safetensors", tmp_path / "sae.safetensors")
    assert torch.allclose(loaded.embed(x), expected, atol=1e-6)
    plain = load_representation(tmp_path / "model.safetensors")
    assert torch.allclose(plain.embed(x), model.embed(x), atol=1e-6)


def test_feature_sets_round_trip(tmp_path):
    sets = {
        name: FeatureSet(torch.randn(4, 3), torch.arange(4), torch.arange(4) + 10)
        for name in ("train", "test")
    }
    save_feature_sets(tmp_path / "f.safetensors", ["a", "b"], **sets)
    loaded, classes = load_feature_sets(tmp_path / "f.safetensors")
    assert classes == ["a", "b"]
    for name, feature_set in sets.items():
        for a, b in zip(loaded[name], feature_set, strict=True):
            assert torch.equal(a, b)


# --------------------------------------------------------------------------- probes under noise


@pytest.fixture(scope="module")
def clean_features(blobs):
    train, test = blobs
    model = small_model()
    return (
        model,
        extract_features(model, train, "projector"),
        extract_features(model, test, "projector"),
    )


PROBE = LinearProbeConfig(epochs=30, batch_size=16, lr=0.01)


def test_clean_linear_cell_equals_the_plain_linear_probe(blobs, clean_features):
    train, test = blobs
    model, train_f, test_f = clean_features
    record = probe_under_noise(
        model, "linear", "clean", 0.0, train, test, train_f, test_f, 3, PROBE
    )
    expected = linear_probe(
        train_f.features, train_f.labels, test_f.features, test_f.labels, PROBE, 3
    )
    assert record["accuracy"] == expected
    assert record["setting"] == "clean" and record["train_samples"] == 42


def test_label_noise_cell_trains_on_the_noisy_labels(blobs, clean_features):
    train, test = blobs
    model, train_f, test_f = clean_features
    record = probe_under_noise(
        model, "linear", "label", 0.5, train, test, train_f, test_f, 3, PROBE, seed=7
    )
    noisy = symmetric_label_noise(train_f.labels, 0.5, 3, seed=7)
    expected = linear_probe(train_f.features, noisy, test_f.features, test_f.labels, PROBE, 3)
    assert record["accuracy"] == expected and record["setting"] == "label 0.5"


def test_fewshot_cell_uses_the_stratified_subset(blobs, clean_features):
    train, test = blobs
    model, train_f, test_f = clean_features
    record = probe_under_noise(
        model,
        "selected",
        "fewshot",
        0.25,
        train,
        test,
        train_f,
        test_f,
        3,
        PROBE,
        selected_dims=4,
        seed=2,
    )
    keep = few_shot_subset(train_f.labels, 0.25, seed=2)
    assert record["train_samples"] == len(keep) == 3 * round(0.25 * 14)


def test_input_noise_cell_perturbs_only_the_test_images(blobs, clean_features):
    train, test = blobs
    model, train_f, test_f = clean_features
    record = probe_under_noise(
        model, "linear", "gaussian", 0.6, train, test, train_f, test_f, 3, PROBE, seed=4
    )
    noisy_test = extract_features(
        model, test, "projector", transform=input_noise_transform("gaussian", 0.6, seed=4)
    )
    assert not torch.equal(noisy_test.features, test_f.features)
    expected = linear_probe(
        train_f.features, train_f.labels, noisy_test.features, test_f.labels, PROBE, 3
    )
    assert record["accuracy"] == expected


def test_finetune_cell_runs_on_images(blobs):
    from monoscope.contrastive.probes import FinetuneConfig

    train, test = blobs
    record = probe_under_noise(
        small_model(),
        "finetune",
        "label",
        0.2,
        train,
        test,
        None,
        None,
        3,
        finetune_config=FinetuneConfig(epochs=1, batch_size=14, augment=False),
    )
    assert 0.0 <= record["accuracy"] <= 1.0 and record["probe"] == "finetune"


def test_finetune_cell_does_not_depend_on_the_cells_before_it(blobs):
    """rule contrastive_finetune runs every setting in one process: a setting's result
    must equal the one it gets alone (its generators are seeded from the params)."""
    from monoscope.contrastive.probes import FinetuneConfig

    train, test = blobs
    model = small_model()
    config = FinetuneConfig(epochs=1, batch_size=14)

    def clean():
        return probe_under_noise(
            model, "finetune", "clean", 0, train, test, None, None, 3, finetune_config=config
        )["accuracy"]

    alone = clean()
    probe_under_noise(
        model, "finetune", "label", 0.4, train, test, None, None, 3, finetune_config=config
    )
    torch.rand(7)  # the global generator moved, as other code in the job may move it
    assert clean() == alone


def test_bad_settings_fail_clearly(blobs, clean_features):
    train, test = blobs
    model, train_f, test_f = clean_features
    with pytest.raises(ValueError, match="noise must be one of"):
        check_setting("salt", 0.1)
    with pytest.raises(ValueError, match="clean setting has level 0"):
        check_setting("clean", 0.3)
    with pytest.raises(ValueError, match="few-shot"):
        check_setting("fewshot", 0.0)
    with pytest.raises(ValueError, match="probe must be one of"):
        probe_under_noise(model, "knn", "clean", 0, train, test, train_f, test_f, 3)
    with pytest.raises(ValueError, match="clean train and test features"):
        probe_under_noise(model, "linear", "clean", 0, train, test, None, None, 3)
    assert setting_name("gaussian", 0.60) == "gaussian 0.6"


# --------------------------------------------------------------------------- units and tables


def test_representation_summary_on_a_hand_worked_case():
    # Dimension 0 fires on class 0 only, dimension 1 on classes 0 and 1, dimension 2 never.
    features = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    summary = representation_summary(features, labels, flat_distances(2))
    assert summary["dimensions"] == 3 and summary["active_dimensions"] == 2
    # Consistency: dim 0 -> 2/2, dim 1 -> 2/3 (class 1 twice of three).
    assert summary["consistency"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert summary["zero_fraction"] == pytest.approx(6 / 12)  # exact zeros; -1 is not one
    assert summary["active_per_sample"] == pytest.approx(5 / 4)
    # Class means of ReLU: dim 0 (1.5, 0) -> score 0; dim 1 (0.5, 2) -> 2*0.5*2/(0.25+4).
    assert summary["hierarchy"] == pytest.approx((0.0 + 2 / 4.25) / 2)


def test_top_references_and_reference_dimensions():
    features = torch.tensor([[0.0, 5.0], [3.0, 1.0], [1.0, 4.0]])
    assert top_references(features, torch.tensor([1, 0]), 2).tolist() == [[0, 2], [1, 2]]
    assert reference_dimensions(features, 5).tolist() == [1, 0]


def test_robustness_frame_layout_and_missing_cells():
    records = [
        {"representation": r, "probe": p, "setting": s, "accuracy": a}
        for r, p, s, a in [
            ("sae", "linear", "clean", 0.9),
            ("simclr", "linear", "clean", 0.8),
            ("simclr", "linear", "label 0.9", 0.3),
            ("simclr", "finetune", "clean", 0.85),
        ]
    ]
    frame = robustness_frame(records, ["clean", "label 0.9"])
    assert list(frame.index) == [("linear", "simclr"), ("linear", "sae"), ("finetune", "simclr")]
    assert frame.loc[("linear", "simclr"), "label 0.9"] == 30.0
    assert math.isnan(frame.loc[("linear", "sae"), "label 0.9"])
    with pytest.raises(ValueError, match="two records"):
        robustness_frame(records + records[:1], ["clean"])


# --------------------------------------------------------------------------- data and distances


def test_digits_split_is_stratified_and_matches_the_sample_table():
    config = ContrastiveDataConfig(image_size=SIZE)
    train, classes = load_contrastive_split(config, True)
    test, _ = load_contrastive_split(config, False)
    assert classes == [str(d) for d in range(10)]
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert set(train.sample_ids.tolist()).isdisjoint(test.sample_ids.tolist())
    image, label, sample_id = train[0]
    assert image.shape == (3, SIZE, SIZE) and 0 <= image.min() and image.max() <= 1
    from sklearn.datasets import load_digits

    assert label == load_digits().target[sample_id]


def test_digits_split_read_from_the_sample_table_equals_the_drawn_one(tmp_path):
    from monoscope.contrastive.data import contrastive_samples, digits_sample_table

    config = ContrastiveDataConfig(image_size=SIZE)
    table, _ = digits_sample_table(config)
    path = tmp_path / "samples.csv"
    table.to_csv(path, index=False)
    for train in (True, False):
        drawn, classes = load_contrastive_split(config, train)
        read, read_classes = load_contrastive_split(config, train, path)
        assert read_classes == classes
        assert torch.equal(read.sample_ids, drawn.sample_ids)
        assert torch.equal(read.images, drawn.images) and torch.equal(read.labels, drawn.labels)
    (tmp_path / "other.csv").write_text("id,name\n1,a\n")
    with pytest.raises(ValueError, match="other.csv is not a sample table"):
        load_contrastive_split(config, True, tmp_path / "other.csv")

    class JobInput:
        contrastive_samples = [str(path)]

    assert contrastive_samples(JobInput()) == str(path)
    assert contrastive_samples(object()) is None


def test_missing_imagefolder_names_the_expected_layout(tmp_path):
    config = ContrastiveDataConfig(name="imagefolder", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train")):
        load_contrastive_split(config, True)
    with pytest.raises(ValueError, match="root"):
        ContrastiveDataConfig(name="cifar100")


def test_imagefolder_split_reads_class_folders(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for name in ("n01440764", "n01443537"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (20, 24), (200, 10, 10)).save(tmp_path / split / name / "a.png")
    dataset, classes = load_contrastive_split(
        ContrastiveDataConfig(name="imagefolder", root=str(tmp_path), image_size=SIZE), False
    )
    assert classes == ["n01440764", "n01443537"] and len(dataset) == 2
    assert dataset[1][0].shape == (3, SIZE, SIZE) and dataset[1][1] == 1


def test_distances_from_config_ignores_keys_the_kind_does_not_use():
    assert np.array_equal(
        distances_from_config({"kind": "flat", "parents": {}, "k": 2}, ["a", "b"]),
        flat_distances(2),
    )
    parents = {"a": "r", "b": "r"}
    assert np.array_equal(
        distances_from_config({"kind": "tree", "parents": parents}, ["a", "b"]),
        tree_distances(["a", "b"], parents),
    )


def test_sae_on_projector_output_trains_with_the_normalized_loss():
    torch.manual_seed(0)
    data = F.normalize(torch.randn(64, 8), dim=1)
    settings = {"num_features": 16, "k": 3, "epochs": 2, "batch_size": 16}
    config = contrastive_sae_config(settings, data.shape[1])
    assert (config.variant, config.expansion, config.decoder_bias_init) == ("topk", 2, "mean")
    sae, history = train_sae(TensorStore(data), config)
    assert sae.normalized_mse and len(history["epochs"]) == 2


def test_representations_frame_joins_units_and_clean_accuracies():
    from monoscope.contrastive.representations import representations_frame

    units = [
        {
            "representation": "ncl",
            "dimensions": 4,
            "active_dimensions": 3,
            "consistency": 0.51234,
            "zero_fraction": 0.25,
            "active_per_sample": 2.04,
            "hierarchy": 1.23456,
        }
    ]
    records = [
        {"representation": "ncl", "probe": "linear", "noise": "clean", "accuracy": 0.8766},
        {"representation": "ncl", "probe": "linear", "noise": "label", "accuracy": 0.1},
        {"representation": "sae", "probe": "linear", "noise": "clean", "accuracy": 0.5},
    ]
    frame = representations_frame(units, records)
    assert list(frame.index) == ["ncl"]
    assert frame.loc["ncl", "class consistency"] == 0.512
    assert frame.loc["ncl", "hierarchy score"] == 1.235
    assert frame.loc["ncl", "linear accuracy"] == 87.7


def test_cells_that_need_images_say_so(clean_features):
    model, train_f, test_f = clean_features
    with pytest.raises(ValueError, match="needs the test images"):
        probe_under_noise(model, "linear", "gaussian", 0.3, None, None, train_f, test_f, 3)
    with pytest.raises(ValueError, match="needs the train images"):
        probe_under_noise(model, "finetune", "clean", 0, None, None, None, None, 3)
