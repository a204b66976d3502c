"""Choosing the neurons to analyse (``neurons``) and input normalisations (``model.normalize``)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from monoscope.models.registry import (
    NORMALIZATIONS,
    InputNormalization,
    ModelConfig,
    SubjectModel,
    parse_normalization,
)
from monoscope.references import TopReferences, channel_shard, row_of_channel, select_channels


def _references(scores):
    scores = torch.tensor(scores, dtype=torch.float32)
    channels, n = scores.shape
    return TopReferences(
        sample_ids=torch.arange(channels * n).reshape(channels, n),
        scores=scores,
        positions=torch.zeros(channels, n, dtype=torch.int64),
        spatial_shape=(2, 2),
    )


SCORES = [[1.0, 0.0], [5.0, 1.0], [2.0, 2.0], [9.0, -9.0], [3.0, 1.0]]


def test_select_channels_all_list_range():
    top = _references(SCORES)
    assert select_channels(top, "all").tolist() == [0, 1, 2, 3, 4]
    assert select_channels(top, [4, 1, 1]).tolist() == [1, 4]
    assert select_channels(top, {"start": 1, "stop": 3}).tolist() == [1, 2]
    with pytest.raises(ValueError, match="not channels 0..4"):
        select_channels(top, [5])
    with pytest.raises(ValueError, match="range"):
        select_channels(top, {"start": 3, "stop": 9})
    with pytest.raises(ValueError, match="expected all"):
        select_channels(top, "some")


def test_select_channels_top_by_scores_hand_worked():
    top = _references(SCORES)
    # mean scores: 0.5, 3, 2, 0, 2 -> best two: 1 (3.0), then 2 and 4 tie at 2.0 -> 2.
    assert select_channels(top, {"top": 2, "by": "mean_score"}).tolist() == [1, 2]
    # max scores: 1, 5, 2, 9, 3 -> best three: 3, 1, 4.
    assert select_channels(top, {"top": 3, "by": "max_score"}).tolist() == [1, 3, 4]
    assert select_channels(top, {"top": 5}).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="neurons.by"):
        select_channels(top, {"top": 2, "by": "variance"})
    with pytest.raises(ValueError, match="neurons.top"):
        select_channels(top, {"top": 6})


def test_channel_shard_splits_the_selection(tmp_path):
    from monoscope.references import job_channel_shard, save_references

    top = _references(SCORES)
    path = tmp_path / "references.safetensors"
    save_references(path, {("actmax", "layer4"): top}, metadata={})
    selection = [0, 2, 3, 4]
    parts = [
        channel_shard(path, "actmax", "layer4", f"{i}-of-3", selection).channels.tolist()
        for i in (1, 2, 3)
    ]
    assert parts == [[0, 2], [3], [4]]
    assert channel_shard(path, "actmax", "layer4", "1-of-1").channels.tolist() == [0, 1, 2, 3, 4]
    job = SimpleNamespace(
        input=SimpleNamespace(references=path),
        params=SimpleNamespace(reference_mode="actmax", upper_layer="layer4", neurons=selection),
        wildcards=SimpleNamespace(scatteritem="1-of-3"),
    )
    part = job_channel_shard(job)
    assert part.channels.tolist() == [0, 2]
    assert part.metadata() == {"shard": 1, "shards": 3, "selected": selection}


def test_row_of_channel():
    channels = torch.tensor([3, 7, 9])
    assert row_of_channel(channels, 7) == 1
    with pytest.raises(ValueError, match="figures.neurons: neuron 4 is not among"):
        row_of_channel(channels, 4)


def test_normalizations_against_hand_computation():
    images = torch.rand(2, 3, 4, 5)
    none = SubjectModel("m", nn.Identity(), (0.0,) * 3, (1.0,) * 3)
    none.set_normalization(NORMALIZATIONS["none"])
    assert torch.equal(none.normalize(images), images)

    caffe = SubjectModel("m", nn.Identity(), (0.0,) * 3, (1.0,) * 3)
    caffe.set_normalization(NORMALIZATIONS["caffe_bgr"])
    expected = torch.stack(
        [
            images[:, 2] * 255 - 103.939,  # B
            images[:, 1] * 255 - 116.779,  # G
            images[:, 0] * 255 - 123.68,  # R
        ],
        dim=1,
    )
    assert torch.allclose(caffe.normalize(images), expected, atol=1e-4)

    explicit = parse_normalization({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]})
    assert explicit == InputNormalization((0.5,) * 3, (0.25, 0.5, 1.0))
    assert parse_normalization("auto") is None
    with pytest.raises(ValueError, match="model.normalize: unknown normalisation 'caffe'"):
        parse_normalization("caffe")
    with pytest.raises(ValueError, match="unknown keys"):
        parse_normalization({"mean": [0, 0, 0], "std": [1, 1, 1], "gamma": 2})
    with pytest.raises(ValueError, match="model.normalize"):
        ModelConfig("torchvision:resnet18", "random", normalize="bgr")


def test_explicit_normalize_overrides_family_default():
    from monoscope.models import load_model

    model = load_model(ModelConfig("torchvision:resnet18", "random", normalize="none"))
    assert model.mean == (0.0, 0.0, 0.0) and model.std == (1.0, 1.0, 1.0)
    default = load_model(ModelConfig("torchvision:resnet18", "random"))
    assert default.normalization == NORMALIZATIONS["imagenet"]


def test_weight_file_record_sets_normalization_and_head(tmp_path):
    """A file without a classifier (head: none) builds a headless model; its record's
    normalisation applies unless the config overrides it."""
    import torchvision

    from monoscope.io import save_tensors
    from monoscope.models import load_model

    net = torchvision.models.vgg11()
    state = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    path = tmp_path / "vgg11_features.safetensors"
    save_tensors(path, state, {"head": "none", "normalize": "caffe_bgr"})
    model = load_model(ModelConfig("torchvision:vgg11", str(path)))
    assert not model.has_head
    assert model.normalization == NORMALIZATIONS["caffe_bgr"]
    assert isinstance(model.net.classifier, nn.Identity)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = net.avgpool(net.features(model.normalize(images))).flatten(1)
        assert torch.allclose(model.net(model.normalize(images)), expected, atol=1e-5)
    override = load_model(ModelConfig("torchvision:vgg11", str(path), normalize="imagenet"))
    assert override.normalization == NORMALIZATIONS["imagenet"]


def test_relmax_is_refused_without_a_head(tmp_path, small_digits):
    import torchvision

    from monoscope.io import save_tensors
    from monoscope.models import load_model
    from monoscope.references import ReferenceConfig, collect_references

    net = torchvision.models.vgg11()
    state = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    path = tmp_path / "vgg11_features.safetensors"
    save_tensors(path, state, {"head": "none"})
    model = load_model(ModelConfig("torchvision:vgg11", str(path)))
    _, dataset = small_digits
    with pytest.raises(ValueError, match="relmax starts relevance at a class logit"):
        collect_references(
            model, dataset, ["features.18"], ReferenceConfig(n=2, modes=("relmax",)), "cpu"
        )


def test_imported_weight_files_agree_with_the_weight_sources(repo):
    """rules/common.smk names the files that rule import_weights makes; they must be the
    converters' default outputs, or the rule would write a file nobody reads."""
    import re

    from monoscope.weights import WEIGHT_SOURCES

    text = (repo / "rules" / "common.smk").read_text()
    block = text[text.index("IMPORTED_WEIGHTS = {") :].split("}", 1)[0]
    pairs = dict(re.findall(r'"([^"]+)": "([^"]+)"', block))
    assert pairs == {source.default_out: name for name, source in WEIGHT_SOURCES.items()}


@pytest.mark.workflow
def test_relmax_with_a_headless_weight_file_fails_before_any_job(repo, tmp_path):
    import torchvision
    import yaml
    from helpers import snakemake

    from monoscope.io import save_tensors

    net = torchvision.models.vgg11()
    weights = tmp_path / "vgg11_features.safetensors"
    save_tensors(
        weights,
        {f"features.{k}": v for k, v in net.features.state_dict().items()},
        {"head": "none", "normalize": "caffe_bgr"},
    )
    config = {
        "experiment": "headless",
        "branches": ["pure"],
        "data": {"name": "imagefolder", "root": str(tmp_path), "image_size": 64},
        "model": {
            "name": "torchvision:vgg11",
            "weights": str(weights),
            "upper_layer": "features.18",
            "lower_layer": "features.15",
        },
        "references": {"modes": ["actmax", "relmax"]},
        "sae": {"layers": []},  # the default's layer4 is not a VGG layer
    }
    path = tmp_path / "headless.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(repo, "-n", "--cores", "1", "--configfile", str(path), timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "references.modes: relmax starts relevance at a class logit" in output
    assert str(weights) in output
    assert not (repo / "results" / "headless").exists()


def test_class_means_with_missing_classes_and_observed_mask():
    import numpy as np

    from monoscope.hierarchy import ClassMeanAccumulator, hierarchy_score, observed_classes

    accumulator = ClassMeanAccumulator(num_units=2, num_classes=3)
    accumulator.update(np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0]]), np.array([0, 0, 2]))
    with pytest.raises(ValueError, match="no samples for classes 1"):
        accumulator.means()
    means = accumulator.means("nan")
    assert np.isnan(means[:, 1]).all()
    np.testing.assert_allclose(means[:, [0, 2]], [[2.0, 0.0], [1.0, 4.0]])
    seen = observed_classes(means)
    assert seen.tolist() == [True, False, True]
    flat = np.ones((3, 3)) - np.eye(3)
    # Unit 1: f = (1, 4) over the observed classes, f^T D f / |f|^2 = 2*1*4 / 17.
    scores = hierarchy_score(means[:, seen], flat[seen][:, seen])
    np.testing.assert_allclose(scores, [0.0, 8 / 17])


def test_virtual_neuron_class_means_on_a_selection(random_demo, small_digits):
    """Centroids of a selection score the selected channels: equal to the rows of the
    same channels computed with every channel's centroids."""
    from monoscope.pure.virtual_neurons import VirtualNeurons
    from monoscope.units import virtual_neuron_class_means

    _, dataset = small_digits
    torch.manual_seed(0)
    centroids = torch.rand(8, 2, 32)
    selection = torch.tensor([1, 5, 6])

    class Store:  # pooled activations of the upper layer, as ActivationStore yields them
        num_samples = 24

        def iter_labelled(self, batch_size):
            ids = dataset.sample_ids[:24]
            images = torch.stack([dataset[i][0] for i in range(24)])
            with torch.no_grad():
                pooled = random_demo.net.features(random_demo.normalize(images))
            for start in range(0, 24, batch_size):
                part = slice(start, start + batch_size)
                yield pooled[part], ids[part], dataset.labels[:24][part]

    everything = VirtualNeurons(random_demo, "layer3", "layer4", centroids)
    chosen = VirtualNeurons(
        random_demo, "layer3", "layer4", centroids[selection], channels=selection
    )
    full = virtual_neuron_class_means(everything, dataset, Store(), 10, batch_size=8, missing="nan")
    part = virtual_neuron_class_means(chosen, dataset, Store(), 10, batch_size=8, missing="nan")
    rows = (selection[:, None] * 2 + torch.arange(2)).reshape(-1).numpy()
    import numpy as np

    np.testing.assert_allclose(part, full[rows], rtol=1e-5, atol=1e-6)


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"neurons": {"start": 5, "stop": 3}}, "neurons: the range"),
        (
            {"neurons": [5], "figures": {"neurons": [5]}, "circuits": {"shards": 2}},
            "circuits.shards: 2 shards for 1",
        ),
        ({"neurons": [0, 1, 2], "figures": {"neurons": [3]}}, "figures.neurons: [3] are not"),
    ],
)
def test_bad_neurons_selections_fail_before_any_job(repo, tmp_path, override, message):
    import yaml
    from helpers import snakemake

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"experiment": "bad_neurons", "branches": ["pure"]} | override))
    result = snakemake(repo, "-n", "--cores", "1", "--configfile", str(path), timeout=120)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (repo / "results" / "bad_neurons").exists()
