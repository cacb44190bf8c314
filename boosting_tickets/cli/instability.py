"""``boosting-tickets instability``: linear mode connectivity under attack (Frankle et al. 2020)."""

from __future__ import annotations

from typing import Any

import click

from ..core.config import build_config
from ..instability.config import InstabilityConfig
from . import options as opt
from .common import console_log, set_threads


@opt.sectioned_command(
    "instability", "Instability of a run or of every run of a suite: two copies, one path."
)
@click.argument("source", type=click.Path(file_okay=False))
@opt.config_file_option
@opt.dir_option(
    "ticket", "The ticket a retraining SOURCE came from (found by itself if beside it)."
)
@opt.out_dir_option(None, "Where the copies and instability.json go [default: SOURCE/instability].")
@opt.threads_option
@opt.config_options(InstabilityConfig)
def instability_command(
    source: str,
    config_path: str | None,
    ticket: str | None,
    out: str | None,
    threads: int | None,
    **kw: Any,
) -> None:
    """From the state of SOURCE at optimizer step K (each of --steps), train a second copy to the
    end with other SGD noise (data order, augmentation, attack starts, dropout), then measure
    clean and PGD error at --alphas evenly spaced points between the two final networks, with
    BatchNorm statistics recomputed at each point. Instability = the largest error on the path
    minus the mean of the endpoints' errors; stable means below 2 pp.

    SOURCE is a finished run directory (dense train_<hash>, or a ticket's or control's
    retrain_<hash>) or a suite directory (every run its results.json lists). Rerunning measures
    only what is missing; `boosting-tickets tables` draws the figures.
    """
    from pathlib import Path

    from ..instability.analysis import run_instability

    cfg = build_config(InstabilityConfig, config_path=config_path, cli_values=kw)
    set_threads(threads)
    target = Path(out) if out is not None else Path(source) / "instability"
    path, rows = run_instability(source, cfg, target, ticket=ticket, log=console_log)
    click.echo(f"wrote {path}")
    click.echo("| arm | seed | K | instability clean | instability PGD | stable (PGD) |")
    click.echo("|---|---|---|---|---|---|")
    for r in rows:
        click.echo(
            f"| {r['arm']} | {r['seed']} | {r['rewind_step']} | {r['instability_clean']:.2%} | "
            f"{r['instability_pgd']:.2%} | {'yes' if r['stable_pgd'] else 'no'} |"
        )
