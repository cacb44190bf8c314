"""``boosting-tickets evaluate``: clean / FGSM / PGD-k (and more) accuracy of a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..adversarial.registry import attack_names
from ..adversarial.spec import BN_MODES, THREATS
from ..data.registry import dataset_names
from .common import check_new_file, set_threads
from .options import (
    Fraction,
    Int,
    NameList,
    RegistryChoice,
    dir_option,
    json_option,
    threads_option,
)


@click.command("evaluate", short_help="Clean, FGSM and PGD-k accuracy of a checkpoint or run.")
@click.argument("checkpoint", type=click.Path())
@dir_option("data-dir", "Directory holding the dataset files.", default="data")
@click.option(
    "--dataset",
    type=RegistryChoice(dataset_names, "dataset", "dataset"),
    default=None,
    help="Dataset [default: the checkpoint's].",
)
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="test, or val: the held-out split of the run the checkpoint belongs to.")  # fmt: skip
@click.option("--n-examples", type=Int(1), default=None, help="Evaluate the first N.")
@click.option("--threat", type=RegistryChoice(lambda: THREATS, "threat", "threat"), default=None,
              help="Threat model: Linf (PGD + FGSM) or L2 (PGD-L2 + FGM, AutoAttack L2) "
              "[default: the run's, else Linf].")  # fmt: skip
@click.option("--eps", type=Fraction(0.0, float("inf")), default=None,
              help="Budget in the threat model's norm, e.g. 8/255 (L∞) or 0.5 (L2) [default: the "
              "run's, else the dataset's].")  # fmt: skip
@click.option("--steps", type=Int(1), default=None,
              help="PGD steps [default: the run's, else 20].")  # fmt: skip
@click.option("--step-size", type=Fraction(0.0, float("inf")), default=None,
              help="PGD step [default: the run's, else eps/4].")  # fmt: skip
@click.option("--restarts", type=Int(1), default=None,
              help="PGD restarts [default: the run's, else 1].")  # fmt: skip
@click.option("--random-start/--no-random-start", default=None,
              help="Start PGD at a uniform random point of the eps-ball [default: the run's, "
              "else yes].")  # fmt: skip
@click.option("--bn-mode", type=click.Choice(BN_MODES), default=None,
              help="BatchNorm mode while attacking [default: the run's, else eval].")  # fmt: skip
@click.option("--seed", type=Int(0, 2**63 - 1), default=None,
              help="Seed of the attacks' random starts [default: the run's, else 0].")  # fmt: skip
@click.option(
    "--attack",
    "attacks",
    type=NameList(attack_names, "attack", "attack"),
    default=(),
    help="Further registered attacks to measure, comma-separated (multi-step ones with --steps).",
)
@click.option("--channels-last/--no-channels-last", default=None,
              help="channels_last memory format [default: the run's recorded choice, else the "
              "measured one for the model on this device].")  # fmt: skip
@click.option("--fold-bn/--no-fold-bn", default=None,
              help="fold eval-mode BatchNorm into the convolutions (same results within float "
              "rounding) [default: the run's recorded choice, else the measured one].")  # fmt: skip
@click.option("--autoattack", is_flag=True, help="Also run AutoAttack (standard, pyautoattack).")
@click.option("--batch-size", type=Int(1), default=500, show_default=True,
              help="Evaluation batch size.")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(), default=None,
              help="JSON file for the result [default: print the protocol].")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@threads_option
@json_option
def evaluate_command(
    checkpoint: str,
    out: str | None,
    overwrite: bool,
    threads: int | None,
    as_json: bool,
    **kw: object,
) -> None:
    """Clean, FGSM and PGD-k accuracy (optionally further registered attacks and AutoAttack) of
    CHECKPOINT: a .pt file, or a run directory (its best.pt), on its dataset's test set or on the
    run's own held-out split, with the full protocol recorded. For a checkpoint of a run the
    defaults are the run's own data split (test subset, data seed) and evaluation protocol, so
    that the result equals the run's test_eval.json; flags override them."""
    from ..api import evaluate_checkpoint
    from ..report.formats import fmt_cell, markdown_table

    out_path = Path(out) if out else None
    if out_path is not None:
        check_new_file(out_path, overwrite)
    set_threads(threads)
    result = evaluate_checkpoint(checkpoint, progress=not as_json, **kw)  # type: ignore[arg-type]
    for flag in result["flags"]:
        click.echo(f"warning: {flag}", err=True)
    if out_path is not None:
        from ..core.storage import atomic_write_json

        atomic_write_json(out_path, result, checksum=True)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    proto = result["protocol"]
    l2 = proto["threat_model"] == "L2"
    cols = ["clean %", "FGM %" if l2 else "FGSM %",
            f"PGD-{proto['pgd_steps']}{'-L2' if l2 else ''} %"]  # fmt: skip
    vals = [result["clean_acc"], result["fgsm_acc"], result["pgd_acc"]]
    for name, acc in (result.get("attacks") or {}).items():
        cols.append(f"{name} %")
        vals.append(acc)
    if "autoattack_acc" in result:
        cols.append("AutoAttack %")
        vals.append(result["autoattack_acc"])
    click.echo(
        markdown_table(["n", *cols], [[result["n"], *(fmt_cell(v, pct=True) for v in vals)]])
    )
    if out_path is not None:
        click.echo(f"wrote {out_path}")
    else:
        click.echo(json.dumps({k: result[k] for k in ("protocol", "flags")}, indent=2))
