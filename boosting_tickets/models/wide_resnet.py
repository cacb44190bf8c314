"""Pre-activation WideResNet (Zagoruyko & Komodakis 2016) in the RobustBench / TRADES layout.

Names ``wrn-D-K``: depth D = 6n + 4 (n >= 1) and widen factor K, e.g. ``wrn-16-4``, ``wrn-28-10``,
``wrn-34-10`` (the paper's Table 3 model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError
from .layers import ImageClassifier, init_weights


class _WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus shortcut.

    When the channel count changes, the shortcut is a 1x1 conv (``convShortcut``) applied to the
    *activated* input, as in RobustBench's WideResNet; otherwise it is the identity on the raw
    input. Attribute names match RobustBench so state_dict keys are identical.
    """

    def __init__(
        self, in_planes: int, out_planes: int, stride: int, dropout: float, mid: int | None = None
    ) -> None:
        super().__init__()
        mid = out_planes if mid is None else mid  # the inner width: fewer in a slim WRN
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = float(dropout)
        self.convShortcut: nn.Conv2d | None = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(
                in_planes, out_planes, 1, stride=stride, padding=0, bias=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        if self.convShortcut is None:
            shortcut = x
        else:
            shortcut = self.convShortcut(activated)
        out = self.relu2(self.bn2(self.conv1(activated)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + shortcut


class _WideGroup(nn.Module):
    """A stage of ``n`` blocks; the ``layer`` attribute name matches RobustBench's NetworkBlock."""

    def __init__(
        self,
        n: int,
        in_planes: int,
        out_planes: int,
        stride: int,
        dropout: float,
        mids: list[int] | None = None,
    ) -> None:
        super().__init__()
        mids = [out_planes] * n if mids is None else mids
        blocks = [_WideBasicBlock(in_planes, out_planes, stride, dropout, mids[0])]
        blocks += [_WideBasicBlock(out_planes, out_planes, 1, dropout, m) for m in mids[1:]]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _check_wrn_shape(depth: int, widen_factor: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise UserError(
            f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), "
            f"got {depth!r}"
        )
    if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or widen_factor < 1:
        raise UserError(f"WideResNet widen factor must be a positive integer, got {widen_factor!r}")


class WideResNet(ImageClassifier):
    """Pre-activation WideResNet (Zagoruyko & Komodakis 2016) in the RobustBench/TRADES layout.

    Computes logits (N, num_classes) from images (N, in_channels, H, W) in [0, 1]: normalize,
    conv3x3 (16 channels), three stages of (depth-4)/6 pre-activation blocks with 16K, 32K, 64K
    channels (strides 1, 2, 2), BN-ReLU, global average pooling, linear. Used for the paper's
    WRN-34-10 experiments and the depth/width ablations.

    The state_dict has exactly the keys and shapes of
    ``robustbench.model_zoo.architectures.wide_resnet.WideResNet(depth, num_classes,
    widen_factor, sub_block1=False, dropRate=dropout, bias_last=True)`` (with
    ``in_channels=3``); with identity normalization the logits are the same. Pooling is
    adaptive to 1x1, which equals RobustBench's ``avg_pool2d(8)`` on 32x32 inputs and also
    handles 28x28 inputs (7x7 final maps).

    ``mid_widths`` (one per block, in order) makes a slim WRN: each block's inner width (conv1's
    output, bn2, conv2's input) is that many channels instead of the stage's; the residual stream
    keeps its width. Structured tickets are such networks (``tickets.structured``).

    Defaults: depth 28, widen_factor 10, 10 classes, 3 input channels, no dropout, identity
    normalization, full inner widths. Init: convs Kaiming-normal (fan_out, ReLU gain), BN weight 1 / bias 0,
    linear bias 0 (linear weight keeps PyTorch's default), as in RobustBench.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        mid_widths: Sequence[int] | None = None,
        **common: Any,
    ) -> None:
        _check_wrn_shape(depth, widen_factor)
        n = (depth - 4) // 6
        mids = None if mid_widths is None else [int(m) for m in mid_widths]
        if mids is not None and len(mids) != 3 * n:
            raise UserError(f"mid_widths needs {3 * n} widths (one per block), got {len(mids)}")
        name = f"wrn-{depth}-{widen_factor}" + ("" if mids is None else
                                               "-mid-" + "-".join(map(str, mids)))  # fmt: skip
        super().__init__(name, num_classes, in_channels, **common)
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        def part(g: int) -> list[int] | None:
            return None if mids is None else mids[g * n : (g + 1) * n]

        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideGroup(n, widths[0], widths[1], 1, self.dropout_rate, part(0))
        self.block2 = _WideGroup(n, widths[1], widths[2], 2, self.dropout_rate, part(1))
        self.block3 = _WideGroup(n, widths[2], widths[3], 2, self.dropout_rate, part(2))
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes, bias=True)
        self.num_features = widths[3]
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)
