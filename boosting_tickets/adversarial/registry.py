"""The attack registry: name -> implementation, norm, default step, single-step, random start.

Built-in attacks (inputs in [0, 1], normalization inside the model). L∞:

* ``fgsm`` -- Goodfellow, Shlens, Szegedy 2015: one signed-gradient step of size eps, no random
  start (as in the boosting-ticket code);
* ``fgsm-rs`` -- Wong, Rice, Kolter 2020: a uniform random start in the eps-ball, step 1.25·eps;
* ``pgd`` -- Madry et al. 2018: k signed-gradient steps of eps/4 from a uniform random start,
  projected onto the eps-ball and [0, 1], with optional restarts.

L2:

* ``fgm`` -- the fast gradient method (Miyato, Dai, Goodfellow 2017; Goodfellow et al. 2015's
  L2 variant): one step of eps along the L2-normalized gradient, no random start;
* ``pgd-l2`` -- Madry et al. 2018 in L2: k steps of eps/4 along the per-example L2-normalized
  gradient from a random start in the ball (a Gaussian direction at radius U(0, 1)·eps, as
  torchattacks.PGDL2), projected onto the L2 eps-ball and [0, 1], with optional restarts.

An entry's ``run(model, x, y, spec, generator, autocast_dtype) -> x_adv`` crafts the attack;
``stepwise`` says the attack is a sequence of projected gradient steps of its norm from an optional
random start (:func:`.steps.step_for`, :func:`.steps.noise_for`), which the early-exit evaluator
(:mod:`.evaluator`) can replay point by point. Plugins add
attacks by declaring ``ATTACKS``, a tuple of :class:`AttackEntry`. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.registry import Entry, Registry, build_registry

if TYPE_CHECKING:
    from .spec import AttackSpec

Runner = Callable[..., Any]


@dataclass(frozen=True)
class AttackEntry(Entry):
    """One registry entry: ``name`` (e.g. ``"pgd"``), ``description`` (the attack and its paper),
    and

    Attributes:
        run: ``run(model, x, y, spec, generator, autocast_dtype)`` -> x_adv (same shape as x),
            with ``spec`` resolved (step size and random start filled in).
        default_step: the step size as a multiple of eps when the spec gives none.
        random_start: whether the attack starts at a random point when the spec does not say.
        single_step: exactly one step and no restarts (FGSM-like).
        stepwise: the early-exit evaluator may replay it as projected steps of ``norm`` (False: the
            evaluator judges the attack's output instead).
        norm: its threat model, ``"Linf"`` (default) or ``"L2"``.
    """

    run: Runner
    default_step: float
    random_start: bool
    single_step: bool
    stepwise: bool = False
    norm: str = "Linf"


def _run_fgsm(model: Any, x: Any, y: Any, spec: AttackSpec, generator: Any, autocast: Any) -> Any:
    from .attacks import fgsm

    return fgsm(
        model,
        x,
        y,
        spec.eps,
        step_size=spec.step_size,
        random_start=bool(spec.random_start),
        bn_mode=spec.bn_mode,
        generator=generator,
        autocast_dtype=autocast,
    )


def _run_fgm(model: Any, x: Any, y: Any, spec: AttackSpec, generator: Any, autocast: Any) -> Any:
    from .attacks import fgm

    return fgm(model, x, y, spec.eps, step_size=spec.step_size, bn_mode=spec.bn_mode,
               autocast_dtype=autocast)  # fmt: skip


def _run_pgd(model: Any, x: Any, y: Any, spec: AttackSpec, generator: Any, autocast: Any) -> Any:
    from .attacks import pgd

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
        autocast_dtype=autocast,
        norm=spec.norm,
    )


BUILTIN_ATTACKS: tuple[AttackEntry, ...] = (
    AttackEntry(
        "fgsm",
        "FGSM (Goodfellow et al. 2015): one step of eps, no random start",
        _run_fgsm,
        default_step=1.0,
        random_start=False,
        single_step=True,
        stepwise=True,
    ),
    AttackEntry(
        "fgsm-rs",
        "FGSM with a random start (Wong, Rice & Kolter 2020): step 1.25·eps",
        _run_fgsm,
        default_step=1.25,
        random_start=True,
        single_step=True,
        stepwise=True,
    ),
    AttackEntry(
        "pgd",
        "L∞ PGD (Madry et al. 2018): k steps of eps/4 from a random start, restarts",
        _run_pgd,
        default_step=0.25,
        random_start=True,
        single_step=False,
        stepwise=True,
    ),
    AttackEntry(
        "fgm",
        "L2 FGM (Miyato et al. 2017): one step of eps along the L2-normalized gradient",
        _run_fgm,
        default_step=1.0,
        random_start=False,
        single_step=True,
        stepwise=True,
        norm="L2",
    ),
    AttackEntry(
        "pgd-l2",
        "L2 PGD (Madry et al. 2018): k steps of eps/4 from a random start in the ball, restarts",
        _run_pgd,
        default_step=0.25,
        random_start=True,
        single_step=False,
        stepwise=True,
        norm="L2",
    ),
)


def attacks() -> Registry[AttackEntry]:
    """The built-in attacks plus those of plugins (``ATTACKS``)."""
    return build_registry("attack", BUILTIN_ATTACKS, "ATTACKS")


def attack_names() -> tuple[str, ...]:
    """Registered attack names, for CLI choices and validation."""
    return attacks().names
