"""Work done by a training run, in FLOPs: the cost axis that a noisy machine cannot distort.

One training image costs its objective's forward-equivalent passes (natural 3, FGSM 5, PGD-k
2k + 3, TRADES-k 2k + 7; see ``training.objectives``) times the model's forward FLOPs (counted
analytically by the model registry, 2 per multiply-add, equal to torch's ``FlopCounterMode``). A
held-out evaluation of one image costs clean + FGSM + PGD-k with r restarts without early exit,
1 + 3 + r(2k + 1) forwards: an upper bound, since the evaluator stops attacking fooled points.
Pruned weights are still multiplied (masks zero them), so an unstructured ticket does the dense
network's work per epoch. Imports no torch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..data.registry import get_spec
from ..models.registry import forward_flops
from .hparams import EvalConfig, RunConfig, TrainConfig, held_out_size
from .objectives import objectives

if TYPE_CHECKING:
    from .loop import TrainState

WORK_KEYS = ("images", "work_flops", "cum_work_flops", "eval_work_flops", "load1")
# The declared reference throughput: the paper's dense WRN-34-10 took 134,764 s on 2x V100.
PAPER_DENSE_SECONDS = 134764.0
PAPER_HARDWARE = "2x V100"


def train_passes(tc: TrainConfig) -> float:
    """Forward-equivalent passes per training image per epoch, from the objective's entry."""
    return objectives().get(tc.objective).passes(tc)


def eval_passes(ec: EvalConfig) -> float:
    """Forward-equivalent passes per evaluated image: clean, FGSM and PGD-k without early exit."""
    return 1.0 + 3.0 + ec.eval_restarts * (2.0 * ec.eval_steps + 1.0)


def model_flops(cfg: RunConfig) -> float:
    """Forward FLOPs of ``cfg``'s model on one image of its dataset."""
    spec = get_spec(cfg.data.dataset)
    return forward_flops(cfg.model.model, spec.channels, spec.size, spec.num_classes)


def paper_implied_rate() -> float:
    """FLOP/s implied by the paper's 134,764 s for dense WRN-34-10 PGD-10 training (Table 3).

    Cost model: 100 epochs x 50,000 CIFAR-10 images x (2*10+3) passes x the forward FLOPs of
    WRN-34-10 on 32x32 (training only; the paper does not say what its time includes beyond that).
    """
    fwd = forward_flops("wrn-34-10", 3, 32, 10)
    return 100 * 50000 * (2 * 10 + 3) * fwd / PAPER_DENSE_SECONDS


def machine_load() -> float | None:
    """The 1-minute load average (None where the OS has none): recorded next to wall-clock."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def epoch_work(cfg: RunConfig, images: int, fwd: float | None = None) -> dict[str, float]:
    """``work_flops`` (training) and ``eval_work_flops`` (held-out) of one epoch on ``images``."""
    fwd = model_flops(cfg) if fwd is None else fwd
    return {
        "work_flops": train_passes(cfg.train) * images * fwd,
        "eval_work_flops": eval_passes(cfg.eval) * held_out_size(cfg) * fwd,
    }


def work_row(cfg: RunConfig, row: dict[str, Any], prev_cum: float, fwd: float) -> dict[str, Any]:
    """The work keys of one metrics row: images, work_flops, cum_work_flops, eval_work_flops,
    load1. ``row`` must carry ``images`` (every rank's training images of the epoch)."""
    work = epoch_work(cfg, int(row["images"]), fwd)
    return {
        "images": int(row["images"]),
        **work,
        "cum_work_flops": prev_cum + work["work_flops"],
        "load1": machine_load(),
    }


def rows_with_work(cfg: RunConfig, rows: list[dict[str, Any]], train_images: int) -> list[dict]:
    """Metrics rows with the work keys filled in from the cost model where a run written before
    they were recorded lacks them (``train_images``: images per epoch)."""
    fwd, cum, out = model_flops(cfg), 0.0, []
    for r in rows:
        if "cum_work_flops" in r:
            cum = float(r["cum_work_flops"])
            out.append(dict(r))
            continue
        w = epoch_work(cfg, int(r.get("images", train_images)), fwd)
        cum += w["work_flops"]
        out.append({"images": int(r.get("images", train_images)), **w, **r, "cum_work_flops": cum})
    return out


def meter(cfg: RunConfig) -> Any:
    """The :class:`WorkMeter` callback for ``cfg`` (defined lazily: the loop imports torch)."""
    from .loop import Callback

    fwd = model_flops(cfg)

    class WorkMeter(Callback):
        """Adds the epoch's work (FLOPs) and the machine's load to its metrics row."""

        def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
            prev = state.rows[-2].get("cum_work_flops", 0.0) if len(state.rows) > 1 else 0.0
            row.update(work_row(cfg, row, float(prev), fwd))

    return WorkMeter()
