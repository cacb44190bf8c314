"""The CLI starts without torch: --help, every command's --help, shell completion and a suite's
dry-run import none of the heavy packages (checked in sys.modules, deterministic; the measured
start-up time is benchmarks/cli_startup.py's job, not a test's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "torchvision", "numpy", "scipy", "matplotlib", "tqdm", "robustbench",
         "pyautoattack", "torchattacks", "tensorboard", "timm")  # fmt: skip
COMMANDS = (
    [],
    ["--version"],
    ["train"],
    ["evaluate"],
    ["find-ticket"],
    ["bench"],
    ["bench", "run"],
    ["bench", "list"],
    ["tables"],
    ["compare"],
    ["compare", "robustbench"],
    ["compare", "list"],
    ["compare", "export"],
    ["doctor"],
)
PROBE = """
import contextlib, io, json, os, sys
from boosting_tickets.cli import main

def run(argv, env=None):
    os.environ.update(env or {})
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
    for k in env or {}:
        del os.environ[k]
    return out.getvalue()

report = {"help": {}, "heavy": {}}
for argv in json.loads(sys.argv[1]):
    report["help"][" ".join(argv)] = run(argv + (["--help"] if argv[:1] != ["--version"] else []))
report["heavy"]["help"] = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
report["plan"] = run(["bench", "run", "quick", "--dry-run"])
report["heavy"]["plan"] = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
print(json.dumps(report))
"""


# Completion writes to the real stdout's buffer, so it runs on its own; the modules go to stderr.
COMPLETE = """
import json, sys
from boosting_tickets.cli import main
try:
    main([])
finally:
    print(json.dumps(sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)), file=sys.stderr)
"""


def _run(code: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BOOSTING_TICKETS")}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path,
        env={**base, **env}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def _probe(tmp_path: Path) -> dict:
    report = json.loads(_run(PROBE, tmp_path, json.dumps(COMMANDS), json.dumps(HEAVY)).stdout)
    words = {"COMP_WORDS": "boosting-tickets train --objective ", "COMP_CWORD": "3"}
    done = _run(COMPLETE, tmp_path, json.dumps(HEAVY), _BOOSTING_TICKETS_COMPLETE="bash_complete",
                **words)  # fmt: skip
    report["complete"], report["heavy"]["complete"] = done.stdout, json.loads(done.stderr)
    return report


def test_help_completion_and_dry_run_import_no_heavy_package(tmp_path: Path) -> None:
    report = _probe(tmp_path)
    assert report["heavy"] == {"help": [], "plan": [], "complete": []}
    for argv, text in report["help"].items():
        assert text.strip(), f"'{argv} --help' printed nothing"
    # Real types and registry choices in help, and summaries that are not cut off.
    train_help = report["help"]["train"]
    assert (
        "INTEGER RANGE" in train_help
        and "[natural|fgsm|fgsm-rs|pgd|fgm|pgd-l2|trades]" in train_help
    )
    assert "Data options:" in train_help and "Training options:" in train_help
    assert "Find a boosting ticket: train from θ0, prune, rewind the survivors." in " ".join(
        report["help"][""].split()
    )
    assert "plain,pgd" in report["complete"].replace("\n", ",")
    assert "total:" in report["plan"] and "estimated time" in report["plan"]


def _commands(group, ctx, path=()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if hasattr(cmd, "list_commands"):
            yield from _commands(cmd, ctx, (*path, name))
        else:
            yield " ".join((*path, name)), cmd


def test_every_option_has_help_and_every_command_a_whole_summary() -> None:
    import click

    from boosting_tickets.cli import cli

    ctx = click.Context(cli)
    for path, cmd in _commands(cli, ctx):
        summary = cmd.get_short_help_str(limit=200)
        assert summary and not summary.endswith(("...", "(Li et al.")), (path, summary)
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.help, f"{path} {param.opts[0]} has no help"
