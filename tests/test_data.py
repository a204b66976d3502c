"""Tests of monoscope.data: configs, sample tables, data sets, shards, image folders."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from monoscope.data import (
    DataConfig,
    ImageDataset,
    make_sample_table,
    open_dataset,
    parse_scatteritem,
    read_sample_table,
    shard_positions,
)

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digits_targets() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target


@pytest.fixture(scope="module")
def digits_table():
    config = DataConfig()
    table, classes = make_sample_table(config)
    return config, table, classes


def test_digits_read_from_the_file_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    from monoscope.data import load_digits_arrays

    images, labels = load_digits_arrays()
    digits = load_digits()
    np.testing.assert_array_equal(images, digits.images)
    np.testing.assert_array_equal(labels, digits.target)
    assert labels.dtype == np.int64 and images.shape == (N_DIGITS, 8, 8)


# --------------------------------------------------------------------------- config


def test_data_config_defaults():
    config = DataConfig()
    assert config.name == "digits"
    assert config.image_size == 32
    assert config.test_fraction == 0.2


def test_data_config_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown data set 'mnist'") as excinfo:
        DataConfig(name="mnist")
    assert "digits" in str(excinfo.value) and "imagefolder" in str(excinfo.value)


def test_data_config_imagefolder_needs_root():
    with pytest.raises(ValueError, match="data.root"):
        DataConfig(name="imagefolder")
    with pytest.raises(ValueError, match="data.root"):
        DataConfig(name="imagefolder", root="")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_data_config_rejects_bad_test_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        DataConfig(test_fraction=fraction)


@pytest.mark.parametrize("size", [0, -4])
def test_data_config_rejects_bad_image_size(size):
    with pytest.raises(ValueError, match="image_size"):
        DataConfig(image_size=size)


# --------------------------------------------------------------------------- digits table


def test_digits_sample_table(digits_table, digits_targets):
    _, table, classes = digits_table
    assert len(table) == N_DIGITS
    assert list(table.columns) == ["sample_id", "label", "split"]
    assert classes == [str(digit) for digit in range(10)]
    assert table["sample_id"].tolist() == list(range(N_DIGITS))
    assert np.array_equal(table["label"].to_numpy(), digits_targets)
    assert set(table["split"]) == {"train", "test"}


def test_digits_split_is_stratified_about_one_fifth(digits_table):
    _, table, _ = digits_table
    is_test = table["split"] == "test"
    assert abs(is_test.sum() - 0.2 * N_DIGITS) <= 1
    per_class = table.assign(test=is_test).groupby("label")["test"].mean()
    assert len(per_class) == 10
    assert ((per_class - 0.2).abs() < 0.02).all(), per_class


def test_digits_split_is_reproducible_and_seeded(digits_table):
    _, table, _ = digits_table
    again, _ = make_sample_table(DataConfig())
    assert again.equals(table)
    other, _ = make_sample_table(DataConfig(seed=1))
    assert not np.array_equal(other["split"].to_numpy(), table["split"].to_numpy())


def test_digits_test_fraction_is_respected():
    table, _ = make_sample_table(DataConfig(test_fraction=0.5))
    assert abs((table["split"] == "test").sum() - 0.5 * N_DIGITS) <= 1


def test_digits_max_samples_subset(digits_targets):
    config = DataConfig(max_samples=200, seed=3)
    table, _ = make_sample_table(config)
    assert len(table) == 200
    ids = table["sample_id"].to_numpy()
    assert len(np.unique(ids)) == 200
    assert ids.min() >= 0 and ids.max() < N_DIGITS
    assert np.all(np.diff(ids) > 0)  # kept in the original order
    assert np.array_equal(table["label"].to_numpy(), digits_targets[ids])
    assert abs((table["split"] == "test").sum() - 40) <= 1
    again, _ = make_sample_table(config)
    assert again.equals(table)
    other, _ = make_sample_table(DataConfig(max_samples=200, seed=4))
    assert not np.array_equal(other["sample_id"].to_numpy(), ids)


def test_max_samples_larger_than_data_keeps_everything():
    table, _ = make_sample_table(DataConfig(max_samples=10_000))
    assert len(table) == N_DIGITS


# --------------------------------------------------------------------------- data set


def test_image_dataset_items(digits_table):
    from sklearn.datasets import load_digits

    _, table, _ = digits_table
    config = DataConfig(image_size=24)
    dataset = ImageDataset(config, table)
    assert len(dataset) == N_DIGITS
    raw = load_digits().images
    for position in (0, 5, 1000, N_DIGITS - 1):
        image, label, sample_id = dataset[position]
        assert isinstance(label, int) and isinstance(sample_id, int)
        assert image.shape == (3, 24, 24)
        assert image.dtype == torch.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
        assert sample_id == int(table.iloc[position].sample_id)
        assert label == int(table.iloc[position].label)
        # The image is that sample's digit, upsampled and unnormalised (values 0..16 -> 0..1).
        expected = F.interpolate(
            torch.from_numpy(raw[sample_id].astype(np.float32) / 16.0)[None, None],
            size=(24, 24),
            mode="bilinear",
            align_corners=False,
        )[0, 0].clamp(0, 1)
        assert torch.allclose(image[0], expected, atol=1e-6)
    assert dataset.labels.dtype == torch.int64
    assert torch.equal(dataset.sample_ids, torch.arange(N_DIGITS))


def test_image_dataset_is_unnormalised(digits_table):
    _, table, _ = digits_table
    dataset = ImageDataset(DataConfig(), table)
    images = torch.stack([dataset[i][0] for i in range(20)])
    assert images.min() == 0.0  # background pixels of the digits stay at zero
    assert images.max() > 0.9


def test_image_dataset_split_filtering(digits_table):
    config, table, _ = digits_table
    train = ImageDataset(config, table, "train")
    test = ImageDataset(config, table, "test")
    everything = ImageDataset(config, table, "all")
    assert len(train) + len(test) == len(everything) == N_DIGITS
    assert (train.table["split"] == "train").all()
    assert (test.table["split"] == "test").all()
    assert set(train.sample_ids.tolist()).isdisjoint(test.sample_ids.tolist())
    assert train.table.index.tolist() == list(range(len(train)))  # positions are 0..n-1
    expected_ids = table.loc[table["split"] == "test", "sample_id"].tolist()
    assert test.sample_ids.tolist() == expected_ids
    _, label, sample_id = test[3]
    assert sample_id == expected_ids[3]
    assert label == int(table.loc[table["sample_id"] == sample_id, "label"].iloc[0])
    with pytest.raises(ValueError, match="split must be one of"):
        ImageDataset(config, table, "validation")


def test_position_of(digits_table):
    config, table, _ = digits_table
    test = ImageDataset(config, table, "test")
    positions = np.array([7, 0, 42, len(test) - 1, 7])
    ids = test.sample_ids[positions].numpy()
    found = test.position_of(ids)
    assert np.array_equal(found, positions)
    assert np.array_equal(test.position_of(torch.tensor(ids)), positions)
    assert test.position_of(ids.reshape(-1, 1)).shape == (5,)
    for position in positions:
        assert test[int(position)][2] == int(ids[list(positions).index(position)])


def test_open_dataset_reads_a_written_table(tmp_path, digits_table):
    config, table, _ = digits_table
    path = tmp_path / "samples.csv"
    table.to_csv(path, index=False)
    dataset = open_dataset(config, path, "train")
    assert len(dataset) == (table["split"] == "train").sum()
    assert torch.equal(dataset.sample_ids, ImageDataset(config, table, "train").sample_ids)
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        read_sample_table(missing)


# --------------------------------------------------------------------------- shards


@pytest.mark.parametrize("length", [0, 1, 5, 7, 10, 13, 100])
@pytest.mark.parametrize("shards", [1, 2, 3, 4, 8])
def test_shard_positions_partition(length, shards):
    parts = [shard_positions(length, shard, shards) for shard in range(1, shards + 1)]
    covered = [position for part in parts for position in part]
    assert covered == list(range(length))  # exact cover, in order, no overlap
    for part in parts:
        assert part.step == 1
    for before, after in zip(parts, parts[1:], strict=False):
        assert before.stop == after.start
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == length


def test_shard_positions_example():
    assert list(shard_positions(10, 1, 3)) == [0, 1, 2, 3]
    assert list(shard_positions(10, 2, 3)) == [4, 5, 6]
    assert list(shard_positions(10, 3, 3)) == [7, 8, 9]


@pytest.mark.parametrize("shard, shards", [(0, 3), (4, 3), (-1, 3), (1, 0)])
def test_shard_positions_rejects_bad_shards(shard, shards):
    with pytest.raises(ValueError, match=f"shard {shard} is not in 1..{shards}"):
        shard_positions(10, shard, shards)


def test_parse_scatteritem():
    assert parse_scatteritem("3-of-8") == (3, 8)
    assert parse_scatteritem("1-of-1") == (1, 1)
    assert parse_scatteritem("12-of-100") == (12, 100)


@pytest.mark.parametrize("item", ["", "garbage", "3of8", "3-8", "a-of-8", "3-of-b", "1-of-2-of-3"])
def test_parse_scatteritem_rejects_garbage(item):
    with pytest.raises(ValueError, match="not a scatter item"):
        parse_scatteritem(item)


# --------------------------------------------------------------------------- image folder

# Left quarter and right quarter red, middle half green: a centre crop of a landscape
# image resized on its shorter side keeps only the green middle.
SIZES = {"zebra": [(60, 30), (80, 40), (120, 60)], "apple": [(40, 20), (100, 50), (64, 32)]}


def _two_band_image(width: int, height: int) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :, 0] = 255
    quarter = width // 4
    pixels[:, quarter : width - quarter] = (0, 255, 0)
    return Image.fromarray(pixels, mode="RGB")


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "images"
    # Created in reverse order so that sorting is not an accident of creation order.
    for name in ("zebra", "apple"):
        folder = root / name
        folder.mkdir(parents=True)
        for index, (width, height) in enumerate(SIZES[name]):
            suffix = ".png" if index % 2 == 0 else ".jpg"
            _two_band_image(width, height).save(folder / f"img{index}{suffix}")
    (root / "zebra" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_sample_table(image_tree):
    config = DataConfig(name="imagefolder", root=str(image_tree), image_size=16, test_fraction=0.5)
    table, classes = make_sample_table(config)
    assert classes == ["apple", "zebra"]
    assert list(table.columns) == ["sample_id", "label", "path", "split"]
    assert len(table) == 6
    assert table["sample_id"].tolist() == list(range(6))
    assert table["label"].tolist() == [0, 0, 0, 1, 1, 1]
    assert all(path.startswith("apple/") for path in table["path"][:3])
    assert all(path.startswith("zebra/") for path in table["path"][3:])
    assert not any(path.endswith(".txt") for path in table["path"])
    assert sorted(table["split"].value_counts().to_dict().items()) == [("test", 3), ("train", 3)]
    for path in table["path"]:
        assert (image_tree / path).is_file()


@pytest.mark.parametrize("resize", [None, 20])
def test_imagefolder_resize_and_center_crop(image_tree, resize):
    config = DataConfig(name="imagefolder", root=str(image_tree), image_size=16, resize=resize)
    table, _ = make_sample_table(config)
    dataset = ImageDataset(config, table)
    assert len(dataset) == 6
    for position in range(len(dataset)):
        image, label, sample_id = dataset[position]
        assert image.shape == (3, 16, 16)
        assert image.dtype == torch.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert label == int(table.iloc[position].label)
        assert sample_id == position
        # The crop is centred: only the green middle survives (edges may blend a little).
        inner = image[:, :, 2:-2]
        assert inner[1].min() > 0.9, (position, resize)
        assert inner[0].max() < 0.1, (position, resize)
        assert image[2].max() < 0.1


def test_imagefolder_resize_is_applied_before_the_crop(tmp_path):
    # A narrow green band (the middle quarter) on red: resized straight to 16 the
    # centre crop still shows red; resized to 64 first, the crop sees only green.
    root = tmp_path / "narrow"
    (root / "only").mkdir(parents=True)
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :, 0] = 255
    pixels[:, 30:50] = (0, 255, 0)
    for name in ("a.png", "b.png"):  # two samples: the train/test split needs both
        Image.fromarray(pixels, mode="RGB").save(root / "only" / name)
    images = {}
    for resize in (None, 64):
        config = DataConfig(name="imagefolder", root=str(root), image_size=16, resize=resize)
        table, classes = make_sample_table(config)
        assert classes == ["only"]
        images[resize] = ImageDataset(config, table)[0][0]
        assert images[resize].shape == (3, 16, 16)
    assert images[None][0].max() > 0.9  # red bands inside the crop
    assert images[64][0].max() < 0.1  # zoomed in on the green band
    assert images[64][1].min() > 0.9


def test_imagefolder_missing_root_names_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    config = DataConfig(name="imagefolder", root=str(missing))
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        make_sample_table(config)


def test_imagefolder_without_images_is_an_error(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    config = DataConfig(name="imagefolder", root=str(root))
    with pytest.raises(FileNotFoundError):  # no class folders
        make_sample_table(config)
    (root / "only_class").mkdir()
    (root / "only_class" / "readme.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError):  # a class folder without images
        make_sample_table(config)
