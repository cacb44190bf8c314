"""The results README: what the tables show, findings computed from them, and their sources."""

from __future__ import annotations

from collections.abc import Sequence

from .collect import Group, ResultsDoc, convergence_field, protocol_label
from .compare import ArmComparison
from .formats import Table, fmt_cell, markdown_table

_INTRO = (
    "Boosting tickets (Li et al. 2020, arXiv 2003.05733) are sparse subnetworks, rewound to "
    "their original initialization, that are claimed to make PGD adversarial training converge "
    "faster than the dense network. Each measured arm is retrained under the same schedule as "
    "its dense baseline (the fair comparison); `reinit` keeps a ticket's mask at a fresh "
    "initialization. For every arm the tables give the test accuracy of the model chosen on "
    "held-out data, how fast held-out PGD accuracy reached the target (the dense baseline's "
    "best unless the suite fixes one), with ticket-finding time included in the total as in "
    "the paper's Table 3, and the paired difference to the dense baseline per seed. Intervals "
    "are 95% Student-t intervals over seeds; with one seed there is no interval."
)


def findings(docs: Sequence[ResultsDoc], comparisons: Sequence[ArmComparison]) -> list[str]:
    """One sentence per comparison (verdict, accuracy gap, epoch-1 accuracies) and per failure."""
    lines = []
    for c in comparisons:
        g, b = c.group, c.baseline
        acc = c.pgd.diff
        if acc.mean is None:
            acc_txt = "No paired test accuracies"
        else:
            ci = (
                f"95% CI {100 * acc.low:+.2f} to {100 * acc.high:+.2f}"  # type: ignore[operator]
                if acc.has_interval
                else acc.note
            )
            p = f"p = {c.pgd.p:.3f}" if c.pgd.p is not None else c.pgd.note
            detail = "; ".join(x for x in dict.fromkeys((ci, p)) if x)
            acc_txt = f"Best test PGD accuracy {100 * acc.mean:+.2f} pp vs {b.arm} ({detail})"
        e1 = g.ci(convergence_field("epoch1_val"))
        e1b = b.ci(convergence_field("epoch1_val"))
        e1_txt = ""
        if e1.mean is not None and e1b.mean is not None:
            e1_txt = f"; after one epoch held-out PGD {100 * e1.mean:.1f}% vs {100 * e1b.mean:.1f}%"
        lines.append(f"**{g.suite} / {g.arm}** vs {b.arm}: {c.sentence}. {acc_txt}{e1_txt}.")
    for d in docs:
        for f in d.doc.get("failed", []):
            lines.append(
                f"**{d.suite} / {f['arm']}** seed {f['seed']} failed ({f['stage']}) and is not "
                f"tabulated: {f['error']}"
            )
    return lines


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
        "`*_pgd_vs_epoch.png` and `*_pgd_vs_time.png`: held-out PGD accuracy per arm (mean "
        "over seeds, 95% CI band) against epochs and against training seconds with ticket "
        "finding included; `*_epoch1.png`: held-out accuracy after one epoch."
    )
    return out


def _reference_section(groups: Sequence[Group], ref_notes: Sequence[str]) -> list[str]:
    out = ["", "## Published reference rows", ""]
    n_ref = sum(1 for g in groups if g.kind == "reference")
    if n_ref:
        out.append(
            f"{n_ref} published row(s) from the paper appear in the summary table next to results "
            "measured under their protocol (kind `reference`, source `published`)."
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
    ref_notes: Sequence[str],
    figure_names: Sequence[str],
    *,
    with_figures: bool,
    source: str,
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
        *([f"- {f}" for f in found] if found else ["- no arm has a dense baseline to compare"]),
        "",
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
