"""Clean, FGSM, PGD-k (and optional AutoAttack) accuracy under a recorded protocol.

The default protocol is the paper's evaluation: L∞ PGD-20 with step eps/4 (2/255 at eps 8/255) and a
random start, plus FGSM, with BatchNorm in eval mode. PGD accuracy uses the early-exit evaluator
(:func:`attacks.robust_correct`): a point counts as robust only if no iterate of any step or restart
fooled the model, so it is never weaker than running every step on every point.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .attacks import AttackSpec, bn_mode, perturb, robust_correct
from .environment import package_versions
from .errors import UserError


@dataclass(frozen=True)
class EvalProtocol:
    """How robustness is measured. ``step_size=None`` means eps/4."""

    eps: float
    pgd_steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    bn_mode: str = "eval"
    fgsm: bool = True
    seed: int = 0
    autoattack: bool = False

    def __post_init__(self) -> None:
        # Building the specs validates eps, steps, restarts and bn_mode with one-line errors.
        self.pgd_spec()

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

    def record(self, n: int) -> dict[str, Any]:
        """The protocol as written next to every number."""
        pgd = self.pgd_spec()
        return {
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


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    protocol: EvalProtocol,
    *,
    batch_size: int = 500,
    num_classes: int | None = None,
    per_class: bool = False,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, Any]:
    """Accuracy of ``model`` on ``images`` (N,C,H,W; uint8 or float in [0,1]) and ``labels`` (N,).

    Returns a JSON-ready dict: ``clean_acc``, ``fgsm_acc``, ``pgd_acc`` (fractions in [0,1]),
    optionally ``autoattack_acc`` and ``per_class``, the ``protocol`` and sanity ``flags``. The model's
    train/eval mode is restored afterwards.
    """
    from tqdm import tqdm

    n = int(labels.shape[0])
    if n == 0:
        raise UserError("nothing to evaluate: the evaluation set is empty")
    if images.shape[0] != n:
        raise UserError(f"{images.shape[0]} images but {n} labels")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    gen = torch.Generator(device=dev)
    gen.manual_seed(protocol.seed)
    clean_ok = torch.zeros(n, dtype=torch.bool)
    fgsm_ok = torch.zeros(n, dtype=torch.bool)
    pgd_ok = torch.zeros(n, dtype=torch.bool)
    pgd_spec, fgsm_spec = protocol.pgd_spec(), protocol.fgsm_spec()
    starts = range(0, n, batch_size)
    with bn_mode(model, protocol.bn_mode):
        for s in tqdm(starts, desc=desc, leave=False, disable=None if progress else True):
            x = _as_float(images[s : s + batch_size]).to(dev)
            y = labels[s : s + batch_size].to(dev)
            with torch.no_grad():
                clean_ok[s : s + len(y)] = (model(x).argmax(1) == y).cpu()
            if protocol.fgsm:
                x_adv = perturb(model, x, y, fgsm_spec, generator=gen)
                with torch.no_grad():
                    fgsm_ok[s : s + len(y)] = (model(x_adv).argmax(1) == y).cpu()
            pgd_ok[s : s + len(y)] = robust_correct(model, x, y, pgd_spec, generator=gen).cpu()
    out: dict[str, Any] = {
        "n": n,
        "clean_acc": clean_ok.float().mean().item(),
        "fgsm_acc": fgsm_ok.float().mean().item() if protocol.fgsm else None,
        "pgd_acc": pgd_ok.float().mean().item(),
    }
    if protocol.autoattack:
        out["autoattack_acc"] = autoattack_accuracy(
            model,
            images,
            labels,
            protocol.eps,
            batch_size=batch_size,
            device=dev,
            seed=protocol.seed,
        )
    if per_class:
        k = int(num_classes if num_classes is not None else int(labels.max().item()) + 1)
        lab = labels.cpu()
        support = torch.bincount(lab, minlength=k)

        def rate(ok: torch.Tensor) -> list[float | None]:
            hits = torch.bincount(lab[ok], minlength=k)
            return [
                None if support[c] == 0 else hits[c].item() / support[c].item() for c in range(k)
            ]

        out["per_class"] = {
            "support": support.tolist(),
            "clean": rate(clean_ok),
            "fgsm": rate(fgsm_ok) if protocol.fgsm else None,
            "pgd": rate(pgd_ok),
        }
    out["flags"] = sanity_flags(out)
    out["protocol"] = protocol.record(n)
    return out


def sanity_flags(result: dict[str, Any]) -> list[str]:
    """Warnings that numbers are implausible: robust above clean, or PGD above FGSM (masking)."""
    flags = []
    clean, fgsm, pgd = result.get("clean_acc"), result.get("fgsm_acc"), result.get("pgd_acc")
    aa = result.get("autoattack_acc")
    if pgd is not None and clean is not None and pgd > clean:
        flags.append("robust_above_clean: PGD accuracy exceeds clean accuracy")
    if fgsm is not None and clean is not None and fgsm > clean:
        flags.append("fgsm_above_clean: FGSM accuracy exceeds clean accuracy")
    if pgd is not None and fgsm is not None and pgd > fgsm:
        flags.append(
            "pgd_above_fgsm: PGD accuracy exceeds FGSM accuracy (a sign of gradient masking)"
        )
    if aa is not None and pgd is not None and aa > pgd + 0.005:
        flags.append("autoattack_above_pgd: AutoAttack weaker than PGD (suspicious)")
    return flags


def autoattack_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    state_path: str | None = None,
    seed: int = 0,
) -> float:
    """Robust accuracy under AutoAttack 'standard' (Croce & Hein 2020) through pyautoattack.

    pyautoattack's ``run_standard_evaluation`` returns ``(x_adv, y_adv)``; accuracy is recomputed
    here on ``x_adv`` with the model in eval mode.
    """
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise UserError(
            "AutoAttack needs the pyautoattack package; run 'make setup' or pip install pyautoattack"
        ) from None
    dev = torch.device(device)
    x = _as_float(images).to(dev)
    y = labels.to(dev)
    with bn_mode(model, "eval"):
        adversary = AutoAttack(
            model, norm="Linf", eps=eps, version="standard", device=str(dev), seed=seed
        )
        run_kwargs: dict[str, Any] = {"batch_size": batch_size}
        if state_path is not None:
            from pathlib import Path

            run_kwargs["state_path"] = Path(state_path)
        res = adversary.run_standard_evaluation(x, y, **run_kwargs)
        x_adv = res[0] if isinstance(res, tuple) else res
        correct = 0
        with torch.no_grad():
            for s in range(0, len(y), batch_size):
                correct += (
                    model(x_adv[s : s + batch_size]).argmax(1) == y[s : s + batch_size]
                ).sum()
    return float(correct) / len(y)


def protocol_from(
    eps: float, steps: int, step_size: float | None, restarts: int, random_start: bool, **kw: Any
) -> EvalProtocol:
    """Convenience constructor used by the CLI and the trainer."""
    return dataclasses.replace(
        EvalProtocol(eps=eps),
        pgd_steps=steps,
        step_size=step_size,
        restarts=restarts,
        random_start=random_start,
        **kw,
    )
