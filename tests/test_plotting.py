"""Tests of monoscope.plotting: the reference grid figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import PNG_MAGIC, open_png

from monoscope.data import DataConfig, ImageDataset, make_sample_table
from monoscope.plotting import plot_reference_grid
from monoscope.references import EMPTY_ID, TopReferences

DPI = 110  # plot_reference_grid saves at this resolution


@pytest.fixture(scope="module")
def dataset():
    config = DataConfig(image_size=16, max_samples=60)
    table, classes = make_sample_table(config)
    return ImageDataset(config, table, "all"), classes


def _references(dataset: ImageDataset, spatial_shape) -> TopReferences:
    ids = dataset.sample_ids
    # Three channels, four columns; channel 1 has an empty slot at the end (as in a
    # shard with fewer samples than N), channel 2 only one real reference.
    sample_ids = torch.tensor(
        [
            [ids[0], ids[1], ids[2], ids[3]],
            [ids[4], ids[5], ids[6], EMPTY_ID],
            [ids[7], EMPTY_ID, EMPTY_ID, EMPTY_ID],
        ],
        dtype=torch.int64,
    )
    scores = torch.tensor(
        [
            [4.0, 3.0, 2.0, 1.0],
            [0.9, 0.5, 0.25, float("-inf")],
            [1.5, float("-inf"), float("-inf"), float("-inf")],
        ]
    )
    positions = torch.tensor([[0, 5, 10, 15], [3, 12, 6, 0], [9, 0, 0, 0]], dtype=torch.int64)
    return TopReferences(sample_ids, scores, positions, spatial_shape)


def _red_pixels(pixels: np.ndarray) -> int:
    red, green, blue = (pixels[..., channel].astype(int) for channel in range(3))
    return int(((red > 150) & (green < 100) & (blue < 100)).sum())


def test_plot_reference_grid_writes_png(tmp_path, dataset):
    data, classes = dataset
    references = _references(data, (4, 4))
    assert not references.filled()
    path = tmp_path / "figures" / "grid.png"
    plot_reference_grid(references, data, path, class_names=classes, title="layer4 actmax")
    assert path.is_file()
    pixels = open_png(path)
    rows, columns = 3, 4
    expected_w = (1.25 * columns + 0.6) * DPI
    expected_h = (1.35 * rows + 0.6) * DPI
    height, width, _ = pixels.shape
    assert abs(width - expected_w) <= 2 and abs(height - expected_h) <= 2
    # Not a blank canvas: images, text and the red boxes of the peak positions.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    assert (pixels < 128).any()
    assert _red_pixels(pixels) > 0
    # Written atomically: nothing else in the folder.
    assert [entry.name for entry in path.parent.iterdir()] == ["grid.png"]


def test_plot_reference_grid_clips_rows_and_columns(tmp_path, dataset):
    data, _ = dataset
    references = _references(data, (4, 4))
    path = tmp_path / "small.png"
    plot_reference_grid(references, data, path, channels=2, columns=2)
    height, width, _ = open_png(path).shape
    assert abs(width - (1.25 * 2 + 0.6) * DPI) <= 2
    assert abs(height - (1.35 * 2 + 0.6) * DPI) <= 2
    # More channels and columns than there are only shows what exists.
    wide = tmp_path / "wide.png"
    plot_reference_grid(references, data, wide, channels=50, columns=50)
    height, width, _ = open_png(wide).shape
    assert abs(width - (1.25 * 4 + 0.6) * DPI) <= 2
    assert abs(height - (1.35 * 3 + 0.6) * DPI) <= 2


def test_plot_reference_grid_without_spatial_map_draws_no_boxes(tmp_path, dataset):
    data, _ = dataset
    references = _references(data, ())
    path = tmp_path / "flat.png"
    plot_reference_grid(references, data, path)
    pixels = open_png(path)
    # Digits are grey and text is black: red only ever comes from the position boxes.
    assert _red_pixels(pixels) == 0
    boxed = tmp_path / "boxed.png"
    plot_reference_grid(_references(data, (4, 4)), data, boxed)
    assert _red_pixels(open_png(boxed)) > 0


def test_plot_reference_grid_replaces_existing_file(tmp_path, dataset):
    data, _ = dataset
    path = tmp_path / "grid.png"
    path.write_bytes(b"stale")
    plot_reference_grid(_references(data, (4, 4)), data, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
