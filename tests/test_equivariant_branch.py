"""Tests of the equivariant branch's workflow layer: the orbit data file, the tables, the
resume-checkpoint guard, and probe truncation."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import monoscope  # noqa: F401  (must precede any torchvision import)
from monoscope.equivariant import probes
from monoscope.equivariant.orbit_data import (
    OrbitData,
    image_orbit_data,
    load_orbit_data,
    save_orbit_data,
    shapes_orbit_data,
)
from monoscope.equivariant.orbits import split_orbits
from monoscope.equivariant.shapes import (
    CATEGORICAL_ATTRIBUTES,
    ORIENTATIONS,
    ShapesConfig,
    generate_shapes,
)
from monoscope.equivariant.tables import probe_table, reconstruction_table, symmetry_table
from monoscope.equivariant.tasks import TaskConfig, shape_tasks, task_labels
from monoscope.io import guard_checkpoint, release_checkpoint, save_tensors

N_ORBITS = 12
SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes_config() -> ShapesConfig:
    return ShapesConfig(num_orbits=N_ORBITS, image_size=SIZE, seed=5)


@pytest.fixture(scope="module")
def task_config() -> TaskConfig:
    return TaskConfig(conjunctions=())


@pytest.fixture(scope="module")
def shapes_data(shapes_config, task_config) -> OrbitData:
    return shapes_orbit_data(shapes_config, task_config, test_fraction=0.25, seed=7)


# ---------------------------------------------------------------------- orbit data


def test_shapes_orbit_data_matches_the_generated_data_set(shapes_config, task_config, shapes_data):
    dataset = generate_shapes(shapes_config, progress=False)
    n = shapes_config.orbit_size
    # canonical images: member 0 of every orbit, i.e. rows 0, n, 2n, ... of the data set
    assert shapes_data.canonical.dtype == torch.uint8
    assert shapes_data.canonical.shape == (N_ORBITS, 3, SIZE, SIZE)
    assert torch.equal(shapes_data.canonical, dataset.images[::n])
    assert torch.equal(
        shapes_data.canonical, dataset.images.reshape(N_ORBITS, n, 3, SIZE, SIZE)[:, 0]
    )
    # labels: one row per member, orbit-major, as the task labels of the attributes
    tasks = shape_tasks(shapes_config, task_config)
    expected, names = task_labels(dataset.attributes, tasks)
    assert shapes_data.labels.dtype == np.uint8
    assert shapes_data.labels.shape == (N_ORBITS * n, len(tasks))
    assert np.array_equal(shapes_data.labels, expected)
    assert shapes_data.task_names == tuple(names)
    assert shapes_data.invariant == tuple(task.invariant for task in tasks)
    # no conjunctions: one-vs-rest per category value plus 3 thresholds per continuous attribute
    categories = shapes_config.category_names()
    assert len(names) == sum(len(categories[a]) for a in CATEGORICAL_ATTRIBUTES) + 3 * 3
    assert not any("&" in name for name in names)
    assert shapes_data.test_orbits.dtype == bool
    assert np.array_equal(shapes_data.test_orbits, split_orbits(N_ORBITS, 0.25, 7))
    assert shapes_data.orbit_size == n and shapes_data.source == "shapes"
    assert shapes_data.num_orbits == N_ORBITS


def test_shapes_orbit_labels_by_hand(shapes_config, shapes_data):
    """Labels rebuilt from the attributes without the task machinery."""
    dataset = generate_shapes(shapes_config, progress=False)
    column = {name: i for i, name in enumerate(shapes_data.task_names)}
    for index, color in enumerate(shapes_config.colors):
        truth = (dataset.attributes["color"] == index).astype(np.uint8)
        assert np.array_equal(shapes_data.labels[:, column[f"color={color}"]], truth)
    low, high = shapes_config.size_range
    threshold = low + 0.5 * (high - low)
    truth = (dataset.attributes["size"] > threshold).astype(np.uint8)
    assert np.array_equal(shapes_data.labels[:, column[f"size>{threshold:.4g}"]], truth)
    # canonical shapes are upright and member j is j quarter turns on: orientation = member
    members = np.tile(np.arange(4), N_ORBITS)
    for j, orientation in enumerate(ORIENTATIONS):
        labels = shapes_data.labels[:, column[f"orientation={orientation}"]]
        assert np.array_equal(labels, (members == j).astype(np.uint8))


def test_invariant_tasks_are_constant_on_orbits(shapes_data):
    per_orbit = shapes_data.labels.reshape(N_ORBITS, 4, -1)
    invariant = np.array(shapes_data.invariant)
    assert invariant.any() and not invariant.all()
    constant = (per_orbit == per_orbit[:, :1]).all(axis=(0, 1))
    assert constant[invariant].all()
    # the orientation tasks are not invariant and do change within orbits
    assert not constant[[name.startswith("orientation=") for name in shapes_data.task_names]].any()
    for name, flag in zip(shapes_data.task_names, shapes_data.invariant, strict=True):
        attribute = name.split("=")[0].split(">")[0]
        assert flag == (attribute in ("shape", "color", "background", "size")), name


def test_orbit_data_save_load_round_trip(shapes_data, tmp_path):
    path = tmp_path / "orbits.safetensors"
    save_orbit_data(path, shapes_data)
    loaded = load_orbit_data(path)
    assert torch.equal(loaded.canonical, shapes_data.canonical)
    assert loaded.canonical.dtype == torch.uint8
    assert loaded.labels.dtype == shapes_data.labels.dtype
    assert np.array_equal(loaded.labels, shapes_data.labels)
    assert loaded.test_orbits.dtype == bool
    assert np.array_equal(loaded.test_orbits, shapes_data.test_orbits)
    assert loaded.task_names == shapes_data.task_names
    assert loaded.invariant == shapes_data.invariant
    assert (loaded.orbit_size, loaded.source) == (shapes_data.orbit_size, shapes_data.source)
    # deterministic bytes
    again = tmp_path / "again.safetensors"
    save_orbit_data(again, loaded)
    assert again.read_bytes() == path.read_bytes()


def test_load_orbit_data_rejects_another_kind(tmp_path):
    other = tmp_path / "other.safetensors"
    save_tensors(other, {"canonical": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)}, {"kind": "x"})
    with pytest.raises(ValueError, match="not an orbit data file"):
        load_orbit_data(other)
    bare = tmp_path / "bare.safetensors"
    save_tensors(bare, {"canonical": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)})
    with pytest.raises(ValueError, match="not an orbit data file"):
        load_orbit_data(bare)


def _image_folder(root, counts: dict[str, int], size: int = 8) -> dict[str, list[np.ndarray]]:
    from PIL import Image

    rng = np.random.default_rng(11)
    pixels = {}
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        pixels[name] = []
        for index in range(count):
            array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / name / f"{index:03d}.png")
            pixels[name].append(array)
    return pixels


@pytest.mark.parametrize("orbit_size", [4, 2])
def test_image_orbit_data_from_a_folder(tmp_path, orbit_size):
    root = tmp_path / "galaxies"
    pixels = _image_folder(root, {"spiral": 2, "round": 3})
    data = image_orbit_data(root, image_size=8, orbit_size=orbit_size, test_fraction=0.4, seed=1)
    # classes in sorted order; files sorted within a class
    order = [("round", i) for i in range(3)] + [("spiral", i) for i in range(2)]
    expected_images = np.stack([pixels[c][i].transpose(2, 0, 1) for c, i in order])
    assert data.canonical.dtype == torch.uint8
    assert torch.equal(data.canonical, torch.from_numpy(expected_images))
    assert data.task_names == ("class=round", "class=spiral")
    assert data.invariant == (True, True)
    one_hot = np.array([[c == "round", c == "spiral"] for c, _ in order], dtype=np.uint8)
    expected_labels = np.array([row for row in one_hot for _ in range(orbit_size)])
    assert data.labels.shape == (5 * orbit_size, 2)
    assert np.array_equal(data.labels, expected_labels)
    assert (data.labels.sum(axis=1) == 1).all()
    assert np.array_equal(data.test_orbits, split_orbits(5, 0.4, 1))
    assert data.test_orbits.sum() == 2
    assert (data.orbit_size, data.source) == (orbit_size, "images")


def test_image_orbit_data_names_a_missing_folder(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError) as error:
        image_orbit_data(missing, image_size=8, orbit_size=4, test_fraction=0.25, seed=0)
    assert str(missing) in str(error.value)


def test_orbit_data_validation():
    canonical = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    good = {
        "canonical": canonical,
        "labels": np.zeros((12, 2), np.uint8),
        "task_names": ("a", "b"),
        "invariant": (True, False),
        "test_orbits": np.array([True, False, False]),
        "orbit_size": 4,
        "source": "test",
    }
    assert OrbitData(**good).num_orbits == 3
    bad = [
        {"labels": np.zeros((3, 2), np.uint8)},  # one row per orbit, not per member
        {"labels": np.zeros((12, 3), np.uint8)},  # a column without a task name
        {"invariant": (True,)},
        {"test_orbits": np.array([True, False])},
        {"test_orbits": np.zeros(12, bool)},  # per member, not per orbit
        {"canonical": canonical.float()},
        {"canonical": canonical[:, 0]},
        {"orbit_size": 3},
    ]
    for change in bad:
        with pytest.raises(ValueError):
            OrbitData(**{**good, **change})


# ---------------------------------------------------------------------- tables


def _probe_rows() -> pd.DataFrame:
    """(architecture, family, loss, probe, t, F1 of task a, F1 of task b)."""
    spec = [
        ("mlp", "archetypal", "mse", "logistic", 1, 0.5, 0.7),
        ("mlp", "archetypal", "mse", "logistic", 4, 0.8, 0.9),
        ("mlp", "equivariant", "output_inv", "logistic", 1, 0.2, 0.4),
        ("mlp", "equivariant", "output_inv", "logistic", 4, 0.6, 0.6),
        ("mlp", "vanilla", "mse", "logistic", 1, 0.1, 0.3),
        ("mlp", "vanilla", "mse", "logistic", 4, 0.5, 0.9),
        ("mlp", "base", "none", "logistic", 1, 0.9, 1.0),
        ("mlp", "base", "none", "logistic", 4, 1.0, 1.0),
        ("mlp", "base", "none", "xgboost", 1, 1 / 3, 2 / 3),
        ("mlp", "base", "none", "xgboost", 4, 0.1231, 0.1233),
        ("mlp", "equivariant", "latent_inv", "logistic", 1, 0.25, 0.35),
        ("mlp", "equivariant", "latent_inv", "logistic", 4, 0.7, 0.8),
        ("cnn", "base", "none", "logistic", 1, 0.4, 0.6),
        ("cnn", "base", "none", "logistic", 4, 0.2, 0.4),
    ]
    rows = []
    for arch, family, loss, probe, t, f1_a, f1_b in spec:
        for task, f1 in (("a", f1_a), ("b", f1_b)):
            rows.append(
                {
                    "architecture": arch,
                    "family": family,
                    "loss": loss,
                    "probe": probe,
                    "t": t,
                    "task": task,
                    "f1": f1,
                    "train_positives": 10,
                    "test_positives": 3,
                    "invariant": task == "a",
                }
            )
    return pd.DataFrame(rows)


def test_probe_table_means_and_order():
    table = probe_table(_probe_rows())
    expected = {
        ("cnn", "base", "logistic"): (0.5, 0.3),
        ("mlp", "base", "logistic"): (0.95, 1.0),
        ("mlp", "base", "xgboost"): (0.5, 0.123),
        ("mlp", "vanilla", "logistic"): (0.2, 0.7),
        ("mlp", "equivariant latent_inv", "logistic"): (0.3, 0.75),
        ("mlp", "equivariant output_inv", "logistic"): (0.3, 0.6),
        ("mlp", "archetypal", "logistic"): (0.6, 0.85),
    }
    assert list(table.index) == list(expected)
    assert list(table.index.names) == ["architecture", "sae", "probe"]
    assert list(table.columns) == ["t=1", "t=4"]
    assert table.columns.name == "truncation"
    assert np.allclose(table.to_numpy(), np.array(list(expected.values())), atol=1e-12)


def test_probe_table_on_a_task_subset_and_empty():
    frame = _probe_rows()
    only_a = probe_table(frame[frame["invariant"]])
    assert only_a.loc[("mlp", "vanilla", "logistic"), "t=4"] == pytest.approx(0.5)
    assert only_a.loc[("mlp", "base", "xgboost"), "t=1"] == pytest.approx(0.333)
    with pytest.raises(ValueError, match="no probe results"):
        probe_table(frame.iloc[:0])


def _metrics(arch, family, loss, features, fvu, mse, l0, dead, variance):
    return {
        "architecture": arch,
        "family": family,
        "loss": loss,
        "num_features": features,
        "train": {"fvu": 9.0},
        "test": {
            "fvu": fvu,
            "normalized_mse": mse,
            "l0": l0,
            "dead_fraction": dead,
            "orbit_code_variance": variance,
        },
    }


def test_reconstruction_table():
    records = [
        _metrics("mlp", "archetypal", "mse", 64, 0.123456, 0.5, 7.256, 0.125, 1 / 3),
        _metrics("mlp", "equivariant", "output_inv", 64, 0.2, 0.21, 8.0, 0.0, 0.01),
        _metrics("mlp", "vanilla", "mse", 32, 0.3, 0.31, 4.0, 0.5, 0.75),
        _metrics("cnn", "vanilla", "mse", 32, 0.4, 0.41, 16.0, 0.25, 0.5),
        _metrics("mlp", "equivariant", "latent_inv", 64, 0.25, 0.26, 5.5, 0.0, 0.002),
    ]
    table = reconstruction_table(records)
    assert list(table.index.names) == ["architecture", "sae"]
    assert list(table.index) == [
        ("cnn", "vanilla"),
        ("mlp", "vanilla"),
        ("mlp", "equivariant latent_inv"),
        ("mlp", "equivariant output_inv"),
        ("mlp", "archetypal"),
    ]
    assert list(table.columns) == [
        "features",
        "FVU",
        "normalized MSE",
        "L0",
        "dead fraction",
        "orbit variance",
    ]
    archetypal = table.loc[("mlp", "archetypal")]
    assert archetypal.tolist() == pytest.approx([64, 0.1235, 0.5, 7.26, 0.125, 0.333])
    assert table.loc[("mlp", "equivariant latent_inv"), "orbit variance"] == pytest.approx(0.002)
    assert table.loc[("cnn", "vanilla"), "L0"] == 16.0
    assert table["features"].tolist() == [32, 32, 64, 64, 64]


def _fit(power_errors, r2, identity, relative):
    return {
        "power_errors": power_errors,
        "r2": r2,
        "identity_error": identity,
        "relative_error": relative,
    }


def test_symmetry_table():
    fits = {
        "mlp": {
            "train": _fit([0.011111, 0.02, 0.03], 0.99, 0.5, 0.011111),
            "test": _fit([0.04, 0.05, 0.066666], 0.987654, 0.812345, 0.04),
        },
        "cnn": {
            "train": _fit([0.1, 0.2, 0.3], 0.9, 0.7, 0.1),
            "test": _fit([0.4, 0.5, 0.6], 0.8, 0.9, 0.4),
        },
    }
    table = symmetry_table(fits)
    assert list(table.index) == ["mlp", "cnn"] and table.index.name == "architecture"
    assert list(table.columns) == [
        "train M^1",
        "train M^2",
        "train M^3",
        "test M^1",
        "test M^2",
        "test M^3",
        "test R2",
        "M = I",
    ]
    assert table.loc["mlp"].tolist() == pytest.approx(
        [0.0111, 0.02, 0.03, 0.04, 0.05, 0.0667, 0.9877, 0.8123]
    )
    assert table.loc["cnn"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9])


# ---------------------------------------------------------------------- resume checkpoints


def _fingerprint(inputs, params):
    return {
        "inputs": {str(p): [os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in inputs},
        "params": params,
    }


def test_guard_checkpoint_keeps_and_drops(tmp_path):
    first, second = tmp_path / "data.bin", tmp_path / "model.bin"
    first.write_bytes(b"data")
    second.write_bytes(b"model!")
    inputs = [first, second]
    checkpoint = tmp_path / "resume.safetensors"
    sidecar = tmp_path / "resume.safetensors.job.json"
    params = {"epochs": 3, "widths": [4, 8]}

    # nothing to keep yet; the fingerprint is written
    assert guard_checkpoint(checkpoint, inputs, params) is False
    assert sidecar.exists() and not checkpoint.exists()
    assert json.loads(sidecar.read_text()) == _fingerprint(inputs, params)

    # same inputs and params (tuples compare as lists, order of inputs is irrelevant): kept
    checkpoint.write_bytes(b"state")
    assert guard_checkpoint(checkpoint, inputs, {"epochs": 3, "widths": (4, 8)}) is True
    assert guard_checkpoint(checkpoint, [second, first], params) is True
    assert checkpoint.read_bytes() == b"state"

    # a changed parameter: dropped, and the new fingerprint recorded
    assert guard_checkpoint(checkpoint, inputs, {**params, "epochs": 4}) is False
    assert not checkpoint.exists()
    assert json.loads(sidecar.read_text())["params"] == {"epochs": 4, "widths": [4, 8]}
    checkpoint.write_bytes(b"state")
    assert guard_checkpoint(checkpoint, inputs, {**params, "epochs": 4}) is True

    # an input rewritten with the same bytes but a new modification time: dropped
    stat = first.stat()
    first.write_bytes(b"data")
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert first.stat().st_mtime_ns != stat.st_mtime_ns and first.stat().st_size == stat.st_size
    assert guard_checkpoint(checkpoint, inputs, {**params, "epochs": 4}) is False
    assert not checkpoint.exists()
    assert json.loads(sidecar.read_text()) == _fingerprint(inputs, {**params, "epochs": 4})

    # an input of another size but the same modification time: dropped
    checkpoint.write_bytes(b"state")
    assert guard_checkpoint(checkpoint, inputs, params) is False  # params changed back
    checkpoint.write_bytes(b"state")
    stat = second.stat()
    second.write_bytes(b"model!!")
    os.utime(second, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert guard_checkpoint(checkpoint, inputs, params) is False
    assert not checkpoint.exists()

    # a fingerprint without a checkpoint keeps nothing; release removes both files
    assert guard_checkpoint(checkpoint, inputs, params) is False
    checkpoint.write_bytes(b"state")
    release_checkpoint(checkpoint)
    assert not checkpoint.exists() and not sidecar.exists()
    release_checkpoint(checkpoint)  # nothing left: no error


def test_guard_checkpoint_without_a_fingerprint_drops_an_old_checkpoint(tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("x")
    checkpoint = tmp_path / "deep" / "resume.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"old")
    assert guard_checkpoint(checkpoint, [source], None) is False
    assert not checkpoint.exists()
    assert (tmp_path / "deep" / "resume.pt.job.json").exists()


# ---------------------------------------------------------------------- probes


def test_truncation_above_the_latent_count_uses_every_latent():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, (80, 1)).astype(np.uint8)
    features = rng.normal(size=(80, 3)).astype(np.float32)
    features[:, 1] += 1.5 * labels[:, 0]
    test = np.arange(80) % 4 == 0
    config = probes.TruncatedProbeConfig(truncation_lengths=(1, 3, 10), probes=("logistic",))
    results = probes.run_probes(features, labels, ["a"], test, config, progress=False)
    assert results["t"].tolist() == [1, 3, 10]
    f1 = dict(zip(results["t"], results["f1"], strict=True))
    assert f1[10] == f1[3]
    assert all(0.0 <= value <= 1.0 for value in f1.values())
