"""Attack recipes: :class:`AttackSpec` and the scalar checks every attack argument goes through.

A spec names an attack of the registry (:mod:`.registry`) and fixes its budget and steps; defaults
for the step size and the random start come from the registry entry. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError

if TYPE_CHECKING:
    from .registry import AttackEntry

BN_MODES: tuple[str, ...] = ("eval", "train")
#: Threat models: the norm of the perturbation budget (inputs in [0, 1]).
THREATS: tuple[str, ...] = ("Linf", "L2")


def check_threat(norm: Any) -> str:
    """``norm`` as its canonical spelling (``linf``/``l2`` accepted); else a one-line UserError."""
    spelled = {t.lower(): t for t in THREATS}
    key = str(norm).strip().lower().replace("∞", "inf") if isinstance(norm, str) else None
    if key not in spelled:
        raise UserError(f"unknown threat model {norm!r}; use one of {', '.join(THREATS)}")
    return spelled[key]


def check_real(value: Any, what: str) -> float:
    """Return ``value`` as a float or raise UserError if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # A one-element tensor (duck-typed: this module imports no torch) counts as its number.
        if hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1:
            value = value.item()
        else:
            raise UserError(f"{what} must be a number, got {value!r}; pass a float such as 8/255")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{what} must be finite, got {value}; pass a float in [0, 1]")
    return value


def check_eps(eps: Any, norm: str = "Linf") -> float:
    """``eps`` as a float: finite and >= 0; an L∞ radius also at most 1 (inputs lie in [0, 1]).
    An L2 radius has no such bound (the diameter of [0, 1]^d is sqrt(d))."""
    eps = check_real(eps, "eps")
    if norm == "L2":
        if eps < 0:
            raise UserError(f"an L2 eps must be >= 0, got {eps}; e.g. 0.5 on CIFAR-10")
        return eps
    if eps < 0 or eps > 1:
        raise UserError(
            f"eps must lie in [0, 1] for inputs in [0, 1], got {eps}; e.g. use 8/255 not 8"
        )
    return eps


def check_step_size(step_size: Any) -> float:
    step_size = check_real(step_size, "step_size")
    if step_size < 0:
        raise UserError(f"step_size must be >= 0, got {step_size}; pass e.g. 2/255")
    return step_size


def check_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{what} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise UserError(f"{what} must be >= 1, got {value}; use at least 1")
    return int(value)


def check_bn_mode(mode: Any) -> str:
    if mode not in BN_MODES:
        raise UserError(f"unknown bn_mode {mode!r}; use one of {', '.join(BN_MODES)}")
    return mode


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """An attack recipe, validated on construction.

    Fields:
        name: a registered attack (``adversarial.registry.attacks()``): built in, L∞ "fgsm"
            (Goodfellow 2015), "fgsm-rs" (Wong, Rice, Kolter 2020), "pgd" (Madry 2018), and L2
            "fgm" (Miyato et al. 2017) and "pgd-l2" (Madry 2018). The entry fixes the norm.
        eps: radius in input units ([0, 1] images) in the attack's norm, e.g. 8/255 (L∞) or
            0.5 (L2).
        steps: gradient steps; must be 1 for single-step attacks (the FGSM variants). Default 1.
        step_size: per-step size; ``None`` resolves to the entry's default multiple of eps: eps
            (fgsm), 1.25·eps (fgsm-rs), eps/4 (pgd).
        restarts: random restarts (multi-step attacks only); default 1.
        random_start: uniform start in the eps-ball; ``None`` resolves to the entry's default:
            False for fgsm, True for fgsm-rs and pgd.
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
        entry = self.entry()
        check_eps(self.eps, entry.norm)
        steps = check_count(self.steps, "steps")
        restarts = check_count(self.restarts, "restarts")
        if self.step_size is not None:
            check_step_size(self.step_size)
        if self.random_start is not None and not isinstance(self.random_start, bool):
            raise UserError(f"random_start must be True, False or None, got {self.random_start!r}")
        check_bn_mode(self.bn_mode)
        if entry.single_step and steps != 1:
            raise UserError(
                f"{self.name} is a single-step attack but steps={steps}; use name='pgd' for more"
            )
        if entry.single_step and restarts != 1:
            raise UserError(
                f"{self.name} does not support restarts (got {restarts}); use name='pgd'"
            )

    def entry(self) -> AttackEntry:
        """The registry entry of this attack; an unknown name is a one-line UserError."""
        from .registry import attacks

        reg = attacks()
        if self.name not in reg:
            raise UserError(f"unknown attack name {self.name!r}; use one of {', '.join(reg.names)}")
        return reg.get(self.name)

    @property
    def norm(self) -> str:
        """The threat model of the attack (its registry entry's): ``Linf`` or ``L2``."""
        return self.entry().norm

    def resolved(self) -> AttackSpec:
        """Return a copy with ``step_size`` and ``random_start`` defaults filled in."""
        entry = self.entry()
        random_start = self.random_start
        if random_start is None:
            random_start = entry.random_start
        step_size = self.step_size
        if step_size is None:
            step_size = entry.default_step * self.eps
            if self.name == "fgsm" and random_start:
                # FGSM from a random start is Wong et al.'s FGSM-RS: its step is 1.25·eps, as
                # attacks.fgsm(random_start=True) takes it; eps would undershoot the ball.
                step_size = 1.25 * self.eps
        return dataclasses.replace(self, step_size=step_size, random_start=random_start)

    def protocol(self) -> dict[str, Any]:
        """All resolved fields plus ``implementation="boosting_tickets"``, to store with results."""
        spec = self.resolved()
        return {
            "name": spec.name,
            "norm": spec.norm,
            "eps": spec.eps,
            "steps": spec.steps,
            "step_size": spec.step_size,
            "restarts": spec.restarts,
            "random_start": spec.random_start,
            "bn_mode": spec.bn_mode,
            "implementation": "boosting_tickets",
        }
