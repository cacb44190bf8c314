"""Clean, FGSM, PGD-k, further registered attacks and optional AutoAttack accuracy, with protocol.

PGD accuracy (and that of any extra attack) uses the early-exit evaluator
(:func:`evaluator.robust_correct`): a point counts as robust only if no iterate of any step or
restart fooled the model, so it is never weaker than running every step on every point.

With several ranks (``dist``, see ``core.distributed``) batch ``k`` is evaluated by rank
``k % world``; the others advance the protocol's random stream exactly as evaluating it would
(one draw of uniform noise per random start), and the per-point results are summed over the
ranks, so every rank returns the single-process numbers, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.distributed import Distributed
from ..core.errors import UserError
from .attacks import perturb
from .evaluator import robust_correct
from .protocol import EvalProtocol
from .spec import AttackSpec
from .steps import bn_mode, noise_for


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def _draws(spec: AttackSpec, single: bool) -> tuple[int, str] | None:
    """(how many whole-batch noise draws ``spec`` takes from the stream per batch, their norm);
    None: unknown, a plugin attack that is not stepwise."""
    if not spec.entry().stepwise:
        return None
    if not spec.random_start:
        return 0, spec.norm
    return (1 if single else spec.restarts), spec.norm


def _correct_masks(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    protocol: EvalProtocol,
    batch_size: int,
    dev: torch.device,
    bar: Callable[[range], Any],
    dist: Distributed,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-point correctness (N,) bool for 'clean', 'fgsm', 'pgd' and each extra attack, and the
    clean predictions (N,) int64 (for macro-F1)."""
    n = int(labels.shape[0])
    gen = torch.Generator(device=dev)
    gen.manual_seed(protocol.seed)
    names = ["clean", "fgsm", "pgd", *protocol.attacks]
    ok = {k: torch.zeros(n, dtype=torch.bool) for k in names}
    pred = torch.zeros(n, dtype=torch.int64)
    pgd_spec, fgsm_spec = protocol.pgd_spec(), protocol.fgsm_spec()
    extra = {a: protocol.attack_spec(a) for a in protocol.attacks}
    # In the order the attacks draw from the stream below: FGSM, PGD, the extra attacks.
    draws = [_draws(fgsm_spec, True)] if protocol.fgsm else []
    draws += [_draws(pgd_spec, False), *(_draws(s, False) for s in extra.values())]
    world = dist.world if None not in draws else 1  # unknown streams: every rank does it all
    eps = float(protocol.eps)
    # Every attack crafts in protocol.bn_mode with its BN statistics frozen (attacks restore
    # them); every judgement, clean included, is made in eval mode, as robust_correct's is.
    with bn_mode(model, "eval"):
        for k, s in enumerate(bar(range(0, n, batch_size))):
            x = _as_float(images[s : s + batch_size]).to(dev)
            if k % world != dist.rank % world:
                for count, norm in draws:  # type: ignore[misc] - None was ruled out above
                    for _ in range(count):
                        noise_for(norm)(x, eps, gen)  # the stream where evaluating leaves it
                continue
            y = labels[s : s + batch_size].to(dev)
            part = slice(s, s + len(y))
            with torch.no_grad():
                pred[part] = model(x).argmax(1).cpu()
                ok["clean"][part] = pred[part] == y.cpu()
            if protocol.fgsm:
                x_adv = perturb(model, x, y, fgsm_spec, generator=gen)
                with torch.no_grad():
                    ok["fgsm"][part] = (model(x_adv).argmax(1) == y).cpu()
            ok["pgd"][part] = robust_correct(model, x, y, pgd_spec, generator=gen).cpu()
            for a, spec in extra.items():
                ok[a][part] = robust_correct(model, x, y, spec, generator=gen).cpu()
    if world > 1:
        stacked = dist.sum_(torch.stack([ok[k] for k in names]).to(dev, torch.int32)).cpu()
        ok = {k: stacked[i] > 0 for i, k in enumerate(names)}
        pred = dist.sum_(pred.to(dev)).cpu()  # each point is predicted on one rank, 0 elsewhere
    return ok, pred


def _per_class(
    labels: torch.Tensor, ok: dict[str, torch.Tensor], k: int, fgsm: bool, pred: torch.Tensor
) -> dict[str, Any]:
    lab = labels.cpu()
    support = torch.bincount(lab, minlength=k)

    def rate(mask: torch.Tensor) -> list[float | None]:
        hits = torch.bincount(lab[mask], minlength=k)
        return [None if support[c] == 0 else hits[c].item() / support[c].item() for c in range(k)]

    def balanced(rates: list[float | None]) -> float:
        # Balanced accuracy: the mean per-class recall over the classes present.
        present = [r for r in rates if r is not None]
        return sum(present) / len(present)

    clean, pgd = rate(ok["clean"]), rate(ok["pgd"])
    return {
        "support": support.tolist(),
        "clean": clean,
        "fgsm": rate(ok["fgsm"]) if fgsm else None,
        "pgd": pgd,
        "balanced_clean": balanced(clean),
        "balanced_pgd": balanced(pgd),
        "macro_f1_clean": macro_f1(lab, pred.cpu(), k),
    }


def macro_f1(labels: torch.Tensor, pred: torch.Tensor, k: int) -> float:
    """Unweighted mean of per-class F1 = 2·TP / (2·TP + FP + FN) over the classes that occur in
    ``labels`` or ``pred`` (scikit-learn's ``f1_score(average="macro")``). Shapes: (N,) int."""
    tp = torch.bincount(labels[pred == labels], minlength=k).double()
    fp = torch.bincount(pred[pred != labels], minlength=k).double()
    fn = torch.bincount(labels[pred != labels], minlength=k).double()
    seen = (torch.bincount(labels, minlength=k) + torch.bincount(pred, minlength=k)) > 0
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    return float(f1[seen].mean())


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    protocol: EvalProtocol,
    *,
    batch_size: int = 500,
    num_classes: int | None = None,
    per_class: bool = False,
    per_point: bool = False,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "eval",
    dist: Distributed | None = None,
) -> dict[str, Any]:
    """Accuracy of ``model`` on ``images`` (N,C,H,W; uint8 or float in [0,1]) and ``labels`` (N,).

    Returns a JSON-ready dict: ``clean_acc``, ``fgsm_acc``, ``pgd_acc`` (fractions in [0,1]),
    ``attacks`` ({name: accuracy} for ``protocol.attacks``, when any), optionally
    ``autoattack_acc``, ``per_class`` and ``per_point`` ({'clean', 'fgsm', 'pgd', each extra
    attack: a list of N bools, for paired comparisons of models), the ``protocol`` and sanity
    ``flags``. The model's
    train/eval mode is restored afterwards. ``dist``: shard the batches over the ranks of a
    process group (see the module docstring); every rank gets the full result.
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

    dist = dist or Distributed()
    ok, pred = _correct_masks(model, images, labels, protocol, batch_size, dev, bar, dist)
    out: dict[str, Any] = {
        "n": n,
        "clean_acc": ok["clean"].float().mean().item(),
        "fgsm_acc": ok["fgsm"].float().mean().item() if protocol.fgsm else None,
        "pgd_acc": ok["pgd"].float().mean().item(),
    }
    if protocol.attacks:
        out["attacks"] = {a: ok[a].float().mean().item() for a in protocol.attacks}
    if protocol.autoattack:
        # AutoAttack runs on the primary; the others wait for its number.
        aa = None
        if dist.primary:
            aa = autoattack_accuracy(
                model, images, labels, protocol.eps, batch_size=batch_size, device=dev,
                seed=protocol.seed, norm=protocol.norm,
            )  # fmt: skip
        out["autoattack_acc"] = dist.gather(aa)[0]
    if per_class:
        k = int(num_classes if num_classes is not None else int(labels.max().item()) + 1)
        out["per_class"] = _per_class(labels, ok, k, protocol.fgsm, pred)
    if per_point:
        out["per_point"] = {k: v.tolist() for k, v in ok.items() if k != "fgsm" or protocol.fgsm}
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
    norm: str = "Linf",
) -> float:
    """Robust accuracy under AutoAttack 'standard' (Croce & Hein 2020) through pyautoattack, for
    ``norm`` ``"Linf"`` (default) or ``"L2"`` (RobustBench's L2 leaderboard: eps 0.5 on CIFAR-10).

    pyautoattack's ``run_standard_evaluation`` returns ``(x_adv, y_adv)``; accuracy is recomputed
    here on ``x_adv`` with the model in eval mode.
    """
    from .spec import check_eps, check_threat

    norm = check_threat(norm)
    eps = check_eps(eps, norm)
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
            model, norm=norm, eps=eps, version="standard", device=str(dev), seed=seed
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
