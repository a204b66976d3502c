"""Networks of contrastive pretraining: backbone, projector and the non-negative map.

The model is ``x -> backbone -> h (512) -> projector -> p -> nonneg -> z``. The loss
normalises ``z`` to unit length; downstream evaluation uses ``h`` (``features``) or
``z`` (``embed``, before normalisation).

Non-negative maps (the only difference between SimCLR and NCL):

``none``
    identity: plain SimCLR.
``relu``
    ``z = max(p, 0)``.
``relu_gelu_grad``
    forward exactly ReLU, backward with GELU's derivative
    ``d/dp GELU(p) = Phi(p) + p * phi(p)`` (standard normal CDF and density). ReLU's
    gradient is zero for every negative pre-activation, so an output dimension that
    turns negative on all samples never recovers ("dead" dimension); GELU's derivative
    is small but non-zero there, which keeps such dimensions trainable while the
    features themselves stay exactly non-negative. NCL uses this on CIFAR.

Images reach :meth:`ContrastiveModel.features` and :meth:`ContrastiveModel.embed`
already normalised (:meth:`ContrastiveModel.normalize`), as in
:class:`monoscope.models.SubjectModel`: data sets yield images in ``[0, 1]`` and input
noise experiments perturb the normalised image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

NONNEG_MAPS = ("none", "relu", "relu_gelu_grad")
BACKBONE_WIDTH = 64  # ResNet-18's first-stage channels
BACKBONE_DIM = 8 * BACKBONE_WIDTH  # ResNet-18's pooled feature width

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_derivative(x: torch.Tensor) -> torch.Tensor:
    """Derivative of the exact (erf) GELU, ``Phi(x) + x * phi(x)``.

    Parameters
    ----------
    x : torch.Tensor
        Pre-activations.

    Returns
    -------
    torch.Tensor
        Same shape as ``x``.
    """
    cdf = 0.5 * (1.0 + torch.erf(x * _INV_SQRT_2))
    density = torch.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return cdf + x * density


class ReLUWithGELUGrad(torch.autograd.Function):
    """``relu(x)`` in the forward pass, GELU's derivative in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        # Evaluated in float32 at least: under autocast x may be half precision, where
        # erf/exp lose most of their digits.
        precise = x.to(torch.promote_types(x.dtype, torch.float32))
        slope = gelu_derivative(precise).to(grad_output.dtype)
        return grad_output * slope


def relu_gelu_grad(x: torch.Tensor) -> torch.Tensor:
    """Functional form of :class:`ReLUWithGELUGrad`."""
    return ReLUWithGELUGrad.apply(x)


class NonNegative(nn.Module):
    """The map applied to the projector output before normalisation.

    Parameters
    ----------
    kind : str
        One of :data:`NONNEG_MAPS`.
    """

    def __init__(self, kind: str = "relu_gelu_grad") -> None:
        super().__init__()
        if kind not in NONNEG_MAPS:
            raise ValueError(f"nonneg must be one of {NONNEG_MAPS}, got '{kind}'")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            return torch.relu(x)
        if self.kind == "relu_gelu_grad":
            return relu_gelu_grad(x)
        return x

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def resnet18_backbone(cifar_stem: bool = True, width: int = BACKBONE_WIDTH) -> nn.Module:
    """A randomly initialised ResNet-18 whose output is the pooled feature (``8 * width``).

    Parameters
    ----------
    cifar_stem : bool
        Replace the 7x7 stride-2 ``conv1`` and the max pool by one 3x3 stride-1
        convolution. On 32x32 images the ImageNet stem would shrink the input to 8x8
        before the first residual stage and lose most spatial detail.
    width : int
        Channels of the first stage; the stages have ``width, 2 width, 4 width,
        8 width``. 64 is ResNet-18 itself (torchvision's network); smaller widths give
        the same topology at a fraction of the cost, for CPU demos and tests.

    Returns
    -------
    torch.nn.Module
        A ``torchvision`` ResNet with ``fc`` replaced by the identity.
    """
    from torchvision.models import resnet18
    from torchvision.models.resnet import BasicBlock, ResNet

    if width < 1:
        raise ValueError(f"backbone width must be positive, got {width}")
    if width == BACKBONE_WIDTH:
        # num_classes only sizes the fc layer that is dropped right away.
        net = resnet18(weights=None, num_classes=10)
    else:
        net = _scaled_resnet18(ResNet, BasicBlock, width)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def _scaled_resnet18(resnet_class, block, width: int) -> nn.Module:
    """torchvision's ResNet-18 with ``width`` instead of 64 channels in the first stage.

    torchvision hard-codes 64 in ``ResNet.__init__``; building the 64-wide network and
    then rebuilding its stem and stages at ``width`` keeps torchvision's block, layer
    names and initialisation, so state dicts have the same keys at every width.
    """
    net = resnet_class(block, [2, 2, 2, 2], num_classes=10)
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(block, width, 2)
    net.layer2 = net._make_layer(block, 2 * width, 2, stride=2)
    net.layer3 = net._make_layer(block, 4 * width, 2, stride=2)
    net.layer4 = net._make_layer(block, 8 * width, 2, stride=2)
    # The same initialisation as torchvision's constructor applies to its own modules.
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return net


def projector(
    in_dim: int = BACKBONE_DIM, hidden_dim: int = 2048, out_dim: int = 256, batch_norm: bool = True
) -> nn.Sequential:
    """The projection head ``Linear - BN - ReLU - Linear``.

    Parameters
    ----------
    in_dim, hidden_dim, out_dim : int
        Widths; NCL on CIFAR uses 512 -> 2048 -> 256.
    batch_norm : bool
        Put a batch norm after the first linear layer (SimCLR's head). Without it the
        first layer keeps its bias.

    Returns
    -------
    torch.nn.Sequential
    """
    for key, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
        if value < 1:
            raise ValueError(f"projector {key} must be positive, got {value}")
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)


class ContrastiveModel(nn.Module):
    """Backbone, projector and non-negative map, with the input normalisation.

    Parameters
    ----------
    backbone : torch.nn.Module
        Maps normalised images ``[B, 3, H, W]`` to features ``[B, D]``.
    projector : torch.nn.Module
        Maps ``[B, D]`` to ``[B, K]``.
    nonneg : NonNegative or str
        The map applied to the projector output (a kind from :data:`NONNEG_MAPS`).
    mean, std : sequence of float, optional
        Per-channel statistics used by :meth:`normalize`; identity when omitted.
    feature_dim : int
        ``D``, the backbone's output width.
    """

    def __init__(
        self,
        backbone: nn.Module,
        projector: nn.Module,
        nonneg: NonNegative | str = "relu_gelu_grad",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        feature_dim: int = BACKBONE_DIM,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.nonneg = nonneg if isinstance(nonneg, NonNegative) else NonNegative(nonneg)
        self.feature_dim = feature_dim
        mean = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0), dtype=torch.float32)
        std = torch.tensor(std if std is not None else (1.0, 1.0, 1.0), dtype=torch.float32)
        if (std <= 0).any():
            raise ValueError(f"std must be positive, got {std.tolist()}")
        # Not persistent: the statistics are part of the config, and keeping them out of
        # the state dict means weight files hold network parameters only.
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` for images in ``[0, 1]``, ``[B, 3, H, W]``."""
        return (images - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, D]`` of normalised images."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projector output after the non-negative map, ``[B, K]`` (not normalised)."""
        return self.nonneg(self.projector(self.backbone(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def build_contrastive_model(
    nonneg: str = "relu_gelu_grad",
    cifar_stem: bool = True,
    hidden_dim: int = 2048,
    out_dim: int = 256,
    projector_bn: bool = True,
    mean: Sequence[float] | None = CIFAR10_MEAN,
    std: Sequence[float] | None = CIFAR10_STD,
    width: int = BACKBONE_WIDTH,
) -> ContrastiveModel:
    """A randomly initialised ResNet-18 :class:`ContrastiveModel`.

    Parameters
    ----------
    nonneg : str
        Non-negative map, one of :data:`NONNEG_MAPS`.
    cifar_stem : bool
        See :func:`resnet18_backbone`.
    hidden_dim, out_dim : int
        Projector widths.
    projector_bn : bool
        Batch norm in the projector.
    mean, std : sequence of float, optional
        Input normalisation statistics.
    width : int
        First-stage channels of the backbone (:func:`resnet18_backbone`); the feature
        width is ``8 * width``.

    Returns
    -------
    ContrastiveModel
    """
    return ContrastiveModel(
        resnet18_backbone(cifar_stem, width),
        projector(8 * width, hidden_dim, out_dim, projector_bn),
        NonNegative(nonneg),
        mean=mean,
        std=std,
        feature_dim=8 * width,
    )
