"""The table registry: name -> builder of one results table (Markdown, CSV and LaTeX).

Built in: ``summary`` (test accuracy per arm, mean ± 95% CI over seeds, params), ``convergence``
(epochs / seconds to the target, AUC, epoch-1 accuracy) and ``paired`` (each arm minus its dense
baseline, paired by seed). A builder takes a :class:`ReportContext` and returns a
:class:`formats.Table`; ``tables`` writes every registered table to ``tables/<name>.{md,csv,tex}``
and a section of the results README. Plugins add tables by declaring ``TABLES``, a tuple of
:class:`TableEntry`. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.registry import Entry, Registry, build_registry
from .collect import Group, convergence_field, protocol_label, total_train_seconds
from .compare import ArmComparison, fmt_diff, reached
from .formats import Table, fmt_cell, fmt_interval, iv_csv


@dataclass(frozen=True)
class ReportContext:
    """What table builders read: every group (measured and published), the measured ones, the
    comparisons with dense baselines, and whether the files mix protocols."""

    groups: Sequence[Group]
    measured: Sequence[Group]
    comparisons: Sequence[ArmComparison]
    mixed: bool


@dataclass(frozen=True)
class TableEntry(Entry):
    """One registry entry: ``build(context) -> Table`` (the table's ``name`` names its files)."""

    build: Callable[[ReportContext], Table]


def _n_seeds(g: Group) -> int | None:
    """Seeds behind a group; None for rows that are not per-seed runs (zoo models, published)."""
    n = sum(1 for r in g.rows if r.get("seed") is not None)
    return n or None


def _seeds_cell(g: Group) -> str:
    return fmt_cell(_n_seeds(g))


def pgd_name(groups: Sequence[Group]) -> str:
    """'PGD-k' when every measured group used k steps, else 'PGD'."""
    steps = {g.protocol.get("pgd_steps") for g in groups if g.measured}
    return f"PGD-{steps.pop()}" if len(steps) == 1 and None not in steps else "PGD"


def summary_table(groups: Sequence[Group], *, mixed: bool) -> Table:
    """Best-model test accuracy per arm (mean ± 95% CI over seeds), params and training time."""
    pgd = pgd_name(groups)
    has_aa = any(r.get("autoattack_acc") is not None for g in groups for r in g.rows)
    headers = ["suite", "arm", "description", "kind", "source", "seeds", "params", "non-zero"]
    headers += ["clean %", "FGSM %", f"{pgd} %", f"final {pgd} %"]
    headers += ["AutoAttack %"] if has_aa else []
    headers += ["train s (incl. finding)"]
    headers += ["protocol"] if mixed else []
    csv_headers = ["suite", "arm", "label", "kind", "source", "dataset", "model", "seeds"]
    csv_headers += ["params", "nonzero_params", "sparsity"]
    metrics = [("clean_acc", "clean_acc"), ("fgsm_acc", "fgsm_acc"), ("pgd_acc", "pgd_acc")]
    metrics += [("final_pgd_acc", "final_pgd_acc")]
    metrics += [("autoattack_acc", "autoattack_acc")] if has_aa else []
    for _, name in metrics:
        csv_headers += [f"{name}_mean", f"{name}_ci_low", f"{name}_ci_high"]
    csv_headers += ["train_seconds_mean", "train_seconds_ci_low", "train_seconds_ci_high"]
    csv_headers += ["eps", "pgd_steps", "step_size", "n_examples"]
    rows, csv_rows = [], []
    for g in groups:
        f = g.first
        ivs = [g.ci(lambda r, k=k: r.get(k)) for k, _ in metrics]
        t = g.ci(total_train_seconds)
        cells = [g.suite, g.arm, f.get("label", g.arm), g.kind, f["source"], _seeds_cell(g)]
        cells += [fmt_cell(f.get("params")), fmt_cell(f.get("nonzero_params"))]
        cells += [fmt_interval(iv, pct=True) for iv in ivs]
        cells += [fmt_interval(t, digits=0)]
        cells += [protocol_label(g.protocol)] if mixed else []
        rows.append(tuple(cells))
        line: list[Any] = [g.suite, g.arm, f.get("label", g.arm), g.kind, f["source"]]
        line += [f.get("dataset"), f.get("model"), _n_seeds(g)]
        line += [f.get("params"), f.get("nonzero_params"), f.get("sparsity")]
        for iv in ivs:
            line += iv_csv(iv)
        line += iv_csv(t)
        line += [g.protocol.get(k) for k in ("eps", "pgd_steps", "step_size", "n_examples")]
        csv_rows.append(tuple(line))
    caption = (
        f"Test accuracy of the model selected on held-out {pgd} accuracy (mean ± 95% t-interval "
        "over seeds; one seed: the value alone). Published rows are the paper's numbers."
    )
    return Table(
        "summary", caption, tuple(headers), tuple(rows), tuple(csv_headers), tuple(csv_rows)
    )


def _reached_cell(g: Group) -> str:
    hit, n = reached(g)
    return f"{hit}/{n}" if n else "no target"


def convergence_table(groups: Sequence[Group]) -> Table:
    """Speed per measured arm: epochs/seconds to the target, AUC and epoch-1 held-out accuracy."""
    pgd = pgd_name(groups)
    headers = (
        "suite",
        "arm",
        "seeds",
        f"target held-out {pgd} %",
        "reached",
        "epochs to target",
        "retrain s to target",
        "total s to target",
        "finding s",
        f"AUC {pgd} %",
        f"epoch-1 {pgd} %",
        "epoch-1 clean %",
    )
    keys = (
        ("target", "target"),
        ("epochs_to_target", "epochs_to_target"),
        ("train_seconds_to_target", "train_seconds_to_target"),
        ("total_seconds_to_target", "total_seconds_to_target"),
    )
    csv_headers = ["suite", "arm", "seeds", "reached"]
    for _, name in keys:
        csv_headers += [f"{name}_mean", f"{name}_ci_low", f"{name}_ci_high"]
    csv_headers += [
        "find_train_seconds_mean",
        "find_train_seconds_ci_low",
        "find_train_seconds_ci_high",
    ]
    for name in ("auc", "epoch1_val", "epoch1_val_clean"):
        csv_headers += [f"{name}_mean", f"{name}_ci_low", f"{name}_ci_high"]
    rows, csv_rows = [], []
    for g in groups:
        if not g.has_curves:
            continue
        target, ep, tr_s, tot_s = (g.ci(convergence_field(k)) for k, _ in keys)
        find = g.ci(lambda r: r.get("find_train_seconds"))
        auc, e1, e1c = (
            g.ci(convergence_field(k)) for k in ("auc", "epoch1_val", "epoch1_val_clean")
        )
        rows.append(
            (
                g.suite,
                g.arm,
                str(len(g.rows)),
                fmt_interval(target, pct=True),
                _reached_cell(g),
                fmt_interval(ep, digits=1),
                fmt_interval(tr_s, digits=0),
                fmt_interval(tot_s, digits=0),
                fmt_interval(find, digits=0),
                fmt_interval(auc, pct=True),
                fmt_interval(e1, pct=True),
                fmt_interval(e1c, pct=True),
            )
        )
        line: list[Any] = [g.suite, g.arm, len(g.rows), _reached_cell(g)]
        for iv in (target, ep, tr_s, tot_s, find, auc, e1, e1c):
            line += iv_csv(iv)
        csv_rows.append(tuple(line))
    caption = (
        f"Convergence: the target is the dense baseline's best held-out {pgd} accuracy (same seed) "
        "unless the suite fixes one; epochs and seconds are means over the seeds that reached it; "
        "total = ticket finding + retraining (training time only, evaluation excluded)."
    )
    return Table("convergence", caption, headers, tuple(rows), tuple(csv_headers), tuple(csv_rows))


def paired_table(comparisons: Sequence[ArmComparison]) -> Table:
    """Each arm minus its dense baseline over shared seeds, with 95% intervals and p-values."""
    headers = (
        "suite",
        "arm",
        "vs",
        "pairs",
        "Δ best PGD pp [95% CI]",
        "p",
        "Δ best clean pp [95% CI]",
        "Δ epochs to target",
        "Δ total s to target",
        "speed",
    )
    csv_headers = ["suite", "arm", "baseline", "pairs"]
    for name in ("pgd_acc", "clean_acc", "epochs_to_target", "total_seconds_to_target"):
        csv_headers += [f"d_{name}_mean", f"d_{name}_ci_low", f"d_{name}_ci_high", f"d_{name}_p"]
    csv_headers += ["reached", "speed"]
    rows, csv_rows = [], []
    for c in comparisons:
        g = c.group
        rows.append(
            (
                g.suite,
                g.arm,
                c.baseline.arm,
                str(c.pgd.n),
                fmt_diff(c.pgd, pct=True, digits=2),
                "–" if c.pgd.p is None else f"{c.pgd.p:.3f}",
                fmt_diff(c.clean, pct=True, digits=2),
                fmt_diff(c.epochs, pct=False, digits=1),
                fmt_diff(c.total_seconds, pct=False, digits=0),
                c.verdict,
            )
        )
        line: list[Any] = [g.suite, g.arm, c.baseline.arm, c.pgd.n]
        for p in (c.pgd, c.clean, c.epochs, c.total_seconds):
            line += [*iv_csv(p.diff), p.p]
        line += [f"{c.reached[0]}/{c.reached[1]}", c.verdict]
        csv_rows.append(tuple(line))
    caption = (
        "Each arm minus its dense baseline, paired by seed (mean difference [95% t-interval]; "
        "p: paired t-test). Negative time differences mean the arm was faster."
    )
    return Table("paired", caption, headers, tuple(rows), tuple(csv_headers), tuple(csv_rows))


BUILTIN_TABLES: tuple[TableEntry, ...] = (
    TableEntry(
        "summary",
        "test accuracy per arm (mean ± 95% CI over seeds), params, training time",
        lambda ctx: summary_table(ctx.groups, mixed=ctx.mixed),
    ),
    TableEntry(
        "convergence",
        "epochs and seconds to the target, AUC, epoch-1 held-out accuracy",
        lambda ctx: convergence_table(ctx.measured),
    ),
    TableEntry(
        "paired",
        "each arm minus its dense baseline, paired by seed",
        lambda ctx: paired_table(ctx.comparisons),
    ),
)


def table_registry() -> Registry[TableEntry]:
    """The built-in tables plus those of plugins (``TABLES``)."""
    return build_registry("table", BUILTIN_TABLES, "TABLES")
