"""``boosting-tickets find-ticket``: train from θ0, prune, rewind; writes a ticket directory.

Retraining is ``boosting-tickets train --ticket DIR [--control NAME]``.
"""

from __future__ import annotations

from typing import Any

import click

from ..core.config import build_config
from ..tickets.config import FindConfig
from . import options as opt
from .common import console_log, set_threads


@opt.sectioned_command(
    "find-ticket", "Find a boosting ticket: train from θ0, prune, rewind the survivors."
)
@opt.config_file_option
@opt.out_dir_option("runs", "Directory holding ticket directories (ticket_<hash>).")
@opt.threads_option
@opt.nproc_option
@opt.config_options(FindConfig)
def find_ticket_command(
    config_path: str | None, out: str, threads: int | None, nproc: int | None, **kw: Any
) -> None:
    """Find a boosting ticket (Li et al. 2020): train from θ0 (natural, lr 0.01, no warmup by
    default), prune 80% of the conv/linear weights globally (by the pruning criterion, magnitude by
    default), rewind the survivors to θ0.

    Idempotent: rerunning with the same settings does nothing; an interrupted search resumes.
    Retrain the result with `boosting-tickets train --ticket DIR`.
    """
    from ..tickets.finding import find_ticket
    from .torchrun import joined, relaunch

    cfg = build_config(FindConfig, config_path=config_path, cli_values=kw)
    if nproc is not None and nproc > 1:
        relaunch(nproc, cfg.train.device, [cfg.data.batch_size])
    set_threads(threads)
    with joined(cfg.train.device) as dist:
        ticket = find_ticket(cfg, out, log=console_log)
        if dist.primary:
            _print_ticket(ticket)


def _print_ticket(ticket: Any) -> None:
    """The levels of a found ticket, its sparsity and cost, and how to retrain it."""
    from ..report.formats import fmt_cell, markdown_table
    from ..tickets.ticket import retrain_command

    meta = ticket.meta
    rows = [
        [
            lv["level"],
            fmt_cell(lv["sparsity"], pct=True),
            lv.get("status", "–"),
            lv.get("epochs", "–"),
            fmt_cell(lv.get("last", {}).get("val_clean"), pct=True),
            fmt_cell(lv.get("last", {}).get("val_pgd"), pct=True),
            fmt_cell(lv.get("train_seconds"), digits=1),
        ]
        for lv in meta["levels"]
    ]
    click.echo(
        markdown_table(
            ["level", "sparsity %", "status", "epochs", "held-out clean %", "PGD %", "train s"],
            rows,
        )
    )
    click.echo(
        f"sparsity {meta['sparsity']:.2%} ({meta['objective']} finding run at lr "
        f"{meta['find_lr']:g}, rewind {meta['rewind']}); finding took "
        f"{meta['find_train_seconds']:.1f} s of training, {meta['find_wall_seconds']:.1f} s "
        "with held-out evaluation and pruning"
    )
    if meta.get("catastrophic_overfitting"):
        click.echo(
            "note: catastrophic overfitting was flagged during finding; the ticket is still usable"
        )
    click.echo(f"ticket: {ticket.dir}")
    click.echo(f"retrain: {retrain_command(ticket.dir, meta)}")
