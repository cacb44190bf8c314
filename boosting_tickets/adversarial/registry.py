"""The attack registry: name -> implementation, default step, single-step or not, random start.

Built-in L∞ attacks (inputs in [0, 1], normalization inside the model):

* ``fgsm`` -- Goodfellow, Shlens, Szegedy 2015: one signed-gradient step of size eps, no random
  start (as in the boosting-ticket code);
* ``fgsm-rs`` -- Wong, Rice, Kolter 2020: a uniform random start in the eps-ball, step 1.25·eps;
* ``pgd`` -- Madry et al. 2018: k signed-gradient steps of eps/4 from a uniform random start,
  projected onto the eps-ball and [0, 1], with optional restarts.

An entry's ``run(model, x, y, spec, generator, autocast_dtype) -> x_adv`` crafts the attack;
``linf_steps`` says the attack is a sequence of L∞ signed-gradient steps from an optional uniform
start, which the early-exit evaluator (:mod:`.evaluator`) can replay point by point. Plugins add
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
        linf_steps: the early-exit evaluator may replay it as L∞ signed steps (False: the
            evaluator judges the attack's output instead).
    """

    run: Runner
    default_step: float
    random_start: bool
    single_step: bool
    linf_steps: bool = False


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
    )


BUILTIN_ATTACKS: tuple[AttackEntry, ...] = (
    AttackEntry(
        "fgsm",
        "FGSM (Goodfellow et al. 2015): one step of eps, no random start",
        _run_fgsm,
        default_step=1.0,
        random_start=False,
        single_step=True,
        linf_steps=True,
    ),
    AttackEntry(
        "fgsm-rs",
        "FGSM with a random start (Wong, Rice & Kolter 2020): step 1.25·eps",
        _run_fgsm,
        default_step=1.25,
        random_start=True,
        single_step=True,
        linf_steps=True,
    ),
    AttackEntry(
        "pgd",
        "L∞ PGD (Madry et al. 2018): k steps of eps/4 from a random start, restarts",
        _run_pgd,
        default_step=0.25,
        random_start=True,
        single_step=False,
        linf_steps=True,
    ),
)


def attacks() -> Registry[AttackEntry]:
    """The built-in attacks plus those of plugins (``ATTACKS``)."""
    return build_registry("attack", BUILTIN_ATTACKS, "ATTACKS")


def attack_names() -> tuple[str, ...]:
    """Registered attack names, for CLI choices and validation."""
    return attacks().names
