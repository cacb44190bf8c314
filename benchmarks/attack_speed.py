"""PGD-20 evaluation speed: our early-exit evaluator against torchattacks.PGD, side by side.

For each model (by default a naturally trained and a PGD-trained small CNN on Fashion-MNIST, trained
once with our own training loop and cached under ``benchmarks/.cache/``) the same test images are
attacked with the same L∞ PGD-20 (eps 0.1 on Fashion-MNIST, step eps/4, uniform random start,
BatchNorm in eval mode), in the same process, with the same thread count, batch size and memory
format, in interleaved repetitions (ours, torchattacks, ours without early exit, ours, ...):

* ``ours``: :func:`boosting_tickets.attacks.robust_correct_with_stats`, the early-exit evaluator
  behind :func:`evaluation.evaluate` (which adds one clean forward per batch, and FGSM if asked).
  A point is robust only if it is clean-correct and no iterate fools the model; fooled points leave
  the batch at once.
* ``torchattacks``: ``torchattacks.PGD(model, eps, alpha, steps, random_start=True)``, then one
  forward on the adversarial images: every point gets every step.
* ``ours-fold``: ``ours`` on the model with eval-mode BatchNorm folded into its convolutions
  (:mod:`boosting_tickets.models.fold_bn`, what ``--fold-bn`` evaluates with), the same function
  within float rounding at fewer passes per step;
* ``ours-default``: ``ours`` with the kernels ``boosting-tickets evaluate`` picks for the model on
  this device by default (``training/kernels.json``: channels_last and/or BatchNorm folding),
  against torchattacks on the model as loaded (NCHW unless ``--channels-last``): what a user gets
  from each tool without flags;
* ``ours-full``: our :func:`attacks.pgd` without early exit plus the same final forward (shows that
  the gain is the early exit, not a faster step).

Both sides are seeded identically before every repetition, so their random starts are the same
tensor; a point our evaluator calls robust but torchattacks fools would mean a weaker attack, and
is counted, for every arm of ours alike. Targets (issue #14): ≥ 2× torchattacks on the PGD-trained
model, ≥ 6× on the naturally trained one, and our robust accuracy ≤ torchattacks' + 0.5 pp; the
speed verdict is ``ours-default``'s ratio (the faster of ``ours`` and ``ours-fold`` without it).

Run: ``python benchmarks/attack_speed.py [--quick] [--device cuda --amp --channels-last]``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from _common import (
    Arm,
    BenchConfig,
    Measurement,
    amp_dtype,
    checkpoint_model,
    config_command,
    describe_load,
    fmt_ratio,
    interleave,
    machine_load,
    median_rate,
    paired_ratio,
    paired_ratios,
    prepare_images,
    prepare_model,
    reference_model,
    run_command,
    setup_runtime,
    spread,
    timed,
    verdict,
    write_results,
)
from torch import nn

from boosting_tickets.adversarial.attacks import pgd
from boosting_tickets.adversarial.evaluation import EvalProtocol
from boosting_tickets.adversarial.evaluator import robust_correct_with_stats
from boosting_tickets.adversarial.spec import AttackSpec
from boosting_tickets.adversarial.steps import bn_mode
from boosting_tickets.core.config import setting
from boosting_tickets.core.errors import UserError
from boosting_tickets.data.registry import get_spec
from boosting_tickets.models.fold_bn import fold_batchnorm
from boosting_tickets.report.formats import markdown_table
from boosting_tickets.training.kernels import choose, prepare

#: Speed-up targets by model kind, and how much higher our robust accuracy may be (never weaker).
TARGET_RATIO = {"natural": 6.0, "pgd": 2.0}
ACCURACY_SLACK = 0.005
_COUNTERS = (
    "clean_correct",
    "forward_images",
    "backward_images",
    "full_forward_images",
    "full_backward_images",
)


@dataclass(frozen=True)
class AttackSpeedConfig(BenchConfig):
    """Settings of the attack-speed benchmark (plus the shared ones)."""

    batch_size: int = setting(
        64,
        "batch size, same for both sides; 64 is torchattacks' fastest per image on the 2-core "
        "CPU (batch 128 runs ~25% slower per image there, which would flatter early exit)",
        low=1,
    )
    n_images: int | None = setting(
        None, "test images attacked per repetition; none = 500 (128 with --quick)", low=1
    )
    eps: float | None = setting(
        None, "L∞ budget; none = the dataset default (0.1 on Fashion-MNIST)", low=0.0, high=1.0
    )
    steps: int = setting(20, "PGD steps (step size eps/4, random start)", low=1)
    full_arm: bool = setting(False, "also time our pgd() without early exit (diagnostic arm)")
    fold_arm: bool = setting(True, "also time ours with eval-mode BatchNorm folded (ours-fold)")
    default_arm: bool = setting(
        True, "also time ours with the kernels `evaluate` picks by default (ours-default)"
    )
    checkpoints: tuple[str, ...] = setting(
        (),
        "NAME=PATH,... model checkpoints to use instead of the cached reference models; "
        "NAME natural or pgd gets that model kind's target",
    )

    def images(self) -> int:
        if self.n_images is not None:
            return self.n_images
        return 128 if self.quick else 500


def _models(cfg: AttackSpeedConfig, device: torch.device) -> list[tuple[str, nn.Module, dict]]:
    if not cfg.checkpoints:
        return [(kind, *reference_model(kind, cfg, device)) for kind in ("natural", "pgd")]
    out = []
    for item in cfg.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--checkpoints entry {item!r} is not NAME=PATH; e.g. pgd=runs/x.pt")
        out.append((name, *checkpoint_model(path, device)))
    return out


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _arms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    cfg: AttackSpeedConfig,
    device: torch.device,
) -> list[Arm]:
    """The interleaved arms for one model; each repetition re-seeds torch identically."""
    import torchattacks

    dtype = amp_dtype(cfg, device)
    n = int(y.shape[0])
    batches = _batches(n, cfg.batch_size)
    step_size = float(spec.step_size)  # resolved
    attack = torchattacks.PGD(
        model, eps=spec.eps, alpha=step_size, steps=spec.steps, random_start=spec.random_start
    )

    def final_correct(x_adv: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), _autocast(device, dtype):
            return model(x_adv).argmax(1) == yb

    def ours(part: list[slice], net: nn.Module = model, xs: torch.Tensor = x) -> Measurement:
        def go() -> tuple[torch.Tensor, dict[str, int]]:
            robust: list[torch.Tensor] = []
            totals: dict[str, Any] = {"fooled_at": [0] * (spec.steps + 1)}
            for b in part:
                r, st = robust_correct_with_stats(net, xs[b], y[b], spec, autocast_dtype=dtype)
                robust.append(r)
                for k in _COUNTERS:
                    totals[k] = totals.get(k, 0) + st[k]
                pairs = zip(totals["fooled_at"], st["fooled_at"], strict=True)
                totals["fooled_at"] = [a + c for a, c in pairs]
            return torch.cat(robust).cpu(), totals

        torch.manual_seed(cfg.seed)
        seconds, (robust, totals) = timed(go, device)
        return Measurement(
            seconds, sum(b.stop - b.start for b in part), {"robust": robust, **totals}
        )

    def theirs(part: list[slice]) -> Measurement:
        def go() -> torch.Tensor:
            with _autocast(device, dtype):
                return torch.cat([final_correct(attack(x[b], y[b]), y[b]) for b in part]).cpu()

        torch.manual_seed(cfg.seed)
        seconds, robust = timed(go, device)
        return Measurement(seconds, sum(b.stop - b.start for b in part), {"robust": robust})

    def ours_full(part: list[slice]) -> Measurement:
        def go() -> torch.Tensor:
            out = []
            for b in part:
                x_adv = pgd(
                    model,
                    x[b],
                    y[b],
                    spec.eps,
                    step_size=step_size,
                    steps=spec.steps,
                    random_start=bool(spec.random_start),
                    autocast_dtype=dtype,
                )
                out.append(final_correct(x_adv, y[b]))
            return torch.cat(out).cpu()

        torch.manual_seed(cfg.seed)
        seconds, robust = timed(go, device)
        return Measurement(seconds, sum(b.stop - b.start for b in part), {"robust": robust})

    def arm(name: str, fn: Callable[[list[slice]], Measurement]) -> Arm:
        # Warm up on one batch: kernels, allocator and oneDNN primitive caches.
        warm = batches[:1]
        return Arm(name, lambda: fn(batches), warmup=lambda: fn(warm))

    arms = [arm("ours", ours), arm("torchattacks", theirs)]
    if cfg.fold_arm:
        folded = fold_batchnorm(model)
        if folded.active:
            arms.append(arm("ours-fold", lambda part: ours(part, folded)))
        else:
            print(f"ours-fold: not timed, {folded.reason}")
    if cfg.default_arm:
        net, xs = _default_kernels(model, x, device)
        arms.append(arm("ours-default", lambda part: ours(part, net, xs)))
    if cfg.full_arm:
        arms.append(arm("ours-full", ours_full))
    return arms


def _default_kernels(model: nn.Module, x: torch.Tensor, device: torch.device) -> tuple:
    """A copy of ``model`` and the images ``x`` as ``evaluate`` runs them without kernel flags:
    the measured choice for the model's family on ``device`` (channels_last, BatchNorm folding)."""
    chosen = choose(device.type, model.arch, channels_last=None, compile=None, fold_bn=None)
    print(f"ours-default {chosen.describe()}")
    net = prepare(copy.deepcopy(model).to(memory_format=torch.contiguous_format), chosen)
    fmt = torch.channels_last if chosen.channels_last else torch.contiguous_format
    return net, x.contiguous(memory_format=fmt)


def _clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[b]).argmax(1) == y[b] for b in _batches(len(y), bs)]).cpu()


def _mean_iterate(fooled_at: list[int]) -> float | None:
    """Mean iterate (0 = random start) at which fooled points were first misclassified."""
    total = sum(fooled_at)
    return None if total == 0 else sum(t * c for t, c in enumerate(fooled_at)) / total


def benchmark_model(
    name: str,
    model: nn.Module,
    info: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    cfg: AttackSpeedConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Interleave the arms on one model and summarize speeds, accuracies and targets."""
    model = prepare_model(model, cfg, device)
    with bn_mode(model, "eval"):
        clean = _clean_correct(model, x, y, cfg.batch_size)
        runs = interleave(_arms(model, x, y, spec, cfg, device), cfg.repetitions(), desc=name)
    n = int(y.shape[0])
    ours, theirs = runs["ours"][0].extra, runs["torchattacks"][0].extra
    ours_acc = float(ours["robust"].float().mean())
    theirs_acc = float(theirs["robust"].float().mean())
    # Our attack must never be weaker: count points we call robust that torchattacks fools.
    weaker = int((ours["robust"] & ~theirs["robust"]).sum())
    ratio = paired_ratio(runs["ours"], runs["torchattacks"])
    fold = runs.get("ours-fold")
    best = max(ratio, 0.0 if fold is None else paired_ratio(fold, runs["torchattacks"]))
    verdict_arm = "ours" if fold is None or best == ratio else "ours-fold"
    if "ours-default" in runs:
        best, verdict_arm = paired_ratio(runs["ours-default"], runs["torchattacks"]), "ours-default"
    target = TARGET_RATIO.get(name)
    row: dict[str, Any] = {
        "model": name,
        **info,
        "n": n,
        "clean_acc": float(clean.float().mean()),
        "robust_acc_ours": ours_acc,
        "robust_acc_torchattacks": theirs_acc,
        "points_robust_for_ours_only": weaker,
        "gradient_work_fraction": ours["backward_images"] / ours["full_backward_images"],
        # Speed-up that the saved passes alone predict (an input-only backward ≈ one forward).
        "pass_count_ratio": (ours["full_forward_images"] + ours["full_backward_images"])
        / max(1, ours["forward_images"] + ours["backward_images"]),
        "fooled_at_iterate": ours["fooled_at"],
        "mean_fooling_iterate": _mean_iterate(ours["fooled_at"]),
        "images_per_s": {k: median_rate(v) for k, v in runs.items()},
        "images_per_s_range": {k: spread(v) for k, v in runs.items()},
        "ratio_ours_vs_torchattacks": ratio,
        "ratios_per_round": paired_ratios(runs["ours"], runs["torchattacks"]),
        "ratio_text": fmt_ratio(runs["ours"], runs["torchattacks"]),
        "target_ratio": target,
        "accuracy_ok": ours_acc <= theirs_acc + ACCURACY_SLACK,
        "ratio_best": best,
        "ratio_verdict_arm": verdict_arm,
        "ratio_ok": None if target is None else best >= target,
    }
    if "ours-default" in runs:
        kernels = choose(device.type, model.arch, channels_last=None, compile=None, fold_bn=None)
        row["ours_default_kernels"] = kernels.record()
    for tag in ("fold", "default"):
        if (arm := runs.get(f"ours-{tag}")) is None:
            continue
        robust = arm[0].extra["robust"]
        row.update({
            f"robust_acc_ours_{tag}": float(robust.float().mean()),
            f"points_robust_for_{tag}_only": int((robust & ~theirs["robust"]).sum()),
            f"ratio_ours_{tag}_vs_torchattacks": paired_ratio(arm, runs["torchattacks"]),
            f"ratio_ours_{tag}_text": fmt_ratio(arm, runs["torchattacks"]),
            f"ratio_ours_{tag}_vs_ours": paired_ratio(arm, runs["ours"]),
        })  # fmt: skip
        row["accuracy_ok"] = row["accuracy_ok"] and (
            row[f"robust_acc_ours_{tag}"] <= theirs_acc + ACCURACY_SLACK
        )
    if "ours-full" in runs:
        row["robust_acc_ours_full"] = float(runs["ours-full"][0].extra["robust"].float().mean())
        row["ratio_ours_full_vs_torchattacks"] = paired_ratio(
            runs["ours-full"], runs["torchattacks"]
        )
        row["ratio_ours_full_text"] = fmt_ratio(runs["ours-full"], runs["torchattacks"])
    return row


def _print_rows(rows: list[dict[str, Any]]) -> None:
    def pct(v: float) -> str:
        return f"{100 * v:.1f}"

    def rate(r: dict, k: str) -> str:
        lo, hi = r["images_per_s_range"][k]
        return f"{r['images_per_s'][k]:.0f} ({lo:.0f}–{hi:.0f})"

    headers = [
        "model",
        "clean %",
        "robust % ours",
        "robust % torchattacks",
        "ours img/s",
        "torchattacks img/s",
        "ratio",
        "ratio, BN folded",
        "ratio, default kernels",
        "target",
    ]
    table = []
    for r in rows:
        target = "–" if r["target_ratio"] is None else f"≥ {r['target_ratio']:.0f}×"
        if r["ratio_ok"] is not None:
            target += f" {verdict(r['ratio_ok'])}"
        table.append(
            [
                r["model"],
                pct(r["clean_acc"]),
                pct(r["robust_acc_ours"]),
                pct(r["robust_acc_torchattacks"]),
                rate(r, "ours"),
                rate(r, "torchattacks"),
                r["ratio_text"],
                r.get("ratio_ours_fold_text", "–"),
                r.get("ratio_ours_default_text", "–"),
                target,
            ]
        )
    print(markdown_table(headers, table))
    print(
        "(img/s: median (min–max) over interleaved rounds; ratio: median (min–max) of the "
        "per-round ratios)"
    )
    for r in rows:
        gap = 100 * (r["robust_acc_ours"] - r["robust_acc_torchattacks"])
        print(
            f"{r['model']}: robust accuracy ours − torchattacks = {gap:+.2f} pp "
            f"(≤ +{100 * ACCURACY_SLACK:.1f} pp {verdict(r['accuracy_ok'])}); "
            f"points robust for ours but fooled by torchattacks: "
            f"{r['points_robust_for_ours_only']}; "
            f"gradient computations done: {100 * r['gradient_work_fraction']:.1f}% of full PGD "
            f"(pass counts predict {r['pass_count_ratio']:.2f}×); "
            f"fooled points fell at iterate {_fmt(r['mean_fooling_iterate'])} on average"
        )
        for tag, what in (("fold", "with BatchNorm folded"), ("default", "default kernels")):
            if f"ratio_ours_{tag}_vs_torchattacks" in r:
                print(
                    f"{r['model']}: ours, {what}: {rate(r, f'ours-{tag}')} img/s, "
                    f"{r[f'ratio_ours_{tag}_text']} torchattacks, "
                    f"{r[f'ratio_ours_{tag}_vs_ours']:.2f}× ours, robust "
                    f"{pct(r[f'robust_acc_ours_{tag}'])}%, points robust for it but fooled by "
                    f"torchattacks: {r[f'points_robust_for_{tag}_only']}"
                )
        if "ratio_ours_full_vs_torchattacks" in r:
            print(
                f"{r['model']}: our pgd() without early exit: {rate(r, 'ours-full')} img/s, "
                f"{r['ratio_ours_full_text']} torchattacks, robust "
                f"{pct(r['robust_acc_ours_full'])}%"
            )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def main(cfg: AttackSpeedConfig) -> None:
    """Load data and models, interleave the arms per model, print and optionally save."""
    from boosting_tickets.data.splits import load_splits

    device = setup_runtime(cfg)
    eps = get_spec(cfg.dataset).default_eps if cfg.eps is None else cfg.eps
    protocol = EvalProtocol(eps=eps, pgd_steps=cfg.steps, fgsm=False, seed=cfg.seed)
    spec = protocol.pgd_spec().resolved()
    splits = load_splits(cfg.dataset, cfg.data_dir, test_subset=cfg.images())
    x = prepare_images(splits.test.images, cfg, device)
    y = splits.test.labels.to(device)
    models = _models(cfg, device)
    print(
        f"PGD-{spec.steps} eps {spec.eps:.4g} step {spec.step_size:.4g} random start, "
        f"{len(y)} {cfg.dataset} test images, batch {cfg.batch_size}, device {device}, "
        f"{torch.get_num_threads()} threads, channels_last={cfg.channels_last}, "
        f"amp={amp_dtype(cfg, device)}, {cfg.repetitions()} interleaved repetitions"
    )
    load_before = machine_load()
    print(describe_load(load_before))
    rows = [benchmark_model(name, m, info, x, y, spec, cfg, device) for name, m, info in models]
    load_after = machine_load()
    _print_rows(rows)
    print(describe_load(load_after))
    write_results(
        cfg.json_out,
        {
            "benchmark": "attack_speed",
            "protocol": {**protocol.record(len(y)), "attack": spec.protocol()},
            "settings": {
                "batch_size": cfg.batch_size,
                "channels_last": cfg.channels_last,
                "amp": cfg.amp,
                "threads": torch.get_num_threads(),
                "repetitions": cfg.repetitions(),
                "dataset": cfg.dataset,
            },
            "machine_load": {"before": load_before, "after": load_after},
            "rows": rows,
        },
        device,
    )


command = config_command(AttackSpeedConfig, main, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    run_command(command)
