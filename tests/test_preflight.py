"""DAG-time checks of a config: layers, architectures, channels, folders (no weights)."""

import json

import pytest
import torch

from monoscope.models import ModelConfig, load_model
from monoscope.models.registry import layer_channels
from monoscope.preflight import (
    RECORDED_SECTIONS,
    ConfigError,
    channel_counts,
    check_channels,
    check_config,
    check_experiment_record,
    check_folder,
    check_layers,
    check_neuron_selection,
    experiment_record,
    model_skeleton,
)


def test_skeleton_is_on_the_meta_device_and_has_the_real_layers_and_channels():
    skeleton = model_skeleton({"name": "torchvision:resnet18"})
    assert all(p.device.type == "meta" for p in skeleton.net.parameters())
    real = load_model(ModelConfig("torchvision:resnet18", "random"))
    assert [n for n, _ in skeleton.net.named_modules()] == [n for n, _ in real.net.named_modules()]
    layers = ["layer2", "layer3.1.conv2", "layer4"]
    assert channel_counts(skeleton, layers, 64) == layer_channels(real, layers, 64)


def test_demo_skeleton_takes_the_widths_of_the_demo_section():
    skeleton = model_skeleton({"name": "demo_cnn"}, {"widths": [4, 8, 8, 6]})
    assert channel_counts(skeleton, ["layer3", "layer4"], 32) == {"layer3": 8, "layer4": 6}


def test_unknown_architecture_names_model_name():
    with pytest.raises(ConfigError, match=r"^model.name: 'torchvision:resnet999' is not a model"):
        model_skeleton({"name": "torchvision:resnet999"})


def test_unknown_layer_names_the_key_value_and_close_names():
    skeleton = model_skeleton({"name": "demo_cnn"})
    check_layers(skeleton, [("model.upper_layer", "layer4"), ("x", "layer3.0.conv1")])
    with pytest.raises(ConfigError, match=r"^sae.layers\[0\]: 'layer5' .*did you mean \['layer4'"):
        check_layers(skeleton, [("model.upper_layer", "layer4"), ("sae.layers[0]", "layer5")])


def test_channels_and_neuron_selections_against_the_layer():
    check_channels("figures.neurons", [0, 7], 8, "layer4")
    with pytest.raises(
        ConfigError, match=r"^figures.neurons: \[8, 12\] are not channels of layer4"
    ):
        check_channels("figures.neurons", [0, 8, 12], 8, "layer4")
    check_neuron_selection("all", 8, "layer4")
    check_neuron_selection({"start": 2, "stop": 8}, 8, "layer4")
    with pytest.raises(ConfigError, match=r"^neurons: \[9\]"):
        check_neuron_selection([1, 9], 8, "layer4")
    with pytest.raises(ConfigError, match="ends beyond the 8 channels"):
        check_neuron_selection({"start": 0, "stop": 9}, 8, "layer4")
    with pytest.raises(ConfigError, match=r"^neurons.top: 20 exceeds"):
        check_neuron_selection({"top": 20, "by": "mean_score"}, 8, "layer4")


def test_folders_must_exist_or_be_written_by_a_rule(tmp_path):
    check_folder("data.root", str(tmp_path))
    check_folder("data.root", "data/real_photos", produced=["data/real_photos/"])
    with pytest.raises(ConfigError, match=r"^data.root: '/nowhere/x' does not exist"):
        check_folder("data.root", "/nowhere/x")
    with pytest.raises(ConfigError, match=r"^data.root: None must name where this data set is"):
        check_folder("data.root", None)


def test_skeleton_costs_no_parameter_memory():
    skeleton = model_skeleton({"name": "torchvision:resnet50"})
    assert sum(p.numel() for p in skeleton.net.parameters()) > 2e7
    assert not any(
        p.is_floating_point() and p.device.type == "cpu" for p in skeleton.net.parameters()
    )
    assert torch.empty(0).device.type == "cpu"  # the meta device did not leak out


def test_schema_error_summary_names_the_key_path():
    import jsonschema

    from monoscope.preflight import schema_error_summary

    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"minimum": 2}}}}
    try:
        try:
            jsonschema.validate({"a": [3, 1]}, schema)
        except jsonschema.ValidationError:
            raise RuntimeError("Error validating config file.\n" + "schema " * 1000) from None
    except RuntimeError as wrapped:
        # raise ... from None keeps __context__: the summary still finds the cause.
        assert schema_error_summary(wrapped) == (
            "config key a.1: 1 is less than the minimum of 2 (see config/schema.yaml)"
        )
    assert schema_error_summary(ValueError("plain\nmore")) == "plain"


def demo_config():
    """The embedded default config with the schema's defaults filled in."""
    import yaml
    from conftest import REPO
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"), set_default=True)
    return config


def test_the_default_config_passes_every_check():
    check_config(demo_config(), produced=["data/real_photos"])


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda c: c["model"].update(upper_layer="layer5"), "model.upper_layer"),
        (lambda c: c["model"].update(lower_layer="layer3.9"), "model.lower_layer"),
        (lambda c: c["model"].update(name="torchvision:resnet999"), "model.name"),
        (lambda c: c["sae"].update(layers=["layer4", "fc2"]), r"sae.layers\[1\]"),
        (lambda c: c["figures"].update(neurons=[1, 8]), "figures.neurons"),
        (lambda c: c.update(neurons={"top": 9, "by": "mean_score"}), "neurons.top"),
        (lambda c: c["data"].update(name="imagefolder", root="no/such/folder"), "data.root"),
        (
            lambda c: c["embedders"]["judge"].update(
                kind="model_layer", model="torchvision:vgg19", layer="features.99"
            ),
            "embedders.judge.layer",
        ),
        (
            lambda c: c["contrastive"]["data"].update(name="cifar10", root=None),
            "contrastive.data.root",
        ),
    ],
)
def test_each_bad_value_is_named_by_its_key(change, key):
    config = demo_config()
    change(config)
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        check_config(config)


def test_a_folder_a_rule_writes_need_not_exist_yet(tmp_path):
    config = demo_config()
    config["data"].update(name="imagefolder", root=str(tmp_path / "photos"))
    check_config(config, produced=[str(tmp_path / "photos")])
    with pytest.raises(ConfigError, match="^data.root"):
        check_config(config)


def test_experiment_record_holds_the_data_and_model_sections_only():
    config = demo_config()
    record = experiment_record(config)
    assert set(record) == set(RECORDED_SECTIONS)
    assert record["data"] == config["data"] and record["model"] == config["model"]
    config["references"]["n"] = 3  # analysis settings do not make another experiment
    assert experiment_record(config) == record


def test_a_changed_record_is_refused_naming_the_changed_keys(tmp_path):
    config = demo_config()
    path = tmp_path / "experiment.json"
    check_experiment_record(path, experiment_record(config), "demo")  # no record yet
    path.write_text(json.dumps(experiment_record(config)))
    check_experiment_record(path, experiment_record(config), "demo")  # unchanged
    config["data"]["root"] = "elsewhere"
    config["model"]["upper_layer"] = "layer3"
    with pytest.raises(ConfigError) as error:
        check_experiment_record(path, experiment_record(config), "demo")
    message = str(error.value)
    assert message.startswith("experiment: 'demo' holds results made with other data")
    assert "data.root: None -> 'elsewhere'" in message
    assert "model.upper_layer: 'layer4' -> 'layer3'" in message
    assert "replace_results: true" in message
    check_experiment_record(path, experiment_record(config), "demo", replace=True)


def test_record_follows_the_branches_and_ignores_options_it_predates(tmp_path):
    config = demo_config()
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment_record(config)))
    config["branches"] = ["pure"]  # a branch off: its data section is not compared
    assert "contrastive.data" not in experiment_record(config)
    check_experiment_record(path, experiment_record(config), "demo")
    stored = json.loads(path.read_text())
    del stored["data"]["max_samples"]  # a record written before this option existed
    path.write_text(json.dumps(stored))
    check_experiment_record(path, experiment_record(config), "demo")
    config["model"] = dict(config["model"], name="torchvision:resnet18", weights="random")
    assert "demo" not in experiment_record(config)
