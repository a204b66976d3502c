"""Tests of monoscope.plotting: the virtual-neuron grid and the circuit UMAP figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import open_png

from monoscope.data import InMemoryDataset
from monoscope.plotting import plot_circuit_umap, plot_virtual_neurons

DPI = 110  # the figures are saved at this resolution


@pytest.fixture(scope="module")
def dataset() -> InMemoryDataset:
    """40 random 12x12 RGB images with labels 0..3 and non-contiguous sample ids."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(40, 3, 12, 12, generator=generator)
    labels = torch.arange(40) % 4
    return InMemoryDataset(images, labels, sample_ids=torch.arange(40) * 3 + 1000)


def _size_for(width_in: float, height_in: float) -> tuple[int, int]:
    """(height, width) in pixels of a figure of that size saved at DPI."""
    return round(height_in * DPI), round(width_in * DPI)


def test_plot_virtual_neurons_writes_a_png(tmp_path, dataset):
    ids = dataset.sample_ids[:24]
    labels = torch.arange(24) % 3  # three clusters of 8 references
    path = tmp_path / "virtual.png"
    plot_virtual_neurons(ids, labels, dataset, path, class_names=list("abcd"), title="neuron 0")
    pixels = open_png(path)
    columns, clusters = 8, 3
    expected = _size_for(1.25 * columns + 0.9, 1.4 * clusters + 0.6)
    assert pixels.shape == (*expected, 3)
    assert pixels.std() > 10  # images were drawn, not a blank canvas
    # The atomic write left no temporary file behind.
    assert [p.name for p in tmp_path.iterdir()] == ["virtual.png"]


def test_plot_virtual_neurons_cluster_with_fewer_members_than_columns(tmp_path, dataset):
    ids = dataset.sample_ids[:13]
    # Cluster 0 has 10 members (more than the 6 columns), cluster 1 only 2, cluster 2 one.
    labels = torch.tensor([0] * 10 + [1, 1, 2])
    path = tmp_path / "sparse.png"
    plot_virtual_neurons(ids, labels, dataset, path, columns=6)
    pixels = open_png(path)
    assert pixels.shape == (*_size_for(1.25 * 6 + 0.9, 1.4 * 3 + 0.6), 3)
    # Six, two and one images: the drawn share of each row falls accordingly.
    drawn = [(row < 200).any(axis=2).mean() for row in np.array_split(pixels, 3, axis=0)]
    assert drawn[0] > 2 * drawn[1] > 0
    assert drawn[1] > 1.5 * drawn[2] > 0


def test_plot_virtual_neurons_empty_cluster_row(tmp_path, dataset):
    """A k-means label that no reference has (a degenerate unit) leaves a blank row."""
    ids = dataset.sample_ids[:6]
    labels = torch.tensor([0, 0, 2, 2, 2, 0])  # cluster 1 has no member
    path = tmp_path / "gap.png"
    plot_virtual_neurons(ids, labels, dataset, path, columns=4)
    pixels = open_png(path)
    height, width = _size_for(1.25 * 4 + 0.9, 1.4 * 3 + 0.6)
    assert pixels.shape == (height, width, 3)
    # The middle (empty) row is almost plain white; the others hold images.
    rows = np.array_split(pixels, 3, axis=0)
    assert (rows[1] < 200).mean() < (rows[0] < 200).mean()


@pytest.mark.filterwarnings("ignore:n_jobs value:UserWarning")
def test_plot_circuit_umap_writes_a_png(tmp_path, dataset):
    pytest.importorskip("umap")
    generator = torch.Generator().manual_seed(1)
    n, dims = 20, 6
    labels = torch.arange(n) % 2
    # Two well-separated groups of circuit vectors.
    vectors = torch.randn(n, dims, generator=generator) * 0.1 + labels[:, None] * 3.0
    ids = dataset.sample_ids[:n]
    path = tmp_path / "umap.png"
    plot_circuit_umap(vectors, labels, ids, dataset, path, thumbnails=5, title="neuron 3")
    pixels = open_png(path)
    assert pixels.shape == (*_size_for(6.5, 5.5), 3)
    assert pixels.std() > 10
    assert [p.name for p in tmp_path.iterdir()] == ["umap.png"]
