"""Attacks: L∞ FGSM, FGSM-RS and PGD with restarts, L2 FGM and PGD, and the TRADES inner
maximization.

All attacks take float inputs ``x`` of shape (N, C, H, W) with values in [0, 1] and integer
labels ``y`` of shape (N,); any input normalization lives inside the model. Each sets the model's
BatchNorm mode for the attack and restores it (running statistics included) afterwards.

References:
    Goodfellow, Shlens, Szegedy 2015, "Explaining and harnessing adversarial examples" (FGSM).
    Wong, Rice, Kolter 2020, "Fast is better than free" (FGSM-RS: random start, step 1.25·eps).
    Madry, Makelov, Schmidt, Tsipras, Vladu 2018, "Towards deep learning models resistant to
    adversarial attacks" (PGD, L∞ and L2).
    Miyato, Dai, Goodfellow 2017, "Adversarial training methods for semi-supervised text
    classification" (FGM: the L2-normalized gradient step).
    Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan 2019, "Theoretically principled trade-off between
    robustness and accuracy" (TRADES).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import UserError
from .spec import AttackSpec, check_count, check_step_size
from .steps import bn_mode as _bn_mode_context
from .steps import (
    checked_inputs,
    input_grad,
    logits_of,
    noise_for,
    project_step,
    start_point,
    step_for,
)

# TRADES starts from x + 0.001·N(0, 1) (official TRADES code).
_TRADES_START_STD = 0.001


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    step_size: float | None = None,
    random_start: bool = False,
    bn_mode: str = "eval",
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """One signed-gradient step of mean cross-entropy: FGSM (Goodfellow 2015) or FGSM-RS.

    Computes clamp(x + proj_eps(x0 + step·sign(∇ CE(model(x0), y)) − x), 0, 1) with x0 = x, or with
    ``random_start=True`` x0 = clamp(x + U(−eps, eps), 0, 1) (Wong, Rice, Kolter 2020).
    ``step_size`` defaults to eps without random start and to 1.25·eps with it.
    The model is put in ``bn_mode`` ("eval" or "train") during the attack and restored afterwards
    (running statistics included). ``autocast_dtype`` (e.g. torch.bfloat16) runs the model under
    autocast; the loss is computed in fp32.

    Shapes: x (N, C, H, W) float in [0, 1], y (N,) int. Returns x_adv, same shape as x, detached.
    """
    model, x, y, eps = checked_inputs(model, x, y, eps, bn_mode, generator, autocast_dtype)
    if step_size is None:
        step_size = 1.25 * eps if random_start else eps
    step_size = check_step_size(step_size)
    if x.shape[0] == 0:
        return x.clone()
    noise = noise_for("Linf")(x, eps, generator) if random_start else None
    with _bn_mode_context(model, bn_mode, keep_running_stats=True):
        x_adv = start_point(x, noise)
        grad, _ = input_grad(model, x_adv, y, autocast_dtype)
        return project_step(x_adv, x, grad, step_size, eps)


def fgm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    step_size: float | None = None,
    bn_mode: str = "eval",
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """One L2-normalized gradient step of mean cross-entropy: FGM (Miyato et al. 2017).

    Computes clamp(x + δ, 0, 1) with δ = step·g/‖g‖₂ per example (g the input gradient, ‖g‖₂ +
    1e-10), scaled back into the L2 eps-ball; ``step_size`` defaults to eps, so δ lies on the
    sphere of radius eps before the clamp. No random start. Model mode handling and
    ``autocast_dtype`` as in :func:`pgd`.

    Shapes: x (N, C, H, W) float in [0, 1], y (N,) int. Returns x_adv, same shape as x, detached.
    """
    model, x, y, eps = checked_inputs(model, x, y, eps, bn_mode, None, autocast_dtype, "L2")
    step_size = check_step_size(eps if step_size is None else step_size)
    if x.shape[0] == 0:
        return x.clone()
    with _bn_mode_context(model, bn_mode, keep_running_stats=True):
        grad, _ = input_grad(model, x, y, autocast_dtype)
        return step_for("L2")(x, x, grad, step_size, eps)


def _pgd_run(model: nn.Module, x: Tensor, y: Tensor, noise: Tensor | None, **kw: Any) -> Tensor:
    """``kw["steps"]`` projected steps of ``kw["step_size"]`` under ``kw["norm"]`` from
    ``x + noise`` (eps-ball, [0, 1])."""
    step = step_for(kw["norm"])
    x_adv = start_point(x, noise)
    for _ in range(kw["steps"]):
        grad, _ = input_grad(model, x_adv, y, kw["autocast_dtype"])
        x_adv = step(x_adv, x, grad, kw["step_size"], kw["eps"])
    return x_adv


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    step_size: float,
    steps: int,
    random_start: bool = True,
    restarts: int = 1,
    bn_mode: str = "eval",
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
    norm: str = "Linf",
) -> Tensor:
    """Projected gradient ascent on mean cross-entropy (Madry et al. 2018), L∞ or L2.

    ``norm="Linf"`` (default): each restart starts at clamp(x + U(−eps, eps), 0, 1) (or at x if
    ``random_start=False``), then takes ``steps`` updates
    x ← clamp(x0 + clip(x + step·sign(∇) − x0, −eps, eps), 0, 1); with ``generator=None`` and the
    same ``torch.manual_seed`` this reproduces torchattacks.PGD. ``norm="L2"``: the start is a
    Gaussian direction at radius U(0, 1)·eps per example, each step moves ``step_size`` along
    ∇/‖∇‖₂ per example and projects onto the L2 eps-ball and [0, 1]; this reproduces
    torchattacks.PGDL2 the same way.
    With ``restarts > 1`` each point keeps the final iterate of the restart that fools the model
    (first such restart with the highest loss) or, if none does, that has the highest loss; this
    costs one extra forward pass per restart. The model is put in ``bn_mode`` during the attack and
    restored afterwards (running statistics included). ``autocast_dtype`` runs the model under
    autocast with the loss in fp32. No early exit: every point gets every step (see
    :func:`robust_correct` for the cheaper evaluator).

    Shapes: x (N, C, H, W) float in [0, 1], y (N,) int. Returns x_adv, same shape as x, detached.
    """
    from .spec import check_threat

    norm = check_threat(norm)
    model, x, y, eps = checked_inputs(model, x, y, eps, bn_mode, generator, autocast_dtype, norm)
    step_size = check_step_size(step_size)
    steps = check_count(steps, "steps")
    restarts = check_count(restarts, "restarts")
    if x.shape[0] == 0:
        return x.clone()
    draw = noise_for(norm)
    with _bn_mode_context(model, bn_mode, keep_running_stats=True):
        best: Tensor | None = None
        best_loss = best_fooled = None
        for _ in range(restarts):
            noise = draw(x, eps, generator) if random_start else None
            x_adv = _pgd_run(
                model, x, y, noise, eps=eps, step_size=step_size, steps=steps,
                autocast_dtype=autocast_dtype, norm=norm,
            )  # fmt: skip
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                logits = logits_of(model, x_adv, autocast_dtype)
            loss = F.cross_entropy(logits, y, reduction="none")
            fooled = logits.argmax(dim=1) != y
            if best is None:
                best, best_loss, best_fooled = x_adv, loss, fooled
                continue
            # Fooling beats not fooling; between equals the higher loss wins.
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
            mask = better.view(-1, *([1] * (x.dim() - 1)))
            best = torch.where(mask, x_adv, best)
            best_loss = torch.where(better, loss, best_loss)
            best_fooled = best_fooled | fooled
        assert best is not None
        return best


def perturb(model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, generator: Any = None,
            **kw: Any) -> Tensor:  # fmt: skip
    """Run the registered attack ``spec`` names (defaults resolved) and return x_adv (x's shape).

    ``generator``: a ``torch.Generator`` on ``x``'s device for the random start (None: torch's
    global one); ``autocast_dtype`` (keyword): run the model under autocast, loss in fp32.

    Built in, "fgsm" and "fgsm-rs" call :func:`fgsm`, "fgm" :func:`fgm`, and "pgd" and "pgd-l2"
    :func:`pgd` (no early exit).
    """
    spec = resolved_spec(spec)
    return spec.entry().run(model, x, y, spec, generator, kw.get("autocast_dtype"))


def resolved_spec(spec: Any) -> AttackSpec:
    """``spec`` validated and with its defaults filled in; a non-spec is a one-line UserError."""
    if not isinstance(spec, AttackSpec):
        raise UserError(f"spec must be an AttackSpec, got {type(spec).__name__}")
    spec.validate()
    return spec.resolved()


def trades_perturb(
    model: nn.Module,
    x: Tensor,
    eps: float,
    *,
    step_size: float,
    steps: int,
    bn_mode: str = "eval",
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """TRADES inner maximization (Zhang et al. 2019); labels are not needed.

    Starts at clamp(x + 0.001·N(0, 1), 0, 1) and takes ``steps`` signed-gradient steps of size
    ``step_size`` on sum_i KL(p(x_i) ‖ p(x_adv_i)), where p = softmax(model(·)) and p(x) is fixed,
    i.e. ``KLDivLoss(log_softmax(model(x_adv)), softmax(model(x)))`` as in the official TRADES
    code; each step is projected to the eps-ball around x and to [0, 1]. (The official code does
    not clamp the start to [0, 1]; we do, so the model only ever sees valid images.) Typical
    CIFAR-10 setting: eps 8/255, step 2/255, 10 steps. Model mode handling and ``autocast_dtype``
    as in :func:`pgd`.

    Shapes: x (N, C, H, W) float in [0, 1]. Returns x_adv, same shape as x, detached.
    """
    model, x, _, eps = checked_inputs(model, x, None, eps, bn_mode, generator, autocast_dtype)
    step_size = check_step_size(step_size)
    steps = check_count(steps, "steps")
    if x.shape[0] == 0:
        return x.clone()
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    with _bn_mode_context(model, bn_mode, keep_running_stats=True):
        with torch.no_grad():
            p_clean = F.softmax(logits_of(model, x, autocast_dtype), dim=1)
        x_adv = torch.clamp(x + _TRADES_START_STD * noise, min=0, max=1).detach()
        for _ in range(steps):
            with torch.enable_grad():
                x_adv.requires_grad_(True)
                log_p_adv = F.log_softmax(logits_of(model, x_adv, autocast_dtype), dim=1)
                loss = F.kl_div(log_p_adv, p_clean, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = project_step(x_adv, x, grad, step_size, eps)
        return x_adv
