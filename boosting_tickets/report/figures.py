"""Figures: held-out PGD accuracy against epochs and against time, and epoch-1 accuracy bars."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.errors import UserError
from .collect import Group, convergence_field
from .stats import mean_ci
from .tables import pgd_name


def _curve_stats(g: Group, x_of: Callable[[Mapping[str, Any], Mapping[str, Any]], float]):
    """Per epoch: mean x, mean held-out PGD and its interval, over the seeds that have the epoch."""
    n_epochs = min(len(r["curve"]) for r in g.rows)
    xs, ys, lo, hi = [], [], [], []
    for e in range(n_epochs):
        xs.append(sum(x_of(r, r["curve"][e]) for r in g.rows) / len(g.rows))
        iv = mean_ci([r["curve"][e].get("val_pgd") for r in g.rows])
        ys.append(iv.mean)
        lo.append(iv.low)
        hi.append(iv.high)
    return xs, ys, lo, hi


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    return buf.getvalue()


_CURVES = (
    ("pgd_vs_epoch", "epoch", lambda r, c: float(c["epoch"])),
    (
        "pgd_vs_time",
        "training seconds, ticket finding included",
        lambda r, c: float(c["cum_train_seconds"]) + float(r.get("find_train_seconds") or 0),
    ),
)


def _curve_figure(
    plt: Any, suite: str, gs: Sequence[Group], xlabel: str, x_of: Any, pgd: str
) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for g in gs:
        xs, ys, lo, hi = _curve_stats(g, x_of)
        (line,) = ax.plot(xs, [100 * y for y in ys], marker="o", label=g.arm)
        if all(v is not None for v in lo):
            # Accuracy lives in [0, 100]; a few-seed t-interval may not, so clip the band.
            ax.fill_between(
                xs,
                [max(0.0, 100 * v) for v in lo],
                [min(100.0, 100 * v) for v in hi],
                color=line.get_color(),
                alpha=0.2,
            )
    ax.set_ylim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"held-out {pgd} accuracy %")
    ax.set_title(f"{suite}: mean over seeds, 95% CI band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _epoch1_figure(plt: Any, suite: str, gs: Sequence[Group], pgd: str) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.38
    for k, (key, label) in enumerate((("epoch1_val_clean", "clean"), ("epoch1_val", pgd))):
        ivs = [g.ci(convergence_field(key)) for g in gs]
        means = [100 * (iv.mean or 0.0) for iv in ivs]
        # Error bars clipped to [0, 100] like the bands of the curves.
        halves = [100 * (iv.half_width or 0.0) for iv in ivs]
        errs = [
            [min(m, h) for m, h in zip(means, halves, strict=True)],
            [min(100 - m, h) for m, h in zip(means, halves, strict=True)],
        ]
        pos = [i + (k - 0.5) * width for i in range(len(gs))]
        ax.bar(pos, means, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(gs)))
    ax.set_xticklabels([g.arm for g in gs], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("held-out accuracy % after epoch 1")
    ax.set_title(f"{suite}: after one epoch (mean, 95% CI)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def figures(groups: Sequence[Group]) -> dict[str, bytes]:
    """PNG files per suite: held-out PGD vs epoch, vs total time, and epoch-1 accuracy bars."""
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
    suites: dict[str, list[Group]] = {}
    for g in groups:
        if g.has_curves:
            suites.setdefault(g.suite, []).append(g)
    pgd = pgd_name(groups)
    for suite, gs in suites.items():
        made = [
            (f"{suite}_{name}.png", _curve_figure(plt, suite, gs, xlabel, x_of, pgd))
            for name, xlabel, x_of in _CURVES
        ]
        made.append((f"{suite}_epoch1.png", _epoch1_figure(plt, suite, gs, pgd)))
        for name, fig in made:
            fig.tight_layout()
            out[name] = _png(fig)
            plt.close(fig)
    return out
