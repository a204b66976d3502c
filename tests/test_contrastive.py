"""Tests of monoscope.contrastive: NCL / SimCLR models, loss, augmentation, training,
probes, robustness perturbations, metrics and CIFAR loading. Tiny sizes throughout."""

from __future__ import annotations

import math
import pickle
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import interrupted_after_first_epoch

import monoscope  # noqa: F401  (must precede any torchvision import)
from monoscope import checkpoints
from monoscope.config import from_mapping
from monoscope.contrastive import augment as aug
from monoscope.contrastive import pretrain as pretrain_module
from monoscope.contrastive import probes
from monoscope.contrastive.data import cifar_folder, load_cifar
from monoscope.contrastive.losses import info_nce
from monoscope.contrastive.metrics import class_consistency, sparsity
from monoscope.contrastive.models import (
    ContrastiveModel,
    NonNegative,
    build_contrastive_model,
    gelu_derivative,
    projector,
    relu_gelu_grad,
    resnet18_backbone,
)
from monoscope.contrastive.pretrain import (
    PretrainConfig,
    ProjectorConfig,
    load_pretrained,
    pretrain,
    save_pretrained,
    warmup_cosine_lr,
)
from monoscope.contrastive.robustness import (
    RelabelledDataset,
    add_input_noise,
    few_shot_subset,
    input_noise_transform,
    symmetric_label_noise,
)
from monoscope.data import InMemoryDataset

SIZE = 16  # image side used throughout: small enough for ResNet-18 on two CPU cores


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# A tiny NCL pretraining; keywords override its settings.
tiny_config = partial(
    PretrainConfig,
    method="ncl",
    epochs=2,
    batch_size=8,
    lr=0.05,
    warmup_epochs=1,
    projector=ProjectorConfig(hidden_dim=32, out_dim=16),
    augment=aug.AugmentConfig(crop_size=SIZE),
    seed=3,
)


@pytest.fixture(scope="module")
def tiny_images() -> InMemoryDataset:
    """24 random images with smooth structure (so crops and jitter do something)."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(24, 3, 4, 4, generator=generator)
    images = F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return InMemoryDataset(images.clamp(0, 1), torch.arange(24) % 3)


def tiny_model(nonneg: str = "relu_gelu_grad") -> ContrastiveModel:
    torch.manual_seed(0)
    return build_contrastive_model(nonneg=nonneg, hidden_dim=32, out_dim=16)


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- models


def test_relu_gelu_grad_forward_is_relu_and_gradient_is_gelu_derivative():
    x = torch.cat([torch.randn(500, dtype=torch.float64) * 3, torch.zeros(1, dtype=torch.float64)])
    x.requires_grad_(True)
    upstream = torch.randn_like(x)
    out = relu_gelu_grad(x)
    assert torch.equal(out.detach(), torch.relu(x.detach()))
    (grad,) = torch.autograd.grad(out, x, upstream)

    # Analytic: d/dx x*Phi(x) = Phi(x) + x*phi(x), Phi via erf, phi the normal density.
    xs = x.detach()
    cdf = 0.5 * (1 + torch.special.erf(xs / math.sqrt(2)))
    density = torch.exp(-0.5 * xs**2) / math.sqrt(2 * math.pi)
    torch.testing.assert_close(grad, upstream * (cdf + xs * density), rtol=1e-12, atol=1e-12)

    # And against autograd through torch's own exact GELU.
    x_gelu = xs.clone().requires_grad_(True)
    (gelu_grad,) = torch.autograd.grad(F.gelu(x_gelu), x_gelu, upstream)
    torch.testing.assert_close(grad, gelu_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gelu_derivative(xs), cdf + xs * density)


def test_nonneg_maps_and_their_gradients():
    x = torch.tensor([-2.0, -0.5, 0.5, 2.0], requires_grad=True)
    for kind, expected_grad in [
        ("none", [1.0, 1.0, 1.0, 1.0]),
        ("relu", [0.0, 0.0, 1.0, 1.0]),
    ]:
        out = NonNegative(kind)(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.equal(grad, torch.tensor(expected_grad))
    # GELU's slope is non-zero for negative inputs: dead dimensions can recover.
    (grad,) = torch.autograd.grad(NonNegative("relu_gelu_grad")(x).sum(), x)
    assert (grad[:2] != 0).all()
    with pytest.raises(ValueError, match="nonneg"):
        NonNegative("softplus")


def test_backbone_stems_and_shapes():
    cifar = resnet18_backbone(cifar_stem=True)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity) and isinstance(cifar.fc, torch.nn.Identity)
    imagenet = resnet18_backbone(cifar_stem=False)
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    head = projector(512, 32, 16)
    kinds = [type(layer).__name__ for layer in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [type(layer).__name__ for layer in projector(512, 32, 16, batch_norm=False)] == [
        "Linear",
        "ReLU",
        "Linear",
    ]
    model = tiny_model().eval()
    with torch.no_grad():
        x = model.normalize(torch.rand(2, 3, SIZE, SIZE))
        assert model.features(x).shape == (2, 512)
        z = model.embed(x)
    assert z.shape == (2, 16) and (z >= 0).all()


# --------------------------------------------------------------------------- loss


def naive_info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    rows = torch.cat([z1, z2]).tolist()
    u = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in rows]

    def similarity(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(u[i], u[j], strict=True)) / temperature

    n = len(u)
    total = 0.0
    for i in range(n):
        positive = (i + n // 2) % n
        denominator = sum(math.exp(similarity(i, j)) for j in range(n) if j != i)
        total += -math.log(math.exp(similarity(i, positive)) / denominator)
    return total / n


@pytest.mark.parametrize("temperature", [0.2, 0.5, 1.0])
def test_info_nce_matches_naive_double_loop(temperature):
    generator = torch.Generator().manual_seed(1)
    z1 = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    z2 = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    expected = naive_info_nce(z1, z2, temperature)
    assert float(info_nce(z1, z2, temperature)) == pytest.approx(expected, rel=1e-6)
    # The loss sees directions only.
    assert float(info_nce(3 * z1, 0.5 * z2, temperature)) == pytest.approx(expected, rel=1e-6)


def test_info_nce_rejects_bad_input():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(z, z, 0.0)
    with pytest.raises(ValueError, match="views"):
        info_nce(z, z[:3])
    with pytest.raises(ValueError, match="two samples"):
        info_nce(z[:1], z[:1])


# --------------------------------------------------------------------------- augment


def test_crop_and_colour_ops_match_torchvision():
    import torchvision.transforms.v2.functional as TF

    generator = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, SIZE, SIZE, generator=generator)
    boxes = torch.tensor([[2, 3, 8, 8], [0, 0, 16, 16], [5, 1, 10, 6], [1, 7, 9, 9]])
    flip = torch.tensor([False, True, False, True])
    out = aug.crop_and_resize(x, boxes, SIZE, flip)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        expected = TF.resized_crop(x[i], top, left, h, w, [SIZE, SIZE], antialias=False)
        expected = expected.flip(-1) if flip[i] else expected
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)
    factors = torch.tensor([0.3, 0.9, 1.4, 1.8])
    shifts = torch.tensor([-0.2, -0.05, 0.1, 0.2])
    for mine, theirs, values in [
        (aug.adjust_brightness, TF.adjust_brightness, factors),
        (aug.adjust_contrast, TF.adjust_contrast, factors),
        (aug.adjust_saturation, TF.adjust_saturation, factors),
        (aug.adjust_hue, TF.adjust_hue, shifts),
    ]:
        expected = torch.stack([theirs(x[i], float(values[i])) for i in range(4)])
        torch.testing.assert_close(mine(x, values), expected, atol=1e-3, rtol=0)
    gray = TF.rgb_to_grayscale(x, num_output_channels=1)
    torch.testing.assert_close(aug.grayscale(x), gray, atol=1e-3, rtol=0)


def test_crop_boxes_fit_and_respect_scale():
    generator = torch.Generator().manual_seed(4)
    boxes = aug.sample_crop_boxes(500, 20, 30, (0.2, 0.6), (0.75, 4 / 3), generator)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 20).all() and (left + w <= 30).all()
    share = (h * w).double() / 600
    assert share.min() > 0.15 and share.max() < 0.7  # rounding widens the range a little


def test_two_views_are_seeded_and_in_range(tiny_images):
    images = tiny_images.images[:6]
    config = aug.AugmentConfig(crop_size=12)
    a1, b1 = aug.two_views(images, config, torch.Generator().manual_seed(5))
    a2, b2 = aug.two_views(images, config, torch.Generator().manual_seed(5))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert a1.shape == (6, 3, 12, 12)
    assert not torch.equal(a1, b1)
    assert a1.min() >= 0 and a1.max() <= 1
    a3, _ = aug.two_views(images, config, torch.Generator().manual_seed(6))
    assert not torch.equal(a1, a3)


def test_augment_config_validation_names_the_key():
    with pytest.raises(ValueError, match="augment.gray_prob"):
        aug.AugmentConfig(gray_prob=1.5)
    with pytest.raises(ValueError, match="augment.crop_scale"):
        aug.AugmentConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="augment.crop_ratio"):
        aug.AugmentConfig(crop_ratio=(2.0, 1.0))
    with pytest.raises(ValueError, match="augment.jitter.hue"):
        aug.ColorJitterConfig(hue=0.7)
    with pytest.raises(ValueError, match="augment.jitter.prob"):
        aug.ColorJitterConfig(prob=-0.1)


# --------------------------------------------------------------------------- pretrain


def test_pretrain_config_defaults_validation_and_round_trip():
    assert PretrainConfig(method="simclr").nonneg == "none"
    assert PretrainConfig(method="ncl").nonneg == "relu_gelu_grad"
    for kwargs, key in [
        ({"method": "byol"}, "pretrain.method"),
        ({"method": "simclr", "nonneg": "relu"}, "pretrain.nonneg"),
        ({"method": "ncl", "nonneg": "none"}, "pretrain.nonneg"),
        ({"optimizer": "lars"}, "pretrain.optimizer"),
        ({"temperature": 0}, "pretrain.temperature"),
        ({"batch_size": 1}, "pretrain.batch_size"),
        ({"warmup_epochs": -1}, "pretrain.warmup_epochs"),
    ]:
        with pytest.raises(ValueError, match=key):
            PretrainConfig(**kwargs)
    config = tiny_config(optimizer="adam")
    assert PretrainConfig.from_dict(config.to_dict()) == config
    nested = from_mapping(PretrainConfig, {"augment": {"crop_size": 24, "jitter": {"hue": 0.1}}})
    assert nested.augment == aug.AugmentConfig(crop_size=24, jitter=aug.ColorJitterConfig(hue=0.1))
    with pytest.raises(ValueError, match="unknown"):
        PretrainConfig.from_dict({**config.to_dict(), "typo": 1})


def test_warmup_cosine_schedule():
    lrs = [warmup_cosine_lr(step, 1.0, 2, 10) for step in range(10)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)  # first decay step starts at the peak
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    assert lrs[-1] > 0 and warmup_cosine_lr(10, 1.0, 2, 10) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def uninterrupted(tiny_images):
    return pretrain(tiny_images, tiny_config())


def test_pretraining_is_reproducible(tiny_images, uninterrupted):
    model_a, history_a = uninterrupted
    model_b, history_b = pretrain(tiny_images, tiny_config())
    assert state_equal(model_a, model_b)
    assert [h["loss"] for h in history_a] == [h["loss"] for h in history_b]
    assert len(history_a) == 2 and all(math.isfinite(h["loss"]) for h in history_a)
    assert not model_a.training
    # A different seed trains a different model.
    model_c, _ = pretrain(tiny_images, tiny_config(seed=4, epochs=1))
    assert not state_equal(model_a, model_c)


def test_resume_equals_uninterrupted(tiny_images, uninterrupted, tmp_path, monkeypatch):
    checkpoint = tmp_path / "state.safetensors"
    interrupted_after_first_epoch(
        monkeypatch, lambda: pretrain(tiny_images, tiny_config(), checkpoint=checkpoint)
    )
    assert checkpoint.exists()

    model, history = pretrain(tiny_images, tiny_config(), checkpoint=checkpoint)
    reference, reference_history = uninterrupted
    assert state_equal(model, reference)
    assert [h["loss"] for h in history] == [h["loss"] for h in reference_history]
    # Finished: a further call trains nothing and returns the same weights.
    again, _ = pretrain(tiny_images, tiny_config(), checkpoint=checkpoint)
    assert state_equal(again, reference)
    with pytest.raises(ValueError, match="different config"):
        pretrain(tiny_images, tiny_config(lr=0.1), checkpoint=checkpoint)


def test_adam_state_survives_a_checkpoint(tiny_images, tmp_path):
    config = tiny_config(optimizer="adam", lr=1e-3)
    model = pretrain_module.build_model(config)
    optimizer = pretrain_module.make_optimizer(model, config)
    loss = model.embed(model.normalize(tiny_images.images[:4])).sum()
    loss.backward()
    optimizer.step()
    path = tmp_path / "adam.safetensors"
    kind = pretrain_module.CHECKPOINTS
    checkpoints.save_checkpoint(path, kind, model, optimizer, config, 1, 1, [{"loss": 1.0}])
    fresh = pretrain_module.build_model(config)
    fresh_optimizer = pretrain_module.make_optimizer(fresh, config)
    epoch, step, history = checkpoints.load_checkpoint(path, kind, fresh, fresh_optimizer, config)
    assert (epoch, step, history) == (1, 1, [{"loss": 1.0}])
    assert state_equal(model, fresh)
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, slots in saved["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, loaded["state"][index][name])


def test_pretrain_needs_a_full_batch(tiny_images):
    with pytest.raises(ValueError, match="batch_size"):
        pretrain(tiny_images, tiny_config(batch_size=64))


def test_save_and_load_pretrained(uninterrupted, tmp_path, tiny_images):
    model, history = uninterrupted
    path = tmp_path / "ncl.safetensors"
    save_pretrained(path, model, tiny_config(), history)
    loaded, config, loaded_history = load_pretrained(path)
    assert config == tiny_config() and loaded_history == history
    x = model.normalize(tiny_images.images[:3])
    with torch.no_grad():
        assert torch.equal(model.embed(x), loaded.embed(x))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_pretrained(tmp_path / "missing.safetensors")


# --------------------------------------------------------------------------- probes


def test_extract_features_order_sources_and_transform(tiny_images):
    model = tiny_model().train()
    backbone = probes.extract_features(model, tiny_images, "backbone", batch_size=10)
    assert backbone.features.shape == (24, 512)
    assert torch.equal(backbone.labels, tiny_images.labels)
    assert torch.equal(backbone.sample_ids, tiny_images.sample_ids)
    assert model.training  # mode restored
    projected = probes.extract_features(model, tiny_images, "projector", batch_size=24)
    assert projected.features.shape == (24, 16) and (projected.features >= 0).all()
    with torch.no_grad():
        direct = model.eval().embed(model.normalize(tiny_images.images[:5]))
    torch.testing.assert_close(projected.features[:5], direct, atol=1e-5, rtol=1e-5)
    noisy = probes.extract_features(
        model, tiny_images, "projector", transform=input_noise_transform("gaussian", 0.5)
    )
    assert not torch.equal(noisy.features, projected.features)
    with pytest.raises(ValueError, match="which"):
        probes.extract_features(model, tiny_images, "logits")


def blobs(n: int, dims: int, classes: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=generator) * 4
    labels = torch.arange(n) % classes
    return centres[labels] + torch.randn(n, dims, generator=generator), labels


def test_linear_probe_separates_blobs_and_is_seeded():
    train_x, train_y = blobs(300, 10, 3, seed=0)
    test_x, test_y = blobs(150, 10, 3, seed=0)  # same centres, fresh noise below
    test_x = test_x + torch.randn(test_x.shape, generator=torch.Generator().manual_seed(9)) * 0.1
    config = probes.LinearProbeConfig(epochs=20, batch_size=64, lr=1e-2)
    accuracy = probes.linear_probe(train_x, train_y, test_x, test_y, config)
    assert accuracy > 0.95
    assert probes.linear_probe(train_x, train_y, test_x, test_y, config) == accuracy
    sgd = probes.LinearProbeConfig(
        epochs=20, batch_size=64, lr=1e-2, optimizer="sgd", standardize=False
    )
    assert probes.linear_probe(train_x, train_y, test_x, test_y, sgd) > 0.95
    with pytest.raises(ValueError, match="probe.optimizer"):
        probes.LinearProbeConfig(optimizer="lbfgs")


def brute_force_rank(features: torch.Tensor, m: int) -> list[int]:
    rows = features.tolist()
    dims = len(rows[0])
    scores = [0.0] * dims
    for row in rows:
        rectified = [max(value, 0.0) for value in row]
        norm = math.sqrt(sum(value * value for value in rectified))
        if norm == 0:
            continue
        for d in range(dims):
            scores[d] += rectified[d] / norm
    # Highest score first; equal scores in index order.
    return sorted(range(dims), key=lambda d: (-scores[d], d))[:m]


def test_rank_dimensions_matches_brute_force():
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(60, 25, generator=generator, dtype=torch.float64)
    features[::7] = -1.0  # rows with nothing active contribute nothing
    for m in (1, 5, 25):
        assert probes.rank_dimensions(features, m).tolist() == brute_force_rank(features, m)
    # Exact ties (duplicated columns, dead columns) go to the lower index.
    tied = torch.tensor([[1.0, 0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 3.0]])
    assert probes.rank_dimensions(tied, 5).tolist() == brute_force_rank(tied, 5) == [4, 0, 2, 1, 3]
    torch.testing.assert_close(
        probes.dimension_scores(tied),
        torch.tensor([1 / 6**0.5, 0, 1 / 6**0.5, 0, 2 / 6**0.5 + 1], dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="m must be"):
        probes.rank_dimensions(features, 26)


def test_selected_dims_probe_keeps_the_informative_dimensions():
    informative, labels = blobs(200, 4, 2, seed=1)
    generator = torch.Generator().manual_seed(2)
    # Strongly active, informative dims first; then many weak, pure-noise dims.
    noise = torch.rand(200, 30, generator=generator) * 0.01
    features = torch.cat([informative.abs() + 5, noise], dim=1)
    assert set(probes.rank_dimensions(features, 4).tolist()) == {0, 1, 2, 3}
    config = probes.LinearProbeConfig(epochs=20, batch_size=64, lr=1e-2)
    assert probes.selected_dims_probe(features, labels, features, labels, 4, config) > 0.9


def test_finetune_trains_a_copy(tiny_images):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = probes.FinetuneConfig(epochs=1, batch_size=12, num_classes=3)
    classifier, record = probes.finetune(model, tiny_images, tiny_images, config)
    assert 0.0 <= record["test_accuracy"] <= 1.0 and len(record["train_loss"]) == 1
    assert record["num_classes"] == 3 and classifier.head.out_features == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(classifier.model.backbone.conv1.weight, model.backbone.conv1.weight)


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    "n, rate, classes", [(100, 0.2, 10), (37, 0.5, 3), (10, 1.0, 2), (50, 0.0, 5)]
)
def test_label_noise_flips_exactly_the_requested_fraction(n, rate, classes):
    labels = torch.arange(n) % classes
    noisy = symmetric_label_noise(labels, rate, classes, seed=1)
    changed = noisy != labels
    assert int(changed.sum()) == round(rate * n)  # never "flipped" to the same class
    assert noisy.min() >= 0 and noisy.max() < classes
    assert torch.equal(labels, torch.arange(n) % classes)  # input untouched
    assert torch.equal(noisy, symmetric_label_noise(labels, rate, classes, seed=1))


def test_label_noise_reaches_every_other_class():
    labels = torch.zeros(3000, dtype=torch.int64)
    noisy = symmetric_label_noise(labels, 0.5, 4, seed=0)
    flipped = noisy[noisy != 0]
    assert len(flipped) == 1500
    counts = torch.bincount(flipped, minlength=4)
    assert counts[0] == 0 and (counts[1:] > 400).all()  # uniform over the 3 others
    with pytest.raises(ValueError, match="rate"):
        symmetric_label_noise(labels, 1.5, 4)
    with pytest.raises(ValueError, match="0..1"):
        symmetric_label_noise(torch.tensor([0, 2]), 0.5, 2)


def test_input_noise_kinds_and_levels():
    images = torch.zeros(20000)
    gaussian = add_input_noise(images, "gaussian", 0.3, torch.Generator().manual_seed(0))
    assert float(gaussian.std()) == pytest.approx(0.3, rel=0.05)
    uniform = add_input_noise(images, "uniform", 0.3, torch.Generator().manual_seed(0))
    assert uniform.min() >= -0.3 and uniform.max() <= 0.3
    assert float(uniform.abs().max()) > 0.29
    assert float(uniform.std()) == pytest.approx(0.3 / math.sqrt(3), rel=0.05)
    repeat = add_input_noise(images, "uniform", 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(uniform, repeat)
    assert torch.equal(add_input_noise(images, "gaussian", 0.0), images)
    with pytest.raises(ValueError, match="kind"):
        add_input_noise(images, "salt", 0.1)


def test_few_shot_subset_is_stratified():
    labels = torch.tensor([0] * 50 + [1] * 7 + [2] * 1 + [3] * 25)
    positions = few_shot_subset(labels, 0.1, seed=0)
    assert torch.equal(positions, torch.sort(positions).values)
    assert len(torch.unique(positions)) == len(positions)
    counts = torch.bincount(labels[positions], minlength=4).tolist()
    assert counts == [5, 1, 1, 2]  # round(0.1 * n_c), at least one
    assert torch.equal(positions, few_shot_subset(labels, 0.1, seed=0))
    assert not torch.equal(positions, few_shot_subset(labels, 0.1, seed=1))
    assert len(few_shot_subset(labels, 1.0)) == len(labels)


def test_relabelled_dataset(tiny_images):
    noisy = symmetric_label_noise(tiny_images.labels, 0.5, 3, seed=0)
    relabelled = RelabelledDataset(tiny_images, noisy)
    image, label, sample_id = relabelled[4]
    assert torch.equal(image, tiny_images[4][0]) and label == int(noisy[4]) and sample_id == 4
    with pytest.raises(ValueError, match="labels"):
        RelabelledDataset(tiny_images, noisy[:3])


# --------------------------------------------------------------------------- metrics


def test_class_consistency_matches_brute_force():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(80, 12, generator=generator).clamp_min(0)
    features[:, 5] = 0.0  # never active
    features[:, 7] = -1.0  # negative is not active either
    labels = torch.randint(0, 4, (80,), generator=generator) * 10  # non-contiguous labels
    result = class_consistency(features, labels)
    expected = []
    for d in range(12):
        active = [int(labels[i]) for i in range(80) if features[i, d] > 0]
        if not active:
            expected.append(math.nan)
            continue
        expected.append(max(active.count(v) for v in set(active)) / len(active))
    np.testing.assert_allclose(result.per_dimension.numpy(), expected, rtol=1e-12)
    assert math.isnan(result.per_dimension[5]) and math.isnan(result.per_dimension[7])
    assert result.mean == pytest.approx(np.nanmean(expected))
    pure = class_consistency(torch.eye(3), torch.tensor([0, 1, 2]))
    assert pure.mean == 1.0


def test_sparsity_matches_brute_force():
    features = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [3.0, -1.0, 0.0, 1.0]])
    result = sparsity(features)
    zeros = sum(value == 0 for row in features.tolist() for value in row)
    assert result.zero_fraction == pytest.approx(zeros / 12)
    assert result.active_per_sample == pytest.approx((2 + 0 + 2) / 3)


# --------------------------------------------------------------------------- data


def write_fake_cifar(root: Path, name: str, per_batch: int = 4) -> dict[str, np.ndarray]:
    """A CIFAR folder in torchvision's pickle-batch format (test data only)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    source = CIFAR10 if name == "cifar10" else CIFAR100
    folder = root / source.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    classes = 10 if name == "cifar10" else 100
    written: dict[str, list] = {"train": [], "test": [], "train_labels": [], "test_labels": []}
    for split, files in (("train", source.train_list), ("test", source.test_list)):
        for file_name, _ in files:
            data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = rng.integers(0, classes, size=per_batch).tolist()
            entry = {"data": data, label_key: labels, "batch_label": file_name}
            if name == "cifar100":
                entry["coarse_labels"] = [label // 5 for label in labels]
            with open(folder / file_name, "wb") as handle:
                pickle.dump(entry, handle)
            written[split].append(data)
            written[f"{split}_labels"] += labels
    meta = {source.meta["key"]: [f"class{i}" for i in range(classes)]}
    with open(folder / source.meta["filename"], "wb") as handle:
        pickle.dump(meta, handle)
    return {
        key: np.concatenate(value) if key in ("train", "test") else np.array(value)
        for key, value in written.items()
    }


def test_missing_cifar_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_cifar(tmp_path, "cifar10")
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/" in message and "python" in message
    assert cifar_folder(tmp_path, "cifar100") == tmp_path / "cifar-100-python"
    with pytest.raises(ValueError, match="cifar"):
        load_cifar(tmp_path, "svhn")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_load_fake_cifar(tmp_path, name):
    written = write_fake_cifar(tmp_path, name)
    train = load_cifar(tmp_path, name, train=True, verify=False)
    test = load_cifar(tmp_path, name, train=False, verify=False)
    assert len(train) == len(written["train"]) and len(test) == len(written["test"])
    image, label, sample_id = train[3]
    expected = torch.from_numpy(written["train"][3].reshape(3, 32, 32).astype(np.float32) / 255)
    assert image.dtype == torch.float32 and torch.equal(image, expected)
    assert label == int(written["train_labels"][3]) and sample_id == 3
    assert torch.equal(test.labels, torch.as_tensor(written["test_labels"]))
    assert train.classes[1] == "class1" and train.train and not test.train
    assert test.position_of([2, 0]).tolist() == [2, 0]
    # The real loader checks torchvision's MD5 sums, which fake files fail.
    with pytest.raises(RuntimeError, match="checksum"):
        load_cifar(tmp_path, name, train=True)


def test_cifar_with_a_missing_batch_file_names_it(tmp_path):
    write_fake_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar(tmp_path, "cifar10", verify=False)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reader_equals_torchvision_on_the_same_files(tmp_path, name):
    """The allow-list reader gives what torchvision's plain pickle.load reader gives."""
    from torchvision.datasets import CIFAR10, CIFAR100

    from monoscope.contrastive.data import _torchvision_class

    write_fake_cifar(tmp_path, name)
    source = _torchvision_class(name)
    unverified = type(
        "Unverified",
        (source,),
        {
            "train_list": [[f, None] for f, _ in source.train_list],
            "test_list": [[f, None] for f, _ in source.test_list],
            "meta": {**source.meta, "md5": None},
        },
    )
    assert source in (CIFAR10, CIFAR100)
    for train in (True, False):
        ours = load_cifar(tmp_path, name, train=train, verify=False)
        theirs = unverified(str(tmp_path), train=train, download=False)
        assert torch.equal(ours.images, torch.from_numpy(theirs.data.transpose(0, 3, 1, 2).copy()))
        assert ours.labels.tolist() == list(theirs.targets) and ours.classes == theirs.classes


def test_crafted_cifar_batch_cannot_run_code(tmp_path):
    """verify: false must not let a batch file run code while it loads."""
    write_fake_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(batch, "wb") as handle:
        pickle.dump({"data": Payload(), "labels": [0]}, handle)
    with pytest.raises(ValueError, match=r"data_batch_1: not an official CIFAR python batch"):
        load_cifar(tmp_path, "cifar10", verify=False)
    assert not marker.exists()
    with open(batch, "wb") as handle:
        pickle.dump({"data": np.array([object()], dtype=object), "labels": [0]}, handle)
    with pytest.raises(ValueError, match="data_batch_1"):
        load_cifar(tmp_path, "cifar10", verify=False)
