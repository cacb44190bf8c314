"""Figures a researcher would publish, from the results rows alone (matplotlib, imported lazily).

Per results file (suite):

* ``<suite>_pgd_vs_epoch.png``: held-out PGD accuracy against epochs, one thin line per seed and
  the mean over seeds in bold, integer epoch ticks, the target as a dashed line;
* ``<suite>_pgd_vs_work.png``: the same against work (training FLOPs, ticket finding included,
  so a ticket's curve starts at its finding's work) beside the same against wall-clock seconds;
* ``<suite>_epoch1.png``: held-out accuracy after one epoch, every seed as a dot over the mean bar;
* ``<suite>_per_class.png``: per-class test accuracy (clean and PGD) of the selected models,
  mean over seeds;
* ``<suite>_eps.png``: robust test accuracy against eps of the selected models, when the suite
  asked for it (``[compare] eps_curve``; ``bench.eps_curve``).

No interval band is drawn: with a handful of seeds the per-seed lines show the spread honestly,
and nothing is clipped (accuracies lie in [0, 100] by construction). Every title names the
dataset, model, eps, attack and test n. Arms of a sweep share one figure per grid point.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.errors import UserError
from .collect import Group, convergence_field
from .tables import pgd_name, work_unit


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    return buf.getvalue()


def _title(gs: Sequence[Group], what: str) -> str:
    g = gs[0]
    p = g.protocol
    models = sorted({str(x.first.get("model")) for x in gs})
    seeds = max(len(x.rows) for x in gs)
    eps = p.get("eps")
    attack = f"PGD-{p.get('pgd_steps')}" if p.get("pgd_steps") else "PGD"
    eps_txt = f"eps {eps:.3g}" if isinstance(eps, int | float) else "eps ?"
    return (
        f"{g.suite}: {what}\n{g.first.get('dataset')}, {'/'.join(models)}, "
        f"{p.get('threat_model', 'Linf')} {eps_txt}, {attack}, test n={p.get('n_examples')}, "
        f"{seeds} seed(s)"
    )


def _series(
    g: Group, x_of: Callable[[Mapping[str, Any], Mapping[str, Any]], float | None]
) -> tuple[list[tuple[list[float], list[float]]], tuple[list[float], list[float]]]:
    """Per-seed (x, held-out PGD %) lines and the mean line over the epochs every seed has."""
    lines = []
    for r in g.rows:
        pts = [(x_of(r, c), c.get("val_pgd")) for c in r["curve"]]
        pts = [(x, 100 * y) for x, y in pts if x is not None and y is not None]
        lines.append(([x for x, _ in pts], [y for _, y in pts]))
    n = min((len(xs) for xs, _ in lines), default=0)
    mean_x = [sum(xs[e] for xs, _ in lines) / len(lines) for e in range(n)]
    mean_y = [sum(ys[e] for _, ys in lines) / len(lines) for e in range(n)]
    return lines, (mean_x, mean_y)


def _draw_curves(ax: Any, gs: Sequence[Group], x_of: Any) -> None:
    for g in gs:
        lines, (mx, my) = _series(g, x_of)
        (mean,) = ax.plot(mx, my, marker="o", lw=2.2, label=f"{g.arm} (mean)")
        for xs, ys in lines:
            ax.plot(xs, ys, lw=0.8, alpha=0.45, color=mean.get_color())
    targets = {t["value"] for g in gs if (t := g.target) and t.get("value") is not None}
    for t in sorted(targets):
        ax.axhline(100 * t, ls="--", lw=1, color="0.4", label=f"target {100 * t:.1f}%")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)


def _epoch_figure(plt: Any, gs: Sequence[Group], pgd: str) -> Any:
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    _draw_curves(ax, gs, lambda r, c: float(c["epoch"]))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"held-out {pgd} accuracy %")
    ax.set_title(_title(gs, "held-out robustness per epoch (thin: seeds)"), fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _work_of(k: float) -> Callable[[Mapping[str, Any], Mapping[str, Any]], float | None]:
    def x(r: Mapping[str, Any], c: Mapping[str, Any]) -> float | None:
        w = c.get("cum_work_flops")
        if w is None:
            return None
        return (float(w) + float(r.get("find_work_flops") or 0.0)) / k

    return x


def _cost_figure(plt: Any, gs: Sequence[Group], pgd: str) -> Any:
    k, unit = work_unit(gs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.4), sharey=True)
    _draw_curves(left, gs, _work_of(k))
    left.set_xlabel(f"work, {unit} (training, ticket finding included)")
    left.set_ylabel(f"held-out {pgd} accuracy %")
    _draw_curves(
        right,
        gs,
        lambda r, c: float(c["cum_train_seconds"]) + float(r.get("find_train_seconds") or 0),
    )
    right.set_xlabel("wall-clock training seconds, finding included (machine-dependent)")
    left.legend(fontsize=7)
    fig.suptitle(_title(gs, "held-out robustness against work and wall-clock"), fontsize=9)
    return fig


def _epoch1_figure(plt: Any, gs: Sequence[Group], pgd: str) -> Any:
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    width = 0.38
    for j, (key, label) in enumerate((("epoch1_val_clean", "clean"), ("epoch1_val", pgd))):
        get = convergence_field(key)
        pos = [i + (j - 0.5) * width for i in range(len(gs))]
        means = []
        for g in gs:
            vals = [100 * v for v in g.values(get) if v is not None]
            means.append(sum(vals) / len(vals) if vals else 0.0)
        bars = ax.bar(pos, means, width, label=f"{label} (mean)", alpha=0.7)
        for p, g in zip(pos, gs, strict=True):
            vals = [100 * v for v in g.values(get) if v is not None]
            ax.plot([p] * len(vals), vals, "o", ms=3, color="black")
        del bars
    ax.set_xticks(range(len(gs)))
    ax.set_xticklabels([g.arm for g in gs], rotation=20, ha="right", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("held-out accuracy % after epoch 1 (dots: seeds)")
    ax.set_title(_title(gs, "after one epoch"), fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _per_class_values(g: Group, key: str) -> list[float] | None:
    per = [r.get("per_class") for r in g.rows if isinstance(r.get("per_class"), dict)]
    if not per:
        return None
    try:
        rows = [[float("nan") if v is None else float(v) for v in p[key]] for p in per]
    except (KeyError, TypeError, ValueError):
        return None
    if len({len(r) for r in rows}) != 1:
        return None
    return [100 * sum(col) / len(col) for col in zip(*rows, strict=True)]


def _balanced(g: Group, key: str) -> str:
    """' (balanced 61.2%)': the mean over seeds of a balanced accuracy, for a legend."""
    vals = [r["per_class"].get(key) for r in g.rows if isinstance(r.get("per_class"), dict)]
    vals = [v for v in vals if isinstance(v, int | float)]
    return f" (balanced {100 * sum(vals) / len(vals):.1f}%)" if vals else ""


def _per_class_figure(plt: Any, gs: Sequence[Group], pgd: str) -> Any | None:
    series = [(g, _per_class_values(g, "clean"), _per_class_values(g, "pgd")) for g in gs]
    series = [s for s in series if s[1] is not None and s[2] is not None]
    if not series:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.4), sharey=True)
    n_cls = len(series[0][1])  # type: ignore[arg-type]
    width = 0.8 / len(series)
    for i, (g, clean, robust) in enumerate(series):
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(n_cls)]
        left.bar(xs, clean, width, label=f"{g.arm}{_balanced(g, 'balanced_clean')}")
        right.bar(xs, robust, width, label=f"{g.arm}{_balanced(g, 'balanced_pgd')}")
    for ax, what in ((left, "clean"), (right, pgd)):
        ax.set_xticks(range(n_cls))
        ax.set_xlabel("class")
        ax.set_title(f"{what} test accuracy per class (mean over seeds)", fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    left.set_ylabel("test accuracy %")
    left.legend(fontsize=7)
    fig.suptitle(_title(gs, "per-class accuracy of the selected models"), fontsize=9)
    return fig


def _eps_figure(plt: Any, gs: Sequence[Group], pgd: str) -> Any | None:
    """Robust test accuracy against eps of the selected models (thin: seeds; bold: mean)."""
    have = [g for g in gs if all(r.get("eps_curve") for r in g.rows)]
    if not have:
        return None
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for g in have:
        curves = [[(p["eps"], 100 * p["pgd_acc"]) for p in r["eps_curve"]] for r in g.rows]
        n = min(len(c) for c in curves)
        xs = [curves[0][i][0] for i in range(n)]
        mean = [sum(c[i][1] for c in curves) / len(curves) for i in range(n)]
        (line,) = ax.plot(xs, mean, marker="o", lw=2.2, label=f"{g.arm} (mean)")
        for c in curves:
            ax.plot([x for x, _ in c], [y for _, y in c], lw=0.8, alpha=0.45,
                    color=line.get_color())  # fmt: skip
    n_img = have[0].rows[0]["eps_curve"][0].get("n")
    eps = have[0].protocol.get("eps")
    if isinstance(eps, int | float):
        ax.axvline(eps, ls=":", lw=1, color="0.4", label=f"training/eval eps {eps:g}")
    ax.set_ylim(0, 100)
    ax.set_xlabel("eps (Linf)")
    ax.set_ylabel(f"{pgd} test accuracy % (first {n_img} test images)")
    ax.set_title(_title(gs, "robust accuracy against eps, selected models"), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _panels(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """Figure sets: one per suite, or per (suite, grid point) in sweeps."""
    out: dict[str, list[Group]] = {}
    for g in groups:
        if not g.has_curves:
            continue
        grid = g.first.get("grid") or {}
        tag = "".join(f"_{str(k).rsplit('.', 1)[-1]}-{v}" for k, v in sorted(grid.items()))
        # File names: only safe characters, whatever a results file says.
        name = re.sub(r"[^A-Za-z0-9._=+-]", "_", f"{g.suite}{tag}").lstrip(".") or "suite"
        out.setdefault(name, []).append(g)
    return out


def figures(groups: Sequence[Group]) -> dict[str, bytes]:
    """PNG files per suite (and grid point): robustness vs epoch, vs work and wall-clock,
    epoch-1 accuracy and per-class accuracy."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(
            "figures need matplotlib; run 'make setup' (or pip install matplotlib) or pass "
            "--no-figures"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    pgd = pgd_name(groups)
    for name, gs in _panels(groups).items():
        made = [
            (f"{name}_pgd_vs_epoch.png", _epoch_figure(plt, gs, pgd)),
            (f"{name}_pgd_vs_work.png", _cost_figure(plt, gs, pgd)),
            (f"{name}_epoch1.png", _epoch1_figure(plt, gs, pgd)),
            (f"{name}_per_class.png", _per_class_figure(plt, gs, pgd)),
            (f"{name}_eps.png", _eps_figure(plt, gs, pgd)),
        ]
        for fname, fig in made:
            if fig is None:
                continue
            fig.tight_layout()
            out[fname] = _png(fig)
            plt.close(fig)
    return out
