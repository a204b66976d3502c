"""Figures: grids of reference images."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import torch

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from monoscope.data import ImageDataset  # noqa: E402
from monoscope.io import atomic_path  # noqa: E402
from monoscope.references import EMPTY_ID, TopReferences  # noqa: E402


def plot_reference_grid(
    references: TopReferences,
    dataset: ImageDataset,
    path,
    class_names: Sequence[str] | None = None,
    channels: int = 8,
    columns: int = 10,
    title: str = "",
    channel_ids: Sequence[int] | None = None,
) -> None:
    """One row per channel (the first ``channels`` of ``channel_ids``, by default of all
    channels), its best ``columns`` references.

    Each image is shown unnormalised with its label and score; a box marks the cell
    of the layer's spatial map where the score peaks.
    """
    shown = list(range(references.n_channels) if channel_ids is None else channel_ids)
    shown = [int(channel) for channel in shown[:channels]]
    rows = len(shown)
    columns = min(columns, references.sample_ids.shape[1])
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.25 * columns + 0.6, 1.35 * rows + 0.6), squeeze=False
    )
    for row, channel in enumerate(shown):
        ids = references.sample_ids[channel, :columns]
        valid = ids != EMPTY_ID
        positions = dict(
            zip(
                torch.nonzero(valid).flatten().tolist(),
                dataset.position_of(ids[valid].numpy()).tolist(),
                strict=True,
            )
        )
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(f"ch {channel}", fontsize=8)
            if not valid[column]:
                axis.axis("off")
                continue
            image, label, _ = dataset[positions[column]]
            axis.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
            _mark_position(axis, references, channel, column, image.shape[1:])
            name = class_names[label] if class_names else str(label)
            score = float(references.scores[channel, column])
            axis.set_title(f"{name} | {score:.3g}", fontsize=6)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path)


def _mark_position(axis, references: TopReferences, channel: int, column: int, image_hw) -> None:
    if len(references.spatial_shape) != 2:
        return
    height, width = references.spatial_shape
    row, col = divmod(int(references.positions[channel, column]), width)
    cell_h, cell_w = image_hw[0] / height, image_hw[1] / width
    axis.add_patch(
        Rectangle(
            (col * cell_w - 0.5, row * cell_h - 0.5),
            cell_w,
            cell_h,
            fill=False,
            edgecolor="red",
            linewidth=0.8,
        )
    )


def plot_virtual_neurons(
    sample_ids: torch.Tensor,
    labels: torch.Tensor,
    dataset,
    path,
    class_names: Sequence[str] | None = None,
    columns: int = 8,
    title: str = "",
) -> None:
    """A neuron's references grouped by virtual neuron: one image row per cluster.

    ``sample_ids`` and ``labels`` are the neuron's ``[N]`` references (best first) and
    their cluster labels; each row shows a cluster's best ``columns`` references.
    """
    clusters = int(labels.max()) + 1
    figure, axes = plt.subplots(
        clusters, columns, figsize=(1.25 * columns + 0.9, 1.4 * clusters + 0.6), squeeze=False
    )
    for cluster in range(clusters):
        members = sample_ids[labels == cluster][:columns]
        positions = dataset.position_of(members.numpy()) if len(members) else []
        for column in range(columns):
            axis = axes[cluster, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                share = float((labels == cluster).float().mean())
                axis.set_ylabel(f"virtual {cluster}\n{share:.0%} of refs", fontsize=7)
            if column >= len(members):
                if column:
                    axis.axis("off")
                continue
            image, label, _ = dataset[int(positions[column])]
            axis.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_title(class_names[label] if class_names else str(label), fontsize=6)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path)


def circuit_umap_points(vectors: torch.Tensor, seed: int = 0):
    """2-D UMAP embedding ``[N, 2]`` (numpy) of circuit vectors ``[N, D]``, as PURE plots them."""
    import numpy as np
    import umap

    from monoscope.compat import cache_umap_compilation

    cache_umap_compilation()  # only a machine's first UMAP compiles numba's kernels
    data = vectors.detach().cpu().numpy().astype(np.float64)
    reducer = umap.UMAP(
        n_components=2, n_neighbors=max(2, min(15, len(data) - 1)), min_dist=0.1, random_state=seed
    )
    return reducer.fit_transform(data)


def plot_circuit_umap(
    vectors: torch.Tensor,
    labels: torch.Tensor,
    sample_ids: torch.Tensor,
    dataset,
    path,
    thumbnails: int = 30,
    seed: int = 0,
    title: str = "",
) -> None:
    """UMAP of one neuron's circuit vectors, coloured by virtual neuron, with thumbnails.

    ``vectors`` ``[N, D]``; the first ``thumbnails`` references (best first) are drawn
    as small images at their embedded position, as in PURE's figures.
    """
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    points = circuit_umap_points(vectors, seed)
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    clusters = int(labels.max()) + 1
    colours = plt.get_cmap("tab10" if clusters <= 10 else "tab20")
    colour_of = [colours(m % colours.N) for m in range(clusters)]
    axis.scatter(points[:, 0], points[:, 1], c=[colour_of[int(m)] for m in labels], s=18)
    positions = dataset.position_of(sample_ids[:thumbnails].numpy())
    for index, position in enumerate(positions):
        image = dataset[int(position)][0].permute(1, 2, 0).numpy()
        zoom = 24.0 / max(image.shape[:2])
        box = AnnotationBbox(
            OffsetImage(image, zoom=zoom),
            points[index],
            frameon=True,
            pad=0.1,
            bboxprops={
                "edgecolor": colour_of[int(labels[index])],
                "linewidth": 1.2,
            },
        )
        axis.add_artist(box)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_xlabel("UMAP 1")
    axis.set_ylabel("UMAP 2")
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colour_of[m], label=f"virtual {m}")
        for m in range(clusters)
    ]
    axis.legend(handles=handles, fontsize=7, loc="best")
    if title:
        axis.set_title(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path)


def plot_crop_grid(crops: torch.Tensor, path, columns: int = 10, title: str = "") -> None:
    """One neuron's crops ``[N, 3, S, S]`` (uint8) in rows of ``columns``, best first."""
    count = len(crops)
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.1 * columns, 1.1 * rows + 0.5), squeeze=False
    )
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            axis.imshow(crops[index].permute(1, 2, 0).numpy(), interpolation="nearest")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path)


def save_figure(figure, path) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    _save(figure, path)


def _save(figure, path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)
