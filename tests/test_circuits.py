"""Circuits against an independent autograd computation and the per-neuron CRP way."""

import pytest
import timm
import torch
import torchvision

from monoscope.data import InMemoryDataset
from monoscope.models import SubjectModel
from monoscope.models.registry import IMAGENET_MEAN, IMAGENET_STD
from monoscope.pure.circuits import (
    CircuitConfig,
    Circuits,
    circuit_target,
    circuits_per_neuron_crp,
    compute_circuits,
    load_circuits,
    merge_circuits,
    save_circuits,
    spatial_mean_relu,
)


def subject(net) -> SubjectModel:
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return SubjectModel("test", net, IMAGENET_MEAN, IMAGENET_STD)


def random_dataset(count: int, size: int, seed: int = 0) -> InMemoryDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, size, size, generator=generator)
    return InMemoryDataset(
        images, torch.zeros(count, dtype=torch.int64), torch.arange(100, 100 + count)
    )


def independent_circuit(model, image, channel, lower, upper):
    """The formula for one (neuron, sample) pair with plain autograd on the whole model."""
    captured = {}

    def keep(name):
        return lambda module, inputs, output: captured.__setitem__(name, output)

    handles = [model.layer(name).register_forward_hook(keep(name)) for name in (lower, upper)]
    inputs = model.normalize(image[None]).requires_grad_(True)
    with torch.enable_grad():
        model.net(inputs)
        a_lower, a_upper = captured[lower], captured[upper]
        a_j = a_upper[0, channel]
        target = (a_j.detach().clamp(min=0) * a_j).sum()
        (gradient,) = torch.autograd.grad(target, a_lower)
    for handle in handles:
        handle.remove()
    contribution = (a_lower * gradient)[0].sum(dim=(1, 2)).detach()
    circuit = contribution / (contribution.abs().sum() + 1e-10)
    baseline = a_upper[0].detach().clamp(min=0).mean(dim=(1, 2))
    return circuit, baseline


def test_circuit_target_by_hand():
    output = torch.tensor(
        [[[[-1.0, 2.0], [3.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]]], requires_grad=True
    )
    target = circuit_target(output, torch.tensor([0]))
    assert target.item() == pytest.approx(13.0)  # 0 * -1 + 2 * 2 + 3 * 3 + 0 * 0
    (gradient,) = torch.autograd.grad(target.sum(), output)
    assert gradient[0, 0].tolist() == [[0.0, 2.0], [3.0, 0.0]]  # stopgrad(relu(a))
    assert gradient[0, 1].abs().sum() == 0
    assert spatial_mean_relu(output.detach()).tolist() == [[1.25, 5.0]]


@pytest.fixture(scope="module")
def resnet18_case():
    torch.manual_seed(0)
    model = subject(torchvision.models.resnet18())
    dataset = random_dataset(12, 64)
    channels = [0, 5, 100, 257, 400, 511]
    generator = torch.Generator().manual_seed(1)
    # Overlapping references: samples are shared between neurons, as in real data.
    sample_ids = torch.stack([torch.randperm(12, generator=generator)[:4] + 100 for _ in channels])
    return model, dataset, channels, sample_ids


def test_resnet18_circuits_equal_independent_autograd_for_every_row(resnet18_case):
    model, dataset, channels, sample_ids = resnet18_case
    config = CircuitConfig(batch_rows=5, sample_batch=3)  # several chunks and row batches
    result = compute_circuits(model, dataset, sample_ids, channels, "layer3", "layer4", config)
    assert result.circuits.shape == (6, 4, 256)
    assert result.activations.shape == (6, 4, 512)
    for row, channel in enumerate(channels):
        for slot, sample_id in enumerate(sample_ids[row].tolist()):
            image = dataset[int(dataset.position_of([sample_id])[0])][0]
            circuit, baseline = independent_circuit(model, image, channel, "layer3", "layer4")
            torch.testing.assert_close(result.circuits[row, slot], circuit, rtol=0, atol=1e-5)
            torch.testing.assert_close(result.activations[row, slot], baseline, rtol=0, atol=1e-5)
    assert torch.allclose(result.circuits.abs().sum(dim=2), torch.ones(6, 4), atol=1e-5)


def test_batching_does_not_change_circuits(resnet18_case):
    model, dataset, channels, sample_ids = resnet18_case
    small = compute_circuits(
        model,
        dataset,
        sample_ids,
        channels,
        "layer3",
        "layer4",
        CircuitConfig(batch_rows=1, sample_batch=1),
    )
    large = compute_circuits(
        model, dataset, sample_ids, channels, "layer3", "layer4", CircuitConfig(batch_rows=999)
    )
    torch.testing.assert_close(small.circuits, large.circuits, rtol=0, atol=1e-6)
    assert torch.equal(small.sample_ids, sample_ids)


@pytest.mark.parametrize(
    ("build", "lower", "upper", "size", "channels"),
    [
        (lambda: timm.create_model("resnet18"), "layer3", "layer4", 64, [3, 300]),
        (
            lambda: torchvision.models.googlenet(init_weights=True, aux_logits=False),
            "inception4a",
            "inception5b",
            96,
            [7, 1000],
        ),
    ],
)
def test_timm_resnet_and_googlenet_circuits(build, lower, upper, size, channels):
    torch.manual_seed(0)
    model = subject(build())
    dataset = random_dataset(4, size)
    sample_ids = torch.tensor([[100, 101], [102, 100]])
    result = compute_circuits(model, dataset, sample_ids, channels, lower, upper, CircuitConfig())
    for row, channel in enumerate(channels):
        for slot, sample_id in enumerate(sample_ids[row].tolist()):
            circuit, _ = independent_circuit(
                model, dataset[sample_id - 100][0], channel, lower, upper
            )
            torch.testing.assert_close(result.circuits[row, slot], circuit, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def demo_case(random_demo, small_digits):
    from monoscope.references import ReferenceConfig, collect_references

    _, dataset = small_digits
    top = collect_references(random_demo, dataset, ["layer4"], ReferenceConfig(n=10))[
        ("actmax", "layer4")
    ]
    return random_demo, dataset, top.sample_ids


def test_gradient_circuits_equal_per_neuron_cond_attribution(demo_case):
    model, dataset, sample_ids = demo_case
    channels = range(len(sample_ids))
    batched = compute_circuits(
        model, dataset, sample_ids, channels, "layer3", "layer4", CircuitConfig()
    )
    simple = circuits_per_neuron_crp(model, dataset, sample_ids, channels, "layer3", "layer4")
    assert (batched.circuits - simple).abs().max() <= 1e-5


def test_lrp_circuits_equal_per_neuron_cond_attribution(demo_case):
    model, dataset, sample_ids = demo_case
    channels = range(len(sample_ids))
    config = CircuitConfig(method="lrp")
    batched = compute_circuits(model, dataset, sample_ids, channels, "layer3", "layer4", config)
    simple = circuits_per_neuron_crp(
        model, dataset, sample_ids, channels, "layer3", "layer4", "lrp"
    )
    # CircuitComputer canonizes the whole model for LRP, as zennit-crp does.
    assert (batched.circuits - simple).abs().max() <= 1e-5
    assert not torch.allclose(
        batched.circuits,
        compute_circuits(
            model, dataset, sample_ids, channels, "layer3", "layer4", CircuitConfig()
        ).circuits,
        atol=1e-3,
    ), "lrp and gradient circuits should differ"


def test_merge_and_files(tmp_path):
    def part(channels):
        count = len(channels)
        return Circuits(
            torch.tensor(channels),
            torch.arange(count * 2).view(count, 2),
            torch.rand(count, 2, 3),
            torch.rand(count, 2, 4),
        )

    second, first = part([2, 3]), part([0, 1])
    merged = merge_circuits([second, first])
    assert merged.channels.tolist() == [0, 1, 2, 3]
    assert torch.equal(merged.circuits[2:], second.circuits)
    with pytest.raises(ValueError, match="exactly once"):
        merge_circuits([first, part([3])])
    save_circuits(tmp_path / "c.safetensors", merged, {"method": "gradient"})
    loaded, metadata = load_circuits(tmp_path / "c.safetensors")
    assert metadata["method"] == "gradient"
    assert torch.equal(loaded.activations, merged.activations)


def test_config_validation():
    with pytest.raises(ValueError, match="circuits.method"):
        CircuitConfig(method="saliency")
