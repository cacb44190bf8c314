"""The results README: what the tables show, findings computed from them, and their sources."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .collect import Group, ResultsDoc, convergence_field, protocol_label
from .compare import ArmComparison, fmt_diff
from .formats import Table, fmt_cell, markdown_table

_INTRO = (
    "Boosting tickets (Li et al. 2020, arXiv 2003.05733) are sparse subnetworks, rewound to "
    "their original initialization, that are claimed to make PGD adversarial training converge "
    "faster than the dense network. Each measured arm is retrained under the same schedule as "
    "its dense baseline (the fair comparison); `reinit` keeps a ticket's mask at a fresh "
    "initialization. For every arm the tables give the test accuracy of the model chosen on "
    "held-out data and how fast held-out PGD accuracy reached the target (by default the dense "
    "arm's accuracy over its last epochs, averaged over seeds: a level every arm, dense "
    "included, must reach on its own curve). Speed is judged twice, with ticket finding "
    "included as in the paper's Table 3: in **work** (training FLOPs by the cost model, which a "
    "noisy machine cannot distort) and in **wall-clock** seconds. Each verdict is faster, "
    "slower or inconclusive: faster or slower only when the paired 95% t-interval over seeds "
    "excludes zero (from 3 seeds on). Test accuracies also carry a Wilson interval from their "
    "number of images. See docs/speed.md."
)


def tree_state(doc: ResultsDoc) -> str:
    """'clean', 'dirty' or 'unknown': whether the results came from committed code."""
    env = doc.doc.get("environment") or {}
    commit = env.get("git_commit")
    if env.get("git_clean") is not None:
        return "clean" if env["git_clean"] else "dirty"
    if not commit:
        return "unknown"
    return "dirty" if str(commit).endswith("+dirty") else "clean"


def _work_text(c: ArmComparison) -> str:
    from .tables import work_unit

    k, unit = work_unit([c.group, c.baseline])
    d = c.work.diff
    if d.mean is None:
        return f"work: {c.work_verdict.verdict} ({c.work_verdict.reason})"
    return (
        f"work: **{c.work_verdict.verdict}**, {fmt_diff(c.work, digits=3, scale=1 / k)} {unit} "
        f"to the target, finding included ({c.work_verdict.reason})"
    )


def _wall_text(c: ArmComparison) -> str:
    d = c.total_seconds.diff
    if d.mean is None:
        return f"wall-clock: {c.wall_verdict.verdict} ({c.wall_verdict.reason})"
    return (
        f"wall-clock: **{c.wall_verdict.verdict}**, {fmt_diff(c.total_seconds, digits=0)} s "
        f"({c.wall_verdict.reason})"
    )


def findings(docs: Sequence[ResultsDoc], comparisons: Sequence[ArmComparison]) -> list[str]:
    """One sentence per comparison (both verdicts, accuracy gap, epoch-1 accuracies) and per
    failure; results from a dirty tree are marked."""
    lines = []
    for c in comparisons:
        g, b = c.group, c.baseline
        acc = c.pgd.diff
        if acc.mean is None:
            acc_txt = "No paired test accuracies"
        else:
            p = f"; p = {c.pgd.p:.3f}" if c.pgd.p is not None else ""
            acc_txt = f"Best test PGD accuracy {fmt_diff(c.pgd, pct=True)} pp vs {b.arm}{p}"
            if not acc.has_interval and len(acc.values) > 1:
                acc_txt += " (per seed: " + ", ".join(f"{100 * v:+.2f}" for v in acc.values) + ")"
        e1 = g.ci(convergence_field("epoch1_val"))
        e1b = b.ci(convergence_field("epoch1_val"))
        e1_txt = ""
        if e1.mean is not None and e1b.mean is not None:
            e1_txt = f"; after one epoch held-out PGD {100 * e1.mean:.1f}% vs {100 * e1b.mean:.1f}%"
        dirty = " *(from a dirty tree: not reproducible from a commit)*" if (
            g.doc is not None and tree_state(g.doc) == "dirty"
        ) else ""  # fmt: skip
        lines.append(
            f"**{g.suite} / {g.arm}** vs {b.arm} ({c.reached[0]} of {c.reached[1]} seeds reached "
            f"the target): {_work_text(c)}; {_wall_text(c)}. {acc_txt}{e1_txt}.{dirty}"
        )
    for d in docs:
        for f in d.doc.get("failed", []):
            lines.append(
                f"**{d.suite} / {f['arm']}** seed {f['seed']} failed ({f['stage']}) and is not "
                f"tabulated: {f['error']}"
            )
    return lines


def summary_paragraph(comparisons: Sequence[ArmComparison]) -> str:
    """One paragraph from the verdicts: how many comparisons came out faster, slower or
    inconclusive in work and in wall-clock, per model, and the largest robust-accuracy gaps."""
    if not comparisons:
        return ""
    by_model: dict[str, list[ArmComparison]] = {}
    for c in comparisons:
        by_model.setdefault(str(c.group.first.get("model")), []).append(c)
    parts = []
    for model, cs in by_model.items():
        counts = []
        for axis, get in (("work", lambda c: c.work_verdict.verdict),
                          ("wall-clock", lambda c: c.wall_verdict.verdict)):  # fmt: skip
            tally: dict[str, int] = {}
            for c in cs:
                tally[get(c)] = tally.get(get(c), 0) + 1
            counts.append(f"{axis}: " + ", ".join(f"{n} {v}" for v, n in sorted(tally.items())))
        gaps = [(c.pgd.diff.mean, c.group.arm) for c in cs if c.pgd.diff.mean is not None]
        gap = ""
        if gaps:
            lo, hi = min(gaps), max(gaps)
            gap = (f"; best test PGD accuracy minus dense from {100 * lo[0]:+.2f} pp ({lo[1]}) "
                   f"to {100 * hi[0]:+.2f} pp ({hi[1]})")  # fmt: skip
        parts.append(f"**{model}** ({len(cs)} arm(s) vs dense): {'; '.join(counts)}{gap}")
    return (
        "Computed from the verdicts below (each: paired 95% t-interval over seeds; faster or "
        "slower only when it excludes zero). " + ". ".join(parts) + "."
    )


def warnings(docs: Sequence[ResultsDoc], groups: Sequence[Group]) -> list[str]:
    """What weakens the numbers: targets at chance, too few seeds, a noisy machine, dirty trees."""
    from .compare import epoch_time_spread
    from .stats import MIN_SEEDS

    out = []
    seen: set[tuple[str, str]] = set()
    for g in groups:
        if not g.measured or g.target is None:
            continue
        key = (g.suite, str(g.target.get("baseline")))
        if g.target.get("above_chance") is False and key not in seen:
            seen.add(key)
            out.append(
                f"{g.suite}: the target of the '{key[1]}' comparisons "
                f"({_pct(g.target)}) is at or below chance + 2 SE of the held-out set "
                f"({100 * g.target['chance_floor']:.1f}%): any arm reaches it by guessing, so "
                "there is no verdict"
            )
    for g in groups:
        n = sum(1 for r in g.rows if r.get("seed") is not None)
        if g.measured and 0 < n < MIN_SEEDS:
            out.append(
                f"{g.suite} / {g.arm}: {n} seed(s), fewer than the {MIN_SEEDS} an interval needs: "
                "per-seed values only, and no verdict"
            )
    out += epoch_time_spread(groups)
    for d in docs:
        if tree_state(d) == "dirty":
            out.append(f"{d.rel}: written by code with uncommitted changes (dirty tree)")
    return out


def _pct(target: Mapping[str, Any]) -> str:
    if target.get("value") is not None:
        return f"{100 * target['value']:.1f}%"
    vals = list((target.get("per_seed") or {}).values())
    return ", ".join(f"{100 * v:.1f}%" for v in vals) or "–"


def sources_table(docs: Sequence[ResultsDoc]) -> str:
    """Where every results file came from: suite, status, protocol, commit, device, wall times."""
    rows = []
    for d in docs:
        env = d.doc.get("environment", {})
        pk = env.get("packages", {}) or {}
        seeds = {r.get("seed") for r in d.doc.get("rows", []) if r.get("seed") is not None}
        wall = d.doc.get("wall_seconds") or {}
        rows.append(
            [
                f"`{d.rel}`",
                d.suite,
                str(d.doc.get("status", "–")),
                str(len(d.doc.get("rows", []))),
                str(len(seeds)) if seeds else "–",
                str(len(d.doc.get("failed", []))),
                str(d.protocol.get("dataset", "–")),
                protocol_label(d.protocol),
                str(env.get("git_commit") or "–"),
                tree_state(d),
                f"{env.get('device', '–')}, {env.get('torch_threads', '?')} threads",
                str(pk.get("torch") or "–"),
                fmt_cell(wall.get("find_wall_seconds"), digits=0),
                fmt_cell(wall.get("run_seconds"), digits=0),
            ]
        )
    return markdown_table(
        [
            "results file",
            "suite",
            "status",
            "rows",
            "seeds",
            "failed",
            "dataset",
            "protocol",
            "git commit",
            "tree",
            "device",
            "torch",
            "finding s",
            "(re)training s",
        ],
        rows,
    )


def _table_sections(tables: Sequence[Table]) -> list[str]:
    out: list[str] = []
    for t in tables:
        out += [
            f"## Table: {t.name}",
            "",
            f"Files: [`tables/{t.name}.md`](tables/{t.name}.md), "
            f"[`tables/{t.name}.csv`](tables/{t.name}.csv), "
            f"[`tables/{t.name}.tex`](tables/{t.name}.tex).",
            "",
            t.caption,
            "",
            markdown_table(t.headers, t.rows) if t.rows else "(no rows)",
            "",
        ]
    return out


def _figure_section(figure_names: Sequence[str], with_figures: bool) -> list[str]:
    out = ["## Figures", ""]
    if not figure_names:
        out.append("Not generated (--no-figures)." if not with_figures else "No runs with curves.")
        return out
    out += [f"- [`figures/{name}`](figures/{name})" for name in figure_names]
    out.append("")
    out.append(
        "`*_pgd_vs_epoch.png`: held-out PGD accuracy per arm against epochs (thin lines: seeds; "
        "bold: their mean; dashed: the target); `*_pgd_vs_work.png`: the same against work "
        "(FLOPs) and wall-clock seconds, ticket finding included; `*_epoch1.png`: held-out "
        "accuracy after one epoch (dots: seeds); `*_per_class.png`: per-class test accuracy of "
        "the selected models; `*_eps.png`: their robust test accuracy against eps."
    )
    return out


def _reference_section(groups: Sequence[Group], ref_notes: Sequence[str]) -> list[str]:
    out = ["", "## Published reference rows", ""]
    n_ref = sum(1 for g in groups if g.kind == "reference")
    if n_ref:
        out.append(
            f"{n_ref} published row(s) from the paper appear in the `published` table, apart from "
            "the measured rows: they match our eps, attack steps and test size, but the paper "
            "selects the final epoch, attacks without a random start and validates on the test "
            "set (the table lists the differences)."
        )
    else:
        out.append(
            "None shown: no results here were measured under a published table's protocol "
            "(CIFAR-10, eps 8/255, the paper's model and PGD steps, 10,000 test images)."
        )
    return out + [f"- {n}" for n in ref_notes]


def readme(
    docs: Sequence[ResultsDoc],
    tables: Sequence[Table],
    groups: Sequence[Group],
    found: Sequence[str],
    warned: Sequence[str],
    ref_notes: Sequence[str],
    figure_names: Sequence[str],
    *,
    with_figures: bool,
    source: str,
    summary: str = "",
) -> str:
    """``README.md`` of a results directory; every number in it comes from ``docs``."""
    suites = sorted({d.suite for d in docs})
    out = [
        "# Results",
        "",
        f"Generated by `boosting-tickets tables {source}` from {len(docs)} raw results "
        f"file(s) ({', '.join(suites)}). Do not edit by hand: rerun the command. Every number "
        "below is computed from those files; nothing is typed in.",
        "",
        "## What this shows",
        "",
        _INTRO,
        "",
        "## Findings",
        "",
        *([summary, ""] if summary else []),
        *([f"- {f}" for f in found] if found else ["- no arm has a dense baseline to compare"]),
        "",
        *(["## Warnings", "", *[f"- {w}" for w in warned], ""] if warned else []),
        "## Sources",
        "",
        sources_table(docs),
        "",
        "`finding s`: wall time of every ticket search (training, held-out evaluation, pruning); "
        "`(re)training s`: training plus per-epoch held-out evaluation of every tabulated run. "
        "Test-set evaluation and data loading come on top.",
        "",
        *_table_sections(tables),
        *_figure_section(figure_names, with_figures),
        *_reference_section(groups, ref_notes),
    ]
    return "\n".join(out).rstrip() + "\n"
