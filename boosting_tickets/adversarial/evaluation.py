"""Clean, FGSM, PGD-k, further registered attacks and optional AutoAttack accuracy, with protocol.

PGD accuracy (and that of any extra attack) uses the early-exit evaluator
(:func:`evaluator.robust_correct`): a point counts as robust only if no iterate of any step or
restart fooled the model, so it is never weaker than running every step on every point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from .attacks import perturb
from .evaluator import robust_correct
from .protocol import EvalProtocol
from .steps import bn_mode


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def _correct_masks(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    protocol: EvalProtocol,
    batch_size: int,
    dev: torch.device,
    bar: Callable[[range], Any],
) -> dict[str, torch.Tensor]:
    """Per-point correctness (N,) bool for 'clean', 'fgsm', 'pgd' and each extra attack."""
    n = int(labels.shape[0])
    gen = torch.Generator(device=dev)
    gen.manual_seed(protocol.seed)
    names = ["clean", "fgsm", "pgd", *protocol.attacks]
    ok = {k: torch.zeros(n, dtype=torch.bool) for k in names}
    pgd_spec, fgsm_spec = protocol.pgd_spec(), protocol.fgsm_spec()
    extra = {a: protocol.attack_spec(a) for a in protocol.attacks}
    with bn_mode(model, protocol.bn_mode):
        for s in bar(range(0, n, batch_size)):
            x = _as_float(images[s : s + batch_size]).to(dev)
            y = labels[s : s + batch_size].to(dev)
            part = slice(s, s + len(y))
            with torch.no_grad():
                ok["clean"][part] = (model(x).argmax(1) == y).cpu()
            if protocol.fgsm:
                x_adv = perturb(model, x, y, fgsm_spec, generator=gen)
                with torch.no_grad():
                    ok["fgsm"][part] = (model(x_adv).argmax(1) == y).cpu()
            ok["pgd"][part] = robust_correct(model, x, y, pgd_spec, generator=gen).cpu()
            for a, spec in extra.items():
                ok[a][part] = robust_correct(model, x, y, spec, generator=gen).cpu()
    return ok


def _per_class(
    labels: torch.Tensor, ok: dict[str, torch.Tensor], k: int, fgsm: bool
) -> dict[str, Any]:
    lab = labels.cpu()
    support = torch.bincount(lab, minlength=k)

    def rate(mask: torch.Tensor) -> list[float | None]:
        hits = torch.bincount(lab[mask], minlength=k)
        return [None if support[c] == 0 else hits[c].item() / support[c].item() for c in range(k)]

    return {
        "support": support.tolist(),
        "clean": rate(ok["clean"]),
        "fgsm": rate(ok["fgsm"]) if fgsm else None,
        "pgd": rate(ok["pgd"]),
    }


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
    ``attacks`` ({name: accuracy} for ``protocol.attacks``, when any), optionally
    ``autoattack_acc`` and ``per_class``, the ``protocol`` and sanity ``flags``. The model's
    train/eval mode is restored afterwards.
    """
    from tqdm import tqdm

    n = int(labels.shape[0])
    if n == 0:
        raise UserError("nothing to evaluate: the evaluation set is empty")
    if images.shape[0] != n:
        raise UserError(f"{images.shape[0]} images but {n} labels")
    dev = torch.device(device) if device is not None else next(model.parameters()).device

    def bar(starts: range) -> Any:
        return tqdm(starts, desc=desc, leave=False, disable=None if progress else True)

    ok = _correct_masks(model, images, labels, protocol, batch_size, dev, bar)
    out: dict[str, Any] = {
        "n": n,
        "clean_acc": ok["clean"].float().mean().item(),
        "fgsm_acc": ok["fgsm"].float().mean().item() if protocol.fgsm else None,
        "pgd_acc": ok["pgd"].float().mean().item(),
    }
    if protocol.attacks:
        out["attacks"] = {a: ok[a].float().mean().item() for a in protocol.attacks}
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
        out["per_class"] = _per_class(labels, ok, k, protocol.fgsm)
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
