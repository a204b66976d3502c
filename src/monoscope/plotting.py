"""Figures: grids of reference images."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import torch

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
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
) -> None:
    """One row per channel (the first ``channels``), its best ``columns`` references.

    Each image is shown unnormalised with its label and score; a box marks the cell
    of the layer's spatial map where the score peaks.
    """
    rows = min(channels, references.n_channels)
    columns = min(columns, references.sample_ids.shape[1])
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.25 * columns + 0.6, 1.35 * rows + 0.6), squeeze=False
    )
    for channel in range(rows):
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
            axis = axes[channel, column]
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
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)


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
