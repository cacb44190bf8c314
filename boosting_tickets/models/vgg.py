"""The CIFAR VGG-16 with BatchNorm used by the boosting-tickets paper (Li et al., arXiv 2003.05733)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ImageClassifier, init_weights
from .registry import VGG16_CFG


class VGG16BN(ImageClassifier):
    """CIFAR VGG-16 with BatchNorm, as used by the boosting-tickets paper (arXiv 2003.05733).

    Computes logits (N, num_classes) from images (N, in_channels, H, W) in [0, 1]. Layout
    follows the official code (github.com/boosting-ticket/ticket_robust, ``models.vgg``):
    13 conv3x3 (pad 1, no bias) + BN + ReLU layers with channels
    64,64,M,128,128,M,256,256,256,M,512,512,512,M,512,512,512 (M = 2x2 max-pool; there is no
    5th max-pool), global average pooling (the code's ``AvgPool2d(2)`` on 2x2 maps; adaptive here
    so 28x28 inputs also work), then the classifier Linear(512, 512) - BatchNorm1d - ReLU -
    Dropout(dropout) - Linear(512, num_classes). Module names: ``features``, ``classifier``.

    Init as in the official code: convs Kaiming-normal (fan_out, ReLU gain); BatchNorm2d weight
    0.5, bias 0; linear weights N(0, 0.01), biases 0; BatchNorm1d at PyTorch defaults.

    Note: BatchNorm1d (and the last BatchNorm2d on 28x28 inputs, whose maps are 1x1) cannot run
    in training mode on a batch of one image; drop or pad a final batch of size 1.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, **common: Any) -> None:
        super().__init__("vgg16-bn", num_classes, in_channels, **common)
        layers: list[nn.Module] = []
        channels = in_channels
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(v, int)
                layers += [
                    nn.Conv2d(channels, v, 3, padding=1, bias=False),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                channels = v
        self.features = nn.Sequential(*layers)
        # Dropout is always present (p may be 0) so classifier indices, hence state_dict keys,
        # do not depend on the dropout setting.
        self.classifier = nn.Sequential(
            nn.Linear(channels, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Dropout(self.dropout_rate),
            nn.Linear(512, num_classes),
        )
        init_weights(self, bn_weight=0.5, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.normalize(x))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.classifier(out)
