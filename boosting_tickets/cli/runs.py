"""``boosting-tickets runs DIR``: every run directory under DIR, with its state."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import json_option


@click.command("runs", short_help="List every run under a folder: kind, status, epochs, arm.")
@click.argument("root", type=click.Path(), default="runs", required=False)
@json_option
def runs_command(root: str, as_json: bool) -> None:
    """List every run directory under ROOT [default: runs]: its kind (train, retrain, or the
    training of a ticket search), status, epochs done, best held-out PGD accuracy, and the suite,
    arm and seed it belongs to (from the results files around it)."""
    from ..report.formats import markdown_table
    from ..report.runs import runs_table, scan_runs

    base = Path(root)
    records = scan_runs(base)
    headers, rows = runs_table(records, base)
    if as_json:
        click.echo(json.dumps([dict(zip(headers, r, strict=True)) for r in rows], indent=2))
        return
    if not rows:
        click.echo(f"no runs under {base}")
        return
    click.echo(markdown_table(headers, rows))
    done = sum(r.status == "complete" for r in records)
    click.echo(f"{len(records)} run(s), {done} complete")
