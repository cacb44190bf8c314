"""Pre-activation ResNet-18 (He et al. 2016) in the layout of RobustBench's ``Wong2020Fast``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ImageClassifier


class _PreActBlock(nn.Module):
    """Pre-activation basic block with RobustBench's ``PreActBlock`` names and forward pass.

    out = conv2(ReLU(BN(conv1(ReLU(BN(x)))))) + shortcut(x), where the shortcut is the identity
    or a 1x1 strided conv (``shortcut.0``) applied to the raw input ``x``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(x))


class PreActResNet18(ImageClassifier):
    """Pre-activation ResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks").

    Computes logits (N, num_classes) from images (N, in_channels, H, W) in [0, 1]: normalize,
    conv3x3 (64), four stages of two pre-activation blocks (64, 128, 256, 512 channels; strides
    1, 2, 2, 2), global average pooling, (dropout), linear. This is the architecture of
    RobustBench's ``Wong2020Fast`` ("Fast is better than free"): no BN-ReLU before pooling, and
    the projection shortcut reads the un-activated block input.

    The state_dict has exactly the keys and shapes of
    ``robustbench.model_zoo.architectures.resnet.PreActResNet18()`` (with ``in_channels=3``,
    ``num_classes=10``). RobustBench's ``Wong2020FastNet`` additionally stores its normalization
    as ``mu``/``sigma`` buffers; drop those keys and pass them as ``mean``/``std`` instead.
    Pooling is adaptive (equals ``avg_pool2d(4)`` on 32x32 inputs). Init: PyTorch defaults.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, **common: Any) -> None:
        super().__init__("preact-resnet18", num_classes, in_channels, **common)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        stages = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(
                    _PreActBlock(in_planes, planes, stride), _PreActBlock(planes, planes, 1)
                )
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.dropout = nn.Dropout(self.dropout_rate)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(self.dropout(out))
