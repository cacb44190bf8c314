"""The ``boosting-tickets`` command line.

Every command answers bad input with one line ``error: ...`` on stderr and exit status 2 (never a
traceback); set ``BOOSTING_TICKETS_DEBUG=1`` to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import build_config, click_options
from .errors import UserError
from .hparams import RunConfig
from .reporting import console_log


def _echo_err(msg: str) -> None:
    click.echo(f"error: {' '.join(msg.split())}", err=True)


# click >= 8.2 raises this for a group called without a command; older clicks print help themselves.
_NO_ARGS_IS_HELP = getattr(
    click.exceptions, "NoArgsIsHelpError", getattr(click.exceptions, "NoArgsIsHelp", ())
)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the click group, map every failure to one line + exit code."""
    try:
        rv = cli.main(args=argv, prog_name="boosting-tickets", standalone_mode=False)
    except UserError as exc:
        _echo_err(str(exc))
        sys.exit(2)
    except _NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(2)
    except click.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _echo_err(exc.format_message() + hint)
        sys.exit(2)
    except click.ClickException as exc:
        _echo_err(exc.format_message())
        sys.exit(exc.exit_code or 1)
    except click.exceptions.Abort:
        _echo_err("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        _echo_err("interrupted; rerun the same command to resume")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if os.environ.get("BOOSTING_TICKETS_DEBUG"):
            raise
        _echo_err(
            f"internal error ({type(exc).__name__}: {exc}); rerun with BOOSTING_TICKETS_DEBUG=1"
        )
        sys.exit(1)
    if isinstance(rv, int) and rv:
        sys.exit(rv)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="boosting-tickets")
def cli() -> None:
    """Boosting tickets: find sparse subnetworks that make PGD adversarial training faster,
    benchmark them against dense baselines and RobustBench models, and tabulate the results."""


def _check_creatable(path: Path) -> None:
    """Refuse an --out that can never be created (a parent is a file) before the work, not after."""
    ancestor = next((q for q in path.absolute().parents if q.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise UserError(f"cannot write {path}: {ancestor} is a file, not a directory")


def _check_new_file(path: Path, overwrite: bool) -> None:
    _check_creatable(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it or choose another --out")
    if path.exists() and path.is_dir():
        raise UserError(f"{path} is a directory; --out must name a file")


@cli.command()
@click.option("--config", "config_path", type=str, default=None, help="TOML file of settings.")
@click.option(
    "--out", type=str, default="runs", show_default=True, help="Directory holding run directories."
)
@click.option(
    "--ticket", type=str, default=None, help="Retrain this ticket directory (find-ticket)."
)
@click.option(
    "--control",
    type=str,
    default=None,
    help="With --ticket: reinit (same mask, fresh init), random-mask (mask shuffled within each "
    "layer) or random-mask-global (shuffled across layers).",
)
@click_options(RunConfig)
def train(
    config_path: str | None, out: str, ticket: str | None, control: str | None, **kw: Any
) -> None:
    """Train a model (natural, FGSM, FGSM-RS, PGD or TRADES), resumably, in a hashed run directory."""
    from .training import run_dir_for
    from .training import train as run_train

    cfg = build_config(RunConfig, config_path=config_path, cli_values=kw)
    _check_creatable(Path(out) / "run")
    if control is not None and ticket is None:
        raise UserError("--control needs --ticket DIR (a control is a branch of a ticket)")
    if ticket is not None:
        from .tickets import retrain_ticket

        result = retrain_ticket(cfg, ticket, out=out, control=control, log=console_log)
    else:
        run_dir = run_dir_for(cfg, out)
        click.echo(f"run directory: {run_dir}")
        result = run_train(cfg, run_dir, log=console_log)
    _print_run_summary(result)


def _print_run_summary(result: Any) -> None:
    from .reporting import fmt_cell, markdown_table

    click.echo(f"status: {result.status}; run directory: {result.run_dir}")
    if result.test:
        rows = []
        for name in ("best", "final"):
            r = result.test.get(name)
            if r:
                rows.append(
                    [
                        name,
                        r.get("epoch") or len(result.metrics),
                        fmt_cell(r["clean_acc"], pct=True),
                        fmt_cell(r["fgsm_acc"], pct=True),
                        fmt_cell(r["pgd_acc"], pct=True),
                        r["n"],
                    ]
                )
        proto = result.test["best"]["protocol"]
        click.echo(
            f"test set, eps {proto['eps']:.4g}, PGD-{proto['pgd_steps']} step "
            f"{proto['step_size']:.4g}, BN {proto['bn_mode']}:"
        )
        click.echo(
            markdown_table(
                ["model", "epoch", "clean %", "FGSM %", f"PGD-{proto['pgd_steps']} %", "n"], rows
            )
        )


@cli.command()
@click.argument("checkpoint", type=str)
@click.option("--data-dir", type=str, default="data", show_default=True)
@click.option("--dataset", type=str, default=None, help="Dataset (default: the checkpoint's).")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--n-examples", type=str, default=None, help="Evaluate the first N examples.")
@click.option("--eps", type=str, default=None, help="L∞ budget (e.g. 8/255); default: dataset's.")
@click.option("--steps", type=str, default="20", show_default=True, help="PGD steps.")
@click.option("--step-size", type=str, default=None, help="PGD step (default eps/4).")
@click.option("--restarts", type=str, default="1", show_default=True)
@click.option("--random-start/--no-random-start", default=True, show_default=True)
@click.option("--bn-mode", type=str, default="eval", show_default=True)
@click.option("--seed", type=str, default="0", show_default=True)
@click.option("--autoattack", is_flag=True, help="Also run AutoAttack (standard, pyautoattack).")
@click.option("--batch-size", type=str, default="500", show_default=True)
@click.option("--device", type=str, default="auto", show_default=True)
@click.option("--out", type=str, default=None, help="JSON file for the result (default: print).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def evaluate(
    checkpoint: str,
    data_dir: str,
    dataset: str | None,
    split: str,
    n_examples: str | None,
    eps: str | None,
    steps: str,
    step_size: str | None,
    restarts: str,
    random_start: bool,
    bn_mode: str,
    seed: str,
    autoattack: bool,
    batch_size: str,
    device: str,
    out: str | None,
    overwrite: bool,
) -> None:
    """Clean, FGSM and PGD-k accuracy (optionally AutoAttack) of CHECKPOINT (a .pt or a run dir)."""
    from .checkpoints import load_model
    from .config import _parse_float
    from .data import load_splits
    from .environment import environment_info, resolve_device
    from .evaluation import EvalProtocol
    from .evaluation import evaluate as run_eval
    from .hparams import DEFAULT_EPS

    def num(text: str | None, name: str, kind: type = int) -> Any:
        if text is None:
            return None
        try:
            return _parse_float(text) if kind is float else int(text)
        except ValueError:
            raise UserError(f"--{name} expects {kind.__name__}, got '{text}'") from None

    out_path = Path(out) if out else None
    if out_path is not None:
        _check_new_file(out_path, overwrite)
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "best.pt"
    dev = resolve_device(device)
    model, ckpt = load_model(path, dev)
    name = dataset or ckpt["arch"].get("dataset")
    if name is None:
        raise UserError(f"{path} does not name its dataset; pass --dataset")
    eps_v = num(eps, "eps", float)
    if eps_v is None:
        if name not in DEFAULT_EPS:
            raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(DEFAULT_EPS)}")
        eps_v = DEFAULT_EPS[name]
    protocol = EvalProtocol(
        eps=eps_v,
        pgd_steps=num(steps, "steps"),
        step_size=num(step_size, "step-size", float),
        restarts=num(restarts, "restarts"),
        random_start=random_start,
        bn_mode=bn_mode,
        seed=num(seed, "seed"),
        autoattack=autoattack,
    )
    bs = num(batch_size, "batch-size")
    if bs < 1:
        raise UserError(f"--batch-size must be >= 1, got {bs}")
    n = num(n_examples, "n-examples")
    if n is not None and n < 1:
        raise UserError(f"--n-examples must be >= 1, got {n}")
    val_size, data_seed = 0, 0
    if split == "val":
        # The held-out split is defined by the run that trained the model: reproduce it exactly.
        hp = path.parent / "hparams.json"
        if not hp.exists():
            raise UserError(
                f"--split val needs a checkpoint inside a run directory ({hp} not found), "
                "because the run's settings define its held-out split; use --split test"
            )
        from .storage import read_json

        data_cfg = read_json(hp, what="hparams file").get("config", {}).get("data", {})
        val_size, data_seed = int(data_cfg.get("val_size", 0)), int(data_cfg.get("data_seed", 0))
        if val_size == 0:
            raise UserError(
                f"the run in {path.parent} held out no validation data; use --split test"
            )
    splits = load_splits(name, data_dir, val_size=val_size, data_seed=data_seed)
    data = splits.test if split == "test" else splits.val
    if splits.spec.channels != ckpt["arch"]["in_channels"]:
        raise UserError(
            f"{path} expects {ckpt['arch']['in_channels']}-channel inputs but {name} has "
            f"{splits.spec.channels}; pass the right --dataset"
        )
    images, labels = data.images, data.labels
    if n is not None:
        images, labels = images[:n], labels[:n]
    result = run_eval(
        model,
        images,
        labels,
        protocol,
        batch_size=bs,
        num_classes=splits.spec.num_classes,
        per_class=True,
        device=dev,
        progress=True,
    )
    result.update(
        checkpoint=str(path),
        dataset=name,
        split=split,
        arch=ckpt["arch"],
        environment=environment_info(dev),
    )
    from .reporting import fmt_cell, markdown_table

    cols = ["clean %", "FGSM %", f"PGD-{protocol.pgd_steps} %"]
    vals = [result["clean_acc"], result["fgsm_acc"], result["pgd_acc"]]
    if autoattack:
        cols.append("AutoAttack %")
        vals.append(result["autoattack_acc"])
    click.echo(
        markdown_table(["n", *cols], [[result["n"], *(fmt_cell(v, pct=True) for v in vals)]])
    )
    for flag in result["flags"]:
        click.echo(f"warning: {flag}", err=True)
    if out_path is not None:
        from .storage import atomic_write_json

        atomic_write_json(out_path, result, checksum=True)
        click.echo(f"wrote {out_path}")
    else:
        click.echo(json.dumps({k: result[k] for k in ("protocol", "flags")}, indent=2))


@cli.command()
@click.option("--data-dir", type=str, default="data", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(data_dir: str, as_json: bool) -> None:
    """Report versions, device, datasets found and whether robustbench's files are intact."""
    from .data import describe_datasets
    from .environment import environment_info, package_integrity, resolve_device

    report = {
        "environment": environment_info(resolve_device("auto")),
        "datasets": describe_datasets(data_dir),
        "robustbench_integrity": package_integrity("robustbench"),
    }
    problems = []
    integ = report["robustbench_integrity"]
    if integ["installed"] and (integ["modified"] or integ["missing"]):
        problems.append(
            f"robustbench files changed by another package: "
            f"{len(integ['modified'])} modified, {len(integ['missing'])} missing; fix: {integ['fix']}"
        )
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        env = report["environment"]
        click.echo(
            f"boosting-tickets {__version__}, python {env['python']}, git {env['git_commit']}"
        )
        for name, ver in env["packages"].items():
            click.echo(f"  {name:18s} {ver or 'not installed'}")
        click.echo(
            f"device: {env['device']} ({env.get('gpu', env['processor'])}), "
            f"{env['torch_threads']} torch threads"
        )
        click.echo("datasets:")
        for d in report["datasets"]:
            state = "found" if d.get("found") else "missing"
            click.echo(f"  {d['name']:14s} {state:8s} {d.get('location') or d.get('fix') or ''}")
        rb = (
            "not installed" if not integ["installed"] else ("intact" if not problems else "DAMAGED")
        )
        click.echo(f"robustbench {integ.get('version') or ''}: {rb}")
    for p in problems:
        click.echo(f"problem: {p}", err=True)
    if problems:
        sys.exit(1)


from .cli_tickets import find_ticket_command  # noqa: E402  (bottom import avoids a cycle)

cli.add_command(find_ticket_command)


from .cli_compare import compare  # noqa: E402 - registered after cli is defined

cli.add_command(compare)


from .cli_bench import bench, tables  # noqa: E402 - registered after cli is defined

cli.add_command(bench)
cli.add_command(tables)
