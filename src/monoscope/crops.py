"""Crops of reference samples around the part a channel sees (PURE stage 4).

For an upper-layer channel j and one of its reference samples x, with the position p
where the reference score peaks (``TopReferences.positions``):

1. **position heatmap**: the CRP heatmap of channel j started at p alone. Relevance is
   initialised at the layer output to the activation at ``(j, p)`` and zero elsewhere,
   then propagated to the input with zennit's ``EpsilonPlusFlat`` (with the model's
   canonizers) and summed over the input channels, giving ``[H, W]``;
2. **box**: the heatmap is blurred (Gaussian, kernel ``blur_kernel``), taken as
   ``|h| / max |h|``, and the pixels above ``threshold`` give a bounding box, made
   square around its centre (side = the longer side of the box, shifted to stay in
   the image, at most the image's shorter side). A heatmap with nothing above the
   threshold gives the whole image;
3. **crop**: that square of the *unnormalised* image, resized to ``size`` x ``size``
   with antialiasing and rounded to bytes.

Crop files keep the boxes (``[C, N, 3]`` int64, a few bytes per row, not
``3 * size**2`` bytes of pixels), and optionally an int8 thumbnail of each heatmap for
the atlas (``CropConfig.heatmap_size``), never the crops: the stages that need the pixels (embeddings, figures)
cut them again from the data set's images with :func:`cut_crops` or
:func:`iter_crops`, one batch of rows at a time. Cutting is deterministic, so the
crops are the same bytes wherever they are cut.

Those are a neuron's crops. Every kind of unit (:mod:`monoscope.units`) starts its
heatmap its own way (:meth:`monoscope.units.UnitKind.heatmaps`: a virtual neuron as its
neuron, an SAE feature from its direction, :func:`direction_heatmaps`); steps 2 and 3
are the same for all, and :func:`render_crops` crops the references of any of them.

Every (unit, sample) row has its own unit and position, and many rows go through one
CRP call. zennit-crp's ``FeatureVisualization.get_max_reference(rf=True)``
is not used: in 0.6.0 it masks the wrong rows when it processes several batches.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from monoscope.io import load_tensors, save_tensors
from monoscope.logs import progress_kwargs
from monoscope.models.registry import SubjectModel
from monoscope.references import EMPTY_ID, TopReferences, canonizers_for


class HeatmapUnits(Protocol):
    """What the crop renderer needs of a kind of unit (:class:`monoscope.units.UnitKind`
    implements it): its layer and the heatmaps that start its crops. A protocol, so that
    this module does not depend on the layer above it."""

    layer: str

    def heatmaps(
        self,
        images: torch.Tensor,
        units: torch.Tensor,
        positions: torch.Tensor | None = None,
        spatial_shape: tuple[int, ...] | None = None,
    ) -> torch.Tensor: ...


log = logging.getLogger(__name__)

CROP_KEYS = ("boxes", "channels", "sample_ids")
OPTIONAL_CROP_KEYS = ("heatmaps",)  # CropConfig.heatmap_size


@dataclass(frozen=True)
class CropConfig:
    """Options of reference crops.

    Parameters
    ----------
    size : side of the (square) crops in pixels, once cut (:func:`cut_crops`); boxes
        do not depend on it.
    blur_kernel : side of the Gaussian kernel that smooths the heatmap before
        thresholding (odd; 1 disables the blur). Its sigma is torchvision's default
        for that kernel size.
    threshold : share of the heatmap's maximum absolute value a pixel must exceed to
        belong to the box.
    batch_size : (channel, sample) rows per CRP call.
    heatmap_size : side of a thumbnail of each reference's heatmap kept in the crops file
        (:func:`heatmap_thumbnails`; the atlas shows them, so that it needs no LRP pass of
        its own); 0 keeps none. Each costs ``heatmap_size ** 2`` bytes.
    """

    size: int = 64
    blur_kernel: int = 5
    threshold: float = 0.02
    batch_size: int = 32
    heatmap_size: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"crops.size must be positive, got {self.size}")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(
                f"crops.blur_kernel must be a positive odd number, got {self.blur_kernel}"
            )
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"crops.threshold must be in [0, 1), got {self.threshold}")
        if self.batch_size < 1:
            raise ValueError(f"crops.batch_size must be positive, got {self.batch_size}")
        if self.heatmap_size < 0:
            raise ValueError(f"crops.heatmap_size must be non-negative, got {self.heatmap_size}")


# --------------------------------------------------------------------------- heatmaps


def position_heatmaps(
    model: SubjectModel,
    images: torch.Tensor,
    layer: str,
    channels: torch.Tensor,
    positions: torch.Tensor,
) -> torch.Tensor:
    """CRP heatmaps ``[B, H, W]`` of one channel at one spatial position per row.

    Parameters
    ----------
    model : the subject model (on the device of ``images``).
    images : unnormalised images ``[B, 3, H, W]`` in ``[0, 1]``.
    layer : name of the layer where relevance starts.
    channels : ``[B]`` channel of ``layer`` for each row.
    positions : ``[B]`` flat index into the layer's spatial map for each row (``0`` for
        a layer without spatial dimensions).

    Returns
    -------
    The input relevance of each row summed over the colour channels (relevance with
    respect to the *normalised* input, as zennit-crp computes it).
    """
    heatmaps, _ = _position_heatmaps(model, images, layer, channels, positions)
    return heatmaps


def _position_heatmaps(
    model: SubjectModel,
    images: torch.Tensor,
    layer: str,
    channels: torch.Tensor,
    positions: torch.Tensor,
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """:func:`position_heatmaps` and the spatial shape of the layer's output."""
    from crp.attribution import CondAttribution
    from zennit.composites import EpsilonPlusFlat

    if images.ndim != 4:
        raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
    channels = torch.as_tensor(channels, dtype=torch.int64).reshape(-1).cpu()
    positions = torch.as_tensor(positions, dtype=torch.int64).reshape(-1).cpu()
    if not len(images) == len(channels) == len(positions):
        raise ValueError(
            f"{len(images)} images, {len(channels)} channels and {len(positions)} positions: "
            "one channel and one position per image are needed"
        )
    model.layer(layer)  # a clear error for an unknown layer name, before any hooks
    spatial_shape: list[tuple[int, ...]] = []
    problems: list[str] = []

    def init_rel(activation: torch.Tensor) -> torch.Tensor:
        # Keep only the activation at (row, channel, position); everything else starts
        # with zero relevance, so the heatmap explains that one spatial unit.
        flat = activation.flatten(2) if activation.ndim > 2 else activation[:, :, None]
        spatial_shape.append(tuple(activation.shape[2:]))
        # Bad indices are reported after the call rather than raised here, so that the
        # message is ours even where zennit-crp's channel mask fails on them first.
        if int(channels.max()) >= flat.shape[1] or int(channels.min()) < 0:
            problems.append(
                f"channels {sorted(set(channels.tolist()))} out of range for layer '{layer}' "
                f"with {flat.shape[1]} channels"
            )
        if int(positions.max()) >= flat.shape[2] or int(positions.min()) < 0:
            problems.append(
                f"positions out of range for layer '{layer}' with spatial shape "
                f"{tuple(activation.shape[2:])} ({flat.shape[2]} positions)"
            )
        if problems:
            return torch.zeros_like(activation)
        rows = torch.arange(len(flat), device=flat.device)
        column, spot = channels.to(flat.device), positions.to(flat.device)
        relevance = torch.zeros_like(flat)
        relevance[rows, column, spot] = flat[rows, column, spot]
        return relevance.reshape(activation.shape)

    if len(images) == 0:
        return images.new_zeros((0, *images.shape[2:])), ()
    model.net.eval()
    attribution = CondAttribution(model.net, no_param_grad=True)
    composite = EpsilonPlusFlat(canonizers=canonizers_for(model.net))
    inputs = model.normalize(images).detach().requires_grad_(True)
    # The condition restricts the backward pass to channel j, as in zennit-crp; the
    # initial relevance already is zero outside (j, p), so it changes nothing there.
    conditions = [{layer: [int(channel)]} for channel in channels]
    try:
        with _drop_new_forward_hooks_on_error(model.net):
            result = attribution(
                inputs, conditions, composite, start_layer=layer, init_rel=init_rel
            )
    except Exception as error:
        if problems:  # e.g. crp's channel mask indexing out of range
            raise ValueError("; ".join(problems)) from error
        raise
    if problems:
        raise ValueError("; ".join(problems))
    return result.heatmap.detach(), spatial_shape[0]


@contextlib.contextmanager
def _drop_new_forward_hooks_on_error(net: torch.nn.Module) -> Iterator[None]:
    """On an exception, remove the forward hooks added to ``net`` inside the block.

    zennit-crp 0.6.0 removes the recording hooks of ``CondAttribution`` only when the
    call returns; an exception inside it (a bad index, out of memory) leaves them on
    the model, and every later forward pass without gradients then fails in their
    ``retain_grad``. zennit's own hooks are removed by its context managers.
    """
    before = {module: set(module._forward_hooks) for module in net.modules()}
    try:
        yield
    except BaseException:
        for module, keys in before.items():
            for key in set(module._forward_hooks) - keys:
                module._forward_hooks.pop(key, None)
                getattr(module, "_forward_hooks_with_kwargs", {}).pop(key, None)
                getattr(module, "_forward_hooks_always_called", {}).pop(key, None)
        raise


# --------------------------------------------------------------------------- boxes


def heatmap_thumbnails(heatmaps: torch.Tensor, size: int) -> torch.Tensor:
    """Heatmaps ``[B, H, W]`` as int8 thumbnails ``[B, size, size]``: area-averaged, then
    scaled so that each map's largest absolute value is 127 (all zeros stay zeros).

    Heatmaps are shown scaled by their own maximum (:func:`monoscope.atlas.heatmap_colours`),
    so one signed byte per pixel keeps what a figure shows.
    """
    small = F.interpolate(heatmaps[:, None].float(), size=(size, size), mode="area")[:, 0]
    scale = small.abs().amax(dim=(1, 2), keepdim=True)
    scaled = torch.where(scale > 0, small / scale.clamp_min(torch.finfo(small.dtype).tiny), 0.0)
    return (scaled * 127).round().to(torch.int8)


def square_boxes(
    heatmaps: torch.Tensor, blur_kernel: int = 5, threshold: float = 0.02
) -> torch.Tensor:
    """Square boxes ``[B, 3]`` (``top``, ``left``, ``side``, int64) around each heatmap.

    The heatmap is blurred with a Gaussian of kernel ``blur_kernel`` (torchvision's
    default sigma), normalised to ``|h| / max |h|``, and the pixels strictly above
    ``threshold`` give a bounding box. The box is made square with the longer side,
    centred on the box, capped at the image's shorter side and shifted to lie inside
    the image. A heatmap with nothing above the threshold (an all-zero one included)
    gives the whole image (the centred square of the shorter side if not square).
    """
    from torchvision.transforms.functional import gaussian_blur

    if heatmaps.ndim != 3:
        raise ValueError(f"expected heatmaps [B, H, W], got shape {tuple(heatmaps.shape)}")
    if blur_kernel < 1 or blur_kernel % 2 == 0:
        raise ValueError(f"blur_kernel must be a positive odd number, got {blur_kernel}")
    batch, height, width = heatmaps.shape
    heat = heatmaps.detach().float()
    if not torch.isfinite(heat).all():
        raise FloatingPointError("non-finite values in the heatmaps (check the model's weights)")
    if blur_kernel > 1:
        heat = gaussian_blur(heat[:, None], [blur_kernel, blur_kernel])[:, 0]
    heat = heat.abs()
    peak = heat.flatten(1).amax(dim=1)
    # An all-zero heatmap has no hot pixels: dividing by 1 keeps it zero (no NaNs).
    heat = heat / torch.where(peak > 0, peak, torch.ones_like(peak))[:, None, None]
    hot = heat > threshold

    rows, cols = hot.any(dim=2), hot.any(dim=1)  # [B, H], [B, W]
    found = rows.any(dim=1)
    top, bottom = _first_true(rows), height - 1 - _first_true(rows.flip(1))
    left, right = _first_true(cols), width - 1 - _first_true(cols.flip(1))
    # Nothing above the threshold: the box is the whole image.
    top = torch.where(found, top, torch.zeros_like(top))
    left = torch.where(found, left, torch.zeros_like(left))
    bottom = torch.where(found, bottom, torch.full_like(bottom, height - 1))
    right = torch.where(found, right, torch.full_like(right, width - 1))

    box_height, box_width = bottom - top + 1, right - left + 1
    side = torch.maximum(box_height, box_width).clamp(max=min(height, width))
    # Centre the square on the box (floor division puts an odd surplus below/right),
    # then shift it back inside the image.
    top = (top + torch.div(box_height - side, 2, rounding_mode="floor")).clamp(min=0)
    left = (left + torch.div(box_width - side, 2, rounding_mode="floor")).clamp(min=0)
    top = torch.minimum(top, height - side)
    left = torch.minimum(left, width - side)
    return torch.stack([top, left, side], dim=1).long().reshape(batch, 3)


def _first_true(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first ``True`` per row of a ``[B, L]`` mask (0 for an all-False row)."""
    return mask.to(torch.uint8).argmax(dim=1)


def crop_images(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Square crops ``[B, 3, size, size]`` of ``images`` at ``boxes`` (top, left, side).

    Bilinear resizing with antialiasing (the crops are usually downsampled), clamped
    to ``[0, 1]`` so that rounding to bytes never wraps.
    """
    from torchvision.transforms.functional import resized_crop

    if images.ndim != 4 or boxes.shape != (len(images), 3):
        raise ValueError(
            f"expected images [B, C, H, W] and boxes [B, 3], got {tuple(images.shape)} "
            f"and {tuple(boxes.shape)}"
        )
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    crops = [
        resized_crop(image, int(top), int(left), int(side), int(side), [size, size], antialias=True)
        for image, (top, left, side) in zip(images, boxes.tolist(), strict=True)
    ]
    if not crops:
        return images.new_zeros((0, images.shape[1], size, size))
    return torch.stack(crops).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- driver


def render_crops(
    units: HeatmapUnits,
    dataset: torch.utils.data.Dataset,
    references: TopReferences,
    indices: Sequence[int] | torch.Tensor,
    config: CropConfig,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Crops of the references of units ``indices`` of ``units`` (any kind of unit).

    Row i of ``references`` holds the references of unit i (neurons: channel i of
    ``units.layer``; SAE features: feature i). Every (unit, reference) row starts its
    heatmap with :meth:`UnitKind.heatmaps` (a neuron at the reference's position, an
    SAE feature from its direction), and the heatmap gives the box
    (:func:`square_boxes`). ``dataset`` yields ``(unnormalised image, label, sample_id)``
    and has ``position_of(sample_ids)``; the images of one batch of rows are loaded at
    a time, so memory holds one batch of images and the boxes.

    Returns
    -------
    ``{"boxes": int64 [U, N, 3] (top, left, side in the dataset's image pixels),
    "channels": int64 [U] (the unit indices), "sample_ids": int64 [U, N]}``, and with
    ``config.heatmap_size`` the heatmaps' thumbnails ``"heatmaps": int8 [U, N, s, s]``
    (:func:`heatmap_thumbnails`); :func:`cut_crops` and :func:`iter_crops` cut the crops
    themselves (``config.size``) from the data set.
    """
    device = torch.device(device)
    layer = units.layer
    indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    if len(indices) and (indices.min() < 0 or indices.max() >= references.n_channels):
        raise ValueError(
            f"units {indices.tolist()} are not rows of the references "
            f"({references.n_channels} channels)"
        )
    sample_ids = references.sample_ids[indices].long()  # [U, N]
    if (sample_ids == EMPTY_ID).any():
        raise ValueError(
            f"the references of layer '{layer}' have empty slots (fewer samples than "
            "references.n); crop merged references of a large enough data set"
        )
    n_units, n_refs = sample_ids.shape
    # One row per (unit, reference), unit-major, so the output reshapes to [U, N].
    row_units = indices[:, None].expand(n_units, n_refs).reshape(-1)
    row_positions = references.positions[indices].long().reshape(-1)
    row_ids = sample_ids.reshape(-1)
    dataset_positions = torch.tensor(
        np.asarray(dataset.position_of(row_ids.numpy())), dtype=torch.int64
    )

    rows = len(row_ids)
    boxes = torch.zeros((rows, 3), dtype=torch.int64)
    side = config.heatmap_size
    thumbnails = torch.zeros((rows, side, side), dtype=torch.int8) if side else None
    starts = range(0, rows, config.batch_size)
    progress = tqdm(
        starts,
        total=math.ceil(rows / config.batch_size),
        desc=f"crops {units.label} {layer}",
        unit="batch",
        **progress_kwargs(),
    )
    for start in progress:
        batch = slice(start, min(start + config.batch_size, rows))
        images = torch.stack([dataset[int(pos)][0] for pos in dataset_positions[batch]])
        images = images.to(device)
        heatmaps = units.heatmaps(
            images, row_units[batch], row_positions[batch], tuple(references.spatial_shape)
        )
        heatmaps = heatmaps.cpu()
        boxes[batch] = square_boxes(heatmaps, config.blur_kernel, config.threshold)
        if thumbnails is not None:
            thumbnails[batch] = heatmap_thumbnails(heatmaps, side)
    crops = {
        "boxes": boxes.reshape(n_units, n_refs, 3),
        "channels": indices.clone(),
        "sample_ids": sample_ids.clone(),
    }
    if thumbnails is not None:
        crops["heatmaps"] = thumbnails.reshape(n_units, n_refs, side, side)
    return crops


# --------------------------------------------------------------------------- files


def save_crops(path: str | os.PathLike, crops: dict[str, torch.Tensor], metadata: dict) -> None:
    """One safetensors file with the tensors of :func:`render_crops` (the optional
    ``heatmaps`` included) and ``metadata``."""
    missing = [key for key in CROP_KEYS if key not in crops]
    if missing:
        raise ValueError(f"crops lack {missing}; expected the keys {list(CROP_KEYS)}")
    keys = CROP_KEYS + tuple(key for key in OPTIONAL_CROP_KEYS if key in crops)
    save_tensors(path, {key: crops[key] for key in keys}, metadata=metadata)


def load_crops(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata written by :func:`save_crops`."""
    tensors, metadata = load_tensors(path)
    missing = [key for key in CROP_KEYS if key not in tensors]
    if missing:
        raise ValueError(f"{path} is not a crops file: it lacks {missing}")
    return tensors, metadata


# --------------------------------------------------------------------------- cutting


def crop_bytes(crops: torch.Tensor) -> torch.Tensor:
    """Crops in ``[0, 1]`` (:func:`crop_images`) as uint8, rounded to the nearest byte."""
    return (crops * 255).round().to(torch.uint8)


def cut_crops(
    dataset: torch.utils.data.Dataset,
    sample_ids: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """The uint8 crops ``[..., 3, size, size]`` of ``sample_ids [...]`` at ``boxes [..., 3]``.

    ``dataset`` yields ``(unnormalised image, label, sample_id)`` and has
    ``position_of(sample_ids)`` (the data set the boxes were found on, with the same
    data options); every image of the call is loaded, so callers pass one batch of rows
    (:func:`iter_crops` streams a whole crops file). The result is byte for byte what
    the cropping stage stored when it kept the pixels: :func:`crop_images` at the box,
    rounded by :func:`crop_bytes`.
    """
    sample_ids = torch.as_tensor(sample_ids, dtype=torch.int64)
    boxes = torch.as_tensor(boxes, dtype=torch.int64)
    if boxes.shape != (*sample_ids.shape, 3):
        raise ValueError(
            f"expected boxes [..., 3] for sample ids [...], got {tuple(boxes.shape)} and "
            f"{tuple(sample_ids.shape)}"
        )
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    flat_ids, flat_boxes = sample_ids.reshape(-1), boxes.reshape(-1, 3)
    if len(flat_ids) == 0:
        return torch.zeros((*sample_ids.shape, 3, size, size), dtype=torch.uint8)
    positions = np.asarray(dataset.position_of(flat_ids.numpy())).reshape(-1)
    images = torch.stack([dataset[int(position)][0] for position in positions])
    top, left, side = flat_boxes.unbind(1)
    height, width = images.shape[-2:]
    if (side < 1).any() or (top < 0).any() or (left < 0).any():
        raise ValueError("crop boxes must have non-negative corners and positive sides")
    if (top + side > height).any() or (left + side > width).any():
        raise ValueError(
            f"crop boxes reach outside the {height} x {width} images: were they found on "
            "images of another size (data.image_size, data.resize)?"
        )
    crops = crop_bytes(crop_images(images, flat_boxes, size))
    return crops.reshape(*sample_ids.shape, *crops.shape[1:])


def iter_crops(
    dataset: torch.utils.data.Dataset,
    crops: Mapping[str, torch.Tensor],
    size: int,
    batch_size: int,
) -> Iterator[torch.Tensor]:
    """The uint8 crops of every row of a crops file, ``batch_size`` rows at a time.

    ``crops`` holds ``boxes [C, N, 3]`` and ``sample_ids [C, N]`` (as from
    :func:`load_crops`); rows come channel-major (row ``c * N + n`` is reference n of
    channel c), in batches ``[B, 3, size, size]`` of ``batch_size`` rows (the last one
    shorter). Only one batch of images and crops is in memory at a time.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    sample_ids = torch.as_tensor(crops["sample_ids"], dtype=torch.int64).reshape(-1)
    boxes = torch.as_tensor(crops["boxes"], dtype=torch.int64).reshape(-1, 3)
    if len(boxes) != len(sample_ids):
        raise ValueError(f"{len(boxes)} boxes but {len(sample_ids)} sample ids")
    for start in range(0, len(sample_ids), batch_size):
        batch = slice(start, start + batch_size)
        yield cut_crops(dataset, sample_ids[batch], boxes[batch], size)


# --------------------------------------------------------------------------- directions


def direction_heatmaps(
    model: SubjectModel, images: torch.Tensor, layer: str, directions: torch.Tensor
) -> torch.Tensor:
    """CRP heatmaps ``[B, H, W]`` of a direction in a layer's channel space per row.

    A unit that reads a direction ``w`` from the layer's spatially averaged output (an
    SAE feature: pre-activation ``w . mean_q a(q) + b``) has no single position to start
    from. Its pre-activation splits exactly into the contributions
    ``w_c a_c(q) / |q|`` of every channel c and position q; those start the relevance,
    which zennit's ``EpsilonPlusFlat`` then propagates to the input, as for a neuron.
    Constant terms (biases) are not attributed to the input.

    ``directions`` is ``[B, C]``, one direction per image.
    """
    from crp.attribution import CondAttribution
    from zennit.composites import EpsilonPlusFlat

    if images.ndim != 4 or directions.ndim != 2 or len(directions) != len(images):
        raise ValueError(
            f"expected images [B, 3, H, W] and directions [B, C], got {tuple(images.shape)} "
            f"and {tuple(directions.shape)}"
        )
    model.layer(layer)  # a clear error for an unknown layer name, before any hooks
    if len(images) == 0:
        return images.new_zeros((0, *images.shape[2:]))
    problems: list[str] = []

    def init_rel(activation: torch.Tensor) -> torch.Tensor:
        flat = activation.flatten(2) if activation.ndim > 2 else activation[:, :, None]
        if flat.shape[1] != directions.shape[1]:
            problems.append(
                f"directions have {directions.shape[1]} entries but layer '{layer}' has "
                f"{flat.shape[1]} channels"
            )
            return torch.zeros_like(activation)
        weights = directions.to(flat)[:, :, None] / flat.shape[2]
        return (weights * flat).reshape(activation.shape)

    model.net.eval()
    attribution = CondAttribution(model.net, no_param_grad=True)
    composite = EpsilonPlusFlat(canonizers=canonizers_for(model.net))
    inputs = model.normalize(images).detach().requires_grad_(True)
    # zennit-crp masks the start layer to the conditioned channels: condition on all
    # of them, since the direction's initial relevance already weighs every channel.
    every_channel = list(range(directions.shape[1]))
    conditions = [{layer: every_channel} for _ in range(len(images))]
    with _drop_new_forward_hooks_on_error(model.net):
        result = attribution(inputs, conditions, composite, start_layer=layer, init_rel=init_rel)
    if problems:
        raise ValueError(problems[0])
    return result.heatmap.detach()
