"""``boosting-tickets compare``: RobustBench models next to ours, under one evaluation harness.

* ``compare robustbench --models NAME[,NAME...] --model-dir DIR`` measures zoo models with the
  tickets' protocol and writes a results file that ``boosting-tickets tables`` reads;
* ``compare list`` prints the published leaderboard numbers shipped with the package;
* ``compare export CHECKPOINT --model-dir DIR --name NAME`` writes one of our models in the format
  ``robustbench.load_model`` reads.

The work lives in :mod:`boosting_tickets.zoo`, imported inside the commands so ``--help`` is fast.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..core.config import build_config
from ..core.errors import UserError
from ..zoo.config import DEFAULT_RESULTS, ZOO_DATASETS, ZOO_THREATS, CompareConfig
from . import options as opt
from .common import console_log, set_threads


@click.group(short_help="RobustBench models under our protocol; export to RobustBench format.")
def compare() -> None:
    """Compare with RobustBench: measure zoo models under the tickets' protocol, list the
    published leaderboard numbers, export our models in RobustBench format."""


@compare.command(
    "robustbench", cls=opt.SectionedCommand, short_help="Measure RobustBench models like tickets."
)
@opt.config_file_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=DEFAULT_RESULTS,
    show_default=True,
    help="Results JSON (rows of earlier comparisons under the same settings are kept).",
)
@opt.threads_option
@opt.json_option
@opt.config_options(CompareConfig)
def robustbench_cmd(
    config_path: str | None, out: str, threads: int | None, as_json: bool, **kw: Any
) -> None:
    """Measure RobustBench zoo models (clean, FGSM, PGD-20, optionally AutoAttack) exactly as
    tickets are measured, next to their published numbers."""
    from ..zoo.compare import comparison_table, run_comparison

    cfg = build_config(CompareConfig, config_path=config_path, cli_values=kw)
    set_threads(threads)
    result = run_comparison(cfg, out, log=None if as_json else console_log)
    if as_json:
        click.echo(json.dumps({"protocol": result.protocol, "rows": result.rows}, indent=2))
        return
    proto = result.protocol
    l2 = proto["threat_model"] == "L2"
    click.echo(
        f"protocol: {proto['threat_model']} eps {proto['eps']:.4g}, PGD-{proto['pgd_steps']}"
        f"{'-L2' if l2 else ''} step {proto['step_size']:.4g} random start "
        f"{proto['random_start']}, {'FGM' if l2 else 'FGSM'}, BN {proto['bn_mode']}, AutoAttack "
        f"{proto['autoattack'] or 'off'}; measured on {proto['data']['description']}"
    )
    click.echo(comparison_table(result.rows, proto["pgd_steps"]))
    for row in result.rows:
        for flag in row.get("flags") or []:
            click.echo(f"warning: {row['label']}: {flag}", err=True)
    if result.written:
        click.echo(f"wrote {result.path}")
    else:
        click.echo(f"{result.path} is up to date")


@compare.command("list", short_help="Published RobustBench numbers shipped with the package.")
@click.option("--threat", type=opt.RegistryChoice(lambda: ZOO_THREATS, "threat", "threat"),
              default="Linf", show_default=True,
              help="Leaderboard: Linf (eps 8/255) or L2 (eps 0.5).")  # fmt: skip
@opt.json_option
def list_cmd(threat: str, as_json: bool) -> None:
    """Published RobustBench CIFAR-10 numbers (package data): the L-inf leaderboard's WideResNet
    and ResNet entries, or with --threat L2 every entry of the L2 leaderboard."""
    from ..zoo.reference import load_reference, reference_table

    if as_json:
        click.echo(json.dumps(load_reference(threat), indent=2, ensure_ascii=False))
    else:
        click.echo(reference_table(threat))


@compare.command("export", short_help="Write one of our models in RobustBench format.")
@click.argument("checkpoint", type=click.Path())
@opt.dir_option("model-dir", "RobustBench model directory (load_model's).", required=True)
@click.option(
    "--name",
    type=str,
    required=True,
    help="File name: a zoo name with our architecture (e.g. Wong2020Fast for preact-resnet18) "
    "to load with robustbench.load_model, or a new name for robustbench's plain architecture.",
)
@click.option(
    "--dataset",
    type=click.Choice(tuple(ZOO_DATASETS)),
    default="cifar10",
    show_default=True,
    help="RobustBench dataset the file is filed under.",
)
@click.option("--threat", type=click.Choice(ZOO_THREATS), default="Linf", show_default=True,
              help="RobustBench threat model the file is filed under.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing exported file.")
@opt.threads_option
def export_cmd(
    checkpoint: str,
    model_dir: str,
    name: str,
    dataset: str,
    threat: str,
    overwrite: bool,
    threads: int | None,
) -> None:
    """Write CHECKPOINT (a dense model or a retrained ticket; a run directory means its best.pt)
    as MODEL_DIR/<dataset>/<threat>/<name>.pt in RobustBench's format, checked logit for logit,
    with RobustBench's model-info entry in MODEL_DIR/model_info/<dataset>/<threat>/<name>.json. A
    ticket directory (untrained) is refused with the command that retrains it."""
    from ..zoo.export import export_checkpoint

    if not name:
        raise UserError("--name must not be empty")
    set_threads(threads)
    res = export_checkpoint(
        checkpoint, model_dir, name, dataset=dataset, threat=threat, overwrite=overwrite
    )
    click.echo(f"wrote {res.path}")
    click.echo(f"target: {res.target}")
    click.echo(
        f"parameters: {res.params} ({res.nonzero_params} nonzero); logits match robustbench's "
        f"architecture to {res.max_logit_diff:.2g} on a probe batch (largest logit "
        f"{res.max_logit:.3g})"
    )
    if res.zoo_name:
        click.echo(
            f"load it with: robustbench.load_model('{name}', model_dir='{model_dir}', "
            f"dataset='{dataset}', threat_model='{threat}')"
        )
    for note in res.notes:
        click.echo(f"note: {note}")
    if res.model_info is not None:
        click.echo(
            f"model info: {res.model_info} (RobustBench's model_info entry; fill in the paper "
            f"fields, and run robustbench.eval.benchmark(model, model_name='{name}', "
            f"dataset='{dataset}', threat_model='{threat}', to_disk=True) in {model_dir} to add "
            "clean_acc and autoattack_acc)"
        )
