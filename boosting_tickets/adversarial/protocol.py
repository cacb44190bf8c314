"""The evaluation protocol: what is attacked, how, and what is written next to every number.

The default is L∞ PGD-20 with step eps/4 (2/255 at eps 8/255) and one random start, plus FGSM,
with BatchNorm in eval mode. This module imports no torch, so suites are planned without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.environment import package_versions
from .spec import AttackSpec


@dataclass(frozen=True)
class EvalProtocol:
    """How robustness is measured. ``step_size=None`` means eps/4.

    ``attacks`` names further registered attacks (``adversarial.registry``) to measure besides
    FGSM and PGD, each at ``eps`` with its own default step (multi-step ones with ``pgd_steps``).
    """

    eps: float
    pgd_steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    bn_mode: str = "eval"
    fgsm: bool = True
    seed: int = 0
    autoattack: bool = False
    attacks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Building the specs validates eps, steps, restarts, bn_mode and names with one-line errors.
        self.pgd_spec()
        for name in self.attacks:
            self.attack_spec(name)

    def pgd_spec(self) -> AttackSpec:
        return AttackSpec(
            name="pgd",
            eps=self.eps,
            steps=self.pgd_steps,
            step_size=self.eps / 4 if self.step_size is None else self.step_size,
            restarts=self.restarts,
            random_start=self.random_start,
            bn_mode=self.bn_mode,
        )

    def fgsm_spec(self) -> AttackSpec:
        return AttackSpec(
            name="fgsm", eps=self.eps, step_size=self.eps, random_start=False, bn_mode=self.bn_mode
        )

    def attack_spec(self, name: str) -> AttackSpec:
        """The spec of extra attack ``name`` under this protocol."""
        spec = AttackSpec(name=name, eps=self.eps, bn_mode=self.bn_mode)
        if not spec.entry().single_step:
            spec = AttackSpec(
                name=name,
                eps=self.eps,
                steps=self.pgd_steps,
                restarts=self.restarts,
                bn_mode=self.bn_mode,
            )
        return spec

    def record(self, n: int) -> dict[str, Any]:
        """The protocol as written next to every number."""
        pgd = self.pgd_spec()
        out = {
            "threat_model": "Linf",
            "eps": self.eps,
            "pgd_steps": self.pgd_steps,
            "step_size": pgd.step_size,
            "restarts": self.restarts,
            "random_start": self.random_start,
            "fgsm": self.fgsm,
            "fgsm_random_start": False,
            "bn_mode": self.bn_mode,
            "n_examples": n,
            "seed": self.seed,
            "autoattack": "standard (pyautoattack)" if self.autoattack else None,
            "implementation": "boosting_tickets early-exit PGD",
            "packages": package_versions(),
        }
        if self.attacks:
            out["attacks"] = {a: self.attack_spec(a).protocol() for a in self.attacks}
        return out
