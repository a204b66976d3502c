"""Tests of monoscope.models: the registry, weight loading, the demo CNN and its training."""

from __future__ import annotations

import re
import socket

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import monoscope  # noqa: F401  (applies the torchvision shim before torchvision is imported)
from monoscope.data import DataConfig, ImageDataset, make_sample_table
from monoscope.models import ModelConfig, load_model, registry
from monoscope.models.demo import DemoCNN
from monoscope.models.train import TrainConfig, make_label_map, save_demo_model, train_demo_cnn

LABEL_GROUPS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


def _random_torchvision_resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(1234)
    return torchvision.models.resnet18(weights=None)


def _random_timm_resnet18() -> nn.Module:
    import timm

    torch.manual_seed(4321)
    return timm.create_model("resnet18", pretrained=False)


def _assert_same_state(net: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = net.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    for name, parameter in net.named_parameters():
        assert torch.equal(parameter, expected[name]), name


def _assert_loaded(model: registry.SubjectModel) -> None:
    """Eval mode everywhere and frozen parameters, as load_model promises."""
    assert not model.net.training
    assert not any(module.training for module in model.net.modules())
    assert all(not parameter.requires_grad for parameter in model.net.parameters())


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny networks run fastest on one thread; more oversubscribe a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly (and record) any attempt to resolve a host name or connect."""
    attempts = []

    def refuse_getaddrinfo(host, *args, **kwargs):
        attempts.append(("getaddrinfo", host))
        raise OSError(f"network access attempted in a test: {host}")

    def refuse_connect(self, address):
        attempts.append(("connect", address))
        raise OSError(f"network access attempted in a test: {address}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    return attempts


# --------------------------------------------------------------------------- config


def test_model_config_rejects_unknown_family():
    with pytest.raises(ValueError, match="unknown model family 'keras'") as excinfo:
        ModelConfig(name="keras:resnet50", weights="random")
    for family in ("demo_cnn", "timm", "torchvision"):
        assert family in str(excinfo.value)


def test_model_config_rejects_empty_weights():
    with pytest.raises(ValueError, match="model.weights"):
        ModelConfig(name="torchvision:resnet18", weights="")


def test_load_model_needs_an_architecture():
    with pytest.raises(ValueError, match="needs an architecture"):
        load_model(ModelConfig(name="torchvision", weights="random"))


# --------------------------------------------------------------------------- torchvision


def test_torchvision_random_weights():
    model = load_model(ModelConfig(name="torchvision:resnet18", weights="random"))
    _assert_loaded(model)
    assert model.name == "torchvision:resnet18"
    assert model.mean == registry.IMAGENET_MEAN and model.std == registry.IMAGENET_STD
    assert model.label_map is None
    assert model.net.fc.out_features == 1000
    with torch.inference_mode():
        assert model.net(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)


def test_torchvision_random_weights_num_classes():
    model = load_model(ModelConfig(name="torchvision:resnet18", weights="random", num_classes=7))
    assert model.net.fc.out_features == 7


def test_torchvision_weights_from_safetensors(tmp_path):
    state = {
        key: value.clone() for key, value in _random_torchvision_resnet18().state_dict().items()
    }
    path = tmp_path / "resnet18.safetensors"
    save_file(state, str(path))
    model = load_model(ModelConfig(name="torchvision:resnet18", weights=str(path)))
    _assert_loaded(model)
    _assert_same_state(model.net, state)


def test_torchvision_weights_from_torch_checkpoint(tmp_path):
    state = {
        key: value.clone() for key, value in _random_torchvision_resnet18().state_dict().items()
    }
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    model = load_model(ModelConfig(name="torchvision:resnet18", weights=str(path)))
    _assert_loaded(model)
    _assert_same_state(model.net, state)
    # A checkpoint that wraps the state dict is unwrapped.
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    assert registry.read_state_dict(wrapped).keys() == state.keys()


def test_torchvision_weights_with_other_classifier_size(tmp_path):
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=5)
    path = tmp_path / "resnet18_5.safetensors"
    save_file({key: value.contiguous() for key, value in net.state_dict().items()}, str(path))
    model = load_model(ModelConfig(name="torchvision:resnet18", weights=str(path)))
    assert model.net.fc.out_features == 5
    _assert_same_state(model.net, net.state_dict())


def test_torchvision_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "wrong.safetensors"
    save_file({"not_a_layer.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="do not fit"):
        load_model(ModelConfig(name="torchvision:resnet18", weights=str(path)))


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet18", "demo_cnn"])
def test_missing_weight_file_names_the_path(tmp_path, name):
    path = tmp_path / "absent" / "weights.safetensors"
    with pytest.raises(registry.MissingWeightsError, match=re.escape(str(path))):
        load_model(ModelConfig(name=name, weights=str(path)))
    assert issubclass(registry.MissingWeightsError, FileNotFoundError)


def test_torchvision_cache_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    with pytest.raises(registry.MissingWeightsError, match=re.escape(str(expected))):
        load_model(ModelConfig(name="torchvision:resnet18", weights="cache"))
    assert list(tmp_path.rglob("*.pth")) == []  # nothing was downloaded or created


def test_torchvision_cache_present(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = _random_torchvision_resnet18()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(net.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    model = load_model(ModelConfig(name="torchvision:resnet18", weights="cache"))
    _assert_same_state(model.net, net.state_dict())


def test_torchvision_googlenet_cache_transforms_input_as_torchvision_does(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, init_weights=True)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    url = torchvision.models.GoogLeNet_Weights.DEFAULT.url
    torch.save(net.state_dict(), checkpoints / url.rsplit("/", 1)[1])
    model = load_model(ModelConfig(name="torchvision:googlenet", weights="cache"))
    _assert_same_state(model.net, net.state_dict())
    assert model.net.transform_input  # as torchvision.models.googlenet(weights=...) sets it


# --------------------------------------------------------------------------- timm


def test_timm_random_weights(no_network):
    model = load_model(ModelConfig(name="timm:resnet18", weights="random", num_classes=3))
    _assert_loaded(model)
    assert model.net.num_classes == 3
    assert model.mean == pytest.approx(registry.IMAGENET_MEAN)
    assert model.std == pytest.approx(registry.IMAGENET_STD)
    with torch.inference_mode():
        assert model.net(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert no_network == []


def test_timm_weights_from_safetensors(tmp_path, no_network):
    state = {key: value.clone() for key, value in _random_timm_resnet18().state_dict().items()}
    path = tmp_path / "timm_resnet18.safetensors"
    save_file(state, str(path))
    model = load_model(ModelConfig(name="timm:resnet18", weights=str(path)))
    _assert_loaded(model)
    _assert_same_state(model.net, state)
    assert no_network == []


def test_timm_cache_missing(tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants as hf_constants

    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # The library sets HF_HUB_OFFLINE itself with os.environ.setdefault; setting it here
    # first keeps that change from outliving the test.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these variables once, at import (which already happened),
    # so point its module constants at the empty cache and offline mode as well.
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(registry.MissingWeightsError) as excinfo:
        load_model(ModelConfig(name="timm:resnet18", weights="cache"))
    message = str(excinfo.value)
    assert "resnet18" in message
    assert str(hf_home / "hub") in message
    assert no_network == []


# --------------------------------------------------------------------------- SubjectModel


def test_normalize_matches_hand_computation():
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    model = registry.SubjectModel("identity", nn.Identity(), mean, std)
    images = torch.rand(2, 3, 4, 5)
    expected = torch.empty_like(images)
    for channel in range(3):
        expected[:, channel] = (images[:, channel] - mean[channel]) / std[channel]
    result = model.normalize(images)
    assert result.shape == images.shape
    assert result.dtype == images.dtype
    assert torch.allclose(result, expected, atol=1e-6)
    assert torch.allclose(model.normalize(images.double()), expected.double(), atol=1e-6)


def test_targets_applies_label_map():
    model = registry.SubjectModel(
        "m", nn.Identity(), (0.0,), (1.0,), label_map=torch.tensor([0, 0, 1, 1, 2])
    )
    labels = torch.tensor([4, 0, 3, 2, 1])
    assert model.targets(labels).tolist() == [2, 0, 1, 1, 0]
    plain = registry.SubjectModel("m", nn.Identity(), (0.0,), (1.0,))
    assert torch.equal(plain.targets(labels), labels)


def test_get_layer():
    net = DemoCNN()
    assert registry.get_layer(net, "layer4") is net.layer4
    assert registry.get_layer(net, "layer4.0") is net.layer4[0]
    assert registry.get_layer(net, "layer4.0.conv1") is net.layer4[0].conv1
    with pytest.raises(KeyError) as excinfo:
        registry.get_layer(net, "layer9")
    message = excinfo.value.args[0]
    assert "layer9" in message and "DemoCNN" in message
    for child in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"):
        assert f"'{child}'" in message
    model = load_model(ModelConfig(name="demo_cnn", weights="random"))
    assert model.layer("layer3") is model.net.layer3
    with pytest.raises(KeyError, match="top-level modules"):
        model.layer("layer4.7")


def test_layer_channels_on_demo_cnn():
    model = load_model(ModelConfig(name="demo_cnn", weights="random"))
    channels = registry.layer_channels(model, ["layer3", "layer4"], image_size=32)
    assert channels == {"layer3": 32, "layer4": 8}
    assert registry.layer_channels(model, ["fc"], image_size=16) == {"fc": 10}
    # The hooks are removed afterwards.
    assert not model.net.layer3._forward_hooks and not model.net.layer4._forward_hooks


def test_demo_cnn_forward_and_blocks():
    from torchvision.models.resnet import BasicBlock

    net = DemoCNN(widths=(8, 16, 16, 4), num_classes=5).eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.inference_mode():
        assert net(images).shape == (3, 5)
        assert net.features(images).shape == (3, 4)
        assert net(torch.rand(2, 3, 20, 20)).shape == (2, 5)
    blocks = [module for module in net.modules() if isinstance(module, BasicBlock)]
    assert len(blocks) == 4
    for name in ("layer1", "layer2", "layer3", "layer4"):
        assert isinstance(getattr(net, name)[0], BasicBlock)
    with pytest.raises(ValueError, match="four stage widths"):
        DemoCNN(widths=(8, 16, 16))


def test_demo_cnn_random_and_cache():
    model = load_model(ModelConfig(name="demo_cnn", weights="random", num_classes=4))
    assert isinstance(model.net, DemoCNN)
    assert model.net.fc.out_features == 4
    assert model.mean == registry.DIGITS_MEAN and model.std == registry.DIGITS_STD
    _assert_loaded(model)
    with pytest.raises(ValueError, match="no cache"):
        load_model(ModelConfig(name="demo_cnn", weights="cache"))


def test_demo_cnn_takes_a_plain_state_dict_and_infers_its_shape(tmp_path):
    """A ``.pt`` state dict (read with weights_only) loads, widths and classes from shapes."""
    torch.manual_seed(0)
    trained = DemoCNN(widths=(4, 8, 8, 6), num_classes=3).eval()
    path = tmp_path / "demo.pt"
    torch.save({"state_dict": trained.state_dict()}, path)
    model = load_model(ModelConfig(name="demo_cnn", weights=str(path)))
    assert model.net.widths == (4, 8, 8, 6) and model.net.fc.out_features == 3
    images = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(model.net(images), trained(images), rtol=0, atol=0)
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match=r"foreign.pt is not a demo_cnn state dict: it lacks"):
        load_model(ModelConfig(name="demo_cnn", weights=str(foreign)))


# --------------------------------------------------------------------------- training


def test_make_label_map():
    assert make_label_map([], 4).tolist() == [0, 1, 2, 3]
    assert make_label_map([[2, 0], [1, 3]], 4).tolist() == [0, 1, 0, 1]
    assert make_label_map(LABEL_GROUPS, 10).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_make_label_map_errors():
    with pytest.raises(ValueError, match="label 1 appears in more than one"):
        make_label_map([[0, 1], [1, 2]], 3)
    with pytest.raises(ValueError, match=re.escape("labels [2, 3] are in none")):
        make_label_map([[0, 1]], 4)
    with pytest.raises(ValueError, match=re.escape("label 5 in label_groups is not in 0..3")):
        make_label_map([[0, 1], [2, 3, 5]], 4)
    with pytest.raises(ValueError, match="label -1 in label_groups"):
        make_label_map([[0, 1], [-1]], 2)


@pytest.fixture(scope="module")
def digits_splits():
    config = DataConfig(max_samples=200)
    table, _ = make_sample_table(config)
    return ImageDataset(config, table, "train"), ImageDataset(config, table, "test")


def _train(splits, seed: int = 0):
    train_set, test_set = splits
    config = TrainConfig(widths=(8, 16, 16, 4), label_groups=LABEL_GROUPS, epochs=1, seed=seed)
    return train_demo_cnn(train_set, test_set, config, num_labels=10)


@pytest.fixture(scope="module")
def trained(digits_splits):
    return _train(digits_splits, seed=0)


def test_train_demo_cnn_metrics(trained):
    model, metrics = trained
    assert isinstance(model.net, DemoCNN)
    assert not model.net.training
    assert model.net.fc.out_features == 5
    assert metrics["num_classes"] == 5
    assert len(metrics["train_loss"]) == 1
    assert 0.0 <= metrics["train_accuracy"] <= 1.0 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["label_groups"] == [list(group) for group in LABEL_GROUPS]
    assert model.metadata["widths"] == [8, 16, 16, 4]
    assert model.metadata["label_map"] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_demo_model_save_and_load(tmp_path, trained, digits_splits):
    model, _ = trained
    path = tmp_path / "demo.safetensors"
    save_demo_model(model, path)
    loaded = load_model(ModelConfig(name="demo_cnn", weights=str(path)))
    _assert_loaded(loaded)
    assert isinstance(loaded.net, DemoCNN)
    assert loaded.net.widths == (8, 16, 16, 4)
    assert loaded.mean == pytest.approx(registry.DIGITS_MEAN)
    assert loaded.std == pytest.approx(registry.DIGITS_STD)
    assert torch.equal(loaded.label_map, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]))
    assert loaded.metadata["num_classes"] == 5
    _assert_same_state(loaded.net, model.net.state_dict())
    test_set = digits_splits[1]
    images = torch.stack([test_set[i][0] for i in range(8)])
    labels = torch.tensor([test_set[i][1] for i in range(8)])
    with torch.inference_mode():
        expected = model.net(model.normalize(images))
        actual = loaded.net(loaded.normalize(images))
    assert torch.equal(actual, expected)
    assert torch.equal(loaded.targets(labels), model.targets(labels))


def test_training_is_deterministic(trained, digits_splits):
    model, metrics = trained
    again, metrics_again = _train(digits_splits, seed=0)
    _assert_same_state(again.net, model.net.state_dict())
    assert metrics_again["train_loss"] == metrics["train_loss"]
    other, _ = _train(digits_splits, seed=1)
    assert not torch.equal(other.net.conv1.weight, model.net.conv1.weight)
