"""``boosting-tickets tables``: every table, figure and the README from raw results files only.

:func:`regenerate` reads only raw results files (written by ``report.results.write_results``:
``bench run``, ``compare robustbench``, ...) found recursively under a directory, refuses to mix
files measured under different protocols (``results.protocol_differences``) unless asked to, and
writes::

    <out>/tables/<table>.{md,csv,tex}      every registered table (report.tables)
    <out>/figures/<suite>_*.png            held-out PGD accuracy vs epoch and vs time, epoch-1 bars
    <out>/README.md                        what the files show, with findings computed from them
    <out>/tables/instability.md, <out>/figures/instability_*.png   when instability.json files
                                           are there (``report.instability``)

Everything is a deterministic function of the results files (no clock, no machine state), so the
same inputs give byte-identical tables and README. Published numbers from the paper
(:mod:`.published`) are added as ``kind="reference"``, ``source="published"`` rows beside measured
results whose protocol, dataset and model match theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError
from .collect import ResultsDoc, check_protocols, find_results, group_rows, reference_groups
from .compare import baseline_group, compare_arms
from .formats import Table
from .readme import findings, readme, summary_paragraph, warnings
from .tables import ReportContext, table_registry


@dataclass
class Report:
    """Everything ``tables`` writes, as text/bytes keyed by path relative to the output dir, plus
    the tables by name and the findings."""

    files: dict[str, str | bytes]
    tables: dict[str, Table]
    findings: list[str]
    warnings: list[str]


def build_report(
    docs: Sequence[ResultsDoc],
    *,
    mix_protocols: bool = False,
    with_figures: bool = True,
    source: str = "runs/bench",
) -> Report:
    """All tables, figures and the README for ``docs`` (nothing is written here)."""
    mixed = check_protocols(docs, mix=mix_protocols)
    measured = group_rows(docs)
    refs, ref_notes = reference_groups(measured)
    groups = measured + refs
    comparisons = []
    for g in measured:
        base = baseline_group(g, measured) if g.measured else None
        if base is not None:
            comparisons.append(compare_arms(g, base))
    ctx = ReportContext(groups, measured, comparisons, mixed)
    tables = [entry.build(ctx) for entry in table_registry()]
    files: dict[str, str | bytes] = {}
    for t in tables:
        files[f"tables/{t.name}.md"] = t.markdown()
        files[f"tables/{t.name}.csv"] = t.csv()
        files[f"tables/{t.name}.tex"] = t.latex()
    figs: dict[str, bytes] = {}
    if with_figures:
        from .figures import figures

        figs = figures(measured)
    for name, data in figs.items():
        files[f"figures/{name}"] = data
    found = findings(docs, comparisons)
    warned = warnings(docs, groups)
    files["README.md"] = readme(
        docs, tables, groups, found, warned, ref_notes, sorted(figs), with_figures=with_figures,
        source=source, summary=summary_paragraph(comparisons),
    )  # fmt: skip
    return Report(files, {t.name: t for t in tables}, found, warned)


def regenerate(
    results_dir: str | Path,
    out: str | Path,
    *,
    mix_protocols: bool = False,
    with_figures: bool = True,
) -> Report:
    """Read every results file under ``results_dir`` and (re)write tables, figures and README
    under ``out``. All checks happen before the first write."""
    from ..core.storage import atomic_write_bytes, atomic_write_text
    from .instability import find_instability, instability_figures, instability_table

    docs = find_results(results_dir)
    report = build_report(
        docs, mix_protocols=mix_protocols, with_figures=with_figures, source=str(results_dir)
    )
    unstable = find_instability(results_dir)
    if unstable:
        report.files["tables/instability.md"] = instability_table(unstable)
        if with_figures:
            for name, png in instability_figures(unstable).items():
                report.files[f"figures/{name}"] = png
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file; pass a directory")
    for rel, _ in report.files.items():
        target = (root / rel).resolve()
        if not target.is_relative_to(root.resolve()):
            raise UserError(f"refusing to write {rel}: it would land outside --out {root}")
    for rel, data in sorted(report.files.items()):
        if isinstance(data, bytes):
            atomic_write_bytes(root / rel, data)
        else:
            atomic_write_text(root / rel, data)
    return report
