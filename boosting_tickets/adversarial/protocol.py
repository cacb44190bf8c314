"""The evaluation protocol: what is attacked, how, and what is written next to every number.

The default is L∞ PGD-20 with step eps/4 (2/255 at eps 8/255) and one random start, plus FGSM,
with BatchNorm in eval mode. ``norm="L2"`` makes it L2 PGD-20 (step eps/4, a random start in the
L2 ball) plus FGM. This module imports no torch, so suites are planned without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.environment import package_versions
from .spec import AttackSpec, check_threat

#: The protocol's multi-step and single-step attack per threat model.
_ATTACKS = {"Linf": ("pgd", "fgsm"), "L2": ("pgd-l2", "fgm")}


@dataclass(frozen=True)
class EvalProtocol:
    """How robustness is measured. ``step_size=None`` means eps/4.

    ``norm``: the threat model, ``"Linf"`` (PGD + FGSM) or ``"L2"`` (PGD-L2 + FGM); the result keys
    stay ``pgd_acc`` / ``fgsm_acc`` (the multi-step and the single-step attack) and the record
    names the norm. ``attacks`` names further registered attacks (``adversarial.registry``) of the
    same norm to measure besides, each at ``eps`` with its own default step (multi-step ones with
    ``pgd_steps``).
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
    norm: str = "Linf"

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", check_threat(self.norm))
        # Building the specs validates eps, steps, restarts, bn_mode and names with one-line errors.
        self.pgd_spec()
        for name in self.attacks:
            spec = self.attack_spec(name)
            if spec.norm != self.norm:
                from ..core.errors import UserError

                raise UserError(
                    f"attack {spec.name!r} is {spec.norm} but the protocol is {self.norm}; "
                    "measure one threat model at a time"
                )

    def pgd_spec(self) -> AttackSpec:
        return AttackSpec(
            name=_ATTACKS[self.norm][0],
            eps=self.eps,
            steps=self.pgd_steps,
            step_size=self.eps / 4 if self.step_size is None else self.step_size,
            restarts=self.restarts,
            random_start=self.random_start,
            bn_mode=self.bn_mode,
        )

    def fgsm_spec(self) -> AttackSpec:
        return AttackSpec(
            name=_ATTACKS[self.norm][1], eps=self.eps, step_size=self.eps, random_start=False,
            bn_mode=self.bn_mode,
        )  # fmt: skip

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
            "threat_model": self.norm,
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
            # fgsm_acc is FGM's under L2: threat_model names the pair (see the class docstring).
            "implementation": "boosting_tickets early-exit "
            + ("PGD" if self.norm == "Linf" else "PGD-L2"),
            "packages": package_versions(),
        }
        if self.attacks:
            out["attacks"] = {a: self.attack_spec(a).protocol() for a in self.attacks}
        return out
