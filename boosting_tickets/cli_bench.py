"""``boosting-tickets bench run|list`` and ``boosting-tickets tables``.

Registered on the main group at the bottom of :mod:`boosting_tickets.cli`. ``bench run SUITE`` expands
a suite (benchmarks/suites/SUITE.toml, or a path to a .toml) into arms x seeds, reuses finished runs,
resumes interrupted ones and writes ``<out>/results.json``; ``--dry-run`` prints the plan and its cost
estimate instead. ``tables`` regenerates results/ (tables, figures, README) from raw results only.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from .errors import UserError
from .reporting import console_log


@click.group()
def bench() -> None:
    """Benchmark suites: arms (dense, tickets, controls) x seeds, with fair baselines."""


def _count(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--{name} expects a whole number, got '{text}'") from None
    if value < 1:
        raise UserError(f"--{name} must be >= 1, got {value}")
    return value


@bench.command("run")
@click.argument("suite", type=str)
@click.option(
    "--seeds",
    type=str,
    default=None,
    help="Run this many seeds: the suite's seed list, continued with the next integers "
    "[default: the suite's list].",
)
@click.option(
    "--out", type=str, default=None, help="Output directory [default: runs/bench/<suite>]."
)
@click.option("--dry-run", is_flag=True, help="Print the plan and its cost estimate; run nothing.")
@click.option(
    "--data-dir", type=str, default=None, help="Dataset directory [default: the suite's, 'data']."
)
@click.option(
    "--device", type=str, default=None, help="torch device: auto, cpu, cuda[:N] [default: auto]."
)
@click.option(
    "--threads",
    type=str,
    default=None,
    help="CPU threads for torch [default: torch's, one per core]. On a machine shared with other "
    "jobs, 1 can be much faster: idle-waiting threads stall when a core is taken.",
)
def run_command(
    suite: str,
    seeds: str | None,
    out: str | None,
    dry_run: bool,
    data_dir: str | None,
    device: str | None,
    threads: str | None,
) -> None:
    """Run SUITE (a name in benchmarks/suites/ or a path to a .toml): every arm x seed, reusing
    finished runs by their hash and resuming interrupted ones; writes <out>/results.json."""
    from .bench import format_plan, plan_suite, run_suite
    from .suites import load_suite

    s = load_suite(suite)
    if data_dir is not None or device is not None:
        data = (
            s.run.data if data_dir is None else dataclasses.replace(s.run.data, data_dir=data_dir)
        )
        train = s.run.train if device is None else dataclasses.replace(s.run.train, device=device)
        s = dataclasses.replace(s, run=dataclasses.replace(s.run, data=data, train=train))
    chosen = s.seeds_for(_count(seeds, "seeds"))
    n_threads = _count(threads, "threads")
    if dry_run:
        click.echo(format_plan(s, plan_suite(s, chosen)))
        return
    out_dir = Path(out) if out is not None else Path("runs") / "bench" / s.name
    if n_threads is not None:
        import torch

        torch.set_num_threads(n_threads)
    if s.device == "gpu":
        import torch

        if not torch.cuda.is_available():
            click.echo(
                f"warning: suite {s.name} is GPU-sized and no GPU is visible; see "
                f"'boosting-tickets bench run {suite} --dry-run' for its cost",
                err=True,
            )
    click.echo(f"suite {s.name}: {len(s.arms)} arms x {len(chosen)} seeds -> {out_dir}")
    report = run_suite(s, out=out_dir, seeds=chosen, log=console_log)
    _print_report(report)
    if report.failures:
        click.echo(
            f"error: {len(report.failures)} run(s) failed (listed above and under 'failed' in "
            f"{report.results_path}); the other runs' results were written",
            err=True,
        )
        sys.exit(1)


def _print_report(report) -> None:  # noqa: ANN001 - bench.BenchReport, imported lazily
    from .reporting import fmt_cell, markdown_table

    rows = []
    for r in report.rows:
        conv = r.get("convergence") or {}
        rows.append(
            [
                r["arm"],
                r["seed"],
                r["status"],
                fmt_cell(r["clean_acc"], pct=True),
                fmt_cell(r["pgd_acc"], pct=True),
                fmt_cell(conv.get("epochs_to_target")),
                fmt_cell(conv.get("total_seconds_to_target"), digits=0),
                fmt_cell(r["train_seconds"], digits=0),
            ]
        )
    if rows:
        click.echo(
            markdown_table(
                [
                    "arm",
                    "seed",
                    "status",
                    "best clean %",
                    "best PGD %",
                    "epochs to target",
                    "total s to target",
                    "train s",
                ],
                rows,
            )
        )
    for f in report.failures:
        click.echo(f"failed: {f.planned.arm.name} seed {f.planned.seed} ({f.stage}): {f.error}")
    click.echo(f"results: {report.results_path} (wall time {report.wall_seconds:.0f} s)")


@bench.command("list")
def list_command() -> None:
    """List the suites in benchmarks/suites/ with their arms, seeds and intended device."""
    from .bench import list_suites
    from .reporting import markdown_table
    from .suites import SUITES_DIR

    entries = list_suites()
    if not entries:
        raise UserError(f"no suite files in {SUITES_DIR}")
    rows = [
        [e["name"], "invalid", "–", "–", "–", e["error"]]
        if "error" in e
        else [e["name"], e["device"], e["arms"], e["seeds"], e["runs"], e["description"]]
        for e in entries
    ]
    click.echo(markdown_table(["suite", "device", "arms", "seeds", "runs", "description"], rows))


@click.command("tables")
@click.argument("results_dir", type=str, default="runs/bench", required=False)
@click.option("--out", type=str, default="results", show_default=True, help="Output directory.")
@click.option(
    "--mix-protocols",
    is_flag=True,
    help="Tabulate results measured under different protocols together (adds a protocol column).",
)
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures (tables and README only).")
def tables(results_dir: str, out: str, mix_protocols: bool, no_figures: bool) -> None:
    """Regenerate Markdown/CSV/LaTeX tables, figures and README.md under --out from the raw
    results JSON files found (recursively) in RESULTS_DIR [default: runs/bench]."""
    from .reporting import markdown_table, regenerate

    report = regenerate(results_dir, out, mix_protocols=mix_protocols, with_figures=not no_figures)
    click.echo(report.summary.caption)
    click.echo(markdown_table(report.summary.headers, report.summary.rows))
    if report.paired.rows:
        click.echo("")
        click.echo(report.paired.caption)
        click.echo(markdown_table(report.paired.headers, report.paired.rows))
    for line in report.findings:
        click.echo(f"- {line.replace('**', '')}")
    click.echo(f"wrote {len(report.files)} files under {out}/ (index: {Path(out) / 'README.md'})")
