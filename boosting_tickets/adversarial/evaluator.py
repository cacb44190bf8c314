"""The early-exit robust evaluator: per-point robustness under an attack, at a fraction of the cost.

A point counts as robust only if it is clean-correct and no iterate of any step or restart fooled
the model, so the evaluator is never a weaker attack than running every step on every point; it
simply stops attacking a point once it is fooled and re-batches the survivors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import UserError
from .attacks import perturb, resolved_spec
from .spec import AttackSpec, check_count
from .steps import bn_mode, checked_inputs, input_grad, logits_of, noise_for, start_point, step_for


class _EarlyExit:
    """One evaluation's state: the model, the resolved spec and the cost counters."""

    def __init__(self, model: nn.Module, spec: AttackSpec, autocast: torch.dtype | None) -> None:
        self.model, self.spec, self.autocast = model, spec, autocast
        self.forward = self.backward = 0
        self.fooled_at = [0] * (spec.steps + 1)
        # Attack logits are reused to judge only when the attack itself ran in eval mode.
        self.judge_in_attack_mode = spec.bn_mode == "eval"
        self.step = step_for(spec.norm)

    def wrong(self, xb: Tensor, yb: Tensor, logits: Tensor | None = None) -> Tensor:
        """Misclassification mask, reusing attack logits when they were computed in eval mode."""
        if logits is None or not self.judge_in_attack_mode:
            with bn_mode(self.model, "eval"), torch.no_grad():
                logits = logits_of(self.model, xb, self.autocast)
            self.forward += int(xb.shape[0])
        return logits.argmax(dim=1) != yb

    def restart_whole_batch(
        self, x: Tensor, y: Tensor, alive: Tensor, noise: Tensor | None
    ) -> None:
        """One restart in BatchNorm train mode: every point of the batch is attacked at every
        step, as full PGD does, because batch statistics make one point's attack depend on the
        others (dropping fooled points would change the attack and could make it weaker). A
        point counts as fooled at the first iterate judged wrong in eval mode, so the result is
        never weaker than full PGD; what early exit saves here is nothing but the bookkeeping."""
        spec = self.spec
        eps, step_size = spec.eps, float(spec.step_size)
        check_iterates = not spec.entry().single_step
        n = int(x.shape[0])
        x_adv = start_point(x, noise)
        for t in range(spec.steps):
            grad, _ = input_grad(self.model, x_adv, y, self.autocast)
            self.forward += n
            self.backward += n
            if check_iterates:
                self._mark(self.wrong(x_adv, y) & alive, alive, t)
            x_adv = self.step(x_adv, x, grad, step_size, eps)
        self._mark(self.wrong(x_adv, y) & alive, alive, spec.steps)

    def _mark(self, fooled: Tensor, alive: Tensor, t: int) -> None:
        self.fooled_at[t] += int(fooled.sum())
        alive[fooled] = False

    def restart(self, x: Tensor, y: Tensor, alive: Tensor, noise: Tensor | None) -> None:
        """One restart of projected steps on the points still ``alive`` (updated in place); an
        L2 step is per example, so dropping fooled points leaves the others' iterates unchanged."""
        spec = self.spec
        if spec.bn_mode == "train":
            self.restart_whole_batch(x, y, alive, noise)
            return
        eps, step_size = spec.eps, float(spec.step_size)
        # FGSM counts only the clean input and the attack output, not the random-start point.
        check_iterates = not spec.entry().single_step
        idx = alive.nonzero().squeeze(1)
        xb, yb = x[idx], y[idx]
        x_adv = start_point(xb, None if noise is None else noise[idx])
        for t in range(spec.steps):
            grad, logits = input_grad(self.model, x_adv, yb, self.autocast)
            self.forward += int(idx.numel())
            self.backward += int(idx.numel())
            if check_iterates:
                fooled = self.wrong(x_adv, yb, logits)
                if bool(fooled.any()):
                    self.fooled_at[t] += int(fooled.sum())
                    alive[idx[fooled]] = False
                    keep = ~fooled
                    idx, xb, yb = idx[keep], xb[keep], yb[keep]
                    x_adv, grad = x_adv[keep], grad[keep]
                    if idx.numel() == 0:
                        return
            x_adv = self.step(x_adv, xb, grad, step_size, eps)
        fooled = self.wrong(x_adv, yb)
        self.fooled_at[spec.steps] += int(fooled.sum())
        alive[idx[fooled]] = False


def robust_correct_with_stats(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, dict[str, Any]]:
    """Per-point robustness under ``spec`` with early exit, plus cost counters.

    PGD: a point is robust iff it is classified correctly on the clean input AND no iterate
    (random start, every step, the final iterate) of any restart is misclassified. Each step reuses
    the logits computed for the gradient to find fooled points, drops them and re-batches only the
    survivors; a final forward checks the last iterate; the next restart runs on survivors only.
    Points that are clean-misclassified are never attacked. Random starts are drawn for the whole
    batch every restart, so the random stream matches :func:`attacks.pgd` with the same generator
    or seed. In eval BN mode this is at least as strict as checking only pgd()'s final output.

    FGSM / FGSM-RS: robust iff clean correct and the FGSM output is still classified correctly
    (only clean-correct points are attacked); FGM and PGD-L2 alike with L2 steps. An attack whose
    registry entry is not ``stepwise``
    (a plugin's) is run once on the clean-correct points and its output judged.

    Correctness is always judged with the model in eval mode; with ``spec.bn_mode == "train"``
    the attack runs in train mode on the whole batch at every step (batch statistics couple the
    points, so fooled points are not dropped: the result is never weaker than full PGD) and each
    iterate gets an extra eval-mode forward. The model's modes and BN statistics are restored.

    Shapes: x (N, C, H, W) float in [0, 1], y (N,) int. Returns (robust (N,) bool tensor, stats)
    with stats keys: n, clean_correct, robust_correct, forward_images, backward_images (image
    gradients computed), full_forward_images and full_backward_images (cost of the same attack
    without early exit: a clean forward, every step on every point, and a final forward per
    restart), fooled_at (list, length steps+1: points first fooled at iterate t, summed over
    restarts; iterate 0 is the start point; FGSM specs only ever count the output, at index 1).
    """
    spec = resolved_spec(spec)
    model, x, y, _ = checked_inputs(model, x, y, spec.eps, spec.bn_mode, generator, autocast_dtype,
                                    spec.norm)  # fmt: skip
    n, steps, restarts = int(x.shape[0]), spec.steps, spec.restarts
    stats: dict[str, Any] = {
        "n": n,
        "full_forward_images": n * (1 + restarts * (steps + 1)),
        "full_backward_images": n * restarts * steps,
    }
    run = _EarlyExit(model, spec, autocast_dtype)
    if n == 0:
        alive = torch.zeros(0, dtype=torch.bool, device=x.device)
        stats.update(clean_correct=0)
    else:
        with bn_mode(model, spec.bn_mode, keep_running_stats=True):
            alive = ~run.wrong(x, y)
            stats["clean_correct"] = int(alive.sum())
            if spec.entry().stepwise:
                draw = noise_for(spec.norm)
                for _ in range(restarts):
                    noise = draw(x, spec.eps, generator) if spec.random_start else None
                    if bool(alive.any()):  # the noise is drawn anyway: the stream stays aligned
                        run.restart(x, y, alive, noise)
            elif bool(alive.any()):
                idx = alive.nonzero().squeeze(1)
                x_adv = perturb(
                    model, x[idx], y[idx], spec, generator, autocast_dtype=autocast_dtype
                )
                alive[idx[run.wrong(x_adv, y[idx])]] = False
    stats.update(
        robust_correct=int(alive.sum()),
        forward_images=run.forward,
        backward_images=run.backward,
        fooled_at=run.fooled_at,
    )
    return alive, stats


def robust_correct(model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, **kw: Any) -> Tensor:
    """Bool tensor (N,): clean-correct and never fooled under ``spec`` (early exit).

    Keyword arguments (``generator``, ``autocast_dtype``) and the exact criterion are those of
    :func:`robust_correct_with_stats`.
    """
    robust, _ = robust_correct_with_stats(model, x, y, spec, **kw)
    return robust


def accuracy_under_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Fraction of points (in [0, 1]) that :func:`robust_correct` marks robust, in batches.

    Shapes: x (N, C, H, W) float in [0, 1], y (N,) int, N >= 1. Default batch_size 256.
    """
    batch_size = check_count(batch_size, "batch_size")
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise UserError("accuracy_under_attack needs at least one example; pass a non-empty x")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise UserError("y must have shape (N,) matching x; pass one label per image")
    total = 0
    for start in range(0, int(x.shape[0]), batch_size):
        robust = robust_correct(
            model,
            x[start : start + batch_size],
            y[start : start + batch_size],
            spec,
            generator=generator,
            autocast_dtype=autocast_dtype,
        )
        total += int(robust.sum())
    return total / int(x.shape[0])
