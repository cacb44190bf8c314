"""``boosting-tickets bench run|list``: benchmark suites.

``bench run SUITE`` expands a suite (a packaged one, one in a suite directory, or a path to a .toml)
into arms x seeds, reuses finished runs, resumes interrupted ones and writes ``<out>/results.json``;
``--dry-run`` prints the plan and its cost estimate instead, without importing torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..core.errors import RunFailure, UserError
from .common import console_log, set_threads
from .options import Int, dir_option, out_dir_option, threads_option

_SUITE_DIR = click.option(
    "--suite-dir",
    "suite_dirs",
    type=click.Path(file_okay=False),
    multiple=True,
    help="Directory of your own suite files, searched before the packaged suites (repeatable; "
    "also BOOSTING_TICKETS_SUITES).",
)


@click.group(short_help="Benchmark suites: arms (dense, tickets, controls) x seeds.")
def bench() -> None:
    """Benchmark suites: arms (dense, tickets, controls) x seeds, with fair baselines."""


@bench.command("run", short_help="Run a suite (or plan it with --dry-run).")
@click.argument("suite", type=str)
@_SUITE_DIR
@click.option(
    "--seeds",
    type=Int(1),
    default=None,
    help="Run this many seeds: the suite's seed list, continued with the next integers "
    "[default: the suite's list].",
)
@out_dir_option(None, "Output directory [default: runs/bench/<suite>].")
@click.option("--dry-run", is_flag=True, help="Print the plan and its cost estimate; run nothing.")
@dir_option("data-dir", "Dataset directory [default: the suite's, 'data'].")
@click.option(
    "--device", type=str, default=None, help="torch device: auto, cpu, cuda[:N] [default: auto]."
)
@threads_option
def run_command(
    suite: str,
    suite_dirs: tuple[str, ...],
    seeds: int | None,
    out: str | None,
    dry_run: bool,
    data_dir: str | None,
    device: str | None,
    threads: int | None,
) -> None:
    """Run SUITE (a packaged suite, one in --suite-dir, or a path to a .toml): every arm x seed,
    reusing finished runs by their hash and resuming interrupted ones; writes <out>/results.json.
    With --dry-run, print the plan and its cost estimate and run nothing."""
    from ..bench.plan import format_plan, plan_suite
    from ..bench.suite_files import suite_dirs as search_dirs
    from ..bench.suites import load_suite

    s = load_suite(suite, search_dirs(suite_dirs))
    if data_dir is not None or device is not None:
        data = (
            s.run.data if data_dir is None else dataclasses.replace(s.run.data, data_dir=data_dir)
        )
        train = s.run.train if device is None else dataclasses.replace(s.run.train, device=device)
        s = dataclasses.replace(s, run=dataclasses.replace(s.run, data=data, train=train))
    chosen = s.seeds_for(seeds)
    if dry_run:
        click.echo(format_plan(s, plan_suite(s, chosen)))
        return
    out_dir = Path(out) if out is not None else Path("runs") / "bench" / s.name
    set_threads(threads)
    if s.device == "gpu":
        import torch

        if not torch.cuda.is_available():
            click.echo(
                f"warning: suite {s.name} is GPU-sized and no GPU is visible; see "
                f"'boosting-tickets bench run {suite} --dry-run' for its cost",
                err=True,
            )
    click.echo(f"suite {s.name}: {len(s.arms)} arms x {len(chosen)} seeds -> {out_dir}")
    from ..bench.runner import run_suite

    report = run_suite(s, out=out_dir, seeds=chosen, log=console_log)
    _print_report(report)
    if report.failures:
        raise RunFailure(
            f"{len(report.failures)} run(s) failed (listed above and under 'failed' in "
            f"{report.results_path}); the other runs' results were written"
        )


def _print_report(report) -> None:  # noqa: ANN001 - bench.BenchReport, imported lazily
    from ..report.formats import fmt_cell, markdown_table

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


@bench.command("list", short_help="List the suites with their arms, seeds and device.")
@_SUITE_DIR
def list_command(suite_dirs: tuple[str, ...]) -> None:
    """List the suites found (your --suite-dir directories, BOOSTING_TICKETS_SUITES, then the
    packaged suites) with their arms, seeds, runs and intended device."""
    from ..bench.runner import list_suites
    from ..bench.suite_files import suite_dirs as search_dirs
    from ..report.formats import markdown_table

    dirs = search_dirs(suite_dirs)
    entries = list_suites(dirs)
    if not entries:
        raise UserError(f"no suite files in {', '.join(map(str, dirs))}")
    rows = [
        [e["name"], "invalid", "–", "–", "–", e["error"]]
        if "error" in e
        else [e["name"], e["device"], e["arms"], e["seeds"], e["runs"], e["description"]]
        for e in entries
    ]
    click.echo(markdown_table(["suite", "device", "arms", "seeds", "runs", "description"], rows))
