"""``boosting-tickets tables``: results/ (tables, figures, README) from raw results files only."""

from __future__ import annotations

from pathlib import Path

import click

from .options import out_dir_option


@click.command("tables", short_help="Tables, figures and README from raw results files.")
@click.argument("results_dir", type=click.Path(), default="runs/bench", required=False)
@out_dir_option("results", "Output directory.")
@click.option(
    "--mix-protocols",
    is_flag=True,
    help="Tabulate results measured under different protocols together (adds a protocol column).",
)
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures (tables and README only).")
def tables_command(results_dir: str, out: str, mix_protocols: bool, no_figures: bool) -> None:
    """Regenerate Markdown/CSV/LaTeX tables, figures and README.md under --out from the raw
    results JSON files found (recursively) in RESULTS_DIR [default: runs/bench], plus every
    finished train/retrain run there that no results file lists (one table block per
    protocol)."""
    from ..report.build import regenerate
    from ..report.formats import markdown_table

    report = regenerate(results_dir, out, mix_protocols=mix_protocols, with_figures=not no_figures)
    summary, paired = report.tables.get("summary"), report.tables.get("paired")
    if summary is not None:
        click.echo(summary.caption)
        click.echo(markdown_table(summary.headers, summary.rows))
    if paired is not None and paired.rows:
        click.echo("")
        click.echo(paired.caption)
        click.echo(markdown_table(paired.headers, paired.rows))
    for line in report.findings:
        click.echo(f"- {line.replace('**', '')}")
    for line in report.warnings:
        click.echo(f"warning: {line}")
    click.echo(f"wrote {len(report.files)} files under {out}/ (index: {Path(out) / 'README.md'})")
