"""A small 4-conv, 2-linear network for quick CPU experiments on 28x28 inputs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .layers import ImageClassifier, init_weights


class SmallCNN(ImageClassifier):
    """Small 4-conv network for quick CPU experiments on 28x28 inputs (e.g. Fashion-MNIST).

    Computes logits (N, num_classes) from images (N, in_channels, H, W) in [0, 1]:
    normalize, [conv3x3(32)-BN-ReLU, conv3x3(32)-BN-ReLU, max-pool 2], [conv3x3(64)-BN-ReLU,
    conv3x3(64)-BN-ReLU, max-pool 2], adaptive average pool to 7x7 (a no-op on 28x28 inputs,
    so 32x32 inputs also fit), flatten, Linear(64*7*7, 256)-ReLU-Dropout(dropout),
    Linear(256, num_classes). About 0.87 M parameters for 1 input channel and 10 classes.

    BatchNorm is included (so the pruning code's BN-channel masking is exercised on CPU and
    training at lr 0.1 is stable); convs have no bias because BN follows them. Module names:
    ``features``, ``classifier``. Init: convs Kaiming-normal (fan_out, ReLU gain), BN weight 1 /
    bias 0, linear bias 0 with PyTorch's default linear weights.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, **common: Any) -> None:
        super().__init__("small-cnn", num_classes, in_channels, **common)

        def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, 32),
            *conv_bn_relu(32, 32),
            nn.MaxPool2d(2),
            *conv_bn_relu(32, 64),
            *conv_bn_relu(64, 64),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 7 * 7, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(self.dropout_rate),
            nn.Linear(256, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))
