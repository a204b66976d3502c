"""SimCLR augmentations on batches of image tensors, seeded by a ``torch.Generator``.

A view is: random resized crop (area share in ``crop_scale``, aspect ratio in
``crop_ratio``, by default 3/4 to 4/3) with a random horizontal flip, then colour jitter (brightness,
contrast, saturation, hue in a random order per image) with probability ``jitter.prob``,
then grayscale with probability ``gray_prob``. Defaults follow the CIFAR recipe of the
solo-learn code base NCL was trained with (jitter strengths 0.8/0.8/0.8/0.2, no blur or
solarisation).

Why not ``torchvision.transforms``: those transforms draw from the global RNG one image
at a time. Here every random number of a batch comes from one CPU generator, in a fixed
order, so a view depends only on the generator's state (reproducible, resumable and the
same on CPU and GPU), and the image operations run batched on the images' device, so a
GPU does the augmentation of a whole batch in a few kernels.

The semantics match torchvision's: crop boxes are drawn as in ``RandomResizedCrop``
(10 attempts, then a centre crop), jitter factors as in ``ColorJitter``, grayscale with
ITU-R 601 luma weights. One difference: the crop is resampled bilinearly without
antialiasing (``grid_sample``), which only matters when a crop is *downscaled* by a
large factor; on CIFAR the crop is at most the input size, so it is always upscaled,
and an upscaled crop equals torchvision's ``resized_crop`` up to rounding.

Images are unnormalised floats in ``[0, 1]``, shaped ``[B, 3, H, W]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from monoscope.config import check_fields, in_range

LUMA = (0.299, 0.587, 0.114)
_CROP_ATTEMPTS = 10


@dataclass(frozen=True)
class ColorJitterConfig:
    """Colour jitter, as torchvision's ``ColorJitter`` inside ``RandomApply``.

    Parameters
    ----------
    brightness, contrast, saturation : jitter strength ``s``; factors are drawn from
        ``[max(0, 1 - s), 1 + s]`` (0 disables).
    hue : hue shift drawn from ``[-hue, hue]`` (in turns, at most 0.5; 0 disables).
    prob : probability of applying the jitter to an image.
    """

    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    prob: float = 0.8

    def __post_init__(self) -> None:
        check_fields(
            self,
            ("brightness contrast saturation", ">= 0"),
            ("hue", in_range(0, 0.5)),
            ("prob", "in [0, 1]"),
            section="augment.jitter",
        )


@dataclass(frozen=True)
class AugmentConfig:
    """SimCLR view distribution.

    Parameters
    ----------
    crop_size : side of the output views.
    crop_scale : (min, max) range of the crop's share of the image area.
    crop_ratio : (min, max) range of the crop's aspect ratio (width / height).
    flip_prob : probability of a horizontal flip.
    jitter : the colour jitter.
    gray_prob : probability of converting to grayscale.
    """

    crop_size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_prob: float = 0.5
    jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    gray_prob: float = 0.2

    def __post_init__(self) -> None:
        check_fields(
            self,
            ("crop_size", "positive"),
            ("flip_prob gray_prob", "in [0, 1]"),
            section="augment",
        )
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        object.__setattr__(self, "crop_ratio", tuple(float(v) for v in self.crop_ratio))
        low, high = self.crop_scale if len(self.crop_scale) == 2 else (0.0, 0.0)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                "augment.crop_scale must be [min, max] with 0 < min <= max <= 1, "
                f"got {list(self.crop_scale)}"
            )
        low, high = self.crop_ratio if len(self.crop_ratio) == 2 else (0.0, 0.0)
        if not 0.0 < low <= high:
            raise ValueError(
                "augment.crop_ratio must be [min, max] with 0 < min <= max, "
                f"got {list(self.crop_ratio)}"
            )
        if not isinstance(self.jitter, ColorJitterConfig):
            raise ValueError("augment.jitter must be a ColorJitterConfig")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` draws from ``U[low, high)`` on the CPU, in float64."""
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop boxes as torchvision's ``RandomResizedCrop`` draws them, for ``n`` images.

    Each image gets up to 10 attempts at a box of random area share in ``scale`` and
    log-uniform aspect ratio in ``ratio``; the first one that fits is used, else a
    centre crop with the aspect ratio clamped into ``ratio``.

    Parameters
    ----------
    n, height, width : int
        Number of images and their size.
    scale, ratio : tuple of float
        Area share and aspect ratio (width / height) ranges.
    generator : torch.Generator, optional
        CPU generator of all draws.

    Returns
    -------
    torch.Tensor
        ``[n, 4]`` int64 boxes ``(top, left, box_height, box_width)``.
    """
    area = height * width
    shape = (n, _CROP_ATTEMPTS)
    share = scale[0] + (scale[1] - scale[0]) * torch.rand(
        shape, generator=generator, dtype=torch.float64
    )
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(
        log_low + (log_high - log_low) * torch.rand(shape, generator=generator, dtype=torch.float64)
    )
    box_w = torch.round(torch.sqrt(area * share * aspect))
    box_h = torch.round(torch.sqrt(area * share / aspect))
    fits = (box_w > 0) & (box_h > 0) & (box_w <= width) & (box_h <= height)
    first = fits.to(torch.int64).argmax(dim=1)  # index of the first box that fits
    rows = torch.arange(n)
    box_w, box_h, found = box_w[rows, first], box_h[rows, first], fits.any(dim=1)

    # Centre-crop fallback, aspect ratio clamped into the allowed range.
    image_ratio = width / height
    if image_ratio < ratio[0]:
        fallback_w, fallback_h = width, int(round(width / ratio[0]))
    elif image_ratio > ratio[1]:
        fallback_w, fallback_h = int(round(height * ratio[1])), height
    else:
        fallback_w, fallback_h = width, height
    box_w = torch.where(found, box_w, torch.full_like(box_w, fallback_w)).to(torch.int64)
    box_h = torch.where(found, box_h, torch.full_like(box_h, fallback_h)).to(torch.int64)

    # Offsets uniform over the valid integer positions (drawn for every image so the
    # number of draws, and hence the generator state afterwards, is fixed).
    top = torch.floor(
        torch.rand(n, generator=generator, dtype=torch.float64) * (height - box_h + 1)
    )
    left = torch.floor(
        torch.rand(n, generator=generator, dtype=torch.float64) * (width - box_w + 1)
    )
    top = torch.where(found, top.to(torch.int64), (height - box_h) // 2)
    left = torch.where(found, left.to(torch.int64), (width - box_w) // 2)
    return torch.stack([top, left, box_h, box_w], dim=1)


def crop_and_resize(
    images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Cut each image's box out, resize it bilinearly to ``size``, optionally mirrored.

    Parameters
    ----------
    images : torch.Tensor
        ``[B, C, H, W]``.
    boxes : torch.Tensor
        ``[B, 4]`` ``(top, left, box_height, box_width)`` in pixels.
    size : int
        Output side.
    flip : torch.Tensor, optional
        ``[B]`` booleans: mirror these outputs left-right.

    Returns
    -------
    torch.Tensor
        ``[B, C, size, size]``.
    """
    batch, channels, height, width = images.shape
    boxes = boxes.to(torch.float64)
    top, left, box_h, box_w = boxes.unbind(dim=1)
    # An affine map from output coordinates in [-1, 1] to the box in input coordinates
    # (align_corners=False: -1 and 1 are the outer edges of the border pixels).
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = box_w / width
    theta[:, 0, 2] = (2 * left + box_w) / width - 1
    theta[:, 1, 1] = box_h / height
    theta[:, 1, 2] = (2 * top + box_h) / height - 1
    if flip is not None:
        theta[:, 0, 0] = torch.where(flip.cpu(), -theta[:, 0, 0], theta[:, 0, 0])
    # Sampling points are kept inside the box (between the centres of its border
    # pixels), so output pixels near the edge never blend in pixels outside the crop;
    # with this, an upscaled crop equals torchvision's crop-then-resize exactly.
    low = torch.stack([(2 * left + 1) / width - 1, (2 * top + 1) / height - 1], dim=1)
    high = torch.stack(
        [(2 * (left + box_w) - 1) / width - 1, (2 * (top + box_h) - 1) / height - 1], dim=1
    )
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    low = low.to(device=images.device, dtype=images.dtype).view(batch, 1, 1, 2)
    high = high.to(device=images.device, dtype=images.dtype).view(batch, 1, 1, 2)
    grid = torch.maximum(torch.minimum(grid, high), low)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    flip_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random resized crop with a random horizontal flip, per image of a batch.

    Parameters
    ----------
    images : torch.Tensor
        ``[B, C, H, W]``.
    size : int
        Output side.
    scale, ratio : tuple of float
        See :func:`sample_crop_boxes`.
    flip_prob : float
        Probability of mirroring an image.
    generator : torch.Generator, optional
        CPU generator of all draws.

    Returns
    -------
    torch.Tensor
        ``[B, C, size, size]``.
    """
    batch, _, height, width = images.shape
    boxes = sample_crop_boxes(batch, height, width, scale, ratio, generator)
    flip = torch.rand(batch, generator=generator) < flip_prob
    return crop_and_resize(images, boxes, size, flip)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma ``[B, 1, H, W]`` of RGB images (ITU-R 601 weights, as torchvision)."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """HSV of RGB images in ``[0, 1]``; hue in turns ``[0, 1)``. ``[B, 3, H, W]``."""
    red, green, blue = images.unbind(dim=1)
    value, _ = images.max(dim=1)
    lowest, _ = images.min(dim=1)
    spread = value - lowest
    saturation = torch.where(value > 0, spread / torch.where(value > 0, value, 1.0), 0.0)
    # Hue: which channel is the maximum decides the sextant; the safe divisor keeps
    # grey pixels (spread 0, hue undefined, set to 0) free of NaN.
    safe = torch.where(spread > 0, spread, 1.0)
    hue = torch.where(
        value == red,
        (green - blue) / safe,
        torch.where(value == green, 2.0 + (blue - red) / safe, 4.0 + (red - green) / safe),
    )
    hue = torch.where(spread > 0, torch.remainder(hue / 6.0, 1.0), 0.0)
    return torch.stack([hue, saturation, value], dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`. ``[B, 3, H, W]``."""
    hue, saturation, value = images.unbind(dim=1)
    scaled = hue * 6.0
    sextant = torch.floor(scaled)
    fraction = scaled - sextant
    sextant = torch.remainder(sextant.to(torch.int64), 6)
    low = value * (1.0 - saturation)
    falling = value * (1.0 - saturation * fraction)
    rising = value * (1.0 - saturation * (1.0 - fraction))
    # Channel values per sextant 0..5, picked with gather along a leading axis.
    table = {
        "red": (value, falling, low, low, rising, value),
        "green": (rising, value, value, falling, low, low),
        "blue": (low, low, rising, value, value, falling),
    }
    index = sextant.unsqueeze(0)
    channels = [torch.stack(table[c]).gather(0, index)[0] for c in ("red", "green", "blue")]
    return torch.stack(channels, dim=1)


def _per_image(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale intensities by a per-image ``factor``; clamped to ``[0, 1]``."""
    return (images * _per_image(factor)).clamp(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean luma by a per-image ``factor``; clamped."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    factor = _per_image(factor)
    return (factor * images + (1.0 - factor) * mean).clamp(0.0, 1.0)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its grayscale version by a per-image ``factor``; clamped."""
    factor = _per_image(factor)
    return (factor * images + (1.0 - factor) * grayscale(images)).clamp(0.0, 1.0)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by a per-image ``shift`` (in turns)."""
    hsv = rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1))


def color_jitter(
    images: torch.Tensor,
    jitter: ColorJitterConfig | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """torchvision-style colour jitter, applied to each image with probability ``jitter.prob``.

    Every selected image gets its own factors and its own random order of the four
    operations.

    Parameters
    ----------
    images : torch.Tensor
        ``[B, 3, H, W]`` in ``[0, 1]``.
    jitter : ColorJitterConfig, optional
        Strengths and probability; the defaults when omitted.
    generator : torch.Generator, optional
        CPU generator of all draws.

    Returns
    -------
    torch.Tensor
        Jittered copy of ``images``.
    """
    jitter = jitter or ColorJitterConfig()
    brightness, contrast, saturation, hue = (
        jitter.brightness,
        jitter.contrast,
        jitter.saturation,
        jitter.hue,
    )
    batch = images.shape[0]
    # All draws happen up front and for every image, so the generator advances by the
    # same amount whatever the outcome.
    apply = torch.rand(batch, generator=generator) < jitter.prob
    order = torch.argsort(torch.rand(batch, 4, generator=generator), dim=1)
    factors = [
        _uniform(batch, max(0.0, 1.0 - brightness), 1.0 + brightness, generator),
        _uniform(batch, max(0.0, 1.0 - contrast), 1.0 + contrast, generator),
        _uniform(batch, max(0.0, 1.0 - saturation), 1.0 + saturation, generator),
        _uniform(batch, -hue, hue, generator),
    ]
    operations = [
        (adjust_brightness, brightness > 0),
        (adjust_contrast, contrast > 0),
        (adjust_saturation, saturation > 0),
        (adjust_hue, hue > 0),
    ]
    out = images.clone()
    for position in range(4):
        for op_index, (operation, enabled) in enumerate(operations):
            if not enabled:
                continue
            chosen = torch.nonzero(apply & (order[:, position] == op_index)).flatten()
            if len(chosen) == 0:
                continue
            factor = factors[op_index][chosen].to(device=images.device, dtype=images.dtype)
            chosen = chosen.to(images.device)
            out[chosen] = operation(out[chosen], factor)
    return out


def random_grayscale(
    images: torch.Tensor, prob: float = 0.2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace each image by its luma (in all three channels) with probability ``prob``."""
    chosen = (torch.rand(images.shape[0], generator=generator) < prob).to(images.device)
    gray = grayscale(images).expand_as(images)
    return torch.where(chosen.view(-1, 1, 1, 1), gray, images)


def simclr_view(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One random SimCLR view of each image of a batch.

    Parameters
    ----------
    images : torch.Tensor
        ``[B, 3, H, W]`` in ``[0, 1]``, on any device.
    config : AugmentConfig
        The view distribution.
    generator : torch.Generator, optional
        CPU generator of all draws; the global CPU RNG when omitted.

    Returns
    -------
    torch.Tensor
        ``[B, 3, crop_size, crop_size]`` in ``[0, 1]``, on the images' device.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images [B, 3, H, W], got {tuple(images.shape)}")
    view = random_resized_crop(
        images,
        config.crop_size,
        config.crop_scale,
        config.crop_ratio,
        config.flip_prob,
        generator,
    )
    view = color_jitter(view, config.jitter, generator)
    # Bilinear resampling can overshoot [0, 1] by rounding only; the clamp keeps the
    # documented range exact.
    return random_grayscale(view, config.gray_prob, generator).clamp(0.0, 1.0)


def two_views(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent SimCLR views of each image (the positive pairs of InfoNCE).

    Parameters
    ----------
    images : torch.Tensor
        ``[B, 3, H, W]`` in ``[0, 1]``.
    config : AugmentConfig
        The view distribution.
    generator : torch.Generator, optional
        CPU generator of all draws.

    Returns
    -------
    tuple of torch.Tensor
        Two ``[B, 3, crop_size, crop_size]`` batches.
    """
    return simclr_view(images, config, generator), simclr_view(images, config, generator)
