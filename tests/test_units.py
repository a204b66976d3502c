"""SAE features and virtual neurons as units: references, class means, splicing."""

import numpy as np
import pytest
import torch
from helpers import layer_output

from monoscope.activations import (
    ActivationConfig,
    ActivationStore,
    collect_activations,
    save_activation_shard,
)
from monoscope.pure.virtual_neurons import VirtualNeurons
from monoscope.units import (
    UNIT_KINDS,
    ContrastiveDimensions,
    Neurons,
    SAEFeatures,
    VirtualNeuronUnits,
    kind_label,
    neuron_class_means,
    parse_kind_label,
    sae_class_means,
    sae_references,
    spliced,
    spliced_accuracy,
    virtual_neuron_class_means,
)


class LinearCodes(torch.nn.Module):
    """A stand-in SAE: ReLU codes of a fixed linear map, decoded by its pseudo-inverse."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.encoder = torch.nn.Parameter(weight, requires_grad=False)

    def encode(self, x):
        return (x @ self.encoder.T).clamp(min=0)

    def forward(self, x):
        codes = self.encode(x)
        return codes @ torch.linalg.pinv(self.encoder).T, codes


class Identity(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.eye(dim), requires_grad=False)

    def forward(self, x):
        return x @ self.weight, x


@pytest.fixture(scope="module")
def store(tmp_path_factory, small_digits, random_demo):
    _, dataset = small_digits
    path = tmp_path_factory.mktemp("store") / "layer4.safetensors"
    is_train = np.zeros(len(dataset), dtype=bool)  # everything is test
    tensors = collect_activations(random_demo, dataset, ["layer4"], ActivationConfig(), is_train)
    save_activation_shard(path, tensors["layer4"], {})
    return ActivationStore([path]), tensors["layer4"]


def test_sae_references_are_the_top_codes(store):
    store, tensors = store
    torch.manual_seed(0)
    sae = LinearCodes(torch.randn(5, 8))
    top = sae_references(sae, store, n=7, batch_size=50)
    codes = sae.encode(tensors["activations"])
    ids = tensors["sample_ids"]
    for feature in range(5):  # brute force: sort by (code desc, id asc)
        order = sorted(range(len(ids)), key=lambda i: (-codes[i, feature].item(), ids[i].item()))
        assert top.sample_ids[feature].tolist() == [ids[i].item() for i in order[:7]]
    assert top.spatial_shape == () and (top.positions == 0).all()


def test_class_means_of_neurons_and_features_equal_numpy(store):
    store, tensors = store
    x, labels = tensors["activations"].numpy(), tensors["labels"].numpy()
    expected = np.stack([np.maximum(x[labels == c], 0).mean(0) for c in range(10)], axis=1)
    assert np.allclose(neuron_class_means(store, 10), expected, atol=1e-6)
    sae = LinearCodes(torch.randn(3, 8))
    codes = sae.encode(torch.from_numpy(x)).numpy()
    expected = np.stack([codes[labels == c].mean(0) for c in range(10)], axis=1)
    assert np.allclose(sae_class_means(sae, store, 10), expected, atol=1e-5)


def test_virtual_neuron_class_means_gate_the_neuron_by_its_cluster(
    store, random_demo, small_digits
):
    store, tensors = store
    _, dataset = small_digits
    torch.manual_seed(1)
    centroids = torch.rand(8, 2, 32)
    virtual = VirtualNeurons(random_demo, "layer3", "layer4", centroids)
    means = virtual_neuron_class_means(virtual, dataset, store, 10, batch_size=64)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    nearest = virtual.assignments(images)  # [S, 8]
    x = tensors["activations"].clamp(min=0)
    labels = tensors["labels"]
    for j in range(8):
        for m in range(2):
            values = x[:, j] * (nearest[:, j] == m)
            expected = [values[labels == c].mean().item() for c in range(10)]
            assert np.allclose(means[j * 2 + m], expected, atol=1e-5)
    assert np.allclose(means.reshape(8, 2, 10).sum(1), neuron_class_means(store, 10), atol=1e-5)


def test_mean_splice_replaces_the_spatial_mean_and_keeps_the_pattern(random_demo):
    torch.manual_seed(2)
    images = torch.rand(4, 3, 32, 32)
    outputs = {}
    # What the next module (the global pool) receives: the spliced output.
    hook = random_demo.layer("avgpool").register_forward_pre_hook(
        lambda _m, inputs: outputs.__setitem__("out", inputs[0])
    )
    sae = LinearCodes(torch.randn(6, 8))
    try:
        with torch.no_grad():
            random_demo.net(images)
            original = outputs["out"]
            with spliced(random_demo, "layer4", sae, "mean"):
                random_demo.net(images)
            changed = outputs["out"]
    finally:
        hook.remove()
    reconstruction, _ = sae(original.mean(dim=(2, 3)))
    assert torch.allclose(changed.mean(dim=(2, 3)), reconstruction, atol=1e-5)
    centred = lambda t: t - t.mean(dim=(2, 3), keepdim=True)  # noqa: E731
    assert torch.allclose(centred(changed), centred(original), atol=1e-5)
    assert not random_demo.layer("layer4")._forward_hooks  # removed on exit
    with pytest.raises(ValueError, match="max"):
        with spliced(random_demo, "layer4", sae, "max"):
            pass


def test_identity_splice_keeps_the_accuracy(random_demo, small_digits):
    _, dataset = small_digits
    subset = torch.utils.data.Subset(dataset, range(64))
    for pooling in ("mean", "patch"):
        result = spliced_accuracy(
            random_demo, subset, "layer4", Identity(8), pooling, batch_size=32
        )
        assert result["accuracy"] == pytest.approx(result["spliced_accuracy"])


# --------------------------------------------------------------------------- Unit interface


def hooked_mean(model, images, layer) -> torch.Tensor:
    """Spatial mean of ``layer``'s output ``[B, C]`` from a plain forward hook."""
    return layer_output(model, images, layer).double().mean(dim=(2, 3))


@pytest.fixture(scope="module")
def images(small_digits):
    _, dataset = small_digits
    return torch.stack([dataset[i][0] for i in range(6)])


def test_unit_kinds_are_registered_once_with_their_labels():
    assert list(UNIT_KINDS) == ["neurons", "pure", "sae", "contrastive"]
    assert UNIT_KINDS["sae"] is SAEFeatures and UNIT_KINDS["pure"] is VirtualNeuronUnits
    labels = {
        ("neurons", None): "neurons",
        ("pure", None): "pure",
        ("pure", "activation"): "activation",
        ("sae", "topk"): "sae:topk",
        ("contrastive", "ncl"): "contrastive:ncl",
    }
    for (kind, variant), label in labels.items():
        assert kind_label(kind, variant) == label
        assert parse_kind_label(label) == (kind, variant)
    assert parse_kind_label("sae:l1") == ("sae", "l1")
    assert parse_kind_label("neurons") == ("neurons", None)
    assert parse_kind_label("judge") == ("pure", "judge")  # a clustering method
    with pytest.raises(ValueError, match="unknown unit kind 'channels'"):
        kind_label("channels")


def test_neuron_units_score_the_relu_of_the_spatial_mean(random_demo, images, store):
    neurons = Neurons(random_demo, "layer4", channels=[5, 2])
    want = hooked_mean(random_demo, images, "layer4").clamp(min=0)
    assert neurons.indices() == [5, 2] and len(neurons) == 2
    torch.testing.assert_close(
        neurons.scores(images).double(), want[:, [5, 2]], atol=1e-6, rtol=1e-5
    )
    unit = neurons.unit(2)
    assert (unit.kind, unit.layer, unit.index, unit.label) == ("neurons", "layer4", 2, "neurons")
    torch.testing.assert_close(unit.scores(images).double(), want[:, 2], atol=1e-6, rtol=1e-5)
    with pytest.raises(IndexError):
        neurons.unit(3)
    # Class means of a selection are the rows of every channel's class means.
    store, tensors = store
    x, labels = tensors["activations"].numpy(), tensors["labels"].numpy()
    expected = np.stack([np.maximum(x[labels == c], 0).mean(0) for c in range(10)], axis=1)
    assert np.allclose(neurons.class_means(store, 10), expected[[5, 2]], atol=1e-6)


def test_neuron_unit_heatmap_is_its_position_heatmap(random_demo, images):
    from monoscope.crops import position_heatmaps

    unit = Neurons(random_demo, "layer4").unit(3)
    positions = torch.tensor([0, 9, 17, 63, 30, 5])
    want = position_heatmaps(random_demo, images, "layer4", torch.full((6,), 3), positions)
    assert torch.equal(unit.heatmap(images, positions), want)
    with pytest.raises(ValueError, match="spatial shape"):
        unit.family.heatmaps(images, torch.full((6,), 3), positions, (4, 4))
    with pytest.raises(ValueError, match="position"):
        unit.heatmap(images)


def test_virtual_neuron_units_gate_the_neuron_score_by_the_cluster(random_demo, images):
    torch.manual_seed(3)
    virtual = VirtualNeurons(
        random_demo, "layer3", "layer4", torch.rand(3, 2, 32), channels=torch.tensor([6, 1, 4])
    )
    units = VirtualNeuronUnits(virtual)
    assert (units.kind, units.label, units.layer, len(units)) == ("pure", "pure", "layer4", 6)
    nearest = virtual.assignments(images)  # [B, 3]
    mean = hooked_mean(random_demo, images, "layer4").clamp(min=0)
    scores = units.scores(images)
    for row, channel in enumerate([6, 1, 4]):
        for m in range(2):
            want = mean[:, channel] * (nearest[:, row] == m)
            torch.testing.assert_close(scores[:, row * 2 + m].double(), want, atol=1e-6, rtol=1e-5)
            unit = units.unit(row * 2 + m)
            assert torch.equal(unit.scores(images), scores[:, row * 2 + m])
    # The heatmap of (row 2, cluster 1) is channel 4's.
    positions = torch.arange(6) * 7
    want = Neurons(random_demo, "layer4").unit(4).heatmap(images, positions)
    assert torch.equal(units.unit(5).heatmap(images, positions), want)
    assert VirtualNeuronUnits(virtual, "activation").label == "activation"


def test_sae_feature_units_score_codes_and_start_from_their_direction(random_demo, images):
    from monoscope.crops import position_heatmaps

    torch.manual_seed(4)
    sae = LinearCodes(torch.randn(5, 8))
    features = SAEFeatures(random_demo, "layer4", sae, "toy")
    assert (features.kind, features.label, len(features)) == ("sae", "sae:toy", 5)
    mean = hooked_mean(random_demo, images, "layer4").numpy()
    codes = np.maximum(mean @ sae.encoder.double().numpy().T, 0)
    np.testing.assert_allclose(features.scores(images).numpy(), codes, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(features.unit(3).scores(images).numpy(), codes[:, 3], atol=1e-5)
    # Independently: LRP is linear in the starting relevance, and the feature starts
    # w_c a_c(q) / |q| at every (c, q), so its heatmap is the w_c / |q|-weighted sum of
    # the single-position heatmaps (checked on one image, two channels of a direction).
    direction = torch.zeros(5, 8)
    direction[2, 1], direction[2, 6] = 0.7, -1.3
    features = SAEFeatures(random_demo, "layer4", LinearCodes(direction))
    image = images[:1]
    heat = features.unit(2).heatmap(image)
    channels = torch.tensor([1, 6]).repeat_interleave(64)
    positions = torch.arange(64).repeat(2)
    singles = position_heatmaps(
        random_demo, image.expand(128, -1, -1, -1), "layer4", channels, positions
    )
    weights = direction[2, channels] / 64
    want = (weights[:, None, None] * singles).sum(dim=0, keepdim=True)
    torch.testing.assert_close(heat, want, atol=1e-6 * float(want.abs().max()) + 1e-9, rtol=1e-4)


def test_contrastive_dimension_units_against_numpy():
    from monoscope.contrastive.models import ContrastiveModel

    torch.manual_seed(5)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 6, bias=False))
    projector = torch.nn.Sequential(torch.nn.Linear(6, 4, bias=False))
    model = ContrastiveModel(
        backbone, projector, "none", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), feature_dim=6
    )
    dims = ContrastiveDimensions(model, "embed", "toy")
    assert (dims.kind, dims.label, dims.indices()) == (
        "contrastive",
        "contrastive:toy",
        [0, 1, 2, 3],
    )
    assert len(ContrastiveDimensions(model, "backbone")) == 6
    images = torch.rand(3, 3, 4, 4)
    normalised = (
        (
            (images - torch.tensor([0.5, 0.4, 0.3])[:, None, None])
            / torch.tensor([0.2, 0.3, 0.4])[:, None, None]
        )
        .double()
        .numpy()
        .reshape(3, -1)
    )
    weight = (
        (projector[0].weight.double() @ backbone[1].weight.double()).detach().numpy()
    )  # [4, 48]
    np.testing.assert_allclose(dims.scores(images).numpy(), normalised @ weight.T, atol=1e-5)
    # Linear model: gradient times input of dimension d is w_d * x, summed over colours.
    heat = dims.unit(2).heatmap(images).numpy()
    want = (weight[2] * normalised).reshape(3, 3, 4, 4).sum(axis=1)
    np.testing.assert_allclose(heat, want, atol=1e-5)
    with pytest.raises(ValueError, match="embed"):
        ContrastiveDimensions(model, "layer4")
