"""The model registry: architecture families, each parsing and validating its own names.

Every model maps float images (N, C, H, W) in [0, 1] to logits (N, num_classes), normalizing inside
(``layers.Normalize``). Built-in families:

* ``wrn-D-K`` -- pre-activation WideResNet of depth D = 6n + 4 (n >= 1) and widen factor K
  (Zagoruyko & Komodakis 2016), e.g. ``wrn-16-4``, ``wrn-34-10``; state_dicts load with
  ``strict=True`` into RobustBench's ``WideResNet``;
* ``vgg16-bn`` -- the CIFAR VGG-16 with BatchNorm of the boosting-tickets paper;
* ``preact-resnet18`` -- pre-activation ResNet-18 (He et al. 2016), as in Wong et al. 2020;
* ``small-cnn`` -- a 4-conv, 2-linear network for quick CPU runs on 28x28 inputs.

A family also counts the FLOPs of one forward pass analytically (2 per multiply-add of every conv and
linear layer; BatchNorm, activations and pooling are not counted -- exactly what torch's
``FlopCounterMode`` reports, which a test checks), so planning a suite needs no torch. Plugins add
families by declaring ``MODEL_FAMILIES``, a tuple of :class:`ModelFamily`. This module imports no
torch; :func:`build_model` imports the family's implementation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError
from ..core.registry import Entry, Registry, build_registry

if TYPE_CHECKING:
    from torch import nn

Params = Mapping[str, Any]


@dataclass(frozen=True)
class ModelFamily(Entry):
    """One registry entry: a family of architectures named by a pattern (``description``: the
    accepted name form, e.g. ``wrn-D-K (...)``).

    ``parse(name)`` returns the family's parameters for a lower-case name it recognises (raising a
    one-line UserError for a malformed one, e.g. a bad WRN depth) or None for another family's
    name; ``canonical(params)`` is the name the family gives those parameters; ``build(params,
    num_classes=, in_channels=, mean=, std=, dropout=)`` makes a freshly initialized model;
    ``flops(params, channels, size, num_classes)`` counts one forward pass on one image.
    """

    parse: Callable[[str], Params | None]
    canonical: Callable[[Params], str]
    build: Callable[..., nn.Module]
    flops: Callable[[Params, int, int, int], float]


def _conv(cin: int, cout: int, k: int, h: int, stride: int = 1, pad: int | None = None) -> tuple:
    """(FLOPs, output size) of a k x k convolution on an h x h map (default padding k // 2)."""
    pad = k // 2 if pad is None else pad
    out = (h + 2 * pad - k) // stride + 1
    return 2 * cin * cout * k * k * out * out, out


# --- WideResNet ---------------------------------------------------------------------------------

_WRN_RE = re.compile(r"^wrn-(\d{1,7})-(\d{1,7})(?:-mid-(\d{1,7}(?:-\d{1,7}){0,99}))?$")
MAX_WRN_DEPTH, MAX_WRN_WIDEN = 202, 32


def wrn_widths(widen: int) -> list[int]:
    """Channel widths of a WRN: the stem, then the three stages (16, 16K, 32K, 64K)."""
    return [16, 16 * widen, 32 * widen, 64 * widen]


def wrn_block_widths(depth: int, widen: int) -> list[int]:
    """The full inner width (conv1's output channels) of every block, in order."""
    n = (depth - 4) // 6
    return [w for w in wrn_widths(widen)[1:] for _ in range(n)]


def _wrn_parse(name: str) -> Params | None:
    match = _WRN_RE.match(name)
    if match is None:
        return None
    depth, widen = int(match.group(1)), int(match.group(2))
    mid = None if match.group(3) is None else tuple(int(v) for v in match.group(3).split("-"))
    if depth < 10 or (depth - 4) % 6:
        raise UserError(
            f"bad WideResNet depth {depth} in {name!r}: depth must be 6n+4 >= 10 "
            "(10, 16, 22, 28, 34, 40, ...), e.g. wrn-16-4 or wrn-34-10"
        )
    if widen < 1:
        raise UserError(f"bad WideResNet widen factor {widen} in {name!r}: use K >= 1")
    # Bounds far above any published WRN (WRN-70-16): a file naming wrn-1000000-1000 must not
    # make the tool allocate it.
    if depth > MAX_WRN_DEPTH or widen > MAX_WRN_WIDEN:
        raise UserError(
            f"WideResNet {name!r} is out of bounds (depth <= {MAX_WRN_DEPTH}, widen factor <= "
            f"{MAX_WRN_WIDEN}); it cannot come from this toolkit"
        )
    if mid is not None:  # a slim WRN (a structured ticket): the inner width of every block
        full = wrn_block_widths(depth, widen)
        if len(mid) != len(full) or any(not 1 <= m <= f for m, f in zip(mid, full, strict=False)):
            raise UserError(
                f"bad slim WideResNet {name!r}: -mid- needs {len(full)} inner widths, each from 1 "
                f"to its block's full width ({', '.join(map(str, full))})"
            )
        if list(mid) == full:
            mid = None  # nothing slimmed: the plain WRN, under its plain name
    return {"depth": depth, "widen": widen, "mid": mid}


def _wrn_name(p: Params) -> str:
    base = f"wrn-{p['depth']}-{p['widen']}"
    return base if p.get("mid") is None else base + "-mid-" + "-".join(map(str, p["mid"]))


def _wrn_build(p: Params, **common: Any) -> nn.Module:
    from .wide_resnet import WideResNet

    return WideResNet(p["depth"], p["widen"], mid_widths=p.get("mid"), **common)


def _wrn_flops(p: Params, channels: int, size: int, num_classes: int) -> float:
    n = (p["depth"] - 4) // 6
    widths = wrn_widths(p["widen"])
    mids = list(p.get("mid") or wrn_block_widths(p["depth"], p["widen"]))
    total, h = _conv(channels, widths[0], 3, size)
    for stage, stride in zip(range(3), (1, 2, 2), strict=True):
        cin, cout = widths[stage], widths[stage + 1]
        for block in range(n):
            s = stride if block == 0 else 1
            mid = mids[stage * n + block]
            f1, h_out = _conv(cin, mid, 3, h, s)
            f2, _ = _conv(mid, cout, 3, h_out)
            total += f1 + f2
            if cin != cout:
                total += _conv(cin, cout, 1, h, s, 0)[0]
            cin, h = cout, h_out
    return float(total + 2 * widths[3] * num_classes)


# --- VGG-16-BN ----------------------------------------------------------------------------------

# The paper's code uses the "rethinking network pruning" CIFAR VGG-16: no 5th max-pool; a 2x2
# average pool takes the 2x2 maps of a 32x32 input to 1x1 instead.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip


def _fixed(name: str) -> Callable[[str], Params | None]:
    return lambda text: {} if text == name else None


def _vgg_build(p: Params, **common: Any) -> nn.Module:
    from .vgg import VGG16BN

    return VGG16BN(**common)


def _vgg_flops(p: Params, channels: int, size: int, num_classes: int) -> float:
    total, h, cin = 0, size, channels
    for v in VGG16_CFG:
        if v == "M":
            h //= 2
        else:
            total += _conv(cin, int(v), 3, h)[0]
            cin = int(v)
    return float(total + 2 * cin * 512 + 2 * 512 * num_classes)


# --- PreActResNet-18 ----------------------------------------------------------------------------


def _preact_build(p: Params, **common: Any) -> nn.Module:
    from .preact_resnet import PreActResNet18

    return PreActResNet18(**common)


def _preact_flops(p: Params, channels: int, size: int, num_classes: int) -> float:
    total, h = _conv(channels, 64, 3, size)
    cin = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            f1, h_out = _conv(cin, planes, 3, h, s)
            total += f1 + _conv(planes, planes, 3, h_out)[0]
            if s != 1 or cin != planes:
                total += _conv(cin, planes, 1, h, s, 0)[0]
            cin, h = planes, h_out
    return float(total + 2 * 512 * num_classes)


# --- small CNN ----------------------------------------------------------------------------------


def _small_build(p: Params, **common: Any) -> nn.Module:
    from .small_cnn import SmallCNN

    return SmallCNN(**common)


def _small_flops(p: Params, channels: int, size: int, num_classes: int) -> float:
    total, h = 0, size
    for cin, cout, pool in ((channels, 32, False), (32, 32, True), (32, 64, False), (64, 64, True)):
        total += _conv(cin, cout, 3, h)[0]
        h = h // 2 if pool else h
    return float(total + 2 * 64 * 7 * 7 * 256 + 2 * 256 * num_classes)


BUILTIN_FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        "wrn",
        "wrn-D-K (depth D = 6n+4 >= 10, widen factor K >= 1, e.g. wrn-16-4, wrn-34-10; a "
        "structured ticket's slim WRN adds -mid- and the inner width of every block)",
        _wrn_parse,
        _wrn_name,
        _wrn_build,
        _wrn_flops,
    ),
    ModelFamily(
        "vgg16-bn", "vgg16-bn", _fixed("vgg16-bn"), lambda p: "vgg16-bn", _vgg_build, _vgg_flops
    ),
    ModelFamily(
        "preact-resnet18",
        "preact-resnet18",
        _fixed("preact-resnet18"),
        lambda p: "preact-resnet18",
        _preact_build,
        _preact_flops,
    ),
    ModelFamily(
        "small-cnn",
        "small-cnn",
        _fixed("small-cnn"),
        lambda p: "small-cnn",
        _small_build,
        _small_flops,
    ),
)


def model_families() -> Registry[ModelFamily]:
    """The built-in model families plus those of plugins (``MODEL_FAMILIES``)."""
    return build_registry("model family", BUILTIN_FAMILIES, "MODEL_FAMILIES")


def model_forms() -> str:
    """The accepted model names, for help texts and error messages."""
    return ", ".join(f.description for f in model_families())


def parse_model(name: str) -> tuple[ModelFamily, Params]:
    """The family that recognises ``name`` and its parameters; UserError listing the forms."""
    if not isinstance(name, str):
        raise UserError(f"model name must be a string, got {name!r}; valid: {model_forms()}")
    key = name.strip().lower()
    for family in model_families():
        params = family.parse(key)
        if params is not None:
            return family, params
    raise UserError(f"unknown model {name!r}; valid: {model_forms()}")


def validate_model_name(name: str) -> str:
    """Check a model name and return its canonical form (lower case, no leading zeros)."""
    family, params = parse_model(name)
    return family.canonical(params)


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
        name: e.g. ``"wrn-16-4"``, ``"vgg16-bn"``, ``"preact-resnet18"``, ``"small-cnn"``.
        num_classes: number of output logits.
        in_channels: image channels (1 for Fashion-MNIST, 3 for CIFAR-10).
        mean, std: per-channel normalization applied inside the model (1 or ``in_channels``
            values each); ``None`` means mean 0 / std 1 (identity when both are ``None``).
        dropout: dropout probability in [0, 1); inside the blocks for WRNs, before the last
            linear layer otherwise. Default 0.

    Returns a module mapping (N, in_channels, H, W) images in [0, 1] to (N, num_classes) logits,
    with attribute ``arch`` set to the canonical name (not part of ``state_dict``).
    """
    family, params = parse_model(name)
    model = family.build(
        params,
        num_classes=num_classes,
        in_channels=in_channels,
        mean=mean,
        std=std,
        dropout=dropout,
    )
    model.arch = family.canonical(params)
    return model


def forward_flops(name: str, channels: int, size: int, num_classes: int) -> float:
    """FLOPs of one forward pass of model ``name`` on one (channels, size, size) image.

    Counted analytically (2 per multiply-add of every conv and linear layer), equal to torch's
    ``FlopCounterMode``; imports no torch.
    """
    family, params = parse_model(name)
    return family.flops(params, channels, size, num_classes)
