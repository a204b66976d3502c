"""Cutting the sub-network between two layers out of a model."""

import pytest
import timm
import torch
import torchvision

from monoscope.models.demo import DemoCNN
from monoscope.models.subnet import check_subnetwork, extract_subnetwork


@pytest.mark.parametrize(
    ("build", "lower", "upper", "size"),
    [
        (lambda: torchvision.models.resnet18(), "layer3", "layer4", 64),
        (lambda: timm.create_model("resnet18"), "layer3", "layer4", 64),
        (lambda: timm.create_model("resnet50"), "layer3", "layer4", 64),
        (lambda: DemoCNN(), "layer3", "layer4", 32),
        (lambda: torchvision.models.resnet18(), "layer3.0", "layer3.1", 64),
        (
            lambda: torchvision.models.googlenet(init_weights=True, aux_logits=False),
            "inception4a",
            "inception5b",
            96,
        ),
    ],
)
def test_subnetwork_reproduces_the_upper_output(build, lower, upper, size):
    torch.manual_seed(0)
    net = build().eval()
    sub = extract_subnetwork(net, lower, upper)
    assert check_subnetwork(net, sub, lower, upper, torch.randn(2, 3, size, size)) == 0.0
    # It shares the model's parameters rather than copying them.
    shared = {id(p) for p in net.parameters()}
    assert all(id(p) in shared for p in sub.parameters())


def test_prefix_stops_at_the_layer():
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    prefix = extract_subnetwork(net, None, "layer3")
    captured = {}
    net.layer3.register_forward_hook(lambda m, i, o: captured.update(out=o))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        net(images)
        assert torch.equal(prefix(images), captured["out"])
    assert "layer4" not in prefix.code and "fc" not in prefix.code


def test_connection_around_the_lower_layer_is_refused():
    net = torchvision.models.resnet18().eval()
    # layer3.0's output adds its (downsampled) input, which does not come from conv1.
    with pytest.raises(ValueError, match="does not come from"):
        extract_subnetwork(net, "layer3.0.conv1", "layer3.1")
    with pytest.raises(ValueError, match="nested"):
        extract_subnetwork(net, "layer3.0.conv1", "layer3.0")


def test_unknown_or_reversed_layers_are_named():
    net = DemoCNN().eval()
    with pytest.raises(AttributeError, match="layer9"):
        extract_subnetwork(net, "layer9", "layer4")
    with pytest.raises(ValueError, match="does not depend on"):
        extract_subnetwork(net, "layer4", "layer3")
