"""Layers and helpers shared by every architecture: in-model normalization, argument checks,
parameter counts and the weights pruning acts on.

Every model takes float images in [0, 1] of shape (N, C, H, W); per-channel normalization lives
inside the model (a :class:`Normalize` submodule applied first), so attacks work in pixel space.
Normalization buffers are not persistent: they never appear in ``state_dict``, which keeps our
WideResNet and PreActResNet18 checkpoints key-for-key compatible with RobustBench's architectures.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import UserError


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


def make_normalize(
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


def check_common(num_classes: int, in_channels: int, dropout: float) -> None:
    for what, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{what} must be a positive integer, got {value!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise UserError(f"dropout must be a number in [0, 1), got {dropout!r}")


class ImageClassifier(nn.Module):
    """What every architecture shares: argument checks, in-model normalization, its name.

    Subclasses take ``num_classes``, ``in_channels`` and the common keyword arguments ``dropout``
    (a rate in [0, 1), default 0), ``mean`` and ``std`` (per-channel normalization; None = mean 0,
    std 1), and map images (N, in_channels, H, W) in [0, 1] to logits (N, num_classes).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        in_channels: int,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        check_common(num_classes, in_channels, dropout)
        self.arch = arch
        self.dropout_rate = float(dropout)
        self.normalize = make_normalize(mean, std, in_channels)


def init_weights(
    model: nn.Module, *, bn_weight: float = 1.0, linear_std: float | None = None
) -> None:
    """The usual init: convs Kaiming-normal (fan_out, ReLU gain), BatchNorm2d weight ``bn_weight``
    and bias 0, linear biases 0 and, with ``linear_std``, linear weights N(0, linear_std)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, bn_weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


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
