"""L∞ adversarial attacks (FGSM, FGSM-RS, PGD, TRADES inner maximization) and a robust evaluator.

All attacks take float inputs ``x`` of shape (N, C, H, W) with values in [0, 1] and integer
labels ``y`` of shape (N,); any input normalization lives inside the model. Gradients are taken
with respect to the input only (``torch.autograd.grad``), so model parameters' ``.grad`` are never
touched. The device is taken from ``x``; a ``generator``, when given, must live on the same device
type as ``x``.

References:
    Goodfellow, Shlens, Szegedy 2015, "Explaining and harnessing adversarial examples" (FGSM).
    Wong, Rice, Kolter 2020, "Fast is better than free" (FGSM-RS: random start, step 1.25·eps).
    Madry, Makelov, Schmidt, Tsipras, Vladu 2018, "Towards deep learning models resistant to
    adversarial attacks" (PGD).
    Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan 2019, "Theoretically principled trade-off between
    robustness and accuracy" (TRADES).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from boosting_tickets.errors import UserError

__all__ = [
    "ATTACK_NAMES",
    "BN_MODES",
    "AttackSpec",
    "accuracy_under_attack",
    "bn_mode",
    "fgsm",
    "perturb",
    "pgd",
    "robust_correct",
    "robust_correct_with_stats",
    "trades_perturb",
]

ATTACK_NAMES: tuple[str, ...] = ("fgsm", "fgsm-rs", "pgd")
BN_MODES: tuple[str, ...] = ("eval", "train")
_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)
# TRADES starts from x + 0.001·N(0, 1) (official TRADES code).
_TRADES_START_STD = 0.001


# --------------------------------------------------------------------------------------------------
# Attack specification
# --------------------------------------------------------------------------------------------------


def _check_real(value: Any, what: str) -> float:
    """Return ``value`` as a float or raise UserError if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        else:
            raise UserError(f"{what} must be a number, got {value!r}; pass a float such as 8/255")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{what} must be finite, got {value}; pass a float in [0, 1]")
    return value


def _check_eps(eps: Any) -> float:
    eps = _check_real(eps, "eps")
    if eps < 0 or eps > 1:
        raise UserError(
            f"eps must lie in [0, 1] for inputs in [0, 1], got {eps}; e.g. use 8/255 not 8"
        )
    return eps


def _check_step_size(step_size: Any) -> float:
    step_size = _check_real(step_size, "step_size")
    if step_size < 0:
        raise UserError(f"step_size must be >= 0, got {step_size}; pass e.g. 2/255")
    return step_size


def _check_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{what} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise UserError(f"{what} must be >= 1, got {value}; use at least 1")
    return int(value)


def _check_bn_mode(mode: Any) -> str:
    if mode not in BN_MODES:
        raise UserError(f"unknown bn_mode {mode!r}; use one of {', '.join(BN_MODES)}")
    return mode


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """An L∞ attack recipe, validated on construction.

    Fields:
        name: "fgsm" (Goodfellow 2015), "fgsm-rs" (Wong, Rice, Kolter 2020) or "pgd" (Madry 2018).
        eps: L∞ radius in input units ([0, 1] images), e.g. 8/255.
        steps: gradient steps; must be 1 for the FGSM variants. Default 1.
        step_size: per-step size; ``None`` resolves to eps (fgsm), 1.25·eps (fgsm-rs), eps/4 (pgd).
        restarts: random restarts (PGD only); default 1.
        random_start: uniform start in the eps-ball; ``None`` resolves to False for fgsm and True
            for fgsm-rs and pgd.
        bn_mode: "eval" (default) or "train": the mode the whole model is put in while attacking.

    Raises UserError for eps outside [0, 1], non-finite eps or step size, steps < 1,
    restarts < 1, an unknown name or bn_mode.
    """

    name: str
    eps: float
    steps: int = 1
    step_size: float | None = None
    restarts: int = 1
    random_start: bool | None = None
    bn_mode: str = "eval"

    def __post_init__(self) -> None:
        # Accept "PGD", "fgsm_rs" etc. and store the canonical spelling.
        if isinstance(self.name, str):
            object.__setattr__(self, "name", self.name.strip().lower().replace("_", "-"))
        self.validate()
        # Store plain Python numbers so protocol() is JSON-serializable.
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "restarts", int(self.restarts))
        if self.step_size is not None:
            object.__setattr__(self, "step_size", float(self.step_size))

    def validate(self) -> None:
        """Raise UserError naming the first invalid field; return None if the spec is usable."""
        if self.name not in ATTACK_NAMES:
            raise UserError(
                f"unknown attack name {self.name!r}; use one of {', '.join(ATTACK_NAMES)}"
            )
        _check_eps(self.eps)
        steps = _check_count(self.steps, "steps")
        restarts = _check_count(self.restarts, "restarts")
        if self.step_size is not None:
            _check_step_size(self.step_size)
        if self.random_start is not None and not isinstance(self.random_start, bool):
            raise UserError(f"random_start must be True, False or None, got {self.random_start!r}")
        _check_bn_mode(self.bn_mode)
        if self.name != "pgd" and steps != 1:
            raise UserError(
                f"{self.name} is a single-step attack but steps={steps}; use name='pgd' for more"
            )
        if self.name != "pgd" and restarts != 1:
            raise UserError(
                f"{self.name} does not support restarts (got {restarts}); use name='pgd'"
            )

    def resolved(self) -> AttackSpec:
        """Return a copy with ``step_size`` and ``random_start`` defaults filled in."""
        step_size = self.step_size
        if step_size is None:
            step_size = {"fgsm": 1.0, "fgsm-rs": 1.25, "pgd": 0.25}[self.name] * self.eps
        random_start = self.random_start
        if random_start is None:
            random_start = self.name != "fgsm"
        return dataclasses.replace(self, step_size=step_size, random_start=random_start)

    def protocol(self) -> dict[str, Any]:
        """All resolved fields plus ``implementation="boosting_tickets"``, to store with results."""
        spec = self.resolved()
        return {
            "name": spec.name,
            "eps": spec.eps,
            "steps": spec.steps,
            "step_size": spec.step_size,
            "restarts": spec.restarts,
            "random_start": spec.random_start,
            "bn_mode": spec.bn_mode,
            "implementation": "boosting_tickets",
        }


# --------------------------------------------------------------------------------------------------
# Model mode handling
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bn_mode(
    model: nn.Module, mode: str, *, keep_running_stats: bool = False
) -> Iterator[nn.Module]:
    """Put every module of ``model`` in train or eval mode for the ``with`` block.

    On exit (also on exception) each module gets back its own previous ``training`` flag, so a
    model with mixed modes (e.g. frozen BN inside a training model) is restored exactly.
    With ``keep_running_stats=True`` and mode "train", batch-norm running statistics and
    ``num_batches_tracked`` are restored too, so forward passes made inside the block (e.g. while
    generating attacks) leave no trace in the model. Default False: plain mode switching.
    """
    mode = _check_bn_mode(mode)
    flags = [(module, module.training) for module in model.modules()]
    saved: list[tuple[Tensor, Tensor]] = []
    if keep_running_stats and mode == "train":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase):
                for buf in (module.running_mean, module.running_var, module.num_batches_tracked):
                    if buf is not None:
                        saved.append((buf, buf.detach().clone()))
    try:
        model.train(mode == "train")
        yield model
    finally:
        for module, was_training in flags:
            module.training = was_training
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)


# Alias so functions whose ``bn_mode`` argument shadows the context manager can still reach it.
_bn_mode_context = bn_mode


# --------------------------------------------------------------------------------------------------
# Input checks and shared attack steps
# --------------------------------------------------------------------------------------------------


def _check_x(x: Any) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise UserError(
            "x must be a float tensor of images in [0, 1]; convert with x.float() / 255"
        )
    if x.dim() < 2:
        raise UserError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}; add a batch dim")
    if x.numel() and bool((~((x >= 0) & (x <= 1))).any()):
        raise UserError("x must lie in [0, 1] (no NaN); normalize inside the model, not the data")
    return x.detach()


def _check_y(y: Any, x: Tensor) -> Tensor:
    if (
        not isinstance(y, Tensor)
        or y.is_floating_point()
        or y.is_complex()
        or y.dtype == torch.bool
    ):
        raise UserError("y must be an integer tensor of class labels; convert with y.long()")
    if y.shape != (x.shape[0],):
        raise UserError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if y.device != x.device:
        raise UserError(f"y is on {y.device} but x on {x.device}; move both to the same device")
    return y.detach()


def _check_generator(generator: torch.Generator | None, x: Tensor) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise UserError(f"generator must be a torch.Generator or None, got {type(generator)}")
    if generator.device.type != x.device.type:
        raise UserError(
            f"generator is on {generator.device} but x on {x.device}; "
            "create it with torch.Generator(device=x.device)"
        )


def _check_autocast(autocast_dtype: torch.dtype | None) -> None:
    if autocast_dtype is not None and autocast_dtype not in _AUTOCAST_DTYPES:
        raise UserError(
            f"autocast_dtype must be None, torch.bfloat16 or torch.float16, got {autocast_dtype}"
        )


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _autocast(x: Tensor, autocast_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, dtype=autocast_dtype)


def _logits(model: nn.Module, x: Tensor, autocast_dtype: torch.dtype | None) -> Tensor:
    """Forward pass; logits are returned in fp32 so losses are always computed in fp32."""
    with _autocast(x, autocast_dtype):
        out = model(x)
    return out.float()


def _input_grad(
    model: nn.Module, x_adv: Tensor, y: Tensor, autocast_dtype: torch.dtype | None
) -> tuple[Tensor, Tensor]:
    """Gradient of mean cross-entropy w.r.t. the input only, and the (detached) logits."""
    with torch.enable_grad():
        x_adv = x_adv.detach().requires_grad_(True)
        logits = _logits(model, x_adv, autocast_dtype)
        loss = F.cross_entropy(logits, y)
        (grad,) = torch.autograd.grad(loss, x_adv)
    return grad, logits.detach()


def _project_step(x_adv: Tensor, x: Tensor, grad: Tensor, step_size: float, eps: float) -> Tensor:
    """x_adv + step·sign(grad), projected to the eps-ball around x and to [0, 1].

    Same operation order as torchattacks.PGD, so results agree to float rounding.
    """
    x_adv = x_adv.detach() + step_size * grad.sign()
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0, max=1).detach()


def _uniform_noise(x: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    # Drawn for the whole batch so the random stream never depends on which points survive.
    return torch.empty_like(x).uniform_(-eps, eps, generator=generator)


def _start(x: Tensor, noise: Tensor | None) -> Tensor:
    if noise is None:
        return x.clone().detach()
    return torch.clamp(x + noise, min=0, max=1).detach()


# --------------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------------


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
    model = _check_model(model)
    x = _check_x(x)
    y = _check_y(y, x)
    eps = _check_eps(eps)
    if step_size is None:
        step_size = 1.25 * eps if random_start else eps
    step_size = _check_step_size(step_size)
    _check_bn_mode(bn_mode)
    _check_generator(generator, x)
    _check_autocast(autocast_dtype)
    if x.shape[0] == 0:
        return x.clone()
    noise = _uniform_noise(x, eps, generator) if random_start else None
    with _bn_mode_context(model, bn_mode, keep_running_stats=True):
        x_adv = _start(x, noise)
        grad, _ = _input_grad(model, x_adv, y, autocast_dtype)
        return _project_step(x_adv, x, grad, step_size, eps)


def _pgd_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    step_size: float,
    steps: int,
    noise: Tensor | None,
    autocast_dtype: torch.dtype | None,
) -> Tensor:
    x_adv = _start(x, noise)
    for _ in range(steps):
        grad, _ = _input_grad(model, x_adv, y, autocast_dtype)
        x_adv = _project_step(x_adv, x, grad, step_size, eps)
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
) -> Tensor:
    """L∞ projected gradient ascent on mean cross-entropy (Madry et al. 2018).

    Each restart starts at clamp(x + U(−eps, eps), 0, 1) (or at x if ``random_start=False``), then
    takes ``steps`` updates x ← clamp(x0 + clip(x + step·sign(∇) − x0, −eps, eps), 0, 1).
    With ``generator=None`` and the same ``torch.manual_seed`` this reproduces torchattacks.PGD.
    With ``restarts > 1`` each point keeps the final iterate of the restart that fools the model
    (first such restart with the highest loss) or, if none does, that has the highest loss; this
    costs one extra forward pass per restart. The model is put in ``bn_mode`` during the attack and
    restored afterwards (running statistics included). ``autocast_dtype`` runs the model under
    autocast with the loss in fp32. No early exit: every point gets every step (see
    :func:`robust_correct` for the cheaper evaluator).

    Shapes: x (N, C, H, W) float in [0, 1], y (N,) int. Returns x_adv, same shape as x, detached.
    """
    model = _check_model(model)
    x = _check_x(x)
    y = _check_y(y, x)
    eps = _check_eps(eps)
    step_size = _check_step_size(step_size)
    steps = _check_count(steps, "steps")
    restarts = _check_count(restarts, "restarts")
    _check_bn_mode(bn_mode)
    _check_generator(generator, x)
    _check_autocast(autocast_dtype)
    if x.shape[0] == 0:
        return x.clone()
    with _bn_mode_context(model, bn_mode, keep_running_stats=True):
        best: Tensor | None = None
        best_loss = best_fooled = None
        for _ in range(restarts):
            noise = _uniform_noise(x, eps, generator) if random_start else None
            x_adv = _pgd_run(model, x, y, eps, step_size, steps, noise, autocast_dtype)
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                logits = _logits(model, x_adv, autocast_dtype)
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


def perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    generator: torch.Generator | None = None,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Run the attack described by ``spec`` (defaults resolved) and return x_adv (same shape as x).

    "fgsm" and "fgsm-rs" call :func:`fgsm`, "pgd" calls :func:`pgd` (no early exit).
    """
    spec = _check_spec(spec)
    if spec.name in ("fgsm", "fgsm-rs"):
        return fgsm(
            model,
            x,
            y,
            spec.eps,
            step_size=spec.step_size,
            random_start=bool(spec.random_start),
            bn_mode=spec.bn_mode,
            generator=generator,
            autocast_dtype=autocast_dtype,
        )
    return pgd(
        model,
        x,
        y,
        spec.eps,
        step_size=float(spec.step_size),  # resolved, never None
        steps=spec.steps,
        random_start=bool(spec.random_start),
        restarts=spec.restarts,
        bn_mode=spec.bn_mode,
        generator=generator,
        autocast_dtype=autocast_dtype,
    )


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
    model = _check_model(model)
    x = _check_x(x)
    eps = _check_eps(eps)
    step_size = _check_step_size(step_size)
    steps = _check_count(steps, "steps")
    _check_bn_mode(bn_mode)
    _check_generator(generator, x)
    _check_autocast(autocast_dtype)
    if x.shape[0] == 0:
        return x.clone()
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    with _bn_mode_context(model, bn_mode, keep_running_stats=True):
        with torch.no_grad():
            p_clean = F.softmax(_logits(model, x, autocast_dtype), dim=1)
        x_adv = torch.clamp(x + _TRADES_START_STD * noise, min=0, max=1).detach()
        for _ in range(steps):
            with torch.enable_grad():
                x_adv.requires_grad_(True)
                log_p_adv = F.log_softmax(_logits(model, x_adv, autocast_dtype), dim=1)
                loss = F.kl_div(log_p_adv, p_clean, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = _project_step(x_adv, x, grad, step_size, eps)
        return x_adv


# --------------------------------------------------------------------------------------------------
# Early-exit robust evaluation
# --------------------------------------------------------------------------------------------------


def _check_spec(spec: Any) -> AttackSpec:
    if not isinstance(spec, AttackSpec):
        raise UserError(f"spec must be an AttackSpec, got {type(spec).__name__}")
    spec.validate()
    return spec.resolved()


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
    batch every restart, so the random stream matches :func:`pgd` with the same generator or seed.
    In eval BN mode this is at least as strict as checking only pgd()'s final output.

    FGSM / FGSM-RS: robust iff clean correct and the FGSM output is still classified correctly
    (only clean-correct points are attacked).

    Correctness is always judged with the model in eval mode; with ``spec.bn_mode == "train"``
    the attack runs in train mode (batch statistics of the surviving sub-batch) and each iterate
    gets an extra eval-mode forward. The model's modes and BN statistics are restored.

    Shapes: x (N, C, H, W) float in [0, 1], y (N,) int. Returns (robust (N,) bool tensor, stats)
    with stats keys: n, clean_correct, robust_correct, forward_images, backward_images (image
    gradients computed), full_forward_images and full_backward_images (cost of the same attack
    without early exit: a clean forward, every step on every point, and a final forward per
    restart), fooled_at (list, length steps+1: points first fooled at iterate t, summed over
    restarts; iterate 0 is the start point; FGSM specs only ever count the output, at index 1).
    """
    model = _check_model(model)
    spec = _check_spec(spec)
    x = _check_x(x)
    y = _check_y(y, x)
    _check_generator(generator, x)
    _check_autocast(autocast_dtype)
    n = int(x.shape[0])
    eps, step_size = spec.eps, float(spec.step_size)  # resolved, never None
    steps, restarts = spec.steps, spec.restarts
    counts = {"forward": 0, "backward": 0}
    fooled_at = [0] * (steps + 1)
    stats: dict[str, Any] = {
        "n": n,
        "full_forward_images": n * (1 + restarts * (steps + 1)),
        "full_backward_images": n * restarts * steps,
    }
    if n == 0:
        robust = torch.zeros(0, dtype=torch.bool, device=x.device)
        stats.update(clean_correct=0, robust_correct=0, forward_images=0, backward_images=0)
        stats["fooled_at"] = fooled_at
        return robust, stats

    judge_in_attack_mode = spec.bn_mode == "eval"
    # FGSM counts only the clean input and the attack output, not the random-start point.
    check_iterates = spec.name == "pgd"

    def wrong(xb: Tensor, yb: Tensor, logits: Tensor | None = None) -> Tensor:
        """Misclassification mask, reusing attack logits when they were computed in eval mode."""
        if logits is None or not judge_in_attack_mode:
            with _bn_mode_context(model, "eval"), torch.no_grad():
                logits = _logits(model, xb, autocast_dtype)
            counts["forward"] += int(xb.shape[0])
        return logits.argmax(dim=1) != yb

    with _bn_mode_context(model, spec.bn_mode, keep_running_stats=True):
        alive = ~wrong(x, y)
        stats["clean_correct"] = int(alive.sum())
        for _ in range(restarts):
            noise = _uniform_noise(x, eps, generator) if spec.random_start else None
            idx = alive.nonzero().squeeze(1)
            if idx.numel() == 0:
                continue  # still draw the noise above so the random stream stays aligned
            xb, yb = x[idx], y[idx]
            x_adv = _start(xb, None if noise is None else noise[idx])
            for t in range(steps):
                grad, logits = _input_grad(model, x_adv, yb, autocast_dtype)
                counts["forward"] += int(idx.numel())
                counts["backward"] += int(idx.numel())
                if not check_iterates:
                    x_adv = _project_step(x_adv, xb, grad, step_size, eps)
                    continue
                fooled = wrong(x_adv, yb, logits)
                if bool(fooled.any()):
                    fooled_at[t] += int(fooled.sum())
                    alive[idx[fooled]] = False
                    keep = ~fooled
                    idx, xb, yb = idx[keep], xb[keep], yb[keep]
                    x_adv, grad = x_adv[keep], grad[keep]
                    if idx.numel() == 0:
                        break
                x_adv = _project_step(x_adv, xb, grad, step_size, eps)
            if idx.numel() == 0:
                continue
            fooled = wrong(x_adv, yb)
            fooled_at[steps] += int(fooled.sum())
            alive[idx[fooled]] = False

    stats.update(
        robust_correct=int(alive.sum()),
        forward_images=counts["forward"],
        backward_images=counts["backward"],
        fooled_at=fooled_at,
    )
    return alive, stats


def robust_correct(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Bool tensor (N,): clean-correct and never fooled under ``spec`` (early exit).

    See :func:`robust_correct_with_stats` for the exact criterion and cost counters.
    """
    robust, _ = robust_correct_with_stats(
        model, x, y, spec, generator=generator, autocast_dtype=autocast_dtype
    )
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
    batch_size = _check_count(batch_size, "batch_size")
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
