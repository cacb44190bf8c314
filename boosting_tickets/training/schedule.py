"""Learning-rate schedules: linear warmup, then step, constant or cyclic."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hparams import TrainConfig

SCHEDULES = ("step", "constant", "cyclic")


def learning_rate(tc: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear warmup from ``warmup_lr`` (default lr/10) to ``lr`` over ``warmup_epochs``, per step; then
    ``step``: lr·gamma^(milestones passed), milestones as fractions of all epochs, applied at epoch
    boundaries (like MultiStepLR); ``constant``; or ``cyclic``: one triangle from 0 up to lr at 40% of
    training and back to 0 (Wong et al. 2020), per step.
    """
    epoch_f = step / steps_per_epoch
    if tc.warmup_epochs > 0 and epoch_f < tc.warmup_epochs:
        start = tc.lr / 10 if tc.warmup_lr is None else tc.warmup_lr
        return start + (tc.lr - start) * epoch_f / tc.warmup_epochs
    if tc.schedule == "constant":
        return tc.lr
    if tc.schedule == "cyclic":
        total = tc.epochs * steps_per_epoch
        peak = 0.4 * total
        t = step + 1
        return tc.lr * (t / peak if t <= peak else max(0.0, (total - t) / (total - peak)))
    epoch = step // steps_per_epoch
    passed = sum(1 for m in tc.milestones if epoch >= math.ceil(m * tc.epochs - 1e-9))
    return tc.lr * tc.gamma**passed
