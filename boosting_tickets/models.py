"""Model zoo for boosting tickets: WRN, VGG-16-BN, PreAct ResNet-18 and a small CNN.

Every model takes float images in [0, 1] of shape (N, C, H, W) and returns logits of shape
(N, num_classes). Per-channel normalization lives inside the model (a :class:`Normalize`
submodule applied first), so attacks work in pixel space. Normalization buffers are not
persistent: they never appear in ``state_dict``, which keeps our WideResNet and PreActResNet18
checkpoints key-for-key compatible with RobustBench's architectures.

Models are built by name through :func:`build_model`:

* ``"wrn-D-K"`` -- pre-activation WideResNet of depth D (D = 6n + 4, n >= 1) and widen factor K,
  e.g. ``"wrn-16-4"``, ``"wrn-28-10"``, ``"wrn-34-10"`` (Zagoruyko & Komodakis 2016).
* ``"vgg16-bn"`` -- the CIFAR VGG-16 with BatchNorm used by the boosting-tickets paper.
* ``"preact-resnet18"`` -- pre-activation ResNet-18 (He et al. 2016), as in Wong et al. 2020.
* ``"small-cnn"`` -- a 4-conv, 2-linear network for quick CPU runs on 28x28 inputs.

Paper: Li et al., "Towards Practical Lottery Ticket Hypothesis for Adversarial Training"
(arXiv 2003.05733).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from boosting_tickets.errors import UserError

__all__ = [
    "MODEL_NAMES",
    "WRN_NAME_FORM",
    "Normalize",
    "PreActResNet18",
    "SmallCNN",
    "VGG16BN",
    "WideResNet",
    "build_model",
    "count_parameters",
    "prunable_parameters",
    "validate_model_name",
]

#: Documentation of the WideResNet name form accepted by :func:`build_model`.
WRN_NAME_FORM = "wrn-D-K (depth D = 6n+4 >= 10, widen factor K >= 1, e.g. wrn-16-4, wrn-34-10)"

_WRN_RE = re.compile(r"^wrn-(\d+)-(\d+)$")


# --------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------


class Normalize(nn.Module):
    """Per-channel standardization ``(x - mean) / std`` applied inside a model.

    Args:
        mean: one value per channel (or a single value broadcast over all channels).
        std: same length as ``mean``; every entry must be > 0.

    Input and output have shape (N, C, H, W). ``mean``/``std`` are stored as buffers of shape
    (1, C, 1, 1) registered with ``persistent=False`` so they move with ``.to()`` but never
    appear in ``state_dict``. When mean is all 0 and std all 1 the module returns its input
    unchanged (the same tensor object).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_list = _float_list(mean, "mean")
        std_list = _float_list(std, "std")
        if len(mean_list) != len(std_list):
            raise UserError(
                f"normalization mean has {len(mean_list)} values but std has {len(std_list)}; "
                "give one value per channel for both"
            )
        if any(not s > 0 for s in std_list):
            raise UserError(f"normalization std must be > 0 everywhere, got {std_list}")
        self.is_identity = all(m == 0.0 for m in mean_list) and all(s == 1.0 for s in std_list)
        shape = (1, len(mean_list), 1, 1)
        self.register_buffer("mean", torch.tensor(mean_list).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std_list).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return x
        # Cast to the input dtype so half/bfloat16 inputs are not promoted to float32.
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _float_list(values: Sequence[float], what: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise UserError(
            f"normalization {what} must be a sequence of numbers, got {values!r}"
        ) from None
    if not out:
        raise UserError(f"normalization {what} is empty; give one value per channel")
    if any(v != v or v in (float("inf"), float("-inf")) for v in out):
        raise UserError(f"normalization {what} must be finite, got {out}")
    return out


def _make_normalize(
    mean: Sequence[float] | None, std: Sequence[float] | None, in_channels: int
) -> Normalize:
    """Build the input normalizer; a missing mean means 0 and a missing std means 1."""
    if mean is None and std is None:
        return Normalize([0.0] * in_channels, [1.0] * in_channels)
    mean_list = _float_list(mean, "mean") if mean is not None else None
    std_list = _float_list(std, "std") if std is not None else None
    n = len(mean_list) if mean_list is not None else len(std_list)  # type: ignore[arg-type]
    mean_list = mean_list if mean_list is not None else [0.0] * n
    std_list = std_list if std_list is not None else [1.0] * n
    for what, vals in (("mean", mean_list), ("std", std_list)):
        if len(vals) not in (1, in_channels):
            raise UserError(
                f"normalization {what} has {len(vals)} values but the model has {in_channels} "
                f"input channels; give 1 or {in_channels} values"
            )
    return Normalize(mean_list, std_list)


def _check_common(num_classes: int, in_channels: int, dropout: float) -> None:
    for what, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{what} must be a positive integer, got {value!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise UserError(f"dropout must be a number in [0, 1), got {dropout!r}")


# --------------------------------------------------------------------------------------------
# WideResNet (RobustBench / TRADES layout)
# --------------------------------------------------------------------------------------------


class _WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus shortcut.

    When the channel count changes, the shortcut is a 1x1 conv (``convShortcut``) applied to the
    *activated* input, as in RobustBench's WideResNet; otherwise it is the identity on the raw
    input. Attribute names match RobustBench so state_dict keys are identical.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
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
        self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float
    ) -> None:
        super().__init__()
        blocks = [_WideBasicBlock(in_planes, out_planes, stride, dropout)]
        blocks += [_WideBasicBlock(out_planes, out_planes, 1, dropout) for _ in range(n - 1)]
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


class WideResNet(nn.Module):
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

    Defaults: depth 28, widen_factor 10, 10 classes, 3 input channels, no dropout, identity
    normalization. Init: convs Kaiming-normal (fan_out, ReLU gain), BN weight 1 / bias 0,
    linear bias 0 (linear weight keeps PyTorch's default), as in RobustBench.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_wrn_shape(depth, widen_factor)
        _check_common(num_classes, in_channels, dropout)
        self.arch = f"wrn-{depth}-{widen_factor}"
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = _make_normalize(mean, std, in_channels)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideGroup(n, widths[0], widths[1], 1, dropout)
        self.block2 = _WideGroup(n, widths[1], widths[2], 2, dropout)
        self.block3 = _WideGroup(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes, bias=True)
        self.num_features = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


# --------------------------------------------------------------------------------------------
# VGG-16 with BatchNorm (the paper's CIFAR variant)
# --------------------------------------------------------------------------------------------

# The paper's code uses the "rethinking network pruning" CIFAR VGG-16: no 5th max-pool; a
# 2x2 average pool takes the 2x2 maps of a 32x32 input to 1x1 instead.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip


class VGG16BN(nn.Module):
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

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_common(num_classes, in_channels, dropout)
        self.arch = "vgg16-bn"
        self.normalize = _make_normalize(mean, std, in_channels)
        layers: list[nn.Module] = []
        channels = in_channels
        for v in _VGG16_CFG:
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
            nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.normalize(x))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.classifier(out)


# --------------------------------------------------------------------------------------------
# Pre-activation ResNet-18 (RobustBench / Wong2020Fast layout)
# --------------------------------------------------------------------------------------------


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


class PreActResNet18(nn.Module):
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

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_common(num_classes, in_channels, dropout)
        self.arch = "preact-resnet18"
        self.normalize = _make_normalize(mean, std, in_channels)
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
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(self.dropout(out))


# --------------------------------------------------------------------------------------------
# Small CNN for CPU work
# --------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
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

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check_common(num_classes, in_channels, dropout)
        self.arch = "small-cnn"
        self.normalize = _make_normalize(mean, std, in_channels)

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
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_FIXED_MODELS: MappingProxyType[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        "vgg16-bn": VGG16BN,
        "preact-resnet18": PreActResNet18,
        "small-cnn": SmallCNN,
    }
)

#: The fixed model names; WideResNets are named by the pattern in :data:`WRN_NAME_FORM`.
MODEL_NAMES: tuple[str, ...] = tuple(_FIXED_MODELS)


def _valid_forms() -> str:
    return f"{WRN_NAME_FORM}, " + ", ".join(MODEL_NAMES)


def validate_model_name(name: str) -> str:
    """Check a model name and return its canonical form (lower case, no leading zeros).

    Valid names are ``"wrn-D-K"`` with D = 6n + 4 >= 10 and K >= 1 (e.g. ``"wrn-16-4"``,
    ``"wrn-34-10"``) and the entries of :data:`MODEL_NAMES` (``"vgg16-bn"``,
    ``"preact-resnet18"``, ``"small-cnn"``). Raises :class:`UserError` listing the valid forms
    otherwise.
    """
    if not isinstance(name, str):
        raise UserError(f"model name must be a string, got {name!r}; valid: {_valid_forms()}")
    key = name.strip().lower()
    if key in _FIXED_MODELS:
        return key
    match = _WRN_RE.match(key)
    if match is None:
        raise UserError(f"unknown model {name!r}; valid: {_valid_forms()}")
    depth, widen = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6:
        raise UserError(
            f"bad WideResNet depth {depth} in {name!r}: depth must be 6n+4 >= 10 "
            "(10, 16, 22, 28, 34, 40, ...), e.g. wrn-16-4 or wrn-34-10"
        )
    if widen < 1:
        raise UserError(f"bad WideResNet widen factor {widen} in {name!r}: use K >= 1")
    return f"wrn-{depth}-{widen}"


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """Build a freshly initialized model by name (see :func:`validate_model_name`).

    Args:
        name: ``"wrn-D-K"``, ``"vgg16-bn"``, ``"preact-resnet18"`` or ``"small-cnn"``.
        num_classes: number of output logits.
        in_channels: image channels (1 for Fashion-MNIST, 3 for CIFAR-10).
        mean, std: per-channel normalization applied inside the model (1 or ``in_channels``
            values each); ``None`` means mean 0 / std 1 (identity when both are ``None``).
        dropout: dropout probability in [0, 1); inside the blocks for WRNs, before the last
            linear layer otherwise. Default 0.

    Returns a module mapping (N, in_channels, H, W) images in [0, 1] to (N, num_classes) logits,
    with attribute ``arch`` set to the canonical name (not part of ``state_dict``).
    """
    arch = validate_model_name(name)
    kwargs = dict(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
    if arch in _FIXED_MODELS:
        model = _FIXED_MODELS[arch](mean=mean, std=std, **kwargs)
    else:
        _, depth, widen = arch.split("-")
        model = WideResNet(int(depth), int(widen), mean=mean, std=std, **kwargs)
    model.arch = arch
    return model


# --------------------------------------------------------------------------------------------
# Parameter helpers
# --------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return (total, nonzero) element counts over ``model.parameters()`` (shared ones once)."""
    total = 0
    nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()).item())
    return total, nonzero


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Return the weights that magnitude pruning acts on, keyed by ``named_parameters`` name.

    These are the ``weight`` tensors of every ``nn.Conv2d`` and ``nn.Linear`` (the classifier
    included, as in the paper's global pruning), in ``named_parameters`` order, e.g.
    ``"conv1.weight"``, ``"block1.layer.0.conv1.weight"``, ..., ``"fc.weight"``. Biases and
    BatchNorm parameters are excluded.
    """
    weight_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    return {name: p for name, p in model.named_parameters() if id(p) in weight_ids}
