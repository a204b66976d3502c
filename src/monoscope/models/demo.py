"""The demo subject model: a small ResNet-style CNN with a narrow upper layer.

It is built from torchvision's ``BasicBlock`` so that zennit's ``ResNetCanonizer``
applies to it unchanged, exactly as to a torchvision ResNet. Layer names follow
torchvision (``layer1`` .. ``layer4``), so configs written for a ResNet read the same.

Trained on *merged* digit labels (pairs of digits share a class) with fewer upper
channels than digits, its upper neurons must respond to several digits: planted
polysemanticity with a known ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

# The kinds of a trained demo network's file and of its training checkpoint
# (:mod:`monoscope.checkpoints`).
DEMO_MODEL_KIND = "demo_cnn"
DEMO_CHECKPOINT_KIND = "demo_cnn_checkpoint"


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    return nn.Sequential(BasicBlock(in_channels, out_channels, stride, downsample))


class DemoCNN(nn.Module):
    """``stem -> layer1..layer4 -> global average pool -> fc``.

    Parameters
    ----------
    widths : channels of layer1..layer4; the last one is the narrow upper layer.
    num_classes : outputs of the classifier.
    in_channels : image channels.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 32, 8),
        num_classes: int = 5,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"DemoCNN needs four stage widths, got {list(widths)}")
        self.widths = tuple(int(width) for width in widths)
        self.num_classes = int(num_classes)
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _stage(widths[0], widths[0], stride=1)
        self.layer2 = _stage(widths[0], widths[1], stride=2)
        self.layer3 = _stage(widths[1], widths[2], stride=2)
        self.layer4 = _stage(widths[2], widths[3], stride=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled output of the upper layer (the judge uses it as its embedding)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
