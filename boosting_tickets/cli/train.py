"""``boosting-tickets train``: one training run (or a ticket's retraining) in a hashed directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..core.config import build_config
from ..core.errors import UserError
from ..tickets.controls import control_names
from ..tickets.transfer import HEADS
from ..training.hparams import RunConfig
from . import options as opt
from .common import check_creatable, console_log, set_threads


@opt.sectioned_command(
    "train", "Train a model (natural, FGSM, PGD, TRADES...) or retrain a ticket, resumably."
)
@opt.config_file_option
@opt.out_dir_option("runs", "Directory holding run directories (train_<hash>, retrain_<hash>).")
@opt.dir_option("ticket", "Retrain this ticket directory (made by find-ticket).")
@click.option(
    "--control",
    type=opt.RegistryChoice(control_names, "control", "control"),
    default=None,
    help="With --ticket: a control instead of the ticket, e.g. reinit (same mask, fresh init), "
    "reinit-rescaled (that init at the ticket's per-layer norm), shuffled-ticket (the ticket's "
    "values permuted within layers), random-mask (mask shuffled within each layer) or "
    "random-mask-global (across layers).",
)
@click.option(
    "--transfer-head",
    type=click.Choice(HEADS),
    default=None,
    help="With --ticket on another dataset with another class count: the new output layer is "
    "pruned by magnitude at the ticket's output-layer sparsity (reprune, the default) or kept "
    "dense (dense). Recorded in hparams.json.",
)
@opt.threads_option
@opt.nproc_option
@opt.config_options(RunConfig)
def train_command(
    config_path: str | None,
    out: str,
    ticket: str | None,
    control: str | None,
    transfer_head: str | None,
    threads: int | None,
    nproc: int | None,
    **kw: Any,
) -> None:
    """Train a model with the objective of --objective (natural, FGSM, FGSM-RS, PGD or TRADES by
    default), resumably, in a directory named by the hash of the non-default settings; with
    --ticket, retrain a ticket or one of its controls, on the ticket's architecture and data
    settings unless a config file or flag says otherwise; --dataset B retrains a ticket found on A
    on B (a transfer: same architecture and input shape). Rerunning the same command resumes an
    interrupted run and does no work for a finished one."""
    from ..training.run import run_dir_for, train
    from .torchrun import joined, relaunch

    inherited = None
    if ticket is not None:
        from ..tickets.ticket import inherited_settings

        inherited = inherited_settings(ticket)
    cfg = build_config(RunConfig, config_path=config_path, cli_values=kw, inherited=inherited)
    check_creatable(Path(out) / "run")
    if control is not None and ticket is None:
        raise UserError("--control needs --ticket DIR (a control is a branch of a ticket)")
    if transfer_head is not None and ticket is None:
        raise UserError("--transfer-head needs --ticket DIR (it is how a ticket's mask transfers)")
    if nproc is not None and nproc > 1:
        relaunch(nproc, cfg.train.device, [cfg.data.batch_size])
    set_threads(threads)
    with joined(cfg.train.device) as dist:
        if ticket is not None:
            from ..tickets.retrain import retrain_ticket

            if dist.primary and inherited:
                _say_inherited(cfg, inherited)
            result = retrain_ticket(cfg, ticket, out=out, control=control, log=console_log,
                                    transfer_head=transfer_head or HEADS[0])  # fmt: skip
        else:
            run_dir = run_dir_for(cfg, out)
            if dist.primary:
                click.echo(f"run directory: {run_dir}")
            result = train(cfg, run_dir, log=console_log)
        if dist.primary:
            print_run_summary(result)


def _say_inherited(cfg: RunConfig, inherited: dict[str, Any]) -> None:
    """Name the non-default settings a ticket's retraining took from its finding run."""
    from ..core.config import non_default

    taken = [
        f"{key.split('.', 1)[1]} {value}"
        for key, value in non_default(cfg).items()
        if key.split(".", 1)[0] in inherited
        and inherited[key.split(".", 1)[0]].get(key.split(".", 1)[1]) == value
    ]
    if taken:
        click.echo(f"from the ticket: {', '.join(taken)} (a flag or --config overrides these)")


def print_run_summary(result: Any) -> None:
    """Status, directory and the best/final test accuracies of a run."""
    from ..report.formats import fmt_cell, markdown_table

    click.echo(f"status: {result.status}; run directory: {result.run_dir}")
    if not result.test:
        return
    rows = [
        [
            name,
            r.get("epoch") or len(result.metrics),
            fmt_cell(r["clean_acc"], pct=True),
            fmt_cell(r["fgsm_acc"], pct=True),
            fmt_cell(r["pgd_acc"], pct=True),
            r["n"],
        ]
        for name in ("best", "final")
        if (r := result.test.get(name))
    ]
    proto = result.test["best"]["protocol"]
    norm = proto.get("threat_model", "Linf")
    pgd = f"PGD-{proto['pgd_steps']}" + ("-L2" if norm == "L2" else "")
    click.echo(
        f"test set, {norm} eps {proto['eps']:.4g}, {pgd} step {proto['step_size']:.4g}, "
        f"BN {proto['bn_mode']}:"
    )
    headers = ["model", "epoch", "clean %", "FGM %" if norm == "L2" else "FGSM %", f"{pgd} %", "n"]
    click.echo(markdown_table(headers, rows))
