"""The linear path between two networks and the error barrier on it.

:func:`interpolate` gives ``(1 - α) W1 + α W2`` (``torch.lerp``: exact at both ends, and equal to
``W1`` everywhere when ``W1 == W2``); :func:`path_errors` measures clean and robust error at evenly
spaced α, recomputing BatchNorm's running statistics at each point on a fixed set of training
images (standard practice: interpolated weights do not match interpolated statistics);
:func:`instability` is the largest error on the path minus the mean of the endpoint errors
(Frankle et al. 2020, who call a network stable below 2 percentage points).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError

#: Frankle et al. 2020: instability below 2 pp counts as stable.
STABLE_BELOW = 0.02


def alphas(points: int) -> list[float]:
    """``points`` evenly spaced α in [0, 1], both ends included (at least 3)."""
    if points < 3:
        raise UserError(f"--alphas must be >= 3 (both endpoints and a point between), got {points}")
    return [i / (points - 1) for i in range(points)]


def interpolate(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) a + alpha b`` for floating tensors (exact at 0 and 1); others (BatchNorm's
    ``num_batches_tracked``) are ``a``'s. Both state_dicts must have the same keys and shapes."""
    if set(a) != set(b):
        raise UserError("the two networks have different parameters; interpolate like with like")
    out = {}
    for k, va in a.items():
        vb = b[k]
        if va.shape != vb.shape:
            raise UserError(f"'{k}' has shapes {tuple(va.shape)} and {tuple(vb.shape)}")
        out[k] = torch.lerp(va, vb.to(va.dtype), alpha) if va.is_floating_point() else va.clone()
    return out


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> bool:
    """Replace every BatchNorm layer's running statistics with those of ``images`` (N,C,H,W in
    [0,1]): reset, then one pass in batches of ``batch_size`` with cumulative averaging of the
    batch statistics (``momentum=None``), as ``torch.optim.swa_utils.update_bn`` does, except that
    only the BatchNorm layers are in train mode, so dropout stays off. Returns whether there was
    any BatchNorm layer."""
    norms = batch_norms(model)
    if not norms:
        return False
    was_training = model.training
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    device = next(model.parameters()).device
    for i in range(0, images.shape[0], batch_size):
        model(images[i : i + batch_size].to(device))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return True


Measure = Callable[[nn.Module], Mapping[str, float]]


def path_errors(
    model: nn.Module,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    points: Sequence[float],
    measure: Measure,
    bn_images: torch.Tensor | None = None,
) -> list[dict[str, float]]:
    """At each α of ``points``: load ``interpolate(a, b, α)`` into ``model``, recompute BatchNorm
    statistics on ``bn_images`` (None: keep the interpolated ones), and record
    ``{"alpha", "clean_err", "pgd_err"}`` from ``measure(model)`` (its ``clean_acc``/``pgd_acc``).
    ``model`` is left holding the last point."""
    rows = []
    for alpha in points:
        model.load_state_dict(interpolate(a, b, alpha), strict=True)
        if bn_images is not None:
            recompute_bn(model, bn_images)
        acc = measure(model)
        rows.append(
            {"alpha": alpha, "clean_err": 1.0 - acc["clean_acc"], "pgd_err": 1.0 - acc["pgd_acc"]}
        )
    return rows


def instability(errors: Sequence[float]) -> float:
    """The largest error on the path minus the mean of the two endpoints' errors (>= 0 when the
    endpoints are on the path; the paper's "instability")."""
    if len(errors) < 2:
        raise ValueError("a path needs its two endpoints")
    return max(errors) - (errors[0] + errors[-1]) / 2


def summary(rows: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Instability of clean and robust error over a measured path, and whether each is stable."""
    clean = instability([r["clean_err"] for r in rows])
    robust = instability([r["pgd_err"] for r in rows])
    return {
        "instability_clean": clean,
        "instability_pgd": robust,
        "stable_clean": clean < STABLE_BELOW,
        "stable_pgd": robust < STABLE_BELOW,
    }
