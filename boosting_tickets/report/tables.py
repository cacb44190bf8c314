"""The table registry: name -> builder of one results table (Markdown, CSV and LaTeX).

Built in: ``summary`` (test accuracy per arm, mean ± 95% CI over seeds, params), ``convergence``
(epochs / seconds to the target, AUC, epoch-1 accuracy), ``paired`` (each arm minus its dense
baseline, paired by seed), ``per_seed``, ``per_class`` (balanced accuracy, macro-F1, every class)
and ``published``. A builder takes a :class:`ReportContext` and returns a
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
from .stats import wilson


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


def _l2(groups: Sequence[Group]) -> bool:
    """True when every measured group is under the L2 threat model (PGD-L2 + FGM)."""
    norms = {g.protocol.get("threat_model", "Linf") for g in groups if g.measured}
    return norms == {"L2"}


def pgd_name(groups: Sequence[Group]) -> str:
    """'PGD-k' when every measured group used k steps, else 'PGD' ('PGD-k-L2' under L2)."""
    steps = {g.protocol.get("pgd_steps") for g in groups if g.measured}
    name = f"PGD-{steps.pop()}" if len(steps) == 1 and None not in steps else "PGD"
    return name + ("-L2" if _l2(groups) else "")


def single_step_name(groups: Sequence[Group]) -> str:
    """The protocol's single-step attack: 'FGSM' (L∞) or 'FGM' (L2)."""
    return "FGM" if _l2(groups) else "FGSM"


def summary_table(groups: Sequence[Group], *, mixed: bool) -> Table:
    """Best-model test accuracy per arm (mean ± 95% CI over seeds), params and training time."""
    pgd = pgd_name(groups)
    has_aa = any(r.get("autoattack_acc") is not None for g in groups for r in g.rows)
    headers = ["suite", "arm", "description", "kind", "source", "seeds", "params", "non-zero"]
    headers += ["clean %", f"{single_step_name(groups)} %", f"{pgd} %", f"final {pgd} %", "test n",
                f"{pgd} Wilson ±"]  # fmt: skip
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
        cells += [fmt_interval(iv, pct=True) for iv in ivs[:4]]
        cells += [fmt_cell(f.get("n")), _binomial_cell(ivs[2].mean, f.get("n"))]
        cells += [fmt_interval(iv, pct=True) for iv in ivs[4:]]
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
        "over seeds from 3 seeds on; fewer: the per-seed values). 'Wilson ±': half the 95% "
        f"Wilson interval of one run's {pgd} accuracy on n test images, the binomial error "
        "that seeds do not show. Published numbers are in their own table."
    )
    return Table(
        "summary", caption, tuple(headers), tuple(rows), tuple(csv_headers), tuple(csv_rows)
    )


def published_table(groups: Sequence[Group]) -> Table:
    """Published rows in their own block: what the paper reports, and how its protocol differs
    from the measured rows' (checkpoint selection, random start, validation on test), so that no
    column reads as like-for-like."""
    headers = ("source", "arm", "description", "model", "epochs", "clean %", "PGD %",
               "total s", "protocol", "differs from ours in")  # fmt: skip
    csv_headers = ("source", "arm", "label", "dataset", "model", "epochs", "clean_acc", "pgd_acc",
                   "total_seconds", "eps", "pgd_steps", "n_examples", "differences")  # fmt: skip
    rows, csv_rows = [], []
    for g in groups:
        if g.measured:
            continue
        r = g.first
        diffs = "; ".join(r.get("protocol_differences") or []) or "–"
        rows.append((g.suite, g.arm, r.get("label", g.arm), r.get("model"),
                     fmt_cell(r.get("epochs")), fmt_cell(r.get("clean_acc"), pct=True),
                     fmt_cell(r.get("pgd_acc"), pct=True), fmt_cell(r.get("total_seconds"), digits=0),
                     protocol_label(g.protocol), diffs))  # fmt: skip
        csv_rows.append((g.suite, g.arm, r.get("label"), r.get("dataset"), r.get("model"),
                         r.get("epochs"), r.get("clean_acc"), r.get("pgd_acc"),
                         r.get("total_seconds"), g.protocol.get("eps"), g.protocol.get("pgd_steps"),
                         g.protocol.get("n_examples"), diffs))  # fmt: skip
    caption = (
        "Published numbers, kept apart from the measured rows: the paper's protocol differs from "
        "ours in the ways listed, so the numbers are a reference, not a like-for-like comparison."
    )
    return Table("published", caption, headers, tuple(rows), csv_headers, tuple(csv_rows))


def _binomial_cell(acc: float | None, n: Any) -> str:
    if acc is None or not n:
        return "–"
    lo, hi = wilson(acc * int(n), int(n))
    return f"{100 * (hi - lo) / 2:.1f}"


def _reached_cell(g: Group) -> str:
    hit, n = reached(g)
    return f"{hit}/{n}" if n else "no target"


def work_unit(groups: Sequence[Group]) -> tuple[float, str]:
    """(divisor, name) of the work unit: PFLOP when some run did >= 1 PFLOP, else TFLOP."""
    most = max(
        (float(c.get("cum_work_flops") or 0.0) for g in groups for r in g.rows
         for c in (r.get("curve") or [])[-1:]),
        default=0.0,
    )  # fmt: skip
    return (1e15, "PFLOP") if most >= 1e15 else (1e12, "TFLOP")


def _scaled(get: Callable[[Any], Any], k: float) -> Callable[[Any], Any]:
    return lambda r: None if (v := get(r)) is None else float(v) / k


def _target_cell(g: Group) -> str:
    t = g.target or {}
    vals = [t["value"]] if t.get("value") is not None else list((t.get("per_seed") or {}).values())
    if not vals:
        return "–"
    text = ", ".join(f"{100 * v:.2f}" for v in vals)
    return text + (" (≤ chance + 2 SE)" if t.get("above_chance") is False else "")


def convergence_table(groups: Sequence[Group]) -> Table:
    """Speed per measured arm: epochs, work and seconds to the target, AUC and epoch-1 accuracy."""
    pgd = pgd_name(groups)
    k, unit = work_unit(groups)
    headers = (
        "suite", "arm", "seeds", f"target held-out {pgd} %", "reached", "epochs to target",
        f"work to target {unit}", "at 2x V100 rate s", "total s to target", f"finding {unit}",
        "finding s", f"AUC {pgd} %", f"epoch-1 {pgd} %",
    )  # fmt: skip
    getters = {
        "epochs_to_target": convergence_field("epochs_to_target"),
        "work_to_target": _scaled(convergence_field("work_to_target"), k),
        "reference_seconds_to_target": convergence_field("reference_seconds_to_target"),
        "total_seconds_to_target": convergence_field("total_seconds_to_target"),
        "find_work": _scaled(lambda r: r.get("find_work_flops"), k),
        "find_train_seconds": lambda r: r.get("find_train_seconds"),
        "auc": convergence_field("auc"),
        "epoch1_val": convergence_field("epoch1_val"),
    }
    csv_headers = ["suite", "arm", "seeds", "target_rule", "target", "reached", "work_unit"]
    for name in getters:
        csv_headers += [f"{name}_mean", f"{name}_ci_low", f"{name}_ci_high"]
    rows, csv_rows = [], []
    for g in groups:
        if not g.has_curves:
            continue
        ivs = {name: g.ci(get) for name, get in getters.items()}
        digits = {"epochs_to_target": 1, "work_to_target": 3, "find_work": 3}
        cells = [g.suite, g.arm, str(len(g.rows)), _target_cell(g), _reached_cell(g)]
        for name, iv in ivs.items():
            pct = name in ("auc", "epoch1_val")
            cells.append(fmt_interval(iv, pct=pct, digits=2 if pct else digits.get(name, 0)))
        rows.append(tuple(cells))
        t = g.target or {}
        line: list[Any] = [g.suite, g.arm, len(g.rows), t.get("rule"), t.get("value")]
        line += [_reached_cell(g), unit]
        for iv in ivs.values():
            line += iv_csv(iv)
        csv_rows.append(tuple(line))
    caption = (
        f"Convergence to the target (the suite's rule, recorded in the results: by default the "
        f"dense arm's held-out {pgd} accuracy over its last epochs, averaged over seeds; every arm "
        "is judged on its own curve). Epochs, work and seconds are over the seeds that reached "
        f"it, ticket finding included in work and total seconds. Work: training FLOPs by the cost "
        "model; 'at 2x V100 rate': that work at the throughput the paper's 134,764 s imply. "
        "Fewer than 3 seeds: the per-seed values, no interval."
    )
    return Table("convergence", caption, headers, tuple(rows), tuple(csv_headers), tuple(csv_rows))


def paired_table(comparisons: Sequence[ArmComparison], groups: Sequence[Group]) -> Table:
    """Each arm minus its dense baseline over shared seeds, with the work and wall verdicts."""
    k, unit = work_unit(groups)
    headers = (
        "suite", "arm", "vs", "pairs", "Δ best PGD pp [95% CI]", "p", "Δ epochs to target",
        f"Δ work {unit} [95% CI]", "work verdict", "Δ total s [95% CI]", "wall-clock verdict",
    )  # fmt: skip
    csv_headers = ["suite", "arm", "baseline", "pairs", "work_unit"]
    for name in ("pgd_acc", "clean_acc", "epochs_to_target", "work_to_target"):
        csv_headers += [f"d_{name}_mean", f"d_{name}_ci_low", f"d_{name}_ci_high", f"d_{name}_p"]
    csv_headers += ["d_total_seconds_mean", "d_total_seconds_ci_low", "d_total_seconds_ci_high"]
    csv_headers += ["d_total_seconds_p", "reached", "work_verdict", "wall_verdict"]
    rows, csv_rows = [], []
    for c in comparisons:
        g = c.group
        rows.append(
            (
                g.suite, g.arm, c.baseline.arm, str(c.pgd.n), fmt_diff(c.pgd, pct=True),
                "–" if c.pgd.p is None else f"{c.pgd.p:.3f}", fmt_diff(c.epochs, digits=1),
                fmt_diff(c.work, digits=3, scale=1 / k), c.work_verdict.verdict,
                fmt_diff(c.total_seconds, digits=0), c.wall_verdict.verdict,
            )
        )  # fmt: skip
        line: list[Any] = [g.suite, g.arm, c.baseline.arm, c.pgd.n, unit]
        for p in (c.pgd, c.clean, c.epochs):
            line += [*iv_csv(p.diff), p.p]
        line += [*(None if v is None else v / k for v in iv_csv(c.work.diff)), c.work.p]
        line += [*iv_csv(c.total_seconds.diff), c.total_seconds.p]
        line += [f"{c.reached[0]}/{c.reached[1]}", c.work_verdict.verdict, c.wall_verdict.verdict]
        csv_rows.append(tuple(line))
    caption = (
        "Each arm minus its dense baseline, paired by seed (mean difference [95% t-interval], "
        "from 3 pairs on; p: paired t-test). Negative work and time differences mean the arm was "
        "faster. A verdict is faster or slower only when the interval excludes zero and the "
        "target lies above chance + 2 SE; otherwise inconclusive (the findings say why)."
    )
    return Table("paired", caption, headers, tuple(rows), tuple(csv_headers), tuple(csv_rows))


def per_seed_table(groups: Sequence[Group]) -> Table:
    """Every measured run: test accuracies with Wilson intervals, and its own convergence."""
    pgd = pgd_name(groups)
    k, unit = work_unit(groups)
    headers = (
        "suite", "arm", "seed", "n", "clean % [Wilson 95%]", f"{pgd} % [Wilson 95%]",
        "best epoch", "epochs to target", f"work to target {unit}", "total s to target",
        "epoch s (median)", "load (median)",
    )  # fmt: skip
    csv_headers = ["suite", "arm", "seed", "n", "clean_acc", "clean_low", "clean_high"]
    csv_headers += ["pgd_acc", "pgd_low", "pgd_high", "best_epoch", "epochs_to_target"]
    csv_headers += ["work_to_target", "work_unit", "total_seconds_to_target"]
    csv_headers += ["median_epoch_seconds", "median_load1", "git_commit"]
    rows, csv_rows = [], []
    for g in groups:
        if not g.measured:
            continue
        for r in g.rows:
            n = r.get("n")
            accs = []
            for key in ("clean_acc", "pgd_acc"):
                v = r.get(key)
                lo, hi = (None, None) if v is None or not n else wilson(v * n, int(n))
                accs.append((v, lo, hi))
            conv = r.get("convergence") or {}
            curve = r.get("curve") or []
            secs = _median([c.get("train_seconds") for c in curve])
            load = _median([c.get("load1") for c in curve])
            work = conv.get("work_to_target")
            cells = [g.suite, g.arm, fmt_cell(r.get("seed")), fmt_cell(n)]
            cells += [_wilson_cell(*a) for a in accs]
            cells += [fmt_cell(r.get("best_epoch")), fmt_cell(conv.get("epochs_to_target"))]
            cells += [fmt_cell(None if work is None else work / k, digits=3)]
            cells += [fmt_cell(conv.get("total_seconds_to_target"), digits=0)]
            cells += [fmt_cell(secs, digits=1), fmt_cell(load, digits=2)]
            rows.append(tuple(cells))
            line: list[Any] = [g.suite, g.arm, r.get("seed"), n, *accs[0], *accs[1]]
            line += [r.get("best_epoch"), conv.get("epochs_to_target")]
            line += [None if work is None else work / k, unit, conv.get("total_seconds_to_target")]
            line += [secs, load, r.get("git_commit")]
            csv_rows.append(tuple(line))
    caption = (
        "Every measured run. Test accuracies of the held-out-selected model with their Wilson "
        "95% interval from n test images (the binomial error seeds do not show); convergence "
        "under the suite's target; the median epoch time and 1-minute load average of the run."
    )
    return Table("per_seed", caption, headers, tuple(rows), tuple(csv_headers), tuple(csv_rows))


def _class_metrics(r: dict[str, Any]) -> dict[str, Any] | None:
    """A row's per-class record when it holds the numbers a table needs (else None)."""
    pc = r.get("per_class")
    if not isinstance(pc, dict):
        return None
    keys = ("balanced_clean", "balanced_pgd")
    if not all(isinstance(pc.get(k), int | float) for k in keys):
        return None
    if not all(isinstance(pc.get(k), list) for k in ("clean", "pgd")):
        return None
    return pc


def _mean_of(values: Sequence[Any]) -> float | None:
    vals = [float(v) for v in values if isinstance(v, int | float)]
    return sum(vals) / len(vals) if vals else None


def per_class_table(groups: Sequence[Group]) -> Table:
    """Per arm (mean over seeds): balanced clean and robust accuracy, clean macro-F1, and the
    accuracy of every class (imbalanced data such as DermaMNIST: the mean hides the rare classes)."""
    pgd = pgd_name(groups)
    headers = ("suite", "arm", "seeds", "balanced clean %", f"balanced {pgd} %", "macro-F1 clean",
               "clean % per class", f"{pgd} % per class")  # fmt: skip
    csv_headers = ("suite", "arm", "seeds", "balanced_clean", "balanced_pgd", "macro_f1_clean",
                   "class", "support", "clean_acc", "pgd_acc")  # fmt: skip
    rows, csv_rows = [], []
    for g in groups:
        pcs = [pc for r in g.rows if g.measured and (pc := _class_metrics(r)) is not None]
        if not pcs or len({len(pc["clean"]) for pc in pcs}) != 1:
            continue
        bal_c = _mean_of([pc["balanced_clean"] for pc in pcs])
        bal_p = _mean_of([pc["balanced_pgd"] for pc in pcs])
        f1 = _mean_of([pc.get("macro_f1_clean") for pc in pcs])
        n_cls = len(pcs[0]["clean"])
        clean = [_mean_of([pc["clean"][c] for pc in pcs]) for c in range(n_cls)]
        robust = [_mean_of([pc["pgd"][c] for pc in pcs]) for c in range(n_cls)]

        def pct(v: float | None) -> str:
            return "–" if v is None else f"{100 * v:.1f}"

        rows.append((g.suite, g.arm, str(len(pcs)), pct(bal_c), pct(bal_p),
                     "–" if f1 is None else f"{f1:.3f}", " / ".join(map(pct, clean)),
                     " / ".join(map(pct, robust))))  # fmt: skip
        support = pcs[0].get("support") or [None] * n_cls
        for c in range(n_cls):
            csv_rows.append((g.suite, g.arm, len(pcs), bal_c, bal_p, f1, c,
                             support[c] if c < len(support) else None, clean[c], robust[c]))  # fmt: skip
    caption = (
        "Per arm, mean over seeds: balanced accuracy (the mean of per-class recalls), clean "
        "macro-F1 (the mean of per-class F1 over the classes present) and the test accuracy of "
        "each class, 0 first, of the held-out-selected model. Robust macro-F1 is not given: the "
        "early-exit evaluator stops at the first fooling iterate and keeps no adversarial class."
    )
    return Table("per_class", caption, headers, tuple(rows), csv_headers, tuple(csv_rows))


def _median(values: Sequence[Any]) -> float | None:
    import statistics

    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _wilson_cell(v: float | None, lo: float | None, hi: float | None) -> str:
    if v is None:
        return "–"
    if lo is None or hi is None:
        return f"{100 * v:.2f}"
    return f"{100 * v:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"


BUILTIN_TABLES: tuple[TableEntry, ...] = (
    TableEntry(
        "summary",
        "test accuracy per arm (mean ± 95% CI over seeds), params, training time",
        lambda ctx: summary_table(ctx.measured, mixed=ctx.mixed),
    ),
    TableEntry(
        "convergence",
        "epochs and seconds to the target, AUC, epoch-1 held-out accuracy",
        lambda ctx: convergence_table(ctx.measured),
    ),
    TableEntry(
        "paired",
        "each arm minus its dense baseline, paired by seed, with work and wall-clock verdicts",
        lambda ctx: paired_table(ctx.comparisons, ctx.measured),
    ),
    TableEntry(
        "per_seed",
        "every measured run: Wilson intervals of its test accuracies, its convergence",
        lambda ctx: per_seed_table(ctx.measured),
    ),
    TableEntry(
        "per_class",
        "per arm: balanced accuracy, clean macro-F1 and the accuracy of every class",
        lambda ctx: per_class_table(ctx.measured),
    ),
    TableEntry(
        "published",
        "published rows, in their own block with their protocol differences",
        lambda ctx: published_table(ctx.groups),
    ),
)


def table_registry() -> Registry[TableEntry]:
    """The built-in tables plus those of plugins (``TABLES``)."""
    return build_registry("table", BUILTIN_TABLES, "TABLES")
