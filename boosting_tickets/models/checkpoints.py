"""Model checkpoints that know their architecture.

A model checkpoint is a plain dict (loadable with ``weights_only=True``)::

    {"format": "boosting-tickets/model", "version": 1, "arch": {...}, "state_dict": {...}, ...}

where ``arch`` holds what :func:`registry.build_model` needs (name, classes, channels, normalization).
The state_dict uses robustbench's key names for WideResNets, so it also loads into theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..core.storage import atomic_torch_save, safe_torch_load

MODEL_FORMAT = "boosting-tickets/model"
ARCH_KEYS = ("model", "num_classes", "in_channels", "mean", "std", "dropout", "dataset")


def arch_meta(
    model_name: str,
    *,
    num_classes: int,
    in_channels: int,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    dropout: float = 0.0,
    dataset: str | None = None,
) -> dict[str, Any]:
    """The architecture description stored with every checkpoint."""
    return {
        "model": model_name,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "mean": None if mean is None else [float(v) for v in mean],
        "std": None if std is None else [float(v) for v in std],
        "dropout": float(dropout),
        "dataset": dataset,
    }


def build_from_arch(arch: Mapping[str, Any]) -> nn.Module:
    """Construct an untrained model from an ``arch`` dict."""
    from .registry import build_model

    return build_model(
        arch["model"],
        num_classes=arch["num_classes"],
        in_channels=arch["in_channels"],
        mean=arch.get("mean"),
        std=arch.get("std"),
        dropout=arch.get("dropout", 0.0),
    )


def check_fits(model: nn.Module, state_dict: Mapping[str, Any], source: str) -> None:
    """Raise a one-line UserError unless ``state_dict`` has exactly ``model``'s keys, shapes and
    dtypes (``model`` may live on the meta device: nothing is allocated). A float16 or int64
    tensor where the model holds float32 is refused rather than silently cast."""
    own = model.state_dict()
    if not isinstance(state_dict, Mapping) or not all(
        torch.is_tensor(v) for v in state_dict.values()
    ):
        raise UserError(f"{source} has no tensor state_dict (damaged); re-create it")
    _check_keys_and_shapes(model, own, state_dict, source)
    dtype = next((k for k in own if state_dict[k].dtype != own[k].dtype), None)
    if dtype is not None:
        raise UserError(
            f"{source} stores {dtype} as {state_dict[dtype].dtype}, where the model holds "
            f"{own[dtype].dtype}; convert the weights (e.g. .float()) instead of relying on a cast"
        )


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Any], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming what does not fit (keys,
    shapes, dtypes: :func:`check_fits`)."""
    check_fits(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def _check_keys_and_shapes(
    model: nn.Module, own: Mapping[str, Any], state_dict: Mapping[str, Any], source: str
) -> None:
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape = [
        k
        for k in own
        if k in state_dict
        and torch.is_tensor(state_dict[k])
        and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[0]}")
        if shape:
            k = shape[0]
            parts.append(
                f"shape mismatch at {k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
            )
        arch = getattr(model, "arch", type(model).__name__)
        raise UserError(
            f"{source} does not fit architecture {arch} ({'; '.join(parts)}); "
            "it comes from another architecture or dataset"
        )


def save_model(path: str | Path, model: nn.Module, arch: Mapping[str, Any], **extra: Any) -> None:
    """Atomically write a model checkpoint (CPU tensors) with its arch and any JSON-like extras."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {"format": MODEL_FORMAT, "version": 1, "arch": dict(arch), "state_dict": sd, **extra}, path
    )


def read_model_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a model checkpoint dict (weights_only); no model is built."""
    ckpt = safe_torch_load(path, what="checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT:
        raise UserError(
            f"checkpoint {path} is not a boosting-tickets model checkpoint "
            "(expected best.pt, last model or init.pt from a run directory)"
        )
    if ckpt.get("version", 1) != 1:
        raise UserError(
            f"checkpoint {path} has format version {ckpt.get('version')!r}; this version of "
            "boosting-tickets reads version 1 (upgrade boosting-tickets)"
        )
    arch = ckpt.get("arch")
    if not isinstance(arch, dict) or any(k not in arch for k in ARCH_KEYS[:3]):
        raise UserError(f"checkpoint {path} lacks its architecture description; re-create it")
    check_arch(arch, f"checkpoint {path}")
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise UserError(f"checkpoint {path} has no tensor state_dict (damaged); re-create it")
    # NaN/inf weights (a diverged run) would give meaningless accuracies, not an error.
    bad = next((k for k, v in sd.items() if v.is_floating_point() and not v.isfinite().all()), None)
    if bad is not None:
        raise UserError(
            f"checkpoint {path} holds NaN/inf weights (in '{bad}'), from a diverged run; "
            "retrain it with a lower --lr"
        )
    return ckpt


def check_arch(arch: Mapping[str, Any], source: str) -> None:
    """Types and bounds of an ``arch`` record, and its weights' fit on the meta device (no
    memory), before any model is built from it."""
    from .registry import parse_model

    name, classes, channels = arch.get("model"), arch.get("num_classes"), arch.get("in_channels")
    if not isinstance(name, str) or len(name) > 64:
        raise UserError(f"{source} names no valid architecture ({name!r}); re-create it")
    for key, v, high in (("num_classes", classes, 100_000), ("in_channels", channels, 64)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
            raise UserError(f"{source} has {key} = {v!r}; expected a whole number in [1, {high}]")
    parse_model(name)  # a malformed or out-of-bounds name is a one-line error


def probe_model(arch: Mapping[str, Any]) -> nn.Module:
    """The architecture built on the meta device: shapes and dtypes, no memory."""
    with torch.device("meta"):
        return build_from_arch(arch)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Build the checkpoint's architecture, load its weights strictly; returns (model, checkpoint).
    The weights are checked against a meta-device copy before the real model is built."""
    ckpt = read_model_checkpoint(path)
    check_fits(probe_model(ckpt["arch"]), ckpt["state_dict"], f"checkpoint {path}")
    model = build_from_arch(ckpt["arch"])
    load_state_dict_strict(model, ckpt["state_dict"], f"checkpoint {path}")
    return model.to(device), ckpt
