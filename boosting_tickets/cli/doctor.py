"""``boosting-tickets doctor``: versions, device, datasets, registries, plugins, robustbench."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import __version__
from .options import dir_option, json_option


def registries() -> dict[str, list[str]]:
    """Every registry's names (plugins included), by axis."""
    from ..adversarial.registry import attacks
    from ..bench.arms import arm_kinds
    from ..data.registry import datasets
    from ..models.registry import model_families
    from ..report.tables import table_registry
    from ..tickets.controls import controls
    from ..tickets.criteria import criteria
    from ..training.objectives import objectives

    regs = {
        "datasets": datasets(),
        "model families": model_families(),
        "attacks": attacks(),
        "objectives": objectives(),
        "pruning criteria": criteria(),
        "controls": controls(),
        "arm kinds": arm_kinds(),
        "tables": table_registry(),
    }
    return {axis: list(reg.names) for axis, reg in regs.items()}


def _print(report: dict[str, Any], problems: list[str]) -> None:
    env, integ = report["environment"], report["robustbench_integrity"]
    click.echo(f"boosting-tickets {__version__}, python {env['python']}, git {env['git_commit']}")
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
    click.echo(f"plugins: {', '.join(report['plugins']) or 'none'}")
    click.echo("registries:")
    for axis, names in report["registries"].items():
        click.echo(f"  {axis:18s} {', '.join(names)}")
    rb = "not installed" if not integ["installed"] else ("intact" if not problems else "DAMAGED")
    click.echo(f"robustbench {integ.get('version') or ''}: {rb}")


@click.command(
    "doctor", short_help="Versions, device, datasets, registries and robustbench's state."
)
@dir_option("data-dir", "Directory holding the dataset files.", default="data")
@json_option
def doctor_command(data_dir: str, as_json: bool) -> None:
    """Report versions, device, the datasets found, every registry's names (plugins included) and
    whether robustbench's files are intact. Exits 1 when a problem is found."""
    import os

    from ..core.environment import environment_info, package_integrity, resolve_device
    from ..core.plugins import ENV, load
    from ..data.registry import describe_datasets

    report = {
        "environment": environment_info(resolve_device("auto")),
        "datasets": describe_datasets(data_dir),
        "plugins": [m.__name__ for m in load(os.environ.get(ENV, ""))],
        "registries": registries(),
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
        _print(report, problems)
    for p in problems:
        click.echo(f"problem: {p}", err=True)
    if problems:
        sys.exit(1)
