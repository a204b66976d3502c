"""SAE features and virtual neurons as units: references, class means, splicing."""

import numpy as np
import pytest
import torch

from monoscope.activations import (
    ActivationConfig,
    ActivationStore,
    collect_activations,
    save_activation_shard,
)
from monoscope.pure.virtual_neurons import VirtualNeurons
from monoscope.units import (
    neuron_class_means,
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
