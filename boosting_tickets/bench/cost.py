"""The cost model: the work of a run in FLOPs, and seconds at declared throughputs.

The work of a run is counted in forward-pass equivalents per image, times images, times epochs, times
the model's forward FLOPs (counted analytically by the model registry, 2 per multiply-add; equal to
torch's FlopCounterMode). A backward pass through the whole network costs 2 forwards (input and
weight gradients), an attack's input-gradient backward 1 (no weight gradients), so one image costs
per training epoch what its objective's registry entry says (natural 3, FGSM 2 + 3 = 5, PGD-k 2k + 3,
TRADES-k 2k + 7); per evaluation (clean + FGSM + PGD-k with r restarts, no early exit, so an upper
bound) 1 + 3 + r(2k + 1). Pruned weights are still multiplied (masks zero them; no sparse kernels),
so a ticket costs what the dense network costs per epoch: the paper's saving comes from fewer PGD
epochs. Nothing here imports torch, so a suite is planned in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.registry import get_spec
from ..training.hparams import RunConfig
from ..training.work import eval_passes, train_passes

# Effective throughput used to turn the cost model's FLOPs into seconds. CPU: measured with the
# `quick` suite (WRN-10-1 on 28x28 Fashion-MNIST): 42.5 TFLOP by the cost model in 576 CPU-seconds,
# run with one thread on this project's shared 2-core machine (docs/benchmarks.md). It folds in the
# early exit of the evaluation (the model counts every PGD step) and the small convolutions' low
# efficiency; a quiet 2-core run is faster, so CPU estimates err long. GPU: implied by the paper's
# 134,764 s for the dense WRN-34-10 (Table 3, 2x V100), from the same cost model (training.work).
CPU_EFFECTIVE_FLOPS = 7.4e10


@dataclass(frozen=True)
class SplitSizes:
    """Images per split of a suite's data settings (without loading the data)."""

    train: int
    val: int
    test: int
    channels: int
    size: int
    num_classes: int


def split_sizes(cfg: RunConfig) -> SplitSizes:
    """Sizes the data settings of ``cfg`` select, from the dataset's nominal sizes."""
    spec = get_spec(cfg.data.dataset)
    # A dataset with its own validation split keeps its whole training file for training.
    left = spec.train_size - (0 if spec.official_val else cfg.data.val_size)
    train = left if cfg.data.train_subset is None else min(cfg.data.train_subset, left)
    test = spec.test_size if cfg.data.test_subset is None else cfg.data.test_subset
    return SplitSizes(train, cfg.data.val_size, test, spec.channels, spec.size, spec.num_classes)


def run_flops(cfg: RunConfig, sizes: SplitSizes, fwd: float) -> dict[str, float]:
    """FLOPs of a training run: training, per-epoch held-out evaluation, final test evaluation."""
    ec = cfg.eval
    n_val = min(ec.val_examples or sizes.val, sizes.val)
    per_epoch_train = train_passes(cfg.train) * sizes.train * fwd
    per_epoch_eval = eval_passes(ec) * n_val * fwd
    test = 2 * eval_passes(ec) * sizes.test * fwd if ec.test_eval else 0.0  # best and final
    epochs = cfg.train.epochs
    return {
        "train": per_epoch_train * epochs,
        "eval": per_epoch_eval * epochs + test,
        "total": (per_epoch_train + per_epoch_eval) * epochs + test,
    }


def fmt_seconds(s: float) -> str:
    """Seconds in the largest unit that keeps the number readable (s, min, h, days, years)."""
    for limit, div, unit in ((120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h")):
        if s < limit:
            return f"{s / div:.1f} {unit}" if div > 1 else f"{s:.0f} s"
    days = s / 86400
    return f"{days:.1f} days" if days < 730 else f"{days / 365.25:.1f} years"


def fmt_flops(x: float) -> str:
    """FLOPs with an SI prefix (GFLOP ... EFLOP)."""
    for div, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP")):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x / 1e9:.3g} GFLOP"
